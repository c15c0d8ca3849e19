import json
import multiprocessing as mp
import os
import time

import pytest

from engine.errors import PloutosError
from engine.runs.events import MAX_LINE_BYTES, EventLog, EventTail, parse_stamp, read_events
from engine.runs.folder import STALL_AFTER_S, RunFolder, list_runs, resolve_run
from engine.runs.view import RunView, replay
from tests.engine.event_lines import STARTED, encode_lines, member_event


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


def test_trainer_pid_names_only_a_live_lock_holder(tmp_path):
    folder = make_run(tmp_path)
    folder.write_status({"state": "running", "pid": 123})
    folder.lock_path.write_text("456\n")  # left behind by a trainer that died
    assert folder.trainer_pid() is None
    with folder.hold_lock():
        assert folder.trainer_pid() == os.getpid()  # the lock file, not the status
        folder.lock_path.write_text("")
        assert folder.trainer_pid() == 123  # the status is the fallback
        assert folder.trainer_pid({"pid": True}) is None  # only a positive integer counts


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
    assert resolve_run(str(a.root)) == a
    assert resolve_run("20260101", tmp_path) == a  # a unique prefix
    with pytest.raises(PloutosError, match="ambiguous, 2 runs"):
        resolve_run("2026010", tmp_path)
    with pytest.raises(PloutosError, match="no such run"):
        resolve_run("zzzz", tmp_path)
    with pytest.raises(PloutosError, match="no such run"):
        resolve_run("aaaa", tmp_path)  # the end of an id is no prefix: no substring guessing


def test_a_run_folder_is_never_created_over_another(tmp_path):
    make_run(tmp_path, "r")
    with pytest.raises(PloutosError, match="already exists"):
        RunFolder(tmp_path / "r").create()
    assert os.listdir(tmp_path / "r")


# ---------------------------------------------------------------------- run ids (issue 10)
@pytest.mark.parametrize(
    "name, message",
    [
        ("", "empty run id"),
        ("*", "not a run id"),
        ("2026*", "not a run id"),
        ("?", "not a run id"),
        ("-x", "not a run id"),
        pytest.param("x" * 5000, "5,000 characters", id="5000-characters"),
        ("a/b", "not a run folder"),
        ("..", "not a run folder"),
        ("/", "not a run folder"),
        ("runs/../../etc", "not a run folder"),
    ],
)
def test_bad_run_ids_are_one_clear_error(tmp_path, name, message):
    make_run(tmp_path, "20260101-000000-demo-aaaa")
    with pytest.raises(PloutosError, match=message) as caught:
        resolve_run(name, tmp_path)
    text = str(caught.value)
    assert "\n" not in text and len(text) < 400  # never echoes a 5,000-character name whole


def test_an_exact_id_wins_over_a_longer_one_it_prefixes(tmp_path):
    short = make_run(tmp_path, "run-a")
    make_run(tmp_path, "run-ab")
    assert resolve_run("run-a", tmp_path) == short
    assert resolve_run("run-ab", tmp_path).run_id == "run-ab"


# ---------------------------------------------------------------------- bad run folders
@pytest.mark.parametrize(
    "content, reason",
    [
        (b"[1, 2]", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"{not json", "not valid JSON"),
        (b'{"state": "\xff"}', "not UTF-8"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a byte order mark
        (b'{"state": 5}', "unknown state"),
        (b'{"state": "exploded"}', "unknown state"),
    ],
)
def test_an_unreadable_status_shows_that_run_as_unreadable(tmp_path, content, reason):
    bad = make_run(tmp_path, "20260101-000000-demo-aaaa")
    good = make_run(tmp_path, "20260102-000000-demo-bbbb")
    good.write_status({"state": "finished"})
    bad.status_path.write_bytes(content)
    assert bad.read_status() == {}
    found = bad.run_state()
    assert found.state == "unreadable" and reason in found.reason and "status.json" in found.reason
    assert bad.state() == "unreadable"
    assert [r.state() for r in list_runs(tmp_path)] == ["finished", "unreadable"]


BAD_LINES = [
    b"null",
    b"[1,2]",
    b"\xff\xfe not utf-8",
    b"{broken",
    b"[" * 100_000,  # nesting deep enough to exhaust the JSON parser's recursion
    b"1" * 5000,  # an integer too long for int()
    b'{"type": 7}',
    {"type": "member_progress"},
    {"type": "member_progress", "fold": 0, "member": 0, "timesteps": "5", "total": 100},
    {"type": "member_progress", "fold": 0, "member": True, "timesteps": 5, "total": 100},
    {"type": "member_progress", "fold": -1, "member": 0, "timesteps": 5, "total": 100},
    {"type": "run_started", "plan": [1]},
    {"type": "run_started", "n_folds": 10**6, "ensemble": 10**6},  # would build 1e12 rows
    {"type": "member_finished", "fold": "0", "member": 0},
    {"type": "fold_evaluated", "fold": 0, "oos": None, "buy_and_hold": {}},
    {"type": "montecarlo", "stats": [1]},
    {"type": "member_started", "fold": 0, "member": 0, "ts": 5},
    {"type": "member_progress", "fold": 0, "member": 1, "timesteps": 5, "total": 9, "fps": "x"},
]


def test_bad_events_are_skipped_and_counted_never_fatal(tmp_path):
    folder = make_run(tmp_path)
    good = [
        STARTED,
        member_event("member_started", 0, timesteps=0, total=100),
        member_event("member_progress", 0, timesteps=50, total=100, fps=10.0, mean_reward=None),
        member_event("member_finished", 0, timesteps=100),
        member_event("member_finished", 1, timesteps=100),
        {"ts": "2026-01-01T00:00:02.000Z", "type": "run_finished"},
    ]
    # each bad line after the first good one, so a reader that stops at one loses the rest
    mixed = [good[0], *BAD_LINES, *good[1:]]
    folder.events_path.write_bytes(encode_lines(*mixed))
    view = replay(folder)
    assert view.state == "finished" and view.progress == 1.0
    assert view.profile == "laptop" and len(view.members) == 2
    assert view.skipped_events == len(BAD_LINES)
    assert view.skip_reason == f"line at byte {len(encode_lines(good[0]))}: not a JSON object"
    status = view.to_status()
    assert status["skipped_events"] == len(BAD_LINES)
    json.dumps(status, allow_nan=False)


def test_a_bad_event_changes_nothing(tmp_path):
    view = RunView()
    view.apply(STARTED)
    before = view.to_status()
    for bad in BAD_LINES:
        if isinstance(bad, dict):
            assert view.apply(bad) is False
    after = view.to_status()
    assert after.pop("skipped_events") == view.skipped_events
    assert after.pop("skip_reason") == "member_progress: 'fold' missing"
    assert after == {k: v for k, v in before.items() if not k.startswith("skip")}
    assert view.skipped_events == sum(isinstance(b, dict) for b in BAD_LINES)


# ---------------------------------------------------------------------- long lines
def test_a_line_longer_than_the_chunk_is_still_one_line(tmp_path):
    folder = make_run(tmp_path)
    long = member_event("member_finished", 1, timesteps=100, pad="y" * (3 << 20))  # 3 chunks
    folder.events_path.write_bytes(
        encode_lines(
            STARTED,
            member_event("member_finished", 0, timesteps=100),
            long,
            {"type": "run_finished"},
        )
    )
    view = replay(folder)
    assert view.skipped_events == 0
    assert view.state == "finished" and view.progress == 1.0  # not 50 %: reading went on
    events, offset = read_events(folder.events_path)
    assert [e["type"] for e in events][-2:] == ["member_finished", "run_finished"]
    assert offset == folder.events_path.stat().st_size


def test_a_line_over_the_cap_is_skipped_and_reading_goes_on(tmp_path):
    folder = make_run(tmp_path)
    huge = b'{"type":"note","pad":"' + b"z" * (MAX_LINE_BYTES + 10) + b'"}'
    folder.events_path.write_bytes(
        encode_lines(
            STARTED, huge, member_event("member_finished", 0), member_event("member_finished", 1)
        )
    )
    view = replay(folder)
    assert view.skipped_events == 1 and "longer than" in view.skip_reason
    assert view.progress == 1.0


def test_the_tail_reads_each_byte_once_whatever_the_budget(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = encode_lines(
        STARTED, {"type": "note", "pad": "p" * 5000}, member_event("member_finished", 0)
    )
    path.write_bytes(lines + b'{"type":"run_fin')  # a partial last line
    tail = EventTail(path, chunk_bytes=256, max_line_bytes=4096)
    got, read = [], 0
    for _ in range(100):
        got += tail.poll(max_bytes=300)
        read += tail.bytes_read
        if tail.bytes_read == 0:
            break
    assert read == path.stat().st_size  # the partial line's bytes are not read again
    assert [e["type"] for e in got] == ["run_started", "unreadable", "member_finished"]
    assert got[1]["offset"] == len(encode_lines(STARTED)) and tail.skipped == 1
    assert tail.offset == len(lines)  # where the partial line starts
    with open(path, "ab") as fh:
        fh.write(b'ished"}\n')
    assert [e["type"] for e in tail.poll()] == ["run_finished"]
    assert tail.bytes_read == len(b'ished"}\n')


def test_a_replaced_log_is_read_from_its_start(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(encode_lines(STARTED, member_event("member_finished", 0)))
    tail = EventTail(path)
    assert len(tail.poll()) == 2
    path.write_bytes(encode_lines({"type": "run_finished"}))
    assert [e["type"] for e in tail.poll()] == ["run_finished"] and tail.restarts == 1


# ---------------------------------------------------------------------- stalled trainers
def test_a_live_trainer_with_an_old_heartbeat_shows_as_stalled(tmp_path):
    folder = make_run(tmp_path)
    beat = parse_stamp("2026-01-01T00:00:00.000Z")
    folder.write_status({"state": "running", "heartbeat": "2026-01-01T00:00:00.000Z"})
    with folder.hold_lock():
        os.utime(folder.lock_path, (beat, beat))  # the lock was taken at the heartbeat
        fresh = folder.run_state(now=beat + STALL_AFTER_S - 1)
        assert fresh.state == "running" and fresh.stalled_s is None
        assert fresh.label == "running"
        stalled = folder.run_state(now=beat + 120)
        assert stalled.state == "running" and stalled.stalled_s == pytest.approx(120)
        assert stalled.label == "running (stalled 120 s)"
        # a newer lock (a trainer that just took over, no heartbeat yet) counts as a beat
        os.utime(folder.lock_path, (beat + 100, beat + 100))
        assert folder.run_state(now=beat + 120).stalled_s is None
    assert folder.run_state(now=beat + 120).state == "interrupted"  # no lock holder: not stalled


def test_a_finished_run_is_never_stalled(tmp_path):
    folder = make_run(tmp_path)
    folder.write_status({"state": "finished", "heartbeat": "2020-01-01T00:00:00.000Z"})
    assert folder.run_state(now=parse_stamp("2026-01-01T00:00:00Z")).label == "finished"


# ---------------------------------------------------------------------- per-member histories
def _progress(fold, member, timesteps, reward=None, sb3=None, fps=100.0):
    return {
        "ts": "2026-01-01T00:00:00.000Z",
        "type": "member_progress",
        "fold": fold,
        "member": member,
        "timesteps": timesteps,
        "total": 1_000_000,
        "fps": fps,
        "mean_reward": reward,
        "sb3": sb3,
    }


def _started(fold, member, timesteps):
    return {
        "ts": "2026-01-01T00:00:00.000Z",
        "type": "member_started",
        "fold": fold,
        "member": member,
        "timesteps": timesteps,
        "total": 1_000_000,
        "node": "box",
    }


def test_a_member_history_is_bounded_evenly_spread_and_ends_at_the_newest_event():
    from engine.runs.view import HISTORY_POINTS

    view = RunView()
    n = 5000
    for i in range(n):
        view.apply(_progress(0, 0, (i + 1) * 100, reward=i / n, sb3={"entropy": 1.0 - i / n}))
    steps, values = view.histories[0, 0].points()
    assert len(steps) <= HISTORY_POINTS + 1
    assert len(steps) > HISTORY_POINTS // 2  # thinned by halves, never below half the cap
    assert steps == sorted(set(steps))  # strictly increasing
    assert steps[0] == 100 and steps[-1] == n * 100  # the first event and the newest one
    gaps = {b - a for a, b in zip(steps[:-1], steps[1:], strict=True)}
    assert len(gaps - {max(gaps)}) <= 1  # one stride, bar the newest point's own gap
    assert values["mean_reward"][-1] == pytest.approx((n - 1) / n)
    assert values["entropy"][0] == 1.0 and values["policy_loss"] == [None] * len(steps)
    assert all(len(series) == len(steps) for series in values.values())
    assert view.histories[0, 0].stride > 1


def test_a_member_history_survives_a_resume_and_drops_what_was_lost(tmp_path):
    """Trained to 5,000, checkpointed at 3,000, resumed: the points past 3,000 are gone, those
    before it stay, and the resumed training goes on from there in timesteps order."""
    folder = make_run(tmp_path)
    log = EventLog(folder.events_path)
    log.emit("run_started", run_id=folder.run_id, n_folds=1, ensemble=1, total_timesteps=9000)
    resumed = {"ts": "2026-01-01T00:00:00.000Z", "type": "run_resumed", "run_id": folder.run_id}
    with open(folder.events_path, "ab") as fh:
        fh.write(
            encode_lines(
                _started(0, 0, 0),
                *(_progress(0, 0, t, reward=t / 1e4) for t in range(1000, 6000, 1000)),
                resumed,
                _started(0, 0, 3000),
                *(_progress(0, 0, t, reward=-t / 1e4) for t in (3500, 4500)),
            )
        )
    view = replay(folder)
    steps, values = view.histories[0, 0].points()
    assert steps == [1000, 2000, 3000, 3500, 4500]
    assert values["mean_reward"] == [0.1, 0.2, 0.3, -0.35, -0.45]
    # restarted from its checkpoint, before its first progress: the lost points are gone already
    restarted = RunView()
    for event in (_started(0, 0, 0), *(_progress(0, 0, t) for t in (1000, 3000, 5000))):
        restarted.apply(event)
    restarted.apply(_started(0, 0, 3000))
    assert restarted.histories[0, 0].points()[0] == [1000, 3000]
    # a progress event at or before the last point replaces the points from there on
    view.apply(_progress(0, 0, 4500, reward=1.0))
    assert view.histories[0, 0].points()[0] == [1000, 2000, 3000, 3500, 4500]
    assert view.histories[0, 0].points()[1]["mean_reward"][-1] == 1.0


def test_histories_stay_out_of_the_status_file():
    view = RunView()
    view.apply(_started(0, 0, 0))
    view.apply(_progress(0, 0, 100, reward=0.1, sb3={"entropy": 1.0}))
    status = view.to_status()
    assert "histories" not in status
    assert set(status["per_member"][0]) == {
        "fold", "member", "state", "timesteps", "total", "fps", "mean_reward", "eta_s", "node",
        "error", "time_shares", "time_s", "sb3", "measure_overhead_share", "pid", "device",
        "elapsed_s", "resumed_from",
    }  # fmt: skip
    json.dumps(status, allow_nan=False)
