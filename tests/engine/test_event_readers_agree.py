"""The three readers of ``events.jsonl`` (``replay`` on resume, ``ploutos status``, the panel's
watcher) go through the one :class:`EventTail` and so see the same run from the same bytes.

EventTail's rule: a line is what lies before its newline, however many reads it spans, up to
``MAX_LINE_BYTES`` (16 MiB); a longer line or one that is not a JSON object is skipped and
counted, reading goes on; a last line without its newline is not read until the newline comes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.runs.events import CHUNK_BYTES, MAX_LINE_BYTES, EventTail
from engine.runs.folder import RunFolder
from engine.runs.view import replay
from ploutos_tui.model.runs import RunSnapshot, RunsWatcher
from tests.engine.event_lines import STARTED, encode_lines, member_event

RUN_ID = "20260101-000000-demo-agree"
BIG_PAD = 10_000_000  # a 10 MB line: ten chunks long, under the 16 MiB cap
TOTAL = 100  # STARTED's total_timesteps per member


def _write_run(root: Path) -> tuple[RunFolder, bytes]:
    """A run folder whose log holds a garbage line, a 10 MB event and a truncated last line;
    returns the folder and the missing rest of that last line."""
    folder = RunFolder(root / RUN_ID)
    folder.logs_dir.mkdir(parents=True)
    folder.config_path.write_text("training:\n  algorithm: ppo\n  ensemble: 2\n")
    folder.write_status({"run_id": RUN_ID, "state": "running"})  # no lock: interrupted
    finished_big = member_event("member_finished", 0, timesteps=TOTAL, pad="y" * BIG_PAD)
    last = json.dumps(member_event("member_finished", 1, timesteps=TOTAL)).encode() + b"\n"
    cut = len(last) // 2
    folder.events_path.write_bytes(
        encode_lines(
            {**STARTED, "run_id": RUN_ID},
            member_event("member_started", 0),
            member_event("member_progress", 0, timesteps=50, total=TOTAL, fps=10.0),
            b"this is not json {",
            finished_big,
            member_event("member_started", 1),
            member_event("member_progress", 1, timesteps=25, total=TOTAL, fps=5.0),
        )
        + last[:cut]
    )
    return folder, last[cut:]


def _status_json(root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["status", RUN_ID, "--runs-dir", str(root), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _watch(watcher: RunsWatcher) -> RunSnapshot:
    """Poll until the watcher has read everything there is (it reads a bounded amount per poll)."""
    for _ in range(100):
        snap = watcher.poll_run(RUN_ID)
        assert snap is not None
        if watcher.bytes_read_last_poll == 0:
            return snap
    raise AssertionError("the watcher never caught up with the log")


def _agree(folder: RunFolder, watcher: RunsWatcher, capsys: pytest.CaptureFixture[str]) -> Any:
    """Assert that replay, `ploutos status --json` and the watcher agree; return the replay."""
    view = replay(folder)
    status = _status_json(folder.root.parent, capsys)
    snap = _watch(watcher)
    members = [(k, m.state, m.timesteps, m.total) for k, m in sorted(view.members.items())]
    rows = [((m.fold, m.member), m.state, m.timesteps, m.total) for m in snap.members]
    assert rows == members
    assert snap.progress == pytest.approx(view.progress)
    assert status["progress"] == round(view.progress, 4)
    assert status["timesteps"] == {"done": view.done_timesteps, "total": view.total_timesteps}
    assert status["members"] == {
        "total": len(view.members),
        "finished": view.count("finished"),
        "running": view.count("running"),
        "failed": view.count("failed"),
    }
    assert status["skipped_events"] == snap.skipped_events == view.skipped_events
    assert status["state"] == snap.state == "interrupted"
    return view


def test_readers_agree_skip_garbage_read_a_10mb_line_whole_and_wait_for_a_truncated_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert CHUNK_BYTES < BIG_PAD < MAX_LINE_BYTES  # the rule under test: long, but under the cap
    folder, rest = _write_run(tmp_path)
    watcher = RunsWatcher(tmp_path)

    view = _agree(folder, watcher, capsys)
    # the garbage line is the one skipped; the 10 MB line is one event, applied
    assert view.skipped_events == 1 and view.skip_reason is not None
    assert "not valid JSON" in view.skip_reason
    assert view.members[(0, 0)].state == "finished"
    # the truncated last line is not read yet: member 1 is still running at its last progress
    assert (view.members[(0, 1)].state, view.members[(0, 1)].timesteps) == ("running", 25)
    assert view.progress == pytest.approx((TOTAL + 25) / (2 * TOTAL))

    # the tail itself: one event carries the whole 10 MB pad, and the offset stops where the
    # truncated line begins
    tail = EventTail(folder.events_path)
    events = tail.poll()
    big = [e for e in events if "pad" in e]
    assert len(big) == 1 and len(big[0]["pad"]) == BIG_PAD
    assert tail.skipped == 1
    truncated = folder.events_path.read_bytes().rsplit(b"\n", 1)[1]
    assert truncated and tail.offset == folder.events_path.stat().st_size - len(truncated)

    # the rest of the last line arrives: every reader now applies it, the same way
    with open(folder.events_path, "ab") as fh:
        fh.write(rest)
    view = _agree(folder, watcher, capsys)
    assert view.members[(0, 1)].state == "finished" and view.progress == 1.0
    assert view.skipped_events == 1
