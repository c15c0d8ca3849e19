"""Training jobs and dataset builds as processes: launch one detached, stop one gracefully.

A detached job runs in its own session (so its own process group, no controlling terminal) with
stdin from /dev/null and stdout/stderr appended to the run's log file: a piped child dies with its
parent, a detached one outlives the panel, the shell and the SSH connection that started it.
The CLI (``--detach``) and the control panel both start trainers through :func:`start_detached`
and dataset builds through :func:`start_build_detached` (log and status under the dataset's
``.build/``, docs/dataset-build.md); both go through :func:`launch_detached`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine import atomic
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


# ---------------------------------------------------------------------------------------------
# dataset builds
# ---------------------------------------------------------------------------------------------

BUILDS_FILE_ENV = "PLOUTOS_BUILDS_FILE"  # where detached builds are remembered (tests: a tmp file)
MAX_REMEMBERED = 20


def builds_file() -> Path:
    """``$PLOUTOS_BUILDS_FILE``, else ``$XDG_STATE_HOME/ploutos/builds.json`` (~/.local/state)."""
    named = os.environ.get(BUILDS_FILE_ENV)
    if named:
        return Path(named)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ploutos" / "builds.json"


def recent_builds() -> list[Path]:
    """Dataset folders detached builds were started into, newest first (a damaged file: none)."""
    try:
        data = json.loads(builds_file().read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    items = data.get("folders") if isinstance(data, dict) else None
    return [Path(p) for p in items if isinstance(p, str)] if isinstance(items, list) else []


def _remember_build(root: Path) -> None:
    folders = [str(root), *(str(p) for p in recent_builds() if str(p) != str(root))]
    # A read-only or full home must not stop a build: it is only not re-attached by folder list.
    with contextlib.suppress(OSError):
        atomic.write_json(builds_file(), {"folders": folders[:MAX_REMEMBERED]})


def start_build_detached(args: list[str], out: str | Path) -> subprocess.Popen[bytes]:
    """``ploutos dataset build ARGS --status``, detached, into the dataset folder ``out``: its
    output goes to ``out/.build/build.log``, its progress to ``out/.build/status.json``.

    ``ARGS`` must name ``--out`` (absolute, so a resume from another directory finds it); the
    keys travel in the environment only. A folder another build is writing is refused.
    """
    from engine.data.builder import build_lock_holder, build_log_path, write_starting_status

    root = Path(out).resolve()
    holder = build_lock_holder(root)
    if holder is not None:
        raise PloutosError(
            f"{root}: a build into this folder is already running (pid {holder}); wait for it "
            "or stop it first"
        )
    command = ["dataset", "build", *args]
    if "--status" not in command:
        command.append("--status")
    write_starting_status(root, command)
    proc = launch_detached(command, build_log_path(root))
    write_starting_status(root, command, pid=proc.pid)
    _remember_build(root)
    return proc


def resume_build(out: str | Path) -> subprocess.Popen[bytes]:
    """Start the build recorded in ``out/.build/status.json`` again, detached: it continues
    after the last finished chunk (the builder skips what is stored)."""
    from engine.data.builder import build_status_path, read_build_status

    root = Path(out).resolve()
    status = read_build_status(root)
    if status is None or not status.command:
        raise PloutosError(
            f"{root}: no build recorded in {build_status_path(root)}: start one first "
            "(a on the panel's Dataset screen, or `ploutos dataset build --detach`)"
        )
    if status.alive:
        raise PloutosError(
            f"{root}: the build is still running (pid {status.pid}): nothing to resume"
        )
    return start_build_detached(status.command[2:], root)


def stop_build(out: str | Path) -> int:
    """Ask the build writing ``out`` to stop (SIGTERM: it records ``stopped``; finished chunks
    stay, a resume continues after them). Returns the pid signalled."""
    from engine.data.builder import build_lock_holder

    root = Path(out).resolve()
    pid = build_lock_holder(root)
    if pid is None or pid <= 0:
        raise PloutosError(f"{root}: no build is running into this folder; nothing to stop")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return pid
