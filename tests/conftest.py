"""Shared fixtures: a small demo dataset with its features, and demo configs pointing at it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_calibration_from_home(tmp_path_factory, monkeypatch):
    """Plans in tests never read a calibration this machine's user made (``ploutos plan
    --calibrate`` writes one under ~/.cache): each test starts without one."""
    from engine.train.calibration import CALIBRATION_ENV

    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    monkeypatch.setenv(CALIBRATION_ENV, str(path))


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """The demo generator's tickers and macro series, 2021-2024 (4 years: two 2-year folds)."""
    from engine.data.demo import write_demo

    out = tmp_path_factory.mktemp("demo") / "data"
    write_demo(out, start="2021-01-01", end="2024-12-31")
    return out


@pytest.fixture
def demo_config(demo_dataset, tmp_path):
    """``make(**overrides)``: config/demo.yaml on the test dataset, with ``section.key`` overrides."""

    def make(name: str = "demo.yaml", **overrides) -> Path:
        cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
        cfg["dataset_path"] = str(demo_dataset)
        for dotted, value in overrides.items():
            section, key = dotted.split("__")
            cfg[section][key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def ploutos(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The real command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        **kwargs,
    )
