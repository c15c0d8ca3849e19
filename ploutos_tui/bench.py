"""``ploutos bench tui``: what the panel itself costs while it watches a busy machine.

Sets up what a big training box looks like to the panel: a live run whose trainer (this process:
it holds the run's lock, its pid is in the status) owns ``children`` idle child processes (each
with a few threads), ``units`` of which its events name as running units on this host
(``member_started`` with their pid), each unit writing a ``member_progress`` with its time
shares and SB3 metrics every ``progress_s`` seconds. Then, for each screen asked for, it starts
the real ``ploutos-tui`` in a pseudo-terminal (200x50, xterm-256color, ``--screen``) and
measures:

- ``first_frame_s``: from starting the process to the first frame that shows a hardware sample;
- ``cpu_pct_of_one_core``: the panel's own CPU use (user + system time of its process) over
  ``seconds`` at its default refresh (1 s), as a percentage of one core;
- ``panel_rss_mb``: its resident memory at the end.

The screens are measured in turn, ``repeat`` rounds of them interleaved (medians reported beside
each round's figures), so that one run compares them side by side on the same load. ``sampler``
times the panel's hardware sampler alone on the same process tree (``sample_ms``: one snapshot).

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
import socket
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
SCREENS = ("overview", "hardware")
TARGETS = {"cpu_pct_of_one_core": "< 3", "first_frame_s": "< 1", "panel_rss_mb": "< 80"}


def _start_children(n: int, threads: int) -> list[subprocess.Popen[bytes]]:
    code = IDLE_CHILD.format(threads=threads)
    return [
        subprocess.Popen([sys.executable, "-S", "-c", code], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]


def _units(n_units: int, per_fold: int = 6) -> list[tuple[int, int]]:
    """(fold, member) of ``n_units`` units: ``per_fold`` members a fold."""
    return [(k // per_fold, k % per_fold) for k in range(n_units)]


def _progress(fold: int, member: int, step: int) -> dict[str, Any]:
    """One ``member_progress`` as a PPO member writes it: time shares and SB3 metrics."""
    wobble = (step + member) % 7
    return {
        "fold": fold,
        "member": member,
        "timesteps": step * 2048,
        "total": 10**7,
        "fps": 2000.0 + 10 * member + wobble,
        "mean_reward": 0.0001 * (wobble - 3),
        "episodes": step,
        "time_shares": {
            "env": 0.31 + 0.01 * wobble,
            "inference": 0.09,
            "gradient": 0.53 - 0.01 * wobble,
            "checkpoint": 0.02,
            "waiting": 0.05,
        },
        "time_s": {
            "env": 3.1 * step,
            "inference": 0.9 * step,
            "gradient": 5.3 * step,
            "checkpoint": 0.2 * step,
            "waiting": 0.5 * step,
        },
        "measure_overhead_share": 0.002,
        "sb3": {
            "policy_loss": -0.012 + 0.001 * wobble,
            "value_loss": 0.21 - 0.01 * wobble,
            "entropy": 1.09,
            "approx_kl": 0.004 + 0.0005 * wobble,
            "clip_fraction": 0.08,
            "explained_variance": 0.3 + 0.01 * wobble,
            "loss": 0.05,
            "clip_range": 0.2,
            "n_updates": 10 * step,
        },
    }


def _fake_run(
    root: Path,
    stop: threading.Event,
    worker_pids: list[int],
    progress_s: float,
    per_fold: int = 6,
) -> threading.Thread:
    """A run folder owned by this process (it holds the lock, its pid is in the status) whose
    units run as ``worker_pids`` on this host and report progress like a training run's."""
    from engine.api import EventLog, RunFolder

    units = _units(len(worker_pids), per_fold)
    folds = max(1, -(-len(units) // per_fold))
    folder = RunFolder(root / "20260101-000000-bench-0000").create()
    folder.config_path.write_text("dataset_path: data/demo\n")
    folder.write_status({"run_id": folder.run_id, "state": "running", "pid": os.getpid()})
    lock = folder.hold_lock()
    lock.__enter__()
    log = EventLog(folder.events_path)
    plan = {"profile": "bench", "parallel_members": len(units), "device": "cuda"}
    log.emit(
        "run_started",
        run_id=folder.run_id,
        n_folds=folds,
        ensemble=per_fold,
        total_timesteps=10**7,
        algorithm="ppo",
        plan=plan,
    )
    host = socket.gethostname()
    for fold in range(folds):
        log.emit("fold_started", fold=fold)
    for (fold, member), pid in zip(units, worker_pids, strict=True):
        log.emit(
            "member_started",
            fold=fold,
            member=member,
            seed=fold * 100 + member,
            timesteps=0,
            total=10**7,
            resumed_from=0,
            device=f"cuda:{member % 4}",
            pid=pid,
            node=host,
        )

    def write() -> None:
        step, k = 0, 0
        # the units' progress spread over each interval, as independent workers write it
        pause = progress_s / max(1, len(units))
        while not stop.wait(pause):
            fold, member = units[k]
            log.emit("member_progress", **_progress(fold, member, step + 1))
            k += 1
            if k == len(units):
                k, step = 0, step + 1
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


def _measure_panel(
    runs: Path, screen: str, seconds: float, size: tuple[int, int], tmp: Path
) -> dict[str, Any]:
    """One panel on ``screen``: first frame, CPU over ``seconds``, RSS."""
    import psutil

    from ploutos_tui.app import FIRST_FRAME_ENV

    first_frame = tmp / f"first-frame-{screen}-{time.monotonic_ns()}"
    master, slave = pty.openpty()
    cols, rows = size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", FIRST_FRAME_ENV: str(first_frame)}
    env.pop("NO_COLOR", None)
    stop = threading.Event()
    drainer = threading.Thread(target=_drain, args=(master, stop), daemon=True)
    drainer.start()
    started = time.time()
    panel = subprocess.Popen(
        [sys.executable, "-m", "ploutos_tui.app", "--runs-dir", str(runs), "--screen", screen],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    out: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while not first_frame.exists() and time.monotonic() < deadline:
            if panel.poll() is not None:
                raise RuntimeError(f"ploutos-tui exited with {panel.returncode}")
            time.sleep(0.01)
        text = first_frame.read_text().strip() if first_frame.exists() else ""
        out["first_frame_s"] = round(float(text) - started, 3) if text else None
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
        out.update(
            cpu_pct_of_one_core=round(100.0 * busy / elapsed, 2),
            cpu_pct_median_per_second=round(statistics.median(per_second), 2),
            cpu_pct_max_per_second=round(max(per_second), 2),
            panel_rss_mb=round(proc.memory_info().rss / 2**20, 1),
            panel_threads=proc.num_threads(),
            seconds=round(elapsed, 2),
        )
    finally:
        panel.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            panel.wait(10)
        if panel.poll() is None:
            panel.kill()
            panel.wait()
        stop.set()
        drainer.join(2)
        os.close(master)
        os.close(slave)
    return out


def _time_sampler(run_id: str, samples: int) -> dict[str, Any]:
    """The panel's hardware sampler alone on this process's tree: ms per snapshot."""
    from ploutos_tui.model.sampling import HardwareSampler

    sampler = HardwareSampler(jobs=lambda: {run_id: os.getpid()})
    times, procs = [], 0
    try:
        sampler.sample()  # the first one also reads what later ones cache
        for _ in range(samples):
            start = time.perf_counter()
            snap = sampler.sample()
            times.append((time.perf_counter() - start) * 1000.0)
            procs = len(snap.processes)
            time.sleep(0.2)
    finally:
        sampler.close()
    return {
        "sample_ms_median": round(statistics.median(times), 2),
        "sample_ms_min": round(min(times), 2),
        "samples": samples,
        "processes_in_tree": procs,
    }


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("first_frame_s", "cpu_pct_of_one_core", "panel_rss_mb")
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in rounds if r.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def bench_tui(
    seconds: float = 20.0,
    children: int = 256,
    threads: int = 3,
    size: tuple[int, int] = (200, 50),
    *,
    units: int = 30,
    screens: tuple[str, ...] = SCREENS,
    repeat: int = 1,
    progress_s: float = 1.0,
    sampler_samples: int = 20,
) -> dict[str, Any]:
    units = max(0, min(units, children))
    stop = threading.Event()
    procs = _start_children(children, threads)
    result: dict[str, Any] = {
        "children": children,
        "threads_per_child": threads,
        "units": units,
        "progress_every_s_per_unit": progress_s,
        "terminal": f"{size[0]}x{size[1]} xterm-256color (pty)",
        "refresh_s": 1.0,
    }
    try:
        with tempfile.TemporaryDirectory(prefix="ploutos-bench-tui-") as tmp:
            runs = Path(tmp) / "runs"
            writer = _fake_run(runs, stop, [p.pid for p in procs[:units]], progress_s)
            run_id = "20260101-000000-bench-0000"
            rounds: dict[str, list[dict[str, Any]]] = {screen: [] for screen in screens}
            for _ in range(max(1, repeat)):
                for screen in screens:
                    rounds[screen].append(_measure_panel(runs, screen, seconds, size, Path(tmp)))
            result["sampler"] = _time_sampler(run_id, sampler_samples)
            stop.set()
            writer.join(5)
    finally:
        stop.set()
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    result["screens"] = {
        screen: {**_median(found), "rounds": found} for screen, found in rounds.items()
    }
    result["targets"] = TARGETS
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ploutos bench tui", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measured over (each)")
    parser.add_argument("--children", type=int, default=256, help="child processes of the run")
    parser.add_argument("--units", type=int, default=30, help="running units named by events")
    parser.add_argument(
        "--screens",
        default=",".join(SCREENS),
        help="screens to measure in turn, comma-separated (overview, hardware, jobs, dataset)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the screens (medians)")
    args = parser.parse_args(argv)
    screens = tuple(s.strip() for s in args.screens.split(",") if s.strip())
    result = bench_tui(
        seconds=args.seconds,
        children=args.children,
        units=args.units,
        screens=screens,
        repeat=args.repeat,
    )
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
