"""engine.runs.jobs: stopping a run signals the trainer that holds its lock, whatever status.json says."""

import multiprocessing as mp
import os
import signal
from pathlib import Path

import pytest

from engine.runs.folder import RunFolder
from engine.runs.jobs import stop_run


def _hold_lock_until_terminated(path, ready):
    folder = RunFolder(Path(path))
    with folder.hold_lock():
        ready.set()
        signal.pause()


@pytest.mark.parametrize("status_pid", ["abc", [1, 2], os.getpid(), None])
def test_stop_signals_the_lock_holder_even_when_the_status_pid_is_garbage_or_stale(
    tmp_path, status_pid
):
    root = tmp_path / "20260101-000000-demo-abcd"
    root.mkdir()
    folder = RunFolder(root)
    folder.write_status({"state": "running", "pid": status_pid})
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock_until_terminated, args=(str(root), ready))
    holder.start()
    try:
        assert ready.wait(60), "the lock holder never started"
        stop_run(folder)  # would raise on "abc", or SIGTERM this test process for a stale pid
        holder.join(60)
        assert holder.exitcode == -signal.SIGTERM
    finally:
        if holder.is_alive():
            holder.kill()
