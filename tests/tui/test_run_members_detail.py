"""The Run screen's members: where each member's time goes and SB3's training metrics, per member.

The run is a recorded demo run (``tests/tui/fixtures/timing_runs``: ``./start_training.sh
--config config/demo.yaml`` on the demo dataset, its paths made relative and its pid zeroed), so
the events are the trainer's own; older runs (``fixtures/runs``) have none of these fields and
must look as they did; odd values inside the fields never break the panel.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Static

from ploutos_tui.model.runs import MemberRow, RunsWatcher
from ploutos_tui.screens.jobs import job_cells
from ploutos_tui.screens.run import MEMBER_COLUMNS, RunScreen, member_detail
from tests.tui.live_run import HOST, LIVE, live_run, workers_snapshot
from tests.tui.panel_harness import ScreenApp, until
from tests.tui.test_run_verdict import screen_text

REPO = Path(__file__).resolve().parents[2]
TIMING = Path(__file__).parent / "fixtures" / "timing_runs"
TIMING_REL = TIMING.relative_to(REPO)
RUN = "20261201-121351-demo-7aee"
OLD = Path(__file__).parent / "fixtures" / "runs"
FAILED = "20261127-214949-demo-92b9"  # recorded before the time breakdown existed
SLOW = 3600.0  # one poll per test


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def run_app(root: Path, run_id: str = RUN) -> ScreenApp:
    return ScreenApp(lambda: RunScreen(RunsWatcher(root, clock=lambda: 0.0), run_id, SLOW))


def events(root: Path = TIMING, run_id: str = RUN) -> list[dict[str, Any]]:
    lines = (root / run_id / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def last_progress(fold: int, member: int, log: list[dict[str, Any]]) -> dict[str, Any]:
    found = [
        e
        for e in log
        if e["type"] == "member_progress" and (e["fold"], e["member"]) == (fold, member)
    ]
    return found[-1]


def cell(table: DataTable, row: str, column: str) -> str:
    value = table.get_cell(row, column)
    return getattr(value, "plain", str(value))


def percent(x: float) -> str:
    return f"{x * 100:.0f}%"


async def test_each_member_shows_its_time_split_and_sb3_metrics():
    app = run_app(TIMING_REL)
    async with app.run_test(size=(200, 50)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        table = run.query_one("#members", DataTable)
        log = events()
        for fold, member in ((0, 0), (0, 1), (1, 0), (1, 1)):
            event = last_progress(fold, member, log)
            seconds = event["time_s"]
            whole = sum(seconds.values())  # a finished member: its whole training's split
            want = " / ".join(percent(seconds[k] / whole) for k in ("env", "inference", "gradient"))
            key = f"{fold}/{member}"
            assert cell(table, key, "time") == want
            assert cell(table, key, "policy_loss") == format(event["sb3"]["policy_loss"], ".3g")
            assert cell(table, key, "entropy") == format(event["sb3"]["entropy"], ".3g")
            assert cell(table, key, "clip_fraction") == percent(event["sb3"]["clip_fraction"])
        detail = run.query_one("#member-detail", Static)
        assert detail.display
        text = screen_text(app)
        first = last_progress(0, 0, log)
        overhead = f"{first['measure_overhead_share'] * 100:.2f}%"
        assert f"fold 0 member 0 · {first['fps']:,.0f} steps/s · time (whole training): env" in text
        assert f"(measuring {overhead})" in text
        assert f"SB3 after {first['sb3']['n_updates']} epochs: policy loss" in text
        assert "entropy 5.49 nats" in text  # 5 tickers x ln 3: the demo's policy is still uniform


async def test_the_detail_line_follows_the_cursor():
    app = run_app(TIMING_REL)
    async with app.run_test(size=(80, 24)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        run.query_one("#members", DataTable).focus()
        await pilot.press("down", "down", "down")
        await pilot.pause()
        text = screen_text(app)
        assert "fold 1 member 1 · 2,785 steps/s" in text
        assert "fold 0 member 0" not in text


async def test_a_running_member_shows_its_last_interval(tmp_path: Path):
    """The log cut just after member 1/1's first progress event: it is mid-training."""
    root = tmp_path / "runs"
    shutil.copytree(TIMING / RUN, root / RUN)
    log = events(root)
    cut = next(
        i
        for i, e in enumerate(log)
        if e["type"] == "member_progress" and (e["fold"], e["member"]) == (1, 1)
    )
    event = log[cut]
    (root / RUN / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log[: cut + 1]))
    app = run_app(root)
    async with app.run_test(size=(200, 50)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        table = run.query_one("#members", DataTable)
        assert cell(table, "1/1", "state") == "running"
        shares = event["time_shares"]
        want = " / ".join(percent(shares[k]) for k in ("env", "inference", "gradient"))
        assert cell(table, "1/1", "time") == want
        table.focus()
        await pilot.press("down", "down", "down")
        await pilot.pause()
        assert "fold 1 member 1" in screen_text(app)
        assert "time (last interval): env " + percent(shares["env"]) in screen_text(app)


def column_keys(table: DataTable) -> list[str]:
    return [str(key.value) for key in table.columns]


def column_width(table: DataTable, name: str) -> int:
    return next(c.width for key, c in table.columns.items() if key.value == name)


async def test_an_older_run_keeps_its_table_as_it_was():
    """No member of it has the new fields: no detail line, no training columns, and the error
    column as wide as before (its snapshots in test_jobs_screens are unchanged)."""
    app = run_app(OLD.relative_to(REPO), FAILED)
    async with app.run_test(size=(200, 50)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        assert not run.query_one("#member-detail", Static).display
        table = run.query_one("#members", DataTable)
        assert column_keys(table) == [key for _, key, _, _ in MEMBER_COLUMNS] + ["error"]
        assert column_width(table, "error") == 64
        assert "injected fault (PLOUTOS_FAULT=raise@1/1)" in cell(table, "1/1", "error")


async def test_the_training_columns_appear_with_the_first_event_that_has_them(tmp_path: Path):
    root = tmp_path / "runs"
    shutil.copytree(TIMING / RUN, root / RUN)
    log = events(root)
    first = next(i for i, e in enumerate(log) if e["type"] == "member_progress")
    path = root / RUN / "events.jsonl"
    old_style = {k: v for k, v in log[first].items() if k not in ("time_shares", "time_s", "sb3")}
    path.write_text("".join(json.dumps(e) + "\n" for e in [*log[:first], old_style]))
    app = ScreenApp(lambda: RunScreen(RunsWatcher(root, clock=lambda: 0.0), RUN, 0.05))
    async with app.run_test(size=(200, 50)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        table = run.query_one("#members", DataTable)
        assert "time" not in column_keys(table)
        with open(path, "a") as fh:
            fh.write(json.dumps(log[first]) + "\n")
        await until(pilot, lambda: "time" in column_keys(table))
        await until(pilot, lambda: table.row_count == 4 and cell(table, "0/0", "time") != "—")
        assert cell(table, "0/0", "policy_loss") == format(log[first]["sb3"]["policy_loss"], ".3g")
        assert column_width(table, "error") == 40
        assert run.query_one("#member-detail", Static).display


ODD_EVENTS = [
    # kinds the schema accepts, values inside that are not numbers, negative or absurd
    {
        "type": "member_progress",
        "fold": 0,
        "member": 0,
        "timesteps": 100,
        "total": 4096,
        "fps": 5.0,
        "time_shares": {"env": "x", "inference": -1, "gradient": 1e308, "waiting": None},
        "time_s": {"env": [1], "gradient": {"a": 1}},
        "sb3": {"policy_loss": [1], "entropy": "high", "n_updates": 2.5, "clip_fraction": True},
        "measure_overhead_share": -3,
    },
    {
        "type": "member_progress",
        "fold": 0,
        "member": 1,
        "timesteps": 100,
        "total": 4096,
        "time_shares": {},
        "time_s": {"env": 0, "inference": 0},
        "sb3": {},
    },
    # wrong kinds: skipped and counted, the member keeps what it had
    {"type": "member_progress", "fold": 1, "member": 0, "timesteps": 9, "total": 9, "sb3": [1]},
]


async def test_odd_values_never_break_the_members_table(tmp_path: Path):
    root = tmp_path / "runs"
    shutil.copytree(TIMING / RUN, root / RUN)
    started = [e for e in events(root) if e["type"] in ("run_started", "member_started")]
    lines = [json.dumps(e) for e in (*started, *ODD_EVENTS)]
    (root / RUN / "events.jsonl").write_text("\n".join(lines) + "\n")
    app = run_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        assert run.snapshot is not None and run.snapshot.skipped_events == 1
        table = run.query_one("#members", DataTable)
        assert cell(table, "0/0", "time") == "— / — / —"  # 1e308 is no fraction
        for key in ("policy_loss", "entropy", "clip_fraction"):
            assert cell(table, "0/0", key) == "—"
        assert cell(table, "0/1", "time") == "— / — / —"  # an empty split
        text = screen_text(app)
        assert "fold 0 member 0 · 5 steps/s · time (last interval): env — · inference —" in text
        assert "policy loss — · value loss — · entropy — ·" in text
        table.focus()
        await pilot.press("down")
        await pilot.pause()
        assert "fold 0 member 1" in screen_text(app)
        await pilot.press("down", "down", "up", "down")
        await pilot.pause()
        assert app.is_running


def test_the_detail_of_a_member_without_any_figures_says_so():
    bare = MemberRow(0, 2, "pending", 0, 4096, 0.0, None, None, None, "RuntimeError: boom")
    assert not bare.has_training_detail
    assert bare.shown_time_shares() == ({}, "last interval")
    text = member_detail(bare).plain
    assert text.splitlines() == [
        "fold 0 member 2 · — steps/s · no time breakdown in its events",
        "SB3: no metrics in its events",
        "error: RuntimeError: boom",
    ]


def test_a_finished_member_shows_its_whole_training_a_running_one_its_last_interval():
    interval = {"env": 0.5, "gradient": 0.5}
    seconds = {"env": 1.0, "gradient": 3.0, "waiting": None}
    row = MemberRow(0, 0, "finished", 9, 9, 1.0, None, None, None, None, interval, seconds)
    assert row.shown_time_shares() == (
        {"env": 0.25, "gradient": 0.75, "waiting": None},
        "whole training",
    )
    running = MemberRow(0, 0, "running", 5, 9, 1.0, None, None, None, None, interval, seconds)
    assert running.shown_time_shares() == (interval, "last interval")
    no_time = MemberRow(0, 0, "finished", 9, 9, 1.0, None, None, None, None, interval, {"env": 0})
    assert no_time.shown_time_shares() == (interval, "last interval")  # nothing to share out


# ---------------------------------------------------------------------------- snapshots
def settle(condition):
    async def run_before(pilot) -> None:
        await until(pilot, lambda: condition(pilot.app.screen))
        await pilot.app.workers.wait_for_complete()
        seen: list[str] = []
        for _ in range(100):  # DataTable sizes itself when idle: the same picture three times
            await pilot.pause(0.1)
            seen = [*seen[-2:], pilot.app.export_screenshot()]
            if len(seen) == 3 and len(set(seen)) == 1:
                return

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_snapshot_members_with_their_time_and_sb3_metrics(snap_compare, size):
    app = run_app(TIMING_REL)
    assert snap_compare(app, terminal_size=size, run_before=settle(lambda s: s.polls_rendered))


# ---------------------------------------------------------------------------- worker processes
class CountingSampler:
    """The app's one sampler as the Run screen sees it: ``recent`` reuses what the hardware
    screen sampled; ``sample`` would be a second sampling."""

    def __init__(self, snapshot) -> None:
        self.snapshot = snapshot
        self.recent_calls = 0
        self.sample_calls = 0

    def recent(self, max_age_s: float):
        self.recent_calls += 1
        return self.snapshot

    def sample(self):
        self.sample_calls += 1
        return self.snapshot


class SamplerApp(ScreenApp):
    """A bare app that, like the panel, holds one sampler (``app.sampler``)."""

    def __init__(self, make, sampler) -> None:
        super().__init__(make)
        self.sampler = sampler


def live_app(root: Path, sampler) -> SamplerApp:
    watcher = RunsWatcher(root, clock=lambda: 0.0)
    return SamplerApp(lambda: RunScreen(watcher, LIVE, SLOW, hostname=HOST), sampler)


async def test_running_members_show_their_worker_process(tmp_path: Path):
    sampler = CountingSampler(workers_snapshot())
    with live_run(tmp_path / "runs"):
        app = live_app(tmp_path / "runs", sampler)
        async with app.run_test(size=(200, 50)) as pilot:
            run = app.screen
            await until(pilot, lambda: run.polls_rendered)
            table = run.query_one("#members", DataTable)
            assert column_keys(table)[8:12] == ["cpu", "rss", "threads", "gpu_mem"]
            row = [cell(table, "0/0", key) for key in ("cpu", "rss", "threads", "gpu_mem")]
            assert row == ["97%", "1.2 GiB", "9", "1.1 GiB"]
            for key in ("0/1", "1/0", "1/1"):  # another node, pending, not in a job's tree
                assert [cell(table, key, k) for k in ("cpu", "rss", "threads", "gpu_mem")] == [
                    "—"
                ] * 4
            text = screen_text(app)
            assert (
                "process: pid 4242 on this host: CPU 97% of a core · RSS 1.2 GiB · 9 threads · "
                "GPU 1.1 GiB, SM 35% · device cuda:0"
            ) in text
            # 3 slots at the measured rates: 0/0 needs 20 s, 0/1 6.7 s, 1/1 10 s; 1/0 (pending)
            # starts at 6.7 s at the median 200/s and needs 15 s: the run ends at 21.7 s
            assert "ETA 22s" in text
            table.focus()
            await pilot.press("down")
            await pilot.pause()
            text = screen_text(app)
            assert "process: pid 4343 on far/0123abcd, not this host: no readings" in text
            await pilot.press("down", "down")
            await pilot.pause()
            assert "process: pid 4444 on this host, not in a live job's process tree" in (
                screen_text(app)
            )
    # the app's sampler, never a sampling of its own
    assert sampler.recent_calls >= 1 and sampler.sample_calls == 0


async def test_a_live_run_without_rates_shows_no_eta_and_its_processes_unsampled(tmp_path):
    with live_run(tmp_path / "runs", with_progress=False):
        app = ScreenApp(  # no app sampler: the processes are unknown, not an error
            lambda: RunScreen(RunsWatcher(tmp_path / "runs", clock=lambda: 0.0), LIVE, SLOW)
        )
        async with app.run_test(size=(200, 50)) as pilot:
            run = app.screen
            await until(pilot, lambda: run.polls_rendered)
            assert run.snapshot is not None and run.snapshot.live
            assert run.snapshot.eta_s is None
            text = screen_text(app)
            assert "ETA —" in text
            table = run.query_one("#members", DataTable)
            assert cell(table, "0/0", "cpu") == "—" and cell(table, "0/0", "rss") == "—"
        jobs = RunsWatcher(tmp_path / "runs", clock=lambda: 0.0).poll()
        assert [getattr(c, "plain", c) for c in job_cells(jobs[0])][4] == "—"
    with live_run(tmp_path / "again"):
        (snap,) = RunsWatcher(tmp_path / "again", clock=lambda: 0.0).poll()
        assert job_cells(snap)[4].plain == "22s"  # the jobs list shows the same ETA


def test_the_member_detail_names_the_worker_process_in_words():
    proc = workers_snapshot().process(4242)
    running = MemberRow(0, 0, "running", 1, 9, 1.0, None, None, HOST, None, pid=4242)
    lines = member_detail(running, proc, HOST).plain.splitlines()
    assert lines[-1] == (
        "process: pid 4242 on this host: CPU 97% of a core · RSS 1.2 GiB · 9 threads · "
        "GPU 1.1 GiB, SM 35%"
    )
    unsampled = member_detail(running, None, HOST, sampled=False).plain.splitlines()[-1]
    assert unsampled == "process: pid 4242 on this host, no hardware reading"
    no_pid = MemberRow(0, 0, "running", 1, 9, 1.0, None, None, HOST, None)
    assert member_detail(no_pid, None, HOST).plain.endswith("its events name no worker pid")
    # not running, or a dead trainer's run: nothing said about processes
    done = MemberRow(0, 0, "finished", 9, 9, 1.0, None, None, HOST, None, pid=4242)
    assert "process" not in member_detail(done, proc, HOST).plain
    assert "process" not in member_detail(running, proc, HOST, live=False).plain
    assert running.local_pid("elsewhere") is None and running.local_pid(HOST) == 4242
