"""Training jobs as processes: launch one detached, stop one gracefully.

A detached job runs in its own session (so its own process group, no controlling terminal) with
stdin from /dev/null and stdout/stderr appended to the run's log file: a piped child dies with its
parent, a detached one outlives the panel, the shell and the SSH connection that started it.
The CLI (``--detach``) and the control panel both start trainers through :func:`start_detached`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import PloutosError
from engine.runs.folder import LIVE, RunFolder
from engine.system.threads import sanitized_env


def ploutos_command(*args: str) -> list[str]:
    """The engine's command line run by this interpreter (no dependency on ``PATH``)."""
    return [sys.executable, "-m", "engine.cli", *args]


def launch_detached(
    args: list[str], log_path: Path, cwd: str | Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``ploutos ARGS`` in a new session with the sanitized thread environment.

    The caller may ``poll()`` the returned process to reap it; it does not have to wait for it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            ploutos_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=sanitized_env(),
            cwd=cwd,
        )


def start_detached(folder: RunFolder) -> subprocess.Popen[bytes]:
    """The trainer of ``folder``, detached: a new run starts, a stopped or killed one continues
    (``ploutos resume`` does both); its output goes to the run's log."""
    return launch_detached(["resume", str(folder.root)], folder.log_path)


def stop_run(folder: RunFolder, wait_s: float = 0.0, poll_s: float = 0.2) -> str:
    """Ask the run's trainer to stop (SIGTERM: members checkpoint, the run is marked stopped).

    Returns the state seen after waiting up to ``wait_s`` seconds.
    """
    state = folder.state()
    if state not in LIVE:
        raise PloutosError(f"{folder.run_id}: not running (state {state}); nothing to stop")
    pid = folder.trainer_pid()
    if pid is None:
        state = folder.state()
        if state not in LIVE:  # the trainer ended since the first look
            return state
        raise PloutosError(f"{folder.run_id}: the status file names no trainer process yet; retry")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return folder.state()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = folder.state()
        if state not in LIVE:
            return state
        time.sleep(poll_s)
    return folder.state()
