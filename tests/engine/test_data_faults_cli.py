"""Damaged dataset files reach the user as one line naming the file, from every command that reads
them (``features build``, ``train``, ``dataset export``), never as a pyarrow traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from engine.atomic import file_sha256
from engine.data import store
from tests.conftest import ROOT, ploutos


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.data.demo import write_demo

    out = tmp_path_factory.mktemp("faults") / "clean"
    write_demo(out, tickers=("SYNA", "SYNB"), start="2023-01-01", end="2023-06-30")
    return out


def _config(tmp_path: Path, dataset: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["dataset_path"] = str(dataset)
    cfg["features"]["macro"] = []
    cfg["features"]["warmup_bars"] = 50
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _damaged(small_demo: Path, tmp_path: Path, data: bytes, *, in_manifest: bool) -> Path:
    """A copy whose SYNA.parquet holds ``data``; ``in_manifest``: its sha256 recorded too (so the
    parse itself must fail cleanly, not only the checksum)."""
    out = tmp_path / "ds"
    shutil.copytree(small_demo, out)
    (out / "SYNA.parquet").write_bytes(data)
    if in_manifest:
        manifest = store.load_manifest(out)
        manifest.tickers["SYNA"].sha256 = file_sha256(out / "SYNA.parquet")
        store.save_manifest(out, manifest)
    return out


def _one_line_naming_syna(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("ploutos: error: ") and "SYNA.parquet" in lines[0]
    return lines[0]


@pytest.mark.parametrize("in_manifest", [True, False], ids=["recorded", "swapped"])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_features_build_train_and_export_name_the_damaged_file(
    small_demo: Path, tmp_path: Path, damage: str, in_manifest: bool
) -> None:
    good = (small_demo / "SYNA.parquet").read_bytes()
    data = b"PAR1 garbage " * 100 if damage == "garbage" else good[: len(good) // 2]
    dataset = _damaged(small_demo, tmp_path, data, in_manifest=in_manifest)
    config = _config(tmp_path, dataset)
    expected = "not a readable Parquet file" if in_manifest else "sha256"

    line = _one_line_naming_syna(ploutos("features", "build", "--config", str(config)))
    assert expected in line
    runs = tmp_path / "runs"
    line = _one_line_naming_syna(ploutos("train", "--config", str(config), "--runs-dir", str(runs)))
    assert expected in line
    assert not runs.exists() or not any(runs.iterdir())  # refused before a run folder exists
    csv = tmp_path / "csv"
    line = _one_line_naming_syna(
        ploutos("dataset", "export", str(dataset), "--csv", "--out", str(csv))
    )
    assert expected in line
    assert not (csv / "SYNA.csv").exists()
    assert not list((dataset / ".features").glob("*/meta.json"))  # nothing cached


def test_features_build_reports_the_rows_it_dropped(small_demo: Path, tmp_path: Path) -> None:
    proc = ploutos("features", "build", "--config", str(_config(tmp_path, small_demo)))
    assert proc.returncode == 0, proc.stderr
    assert "no rows dropped after the warm-up" in proc.stdout


def test_export_writes_nothing_when_a_later_file_is_damaged(
    small_demo: Path, tmp_path: Path
) -> None:
    from engine.data.csvio import export_csv
    from engine.errors import DataError

    dataset = tmp_path / "ds"
    shutil.copytree(small_demo, dataset)
    (dataset / "macro" / "SPY.parquet").write_bytes(b"garbage")  # the last file exported
    with pytest.raises(DataError, match=r"SPY\.parquet"):
        export_csv(dataset, tmp_path / "csv")
    assert not (tmp_path / "csv").exists()
