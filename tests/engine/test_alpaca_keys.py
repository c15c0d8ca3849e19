"""Alpaca keys as a new user meets them: `--help` names both, a missing key names every missing
variable at once, and a refused or failed build leaves no empty folder behind."""

from __future__ import annotations

import argparse

import pytest

from engine.cli import build_parser, main
from engine.data import builder
from engine.data.sources import alpaca
from engine.errors import SourceError
from tests.engine.alpaca_server import KEY_ID, SECRET, FakeAlpaca

BOTH = (alpaca.ENV_KEY_ID, alpaca.ENV_SECRET_KEY)


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*BOTH, alpaca.ENV_DATA_URL):
        monkeypatch.delenv(name, raising=False)


def test_build_help_says_what_every_option_does_and_names_both_keys():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    dataset = sub.choices["dataset"]
    dsub = next(a for a in dataset._actions if isinstance(a, argparse._SubParsersAction))
    build = dsub.choices["build"]
    undocumented = [a.dest for a in build._actions if not a.help]
    assert undocumented == []
    text = build.format_help()
    assert "APCA_API_KEY_ID" in text and "APCA_API_SECRET_KEY" in text
    assert "dataset build --config config/training_config_v8.yaml" in text


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({}, "APCA_API_KEY_ID and APCA_API_SECRET_KEY are not set"),
        ({alpaca.ENV_SECRET_KEY: SECRET}, "APCA_API_KEY_ID is not set"),
        ({alpaca.ENV_KEY_ID: KEY_ID}, "APCA_API_SECRET_KEY is not set"),
        ({alpaca.ENV_KEY_ID: "  ", alpaca.ENV_SECRET_KEY: ""}, "APCA_API_KEY_ID and APCA_API_"),
    ],
)
def test_missing_keys_name_every_missing_variable_and_that_both_are_needed(present, missing):
    with pytest.raises(SourceError) as err:
        alpaca.credentials_from_env(present)
    text = str(err.value)
    assert text.startswith(missing) and "\n" not in text
    assert "needs both APCA_API_KEY_ID" in text and "APCA_API_SECRET_KEY" in text
    assert KEY_ID not in text and SECRET not in text


def test_make_client_with_no_keys_names_both(no_keys):
    with pytest.raises(SourceError, match="^APCA_API_KEY_ID and APCA_API_SECRET_KEY are not set"):
        alpaca.make_client(base_url="http://127.0.0.1:9")
    # A key passed in is not reported missing because its variable is unset.
    with pytest.raises(SourceError, match="^APCA_API_SECRET_KEY is not set"):
        alpaca.make_client(api_key=KEY_ID, base_url="http://127.0.0.1:9")


def test_cli_build_without_keys_names_both_and_creates_no_folder(tmp_path, capsys, no_keys):
    out = tmp_path / "data" / "new" / "ds"
    argv = ["dataset", "build", "--tickers", "AAPL", "--start", "2024-01-01"]
    assert main([*argv, "--end", "2024-02-01", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "ploutos: error: APCA_API_KEY_ID and APCA_API_SECRET_KEY are not set; an Alpaca build "
        "needs both"
    )
    assert err.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_a_build_whose_first_request_fails_removes_the_folders_it_created(
    tmp_path, monkeypatch, no_keys
):
    monkeypatch.setenv(alpaca.ENV_KEY_ID, "PKWRONG")
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, "wrong-secret-never-printed")
    out = tmp_path / "a" / "b" / "ds"
    with FakeAlpaca() as fake:
        with pytest.raises(SourceError) as err:
            builder.build_alpaca(out, ["AAPL"], "2020-01-06", "2020-01-08", base_url=fake.url)
        assert "wrong-secret-never-printed" not in str(err.value)
        assert not (tmp_path / "a").exists()
        # A folder the user made beforehand is theirs: emptied of nothing, it stays.
        mine = tmp_path / "mine"
        mine.mkdir()
        with pytest.raises(SourceError):
            builder.build_alpaca(mine, ["AAPL"], "2020-01-06", "2020-01-08", base_url=fake.url)
        assert mine.is_dir()


def test_a_build_interrupted_after_a_chunk_keeps_it_for_resume(tmp_path, monkeypatch):
    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    out = tmp_path / "new" / "ds"

    def stop(_event: object) -> None:
        raise KeyboardInterrupt

    with FakeAlpaca() as fake, pytest.raises(KeyboardInterrupt):
        builder.build_alpaca(
            out, ["AAPL"], "2019-12-30", "2020-01-08", base_url=fake.url, progress=stop
        )
    assert (out / "manifest.json").is_file()
