"""A live run for the panel's tests: this test process holds the run's lock (so the panel reads it
as running), its events name worker pids, and a recorded hardware snapshot holds those pids.

Members (plan: 3 units at a time, 3,000 timesteps each):
- 0/0 running on ``box`` as pid 4242 (cuda:0), 1,000 done at 100/s: in the snapshot;
- 0/1 running on ``far/0123abcd`` (another machine, Ray) as pid 4343 at 300/s;
- 1/0 pending;
- 1/1 running on ``box`` as pid 4444 at 200/s: not in any job's process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from engine.runs.folder import RunFolder
from engine.system.gpus import GpuProcess, GpuReading
from ploutos_tui.model.sampling import (
    HardwareSnapshot,
    JobThreads,
    ProcessReading,
    load_snapshots,
)

FIXTURES = Path(__file__).parent / "fixtures"
LIVE = "20261202-101500-demo-live"
HOST = "box"
TRAINER = 4000
GiB = 1024**3
TS = "2026-12-02T10:15:00.000Z"


def _event(kind: str, **fields) -> dict:
    return {"ts": TS, "type": kind, **fields}


def live_events(with_progress: bool = True) -> list[dict]:
    plan = {"profile": "laptop", "parallel_members": 3, "device": "auto"}
    out = [
        _event(
            "run_started",
            run_id=LIVE,
            config="config/demo.yaml",
            algorithm="ppo",
            n_folds=2,
            ensemble=2,
            total_timesteps=3000,
            plan=plan,
        )
    ]
    workers = ((0, 0, 4242, HOST, 100.0), (0, 1, 4343, "far/0123abcd", 300.0))
    workers += ((1, 1, 4444, HOST, 200.0),)
    for fold, member, pid, node, _fps in workers:
        out.append(
            _event(
                "member_started",
                fold=fold,
                member=member,
                seed=fold * 10 + member,
                timesteps=0,
                total=3000,
                resumed_from=0,
                device="cuda:0" if (fold, member) == (0, 0) else "cpu",
                pid=pid,
                node=node,
            )
        )
    if with_progress:
        for fold, member, _pid, _node, fps in workers:
            out.append(
                _event(
                    "member_progress",
                    fold=fold,
                    member=member,
                    timesteps=1000,
                    total=3000,
                    fps=fps,
                    mean_reward=0.01,
                    episodes=3,
                )
            )
    return out


@contextlib.contextmanager
def live_run(root: Path, with_progress: bool = True) -> Iterator[RunFolder]:
    """The run folder under ``root``, held live (its lock taken) while the block runs."""
    folder = RunFolder(root / LIVE).create()
    folder.config_path.write_text("dataset_path: data/demo\n")
    folder.write_status({"run_id": LIVE, "state": "running", "pid": os.getpid()})
    lines = (json.dumps(e) + "\n" for e in live_events(with_progress))
    folder.events_path.write_text("".join(lines))
    with folder.hold_lock():
        yield folder


def workers_snapshot() -> HardwareSnapshot:
    """The 16-core recording, with the live run's trainer, forkserver, two workers of this host
    (4242 on the GPU) and a helper as its job's processes, and an H200 that lists 4242."""
    from dataclasses import replace

    base = load_snapshots(FIXTURES / "hardware_16cores.json")[-1]
    gpu = GpuReading(
        0,
        "NVIDIA H200",
        35.0,
        12 * GiB,
        141 * GiB,
        41.0,
        180.0,
        700.0,
        (GpuProcess(4242, int(1.1 * GiB), 35.0),),
    )
    procs = (
        ProcessReading(TRAINER, 1, LIVE, 3.2, 410 << 20, 6),
        ProcessReading(4001, TRAINER, LIVE, 0.0, 95 << 20, 1),
        ProcessReading(4002, TRAINER, LIVE, None, 12 << 20, 1),
        ProcessReading(4242, 4001, LIVE, 97.4, int(1.2 * GiB), 9, int(1.1 * GiB), 35.0),
        ProcessReading(4343 + 1000, 4001, LIVE, 99.0, int(1.3 * GiB), 9),  # not named yet
    )
    job = JobThreads(LIVE, TRAINER, len(procs), sum(p.threads for p in procs), True, {})
    return replace(base, gpus=(gpu,), gpu_note="", jobs=(job,), processes=procs)
