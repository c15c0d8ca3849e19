"""A disk that fills up during training: the run ends failed, naming the cause.

The disk is a real one (a 64 MiB tmpfs in private user and mount namespaces, filled while a
member is parked by ``PLOUTOS_FAULT``), so every write of the trainer and its workers meets
``ENOSPC`` as it would on a full volume. Needs ``unshare`` with unprivileged user namespaces.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from engine.runs.events import read_events
from engine.runs.folder import RunFolder
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(700)

UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]


def _can_mount_tmpfs(where) -> str | None:
    """None when this machine lets us mount a private tmpfs, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux)"
    where.mkdir()
    probe = subprocess.run(
        [*UNSHARE, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot mount a private tmpfs: {probe.stderr.strip()}"
    return None


def test_a_full_disk_during_training_fails_the_run_with_the_cause(demo_config, tmp_path):
    why_not = _can_mount_tmpfs(tmp_path / "probe")
    if why_not:
        pytest.skip(f"a real full disk needs user and mount namespaces: {why_not}")
    config = demo_config(
        training__total_timesteps=4096,
        training__checkpoint_every_timesteps=1024,
        walk_forward__max_folds=1,
    )
    out = tmp_path / "out"
    driven = subprocess.run(
        [*UNSHARE, sys.executable, "-m", "tests.engine.full_disk_driver", str(config), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=650,
    )
    assert driven.returncode == 0, driven.stdout + driven.stderr
    report = json.loads(driven.stdout.strip().splitlines()[-1])
    said = (out / "trainer.log").read_text()
    assert report["filled_bytes"] > 0
    assert report["returncode"] == 1, said
    folder = RunFolder(out / "copy")
    status = json.loads(folder.status_path.read_text())
    assert folder.state() == "failed", status  # not "interrupted": the cause is on record
    assert "[Errno 28] No space left on device" in status["error"], status
    last = read_events(folder.events_path)[0][-1]
    assert last["type"] == "run_failed" and last["error"] == status["error"]
    final = said.strip().splitlines()[-1]
    assert final.startswith("ploutos: error: run ") and "No space left on device" in final, said
