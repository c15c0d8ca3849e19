"""``ploutos-tui``: the keyboard-driven control panel over SSH.

The app is thin: it wires the screens (overview, the home; hardware, jobs, run, dataset) to
their data sources and owns the keys that move between them. Screens sample and read in worker
threads and only draw.
Training jobs are launched detached (their own session), so quitting the panel or losing SSH
never stops them; starting the panel again re-attaches to every run in the runs folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult
from textual.await_complete import AwaitComplete
from textual.binding import Binding
from textual.command import CommandPalette, Hit, Hits, Provider
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Button, Input, OptionList, Static

from engine.api import __version__
from ploutos_tui.screens.modal import PanelModal

# Written (UNIX time of the first frame that shows a hardware sample) when set: `ploutos bench
# tui` measures the time to the first full frame with it.
FIRST_FRAME_ENV = "PLOUTOS_TUI_FIRST_FRAME_FILE"

HELP_KEYS: tuple[tuple[str, str, str], ...] = (
    ("v", "anywhere", "overview (the home): machine, live runs and their units, alerts"),
    ("h", "anywhere", "hardware: per-core CPU, RAM, GPU, threads vs the machine's limits"),
    ("j", "anywhere", "jobs: every run in the runs folder"),
    ("d", "anywhere", "dataset: manifest, check, builds"),
    (
        "↑ ↓ / s / t",
        "hardware",
        "move over the training processes / cycle their sort column / SIGTERM the unit under "
        "the cursor (asks first; the unit checkpoints and is recorded stopped)",
    ),
    ("n", "jobs", "new job: config, profile, ensemble, algorithm; plan shown first"),
    (
        "enter / ctrl+l",
        "new-job form",
        "launch the job (up/down pick the config; tab / shift+tab move between fields, esc "
        "cancels)",
    ),
    (
        "space / c",
        "jobs",
        "mark a run for comparison / compare the marked runs (2 or more): config differences, "
        "returns per fold vs buy and hold, Monte Carlo vs the null policies, verdicts",
    ),
    ("escape", "compare", "back to the jobs list (marks kept)"),
    ("enter / o", "jobs", "open the selected run: members, folds, Monte Carlo"),
    ("s / r", "jobs, run", "stop (members checkpoint) / resume the run"),
    ("l", "jobs, run", "the run's log tail"),
    ("m", "run", "next Monte Carlo scope (pooled, each fold)"),
    ("?", "run", "what each statistic of the verdict means (timing p, PBO, deflated Sharpe...)"),
    (
        "a / b / r / x / c",
        "dataset",
        "build a config (form: tab moves, enter builds, esc cancels) / the demo / resume / stop "
        "the build / re-check",
    ),
    ("ctrl+p", "anywhere", "command palette"),
    ("?", "anywhere", "this help (escape closes it)"),
    ("q", "anywhere", "quit the panel"),
)


class HelpScreen(PanelModal[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help { width: 90%; max-width: 100; height: auto; max-height: 90%; border: round $accent;
            padding: 0 1; background: $surface; }
    #help-lead { padding: 0 0 1 0; }
    """

    def compose(self) -> ComposeResult:
        from rich.table import Table

        table = Table(box=None, show_header=True, header_style="bold", expand=True, padding=(0, 1))
        table.add_column("key", no_wrap=True, style="bold cyan")
        table.add_column("where", no_wrap=True)
        table.add_column("what", ratio=1)
        for key, where, what in HELP_KEYS:
            table.add_row(key, where, what)
        with VerticalScroll(id="help"):
            yield Static(
                "[b]Ploutos control panel[/b]: q quits the panel, jobs keep running; "
                "the next panel re-attaches to them.",
                id="help-lead",
            )
            yield Static(table)

    def action_dismiss(self) -> None:
        self.dismiss(None)


class PanelPalette(CommandPalette):
    """Textual's command palette, hardened against keys that arrive while it closes.

    Enter, Enter in one burst posts two selections; the palette handles the second after the
    first has already popped it, and that second dismiss pops the screen below (or raises
    ``ScreenStackError`` on the mode's last screen) and runs the command twice. Once the palette
    is no longer on top, it ignores selections and does not pop anything. Page keys pressed
    before its list is laid out do nothing instead of raising.
    """

    @on(Input.Submitted)
    @on(Button.Pressed)
    @on(OptionList.OptionSelected)
    def _ignore_once_closed(self, event: Input.Submitted) -> None:
        if not self.is_active:
            event.prevent_default()  # the palette's own handlers (base class) do not run
            event.stop()

    def dismiss(self, result: object = None) -> AwaitComplete:
        if not self.is_active:
            return AwaitComplete.nothing()
        return super().dismiss(result)

    async def _on_message(self, message: Message) -> None:
        try:
            await super()._on_message(message)
        except NoMatches:
            # Popped but not yet removed: a timer or key still queued for it looks up a result
            # list that is already gone. Nothing is left to update; only an open palette raises.
            if self.is_active:
                raise

    def _watch__list_visible(self) -> None:
        # A search that ends while the palette's widgets are not (or no longer) mounted, e.g.
        # ctrl+p, a page key and a letter in one burst: there is no list to show or hide yet.
        with contextlib.suppress(NoMatches):
            super()._watch__list_visible()

    def _action_command_list(self, action: str) -> None:
        # A page key before the result list is laid out raises KeyError inside OptionList
        # (Textual 8); there is nothing to move yet.
        with contextlib.suppress(KeyError):
            super()._action_command_list(action)


class PloutosCommands(Provider):
    """Command palette entries: the screens and the common actions."""

    def _commands(self) -> Iterable[tuple[str, object, str]]:
        app = self.app
        assert isinstance(app, PloutosApp)
        yield ("Show overview", partial(app.switch_mode, "overview"), "machine, runs, alerts")
        yield ("Show hardware", partial(app.switch_mode, "hardware"), "CPU, RAM, GPU, threads")
        yield ("Show jobs", app.action_show_jobs, "every run and its state")
        yield ("Show dataset", partial(app.switch_mode, "dataset"), "manifest, check, builds")
        yield ("New training job", app.action_new_job, "choose config, profile, ensemble")
        yield ("Help", app.action_help, "keys of every screen")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


def dataset_of(config: Path) -> Path:
    """The dataset folder a config trains on (the demo folder when the config is unreadable).

    Reads the one key with PyYAML instead of validating the config: validation imports pandas
    (about a second), which the first frame should not wait for.
    """
    import yaml

    try:
        value = yaml.safe_load(Path(config).read_text()).get("dataset_path")
    except (OSError, yaml.YAMLError, AttributeError):
        value = None
    return Path(value) if isinstance(value, str) and value else Path("data/demo")


class PloutosApp(App[None]):
    TITLE = "Ploutos"
    SUB_TITLE = f"control panel v{__version__}"
    COMMANDS = App.COMMANDS | {PloutosCommands}
    BINDINGS = [
        Binding("v", "switch_mode('overview')", "Overview"),
        Binding("h", "switch_mode('hardware')", "Hardware"),
        Binding("j", "show_jobs", "Jobs"),
        Binding("d", "switch_mode('dataset')", "Dataset"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit (jobs keep running)"),
    ]

    def __init__(
        self,
        *,
        config: Path = Path("config/demo.yaml"),
        runs_root: Path | None = None,
        dataset: Path | None = None,
        sampler: object | None = None,
        watcher: object | None = None,
        interval_s: float = 1.0,
        start_screen: str = "overview",
    ) -> None:
        super().__init__()
        from engine.api import default_runs_root
        from ploutos_tui.model.runs import RunsWatcher

        self.config = Path(config)
        self.runs_root = Path(runs_root) if runs_root else default_runs_root()
        self.dataset = Path(dataset) if dataset else dataset_of(self.config)
        self.watcher = watcher if watcher is not None else RunsWatcher(self.runs_root)
        if sampler is None:
            from ploutos_tui.model.sampling import HardwareSampler

            sampler = HardwareSampler(jobs=self.watcher.job_pids)
        self.sampler = sampler
        self.interval_s = interval_s
        self.start_screen = start_screen
        self._first_frame_file = os.environ.get(FIRST_FRAME_ENV)

    def on_mount(self) -> None:
        from ploutos_tui.screens.dataset import DatasetScreen
        from ploutos_tui.screens.hardware import HardwareScreen
        from ploutos_tui.screens.jobs import JobsScreen
        from ploutos_tui.screens.overview import OverviewScreen

        self.add_mode("overview", lambda: OverviewScreen(interval_s=self.interval_s))
        self.add_mode("hardware", lambda: HardwareScreen(self.sampler, interval_s=self.interval_s))
        self.add_mode(
            "jobs",
            lambda: JobsScreen(
                self.watcher, default_config=self.config, interval_s=self.interval_s
            ),
        )
        self.add_mode("dataset", lambda: DatasetScreen(self.dataset))
        self.switch_mode(self.start_screen)
        if self._first_frame_file:
            self.set_interval(0.05, self._watch_first_frame, name="first-frame")

    def _watch_first_frame(self) -> None:
        """Record the first frame that shows a real hardware sample (for `ploutos bench tui`)."""
        screen = self.screen
        if getattr(screen, "latest", None) is None or not self._first_frame_file:
            return
        path, self._first_frame_file = self._first_frame_file, None

        def written() -> None:
            Path(path).write_text(f"{time.time():.6f}\n")

        self.call_after_refresh(written)

    def open_run(self, run_id: str) -> None:
        from ploutos_tui.screens.run import RunScreen

        self.push_screen(RunScreen(self.watcher, run_id, interval_s=self.interval_s))

    def action_command_palette(self) -> None:
        if self.use_command_palette and not CommandPalette.is_open(self):
            self.push_screen(PanelPalette(id="--command-palette"))

    def search_themes(self) -> None:
        # The palette's "Change theme" entry opens a second palette: the hardened one too.
        from textual.theme import ThemeProvider

        self.push_screen(PanelPalette(providers=[ThemeProvider], placeholder="Search for themes…"))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_show_jobs(self) -> None:
        """The jobs list itself: a run opened from it (and its log or help) is closed; a form
        still at work (a launch being prepared) stays open on top of the list."""
        from ploutos_tui.screens.compare import CompareScreen
        from ploutos_tui.screens.run import LogScreen, RunHelpScreen, RunScreen

        self.switch_mode("jobs")
        while len(self.screen_stack) > 1 and isinstance(
            self.screen, (RunScreen, LogScreen, RunHelpScreen, CompareScreen)
        ):
            self.pop_screen()

    def action_new_job(self) -> None:
        from ploutos_tui.screens.jobs import JobsScreen

        self.switch_mode("jobs")

        def open_form() -> None:
            # Only from the jobs list itself: a form or a run already open on top stays as it is.
            if isinstance(self.screen, JobsScreen):
                self.screen.action_new_job()

        self.call_after_refresh(open_form)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ploutos-tui", description="Ploutos control panel: launch and watch training"
    )
    parser.add_argument(
        "--config", type=Path, default=Path("config/demo.yaml"), help="default config for new jobs"
    )
    parser.add_argument("--runs-dir", type=Path, help="runs folder ($PLOUTOS_RUNS_DIR or ./runs)")
    parser.add_argument("--dataset", type=Path, help="dataset folder (default: the config's)")
    parser.add_argument("--refresh", type=float, default=1.0, help="seconds between samples")
    parser.add_argument(
        "--screen", choices=["overview", "hardware", "jobs", "dataset"], default="overview"
    )
    parser.add_argument("--version", action="version", version=f"ploutos-tui {__version__}")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    PloutosApp(
        config=args.config,
        runs_root=args.runs_dir,
        dataset=args.dataset,
        interval_s=args.refresh,
        start_screen=args.screen,
    ).run()


if __name__ == "__main__":
    main()
