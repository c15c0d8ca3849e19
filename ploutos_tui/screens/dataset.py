"""The dataset screen: what the manifest says, what `ploutos dataset check` finds, and builds.

Reading, checking and launching all run in worker threads; the screen only draws their results.
``a`` opens a form listing the training configs of ``config/``: the chosen one is built into its
``dataset_path`` (or a folder typed in the form) by ``ploutos dataset build --detach``, a process
of its own that outlives the panel. The screen tails the build's status file
(``<dataset>/.build/status.json``, docs/dataset-build.md): chunks per ticker, the one downloading,
seconds per chunk and an ETA. Started again, the panel finds a running build (it re-attaches) or
an interrupted one (``r`` resumes it after its last finished chunk). ``b`` writes the synthetic
demo dataset inside the panel (seconds, no network).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    OptionList,
    ProgressBar,
    Static,
)
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from ploutos_tui.model.builds import (
    BuildRequest,
    ConfigChoice,
    build_line,
    find_build,
    keys_line,
    list_configs,
    validate_request,
)
from ploutos_tui.screens.modal import PanelModal


@dataclass(frozen=True)
class DatasetSummary:
    """The manifest and check report of one dataset folder, ready to draw."""

    root: Path
    exists: bool
    header: str
    rows: tuple[tuple[str, ...], ...]
    verdict: str
    error: str | None = None


def summarize_dataset(root: Path, check: bool = True) -> DatasetSummary:
    """Manifest + check of ``root`` (blocking: call it from a worker thread)."""
    from engine.api import Dataset, manifest_path
    from engine.errors import PloutosError

    if not manifest_path(root).exists():
        return DatasetSummary(
            root,
            False,
            f"{root}: no dataset yet (a builds one from a config, b writes the demo dataset)",
            (),
            "",
        )
    try:
        manifest = Dataset(root).manifest
        report = None
        if check:
            from engine.api import check_dataset

            report = check_dataset(root)
    except PloutosError as err:
        return DatasetSummary(root, True, str(root), (), "", error=str(err))
    m = manifest
    header = (
        f"{root}  source {m.source}"
        + (f", feed {m.feed}" if m.feed else "")
        + (f", adjustment {m.adjustment}" if m.adjustment else "")
        + f", {m.timeframe} bars, macro {m.macro_interval} from {m.macro_source or '-'}"
        + f", updated {m.updated_utc:%Y-%m-%d %H:%M} UTC"
    )
    checked = {(s.symbol, s.kind): s for s in report.series} if report else {}
    rows = []
    for kind, entries in (("bars", m.tickers), ("macro", m.macro)):
        for symbol, entry in entries.items():
            s = checked.get((symbol, kind))
            gaps = "-"
            problems = "-"
            if s is not None:
                expected = s.counts.get("expected_regular")
                missing = s.counts.get("missing_regular")
                if expected:
                    gaps = f"{missing:,} ({100 * missing / expected:.1f} %)"
                bad = [f for f in s.findings if f.severity in ("error", "warning")]
                problems = "; ".join(f.message for f in bad)[:80] if bad else "ok"
            rows.append(
                (
                    symbol,
                    kind,
                    f"{entry.rows:,}",
                    f"{entry.first:%Y-%m-%d}" if entry.first else "-",
                    f"{entry.last:%Y-%m-%d}" if entry.last else "-",
                    gaps,
                    problems,
                )
            )
    if report is None:
        verdict = "not checked"
    elif report.ok:
        verdict = f"check: clean ({report.count('warning')} warnings, {report.count('info')} notes)"
    else:
        verdict = f"check: {report.count('error')} errors (see `ploutos dataset check {root}`)"
    return DatasetSummary(root, True, header, tuple(rows), verdict)


def failure_line(action: str, err: BaseException, then: str) -> str:
    """One line for an error a dataset worker did not expect (not a PloutosError): what failed,
    why (``OSError``: its message and file, e.g. a full disk), and ``then``, what to do next.

    The Alpaca keys of the environment never appear in it, whatever the exception says.
    """
    if isinstance(err, OSError) and err.strerror:
        why = err.strerror + (f" ({err.filename})" if err.filename else "")
    else:
        why = f"{type(err).__name__}: {err}"
    text = " ".join(f"error: {action} failed: {why}; {then}".split())
    from engine.api import ALPACA_ENV_KEY_ID, ALPACA_ENV_SECRET_KEY

    for name in (ALPACA_ENV_KEY_ID, ALPACA_ENV_SECRET_KEY):
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


FORM_FIELDS: tuple[tuple[str, str, str], ...] = (
    # (id, label, placeholder)
    ("out", "out folder", "dataset folder, e.g. data/dataset_v8"),
    ("tickers", "tickers", "AAPL,MSFT,NVDA"),
    ("start", "start", "YYYY-MM-DD (UTC)"),
    ("end", "end", "YYYY-MM-DD, exclusive; empty: now"),
    ("feed", "feed", "iex (free keys) or sip (paid plan)"),
    ("adjustment", "adjustment", "raw, split, dividend or all"),
    ("macro", "macro", "daily Yahoo symbols, e.g. ^VIX,^TNX; empty: none"),
)


class FormInput(Input):
    """A one-line field whose Enter submits the form, and says so in the footer."""

    BINDINGS = [Binding("enter", "submit", "Build")]


class ConfigList(OptionList):
    """The configs to build from: up/down choose, Enter takes the highlighted one."""

    BINDINGS = [Binding("enter", "select", "Choose config")]


class BuildFormScreen(PanelModal[BuildRequest | None]):
    """Choose a config, check or change what it builds, press Enter: the request, or None.

    The form validates in a worker thread (it reads the out folder) and stays open with one line
    saying what to fix when something is wrong (a missing key, another dataset in the folder).
    """

    BINDINGS = [
        Binding("enter", "submit", "Build"),
        Binding("escape", "cancel", "Cancel"),
        Binding("tab", "app.focus_next", "Next field"),
        Binding("shift+tab", "app.focus_previous", "Previous field"),
    ]
    DEFAULT_CSS = """
    BuildFormScreen { align: center middle; }
    #build-form { width: 100%; max-width: 110; height: auto; max-height: 100%;
                  border: round $accent; padding: 0 1; background: $surface; }
    #build-form-title { text-style: bold; }
    #build-configs { height: auto; max-height: 5; border: none; padding: 0; margin: 0 0 0 0; }
    #build-config-note { color: $text-muted; }
    .build-row { height: 1; }
    .build-row Label { width: 12; }
    .build-row Input { width: 1fr; }
    #build-keys { color: $text-muted; }
    #build-problem { color: $error; }
    #build-buttons { height: 1; align-horizontal: right; }
    #build-buttons Button { margin-left: 2; }
    """

    def __init__(
        self,
        configs: list[ConfigChoice],
        selected: Path | None = None,
        keys: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.configs = list(configs)
        self.selected = selected
        self.keys = keys
        self.env = env
        self.choice: ConfigChoice | None = None
        self.validating = False

    def compose(self) -> ComposeResult:
        with Vertical(id="build-form"):
            yield Label(
                "Build a dataset from a training config (enter builds, esc cancels)",
                id="build-form-title",
            )
            options = [Option(c.name, id=str(i)) for i, c in enumerate(self.configs)]
            yield ConfigList(*options, id="build-configs")
            yield Static("", id="build-config-note")
            for field_id, label, placeholder in FORM_FIELDS:
                with Horizontal(classes="build-row"):
                    yield Label(label)
                    yield FormInput(placeholder=placeholder, id=field_id, compact=True)
            yield Static(self.keys, id="build-keys")
            yield Static("", id="build-problem")
            with Horizontal(id="build-buttons"):
                yield Button("Build", variant="primary", id="build", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        options = self.query_one("#build-configs", OptionList)
        if not self.configs:
            self._problem("no training config found in config/: add one (see config/demo.yaml)")
            return
        index = 0
        if self.selected is not None:
            wanted = _resolved(self.selected)
            for i, choice in enumerate(self.configs):
                if _resolved(choice.path) == wanted:
                    index = i
        options.highlighted = index
        self._fill(self.configs[index])
        options.focus()

    def _fill(self, choice: ConfigChoice) -> None:
        self.choice = choice
        values = {
            "out": choice.dataset_path,
            "tickers": ",".join(choice.tickers),
            "start": choice.start,
            "end": choice.end,
            "feed": choice.feed,
            "adjustment": choice.adjustment,
            "macro": ",".join(choice.macro),
        }
        for field_id, value in values.items():
            self.query_one(f"#{field_id}", Input).value = value
        self.query_one("#build-config-note", Static).update(choice.describe())
        self._problem("")

    def _problem(self, text: str) -> None:
        self.query_one("#build-problem", Static).update(text)

    @on(OptionList.OptionHighlighted, "#build-configs")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_index < len(self.configs):
            choice = self.configs[event.option_index]
            if choice is not self.choice:
                self._fill(choice)

    @on(OptionList.OptionSelected, "#build-configs")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_index < len(self.configs):
            if self.configs[event.option_index] is not self.choice:
                self._fill(self.configs[event.option_index])
            self.query_one("#out", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#build")
    def action_submit(self) -> None:
        if self.validating or self.dismissed:
            return
        self.validating = True
        self._problem("checking ...")
        fields = {fid: self.query_one(f"#{fid}", Input).value for fid, _, _ in FORM_FIELDS}
        self._validate(self.choice, fields)

    @work(thread=True, exclusive=True, group="build-form", exit_on_error=False)
    def _validate(self, choice: ConfigChoice | None, fields: dict[str, str]) -> None:
        try:
            result: BuildRequest | str = validate_request(choice, fields, self.env)
        except Exception as err:  # a folder that cannot be read: a line in the form
            result = failure_line("checking the form", err, "fix it, then press enter")
        self.app.call_from_thread(self._validated, result)

    def _validated(self, result: BuildRequest | str) -> None:
        self.validating = False
        if isinstance(result, BuildRequest):
            self.dismiss(result)
        else:
            self._problem(result)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.validating = False
            self._problem(failure_line("checking the form", event.worker.error, "try again"))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


# The name the rest of the panel (and its tests) knew the form by.
AlpacaBuildScreen = BuildFormScreen


def _resolved(path: Path | str) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return str(path)


def _default_read_configs(config_dir: Path, also: tuple[Path, ...]) -> list[ConfigChoice]:
    return list_configs(config_dir, also)


def _default_recent() -> list[Path]:
    from engine.api import recent_builds

    return recent_builds()


def _default_read_status(root: Path) -> Any:
    from engine.api import read_build_status

    return read_build_status(root)


class DatasetScreen(Screen[None]):
    """Manifest, check results, and the builds of the config's dataset folder (or any other)."""

    BINDINGS = [
        Binding("a", "build_config", "Build…"),
        Binding("b", "build_demo", "Demo"),
        Binding("r", "resume_build", "Resume"),
        Binding("x", "stop_build", "Stop"),
        Binding("c", "refresh", "Re-check"),
    ]
    DEFAULT_CSS = """
    #dataset-header { height: auto; padding: 0 1; }
    #dataset-verdict { height: auto; padding: 0 1; color: $text-muted; }
    #dataset-keys { height: auto; padding: 0 1; color: $text-muted; }
    #dataset-build { height: auto; padding: 0 1; }
    #dataset-progress { height: auto; padding: 0 1; }
    #dataset-message { height: auto; padding: 0 1; }
    #dataset-build-table { height: auto; max-height: 45%; }
    #dataset-table { height: 1fr; }
    """
    POLL_S = 1.0  # how often the build's status file is read (a worker thread; tests lower it)

    def __init__(
        self,
        root: Path,
        summarize: Callable[[Path], DatasetSummary] | None = None,
        *,
        config_dir: Path | None = None,
        read_configs: Callable[[], list[ConfigChoice]] | None = None,
        read_status: Callable[[Path], Any] | None = None,
        recent: Callable[[], list[Path]] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        # Injectable so snapshot tests can draw a recorded summary, configs and build.
        self.summarize = summarize or summarize_dataset
        self._config_dir = config_dir
        self._read_configs = read_configs
        self.read_status = read_status or _default_read_status
        self.recent = recent or _default_recent
        self.env = env
        self.summary: DatasetSummary | None = None
        self.configs: list[ConfigChoice] | None = None
        self._form_asked = False  # `a` pressed before the configs were read
        self.build: Any | None = None  # the BuildStatus shown
        self.build_root: Path | None = None
        self.building = False  # the demo writer at work inside the panel
        self.launching = False
        self.procs: list[Any] = []  # detached builds this panel started (reaped when they end)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("reading ...", id="dataset-header")
        yield Static("", id="dataset-verdict")
        yield Static(keys_line(self._env()), id="dataset-keys")
        yield Static("", id="dataset-build")
        yield ProgressBar(total=None, show_eta=False, id="dataset-progress")
        yield Static("", id="dataset-message")
        builds: DataTable[str] = DataTable(id="dataset-build-table", cursor_type="none")
        builds.add_columns("build: ticker", "kind", "chunks", "rows", "state")
        yield builds
        table: DataTable[str] = DataTable(id="dataset-table", cursor_type="row")
        table.add_columns("symbol", "kind", "rows", "first", "last", "missing regular", "check")
        yield table
        yield Footer()

    # -- where things are ---------------------------------------------------------------------
    def _env(self) -> Mapping[str, str]:
        return os.environ if self.env is None else self.env

    @property
    def app_config(self) -> Path | None:
        config = getattr(self.app, "config", None)
        return Path(config) if isinstance(config, (str, Path)) else None

    @property
    def config_dir(self) -> Path:
        if self._config_dir is not None:
            return self._config_dir
        config = self.app_config
        return config.parent if config is not None else Path("config")

    # -- start-up: the manifest, the configs and any build already on disk ----------------------
    def on_mount(self) -> None:
        self.query_one("#dataset-progress").display = False
        self.query_one("#dataset-build-table").display = False
        self.query_one("#dataset-message").display = False
        self.query_one("#dataset-build").display = False
        self.action_refresh()
        self._scan()
        self.set_interval(self.POLL_S, self._tick, name="build-poll")

    @work(thread=True, exclusive=True, group="dataset-scan", exit_on_error=False)
    def _scan(self) -> None:
        config = self.app_config
        if self._read_configs is not None:
            configs = self._read_configs()
        else:
            configs = _default_read_configs(self.config_dir, (config,) if config else ())
        folders = [self.root]
        folders += [Path(c.dataset_path) for c in configs if c.dataset_path]
        # A damaged list of remembered builds loses only those: the others are still looked at.
        with contextlib.suppress(Exception):
            folders += list(self.recent())
        status = find_build(folders, self.read_status)
        self.app.call_from_thread(self._scanned, configs, status)

    def _scanned(self, configs: list[ConfigChoice], status: Any) -> None:
        self.configs = configs
        if status is not None and self.build_root is None:
            self.build_root = Path(status.root)
            self._show_build(status)
        if self._form_asked and self.is_current:
            self._form_asked = False
            self.action_build_config()

    # -- the manifest and check -----------------------------------------------------------------
    def action_refresh(self) -> None:
        self.query_one("#dataset-verdict", Static).update("checking ...")
        self._load()

    @work(thread=True, exclusive=True, group="dataset-read", exit_on_error=False)
    def _load(self) -> None:
        try:
            summary = self.summarize(self.root)
        except Exception as err:  # a file pandas or the check cannot take: say so, stay up
            summary = self._unreadable(err)
        self.app.call_from_thread(self._show, summary)

    def _unreadable(self, err: BaseException) -> DatasetSummary:
        return DatasetSummary(
            self.root,
            True,
            str(self.root),
            (),
            "",
            error=failure_line(
                f"reading {self.root}", err, "fix or rebuild the dataset, then press c"
            ),
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The last line of defence: a worker that raised anyway (even while reporting) ends as
        a message on screen, never as the panel's exit."""
        if event.state != WorkerState.ERROR or event.worker.error is None:
            return
        err = event.worker.error
        group = event.worker.group
        if group == "dataset-read":
            self._show(self._unreadable(err))
        elif group == "dataset-build":
            self._build_done(failure_line(f"the build into {self.root}", err, "try again"))
        elif group == "dataset-launch":
            self.launching = False
            self._message(failure_line("starting the build", err, "fix it, then press a again"))
        elif group in ("dataset-scan", "build-status"):
            self._message(failure_line("reading the build status", err, "press c to retry"))
            if group == "dataset-scan" and self.configs is None:
                self.configs = []

    def _show(self, summary: DatasetSummary) -> None:
        self.summary = summary
        if summary.error and summary.error.startswith("error:"):
            self.notify(summary.error, severity="error", timeout=10)
        self.query_one("#dataset-header", Static).update(summary.header)
        self.query_one("#dataset-verdict", Static).update(summary.error or summary.verdict)
        table = self.query_one("#dataset-table", DataTable)
        table.clear()
        for row in summary.rows:
            table.add_row(*row)

    def _message(self, text: str) -> None:
        message = self.query_one("#dataset-message", Static)
        message.update(text)
        message.display = bool(text)
        if text.startswith("error:"):
            self.notify(text, severity="error", timeout=10)

    # -- the demo, written inside the panel -------------------------------------------------------
    def action_build_demo(self) -> None:
        self._start_demo(self.root)

    def _start_demo(self, root: Path) -> None:
        if self.building:
            return
        self.building = True
        self.root = root
        self._message(f"writing the demo dataset into {root} ...")
        self._build_demo(root)

    @work(thread=True, exclusive=True, group="dataset-build", exit_on_error=False)
    def _build_demo(self, root: Path) -> None:
        from engine.api import write_demo
        from engine.errors import PloutosError

        try:
            manifest = write_demo(root)
            text = (
                f"demo dataset ready: {len(manifest.tickers)} tickers, {len(manifest.macro)} macro"
            )
        except PloutosError as err:
            text = f"error: {err}"
        except Exception as err:  # e.g. a full disk: a message, not the panel's exit
            text = failure_line(
                f"writing the demo dataset into {root}", err, "fix it, then press b again"
            )
        self.app.call_from_thread(self._build_done, text)

    def _build_done(self, text: str) -> None:
        self.building = False
        self._message(text)
        self.action_refresh()

    # -- detached builds ------------------------------------------------------------------------
    def _selected_config(self) -> Path | None:
        """The panel's own config, else the config whose dataset is the one shown."""
        if self.app_config is not None:
            return self.app_config
        for choice in self.configs or []:
            if choice.dataset_path and _resolved(choice.dataset_path) == _resolved(self.root):
                return choice.path
        return None

    def action_build_config(self) -> None:
        if self.configs is None:  # the form opens as soon as they are read
            self._form_asked = True
            self._message(f"reading the configs in {self.config_dir} ...")
            return
        if self.launching:
            return
        form = BuildFormScreen(
            self.configs, self._selected_config(), keys_line(self._env()), env=self.env
        )
        self.app.push_screen(form, self._form_done)

    def _form_done(self, request: BuildRequest | None) -> None:
        if not isinstance(request, BuildRequest):
            return
        if request.kind == "demo":
            self._start_demo(request.out)
            return
        if self.build is not None and self.build.alive:
            same = _resolved(self.build.root) == _resolved(request.out)
            if same:
                self._message(f"a build into {request.out} is already running")
                return
        self.launching = True
        self._message(f"starting the build into {request.out} ...")
        self._launch(request)

    @work(thread=True, exclusive=True, group="dataset-launch", exit_on_error=False)
    def _launch(self, request: BuildRequest) -> None:
        from engine.api import start_build_detached
        from engine.errors import PloutosError

        try:
            proc = start_build_detached(list(request.args), request.out)
        except PloutosError as err:
            self.app.call_from_thread(self._launched, request.out, None, f"error: {err}")
            return
        self.app.call_from_thread(self._launched, request.out, proc, None)

    def _launched(self, out: Path, proc: Any, error: str | None) -> None:
        self.launching = False
        if error is not None or proc is None:
            self._message(error or "error: the build did not start")
            return
        self.procs.append(proc)
        self.root = out
        self.build_root = out
        self._message(
            f"build started (pid {proc.pid}); it keeps running when the panel quits; "
            f"log {out / '.build' / 'build.log'}"
        )
        self.action_refresh()
        self._poll(out)

    def action_resume_build(self) -> None:
        status = self.build
        if status is None or not status.resumable:
            state = "no build" if status is None else f"the build is {status.state}"
            self._message(f"nothing to resume ({state}); a starts a build from a config")
            return
        if self.launching:
            return
        self.launching = True
        self._message(f"resuming the build into {status.root} ...")
        self._resume(Path(status.root))

    @work(thread=True, exclusive=True, group="dataset-launch", exit_on_error=False)
    def _resume(self, root: Path) -> None:
        from engine.api import resume_build
        from engine.errors import PloutosError

        try:
            proc = resume_build(root)
        except PloutosError as err:
            self.app.call_from_thread(self._launched, root, None, f"error: {err}")
            return
        self.app.call_from_thread(self._launched, root, proc, None)

    def action_stop_build(self) -> None:
        status = self.build
        if status is None or not status.alive:
            self._message("no build is running")
            return
        self._stop(Path(status.root))

    @work(thread=True, exclusive=True, group="dataset-launch", exit_on_error=False)
    def _stop(self, root: Path) -> None:
        from engine.api import stop_build
        from engine.errors import PloutosError

        try:
            pid = stop_build(root)
            text = f"asked the build (pid {pid}) to stop; r resumes it later"
        except PloutosError as err:
            text = f"error: {err}"
        self.app.call_from_thread(self._message, text)

    def _tick(self) -> None:
        self.procs = [p for p in self.procs if p.poll() is None]  # reap the ones that ended
        if self.build_root is not None:
            self._poll(self.build_root)

    @work(thread=True, exclusive=True, group="build-status", exit_on_error=False)
    def _poll(self, root: Path) -> None:
        status = self.read_status(root)
        self.app.call_from_thread(self._show_build, status)

    def _show_build(self, status: Any) -> None:
        if status is None:
            return
        if self.build_root is not None and _resolved(status.root) != _resolved(self.build_root):
            return  # a late answer about a folder no longer shown
        before = self.build
        self.build = status
        line = self.query_one("#dataset-build", Static)
        line.update(build_line(status))
        line.display = True
        bar = self.query_one("#dataset-progress", ProgressBar)
        if status.total:
            bar.update(total=status.total, progress=status.done)
            bar.display = True
        else:
            bar.display = status.alive
            bar.update(total=None)
        self._show_series(status)
        was_alive = before is not None and before.alive
        if was_alive and not status.alive:
            severity = "information" if status.state == "done" else "error"
            self.notify(build_line(status), severity=severity, timeout=10)
            if _resolved(status.root) == _resolved(self.root):
                self.action_refresh()

    def _show_series(self, status: Any) -> None:
        table = self.query_one("#dataset-build-table", DataTable)
        table.clear()
        current = status.current or {}
        for series in status.series:
            chunks, done = series.get("chunks"), series.get("done")
            if (
                status.alive
                and current.get("ticker") == series.get("ticker")
                and current.get("kind") == series.get("kind")
            ):
                state = f"downloading {str(current.get('start', ''))[:10]}"
            elif isinstance(chunks, int) and isinstance(done, int) and done >= chunks:
                state = "done"
            else:
                state = "waiting" if status.alive else "-"
            rows = series.get("rows")
            table.add_row(
                str(series.get("ticker", "?")),
                str(series.get("kind", "?")),
                f"{done}/{chunks}",
                f"{rows:,}" if isinstance(rows, int) else "-",
                state,
            )
        table.display = table.row_count > 0
