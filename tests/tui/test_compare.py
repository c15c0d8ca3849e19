"""Compare runs: mark runs in the jobs list with space, press c, see them side by side (config
differences, returns per fold against buy and hold, Monte Carlo against the null policies, the
verdicts), escape back to the list with the marks kept.

The runs: a copy of the recorded finished and failed runs (from before verdicts) and the
hand-written judged run of tests.engine.test_view_verdict, whose config differs from theirs in
two keys.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable

from ploutos_tui.model.runs import RunsWatcher
from ploutos_tui.screens.compare import MARK_AT_LEAST_TWO, CompareScreen
from ploutos_tui.screens.jobs import MARK, JobsScreen
from tests.engine.test_view_verdict import RUN_ID as JUDGED
from tests.engine.test_view_verdict import judged_run_events, write_run
from tests.tui.panel_harness import ScreenApp, until
from tests.tui.test_jobs_screens import (
    FAILED,
    FINISHED,
    FIXTURES,
    MACHINE,
    SLOW,
    screen_text,
    settle,
)


def compare_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for run_id in (FINISHED, FAILED):
        shutil.copytree(FIXTURES / run_id, root / run_id)
    judged = write_run(root, judged_run_events())
    config = (root / FINISHED / "config.yaml").read_text()
    config = config.replace("learning_rate: 0.0003", "learning_rate: 0.001")
    judged.config_path.write_text(config.replace("total_timesteps: 4096", "total_timesteps: 8192"))
    return root


def line_of(text: str, label: str) -> list[str]:
    """The words of the screen line that starts with ``label``, after the label."""
    for line in text.splitlines():
        if line.strip().startswith(label):
            return line.strip()[len(label) :].split()
    raise AssertionError(f"no line {label!r} in:\n{text}")


def compare_app(root: Path, *run_ids: str) -> ScreenApp:
    return ScreenApp(lambda: CompareScreen([root / r for r in run_ids]))


# ---------------------------------------------------------------------------- the flow
async def test_mark_two_runs_compare_them_and_escape_back_with_the_marks(tmp_path: Path):
    root = compare_root(tmp_path)
    watcher = RunsWatcher(root, clock=lambda: 0.0)
    app = ScreenApp(lambda: JobsScreen(watcher, Path("config/demo.yaml"), SLOW, machine=MACHINE))
    async with app.run_test(size=(120, 40)) as pilot:
        jobs = app.screen
        await until(pilot, lambda: jobs.polls_rendered)
        assert jobs._keys == [JUDGED, FAILED, FINISHED]
        table = jobs.query_one("#jobs", DataTable)
        await pilot.press("space")  # the judged run
        assert list(jobs.marked) == [JUDGED]
        assert str(table.get_cell(JUDGED, "mark")) == MARK
        await pilot.press("c")  # one marked: a warning, no screen
        assert isinstance(app.screen, JobsScreen)
        assert any(MARK_AT_LEAST_TWO in str(n.message) for n in app._notifications)
        await pilot.press("down", "down", "space")  # the finished run
        assert list(jobs.marked) == [JUDGED, FINISHED]
        assert "2 marked" in str(jobs.query_one("#jobs-head").render())
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        compare = app.screen
        await until(pilot, lambda: compare.comparison is not None)
        text = screen_text(app)
        assert line_of(text, "training.learning_rate") == ["0.001", "0.0003"]
        assert line_of(text, "training.total_timesteps") == ["8192", "4096"]
        assert line_of(text, "fold 0 ensemble") == ["+1.23%", "-4.99%"]
        assert line_of(text, "fold 0 buy and hold") == ["+2.00%", "+4.17%"]
        assert line_of(text, "fold 0 B&H at its exposure") == ["+0.90%", "—"]
        assert line_of(text, "all folds loss probability") == ["44.8%", "44.8%"]
        assert line_of(text, "all folds beats always long") == ["40.0%", "—"]
        assert line_of(text, "fold 1 loss probability") == ["38.1%", "28.5%"]
        compare.query_one("#compare-body").scroll_end(animate=False)
        await pilot.pause()
        text = screen_text(app)
        assert line_of(text, "skill") == ["not", "shown", "—"]
        assert f"{FINISHED}: — (no verdict: judged before verdicts existed)" in text
        assert f"{JUDGED}: skill not shown: timing p=0.43" in text
        await pilot.press("escape")
        assert app.screen is jobs
        assert list(jobs.marked) == [JUDGED, FINISHED]
        assert str(table.get_cell(FINISHED, "mark")) == MARK
        await pilot.press("space")  # unmark the finished run (the cursor is still on it)
        assert list(jobs.marked) == [JUDGED] and str(table.get_cell(FINISHED, "mark")) == ""


async def test_a_failed_run_shows_dashes_and_its_error(tmp_path: Path):
    root = compare_root(tmp_path)
    app = compare_app(root, FINISHED, FAILED)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.screen.comparison is not None)
        # no config key differs between the two recorded runs
        assert app.screen.comparison.differences == ()
        body = app.screen.query_one("#compare-body")
        body.scroll_end(animate=False)
        await pilot.pause()
        text = screen_text(app)
        assert f"{FAILED}: — (no verdict: the run failed)" in text
        assert "error: 1 unit(s) failed: fold 1 member 1" in text


async def test_fewer_than_two_runs_say_to_mark_two(tmp_path: Path):
    app = compare_app(compare_root(tmp_path), FINISHED)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert MARK_AT_LEAST_TWO in screen_text(app)
        await pilot.press("escape", "escape")  # back once; the screen under it stays
        assert not isinstance(app.screen, CompareScreen) and len(app.screen_stack) == 1


async def test_wide_windows_put_the_monte_carlo_beside_the_returns(tmp_path: Path):
    app = compare_app(compare_root(tmp_path), JUDGED, FINISHED)
    async with app.run_test(size=(200, 50)) as pilot:
        await until(pilot, lambda: app.screen.comparison is not None)
        await pilot.pause()
        tables = app.screen.query_one("#compare-tables")
        assert tables.has_class("-wide")
        left, right = app.screen.query_one("#compare-left"), app.screen.query_one("#compare-right")
        assert left.region.y == right.region.y and right.region.x > left.region.right
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not tables.has_class("-wide")


# ---------------------------------------------------------------------------- snapshots
@pytest.mark.parametrize(
    ("size", "run_ids"),
    [((80, 24), (JUDGED, FINISHED)), ((200, 50), (JUDGED, FAILED, FINISHED))],
    ids=["80x24", "200x50"],
)
def test_snapshot_compare_screen(snap_compare, tmp_path: Path, size, run_ids):
    app = compare_app(compare_root(tmp_path), *run_ids)
    run_before = settle(lambda s: getattr(s, "comparison", None) is not None)
    assert snap_compare(app, terminal_size=size, run_before=run_before)
