"""The Run screen's training curves: each member's reward, steps/s and SB3 metrics against
timesteps, from its progress events; the highlighted member over the other members of its fold.

The run is the judged two-fold, two-member run of :mod:`tests.engine.test_view_verdict`, each
member given 40 progress events with made-up but deterministic curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.widgets import DataTable

from ploutos_tui.model.runs import MemberCurves, MemberRow, RunsWatcher
from ploutos_tui.screens.run import RunScreen
from ploutos_tui.widgets.curves import BRAILLE, CURVES, CurvesPanel, chart_lines, grid_shape
from tests.engine.test_view_verdict import RUN_ID, judged_run_events, write_run
from tests.tui.panel_harness import ScreenApp, until
from tests.tui.test_run_verdict import screen_text, settle_on_verdict

REPO = Path(__file__).resolve().parents[2]
SLOW = 3600.0  # one poll per test
POINTS = 40
TOTAL = 4096


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def progress(fold: int, member: int, i: int) -> dict[str, Any]:
    """The ``i``-th of ``POINTS`` progress events: reward rising, losses falling, a wobble
    that differs per member."""
    t = (i + 1) / POINTS
    wobble = math.sin(3 * i / POINTS * math.pi + member)
    return {
        "ts": f"2027-01-01T00:0{fold}:{i % 30:02d}.000Z",
        "type": "member_progress",
        "fold": fold,
        "member": member,
        "timesteps": round(t * TOTAL),
        "total": TOTAL,
        "fps": 3000.0 + 200 * member + 100 * wobble,
        "mean_reward": round(-0.02 + 0.04 * t + 0.004 * wobble - 0.005 * fold, 6),
        "episodes": 100,
        "sb3": {
            "policy_loss": round(-0.01 * (1 - t) + 0.002 * wobble, 6),
            "value_loss": round(0.06 * math.exp(-3 * t) + 0.004 * member, 6),
            "entropy": round(5.49 - 1.5 * t - 0.1 * member, 6),
            "approx_kl": round(0.002 + 0.01 * t * (1 + 0.3 * wobble), 6),
            "clip_fraction": round(0.02 + 0.1 * t, 6),
            "explained_variance": round(-0.5 + 1.3 * t - 0.3 * t * t, 6),
            "n_updates": 20 * (i + 1),
        },
    }


def curves_run_events() -> list[dict[str, Any]]:
    """The judged run, each member started and reporting ``POINTS`` progress events before it
    finishes."""
    out: list[dict[str, Any]] = []
    for event in judged_run_events():
        if event["type"] == "member_finished":
            fold, member = event["fold"], event["member"]
            started = {
                "ts": event["ts"],
                "type": "member_started",
                "fold": fold,
                "member": member,
                "timesteps": 0,
                "total": TOTAL,
                "node": "box",
            }
            out += [started, *(progress(fold, member, i) for i in range(POINTS))]
        out.append(event)
    return out


def curves_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    write_run(root, curves_run_events())
    return root


def run_app(root: Path) -> ScreenApp:
    return ScreenApp(lambda: RunScreen(RunsWatcher(root, clock=lambda: 0.0), RUN_ID, SLOW))


async def show_curves(pilot) -> None:
    run = pilot.app.screen
    run.query_one("#body").scroll_to_widget(run.query_one("#curves-title"), top=True, animate=False)
    await pilot.pause()


# ---------------------------------------------------------------------------- the model
def test_each_member_keeps_its_curves_and_an_unchanged_member_is_not_copied_again(tmp_path):
    root = curves_root(tmp_path)
    watcher = RunsWatcher(root, clock=lambda: 0.0)
    snap = watcher.poll_run(RUN_ID)
    assert snap is not None
    for m in snap.members:
        assert len(m.curves) == POINTS
        assert list(m.curves.steps) == sorted(m.curves.steps) and m.curves.steps[-1] == TOTAL
        assert (
            m.curves.values("mean_reward")[-1]
            == progress(m.fold, m.member, POINTS - 1)["mean_reward"]
        )
        assert m.curves.values("entropy")[0] == progress(m.fold, m.member, 0)["sb3"]["entropy"]
        assert isinstance(m.curves.steps, tuple)
        assert m.curves.values("no such series") == ()
    with open(root / RUN_ID / "events.jsonl", "a") as fh:  # one more event, for member 0/0 only
        fh.write('{"ts":"2027-01-01T00:09:02.000Z","type":"member_progress","fold":0,"member":0,'
                 '"timesteps":4200,"total":4200,"fps":1.0,"mean_reward":0.5}\n')  # fmt: skip
    again = watcher.poll_run(RUN_ID)
    assert again is not None and again is not snap
    assert again.members[0].curves.steps[-1] == 4200
    assert again.members[0].curves.values("mean_reward")[-1] == 0.5
    assert again.members[0].curves.values("entropy")[-1] is None  # that event had no sb3
    for before, after in zip(snap.members[1:], again.members[1:], strict=True):
        assert after.curves is before.curves  # not copied: its history did not move


# ---------------------------------------------------------------------------- the chart
CURVE = CURVES[0]


def dots(lines: list[Text]) -> list[str]:
    """The plot rows only (title and x axis dropped), y-axis labels cut off."""
    return [line.plain.split("┤" if "┤" in line.plain else "│", 1)[1] for line in lines[1:-1]]


def test_a_rising_series_rises_with_its_min_and_max_on_the_axis():
    steps = list(range(0, 1001, 10))
    values = [i / 100 for i in range(len(steps))]  # 0 .. 1
    lines = chart_lines(CURVE, [(steps, values, "cyan")], (0, 1000), 30, 7, latest=1.0)
    assert len(lines) == 7 and all(line.cell_len <= 30 for line in lines)
    assert lines[0].plain == "reward/ep +1.0000 log return"
    assert lines[1].plain.startswith("+1.0000┤") and lines[5].plain.startswith("+0.0000┤")
    rows = dots(lines)
    assert rows[0][-1] != " " and rows[0][0] == " "  # top right: the end of the line
    assert rows[-1][0] != " " and rows[-1][-1] == " "  # bottom left: its start
    assert all(ch == " " or BRAILLE <= ord(ch) <= BRAILLE + 255 for row in rows for ch in row)
    axis = lines[-1].plain
    assert axis.split() == ["0", "timesteps", "1,000"]


def test_each_series_keeps_its_style_and_the_last_drawn_wins():
    steps = [0, 100]
    flat = chart_lines(CURVE, [(steps, [0.0, 0.0], "red"), (steps, [0.0, 0.0], "cyan")],
                       (0, 100), 20, 5)  # fmt: skip
    styles = {str(span.style) for line in flat[1:-1] for span in line.spans}
    assert "cyan" in styles and "red" not in styles  # the same dots: the highlighted on top
    two = chart_lines(CURVE, [(steps, [0.0, 0.0], "red"), (steps, [1.0, 1.0], "cyan")],
                      (0, 100), 20, 5)  # fmt: skip
    styles = {str(span.style) for line in two[1:-1] for span in line.spans}
    assert {"red", "cyan"} <= styles


def test_missing_values_and_empty_series_never_break_a_chart():
    lines = chart_lines(CURVE, [([0, 1, 2], [None, None, None], "cyan")], (0, 2), 25, 6)
    assert any("no values yet" in line.plain for line in lines)
    assert len(lines) == 6
    gaps = chart_lines(CURVE, [([0, 5, 10], [1.0, None, 2.0], "cyan")], (0, 10), 25, 6)
    assert len(gaps) == 6 and dots(gaps)[0].strip()
    one = chart_lines(CURVE, [([7], [0.3], "cyan")], (0, 0), 12, 3)  # one point, no x span
    assert len(one) == 3
    for width in (1, 5, 11):
        assert all(line.cell_len <= width for line in chart_lines(CURVE, [], (0, 1), width, 4))


def test_the_grid_fills_the_width():
    assert grid_shape(76)[0] == 2 and grid_shape(196)[0] == 4
    panel = CurvesPanel()
    steps = tuple(range(0, 5000, 100))
    curves = MemberCurves(
        steps, {c.key: tuple(float(i) for i in range(len(steps))) for c in CURVES}
    )
    panel.member = MemberRow(0, 1, "running", 4900, 5000, 1.0, 0.0, None, None, None,
                             curves=curves)  # fmt: skip
    for width in (40, 76, 120, 196):
        lines = panel.build(width, panel.height_for(width))
        assert len(lines) == panel.height_for(width)
        assert all(line.cell_len <= width for line in lines)
        titles = " ".join(line.plain for line in lines)
        assert all(c.title in titles for c in CURVES)


# ---------------------------------------------------------------------------- the screen
async def test_the_curves_follow_the_highlighted_member(tmp_path: Path):
    app = run_app(curves_root(tmp_path))
    async with app.run_test(size=(200, 50)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        text = screen_text(app)
        assert (
            "fold 0 member 0 over fold 0's other members · 40 points · ↑/↓: another member" in text
        )
        last = progress(0, 0, POINTS - 1)
        assert f"reward/ep {last['mean_reward']:+.4f} log return" in text
        assert f"entropy {last['sb3']['entropy']:.3g} nats" in text
        assert f"clip fraction {last['sb3']['clip_fraction'] * 100:.1f}%" in text
        assert "timesteps" in text and "4,096" in text
        run.query_one("#members", DataTable).focus()
        await pilot.press("down", "down")
        await pilot.pause()
        text = screen_text(app)
        assert "fold 1 member 0 over fold 1's other members" in text
        other = progress(1, 0, POINTS - 1)
        assert f"reward/ep {other['mean_reward']:+.4f} log return" in text


async def test_a_run_without_progress_says_so(tmp_path: Path):
    root = tmp_path / "runs"
    write_run(root, judged_run_events())
    app = run_app(root)
    async with app.run_test(size=(100, 40)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        await show_curves(pilot)
        assert "no progress events yet" in screen_text(app)


async def test_the_labels_name_their_units(tmp_path: Path):
    app = run_app(curves_root(tmp_path))
    async with app.run_test(size=(200, 50)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        members = run.query_one("#members", DataTable)
        labels = [str(c.label) for c in members.columns.values()]
        assert "steps/s" in labels and "reward/ep" in labels and "fps" not in labels
        folds = run.query_one("#folds", DataTable)
        turnover = [str(folds.get_row_at(i)[5]) for i in range(folds.row_count)]
        assert turnover[0].endswith("×")
        run.query_one("#body").scroll_end(animate=False)
        await pilot.pause()
        await pilot.press("m")  # pooled -> the newest fold: named as the tables name it
        await pilot.pause()
        assert "Monte Carlo: fold 1, final returns" in screen_text(app)


# ---------------------------------------------------------------------------- snapshots
def settle_on_curves(condition):
    async def run_before(pilot) -> None:
        await until(pilot, lambda: condition(pilot.app.screen))
        await pilot.app.workers.wait_for_complete()
        await show_curves(pilot)
        seen: list[str] = []
        for _ in range(100):  # the same picture on three consecutive looks
            await pilot.pause(0.1)
            seen = [*seen[-2:], pilot.app.export_screenshot()]
            if len(seen) == 3 and len(set(seen)) == 1:
                return

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_snapshot_run_screen_with_curves(snap_compare, tmp_path: Path, size):
    app = run_app(curves_root(tmp_path))
    assert snap_compare(
        app, terminal_size=size, run_before=settle_on_curves(lambda s: s.polls_rendered)
    )


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_snapshot_run_screen_with_curves_at_its_verdict(snap_compare, tmp_path: Path, size):
    app = run_app(curves_root(tmp_path))
    assert snap_compare(
        app, terminal_size=size, run_before=settle_on_verdict(lambda s: s.polls_rendered)
    )
