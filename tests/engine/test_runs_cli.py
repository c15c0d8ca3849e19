"""``ploutos runs`` / ``status`` / ``stop`` / ``resume`` over bad run folders, bad run ids, a closed
pipe and a stalled trainer (issue 10, section 3)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time

import pytest

from engine.cli import main
from engine.runs.events import utc_stamp
from engine.runs.folder import RunFolder
from engine.runs.jobs import ploutos_command
from tests.engine.event_lines import STARTED, encode_lines, member_event


def make_run(root, name, status=None, events=()):
    folder = RunFolder(root / name).create()
    folder.config_path.write_text("dataset_path: x\n")
    if status is not None:
        folder.write_status(status)
    folder.events_path.write_bytes(encode_lines(*events))
    return folder


FINISHED_EVENTS = [
    STARTED,
    member_event("member_finished", 0, timesteps=100),
    member_event("member_finished", 1, timesteps=100),
    {"ts": "2026-01-01T00:00:02.000Z", "type": "run_finished"},
]


def test_runs_lists_every_run_when_one_status_is_garbage(tmp_path, capsys):
    make_run(tmp_path, "20260101-000000-demo-aaaa", {"state": "finished", "progress": 1.0})
    bad = make_run(tmp_path, "20260102-000000-demo-bbbb")
    bad.status_path.write_text("[1, 2]")
    make_run(tmp_path, "20260103-000000-demo-cccc", {"state": "stopped", "progress": "half"})
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert re.search(r"cccc\s+stopped\s+-", out[1])  # a progress that is no number: a dash
    assert re.search(r"bbbb\s+unreadable\s+-\s+status.json: not a JSON object", out[2])
    assert re.search(r"aaaa\s+finished\s+100%", out[3])
    assert main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    rows = {r["run_id"][-4:]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["bbbb"]["state"] == "unreadable" and "JSON object" in rows["bbbb"]["reason"]
    assert rows["aaaa"]["state"] == "finished" and rows["aaaa"]["reason"] is None


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "member_progress"},
        b"\xff\xfe\xfd",
        b"null",
        b"[1,2]",
        {"type": "run_started", "plan": [1]},
        {"type": "fold_evaluated", "fold": 0, "oos": {"total_return": "x"}, "buy_and_hold": {}},
        {"type": "montecarlo", "scope": "pooled", "stats": {"simulations": 1.5}},
    ],
)
def test_status_skips_a_bad_event_and_says_so(tmp_path, capsys, bad):
    folder = make_run(tmp_path, "20260101-000000-demo-aaaa", {"state": "finished"})
    folder.events_path.write_bytes(
        b"".join(
            (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n"
            for e in [FINISHED_EVENTS[0], bad, *FINISHED_EVENTS[1:]]
        )
    )
    assert main(["status", folder.run_id, "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{folder.run_id}: finished, 100% of 200 timesteps")
    if isinstance(bad, dict) and bad["type"] in ("fold_evaluated", "montecarlo"):
        assert "?" in out  # a field of the wrong kind prints as unknown, not a traceback
    else:
        assert "1 event line(s) of events.jsonl skipped as unreadable (first: " in out


def test_status_reads_a_line_longer_than_a_chunk(tmp_path, capsys):
    long = member_event("member_finished", 1, timesteps=100, pad="y" * (2 << 20))
    events = [FINISHED_EVENTS[0], FINISHED_EVENTS[1], long, FINISHED_EVENTS[3]]
    folder = make_run(tmp_path, "20260101-000000-demo-aaaa", {"state": "finished"}, events)
    assert main(["status", folder.run_id, "--runs-dir", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["progress"] == 1.0 and status["skipped_events"] == 0


@pytest.mark.parametrize("command", ["status", "stop", "resume"])
@pytest.mark.parametrize(
    "name", ["", "*", pytest.param("x" * 5000, id="5000-characters"), "a/b", "2026*"]
)
def test_bad_run_ids_are_one_error_line(tmp_path, capsys, command, name):
    make_run(tmp_path, "20260101-000000-demo-aaaa", {"state": "stopped"}, FINISHED_EVENTS[:2])
    assert main([command, name, "--runs-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("ploutos: error: ") and len(line) < 400


def test_status_takes_a_unique_prefix(tmp_path, capsys):
    folder = make_run(tmp_path, "20260101-000000-demo-aaaa", {"state": "finished"}, FINISHED_EVENTS)
    make_run(tmp_path, "20260102-000000-demo-bbbb", {"state": "finished"}, FINISHED_EVENTS)
    assert main(["status", "20260101", "--runs-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"{folder.run_id}: finished")
    assert main(["status", "2026010", "--runs-dir", str(tmp_path)]) == 2
    assert "ambiguous, 2 runs" in capsys.readouterr().err


def test_status_into_a_closed_pipe_exits_quietly(tmp_path):
    # 200 x 100 members: far more output than a pipe holds, so the writer meets the closed end
    started = {**STARTED, "n_folds": 200, "ensemble": 100}
    folder = make_run(tmp_path, "20260101-000000-demo-aaaa", {"state": "stopped"}, [started])
    proc = subprocess.Popen(
        ploutos_command("status", folder.run_id, "--runs-dir", str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().startswith(folder.run_id.encode())
    proc.stdout.close()  # `| head -1`
    _, err = proc.communicate(timeout=120)
    assert err == b"", err.decode()
    assert proc.returncode == 141


def test_runs_shows_a_live_trainer_without_heartbeat_as_stalled(tmp_path, capsys):
    folder = make_run(tmp_path, "20260101-000000-demo-aaaa")
    old = time.time() - 600  # the heartbeat age only grows while the test runs
    stamp = dt.datetime.fromtimestamp(old, dt.timezone.utc).isoformat().replace("+00:00", "Z")
    folder.write_status({"state": "running", "progress": 0.25, "heartbeat": stamp})
    with folder.hold_lock():  # a SIGSTOPped trainer still holds its lock
        os.utime(folder.lock_path, (old, old))
        assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
        row = capsys.readouterr().out.splitlines()[1]
        seconds = int(re.search(r"running \(stalled (\d+) s\)\s+25%", row).group(1))
        assert 590 <= seconds < 3600
        assert main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
        (listed,) = json.loads(capsys.readouterr().out)
        assert listed["state"] == "running" and listed["stalled_s"] >= 590
        folder.write_status({"state": "running", "progress": 0.25, "heartbeat": utc_stamp()})
        assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
        row = capsys.readouterr().out.splitlines()[1]
        assert re.search(r"aaaa\s+running\s+25%", row)


def test_the_trainers_status_carries_a_heartbeat(tmp_path):
    from engine.runs.events import parse_stamp
    from engine.runs.view import RunView
    from engine.train.orchestrator import Trainer

    trainer = Trainer.__new__(Trainer)  # only what write_status reads
    trainer.folder = make_run(tmp_path, "20260101-000000-demo-aaaa")
    trainer.view = RunView(run_id="r", state="running")
    trainer.features_path = "f"
    before = time.time()
    trainer.write_status()
    beat = parse_stamp(trainer.folder.read_status()["heartbeat"])
    assert beat is not None and before - 1 <= beat <= time.time() + 1
