"""The walk-forward run on a real multi-node Ray cluster on loopback (a head and two workers),
against the local executor; a worker node dies mid-run; Ray missing is one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.atomic import file_sha256
from engine.runs.events import read_events
from engine.runs.folder import RunFolder, list_runs
from engine.runs.jobs import ploutos_command
from tests.conftest import ROOT, ploutos

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster  # the ray extra is part of the dev install

    # The head runs no members (0 CPUs): they go to the two worker nodes.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [c.add_node(num_cpus=2) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()


def start_ray_run(config, runs, address) -> subprocess.Popen:
    """`ploutos train --executor ray` in the background, in its own process group."""
    args = ["train", "--config", str(config), "--runs-dir", str(runs)]
    return subprocess.Popen(
        ploutos_command(*args, "--executor", "ray", "--ray-address", address),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def events(folder: RunFolder, kind: str) -> list[dict]:
    return [e for e in read_events(folder.events_path)[0] if e["type"] == kind]


def the_run(runs) -> RunFolder:
    (folder,) = list_runs(runs)
    return folder


def fold_results(folder: RunFolder) -> list[dict]:
    out = []
    for e in events(folder, "fold_evaluated"):
        out.append({k: e[k] for k in ("fold", "members_used", "oos", "buy_and_hold", "members")})
    return out


def test_a_ray_cluster_run_gives_the_local_results(cluster, demo_config, tmp_path):
    c, workers = cluster
    config = demo_config()
    local = ploutos("train", "--config", str(config), "--runs-dir", str(tmp_path / "local"))
    assert local.returncode == 0, local.stdout + local.stderr
    on_ray = ploutos(
        "train",
        "--config",
        str(config),
        "--runs-dir",
        str(tmp_path / "ray"),
        "--executor",
        "ray",
        "--ray-address",
        c.address,
        timeout=600,
    )
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    a, b = the_run(tmp_path / "local"), the_run(tmp_path / "ray")
    assert fold_results(a) == fold_results(b)
    mc_a = {e["scope"]: e["stats"] for e in events(a, "montecarlo")}
    mc_b = {e["scope"]: e["stats"] for e in events(b, "montecarlo")}
    assert mc_a == mc_b and "pooled" in mc_b
    worker_ids = {w.node_id[:8] for w in workers}
    nodes = {e["node"].split("/")[-1] for e in events(b, "member_started")}
    assert nodes and nodes <= worker_ids, (nodes, worker_ids)
    for e in events(b, "member_finished"):
        model = b.member_dir(e["fold"], e["member"]) / "model.zip"
        assert file_sha256(model) == e["sha256"]
    status = ploutos("status", b.run_id, "--runs-dir", str(tmp_path / "ray"))
    assert status.returncode == 0 and "finished" in status.stdout
    # The panel reads a Ray run like any other, with the node of each member.
    from ploutos_tui.model.runs import RunsWatcher

    (snap,) = RunsWatcher(tmp_path / "ray").poll()
    assert snap.state == "finished" and "pooled" in snap.montecarlo
    assert {m.node.split("/")[-1] for m in snap.members} <= worker_ids


def test_without_ray_the_executor_is_one_line_and_nothing_is_created(demo_config, tmp_path):
    runs = tmp_path / "runs"
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from engine.cli import main\n"
        f"sys.exit(main(['train', '--config', {str(demo_config())!r}, '--executor', 'ray',"
        f" '--runs-dir', {str(runs)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "pip install 'ploutos[ray]'" in result.stderr
    assert not runs.exists()


def test_losing_a_worker_node_mid_run_retries_its_member_elsewhere(cluster, demo_config, tmp_path):
    c, workers = cluster
    config = demo_config(
        training__total_timesteps=16384,
        training__checkpoint_every_timesteps=2048,
        walk_forward__max_folds=1,
    )
    runs = tmp_path / "runs"
    proc = start_ray_run(config, runs, c.address)
    try:
        deadline = time.monotonic() + 300
        victim = None
        while victim is None:
            assert time.monotonic() < deadline and proc.poll() is None, "no member started"
            time.sleep(0.2)
            if not runs.exists() or not list_runs(runs):
                continue
            folder = the_run(runs)
            progress = events(folder, "member_progress")
            started = events(folder, "member_started")
            if progress and started:
                node = started[-1]["node"].split("/")[-1]
                victim = next(w for w in workers if w.node_id.startswith(node))
                lost = (started[-1]["fold"], started[-1]["member"])
        c.remove_node(victim)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        c.add_node(num_cpus=2)  # give the module's cluster its second worker back
    folder = the_run(runs)
    restarts = [e for e in events(folder, "member_started") if (e["fold"], e["member"]) == lost]
    assert len(restarts) >= 2, "the lost member was not retried"
    assert restarts[-1]["node"].split("/")[-1] != victim.node_id[:8]
    finished = {(e["fold"], e["member"]) for e in events(folder, "member_finished")}
    assert finished == {(0, 0), (0, 1)}
    assert json.loads(folder.status_path.read_text())["state"] == "finished"


def test_a_stopped_ray_run_resumes_only_its_unfinished_members(cluster, demo_config, tmp_path):
    c, _workers = cluster
    config = demo_config(
        training__total_timesteps=32768,
        training__checkpoint_every_timesteps=2048,
        walk_forward__max_folds=1,
    )
    runs = tmp_path / "runs"
    proc = start_ray_run(config, runs, c.address)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "no progress"
            time.sleep(0.2)
            if runs.exists() and list_runs(runs):
                folder = the_run(runs)
                done = events(folder, "member_finished")
                if done and events(folder, "member_progress")[-1]["member"] != done[0]["member"]:
                    break
        stopped = ploutos("stop", folder.run_id, "--runs-dir", str(runs), "--wait", "120")
        assert stopped.stdout.strip().endswith("stopped"), stopped.stdout + stopped.stderr
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finished_before = {(e["fold"], e["member"]) for e in events(folder, "member_finished")}
    (halted,) = events(folder, "member_stopped")
    ckpt = folder.checkpoint_dir(halted["fold"], halted["member"]) / "checkpoint.json"
    assert json.loads(ckpt.read_text())["timesteps"] == halted["timesteps"] > 0
    resumed = ploutos("resume", folder.run_id, "--runs-dir", str(runs), timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    all_events = read_events(folder.events_path)[0]
    at = next(i for i, e in enumerate(all_events) if e["type"] == "run_resumed")
    again = [e for e in all_events[at:] if e["type"] == "member_started"]
    assert {(e["fold"], e["member"]) for e in again} == {(halted["fold"], halted["member"])}
    assert again[0]["resumed_from"] == halted["timesteps"]
    assert not finished_before & {(e["fold"], e["member"]) for e in again}
    assert folder.state() == "finished"
