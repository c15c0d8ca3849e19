"""RunsWatcher over recorded run folders: snapshots, incremental tailing, bounded reads, actions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import PloutosError
from engine.runs.events import MAX_LINE_BYTES, EventTail
from engine.runs.folder import RunFolder
from ploutos_tui.actions import reap_children
from ploutos_tui.model import runs as runs_model
from ploutos_tui.model.runs import RunsWatcher, format_duration, job_pids, log_tail, parse_ts

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
FINISHED = "20261127-214826-demo-36cd"
FAILED = "20261127-214949-demo-92b9"
STOPPED = "20261127-215016-demo-3df3"
INTERRUPTED = "20261127-215100-demo-7a1e"


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES, root)
    return root


def by_id(snaps):
    return {s.run_id: s for s in snaps}


def events_of(run_id: str) -> list[str]:
    return (FIXTURES / run_id / "events.jsonl").read_text().splitlines(keepends=True)


def empty_run(root: Path, run_id: str, source: str = FINISHED) -> RunFolder:
    """A run folder with the fixture's files but no events yet."""
    folder = RunFolder(root / run_id)
    folder.logs_dir.mkdir(parents=True)
    for name in ("config.yaml", "run.json", "plan.json", "folds.json", "status.json"):
        shutil.copy(FIXTURES / source / name, folder.root / name)
    folder.write_status({"run_id": run_id, "state": "finished"})
    folder.events_path.write_bytes(b"")
    return folder


# ---------------------------------------------------------------------------- snapshots
def test_finished_run_snapshot(runs: Path):
    snaps = RunsWatcher(runs).poll()
    assert [s.run_id for s in snaps] == [INTERRUPTED, STOPPED, FAILED, FINISHED]  # newest first
    snap = by_id(snaps)[FINISHED]
    assert snap.state == "finished"
    assert snap.progress == 1.0
    assert snap.elapsed_s == pytest.approx(20.543, abs=1e-3)  # first to last event
    assert snap.eta_s is None and snap.pid is None and snap.error is None
    assert (snap.config, snap.algorithm, snap.profile) == ("config/demo.yaml", "ppo", "laptop")
    assert (snap.n_folds, snap.ensemble) == (2, 2)
    assert snap.path == runs / FINISHED and snap.log_path == runs / FINISHED / "logs" / "train.log"
    assert [(m.fold, m.member, m.state) for m in snap.members] == [
        (0, 0, "finished"),
        (0, 1, "finished"),
        (1, 0, "finished"),
        (1, 1, "finished"),
    ]
    assert all(m.timesteps == m.total == 4096 and m.node == "vm" for m in snap.members)
    assert [f.fold for f in snap.folds] == [0, 1]
    assert snap.folds[0].oos["total_return"] == pytest.approx(-0.049868672042274076)
    assert snap.folds[0].buy_and_hold["total_return"] == pytest.approx(0.04166769157902528)
    assert snap.folds[1].members_used == 2
    assert sorted(snap.montecarlo) == ["fold_00", "fold_01", "pooled"]
    pooled = snap.montecarlo["pooled"]
    assert pooled["loss_probability"] == 0.4475 and pooled["simulations"] == 400
    assert sum(pooled["histogram"]["counts"]) == 400
    assert snap.montecarlo_scopes() == ["pooled", "fold_01", "fold_00"]
    assert len(snap.fps_history) == 6 and snap.reward_history[-1] == pytest.approx(0.009242)


def test_snapshots_are_copies(runs: Path):
    watcher = RunsWatcher(runs)
    snap = by_id(watcher.poll())[FINISHED]
    with pytest.raises(TypeError):
        snap.montecarlo["pooled"]["loss_probability"] = 9.0
    with pytest.raises(TypeError):
        snap.folds[0].oos["total_return"] = 9.0
    with pytest.raises(AttributeError):
        snap.montecarlo["pooled"]["histogram"]["counts"].append(1)  # a tuple
    with pytest.raises(AttributeError):
        snap.state = "running"  # frozen
    assert isinstance(snap.members, tuple) and isinstance(snap.fps_history, tuple)
    # the watcher's own state is separate: new events do not reach a snapshot already taken
    view = watcher._tracked[FINISHED].view
    view.montecarlo["pooled"]["stats"]["loss_probability"] = 9.0
    assert snap.montecarlo["pooled"]["loss_probability"] == 0.4475


def test_failed_stopped_and_interrupted_runs(runs: Path):
    snaps = by_id(RunsWatcher(runs).poll())
    failed = snaps[FAILED]
    assert failed.state == "failed" and "injected fault" in failed.error
    member = next(m for m in failed.members if (m.fold, m.member) == (1, 1))
    assert member.state == "failed" and "RuntimeError" in member.error
    assert failed.folds[1].members_used == 1
    stopped = snaps[STOPPED]
    assert stopped.state == "stopped" and 0.6 < stopped.progress < 0.7
    assert [m.state for m in stopped.members] == ["finished", "finished", "stopped", "pending"]
    # status.json says running, but nobody holds the lock: the trainer died
    assert json.loads((runs / INTERRUPTED / "status.json").read_text())["state"] == "running"
    interrupted = snaps[INTERRUPTED]
    assert interrupted.state == "interrupted" and interrupted.resumable
    assert interrupted.eta_s is None and interrupted.pid is None


def test_live_run_uses_the_clock_and_reports_its_pid(runs: Path):
    folder = RunFolder(runs / INTERRUPTED)
    status = folder.read_status()
    folder.write_status({**status, "pid": os.getpid()})
    started = parse_ts(json.loads(events_of(INTERRUPTED)[0])["ts"])
    watcher = RunsWatcher(runs, clock=lambda: started + 100.0)
    with folder.hold_lock():
        snap = watcher.poll_run(INTERRUPTED)
        assert snap.state == "running" and snap.live
        assert snap.elapsed_s == pytest.approx(100.0)
        assert snap.pid == os.getpid()
        running = [m for m in snap.members if m.state == "running"]
        assert len(running) == 1
        remaining = sum(m.total - m.timesteps for m in snap.members)
        assert snap.eta_s == pytest.approx(remaining / running[0].fps)
        assert job_pids(runs) == {INTERRUPTED: os.getpid()}
        assert watcher.job_pids() == {INTERRUPTED: os.getpid()}
    assert watcher.poll_run(INTERRUPTED).state == "interrupted"
    assert job_pids(runs) == {}


# ---------------------------------------------------------------------------- incremental
def test_new_runs_appear_and_removed_runs_go(runs: Path, tmp_path: Path):
    root = tmp_path / "other"
    root.mkdir()
    watcher = RunsWatcher(root)
    assert watcher.poll() == []
    shutil.copytree(runs / FAILED, root / FAILED)
    assert [s.run_id for s in watcher.poll()] == [FAILED]
    shutil.copytree(runs / FINISHED, root / FINISHED)
    assert [s.run_id for s in watcher.poll()] == [FAILED, FINISHED]
    shutil.rmtree(root / FAILED)
    assert [s.run_id for s in watcher.poll()] == [FINISHED]
    assert watcher.poll_run(FAILED) is None


def test_appended_events_move_progress(tmp_path: Path):
    folder = empty_run(tmp_path, "20300101-000000-demo-aaaa")
    lines = events_of(FINISHED)
    watcher = RunsWatcher(tmp_path)
    first = watcher.poll_run(folder.run_id)
    assert first.progress == 0.0 and first.members == () and first.config == "config/demo.yaml"
    assert (first.algorithm, first.n_folds, first.ensemble) == ("ppo", 2, 2)  # from the folder
    with open(folder.events_path, "a") as fh:
        fh.writelines(lines[:5])  # run_started .. fold 0 member 0 finished
    second = watcher.poll_run(folder.run_id)
    assert second.progress == pytest.approx(0.25)
    assert watcher.bytes_read_last_poll == sum(len(line.encode()) for line in lines[:5])
    with open(folder.events_path, "a") as fh:
        fh.writelines(lines[5:9])
    third = watcher.poll_run(folder.run_id)
    assert third.progress == pytest.approx(0.5)
    assert watcher.bytes_read_last_poll == sum(len(line.encode()) for line in lines[5:9])
    assert watcher.poll_run(folder.run_id).progress == pytest.approx(0.5)
    assert watcher.bytes_read_last_poll == 0  # nothing new, nothing read


def test_partial_last_line_waits_for_its_end(tmp_path: Path):
    folder = empty_run(tmp_path, "20300101-000000-demo-bbbb")
    lines = events_of(FINISHED)
    watcher = RunsWatcher(tmp_path)
    with open(folder.events_path, "a") as fh:
        fh.writelines(lines[:4])  # member 0 of fold 0 started and at 4096/4096 ...
        fh.write(lines[4][:40])  # ... and half of its member_finished line
    snap = watcher.poll_run(folder.run_id)
    assert snap.members[0].state == "running"
    assert watcher.poll_run(folder.run_id).members[0].state == "running"
    with open(folder.events_path, "a") as fh:
        fh.write(lines[4][40:])
    assert watcher.poll_run(folder.run_id).members[0].state == "finished"


def test_a_huge_log_costs_a_bounded_read_per_poll(tmp_path: Path):
    folder = empty_run(tmp_path, "20300101-000000-demo-cccc")
    started = json.loads(events_of(FINISHED)[0])
    pad = "x" * 4000  # unknown fields are ignored by readers (docs/events.md)
    with open(folder.events_path, "w") as fh:
        fh.write(json.dumps(started) + "\n")
        block = "".join(
            json.dumps(
                {
                    "ts": "2026-11-27T21:48:30.000Z",
                    "type": "member_progress",
                    "fold": 0,
                    "member": 0,
                    "timesteps": i,
                    "total": 100_000,
                    "fps": 1000.0,
                    "mean_reward": 0.0,
                    "pad": pad,
                }
            )
            + "\n"
            for i in range(1000)
        )
        for _ in range(25):  # ~100 MB
            fh.write(block)
    size = folder.events_path.stat().st_size
    assert size > 95e6
    budget = 4 << 20
    watcher = RunsWatcher(tmp_path, max_read_bytes=budget)
    t0 = time.perf_counter()
    watcher.poll()
    first_poll_s = time.perf_counter() - t0
    assert watcher.bytes_read_last_poll <= budget
    member = watcher.snapshot(folder.run_id).members[0]
    assert 0 < member.timesteps < 1000 and member.total == 100_000
    polls = 1
    while watcher._tracked[folder.run_id].offset < size:
        watcher.poll()
        assert watcher.bytes_read_last_poll <= budget
        polls += 1
        assert polls < 100
    assert polls >= size // budget
    assert watcher.snapshot(folder.run_id).members[0].timesteps == 999
    assert first_poll_s < 5.0
    # caught up: the next poll reads only what is appended
    line = json.dumps({"ts": "2026-11-27T21:49:00.000Z", "type": "run_stopped", "reason": "x"})
    with open(folder.events_path, "a") as fh:
        fh.write(line + "\n")
    watcher.poll()
    assert watcher.bytes_read_last_poll == len(line) + 1


def test_a_line_longer_than_the_read_budget_is_read_across_polls(tmp_path: Path):
    folder = empty_run(tmp_path, "20300101-000000-demo-dddd")
    lines = events_of(FINISHED)
    finished = json.loads(lines[4])
    assert finished["type"] == "member_finished"
    huge = json.dumps({**finished, "pad": "y" * 300_000}) + "\n"  # one event, ~5 budgets long
    folder.events_path.write_text("".join(lines[:4]) + huge)
    watcher = RunsWatcher(tmp_path, max_read_bytes=64 << 10)
    read = 0
    for _ in range(20):
        snap = watcher.poll_run(folder.run_id)
        assert watcher.bytes_read_last_poll <= 64 << 10
        read += watcher.bytes_read_last_poll
    assert snap.members[0].state == "finished"  # applied, not skipped
    assert snap.progress == pytest.approx(0.25) and snap.skipped_events == 0
    assert read == folder.events_path.stat().st_size  # and no byte of it read twice


def test_a_line_over_the_cap_is_skipped_and_the_rest_is_read(tmp_path: Path):
    folder = empty_run(tmp_path, "20300101-000000-demo-dddx")
    lines = events_of(FINISHED)
    with open(folder.events_path, "w") as fh:
        fh.write(lines[0])
        fh.write(json.dumps({"type": "note", "pad": "z" * (MAX_LINE_BYTES + 1)}) + "\n")
        fh.writelines(lines[1:5])
    watcher = RunsWatcher(tmp_path)
    for _ in range(10):
        snap = watcher.poll_run(folder.run_id)
    assert snap.progress == pytest.approx(0.25) and snap.skipped_events == 1


# ---------------------------------------------------------------------------- bad run folders
def test_one_bad_status_file_hides_no_other_run(runs: Path):
    (runs / FAILED / "status.json").write_text("[1, 2]")
    watcher = RunsWatcher(runs)
    snaps = by_id(watcher.poll())
    assert list(snaps) == [INTERRUPTED, STOPPED, FAILED, FINISHED]
    bad = snaps[FAILED]
    assert bad.state == "unreadable" and bad.state_label == "unreadable"
    assert bad.error == "status.json: not a JSON object" and not bad.resumable
    assert snaps[FINISHED].state == "finished" and snaps[STOPPED].state == "stopped"
    assert bad.progress == pytest.approx(by_id(RunsWatcher(FIXTURES).poll())[FAILED].progress)
    shutil.copy(FIXTURES / FAILED / "status.json", runs / FAILED / "status.json")
    assert by_id(watcher.poll())[FAILED].state == "failed"  # repaired: read again


def test_a_malformed_event_is_skipped_and_the_watcher_moves_on(tmp_path: Path):
    folder = empty_run(tmp_path, "20300101-000000-demo-eeee")
    lines = events_of(FINISHED)
    with open(folder.events_path, "w") as fh:
        fh.write(json.dumps({"type": "run_started", "plan": [1]}) + "\n")
        fh.write('{"type": "member_progress"}\nnull\n[1,2]\n')
        fh.write("not json\n")
    with open(folder.events_path, "ab") as fh:
        fh.write(b"\xff\xfe\n")
    watcher = RunsWatcher(tmp_path)
    first = watcher.poll_run(folder.run_id)
    assert first.skipped_events == 6 and first.members == ()
    assert watcher._tracked[folder.run_id].offset == folder.events_path.stat().st_size
    with open(folder.events_path, "a") as fh:
        fh.writelines(lines[:5])
    second = watcher.poll_run(folder.run_id)
    assert second.progress == pytest.approx(0.25) and second.skipped_events == 6


def test_a_folder_that_breaks_the_reader_shows_unreadable(runs: Path):
    events = runs / STOPPED / "events.jsonl"
    events.unlink()
    events.mkdir()  # open() fails with IsADirectoryError
    snaps = by_id(RunsWatcher(runs).poll())
    assert len(snaps) == 4 and snaps[FINISHED].state == "finished"
    assert snaps[STOPPED].state == "unreadable"
    assert "IsADirectoryError" in snaps[STOPPED].error


def test_every_reader_applies_the_same_rule(tmp_path: Path, capsys: pytest.CaptureFixture):
    from engine.cli import main
    from engine.runs.view import replay

    folder = empty_run(tmp_path, "20300101-000000-demo-ffff")
    lines = events_of(FINISHED)
    long = json.dumps({**json.loads(lines[4]), "pad": "y" * (2 << 20)}) + "\n"
    over = json.dumps({"type": "note", "pad": "z" * (MAX_LINE_BYTES + 1)}) + "\n"
    folder.events_path.write_text(
        "".join(lines[:4])
        + long
        + over
        + "null\n"
        + '{"type":"member_progress"}\n'
        + "".join(lines[5:])
    )
    view = replay(folder)
    assert view.state == "finished" and view.progress == 1.0 and view.skipped_events == 3
    assert main(["status", folder.run_id, "--runs-dir", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["progress"], status["skipped_events"]) == (1.0, 3)
    watcher = RunsWatcher(tmp_path)
    for _ in range(10):
        snap = watcher.poll_run(folder.run_id)
    assert (snap.progress, snap.skipped_events) == (1.0, 3)
    assert isinstance(watcher._tracked[folder.run_id].tail, EventTail)


def test_a_live_trainer_with_an_old_heartbeat_shows_stalled(runs: Path):
    folder = RunFolder(runs / INTERRUPTED)
    beat = json.loads(events_of(INTERRUPTED)[-1])["ts"]
    folder.write_status({**folder.read_status(), "pid": os.getpid(), "heartbeat": beat})
    at = parse_ts(beat)
    now = [at + 10.0]
    watcher = RunsWatcher(runs, clock=lambda: now[0])
    with folder.hold_lock():
        os.utime(folder.lock_path, (at, at))  # the lock was taken before the last heartbeat
        snap = watcher.poll_run(INTERRUPTED)
        assert snap.state == "running" and snap.stalled_s is None
        assert snap.state_label == "running" and snap.error is None
        now[0] = at + 120.0
        snap = watcher.poll_run(INTERRUPTED)
        assert snap.state == "running" and snap.live and snap.pid == os.getpid()
        assert snap.stalled_s == pytest.approx(120.0)
        assert snap.state_label == "running (stalled 120 s)"
        assert f"no heartbeat from trainer pid {os.getpid()} for 120 s" in snap.error
        assert by_id(watcher.poll())[INTERRUPTED].state_label == "running (stalled 120 s)"
    assert watcher.poll_run(INTERRUPTED).state == "interrupted"


# ---------------------------------------------------------------------------- log tail
def test_log_tail_reads_only_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    log = tmp_path / "train.log"
    with open(log, "w") as fh:
        for i in range(400_000):
            fh.write(f"line {i:07d} " + "z" * 40 + "\n")
    assert log.stat().st_size > 20e6
    read = []

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def seek(self, *args):
            return self.fh.seek(*args)

        def read(self, n=-1):
            data = self.fh.read(n)
            read.append(len(data))
            return data

    def spy_open(path, mode="r"):
        return Spy(open(path, mode))  # noqa: SIM115 (Spy closes it)

    monkeypatch.setattr(runs_model, "open", spy_open, raising=False)
    tail = log_tail(log, lines=200)
    assert len(tail) == 200
    assert tail[0].startswith("line 0399800 ") and tail[-1].startswith("line 0399999 ")
    assert sum(read) <= 128 << 10


def test_log_tail_of_runs_and_odd_files(runs: Path, tmp_path: Path):
    watcher = RunsWatcher(runs)
    lines = watcher.log_tail(FAILED, lines=3)
    assert lines[-2] == "RuntimeError: injected fault (PLOUTOS_FAULT=raise@1/1)"
    assert log_tail(RunFolder(runs / STOPPED), 1) == [
        f"run {STOPPED}: stopped; `ploutos resume {STOPPED}`"
    ]
    assert log_tail(runs / FINISHED) == []  # empty log
    assert log_tail(tmp_path / "missing.log") == []
    odd = tmp_path / "odd.log"
    odd.write_bytes(b"progress 10%\rprogress 100%\nlast line without newline \xff")
    assert log_tail(odd, 5) == ["progress 100%", "last line without newline \ufffd"]


# ---------------------------------------------------------------------------- actions
class FakeLaunch:
    """Stands in for engine.runs.jobs.launch_detached: a real, short-lived child process."""

    def __init__(self, seconds: float = 0.0):
        self.calls: list[tuple[list[str], Path]] = []
        self.procs: list[subprocess.Popen] = []
        self.seconds = seconds

    def __call__(self, args, log_path, cwd=None):
        self.calls.append((list(args), Path(log_path)))
        code = f"import time; time.sleep({self.seconds})"
        proc = subprocess.Popen([sys.executable, "-c", code])
        self.procs.append(proc)
        return proc


def test_resume_launches_detached_and_children_are_reaped(
    runs: Path, monkeypatch: pytest.MonkeyPatch
):
    fake = FakeLaunch(seconds=30)
    monkeypatch.setattr("engine.runs.jobs.launch_detached", fake)
    watcher = RunsWatcher(runs)
    watcher.poll()
    folder = watcher.resume(INTERRUPTED)
    assert folder.root == runs / INTERRUPTED
    assert fake.calls == [(["resume", str(runs / INTERRUPTED)], folder.log_path)]
    # a trainer we just started has not taken its lock yet: starting, not interrupted
    assert watcher.poll_run(INTERRUPTED).state == "starting"
    with pytest.raises(PloutosError, match="starting"):
        watcher.resume(INTERRUPTED)  # no second trainer
    fake.procs[0].kill()
    fake.procs[0].wait()
    watcher.poll()  # reaps
    assert watcher.poll_run(INTERRUPTED).state == "interrupted"
    with pytest.raises(PloutosError, match="finished"):
        watcher.resume(FINISHED)
    assert len(fake.calls) == 1


def test_exited_children_are_reaped_by_poll(runs: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeLaunch(seconds=0)
    monkeypatch.setattr("engine.runs.jobs.launch_detached", fake)
    watcher = RunsWatcher(runs)
    watcher.resume(STOPPED)
    proc = fake.procs[0]
    deadline = time.monotonic() + 10
    while proc.returncode is None and time.monotonic() < deadline:
        watcher.poll()
        time.sleep(0.05)
    assert proc.returncode == 0  # poll() collected its exit status: no zombie left
    assert STOPPED not in reap_children()


def test_launch_run_prepares_then_launches(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake = FakeLaunch()
    monkeypatch.setattr("engine.runs.jobs.launch_detached", fake)
    made = RunFolder(runs / "20300101-000000-demo-eeee")
    calls = []

    def prepare_run(config_path, **kw):
        calls.append((config_path, kw))
        return made

    monkeypatch.setattr("engine.train.prepare.prepare_run", prepare_run)
    folder = RunsWatcher(runs).launch_run("config/demo.yaml", "laptop", 3, "ppo")
    assert folder is made
    assert calls == [
        (
            "config/demo.yaml",
            {"profile": "laptop", "ensemble": 3, "algorithm": "ppo", "runs_root": runs},
        )
    ]
    assert fake.calls == [(["resume", str(made.root)], made.log_path)]
    fake.procs[0].wait()
    reap_children()


# A stand-in trainer: holds the run's lock as the real one does, notes SIGTERM and keeps the lock
# ("checkpointing") until the test closes its stdin.
_TRAINER = """
import signal, sys, time
from pathlib import Path
from engine.runs.folder import RunFolder
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append(1))
with RunFolder(Path(sys.argv[1])).hold_lock():
    print("ready", flush=True)
    while not got:
        time.sleep(0.01)
    print("terminated", flush=True)
    sys.stdin.readline()
"""


def test_stop_signals_the_trainer_that_holds_the_lock(runs: Path):
    folder = RunFolder(runs / INTERRUPTED)
    # a stale pid in status.json (here: this test's own process) must never be the one signalled
    folder.write_status({**folder.read_status(), "pid": os.getpid()})
    child = subprocess.Popen(
        [sys.executable, "-c", _TRAINER, str(folder.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        watcher = RunsWatcher(runs)
        assert watcher.stop(INTERRUPTED) == "running"  # the lock is still held: checkpointing
        assert child.stdout.readline().strip() == "terminated"  # it got the SIGTERM
        child.stdin.close()
        assert child.wait(timeout=60) == 0
        with pytest.raises(PloutosError, match="not running"):
            watcher.stop(FINISHED)
    finally:
        child.kill()
        child.wait()


def test_format_duration():
    assert [format_duration(s) for s in (None, -1, 0, 42.4, 185, 3720, 2 * 86400 + 3 * 3600)] == [
        "—",
        "—",
        "0s",
        "42s",
        "3m05s",
        "1h02m",
        "2d03h",
    ]


def test_process_pools_start_under_a_textual_stderr_capture(tmp_path: Path):
    """A running Textual app replaces sys.stderr with a capture whose fileno() is -1; a feature
    build started from the panel (forkserver pool, from a worker thread) must still work."""
    script = tmp_path / "pool.py"
    script.write_text(
        "import sys, threading, multiprocessing as mp\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from ploutos_tui.actions import ensure_subprocess_ready\n"
        "class Capture:\n"
        "    def write(self, text): return len(text)\n"
        "    def flush(self): pass\n"
        "    def fileno(self): return -1\n"
        "sys.stderr = Capture()\n"
        "def work():\n"
        "    try:\n"
        "        ensure_subprocess_ready()\n"
        "        ctx = mp.get_context('forkserver')\n"
        "        with ProcessPoolExecutor(2, mp_context=ctx) as pool:\n"
        "            print(sum(pool.map(abs, [-1, -2, -3])))\n"
        "    except Exception as err:\n"
        "        print(repr(err))\n"
        "if __name__ == '__main__':\n"
        "    t = threading.Thread(target=work); t.start(); t.join()\n"
        "    print('stderr kept', isinstance(sys.stderr, Capture))\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=Path.cwd()
    )
    assert out.stdout.split("\n")[:2] == ["6", "stderr kept True"], out.stderr
