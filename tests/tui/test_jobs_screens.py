"""The jobs list, the launch form and the run screen, driven with Pilot over recorded runs."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import DataTable, Input, Log, Static

from engine.errors import PloutosError
from engine.runs.folder import RunFolder
from engine.train.plan import assumed_machine
from ploutos_tui.model.runs import RunsWatcher
from ploutos_tui.screens.jobs import ConfigPicker, JobsScreen, LaunchScreen, config_choices
from ploutos_tui.screens.run import LogScreen, RunScreen
from ploutos_tui.widgets.histogram import Histogram
from tests.tui.panel_harness import ScreenApp, until

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "runs"
FIXTURES_REL = FIXTURES.relative_to(REPO)  # shown in the screens: the same on every machine
FINISHED = "20261127-214826-demo-36cd"
FAILED = "20261127-214949-demo-92b9"
STOPPED = "20261127-215016-demo-3df3"
INTERRUPTED = "20261127-215100-demo-7a1e"
ORDER = [INTERRUPTED, STOPPED, FAILED, FINISHED]  # newest first
MACHINE = assumed_machine("cpus=16,ram=64G")
SLOW = 3600.0  # no second poll during a test


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # config/demo.yaml and the fixtures by relative path


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES, root)
    return root


class FakeWatcher(RunsWatcher):
    """Reads the real folders; records stop/resume/launch instead of starting trainers."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, clock=lambda: 0.0)
        self.calls: list[tuple[str, Any]] = []

    def stop(self, run_id: str) -> str:
        self.calls.append(("stop", run_id))
        return "stopping"

    def resume(self, run_id: str) -> RunFolder:
        self.calls.append(("resume", run_id))
        if run_id == FINISHED:
            raise PloutosError(f"{run_id}: finished; only a stopped/failed/interrupted run resumes")
        return RunFolder(self.runs_root / run_id)

    def launch_run(self, config_path, profile=None, ensemble=None, algorithm=None) -> RunFolder:
        self.calls.append(("launch", (str(config_path), profile, ensemble, algorithm)))
        new = self.runs_root / "20990101-000000-demo-beef"
        shutil.copytree(self.runs_root / STOPPED, new)
        return RunFolder(new)


class HookApp(ScreenApp):
    def __init__(self, make: Callable[[], Any]) -> None:
        super().__init__(make)
        self.opened: list[str] = []

    def open_run(self, run_id: str) -> None:
        self.opened.append(run_id)


def jobs_app(watcher: RunsWatcher, app_class=ScreenApp) -> ScreenApp:
    return app_class(lambda: JobsScreen(watcher, Path("config/demo.yaml"), SLOW, machine=MACHINE))


def static_text(widget: Static) -> str:
    return str(widget.render())


# ---------------------------------------------------------------------------- jobs list
async def test_jobs_table_lists_the_runs_with_their_states(runs: Path):
    app = jobs_app(RunsWatcher(runs, clock=lambda: 0.0))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.polls_rendered)
        table = screen.query_one("#jobs", DataTable)
        assert table.row_count == 4
        rows = [[str(c) for c in table.get_row_at(i)][1:] for i in range(4)]  # after the mark
        assert [r[0] for r in rows] == ORDER
        assert [r[1] for r in rows] == ["interrupted", "stopped", "failed", "finished"]
        assert rows[3][2:6] == ["100.0%", "21s", "—", "—"]  # recorded before verdicts: none
        assert rows[3][6] == "config/demo.yaml"
        # the cursor stays on its run when the list changes under it
        await pilot.press("down", "down")
        assert screen.selected_run_id() == FAILED
        shutil.copytree(runs / STOPPED, runs / "20990101-000000-demo-f00d")
        screen.refresh_now()
        await until(pilot, lambda: screen.polls_rendered >= 2)
        assert table.row_count == 5 and screen.selected_run_id() == FAILED
        assert table.cursor_row == 3


async def test_empty_runs_folder_says_how_to_start(tmp_path: Path):
    app = jobs_app(RunsWatcher(tmp_path / "none"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.screen.polls_rendered)
        assert "Press n" in static_text(app.screen.query_one("#jobs-empty", Static))
        await pilot.press("s")  # nothing selected: a warning, no crash
        await pilot.press("o")
        assert isinstance(app.screen, JobsScreen)


async def test_stop_and_resume_call_the_model(runs: Path):
    watcher = FakeWatcher(runs)
    app = jobs_app(watcher)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.screen.polls_rendered)
        await pilot.press("s")
        await until(pilot, lambda: watcher.calls)
        assert watcher.calls == [("stop", INTERRUPTED)]
        await pilot.press("down", "r")
        await until(pilot, lambda: len(watcher.calls) == 2)
        assert watcher.calls[1] == ("resume", STOPPED)
        await pilot.press("down", "down", "r")  # finished: the refusal is shown, not raised
        await until(pilot, lambda: len(watcher.calls) == 3)
        assert watcher.calls[2] == ("resume", FINISHED)
        assert isinstance(app.screen, JobsScreen)


async def test_log_key_shows_the_log_tail(runs: Path):
    app = jobs_app(RunsWatcher(runs))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.screen.polls_rendered)
        await pilot.press("down", "down", "l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen))
        log = app.screen.query_one(Log)
        await until(pilot, lambda: log.line_count > 1)
        assert any("injected fault" in line for line in log.lines)
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)


async def test_open_uses_the_app_hook_when_there_is_one(runs: Path):
    app = jobs_app(RunsWatcher(runs), app_class=HookApp)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.screen.polls_rendered)
        await pilot.press("down", "o")
        await pilot.press("down", "enter")
        assert app.opened == [STOPPED, FAILED]
        assert isinstance(app.screen, JobsScreen)


# ---------------------------------------------------------------------------- launch form
def screen_text(app) -> str:
    """What the terminal shows now, as plain text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


def footer_text(app) -> str:
    """The bottom line of the terminal (the footer of the screen on top)."""
    return screen_text(app).splitlines()[-1]


def test_the_configs_to_choose_from_put_the_panels_own_first_and_skip_hardware(tmp_path: Path):
    folder = tmp_path / "config"
    folder.mkdir()
    for name in ("b.yaml", "a.yaml", "hardware.yaml", "notes.txt", "own.yaml"):
        (folder / name).write_text("{}\n")
    assert config_choices(folder / "own.yaml", folder) == [
        str(folder / "own.yaml"),
        str(folder / "a.yaml"),
        str(folder / "b.yaml"),
    ]
    # the repo's own config/ (this test runs in the repo): hardware.yaml is not a choice
    assert config_choices("config/demo.yaml") == [
        "config/demo.yaml",
        "config/training_config_v8.yaml",
    ]


async def test_new_job_form_shows_the_plan_then_escape_closes(runs: Path):
    app = jobs_app(RunsWatcher(runs))
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.screen.polls_rendered)
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, LaunchScreen)
        picker = form.query_one("#config", ConfigPicker)
        assert picker.value == "config/demo.yaml" and picker.highlighted == 0
        assert picker.choices == ["config/demo.yaml", "config/training_config_v8.yaml"]
        await until(pilot, lambda: form.plans_shown)
        assert form.plan_text.startswith("Hardware plan: profile 'laptop' for ensemble 2, ppo")
        assert "n_envs" in static_text(form.query_one("#plan", Static))
        assert form.query_one("#ensemble", Input).placeholder == "2 (config)"
        # The form's own keys in its footer, not the jobs list's.
        footer = footer_text(app)
        assert "Launch" in footer and "Move" in footer and "Cancel" in footer
        assert "New job" not in footer and "Stop" not in footer
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)


@pytest.mark.parametrize(
    ("host", "projection"),
    [
        # the recorded finished run (its run.json says host "vm"): 4 x 4,096 timesteps in 6.85 s
        (
            "vm",
            "Projected wall time: 7s of training at 2,392 timesteps/s per unit (measured in "
            "20261127-214826-demo-36cd, 1 at a time)",
        ),
        (
            "elsewhere",
            "Projected wall time: no measured rate yet (no finished ppo run of config/demo.yaml "
            "on this machine)",
        ),
    ],
)
async def test_the_form_shows_the_units_and_the_wall_time_from_a_measured_rate(
    runs: Path, host: str, projection: str
):
    app = ScreenApp(lambda: LaunchScreen(RunsWatcher(runs), machine=MACHINE, host=host))
    async with app.run_test(size=(80, 24)) as pilot:
        form = app.screen
        await until(pilot, lambda: form.plans_shown)
        assert form.units_text == (
            "Units: 2 folds x 2 members = 4 units of 4,096 timesteps, 1 at a time"
        )
        assert form.projection_text == projection


async def test_form_fields_change_the_plan_and_bad_values_show_one_line(runs: Path):
    app = ScreenApp(lambda: LaunchScreen(RunsWatcher(runs), machine=MACHINE, debounce_s=0.01))
    async with app.run_test(size=(80, 24)) as pilot:
        form = app.screen
        await until(pilot, lambda: form.plans_shown)
        form.query_one("#ensemble", Input).value = "5"
        await until(pilot, lambda: "ensemble 5" in form.plan_text)
        assert "2 folds x 5 members = 10 units" in form.units_text
        form.query_one("#profile").value = "auto"
        await until(pilot, lambda: "profile 'auto'" in form.plan_text)
        shown = form.plans_shown
        picker = form.query_one("#config", ConfigPicker)
        picker.value = "config/nope.yaml"  # a path the list lacks: added first, chosen
        assert picker.choices[0] == "config/nope.yaml" and picker.highlighted == 0
        await until(pilot, lambda: form.plans_shown > shown)
        assert form.error == "config/nope.yaml: no such config file"
        error = form.query_one("#launch-error", Static)
        assert error.region.height == 1 and "no such config file" in static_text(error)
        picker.value = "config/demo.yaml"
        # A clean clone has no data/demo yet: the form then warns, it does not fail.
        await until(
            pilot, lambda: form.error == "" or form.error.startswith("no dataset at data/demo")
        )
        form.query_one("#ensemble", Input).value = "0"
        await until(pilot, lambda: form.error)
        assert form.error == "ensemble size: 0 members; need at least 1"
        await pilot.press("ctrl+l")  # refused before anything starts
        assert isinstance(app.screen, LaunchScreen) and not form.launching
        picker.value = "pyproject.toml"  # a file, not a config
        form.query_one("#ensemble", Input).value = ""
        await until(pilot, lambda: "pyproject.toml" in form.error)
        assert "\n" not in form.error
        await pilot.press("escape")
        assert not isinstance(app.screen, LaunchScreen)


async def open_form(pilot) -> tuple[JobsScreen, LaunchScreen]:
    """The jobs list, then the new-job form on it once its plan is shown."""
    jobs = pilot.app.screen
    await until(pilot, lambda: jobs.polls_rendered)
    await pilot.press("n")
    form = pilot.app.screen
    await until(pilot, lambda: form.plans_shown)
    return jobs, form


async def test_launch_dismisses_with_the_run_id_and_the_table_shows_it(runs: Path):
    watcher = FakeWatcher(runs)
    app = jobs_app(watcher)
    async with app.run_test(size=(100, 40)) as pilot:
        jobs, form = await open_form(pilot)
        form.query_one("#ensemble", Input).value = "3"
        await pilot.press("ctrl+l")
        await until(pilot, lambda: app.screen is jobs)
        assert watcher.calls == [("launch", ("config/demo.yaml", None, 3, None))]
        await until(pilot, lambda: "20990101-000000-demo-beef" in jobs._keys)
        assert jobs.selected_run_id() == "20990101-000000-demo-beef"


async def test_pick_a_config_from_the_list_and_launch_it_with_enter(runs: Path):
    watcher = FakeWatcher(runs)
    app = jobs_app(watcher)
    async with app.run_test(size=(100, 40)) as pilot:
        jobs, form = await open_form(pilot)
        assert form.focused is form.query_one("#config", ConfigPicker)
        await pilot.press("down")  # the next config of config/
        assert form.query_one("#config", ConfigPicker).value == "config/training_config_v8.yaml"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is jobs)
        assert watcher.calls == [("launch", ("config/training_config_v8.yaml", None, None, None))]
        await until(pilot, lambda: "20990101-000000-demo-beef" in jobs._keys)


async def test_enter_in_a_field_launches_and_tab_moves_between_fields(runs: Path):
    watcher = FakeWatcher(runs)
    app = jobs_app(watcher)
    async with app.run_test(size=(100, 40)) as pilot:
        jobs, form = await open_form(pilot)
        await pilot.press("tab", "tab")  # config list -> hardware -> ensemble size
        assert form.focused is form.query_one("#ensemble", Input)
        await pilot.press("shift+tab")
        assert form.focused is form.query_one("#profile")
        await pilot.press("tab", "4", "enter")
        await until(pilot, lambda: app.screen is jobs)
        assert watcher.calls == [("launch", ("config/demo.yaml", None, 4, None))]


# ---------------------------------------------------------------------------- run screen
async def test_enter_opens_the_run_screen_with_monte_carlo_numbers(runs: Path):
    app = jobs_app(RunsWatcher(runs))
    async with app.run_test(size=(120, 50)) as pilot:
        await until(pilot, lambda: app.screen.polls_rendered)
        await pilot.press("down", "down", "down", "enter")
        run = app.screen
        assert isinstance(run, RunScreen) and run.run_id == FINISHED
        await until(pilot, lambda: run.polls_rendered)
        stats = static_text(run.query_one("#mc-stats", Static))
        assert "loss probability" in stats and "44.75%" in stats and "-11.88%" in stats
        assert run.query_one("#histogram", Histogram).has_data
        assert run.query_one("#members", DataTable).row_count == 4
        assert run.query_one("#folds", DataTable).row_count == 4  # ensemble + buy and hold
        assert run.current_scope() == "pooled"
        await pilot.press("m")
        assert run.current_scope() == "fold_01"
        assert "61.0" not in static_text(run.query_one("#mc-stats", Static))
        assert "28.50%" in static_text(run.query_one("#mc-stats", Static))
        await pilot.press("m", "m")
        assert run.current_scope() == "pooled"
        await pilot.press("escape")
        assert isinstance(app.screen, JobsScreen)


async def test_run_screen_keys_call_the_model(runs: Path):
    watcher = FakeWatcher(runs)
    app = ScreenApp(lambda: RunScreen(watcher, STOPPED, SLOW))
    async with app.run_test(size=(80, 24)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.polls_rendered)
        assert run.current_scope() == "fold_00"  # not pooled yet: the latest fold
        await pilot.press("r")
        await until(pilot, lambda: watcher.calls)
        await pilot.press("s")
        await until(pilot, lambda: len(watcher.calls) == 2)
        assert watcher.calls == [("resume", STOPPED), ("stop", STOPPED)]
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen))
        log = app.screen.query_one(Log)
        await until(pilot, lambda: log.line_count > 1)
        assert "stopped; `ploutos resume" in log.lines[-1]


async def test_run_screen_follows_a_growing_run(tmp_path: Path):
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES / FINISHED, root / FINISHED)
    events = (root / FINISHED / "events.jsonl").read_text().splitlines(keepends=True)
    (root / FINISHED / "events.jsonl").write_text("".join(events[:5]))
    app = ScreenApp(lambda: RunScreen(RunsWatcher(root), FINISHED, 0.05))
    async with app.run_test(size=(80, 24)) as pilot:
        run = app.screen
        await until(pilot, lambda: run.snapshot is not None)
        assert run.snapshot.progress == pytest.approx(0.25)
        assert run.query_one("#histogram", Histogram).has_data is False
        with open(root / FINISHED / "events.jsonl", "a") as fh:
            fh.writelines(events[5:])
        await until(pilot, lambda: run.snapshot.progress == 1.0)
        await until(pilot, lambda: run.query_one("#histogram", Histogram).has_data)


# ---------------------------------------------------------------------------- snapshots
def fixtures_watcher() -> RunsWatcher:
    return RunsWatcher(FIXTURES_REL, clock=lambda: 0.0)


def settle(condition: Callable[[Any], Any]):
    async def run_before(pilot) -> None:
        await until(pilot, lambda: condition(pilot.app.screen))
        await pilot.app.workers.wait_for_complete()
        # DataTable sizes its columns when idle, and a loaded machine can take several frames to
        # get there: wait until the screen is the same on three consecutive looks.
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # a blinking cursor is on or off depending on timing
        seen: list[str] = []
        for _ in range(100):
            await pilot.pause(0.1)
            seen = [*seen[-2:], pilot.app.export_screenshot()]
            if len(seen) == 3 and len(set(seen)) == 1:
                return

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_snapshot_jobs_screen(snap_compare, size):
    app = jobs_app(fixtures_watcher())
    assert snap_compare(app, terminal_size=size, run_before=settle(lambda s: s.polls_rendered))


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_snapshot_run_screen(snap_compare, size):
    app = ScreenApp(lambda: RunScreen(fixtures_watcher(), FAILED, SLOW))
    assert snap_compare(app, terminal_size=size, run_before=settle(lambda s: s.polls_rendered))


def test_snapshot_launch_form(snap_compare, monkeypatch: pytest.MonkeyPatch):
    # the observation size needs the demo dataset, which a fresh checkout does not have
    monkeypatch.setattr(LaunchScreen, "_observation_size", lambda self, cfg: 186)
    app = ScreenApp(lambda: LaunchScreen(fixtures_watcher(), machine=MACHINE, host="vm"))
    assert snap_compare(
        app, terminal_size=(80, 24), run_before=settle(lambda s: getattr(s, "plans_shown", 0))
    )
