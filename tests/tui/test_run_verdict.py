"""The verdict on the panel: the Run screen's verdict section (fills, null policies per scope,
timing skill, overfitting, costs, seed spread, the verdict line), its help, the Jobs list's short
verdict, and a panel that never breaks on missing, null or odd-typed verdict fields.

The runs are hand-written event logs that follow the verdict contract (docs/results.md), built by
:mod:`tests.engine.test_view_verdict`; older runs are the recorded fixtures, which have none of it.
"""

from __future__ import annotations

import copy
import io
import random
import shutil
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from rich.console import Console
from textual.app import App
from textual.widgets import DataTable, Static

from engine.train.plan import assumed_machine
from ploutos_tui.model.runs import RunSnapshot, RunsWatcher, p_text
from ploutos_tui.screens.jobs import JobsScreen, job_cells
from ploutos_tui.screens.run import RUN_GLOSSARY, RunHelpScreen, RunScreen
from ploutos_tui.widgets.curves import CURVES
from ploutos_tui.widgets.verdict import GLOSSARY, VerdictPanel, verdict_renderable
from tests.engine.test_view_verdict import RUN_ID, judged_run_events, write_run
from tests.tui.panel_harness import ScreenApp, until

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "runs"
FINISHED = "20261127-214826-demo-36cd"  # recorded before verdicts existed
SLOW = 3600.0  # one poll per test


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def judged_root(tmp_path: Path, **kwargs: Any) -> Path:
    root = tmp_path / "runs"
    write_run(root, judged_run_events(**kwargs))
    return root


def run_app(root: Path, run_id: str = RUN_ID) -> ScreenApp:
    return ScreenApp(lambda: RunScreen(RunsWatcher(root, clock=lambda: 0.0), run_id, SLOW))


def screen_text(app: App) -> str:
    """What the terminal shows now, as plain text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


def static_text(widget: Static, width: int = 200) -> str:
    """All of a Static's content as plain text, scrolled out of view or not."""
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text()


def rendered(snap: RunSnapshot, scope: str | None, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(verdict_renderable(snap, scope))
    return console.export_text()


async def show_verdict(pilot) -> None:
    run = pilot.app.screen
    body = run.query_one("#body")
    body.scroll_to_widget(run.query_one("#verdict-title"), top=True, animate=False)
    await pilot.pause()


# ---------------------------------------------------------------------------- the run screen
async def test_the_run_screen_shows_every_part_of_the_verdict(tmp_path: Path):
    app = run_app(judged_root(tmp_path))
    async with app.run_test(size=(120, 120)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        await show_verdict(pilot)
        shown = screen_text(app)
        folds = run.query_one("#folds", DataTable)
        fold_rows = [[str(c) for c in folds.get_row_at(i)] for i in range(folds.row_count)]
    assert "skill not shown: timing p=0.43 (needs <= 0.05), PBO 0.62" in shown
    assert "· overfitting: PBO 0.62 > 0.5" in shown
    assert "needs timing p <= 0.05, deflated Sharpe >= 0.95, PBO <= 0.5" in shown
    assert "fills: next_open (at the open of the bar after the decision)" in shown
    # the null policies on the pooled paths, each number with its unit
    assert "Null policies on the same Monte Carlo paths (pooled)" in shown
    ensemble = ["ensemble", "44.8%", "+0.44%", "-0.07%", "—", "—", "—"]
    assert _row(shown, "ensemble ") == ensemble
    assert _row(shown, "cash ") == [
        "cash", "0.0%", "+0.00%", "+0.00%", "60.0%", "+0.61", "pp", "+0.80", "pp"
    ]  # fmt: skip
    assert _row(shown, "always long") == [
        "always", "long", "28.0%", "+2.40%", "+2.20%", "40.0%", "-0.93", "pp", "-1.20", "pp"
    ]  # fmt: skip
    assert "paths: stationary block bootstrap of the test window's" in shown
    # timing per scope; the pooled observed return is the pooled out-of-sample return
    assert _row(shown, "pooled 0.43") == ["pooled", "0.43", "0.30", "200", "—", "+2.51%", "—"]
    assert _row(shown, "fold 0 0.43") == [
        "fold", "0", "0.43", "0.51", "200", "20", "bars", "+1.23%", "+1.00%"
    ]  # fmt: skip
    assert "Overfitting (12 trials in 3 runs on this dataset)" in shown
    assert "PBO 0.62 (probability; CSCV over 16 splits)" in shown
    assert "deflated Sharpe 0.41 (probability; Sharpe 0.0210 /bar vs SR0 0.0150 /bar)" in shown
    assert "reality check p 0.30" in shown
    costs_head = next(line for line in shown.splitlines() if "0x 0 bps" in line).split()
    assert costs_head == [
        "fold", "0x", "0", "bps", "1x", "3", "bps", "2x", "6", "bps", "4x", "12", "bps",
        "break-even",
    ]  # fmt: skip
    assert _row(shown, "fold 0 +3.00%") == [
        "fold", "0", "+3.00%", "+1.23%", "-0.40%", "-3.80%", "5.2", "bps/side"
    ]  # fmt: skip
    assert _row(shown, "pooled 4") == [
        "pooled", "4", "+1.20%", "-0.50%..+2.90%", "1.10%", "-1.00%..+3.00%"
    ]  # fmt: skip
    # the buy and hold held at the ensemble's exposure is a row of the out-of-sample table
    assert len(fold_rows) == 6
    assert fold_rows[2][1:3] == ["B&H @ 45%", "+0.90%"]


def _row(text: str, start: str) -> list[str]:
    """The words of the first screen line whose words begin with those of ``start``."""
    head = start.split()
    for line in text.splitlines():
        if line.split()[: len(head)] == head:
            return line.split()
    raise AssertionError(f"no line starts with {start!r}")


async def test_m_moves_the_null_policy_table_to_each_fold_and_back(tmp_path: Path):
    app = run_app(judged_root(tmp_path))
    async with app.run_test(size=(120, 120)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        assert run.current_scope() == "pooled"
        await pilot.press("m")
        await show_verdict(pilot)
        shown = screen_text(app)
        assert "Null policies on the same Monte Carlo paths (fold 1)" in shown
        assert _row(shown, "cash ")[4] == "55.1%"  # fold 1's own beat probability
        assert _row(shown, "ensemble ")[1] == "38.1%"  # and its ensemble's loss probability
        await pilot.press("m", "m")
        await show_verdict(pilot)
        assert "Null policies on the same Monte Carlo paths (pooled)" in screen_text(app)


async def test_close_fills_are_flagged_optimistic_at_the_top_of_the_run(tmp_path: Path):
    app = run_app(judged_root(tmp_path, fill="close"))
    async with app.run_test(size=(100, 30)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        top = run.query_one("#verdict-top", Static)
        assert top.display
        assert "fills: close (optimistic: fills at the close the agent just saw)" in str(
            top.render()
        )


async def test_a_run_from_before_verdicts_says_it_has_none(tmp_path: Path):
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES / FINISHED, root / FINISHED)
    app = run_app(root, FINISHED)
    async with app.run_test(size=(100, 80)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        assert not run.query_one("#verdict-top", Static).display
        assert run.query_one("#folds", DataTable).row_count == 4  # no matched buy and hold row
        await show_verdict(pilot)
        shown = screen_text(app)
        assert "no verdict: this run has not been judged" in shown
        assert "Null policies" not in shown and "Timing skill" not in shown


async def test_a_run_judged_per_fold_but_not_yet_overall_says_the_verdict_is_to_come(
    tmp_path: Path,
):
    app = run_app(judged_root(tmp_path, verdict=False))
    async with app.run_test(size=(120, 120)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        await show_verdict(pilot)
        shown = screen_text(app)
        assert "not judged yet: the verdict comes once every fold is evaluated" in shown
        assert "no null-policy comparison for pooled" in shown
        assert _row(shown, "fold 1 0.43")[:2] == ["fold", "1"]  # the folds' tests still show


async def test_help_on_the_run_screen_gives_the_meaning_of_every_statistic(tmp_path: Path):
    app = run_app(judged_root(tmp_path))
    async with app.run_test(size=(120, 80)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, RunHelpScreen))
        help_text = "\n".join(static_text(widget) for widget in app.screen.query(Static))
        for term, meaning in (*GLOSSARY, *RUN_GLOSSARY):
            assert term in help_text, term
            assert " ".join(meaning.split()) in " ".join(help_text.split()), term
        for curve in CURVES:  # each chart: its title, unit and one sentence
            title = f"{curve.title} ({curve.unit})" if curve.unit else curve.title
            assert title in help_text
            assert " ".join(curve.meaning.split()) in " ".join(help_text.split())
        assert "Keys" in help_text
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is run)


# ---------------------------------------------------------------------------- the jobs list
async def test_the_jobs_list_shows_a_short_verdict_per_run(tmp_path: Path):
    root = tmp_path / "runs"
    write_run(root, judged_run_events(skill=True, p_return=0.004), "20270102-000000-demo-good")
    write_run(root, judged_run_events(), "20270101-000000-demo-luck")
    shutil.copytree(FIXTURES / FINISHED, root / FINISHED)
    jobs = JobsScreen(
        RunsWatcher(root, clock=lambda: 0.0),
        Path("config/demo.yaml"),
        SLOW,
        machine=assumed_machine("cpus=16,ram=64G"),
    )
    app = ScreenApp(lambda: jobs)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: jobs.polls_rendered)
        table = jobs.query_one("#jobs", DataTable)
        # rows are keyed by run id; the verdict read by its column key (the list may gain columns)
        verdicts = {str(key.value): str(table.get_cell(key, "verdict")) for key in table.rows}
        assert verdicts == {
            "20270102-000000-demo-good": "skill p=0.004",
            "20270101-000000-demo-luck": "no skill p=0.43",
            FINISHED: "—",
        }
        assert "no skill p=0.43" in screen_text(app)  # the column is wide enough to be read


@pytest.mark.parametrize(
    ("verdict", "pooled", "short"),
    [
        ({"skill": True}, {"timing": {"p_return": 0.0004}}, "skill p=0.0004"),
        ({"skill": False}, {"timing": {"p_return": 1.0}}, "no skill p=1.00"),
        ({"skill": False}, {"timing": {"p_return": float("nan")}}, "no skill"),
        ({"skill": False}, {"timing": "fast"}, "no skill"),
        ({"skill": False}, {"timing": {"p_return": 1.7}}, "no skill"),  # not a p-value
        ({"skill": "yes"}, {"timing": {"p_return": 0.01}}, "—"),
        ({}, {}, "—"),
    ],
)
def test_the_short_verdict_of_odd_or_partial_fields(verdict, pooled, short):
    snap = RunSnapshot(
        run_id="r",
        path=Path("r"),
        state="finished",
        progress=1.0,
        elapsed_s=None,
        eta_s=None,
        config="",
        algorithm="",
        n_folds=0,
        ensemble=0,
        verdict=MappingProxyType(verdict),
        pooled=MappingProxyType(pooled),
    )
    assert snap.verdict_short == short


@pytest.mark.parametrize(
    ("p", "text"), [(0.43, "0.43"), (0.004, "0.004"), (0.0, "0.00"), (0.05, "0.05"), (-0.1, "—")]
)
def test_p_values_are_written_as_the_verdict_line_writes_them(p, text):
    assert p_text(p) == text


# ---------------------------------------------------------------------------- never breaks
ODD = (None, "0.4", "[red]x[/]", [], {}, [0.1, "a"], True, float("nan"), float("inf"), -3, 10**30)


def scramble(value: Any, rng: random.Random) -> Any:
    """``value`` with leaves, and now and then whole branches, replaced by odd values."""
    if isinstance(value, dict):
        if rng.random() < 0.08:
            return rng.choice(ODD)
        return {k: scramble(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        if rng.random() < 0.08:
            return rng.choice(ODD)
        return [scramble(v, rng) for v in value]
    return rng.choice(ODD) if rng.random() < 0.4 else value


# what makes an event readable at all (docs/events.md): kept, so that the fields around vary
# The event reader (engine.runs.events) skips events whose top-level fields have the wrong
# type, so these keep their type; everything inside them may be odd.
KEPT = {"type", "ts", "fold", "members_used", "fill"}
OBJECTS = {"oos", "buy_and_hold", "verdict", "pooled", "overfitting", "seed_dispersion"}


def scramble_event(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out = {}
    for key, value in event.items():
        if key in KEPT:
            out[key] = value
        elif key in OBJECTS:
            out[key] = {k: scramble(v, rng) for k, v in value.items()}
        else:
            out[key] = scramble(value, rng)
    return out


def scrambled_snapshots(tmp_path: Path, n: int, seed: int) -> list[RunSnapshot]:
    """``n`` snapshots of the judged run with its verdict fields scrambled (seeded)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        events = []
        for event in judged_run_events(fill=rng.choice(["close", "next_open", "next_vwap"])):
            if event["type"] in ("fold_evaluated", "verdict"):
                event = scramble_event(copy.deepcopy(event), rng)
            events.append(event)
        root = tmp_path / f"case{i}"
        write_run(root, events)
        snap = RunsWatcher(root, clock=lambda: 0.0).poll_run(RUN_ID)
        assert snap is not None and snap.state == "finished", snap and snap.error
        out.append(snap)
    return out


def test_odd_typed_verdict_fields_render_at_any_width_without_raising(tmp_path: Path):
    snaps = scrambled_snapshots(tmp_path, 60, seed=11)
    assert sum(s.skipped_events for s in snaps) == 0  # every event read: its fields vary
    assert sum(s.judged for s in snaps) == len(snaps)
    for snap in snaps:
        for scope in (None, "fold_01", "fold_99", "fold_x"):
            for width in (24, 80, 200):
                rendered(snap, scope, width)
        job_cells(snap)
        assert isinstance(snap.verdict_short, str)


async def test_the_run_screen_shows_scrambled_runs_without_dying(tmp_path: Path):
    snaps = scrambled_snapshots(tmp_path, 12, seed=5)
    app = run_app(judged_root(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        for snap in snaps:
            run.show(snap)
            await pilot.press("m")
            await pilot.pause()
            assert app.is_running and app._exception is None
            assert run.query_one("#verdict", VerdictPanel).failed is None


def test_snapshot_fields_are_read_only_copies(tmp_path: Path):
    snap = RunsWatcher(judged_root(tmp_path), clock=lambda: 0.0).poll_run(RUN_ID)
    assert snap is not None and snap.judged and snap.fill == "next_open"
    assert isinstance(snap.pooled["nulls"], MappingProxyType)
    assert isinstance(snap.folds[0].cost_sensitivity["multipliers"], tuple)
    with pytest.raises(TypeError):
        snap.verdict["skill"] = True  # type: ignore[index]


# ---------------------------------------------------------------------------- snapshots
def settle_on_verdict(pilot_app_condition):
    async def run_before(pilot) -> None:
        await until(pilot, lambda: pilot_app_condition(pilot.app.screen))
        await pilot.app.workers.wait_for_complete()
        await show_verdict(pilot)
        seen: list[str] = []
        for _ in range(100):  # the same picture on three consecutive looks
            await pilot.pause(0.1)
            seen = [*seen[-2:], pilot.app.export_screenshot()]
            if len(seen) == 3 and len(set(seen)) == 1:
                return

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_snapshot_run_screen_with_a_verdict(snap_compare, tmp_path: Path, size):
    app = run_app(judged_root(tmp_path))
    assert snap_compare(
        app, terminal_size=size, run_before=settle_on_verdict(lambda s: s.polls_rendered)
    )
