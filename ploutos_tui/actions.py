"""What the panel does to jobs: launch, stop and resume trainers through :mod:`engine.api`, and
reap the ones it started.

A launched trainer runs in its own session and outlives the panel. The panel keeps the ``Popen``
objects only to reap children that end while it is open (no zombies), and to tell a trainer it
has just started (no lock yet) from an interrupted run. Nothing here imports Textual.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from engine import api
from engine.errors import PloutosError

_children_lock = threading.Lock()
_children: dict[str, subprocess.Popen[bytes]] = {}


def _remember(run_id: str, proc: subprocess.Popen[bytes]) -> None:
    with _children_lock:
        old = _children.get(run_id)
        if old is not None:
            old.poll()
        _children[run_id] = proc


def reap_children() -> dict[str, int]:
    """``poll()`` every trainer this process launched; forget (and return) those that ended."""
    ended: dict[str, int] = {}
    with _children_lock:
        for run_id, proc in list(_children.items()):
            code = proc.poll()
            if code is not None:
                ended[run_id] = code
                del _children[run_id]
    return ended


def child_alive(run_id: str) -> bool:
    """Whether a trainer this process launched for ``run_id`` is still running."""
    with _children_lock:
        proc = _children.get(run_id)
        return proc is not None and proc.poll() is None


_helpers_lock = threading.Lock()


def ensure_subprocess_ready() -> None:
    """Start multiprocessing's resource tracker with a real stderr; call before engine work that
    may start a process pool in this process (``prepare_run`` building features).

    Inside a running Textual app ``sys.stderr`` is a capture whose ``fileno()`` is -1, and the
    tracker (started by the first pool) hands that to ``fork_exec``: "bad value(s) in
    fds_to_keep". Once started, the tracker serves every later pool.
    """
    from multiprocessing import resource_tracker

    with _helpers_lock:
        err = sys.stderr
        try:
            usable = err is not None and err.fileno() >= 0
        except (AttributeError, OSError, ValueError):
            usable = False
        real = sys.__stderr__
        if usable or real is None:
            resource_tracker.ensure_running()
            return
        sys.stderr = real  # for the few milliseconds of the spawn
        try:
            resource_tracker.ensure_running()
        finally:
            if sys.stderr is real:
                sys.stderr = err


def launch_run(
    config_path: str | Path,
    profile: str | None = None,
    ensemble: int | None = None,
    algorithm: str | None = None,
    runs_root: str | Path | None = None,
) -> api.RunFolder:
    """Validate and create the run folder (``prepare_run``: seconds), then start its trainer
    detached. Blocking: call it from a worker thread. Raises ``PloutosError`` for bad input."""
    ensure_subprocess_ready()
    folder = api.prepare_run(
        config_path,
        profile=profile,
        ensemble=ensemble,
        algorithm=algorithm,
        runs_root=runs_root or api.default_runs_root(),
    )
    _remember(folder.run_id, api.start_detached(folder))
    return folder


def _folder(run: str | os.PathLike[str] | api.RunFolder, runs_root: Path | None) -> api.RunFolder:
    if isinstance(run, api.RunFolder):
        return run
    return api.resolve_run(run, runs_root)


def stop(run: str | os.PathLike[str] | api.RunFolder, runs_root: Path | None = None) -> str:
    """Ask the run's trainer to stop (SIGTERM, members checkpoint); returns the state seen now."""
    return api.stop_run(_folder(run, runs_root), wait_s=0.0)


def resume(
    run: str | os.PathLike[str] | api.RunFolder, runs_root: Path | None = None
) -> api.RunFolder:
    """Start a detached trainer that continues a stopped, failed or interrupted run."""
    folder = _folder(run, runs_root)
    state = folder.state()
    if state == "interrupted" and child_alive(folder.run_id):
        state = "starting"
    if state not in api.RESUMABLE:
        raise PloutosError(
            f"{folder.run_id}: {state}; only a {'/'.join(api.RESUMABLE)} run resumes"
        )
    _remember(folder.run_id, api.start_detached(folder))
    return folder
