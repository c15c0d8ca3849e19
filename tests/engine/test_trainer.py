"""The walk-forward trainer end to end, through the real command line and real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from engine.atomic import file_sha256
from engine.runs.events import read_events
from engine.runs.folder import RunFolder
from engine.system.threads import THREAD_VARS
from tests.conftest import ROOT, ploutos

pytestmark = pytest.mark.timeout(600)


def events_of(folder: RunFolder) -> list[dict]:
    return read_events(folder.events_path)[0]


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def only_run(runs: Path) -> RunFolder:
    found = [p for p in runs.iterdir() if (p / "config.yaml").exists()]
    assert len(found) == 1, found
    return RunFolder(found[0])


def run_when_made(runs: Path) -> RunFolder | None:
    """For ``wait_for``: the one run folder once its config is written, None until then (a folder
    being made is a reason to wait, not a failure); two runs are a failure at once."""
    if not runs.is_dir():
        return None
    found = [p for p in runs.iterdir() if (p / "config.yaml").exists()]
    assert len(found) <= 1, found
    return RunFolder(found[0]) if found else None


def parked(folder: RunFolder, kind: str, **where: int) -> dict | None:
    """The ``member_paused`` / ``evaluation_paused`` event of a PLOUTOS_FAULT pause, if written."""
    for e in of_type(events_of(folder), kind):
        if all(e.get(k) == v for k, v in where.items()):
            return e
    return None


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"trainer exited ({proc.returncode}) before {what}: {out}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def start_trainer(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finished_shas(folder: RunFolder) -> dict[str, str]:
    out = {}
    for model in sorted((folder.root / "models").glob("fold_*/member_*/model.zip")):
        out[str(model.relative_to(folder.root))] = file_sha256(model)
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_dataset):
    """One full demo run through ./start_training.sh, as the README tells users to start it."""
    import yaml

    tmp = tmp_path_factory.mktemp("run")
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["dataset_path"] = str(demo_dataset)
    config = tmp / "demo.yaml"
    config.write_text(yaml.safe_dump(cfg))
    runs = tmp / "runs"
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    proc = subprocess.run(
        [str(ROOT / "start_training.sh"), "--config", str(config), "--runs-dir", str(runs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return only_run(runs), proc


def test_demo_run_finishes_with_models_evaluation_and_montecarlo(demo_run):
    from stable_baselines3 import PPO

    folder, proc = demo_run
    folds = folder.read_folds()
    assert len(folds) == 2
    events = events_of(folder)
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    finished = of_type(events, "member_finished")
    assert sorted((e["fold"], e["member"]) for e in finished) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for e in finished:
        model = folder.member_dir(e["fold"], e["member"]) / "model.zip"
        assert file_sha256(model) == e["sha256"]
        loaded = PPO.load(model, device="cpu")
        assert loaded.num_timesteps == e["timesteps"] >= 4096
    progress = of_type(events, "member_progress")
    assert progress and all(p["fps"] >= 0 and p["total"] == 4096 for p in progress)
    evaluated = of_type(events, "fold_evaluated")
    assert [e["fold"] for e in evaluated] == [0, 1]
    for e in evaluated:
        result = json.loads(folder.fold_result_path(e["fold"]).read_text())
        assert result["oos"] == e["oos"] and result["members_used"] == 2
        for key in ("total_return", "sharpe", "max_drawdown", "turnover"):
            assert key in e["oos"] and key in e["buy_and_hold"]
        assert len(e["members"]) == 2
    mc = {e["scope"]: e["stats"] for e in of_type(events, "montecarlo")}
    assert set(mc) == {"fold_00", "fold_01", "pooled"}
    assert mc["fold_00"]["simulations"] == 200 and mc["pooled"]["simulations"] == 400
    for stats in mc.values():
        assert 0.0 <= stats["loss_probability"] <= 1.0
        assert stats["cvar_95"] <= stats["var_95"] <= stats["median"]
        assert sum(stats["histogram"]["counts"]) == stats["simulations"]
    summary = json.loads(folder.summary_path.read_text())
    assert summary["montecarlo"] == mc["pooled"]
    status = json.loads(folder.status_path.read_text())
    assert status["state"] == "finished" and status["progress"] == 1.0
    assert folder.state() == "finished"
    assert "Monte Carlo loss probability" in proc.stdout


def test_demo_run_is_judged_honestly_and_no_skill_is_shown(demo_run):
    """The demo market has no edge: the verdict must say no skill, with every statistic there."""
    folder, proc = demo_run
    summary = json.loads(folder.summary_path.read_text())
    assert summary["fill"] == "next_open" and summary["fill_optimistic"] is False
    for fold in summary["folds"]:
        assert fold["fill"] == "next_open"
        assert set(fold["nulls"]) == {"cash", "always_long", "random"}
        # never trading never loses: the cash null's loss probability is 0 on every path
        assert fold["nulls"]["cash"]["stats"]["loss_probability"] == 0.0
        timing = fold["timing"]
        assert timing["permutations"] == 199 and 1 / 200 <= timing["p_return"] <= 1.0
        table = fold["cost_sensitivity"]
        assert table["cost_bps"] == [0.0, 3.0, 6.0, 12.0]
        assert table["total_return"][1] == pytest.approx(fold["oos"]["total_return"], abs=1e-12)
        assert table["total_return"] == sorted(table["total_return"], reverse=True)
        assert 0.0 <= fold["oos"]["mean_exposure"] <= 1.0
        assert fold["buy_and_hold_matched"]["exposure"] == fold["oos"]["mean_exposure"]
        trials = np.load(folder.fold_trials_path(fold["fold"]["index"]))
        assert trials["returns"].shape == (2, fold["oos"]["n_bars"])
    over = summary["overfitting"]
    assert over["n_trials"] == 4 // 2 and over["n_runs"] == 1  # two member slots, two folds
    assert over["deflated_sharpe"] is not None and 0.0 <= over["deflated_sharpe"] <= 1.0
    assert summary["pooled"]["timing"]["folds"] == 2
    verdict = summary["verdict"]
    assert verdict["skill"] is False and verdict["line"].startswith("skill not shown:")
    assert summary["reproducibility"]["config_hash"] == folder.read_meta()["config_hash"]
    events = events_of(folder)
    judged = of_type(events, "verdict")
    assert len(judged) == 1 and judged[0]["verdict"] == verdict
    assert events.index(judged[0]) < len(events) - 1  # before run_finished
    assert "skill not shown" in proc.stdout


def test_every_process_of_the_run_had_sanitized_thread_pools(demo_run):
    folder, _ = demo_run
    events = events_of(folder)
    started = of_type(events, "run_started")[0]
    assert started["threads"]["env"] == {name: "1" for name in THREAD_VARS}
    assert started["plan"]["torch_threads"] >= 1
    workers = of_type(events, "member_started")
    assert len(workers) == 4
    for w in workers:
        assert w["env"] == {name: "1" for name in THREAD_VARS}
        assert w["torch_threads"] == started["plan"]["torch_threads"]
        blas = [p for p in w["threadpools"] if p["api"] in ("openblas", "mkl", "blis")]
        assert blas and all(p["num_threads"] == 1 for p in blas)


def test_status_and_runs_commands_describe_the_finished_run(demo_run):
    folder, _ = demo_run
    runs = str(folder.root.parent)
    listed = ploutos("runs", "--runs-dir", runs, "--json")
    assert listed.returncode == 0
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == folder.run_id and row["state"] == "finished"
    status = ploutos("status", folder.run_id, "--runs-dir", runs)
    assert status.returncode == 0, status.stderr
    assert "finished" in status.stdout and "Monte Carlo pooled" in status.stdout


def test_kill_9_then_resume_keeps_finished_models_and_continues_from_the_checkpoint(
    demo_config, tmp_path
):
    config = demo_config(training__total_timesteps=4096, training__checkpoint_every_timesteps=2048)
    runs = tmp_path / "runs"
    # Member 1 parks once checkpointed at 2,048 timesteps: the kill lands while it is training.
    env = {"PLOUTOS_FAULT": "pause@0/1:2048"}
    proc = start_trainer("train", "--config", str(config), "--runs-dir", str(runs), env=env)
    try:
        folder = wait_for(lambda: run_when_made(runs), 120, "run", proc)
        wait_for(lambda: of_type(events_of(folder), "member_finished"), 300, "a member", proc)
        wait_for(
            lambda: parked(folder, "member_paused", fold=0, member=1), 300, "member 1 parked", proc
        )
        second = folder.checkpoint_dir(0, 1) / "checkpoint.zip"
        assert second.exists(), "member 1 parks only once checkpointed"
        # forkserver, resource tracker, workers: nothing of the run may outlive its trainer
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2
        before = finished_shas(folder)
        assert before, "a member had finished"
        os.kill(proc.pid, signal.SIGKILL)  # the trainer only: its workers must follow it
        proc.wait(10)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived the killed trainer: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert folder.state() == "interrupted"
    checkpoint_steps = json.loads((folder.checkpoint_dir(0, 1) / "checkpoint.json").read_text())
    resumed = ploutos("resume", str(folder.root), timeout=500)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = finished_shas(folder)
    for path, sha in before.items():
        assert after[path] == sha, f"{path} was retrained"
    events = events_of(folder)
    resume_at = next(i for i, e in enumerate(events) if e["type"] == "run_resumed")
    restarted = of_type(events[resume_at:], "member_started")
    trained_again = {(e["fold"], e["member"]) for e in restarted}
    finished_before = {
        (e["fold"], e["member"]) for e in of_type(events[:resume_at], "member_finished")
    }
    assert not trained_again & finished_before
    m01 = next(e for e in restarted if (e["fold"], e["member"]) == (0, 1))
    assert m01["resumed_from"] >= checkpoint_steps["timesteps"] >= 2048
    assert len(after) == 4 and events[-1]["type"] == "run_finished"
    assert folder.state() == "finished"


def test_stop_checkpoints_and_resume_finishes_and_sighup_is_ignored(demo_config, tmp_path):
    config = demo_config(
        training__total_timesteps=4096,
        training__checkpoint_every_timesteps=100000,
        walk_forward__max_folds=1,
    )
    runs = tmp_path / "runs"
    # Member 0 parks at 2,048 timesteps until told to stop: SIGHUP and stop find it training.
    env = {"PLOUTOS_FAULT": "pause@0/0:2048"}
    proc = start_trainer("train", "--config", str(config), "--runs-dir", str(runs), env=env)
    try:
        folder = wait_for(lambda: run_when_made(runs), 120, "run", proc)
        wait_for(
            lambda: parked(folder, "member_paused", fold=0, member=0), 300, "member 0 parked", proc
        )
        os.kill(proc.pid, signal.SIGHUP)  # the SSH session that started it went away
        time.sleep(1.0)
        assert proc.poll() is None, "SIGHUP ended the run"
        stopped = ploutos("stop", folder.run_id, "--runs-dir", str(runs), "--wait", "120")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip().endswith("stopped")
        assert proc.wait(60) == 3
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    events = events_of(folder)
    assert of_type(events, "run_stopping") and events[-1]["type"] == "run_stopped"
    member_stopped = of_type(events, "member_stopped")
    assert (0, 0) in {(e["fold"], e["member"]) for e in member_stopped}
    for e in member_stopped:
        ckpt = folder.checkpoint_dir(e["fold"], e["member"]) / "checkpoint.json"
        assert json.loads(ckpt.read_text())["timesteps"] == e["timesteps"] > 0
    resumed = ploutos("resume", folder.run_id, "--runs-dir", str(runs), timeout=500)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert folder.state() == "finished"


def test_kill_9_during_an_evaluation_writes_no_orphan_result_and_resume_records_the_fold(
    demo_config, tmp_path
):
    config = demo_config(walk_forward__max_folds=1)
    runs = tmp_path / "runs"
    # The evaluation parks after loading its models, before it writes anything.
    env = {"PLOUTOS_FAULT": "pause-eval@0"}
    proc = start_trainer("train", "--config", str(config), "--runs-dir", str(runs), env=env)
    try:
        folder = wait_for(lambda: run_when_made(runs), 120, "run", proc)
        wait_for(
            lambda: parked(folder, "evaluation_paused", fold=0), 300, "the evaluation parked", proc
        )
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"the evaluation outlived the killed trainer: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Released by its trainer's death, the evaluation gave up instead of finishing unrecorded.
    assert not folder.fold_result_path(0).exists()
    assert not folder.fold_montecarlo_path(0).exists()
    assert folder.state() == "interrupted"
    resumed = ploutos("resume", str(folder.root), timeout=500)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    events = events_of(folder)
    resume_at = next(i for i, e in enumerate(events) if e["type"] == "run_resumed")
    assert not of_type(events[resume_at:], "member_started"), "finished members were retrained"
    (evaluated,) = of_type(events, "fold_evaluated")
    result = json.loads(folder.fold_result_path(0).read_text())
    assert evaluated["oos"] == result["oos"] and evaluated["members_used"] == 2
    assert {e["scope"] for e in of_type(events, "montecarlo")} == {"fold_00", "pooled"}
    assert folder.state() == "finished"
    assert json.loads(folder.status_path.read_text())["folds_evaluated"] == [0]


def test_resume_records_folds_whose_result_files_the_log_does_not_show(demo_run, tmp_path):
    """An evaluation that finished after its trainer was killed left a result nobody recorded:
    the resume writes its events from the files, so status and panel show every fold."""
    finished, _ = demo_run
    folder = RunFolder(tmp_path / finished.run_id)
    shutil.copytree(finished.root, folder.root)
    dropped = {"fold_evaluated", "montecarlo", "run_finished"}
    lines = folder.events_path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["type"] not in dropped]
    folder.events_path.write_text("".join(kept))
    folder.write_status(
        {"run_id": folder.run_id, "state": "running"}
    )  # as a killed trainer left it
    assert folder.state() == "interrupted"
    resumed = ploutos("resume", str(folder.root), timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    events = events_of(folder)[len(kept) :]
    assert not of_type(events, "member_started"), "finished members were retrained"
    evaluated = of_type(events, "fold_evaluated")
    assert [e["fold"] for e in evaluated] == [0, 1]
    for e in evaluated:
        result = json.loads(folder.fold_result_path(e["fold"]).read_text())
        assert e["oos"] == result["oos"] and e["members"] == result["members"]
        assert e["buy_and_hold"] == result["buy_and_hold"] and e["members_used"] == 2
    mc = {e["scope"]: e["stats"] for e in of_type(events, "montecarlo")}
    assert set(mc) == {"fold_00", "fold_01", "pooled"}
    assert mc["fold_01"] == json.loads(folder.fold_result_path(1).read_text())["montecarlo"]
    status = ploutos("status", str(folder.root), "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["state"] == "finished" and shown["folds_evaluated"] == [0, 1]
    # A second resume has nothing left to record.
    again = ploutos("resume", str(folder.root), timeout=300)
    assert again.returncode == 0 and "already finished" in again.stdout


def _preload_address_space_kib() -> int:
    """Peak address space (KiB) of a process that imports what the workers' forkserver preloads."""
    from engine.system.procs import TRAINER_PRELOAD

    code = (
        f"import {', '.join(TRAINER_PRELOAD)}\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')][0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_a_too_small_memory_limit_fails_the_run_naming_the_limit(demo_config, tmp_path):
    import resource

    config = demo_config(walk_forward__max_folds=1)
    runs = tmp_path / "runs"
    # Enough for the trainer (pandas, the feature cache: well under half of it), too little for
    # the forkserver that loads torch and stable-baselines3 for the workers.
    limit_kib = _preload_address_space_kib() * 2 // 3
    # The feature cache is built beforehand, as `ploutos features build` would: building it under
    # the limit fails earlier (pyarrow cannot start its reader threads), in the one-line CLI error
    # tests/engine/test_cli.py pins; this test is about the workers' forkserver dying.
    built = ploutos("features", "build", "--config", str(config))
    assert built.returncode == 0, built.stderr

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_kib * 1024, limit_kib * 1024))

    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "train", "--config", str(config)]
        + ["--runs-dir", str(runs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_memory,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    folder = only_run(runs)
    status = json.loads(folder.status_path.read_text())
    assert folder.state() == "failed", status
    error = status["error"]
    assert "EOFError" not in error and "memory" in error.lower(), error
    assert f"ulimit -v {limit_kib}" in error, error
    last = events_of(folder)[-1]
    assert last["type"] == "run_failed" and last["error"] == error
    said = result.stderr.strip().splitlines()[-1]
    assert "EOFError" not in said and f"ulimit -v {limit_kib}" in said, said


@pytest.mark.parametrize("fault", ["raise", "exit"])
def test_a_crashing_member_is_reported_and_the_others_finish(demo_config, tmp_path, fault):
    config = demo_config(walk_forward__max_folds=1)
    runs = tmp_path / "runs"
    failed = ploutos(
        "train",
        "--config",
        str(config),
        "--runs-dir",
        str(runs),
        env={"PLOUTOS_FAULT": f"{fault}@0/1"},
        timeout=500,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    folder = only_run(runs)
    events = events_of(folder)
    (crash,) = of_type(events, "member_failed")
    assert (crash["fold"], crash["member"]) == (0, 1)
    expected = "injected fault" if fault == "raise" else "exited with code 3"
    assert expected in crash["error"]
    assert [(e["fold"], e["member"]) for e in of_type(events, "member_finished")] == [(0, 0)]
    (evaluated,) = of_type(events, "fold_evaluated")
    assert evaluated["members_used"] == 1
    assert events[-1]["type"] == "run_failed" and folder.state() == "failed"
    again = ploutos("resume", str(folder.root), timeout=500)
    assert again.returncode == 0, again.stdout + again.stderr
    events = events_of(folder)
    assert of_type(events, "fold_evaluated")[-1]["members_used"] == 2
    assert folder.state() == "finished"


def test_a_plan_that_does_not_fit_the_thread_limit_is_refused_before_anything_starts(
    demo_config, tmp_path
):
    config = demo_config()
    runs = tmp_path / "runs"
    script = (
        f"ulimit -S -u 40 && exec {sys.executable} -m engine.cli train --config {config} "
        f"--runs-dir {runs}"
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ulimit -u 40" in result.stderr and "\n" not in result.stderr.strip()
    assert not runs.exists() or not any(runs.iterdir())


def test_detach_returns_at_once_and_the_trainer_runs_in_its_own_session(demo_config, tmp_path):
    config = demo_config(walk_forward__max_folds=1)
    runs = tmp_path / "runs"
    started = ploutos("train", "--config", str(config), "--runs-dir", str(runs), "--detach")
    assert started.returncode == 0, started.stderr
    folder = only_run(runs)
    pid = int(started.stdout.split("trainer pid ")[1].split(",")[0])
    assert os.getsid(pid) == pid  # a session leader: no terminal, no SIGHUP from ours
    wait_for(lambda: folder.state() == "finished", 300, "the detached run to finish")
    assert "finished" in folder.log_path.read_text()
