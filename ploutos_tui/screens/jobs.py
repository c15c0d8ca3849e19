"""Every training run, and the form that launches a new one.

:class:`JobsScreen` lists the runs under the runs root (a :class:`PollingScreen`: polled in a
worker thread, the next poll scheduled once the previous one has been drawn) and starts, stops,
resumes and opens them.
:class:`LaunchScreen` is the new-job form: it shows the resolved hardware plan for what is typed
before anything is launched.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, DataTable, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState, get_current_worker

from ploutos_tui.actions import ensure_subprocess_ready
from ploutos_tui.model.runs import RunSnapshot, RunsWatcher, format_duration
from ploutos_tui.screens.base import PollingScreen
from ploutos_tui.screens.compare import MARK_AT_LEAST_TWO, CompareScreen
from ploutos_tui.screens.modal import PanelModal
from ploutos_tui.screens.run import LogScreen, RunScreen, state_text
from ploutos_tui.widgets.verdict import DASH

DEFAULT_CONFIG = Path("config/demo.yaml")
CONFIG_DIR = Path("config")
HARDWARE_FILE = "hardware.yaml"  # hardware profiles, not a training config
ALGORITHMS = ("ppo", "recurrent_ppo")


def one_line(err: BaseException | str) -> str:
    """An error as a single line (pydantic messages span several)."""
    return " ".join(str(err).split()) or type(err).__name__


# ============================================================================ launch form
def config_choices(default: Path | str, folder: Path | str = CONFIG_DIR) -> list[str]:
    """The configs a new job can be made from: ``default`` (the panel's own) first, then every
    ``*.yaml`` of ``folder`` but the hardware profiles, by name."""
    shown = [str(default)]
    try:
        found = sorted(Path(folder).glob("*.yaml"))
    except OSError:
        found = []
    for path in found:
        if path.name == HARDWARE_FILE or not path.is_file() or _same_path(path, default):
            continue
        shown.append(str(path))
    return shown


def _same_path(a: Path | str, b: Path | str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return str(a) == str(b)


class ConfigPicker(OptionList):
    """The config files to choose from, the highlighted one is the choice. Enter submits the form
    (it does not only select); ``value`` reads the highlighted path and, set to a path the list
    lacks, adds it first."""

    BINDINGS = [Binding("enter", "submit", "Launch", show=False)]

    class Submitted(Message):
        """Enter on the list."""

    def __init__(self, choices: list[str], **kwargs: Any) -> None:
        super().__init__(*(Option(path, id=path) for path in choices), compact=True, **kwargs)
        self.choices = list(choices)
        self.highlighted = 0 if choices else None

    @property
    def value(self) -> str:
        index = self.highlighted
        return self.choices[index] if index is not None and index < len(self.choices) else ""

    @value.setter
    def value(self, path: str) -> None:
        path = str(path)
        if path not in self.choices:
            self.choices.insert(0, path)
            self.clear_options()
            self.add_options([Option(p, id=p) for p in self.choices])
        self.highlighted = self.choices.index(path)

    def action_submit(self) -> None:
        self.post_message(self.Submitted())


class LaunchScreen(PanelModal[str | None]):
    """New training job. Dismisses with the new run id, or None when cancelled.

    The config is picked from ``config/*.yaml`` (the panel's own first); empty fields mean "what
    the config says", and the config's values are shown as placeholders once it has been read.
    Under the fields: the run's units (``folds x ensemble``) and its projected wall time from
    the measured rate of the newest finished run of the same config and algorithm on this
    machine (``host``: its name in ``run.json``, this machine's by default), then the plan.
    ``machine`` (an ``engine.train.plan.MachineInfo``) replaces the probe of this machine, for
    tests.
    """

    DEFAULT_CSS = """
    LaunchScreen { align: center middle; }
    LaunchScreen > Vertical {
        width: 100; max-width: 96%; height: 40; max-height: 96%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    LaunchScreen #launch-title { text-style: bold; height: 1; margin-bottom: 1; }
    LaunchScreen .field { height: 1; }
    LaunchScreen #config-field { height: auto; max-height: 4; }
    LaunchScreen .field Label { width: 16; }
    LaunchScreen .field Input, LaunchScreen .field Select { width: 1fr; }
    LaunchScreen #config { width: 1fr; max-height: 4; }
    LaunchScreen #units { height: auto; margin-top: 1; }
    LaunchScreen #projection { height: auto; }
    LaunchScreen #launch-error { height: 1; color: $error; text-wrap: nowrap;
        text-overflow: ellipsis; }
    LaunchScreen #plan-box { height: 1fr; border-top: solid $primary-darken-2; }
    LaunchScreen #buttons { height: 1; align-horizontal: right; }
    LaunchScreen #buttons Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", key_display="⏎/^l"),
        Binding("enter", "launch", "Launch", show=False),
        Binding("tab", "app.focus_next", "Move", key_display="tab/⇧tab"),
        Binding("shift+tab", "app.focus_previous", "Move back", show=False),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self,
        watcher: RunsWatcher,
        default_config: Path | str = DEFAULT_CONFIG,
        *,
        machine: Any = None,
        debounce_s: float = 0.3,
        host: str | None = None,
        config_dir: Path | str = CONFIG_DIR,
    ) -> None:
        super().__init__()
        self.watcher = watcher
        self.default_config = str(default_config)
        self.machine = machine
        self.debounce_s = debounce_s
        self.host = host
        self.config_dir = Path(config_dir)
        self.plan_text = ""
        self.units_text = ""
        self.projection_text = ""
        self.error = ""
        self.plans_shown = 0
        self.launching = False
        self._debounce: Any = None
        self._obs_cache: dict[str, int | None] = {}
        self._machine_lock = threading.Lock()

    def compose(self) -> ComposeResult:
        profiles, profile_error = self._profiles()
        with Vertical():
            yield Label("New training job", id="launch-title")
            with Horizontal(classes="field", id="config-field"):
                yield Label("Config file")
                yield ConfigPicker(
                    config_choices(self.default_config, self.config_dir), id="config"
                )
            with Horizontal(classes="field"):
                yield Label("Hardware")
                yield Select(
                    [(name, name) for name in profiles],
                    prompt="(from the config)",
                    id="profile",
                    compact=True,
                )
            with Horizontal(classes="field"):
                yield Label("Ensemble size")
                yield Input(
                    placeholder="(from the config)", type="integer", id="ensemble", compact=True
                )
            with Horizontal(classes="field"):
                yield Label("Algorithm")
                yield Select(
                    [(name, name) for name in ALGORITHMS],
                    prompt="(from the config)",
                    id="algorithm",
                    compact=True,
                )
            yield Static("Units: …", id="units")
            yield Static("Projected wall time: …", id="projection")
            yield Static(profile_error, id="launch-error")
            with VerticalScroll(id="plan-box"):
                yield Static("resolving the plan…", id="plan")
            with Horizontal(id="buttons"):
                yield Button("Launch (⏎ / ctrl+l)", id="launch", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)
        yield Footer()

    @staticmethod
    def _profiles() -> tuple[list[str], str]:
        from engine.api import load_hardware_profiles

        try:
            return list(load_hardware_profiles()), ""
        except Exception as err:  # a broken hardware.yaml: say so, keep the form usable
            return [], one_line(err)

    def on_mount(self) -> None:
        self.query_one("#config", ConfigPicker).focus()
        self.call_after_refresh(self._recompute)

    # ------------------------------------------------------------------ fields
    def _fields(self) -> dict[str, Any]:
        """The form as ``launch_run`` arguments; raises ValueError for an invalid value."""
        config = self.query_one("#config", ConfigPicker).value.strip()
        if not config:
            raise ValueError("config file: give the path of a YAML config")
        profile = self.query_one("#profile", Select).value
        algorithm = self.query_one("#algorithm", Select).value
        raw = self.query_one("#ensemble", Input).value.strip()
        ensemble = None
        if raw:
            try:
                ensemble = int(raw)
            except ValueError:
                raise ValueError(f"ensemble size: {raw!r} is not a whole number") from None
            if ensemble < 1:
                raise ValueError(f"ensemble size: {ensemble} members; need at least 1")
        return {
            "config_path": config,
            "profile": profile if isinstance(profile, str) else None,
            "ensemble": ensemble,
            "algorithm": algorithm if isinstance(algorithm, str) else None,
        }

    def _fields_or_error(self) -> dict[str, Any]:
        box = self.query_one("#plan-box", VerticalScroll)
        width = (box.scrollable_content_region.width or self.app.size.width - 8) - 1
        try:
            return {**self._fields(), "width": width}
        except ValueError as err:
            return {"invalid": str(err)}

    def on_input_changed(self, event: Input.Changed) -> None:
        self._changed()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._changed()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._changed()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_launch()

    def on_config_picker_submitted(self, event: ConfigPicker.Submitted) -> None:
        event.stop()
        self.action_launch()

    def _changed(self) -> None:
        if not self.is_mounted:
            return
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(self.debounce_s, self._recompute)

    def _recompute(self) -> None:
        self._debounce = None
        self._compute_plan(**self._fields_or_error())

    # ------------------------------------------------------------------ the plan
    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def _compute_plan(
        self,
        config_path: str = "",
        profile: str | None = None,
        ensemble: int | None = None,
        algorithm: str | None = None,
        invalid: str = "",
        width: int = 100,
    ) -> dict[str, Any]:
        if invalid:
            return {"error": invalid}
        try:
            return self._plan(config_path, profile, ensemble, algorithm, width)
        except Exception as err:  # any refusal (bad path, bad value): one line in the form
            return {"error": one_line(err)}

    def _plan(
        self,
        config_path: str,
        profile: str | None,
        ensemble: int | None,
        algorithm: str | None,
        width: int,
    ) -> dict[str, Any]:
        from engine.api import format_plan, plan_for, probe_machine, resolved_config

        if not Path(config_path).is_file():
            return {"error": f"{config_path}: no such config file"}
        base = resolved_config(config_path)
        cfg = resolved_config(config_path, ensemble=ensemble, algorithm=algorithm)
        obs_size = self._observation_size(cfg)
        with self._machine_lock:
            if self.machine is None:
                self.machine = probe_machine()
        if get_current_worker().is_cancelled:
            return {}
        plan = plan_for(cfg, profile, obs_size, self.machine)
        text = format_plan(plan, width=max(60, min(width, 120)))
        units, projection = self._units_and_projection(config_path, cfg, plan)
        warning = ""
        if obs_size is None:
            warning = f"no dataset at {cfg.dataset_path} yet: build it before launching"
        return {
            "plan": text,
            "units": units,
            "projection": projection,
            "warning": warning,
            "defaults": {
                "profile": base.hardware_profile,
                "ensemble": base.training.ensemble,
                "algorithm": base.training.algorithm,
            },
        }

    def _units_and_projection(self, config_path: str, cfg: Any, plan: Any) -> tuple[str, str]:
        """The run's units and its projected wall time (worker thread: reads run folders)."""
        from engine.api import measured_rate

        ensemble = cfg.training.ensemble
        folds = plan.inputs.get("folds")
        units = plan.inputs.get("units") or (folds or 1) * ensemble
        timesteps = cfg.training.total_timesteps
        slots = max(1, plan.parallel_members)
        shape = f"{folds} fold{'s' * (folds != 1)}" if folds is not None else "1 fold (assumed)"
        units_text = (
            f"Units: {shape} x {ensemble} member{'s' * (ensemble != 1)} = {units} unit"
            f"{'s' * (units != 1)} of {timesteps:,} timesteps, {slots} at a time"
        )
        algorithm = cfg.training.algorithm
        rate = measured_rate(self.watcher.runs_root, config_path, algorithm, host=self.host)
        if rate is None:
            return units_text, (
                f"Projected wall time: no measured rate yet (no finished {algorithm} run of "
                f"{config_path} on this machine)"
            )
        wall = rate.projected_wall_s(units, timesteps, slots)
        projection = (
            f"Projected wall time: {format_duration(wall)} of training at {rate.rate:,.0f} "
            f"timesteps/s per unit (measured in {rate.run_id}, {rate.slots} at a time)"
        )
        return units_text, projection

    def _observation_size(self, cfg: Any) -> int | None:
        """The policy's input size from the dataset's feature cache (built on first use, like
        ``ploutos plan``); None while the dataset does not exist yet."""
        from engine.api import dataset_observation_size

        key = f"{cfg.dataset_path}|{cfg.features.model_dump_json()}|{cfg.env.lookback}"
        if key not in self._obs_cache:
            # a feature build may start a process pool: ready the helpers first
            self._obs_cache[key] = dataset_observation_size(cfg, ensure_subprocess_ready)
        return self._obs_cache[key]

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group, state = event.worker.group, event.state
        if group == "plan" and state == WorkerState.SUCCESS:
            self._show_plan(event.worker.result or {})
        elif group == "plan" and state == WorkerState.ERROR:
            self._show_plan({"error": one_line(event.worker.error or "plan failed")})
        elif group == "launch" and state == WorkerState.SUCCESS:
            self.dismiss(event.worker.result)
        elif group == "launch" and state == WorkerState.ERROR:
            self.launching = False
            self.query_one("#launch", Button).disabled = False
            self._set_error(one_line(event.worker.error or "launch failed"))

    def _show_plan(self, result: dict[str, Any]) -> None:
        if not result:
            return  # a cancelled computation
        self.plans_shown += 1
        if "error" in result:
            self._set_error(result["error"])
            self.units_text = self.projection_text = ""
            self.query_one("#units", Static).update(f"Units: {DASH}")
            self.query_one("#projection", Static).update(f"Projected wall time: {DASH}")
            return
        self._set_error(result.get("warning", ""))
        self.plan_text = result["plan"]
        self.units_text = result.get("units", "")
        self.projection_text = result.get("projection", "")
        self.query_one("#plan", Static).update(Text(self.plan_text))
        self.query_one("#units", Static).update(Text(self.units_text))
        self.query_one("#projection", Static).update(Text(self.projection_text))
        defaults = result.get("defaults") or {}
        if defaults:
            self.query_one("#profile", Select).prompt = f"{defaults['profile']} (config)"
            self.query_one("#ensemble", Input).placeholder = f"{defaults['ensemble']} (config)"
            self.query_one("#algorithm", Select).prompt = f"{defaults['algorithm']} (config)"

    def _set_error(self, message: str) -> None:
        self.error = message
        err = self.query_one("#launch-error", Static)
        err.update(Text(message))
        err.tooltip = message or None

    # ------------------------------------------------------------------ buttons
    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            self.action_launch()
        elif event.button.id == "cancel":
            self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_launch(self) -> None:
        if self.launching:
            return
        try:
            fields = self._fields()
        except ValueError as err:
            self._set_error(str(err))
            return
        self.launching = True
        self.query_one("#launch", Button).disabled = True
        self._set_error("")
        self.query_one("#plan", Static).update(
            Text(f"Preparing the run (validating, building features)…\n\n{self.plan_text}")
        )
        self._launch(fields)

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False)
    def _launch(self, fields: dict[str, Any]) -> str:
        folder = self.watcher.launch_run(**fields)
        return folder.run_id


# ============================================================================ the jobs list
# key, label, right-aligned, width (None: the longest value, fixed per rebuild)
COLUMNS: tuple[tuple[str, str, bool, int | None], ...] = (
    ("run", "run id", False, None),
    ("state", "state", False, 11),
    ("progress", "done", True, 6),
    ("elapsed", "elapsed", True, 7),
    ("eta", "ETA", True, 6),
    ("verdict", "verdict", False, 16),
    ("config", "config", False, None),
)


MARK = "●"  # in the first column of a run marked for comparison


def job_cells(snap: RunSnapshot) -> tuple[Any, ...]:
    return (
        snap.run_id,
        # the column is narrow: "stalled" here, its age on the run screen
        state_text("stalled" if snap.stalled_s is not None else snap.state),
        Text(f"{snap.progress * 100:.1f}%", justify="right"),
        Text(format_duration(snap.elapsed_s), justify="right"),
        Text(format_duration(snap.eta_s) if snap.live else "—", justify="right"),
        verdict_text(snap),
        snap.config or "?",
    )


def verdict_text(snap: RunSnapshot) -> Text:
    """The jobs list's verdict cell: ``skill p=0.004`` in green, ``no skill p=0.43`` in yellow,
    ``—`` (not judged) dimmed."""
    short = snap.verdict_short
    skill = snap.verdict.get("skill")
    style = "bold green" if skill is True else ("yellow" if skill is False else "dim")
    return Text(short, style=style)


class JobsScreen(PollingScreen[list[RunSnapshot]]):
    """Every run under the watcher's root, newest first."""

    DEFAULT_CSS = """
    JobsScreen #jobs-head { height: 1; padding: 0 1; background: $boost; }
    JobsScreen #jobs { height: 1fr; }
    JobsScreen #jobs-empty { padding: 1 2; color: $text-muted; }
    JobsScreen #jobs-error { color: $error; height: auto; padding: 0 1; }
    """

    BINDINGS = [
        Binding("n", "new_job", "New job"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("o", "open_run", "Open", key_display="⏎/o"),
        Binding("l", "log", "Log"),
        Binding("space", "toggle_mark", "Mark"),
        Binding("c", "compare", "Compare marked"),
    ]

    def __init__(
        self,
        watcher: RunsWatcher,
        default_config: Path = DEFAULT_CONFIG,
        interval_s: float = 1.0,
        *,
        machine: Any = None,
    ) -> None:
        super().__init__(interval_s)
        self.watcher = watcher
        self.default_config = Path(default_config)
        self.machine = machine
        self.snapshots: list[RunSnapshot] = []
        self.polls_rendered = 0
        self._keys: list[str] = []
        self._widths = (0, 0)
        self._select_next: str | None = None
        self.marked: dict[str, None] = {}  # run ids marked for comparison, in marking order

    def compose(self) -> ComposeResult:
        yield Static("", id="jobs-head")
        yield Static("", id="jobs-error")
        table: DataTable[Any] = DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="jobs-empty")
        yield Footer()

    def on_mount(self) -> None:
        self._set_columns(self.query_one("#jobs", DataTable), 25, 16)
        self.query_one("#jobs-error").display = False
        self.query_one("#jobs-empty").display = False
        self.query_one("#jobs-head", Static).update(f"Runs in {self.watcher.runs_root}")
        self.query_one("#jobs", DataTable).focus()
        self.refresh_now()

    # ------------------------------------------------------------------ polling
    def refresh_now(self) -> None:
        """Poll now (the result is drawn, then the next poll is scheduled)."""
        self.poll_now()

    def fetch(self) -> list[RunSnapshot]:
        return self.watcher.poll()

    def draw(self, result: list[RunSnapshot]) -> None:
        self.show(result or [])

    def draw_error(self, error: BaseException) -> None:
        self._show_error(f"cannot read the runs: {one_line(error)}")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group, state = event.worker.group, event.state
        if group == "jobs-action" and state == WorkerState.SUCCESS:
            self.notify(str(event.worker.result))
            self.refresh_now()
        elif group == "jobs-action" and state == WorkerState.ERROR:
            self.notify(one_line(event.worker.error or "failed"), severity="error", timeout=8)

    def _show_error(self, message: str) -> None:
        err = self.query_one("#jobs-error", Static)
        err.display = bool(message)
        err.update(Text(message))

    # ------------------------------------------------------------------ drawing
    def show(self, snaps: list[RunSnapshot]) -> None:
        """Draw the runs (UI thread); the cursor stays on the run it was on."""
        self.snapshots = list(snaps)
        self.polls_rendered += 1
        self._show_error("")
        table = self.query_one("#jobs", DataTable)
        keys = [s.run_id for s in snaps]
        selected = self._select_next or self.selected_run_id()
        self.marked = {run_id: None for run_id in self.marked if run_id in keys}
        if keys == self._keys:
            for snap in snaps:
                for (col, *_), cell in zip(COLUMNS, job_cells(snap), strict=True):
                    table.update_cell(snap.run_id, col, cell)
        else:
            table.clear()
            run_w = max([25, *(len(s.run_id) for s in snaps)])
            config_w = max([16, *(len(s.config or "?") for s in snaps)])
            if (run_w, config_w) != self._widths:
                self._set_columns(table, run_w, config_w)
            for snap in snaps:
                table.add_row(self._mark_cell(snap.run_id), *job_cells(snap), key=snap.run_id)
            self._keys = keys
        if selected in keys:
            if self._select_next or table.cursor_row != keys.index(selected):
                table.move_cursor(row=keys.index(selected), animate=False)
            if self._select_next == selected:
                self._select_next = None
        self._show_head()
        empty = self.query_one("#jobs-empty", Static)
        empty.display = not snaps
        if not snaps:
            empty.update("No runs yet. Press n to launch one.")

    def _show_head(self) -> None:
        snaps = self.snapshots
        live = sum(1 for s in snaps if s.live)
        marked = f", {len(self.marked)} marked (c compares)" if self.marked else ""
        self.query_one("#jobs-head", Static).update(
            f"Runs in {self.watcher.runs_root}: {len(snaps)} run{'s' * (len(snaps) != 1)}, "
            f"{live} live{marked}"
        )

    def _mark_cell(self, run_id: str) -> Text:
        return Text(MARK if run_id in self.marked else "", style="bold cyan")

    def _set_columns(self, table: DataTable, run_w: int, config_w: int) -> None:
        """Fixed column widths (a DataTable whose columns grow repaints its header late)."""
        table.clear(columns=True)
        table.add_column("", key="mark", width=1)
        for key, label, right, width in COLUMNS:
            width = width or (run_w if key == "run" else config_w)
            table.add_column(Text(label, justify="right") if right else label, key=key, width=width)
        self._widths = (run_w, config_w)

    def selected_run_id(self) -> str | None:
        table = self.query_one("#jobs", DataTable)
        if not self._keys or table.cursor_row < 0:
            return None
        row = min(table.cursor_row, len(self._keys) - 1)
        return self._keys[row]

    def _selected_or_warn(self) -> str | None:
        run_id = self.selected_run_id()
        if run_id is None:
            self.notify("no run selected", severity="warning")
        return run_id

    # ------------------------------------------------------------------ actions
    def action_new_job(self) -> None:
        self.app.push_screen(
            LaunchScreen(self.watcher, self.default_config, machine=self.machine),
            callback=self._launched,
        )

    def _launched(self, run_id: str | None) -> None:
        if run_id:
            self._select_next = run_id
            self.notify(f"{run_id}: launched")
            self.refresh_now()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "jobs" and event.row_key.value:
            self.open_run(str(event.row_key.value))

    def action_open_run(self) -> None:
        run_id = self._selected_or_warn()
        if run_id:
            self.open_run(run_id)

    def open_run(self, run_id: str) -> None:
        opener = getattr(self.app, "open_run", None)
        if callable(opener):
            opener(run_id)
        else:
            self.app.push_screen(RunScreen(self.watcher, run_id, self.interval_s))

    def action_toggle_mark(self) -> None:
        """Mark the selected run for comparison, or unmark it."""
        run_id = self._selected_or_warn()
        if run_id is None:
            return
        if run_id in self.marked:
            del self.marked[run_id]
        else:
            self.marked[run_id] = None
        self.query_one("#jobs", DataTable).update_cell(run_id, "mark", self._mark_cell(run_id))
        self._show_head()

    def action_compare(self) -> None:
        """The marked runs side by side; with fewer than two marked, one line says so."""
        paths = {s.run_id: s.path for s in self.snapshots}
        chosen = [paths[run_id] for run_id in self.marked if run_id in paths]
        if len(chosen) < 2:
            self.notify(f"{MARK_AT_LEAST_TWO} ({len(chosen)} marked)", severity="warning")
            return
        self.app.push_screen(CompareScreen(chosen))

    def action_log(self) -> None:
        run_id = self._selected_or_warn()
        if run_id:
            self.app.push_screen(LogScreen(self.watcher, run_id))

    def action_stop(self) -> None:
        run_id = self._selected_or_warn()
        if run_id:
            self._act("stop", run_id)

    def action_resume(self) -> None:
        run_id = self._selected_or_warn()
        if run_id:
            self._act("resume", run_id)

    @work(thread=True, group="jobs-action", exit_on_error=False)
    def _act(self, verb: str, run_id: str) -> str:
        result = getattr(self.watcher, verb)(run_id)
        if verb == "stop":
            return f"{run_id}: asked to stop (state {result})"
        return f"{run_id}: resuming"
