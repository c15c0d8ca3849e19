"""The panel over bad run folders and a stalled trainer (issue 10, section 3): the Jobs list keeps
every run, the run screen says what is wrong."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from engine.runs.events import parse_stamp
from engine.runs.folder import RunFolder
from engine.train.plan import assumed_machine
from ploutos_tui.model.runs import RunsWatcher
from ploutos_tui.screens.jobs import JobsScreen
from ploutos_tui.screens.run import RunScreen
from tests.tui.panel_harness import ScreenApp, until

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "runs"
FINISHED = "20261127-214826-demo-36cd"
FAILED = "20261127-214949-demo-92b9"
STOPPED = "20261127-215016-demo-3df3"
INTERRUPTED = "20261127-215100-demo-7a1e"
SLOW = 3600.0  # no second poll unless asked


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES, root)
    return root


async def test_jobs_list_keeps_every_run_beside_a_bad_one(runs: Path):
    (runs / FAILED / "status.json").write_text("[1, 2]")
    with open(runs / STOPPED / "events.jsonl", "a") as fh:  # a malformed known event at the end
        fh.write(json.dumps({"type": "run_started", "plan": [1]}) + "\n")
    screen = JobsScreen(
        RunsWatcher(runs, clock=lambda: 0.0),
        Path("config/demo.yaml"),
        SLOW,
        machine=assumed_machine("cpus=16,ram=64G"),
    )
    app = ScreenApp(lambda: screen)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: screen.polls_rendered)
        table = screen.query_one("#jobs", DataTable)
        # cells by column key: the list has a mark column first and may gain others
        rows = [[str(table.get_cell(key, col)) for col in ("run", "state")] for key in table.rows]
        assert [r[0] for r in rows] == [INTERRUPTED, STOPPED, FAILED, FINISHED]
        assert [r[1] for r in rows] == ["interrupted", "stopped", "unreadable", "finished"]
        # the list goes on following the runs: a repaired status is read again
        shutil.copy(FIXTURES / FAILED / "status.json", runs / FAILED / "status.json")
        screen.refresh_now()
        await until(pilot, lambda: screen.polls_rendered >= 2)
        assert str(table.get_cell(FAILED, "state")) == "failed"


async def test_run_screen_says_a_live_trainer_has_stalled(runs: Path):
    folder = RunFolder(runs / INTERRUPTED)
    beat = json.loads((runs / INTERRUPTED / "events.jsonl").read_text().splitlines()[-1])["ts"]
    folder.write_status({**folder.read_status(), "pid": os.getpid(), "heartbeat": beat})
    at = parse_stamp(beat)
    watcher = RunsWatcher(runs, clock=lambda: at + 120.0)
    app = ScreenApp(lambda: RunScreen(watcher, INTERRUPTED, SLOW))
    with folder.hold_lock():  # a SIGSTOPped trainer keeps its lock
        os.utime(folder.lock_path, (at, at))
        async with app.run_test(size=(100, 30)) as pilot:
            run = app.screen
            await until(pilot, lambda: run.snapshot is not None)
            assert run.snapshot.state_label == "running (stalled 120 s)"
            err = run.query_one("#run-error", Static)
            assert err.display
            assert f"no heartbeat from trainer pid {os.getpid()} for 120 s" in str(err.render())
        jobs = JobsScreen(
            watcher,
            Path("config/demo.yaml"),
            SLOW,
            machine=assumed_machine("cpus=16,ram=64G"),
        )
        async with ScreenApp(lambda: jobs).run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: jobs.polls_rendered)
            table = jobs.query_one("#jobs", DataTable)
            states = {
                str(table.get_cell(key, "run")): str(table.get_cell(key, "state"))
                for key in table.rows
            }
            assert states[INTERRUPTED] == "stalled"
