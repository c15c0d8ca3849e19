"""``ploutos bench tui``: what the panel itself costs while it watches a busy machine.

Sets up a live run that owns 256 idle child processes (each with a few threads) and writes
progress events, then starts the real ``ploutos-tui`` in a pseudo-terminal (200x50,
xterm-256color) and measures:

- ``first_frame_s``: from starting the process to the first frame that shows a hardware sample;
- the panel's own CPU use (user + system time of its process) over ``seconds`` at its default
  refresh, as a percentage of one core.

Prints one JSON object. Run: ``python -m ploutos_tui.bench --json`` (``ploutos bench tui``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

IDLE_CHILD = (
    "import threading, time\n"
    "for _ in range({threads}):\n"
    "    threading.Thread(target=time.sleep, args=(1e6,), daemon=True).start()\n"
    "time.sleep(1e6)\n"
)


def _start_children(n: int, threads: int) -> list[subprocess.Popen[bytes]]:
    code = IDLE_CHILD.format(threads=threads)
    return [
        subprocess.Popen([sys.executable, "-S", "-c", code], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]


def _fake_run(root: Path, stop: threading.Event) -> threading.Thread:
    """A run folder owned by this process (it holds the lock, its pid is in the status) whose
    events grow like a training run's: several progress lines a second."""
    from engine.api import EventLog, RunFolder

    folder = RunFolder(root / "20260101-000000-bench-0000").create()
    folder.config_path.write_text("dataset_path: data/demo\n")
    folder.write_status({"run_id": folder.run_id, "state": "running", "pid": os.getpid()})
    lock = folder.hold_lock()
    lock.__enter__()
    log = EventLog(folder.events_path)
    log.emit(
        "run_started",
        run_id=folder.run_id,
        n_folds=2,
        ensemble=8,
        total_timesteps=10**7,
        algorithm="ppo",
        plan={"profile": "bench"},
    )

    def write() -> None:
        step = 0
        while not stop.wait(0.1):
            step += 1
            for member in range(8):
                log.emit(
                    "member_progress",
                    fold=step % 2,
                    member=member,
                    timesteps=step * 2048,
                    total=10**7,
                    fps=2000.0 + member,
                    mean_reward=0.01,
                )
        lock.__exit__(None, None, None)
        log.close()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _drain(fd: int, stop: threading.Event) -> None:
    """Read the terminal's output so the panel never blocks on a full pty buffer."""
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                if not os.read(fd, 65536):
                    return
            except OSError:
                return


def bench_tui(
    seconds: float = 20.0, children: int = 256, threads: int = 3, size: tuple[int, int] = (200, 50)
) -> dict[str, Any]:
    import psutil

    from ploutos_tui.app import FIRST_FRAME_ENV

    stop = threading.Event()
    procs = _start_children(children, threads)
    result: dict[str, Any] = {"children": children, "threads_per_child": threads}
    with tempfile.TemporaryDirectory(prefix="ploutos-bench-tui-") as tmp:
        runs = Path(tmp) / "runs"
        writer = _fake_run(runs, stop)
        first_frame = Path(tmp) / "first-frame"
        master, slave = pty.openpty()
        cols, rows = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", FIRST_FRAME_ENV: str(first_frame)}
        env.pop("NO_COLOR", None)
        drainer = threading.Thread(target=_drain, args=(master, stop), daemon=True)
        drainer.start()
        started = time.time()
        panel = subprocess.Popen(
            [sys.executable, "-m", "ploutos_tui.app", "--runs-dir", str(runs)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not first_frame.exists() and time.monotonic() < deadline:
                if panel.poll() is not None:
                    raise RuntimeError(f"ploutos-tui exited with {panel.returncode}")
                time.sleep(0.01)
            text = first_frame.read_text().strip() if first_frame.exists() else ""
            result["first_frame_s"] = round(float(text) - started, 3) if text else None
            proc = psutil.Process(panel.pid)
            time.sleep(2.0)  # let start-up work settle before measuring the steady state
            per_second = []
            before = proc.cpu_times()
            t0 = time.monotonic()
            last, last_t = before, t0
            while time.monotonic() - t0 < seconds:
                time.sleep(1.0)
                now, now_t = proc.cpu_times(), time.monotonic()
                busy = (now.user + now.system) - (last.user + last.system)
                per_second.append(100.0 * busy / (now_t - last_t))
                last, last_t = now, now_t
            after = proc.cpu_times()
            elapsed = time.monotonic() - t0
            busy = (after.user + after.system) - (before.user + before.system)
            result.update(
                seconds=round(elapsed, 2),
                cpu_pct_of_one_core=round(100.0 * busy / elapsed, 2),
                cpu_pct_median_per_second=round(statistics.median(per_second), 2),
                cpu_pct_max_per_second=round(max(per_second), 2),
                panel_threads=proc.num_threads(),
                panel_rss_mb=round(proc.memory_info().rss / 2**20, 1),
                refresh_s=1.0,
                terminal=f"{cols}x{rows} xterm-256color (pty)",
            )
        finally:
            panel.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                panel.wait(10)
            if panel.poll() is None:
                panel.kill()
            stop.set()
            writer.join(5)
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()
            os.close(master)
            os.close(slave)
    result["targets"] = {"cpu_pct_of_one_core": "< 5", "first_frame_s": "< 1.5"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ploutos bench tui", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--children", type=int, default=256)
    args = parser.parse_args(argv)
    result = bench_tui(seconds=args.seconds, children=args.children)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
