"""``ploutos bench executor``: the same walk-forward on the local executor and on a Ray cluster.

Both runs are the real ``ploutos train`` in a child process on the same config, one after the
other, in one benchmark run; the Ray one joins a cluster started here on loopback (a head with no
CPUs and ``nodes`` worker nodes), whose start-up is timed separately. Per-unit overhead is the
extra wall time per member over the local run, and each member's own training time is read from
the events (``member_finished.elapsed_s``), so the report can say where the time went.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def _run(config: Path, runs: Path, extra: list[str]) -> dict[str, Any]:
    from engine.runs.events import read_events
    from engine.runs.folder import list_runs

    started = time.perf_counter()
    from engine.runs.jobs import ploutos_command

    proc = subprocess.run(
        ploutos_command("train", "--config", str(config), "--runs-dir", str(runs), *extra),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ploutos train {' '.join(extra)} failed: {proc.stderr or proc.stdout}")
    (folder,) = list_runs(runs)
    events = read_events(folder.events_path)[0]
    members = [e for e in events if e["type"] == "member_finished"]
    evaluated = [e for e in events if e["type"] == "fold_evaluated"]
    return {
        "wall_s": round(wall, 2),
        "members": len(members),
        "folds": len(evaluated),
        "member_train_s_median": round(statistics.median(e["elapsed_s"] for e in members), 3),
        "member_train_s_sum": round(sum(e["elapsed_s"] for e in members), 3),
        "oos_returns": [e["oos"]["total_return"] for e in evaluated],
    }


def bench_executor(
    config: str | Path = "config/demo.yaml", nodes: int = 2, cpus_per_node: int = 2
) -> dict[str, Any]:
    from engine.train.executors.ray import require_ray

    require_ray()
    from ray.cluster_utils import Cluster

    config = Path(config)
    result: dict[str, Any] = {"config": str(config), "nodes": nodes, "cpus_per_node": cpus_per_node}
    with tempfile.TemporaryDirectory(prefix="ploutos-bench-executor-") as tmp:
        result["local"] = _run(config, Path(tmp) / "local", [])
        started = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        result["cluster_start_s"] = round(time.perf_counter() - started, 2)
        try:
            result["ray"] = _run(
                config, Path(tmp) / "ray", ["--executor", "ray", "--ray-address", cluster.address]
            )
        finally:
            cluster.shutdown()
    local, ray = result["local"], result["ray"]
    units = max(1, local["members"])
    result["same_results"] = local["oos_returns"] == ray["oos_returns"]
    result["ray_over_local_wall"] = round(ray["wall_s"] / local["wall_s"], 3)
    result["overhead_per_member_s"] = round((ray["wall_s"] - local["wall_s"]) / units, 3)
    return result
