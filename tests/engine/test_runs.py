import json
import multiprocessing as mp
import os
import time

import pytest

from engine.errors import PloutosError
from engine.runs import (
    EventLog,
    EventTail,
    RunFolder,
    list_runs,
    read_events,
    replay,
    resolve_run,
)


def make_run(root, name="20260101-000000-demo-abcd"):
    folder = RunFolder(root / name).create()
    folder.config_path.write_text("dataset_path: x\n")
    return folder


def test_reader_waits_for_the_rest_of_a_partial_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.emit("run_started", run_id="r")
    with open(path, "ab") as fh:  # a writer caught mid-line
        fh.write(b'{"ts":"x","type":"member_pro')
    events, offset = read_events(path)
    assert [e["type"] for e in events] == ["run_started"]
    more, offset2 = read_events(path, offset)
    assert more == [] and offset2 == offset
    with open(path, "ab") as fh:
        fh.write(b'gress","fold":0,"member":0,"timesteps":5,"total":10}\n')
    more, offset3 = read_events(path, offset)
    assert [e["type"] for e in more] == ["member_progress"] and offset3 == path.stat().st_size


def test_tail_reads_only_what_was_appended(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for i in range(1000):
        log.emit("member_progress", fold=0, member=0, timesteps=i, total=1000, fps=1.0)
    tail = EventTail(path, chunk_bytes=4096)
    assert len(tail.poll()) == 1000
    log.emit("run_finished")
    assert [e["type"] for e in tail.poll()] == ["run_finished"]
    assert tail.poll() == []


def test_an_unreadable_line_does_not_stop_the_reader(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type":"a","ts":"t"}\nnot json\n{"type":"b","ts":"t"}\n')
    events, _ = read_events(path)
    assert [e["type"] for e in events] == ["a", "unreadable", "b"]


def test_events_never_contain_nan(tmp_path):
    log = EventLog(tmp_path / "e.jsonl")
    with pytest.raises(ValueError):
        log.emit("member_progress", mean_reward=float("nan"))


def _hold(path, ready):
    folder = RunFolder(path)
    with folder.hold_lock():
        ready.set()
        time.sleep(60)


def test_a_running_status_without_a_live_trainer_reads_interrupted(tmp_path):
    folder = make_run(tmp_path)
    folder.write_status({"state": "running"})
    assert folder.state() == "interrupted"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(folder.root, ready))
    proc.start()
    try:
        assert ready.wait(30)
        assert folder.trainer_alive()
        assert folder.state() == "running"
        with pytest.raises(PloutosError, match="already running"), folder.hold_lock():
            pass
    finally:
        proc.kill()
        proc.join()
    assert not folder.trainer_alive()
    assert folder.state() == "interrupted"


def test_replay_summarises_members_folds_and_montecarlo(tmp_path):
    folder = make_run(tmp_path)
    log = EventLog(folder.events_path)
    log.emit(
        "run_started",
        run_id=folder.run_id,
        n_folds=1,
        ensemble=2,
        total_timesteps=100,
        plan={"profile": "laptop"},
        algorithm="ppo",
    )
    log.emit("member_started", fold=0, member=0, timesteps=0, total=100)
    log.emit(
        "member_progress", fold=0, member=0, timesteps=50, total=100, fps=10.0, mean_reward=0.1
    )
    log.emit("member_finished", fold=0, member=0, timesteps=100)
    log.emit("member_failed", fold=0, member=1, error="RuntimeError: boom")
    stats = {"simulations": 10, "loss_probability": 0.3}
    log.emit("montecarlo", scope="pooled", stats=stats)
    log.emit("run_failed", error="1 unit(s) failed")
    view = replay(folder)
    status = view.to_status()
    assert status["members"] == {"total": 2, "finished": 1, "running": 0, "failed": 1}
    assert status["timesteps"] == {"done": 100, "total": 200}
    assert status["montecarlo_pooled"] == stats
    assert status["state"] == "failed" and status["error"] == "1 unit(s) failed"
    assert view.members[(0, 1)].error == "RuntimeError: boom"
    json.dumps(status)


def test_runs_are_found_by_id_path_or_unique_fragment(tmp_path):
    a = make_run(tmp_path, "20260101-000000-demo-aaaa")
    make_run(tmp_path, "20260102-000000-demo-bbbb")
    assert [r.run_id for r in list_runs(tmp_path)] == [
        "20260102-000000-demo-bbbb",
        "20260101-000000-demo-aaaa",
    ]
    assert resolve_run("20260101-000000-demo-aaaa", tmp_path) == a
    assert resolve_run(a.root) == a
    assert resolve_run("aaaa", tmp_path) == a
    with pytest.raises(PloutosError, match="matches"):
        resolve_run("demo", tmp_path)
    with pytest.raises(PloutosError, match="no such run"):
        resolve_run("zzzz", tmp_path)


def test_a_run_folder_is_never_created_over_another(tmp_path):
    make_run(tmp_path, "r")
    with pytest.raises(PloutosError, match="already exists"):
        RunFolder(tmp_path / "r").create()
    assert os.listdir(tmp_path / "r")
