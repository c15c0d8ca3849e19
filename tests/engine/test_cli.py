"""The command line as users meet it: exit codes and one-line errors, no tracebacks."""

import subprocess
import sys

import pytest

from engine.cli import main
from engine.data import store


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ploutos: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_demo_then_check_pass_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(["dataset", "demo", "--out", str(out), "--start", "2024-01-01", "--end", "2024-03-31"])
        == 0
    )
    assert main(["dataset", "check", str(out)]) == 0
    assert "demo dataset written" in capsys.readouterr().out


def test_check_fails_with_exit_1_on_a_tampered_dataset(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["dataset", "demo", "--out", str(out), "--start", "2024-01-01", "--end", "2024-01-31"])
    with open(out / "SYNA.parquet", "ab") as fh:
        fh.write(b"junk")
    assert main(["dataset", "check", str(out)]) == 1
    assert "SYNA" in capsys.readouterr().out


def test_hourly_yahoo_beyond_730_days_fails_before_any_download(tmp_path, capsys, monkeypatch):
    import yfinance

    monkeypatch.setattr(yfinance, "Ticker", lambda *a, **k: pytest.fail("yfinance was called"))
    code = main(
        [
            "dataset",
            "build",
            "--source",
            "yahoo",
            "--tickers",
            "AAPL",
            "--start",
            "2019-01-01",
            "--out",
            str(tmp_path / "y"),
        ]
    )
    assert code == 2
    err = _one_line_error(capsys)
    assert "730" in err and "--source alpaca" in err
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())


def test_missing_alpaca_key_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.setenv("APCA_API_SECRET_KEY", "s3cr3t-value-never-printed")
    code = main(
        [
            "dataset",
            "build",
            "--source",
            "alpaca",
            "--tickers",
            "AAPL",
            "--start",
            "2024-01-01",
            "--end",
            "2024-02-01",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert code == 2
    err = _one_line_error(capsys)
    assert "APCA_API_KEY_ID" in err and "s3cr3t" not in err


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset_path: x\nnope: 1\n")
    quiet = subprocess.run(
        [sys.executable, "-m", "engine.cli", "config", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    loud = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--debug", "config", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_features_build_computes_once_then_attaches(tmp_path, capsys):
    data = tmp_path / "demo"
    main(["dataset", "demo", "--out", str(data), "--start", "2023-01-01", "--end", "2023-06-30"])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"dataset_path: {data}\nfeatures:\n  macro: ['^VIX']\n")
    assert main(["features", "build", "--config", str(cfg)]) == 0
    first = capsys.readouterr().out
    assert main(["features", "build", "--config", str(cfg)]) == 0
    second = capsys.readouterr().out
    assert "x 5 tickers" in first
    assert first.split("cached at ")[1] == second.split("cached at ")[1]
    assert len([p for p in (data / ".features").iterdir() if p.is_dir()]) == 1


def test_build_then_update_from_the_command_line_against_a_loopback_alpaca(
    tmp_path, capsys, monkeypatch
):
    """`--update` alone takes tickers, feed and adjustment from the manifest and fetches only new bars."""
    from engine.data.sources import alpaca
    from tests.engine.alpaca_server import KEY_ID, SECRET, FakeAlpaca

    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    out = tmp_path / "ds"
    with FakeAlpaca() as fake:
        monkeypatch.setenv("APCA_API_DATA_URL", fake.url)
        args = [
            "dataset",
            "build",
            "--source",
            "alpaca",
            "--tickers",
            "AAPL,MSFT",
            "--start",
            "2024-01-01",
            "--end",
            "2024-03-01",
            "--adjustment",
            "all",
            "--out",
            str(out),
        ]
        assert main(args) == 0
        first = store.load_manifest(out)
        fake.reset()
        assert main(["dataset", "build", "--update", "--end", "2024-04-01", "--out", str(out)]) == 0
        starts = {chunk[1][:10] for chunk in fake.chunk_counts()}
    updated = store.load_manifest(out)
    assert updated.adjustment == "all" and list(updated.tickers) == ["AAPL", "MSFT"]
    assert all(s >= "2024-02-29" for s in starts), starts
    assert updated.tickers["AAPL"].rows > first.tickers["AAPL"].rows
    text = "".join(capsys.readouterr()) + "".join(p.read_text() for p in out.glob("*.json"))
    assert SECRET not in text and KEY_ID not in text


def test_yahoo_update_reuses_the_stored_source_and_only_extends(tmp_path, capsys, monkeypatch):
    """`--update --out DIR` on a Yahoo dataset must stay a Yahoo update, not become an Alpaca build."""
    import numpy as np
    import pandas as pd

    from engine.data.sources import yahoo

    calls = []

    def fake_fetch_bars(symbol, lo, hi, interval="1h"):
        calls.append((symbol, pd.Timestamp(lo), pd.Timestamp(hi)))
        idx = pd.date_range(
            pd.Timestamp(lo).ceil("h"), pd.Timestamp(hi), freq="h", inclusive="left"
        )
        values = np.linspace(100.0, 101.0, len(idx))
        frame = pd.DataFrame({c: values for c in store.BAR_COLUMNS}, index=idx)
        return store.normalize_bars(frame, where=symbol)

    monkeypatch.setattr(yahoo, "fetch_bars", fake_fetch_bars)
    out = tmp_path / "y"
    start = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=20)).strftime("%Y-%m-%d")
    end = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=10)).strftime("%Y-%m-%d")
    assert (
        main(
            [
                "dataset",
                "build",
                "--source",
                "yahoo",
                "--tickers",
                "AAPL",
                "--start",
                start,
                "--end",
                end,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = store.load_manifest(out).tickers["AAPL"]
    calls.clear()
    assert main(["dataset", "build", "--update", "--out", str(out)]) == 0
    after = store.load_manifest(out)
    assert after.source == "yahoo"
    assert calls and all(lo >= before.last for _, lo, _ in calls)
    assert after.tickers["AAPL"].last > before.last


def test_a_too_small_ulimit_v_is_one_line_naming_the_limit(tmp_path):
    import resource
    from pathlib import Path

    limit = (
        250_000 * 1024
    )  # bytes: the interpreter starts, pandas/pyarrow cannot map their libraries

    def small_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "features", "build", "--config", "config/demo.yaml"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_address_space,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # (pyarrow's jemalloc may print its own complaint first; ours is the last line)
    assert proc.stderr.strip().splitlines()[-1:] == [
        "ploutos: error: out of memory under the virtual memory limit "
        "`ulimit -v 250000` (0.24 GiB); raise it (`ulimit -v unlimited`)"
    ]
