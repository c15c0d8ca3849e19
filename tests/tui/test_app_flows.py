"""The panel's keyboard flows with real training jobs: launch the demo from the Jobs screen and
watch it finish with its Monte Carlo numbers, stop and resume a job, quit the panel while a job
runs and find it again in a new panel."""

from __future__ import annotations

import asyncio
import html
import re
import time
from pathlib import Path

import pytest

from engine.runs.folder import RunFolder, list_runs
from ploutos_tui.app import PloutosApp
from ploutos_tui.screens.jobs import JobsScreen, LaunchScreen
from ploutos_tui.screens.run import RunScreen

pytestmark = pytest.mark.timeout(600)


def screen_text(app) -> str:
    """What the terminal shows, as plain text (from Textual's own screenshot)."""
    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text[^>]*x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)), m.group(3)))
    lines = ("".join(t for _x, t in sorted(parts)) for _y, parts in sorted(rows.items()))
    return html.unescape("\n".join(lines)).replace("\xa0", " ")


async def until(pilot, predicate, what: str, timeout: float = 240.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{screen_text(pilot.app)}")
        await pilot.pause(0.2)


def the_run(runs: Path) -> RunFolder | None:
    found = list_runs(runs)
    return found[0] if len(found) == 1 else None


async def launch_from_keyboard(pilot, config: Path) -> RunFolder:
    app = pilot.app
    await pilot.press("j")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen), "the jobs screen")
    await pilot.press("n")
    await until(pilot, lambda: isinstance(app.screen, LaunchScreen), "the launch form")
    app.screen.query_one("#config").value = str(config)
    await until(pilot, lambda: "n_envs" in screen_text(app), "the resolved plan in the form")
    await pilot.press("ctrl+l")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen), "the form to close", 120)
    return await until(pilot, lambda: the_run(app.runs_root), "the run folder", 120)


async def test_launch_the_demo_quit_restart_and_watch_it_finish(demo_config, tmp_path):
    config = demo_config(training__total_timesteps=16384)
    runs = tmp_path / "runs"
    app = PloutosApp(config=config, runs_root=runs, interval_s=0.3, dataset=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        folder = await launch_from_keyboard(pilot, config)
        await until(pilot, lambda: folder.run_id in screen_text(app), "the run in the table")
        await until(pilot, lambda: folder.state() == "running", "the job to run")
        await pilot.press("q")
    # The panel is gone; the job is not.
    time.sleep(1.0)
    assert folder.trainer_alive() and folder.state() == "running"

    again = PloutosApp(config=config, runs_root=runs, interval_s=0.3, start_screen="jobs")
    async with again.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: folder.run_id in screen_text(again), "the re-attached run")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(again.screen, RunScreen), "the run screen")
        await until(pilot, lambda: folder.state() == "finished", "the run to finish", 400)
        assert "finished" in screen_text(again)

        def montecarlo_shown() -> str | None:
            # below the members and their curves: scrolled to, as a user would
            again.screen.query_one("#mc-title").scroll_visible(animate=False, top=True)
            t = screen_text(again)
            return t if "loss probability" in t and "pooled" in t else None

        text = await until(
            pilot, montecarlo_shown, "pooled Monte Carlo statistics on the run screen"
        )
        assert "VaR 95" in text and "CVaR 95" in text
        again.screen.query_one("#body").scroll_home(animate=False)
        await pilot.pause(0.2)
        body = again.screen.query_one("#body")
        seen = ""
        while "buy & hold" not in seen and body.scroll_y < body.max_scroll_y:
            body.scroll_to(y=body.scroll_y + 20, animate=False)
            await pilot.pause(0.1)
            seen = screen_text(again)
        assert "buy & hold" in seen or "buy & hold" in text


async def test_stop_and_resume_a_job_from_the_jobs_screen(demo_config, tmp_path):
    config = demo_config(
        training__total_timesteps=32768,
        training__ensemble=1,
        walk_forward__max_folds=1,
    )
    runs = tmp_path / "runs"
    app = PloutosApp(config=config, runs_root=runs, interval_s=0.3, dataset=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        folder = await launch_from_keyboard(pilot, config)
        await until(
            pilot,
            lambda: folder.read_status().get("timesteps", {}).get("done", 0) > 0,
            "training progress",
        )
        await pilot.press("s")
        await until(pilot, lambda: folder.state() == "stopped", "the stop")
        await until(pilot, lambda: "stopped" in screen_text(app), "'stopped' in the table")
        await pilot.press("r")
        await until(pilot, lambda: folder.state() == "finished", "the resumed job to finish", 400)
    events = folder.events_path.read_text()
    assert '"type":"member_stopped"' in events and '"type":"run_resumed"' in events
