"""A training whose disk fills up while it runs, for ``test_trainer_full_disk.py``.

Run inside its own user and mount namespaces (``unshare --user --map-root-user --mount python -m
tests.engine.full_disk_driver CONFIG OUT``): it mounts a small tmpfs as the runs folder, starts
the trainer with member 0 parked at 1,024 timesteps (``PLOUTOS_FAULT=pause@0/0:1024``), fills
the tmpfs to the last page, lets the member train on (SIGUSR1) and waits for the trainer to end.
The tmpfs dies with the namespace, so the run folder is copied to ``OUT/copy`` for the test, and
the trainer's return code printed as JSON.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.runs.events import read_events

PARK_TIMEOUT_S = 300.0
EXIT_TIMEOUT_S = 300.0


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem refuses another byte; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 12, 1):
            chunk = b"\0" * size
            while True:
                try:
                    written += fh.write(chunk) or 0
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    return written


def wait_parked(runs: Path, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + PARK_TIMEOUT_S
    while time.monotonic() < deadline:
        for events_path in runs.glob("*/events.jsonl"):
            for event in read_events(events_path)[0]:
                if event.get("type") == "member_paused":
                    return event
        if proc.poll() is not None:
            raise SystemExit(f"trainer exited ({proc.returncode}) before member 0 parked")
        time.sleep(0.1)
    raise SystemExit("timed out waiting for member 0 to park")


def main(config: str, out_dir: str) -> int:
    out = Path(out_dir)
    runs = out / "runs"
    runs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(runs)], check=True)
    env = {**os.environ, "PLOUTOS_FAULT": "pause@0/0:1024"}
    with open(out / "trainer.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "train", "--config", config]
            + ["--runs-dir", str(runs)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        parked = wait_parked(runs, proc)
        filled = fill(runs / "filler.bin")
        os.kill(int(parked["pid"]), signal.SIGUSR1)
        returncode = proc.wait(EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # Whatever of the run is left (a worker checkpointing into a full disk) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    (folder,) = [p for p in runs.iterdir() if (p / "config.yaml").exists()]
    shutil.copytree(folder, out / "copy", ignore=shutil.ignore_patterns("*.zip"))
    print(json.dumps({"returncode": returncode, "filled_bytes": filled}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
