"""One run in detail: members per fold, the highlighted member's training curves (reward,
steps/s, SB3's losses, entropy, KL, clip fraction, explained variance against timesteps),
out-of-sample results, Monte Carlo, the verdict (null policies, timing skill, overfitting, costs,
seed spread). Every number carries its unit; ``?`` says what each one means.

Everything shown comes from :class:`ploutos_tui.model.runs.RunsWatcher` snapshots, polled in a
worker thread (a :class:`PollingScreen`); the next poll is scheduled once the last one is drawn.
While the run is live and has running members, the same poll takes a hardware snapshot from the
app's one sampler (``app.sampler``; a recent one the hardware screen took is reused, never a
second sampler), and the members table shows each running member's worker process: CPU %, RSS,
threads and GPU memory.
"""

from __future__ import annotations

import socket
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Label, Log, ProgressBar, Static
from textual.worker import Worker, WorkerState

from ploutos_tui.model.runs import MemberRow, RunSnapshot, RunsWatcher, format_duration
from ploutos_tui.model.runs import format_steps as steps
from ploutos_tui.model.sampling import HardwareSnapshot, ProcessReading, recent_sample
from ploutos_tui.screens.base import PollingScreen
from ploutos_tui.screens.modal import PanelModal
from ploutos_tui.widgets.curves import CURVES, CurvesPanel
from ploutos_tui.widgets.histogram import Histogram
from ploutos_tui.widgets.verdict import (
    GLOSSARY,
    VerdictPanel,
    fills_line,
    number,
    verdict_headline,
)

STATE_STYLES = {
    "starting": "cyan",
    "running": "bold green",
    "stopping": "yellow",
    "stopped": "yellow",
    "finished": "bold blue",
    "failed": "bold red",
    "interrupted": "bold magenta",
    "pending": "dim",
    "unreadable": "bold red",
}

_PROGRESS_STEPS = 1000


def state_text(state: str) -> Text:
    """A state (or a label such as ``running (stalled 120 s)``) styled by its first word; a stalled
    trainer is flagged in the warning colour whatever its state."""
    head = state.split(" ", 1)[0]
    style = "bold yellow" if "stalled" in state else STATE_STYLES.get(head, "")
    return Text(state, style=style)


def pct(value: Any, signed: bool = True) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"


def num(value: Any, fmt: str = ".2f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "—"


def times(value: Any) -> str:
    """A multiple of the portfolio's value (turnover): ``37.7×``; ``—`` when unknown."""
    x = number(value)
    return "—" if x is None else f"{x:.1f}×"


def scope_name(scope: str) -> str:
    """A Monte Carlo scope as the tables name it: ``pooled``, ``fold_01`` -> ``fold 1``."""
    head, _, digits = scope.partition("_")
    if head == "fold" and digits.isdigit():
        return f"fold {int(digits)}"
    return scope.replace("_", " ")


def share(value: Any, digits: int = 0) -> str:
    """A fraction in 0..1 as a percentage (``21%``; ``0.21%`` with ``digits=2``); ``—`` when it
    is not one."""
    x = number(value)
    return "—" if x is None or not 0 <= x <= 1 else f"{x * 100:.{digits}f}%"


def metric(value: Any, fmt: str = ".3g") -> str:
    """An SB3 metric, short (``-0.0123``, ``1.23e+03``); ``—`` if unknown."""
    x = number(value)
    return "—" if x is None else format(x, fmt)


def time_split(m: MemberRow) -> str:
    """``21% / 8% / 66%``: the env, inference and gradient shares of the member's time (its last
    interval while it runs, its whole training once done)."""
    shares, _ = m.shown_time_shares()
    if not shares:
        return "—"
    return " / ".join(share(shares.get(k)) for k in ("env", "inference", "gradient"))


# (label, phase) of the time breakdown, and (label, metric, format) of SB3's metrics, in the
# member detail line
TIME_LABELS = (
    ("env", "env"),
    ("inference", "inference"),
    ("gradient", "gradient"),
    ("checkpoint", "checkpoint"),
    ("waiting", "waiting"),
)
SB3_LABELS = (
    ("policy loss", "policy_loss", ".3g"),
    ("value loss", "value_loss", ".3g"),
    ("entropy", "entropy", ".3g"),
    ("approx KL", "approx_kl", ".2g"),
    ("clip fraction", "clip_fraction", "%"),
    ("explained variance", "explained_variance", ".2f"),
)


def size_text(n: int | None) -> str:
    """Bytes, short and with their unit: ``512 MiB``, ``1.2 GiB``; ``—`` when unknown."""
    if n is None:
        return "—"
    if n < 1 << 30:
        return f"{n / (1 << 20):.0f} MiB"
    return f"{n / (1 << 30):.1f} GiB"


def cpu_text(pct: float | None) -> str:
    """A process's CPU, percent of one core (``97%``, ``312%``); ``—`` before it is measured."""
    return "—" if pct is None else f"{pct:.0f}%"


def process_cells(proc: ProcessReading | None) -> tuple[Text, ...]:
    """:data:`PROCESS_COLUMNS` of a member's worker process (``—`` each when unknown)."""
    if proc is None:
        return tuple(Text("—", justify="right") for _ in PROCESS_COLUMNS)
    return (
        Text(cpu_text(proc.cpu_pct), justify="right"),
        Text(size_text(proc.rss_bytes), justify="right"),
        Text(f"{proc.threads:,}", justify="right"),
        Text(size_text(proc.gpu_mem_bytes), justify="right"),
    )


def process_words(
    m: MemberRow, proc: ProcessReading | None, hostname: str, sampled: bool = True
) -> Text | None:
    """The running member's worker process in words (``pid 4242 on this host: CPU 97% of a
    core · RSS 1.2 GiB · 9 threads · GPU 1.1 GiB, SM 35%``), or why there is nothing to say;
    None for a member that is not running. ``sampled``: whether a hardware snapshot was taken
    (the app shares its sampler with this screen; a bare screen has none)."""
    if m.state != "running":
        return None
    out = Text("process: ")
    if m.pid is None:
        out.append("its events name no worker pid", style="dim")
    elif not m.on_host(hostname):
        out.append(f"pid {m.pid} on {m.node or 'an unknown node'}, ")
        out.append("not this host: no readings", style="dim")
    elif proc is None:
        out.append(f"pid {m.pid} on this host, ")
        why = "not in a live job's process tree" if sampled else "no hardware reading"
        out.append(why, style="dim")
    else:
        out.append(f"pid {m.pid} on this host: ")
        cpu = "CPU —" if proc.cpu_pct is None else f"CPU {proc.cpu_pct:.0f}% of a core"
        out.append(f"{cpu} · RSS {size_text(proc.rss_bytes)} · {proc.threads:,} threads")
        if proc.gpu_mem_bytes is None:
            out.append(" · GPU —")
        else:
            sm = "" if proc.gpu_util_pct is None else f", SM {proc.gpu_util_pct:.0f}%"
            out.append(f" · GPU {size_text(proc.gpu_mem_bytes)}{sm}")
    if m.device:
        out.append(f" · device {m.device}", style="dim")
    return out


def member_detail(
    m: MemberRow,
    proc: ProcessReading | None = None,
    hostname: str | None = None,
    live: bool = True,
    sampled: bool = True,
) -> Text:
    """The highlighted member in words: its steps/s and where its time went, SB3's metrics of
    its last update, while it runs (in a ``live`` run) its worker process (``proc``, read on
    ``hostname``: this machine by default), and its whole error."""
    out = Text()
    out.append(f"fold {m.fold} member {m.member}", style="bold")
    out.append(f" · {m.fps:,.0f} steps/s" if m.fps else " · — steps/s")
    shares, covers = m.shown_time_shares()
    if shares:
        out.append(f" · time ({covers}): ")
        out.append(" · ".join(f"{label} {share(shares.get(k))}" for label, k in TIME_LABELS))
        if number(m.measure_overhead_share) is not None:
            out.append(f" (measuring {share(m.measure_overhead_share, 2)})", style="dim")
    else:
        out.append(" · no time breakdown in its events", style="dim")
    out.append("\n")
    if m.sb3:
        updates = m.sb3.get("n_updates")
        out.append("SB3" + (f" after {updates} epochs" if isinstance(updates, int) else ""))
        out.append(": ")
        cells = []
        for label, key, fmt in SB3_LABELS:
            value = share(m.sb3.get(key), 1) if fmt == "%" else metric(m.sb3.get(key), fmt)
            unit = " nats" if key == "entropy" and value != "—" else ""
            cells.append(f"{label} {value}{unit}")
        out.append(" · ".join(cells))
    else:
        out.append("SB3: no update yet" if shares else "SB3: no metrics in its events", style="dim")
    host = hostname or socket.gethostname()
    words = process_words(m, proc, host, sampled) if live else None
    if words is not None:
        out.append("\n")
        out.append_text(words)
    if m.error:
        out.append("\n")
        out.append(f"error: {m.error}", style="red")
    return out


def member_cells(
    m: MemberRow,
    training: bool = False,
    process: bool = False,
    proc: ProcessReading | None = None,
) -> tuple[Any, ...]:
    """The member's row: :data:`MEMBER_COLUMNS`, then with ``process`` the
    :data:`PROCESS_COLUMNS` of its worker ``proc``, then with ``training`` the
    :data:`TRAINING_COLUMNS`, then its error."""
    eta = format_duration(m.eta_s) if m.state == "running" else "—"
    cells: tuple[Any, ...] = (
        str(m.fold),
        str(m.member),
        state_text(m.state),
        Text(f"{steps(m.timesteps)}/{steps(m.total)}", justify="right"),
        Text(f"{m.fps:,.0f}" if m.fps else "—", justify="right"),
        Text(num(m.mean_reward, "+.4f"), justify="right"),
        eta,
        m.node or "—",
    )
    if process:
        cells += process_cells(proc if m.state == "running" else None)
    if training:
        sb3 = m.sb3
        cells += (
            Text(time_split(m), justify="right"),
            Text(metric(sb3.get("policy_loss")), justify="right"),
            Text(metric(sb3.get("value_loss")), justify="right"),
            Text(metric(sb3.get("entropy")), justify="right"),
            Text(metric(sb3.get("approx_kl"), ".2g"), justify="right"),
            Text(share(sb3.get("clip_fraction")), justify="right"),
            Text(metric(sb3.get("explained_variance"), ".2f"), justify="right"),
        )
    return (*cells, Text(m.error or "", style="red"))


class LogScreen(PanelModal[None]):
    """The last lines of a run's ``logs/train.log`` (read from the end of the file)."""

    DEFAULT_CSS = """
    LogScreen { align: center middle; }
    LogScreen > Vertical {
        width: 96%; height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    LogScreen #log-title { height: 1; text-style: bold; }
    LogScreen Log { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, watcher: RunsWatcher, run_id: str, lines: int = 200) -> None:
        super().__init__()
        self.watcher = watcher
        self.run_id = run_id
        self.lines = lines

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.run_id}: logs/train.log (last {self.lines} lines)", id="log-title")
            yield Log(id="log", highlight=False)
            yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="log", exit_on_error=False)
    def _load(self) -> list[str]:
        return self.watcher.log_tail(self.run_id, self.lines)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "log":
            return
        log = self.query_one(Log)
        if event.state == WorkerState.SUCCESS:
            lines = event.worker.result or ["(the log is empty)"]
            log.clear()
            log.write_lines(lines)
        elif event.state == WorkerState.ERROR:
            log.clear()
            log.write_line(f"cannot read the log: {event.worker.error}")

    def action_close(self) -> None:
        self.dismiss(None)


class RunHelpScreen(PanelModal[None]):
    """The Run screen's help (``?`` there): what each statistic means, then the screen's keys.
    The panel-wide keys are in the help of every other screen."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]
    DEFAULT_CSS = """
    RunHelpScreen { align: center middle; }
    RunHelpScreen #help { width: 90%; max-width: 110; height: auto; max-height: 90%;
        border: round $accent; padding: 0 1; background: $surface; }
    RunHelpScreen #help-lead { padding: 0 0 1 0; }
    """

    def compose(self) -> ComposeResult:
        from rich.table import Table

        def table(title: str, *columns: str) -> Table:
            out = Table(
                title=title,
                title_justify="left",
                title_style="bold",
                box=None,
                header_style="bold",
                expand=True,
                padding=(0, 1),
            )
            for i, name in enumerate(columns):
                last = i == len(columns) - 1
                out.add_column(name, no_wrap=not last, ratio=1 if last else None)
            return out

        run_terms = table("The run, its members and out-of-sample results", "number", "meaning")
        for term, meaning in RUN_GLOSSARY:
            run_terms.add_row(Text(term, style="bold cyan"), meaning)
        curves = table(
            "Training curves (x: timesteps; cyan the highlighted member, grey its fold's others)",
            "chart",
            "meaning",
        )
        for curve in CURVES:
            unit = f" ({curve.unit})" if curve.unit else ""
            curves.add_row(Text(curve.title + unit, style="bold cyan"), curve.meaning)
        terms = table("The verdict", "statistic", "meaning")
        for term, meaning in GLOSSARY:
            terms.add_row(Text(term, style="bold cyan"), meaning)
        keys = table("Keys of this screen", "key", "what")
        for key, what in RUN_KEYS:
            keys.add_row(Text(key, style="bold cyan"), what)
        with VerticalScroll(id="help"):
            yield Static(
                "[b]Run screen[/b]: returns are % of the starting equity, pp percentage points, "
                "bps basis points per side; p-values and probabilities lie in 0..1. Escape "
                "closes this help.",
                id="help-lead",
            )
            yield Static(run_terms, id="help-run")
            yield Static(curves, id="help-curves")
            yield Static(terms, id="help-terms")
            yield Static(keys, id="help-keys")

    def action_close(self) -> None:
        self.dismiss(None)


# One line per number of the run and members part of the screen, for its help (``?``); the
# training curves' lines come from CURVES, the verdict's from the verdict widget's GLOSSARY.
RUN_GLOSSARY: tuple[tuple[str, str], ...] = (
    (
        "progress, elapsed, ETA",
        "timesteps trained over those planned, all members together; wall time since the run "
        "started; time left at the members' measured steps/s",
    ),
    ("fold", "walk-forward fold number from 0, as in 'fold N' everywhere on this screen"),
    ("mem", "member number within the fold's ensemble (each trains with its own seed)"),
    ("state", "pending, running, finished, stopped (checkpointed) or failed"),
    (
        "timesteps",
        "env steps this member has trained / its total (k = thousand, M = million)",
    ),
    ("steps/s", "env steps per second of the member since its process started training"),
    (
        "reward/ep",
        "mean return of the member's last 100 finished training episodes, as a log return "
        "(sum of the bars' log(equity change) after costs; +0.01 is about +1 %)",
    ),
    ("ETA (member)", "time left for this member at its current steps/s"),
    ("node", "the machine its worker runs on (host name, or host/Ray node id)"),
    ("CPU %", "its worker process's CPU, percent of one core (200% = two cores busy)"),
    ("RSS", "its worker's resident memory (MiB / GiB)"),
    ("threads", "threads of its worker process"),
    ("GPU mem", "GPU memory its worker process holds (NVML, per process)"),
    (
        "env / inf / grad",
        "% of the member's wall time stepping the env / running the policy / in SB3's "
        "gradient updates (last interval while running, whole training once done)",
    ),
    ("π loss, V loss", "SB3's policy loss and value loss of the last update (see the curves)"),
    ("entropy, KL", "policy entropy and approximate KL of the last update, in nats"),
    ("clip", "% of samples whose probability ratio PPO clipped in the last update"),
    ("expl var", "explained variance of the value head (1 perfect, 0 or below: none)"),
    (
        "return (out of sample)",
        "% gain of the test window's equity, after costs, positions sold at the end",
    ),
    (
        "Sharpe",
        "annualised Sharpe ratio: mean / std of the per-bar log returns x sqrt(bars per year)",
    ),
    ("max DD", "largest fall of equity from its running peak, % of that peak"),
    (
        "turnover ×",
        "total traded notional (buys + sells) / mean equity over the test window: 37.7× = the "
        "portfolio's value traded 37.7 times",
    ),
    ("members", "members whose policies the ensemble used / members trained"),
    ("simulations", "Monte Carlo paths simulated for the scope (pooled or one fold)"),
    ("VaR 95 / CVaR 95", "5th percentile of the paths' final returns / mean of the worst 5 %"),
    ("max DD median / p95", "median / 95th percentile of the paths' largest drawdowns, %"),
)


RUN_KEYS = (
    ("↑ / ↓", "highlight another member: its detail line and training curves"),
    ("m", "next scope of the Monte Carlo and null-policy tables: pooled, then each fold"),
    ("s / r", "stop the run (members checkpoint) / resume it"),
    ("l", "the run's log tail"),
    ("escape", "back to the jobs list"),
    ("h / j / d", "hardware / jobs / dataset screens; q quits the panel, jobs keep running"),
)


# label, key, width, right-aligned
MEMBER_COLUMNS = (
    ("fold", "fold", 4, False),
    ("mem", "member", 3, False),
    ("state", "state", 8, False),
    ("timesteps", "timesteps", 13, True),
    ("steps/s", "fps", 7, True),
    ("reward/ep", "reward", 9, True),
    ("ETA", "eta", 6, False),
    ("node", "node", 10, False),
)
# The running member's worker process, from the latest hardware snapshot: shown while the run
# is live and has running members ("—" for one on another node, or not sampled yet).
PROCESS_COLUMNS = (
    ("CPU %", "cpu", 6, True),
    ("RSS", "rss", 9, True),
    ("threads", "threads", 7, True),
    ("GPU mem", "gpu_mem", 9, True),
)
# Where the member's time went and SB3's metrics of its last update: shown when some member's
# events have them (older runs keep their table as it was, the error column as wide).
TRAINING_COLUMNS = (
    ("env / inf / grad", "time", 16, True),
    ("π loss", "policy_loss", 8, True),
    ("V loss", "value_loss", 8, True),
    ("entropy", "entropy", 7, True),
    ("KL", "approx_kl", 7, True),
    ("clip", "clip_fraction", 5, True),
    ("expl var", "explained_variance", 8, True),
)
# The error column's fixed width (an auto-sized column that grows after the first frame leaves
# its header drawn at the old width: Textual caches header cells without their width); narrower
# beside the training columns, so that a 200-column terminal shows the whole row.
ERROR_WIDTH = {False: 64, True: 40}
PROCESS_ERROR_WIDTH = {False: 40, True: 16}  # the same beside the process columns
FOLD_COLUMNS = (
    ("fold", "fold", 4, False),
    ("", "who", 10, False),
    ("return", "return", 8, True),
    ("Sharpe", "sharpe", 7, True),
    ("max DD", "dd", 7, True),
    ("turnover", "turnover", 8, True),
    ("members", "used", 7, True),
)


MAX_FOLD_MATES = 7  # other members of the fold drawn behind the highlighted one, at most


def _local(m: MemberRow, hostname: str) -> bool:
    return m.local_pid(hostname) is not None


def _add_columns(table: DataTable, columns: tuple[tuple[str, str, int, bool], ...]) -> None:
    for label, key, width, right in columns:
        table.add_column(Text(label, justify="right") if right else label, key=key, width=width)


class RunScreen(PollingScreen[RunSnapshot | None]):
    """Detail of one run. ``s`` stop, ``r`` resume, ``l`` log, ``m`` Monte Carlo scope."""

    DEFAULT_CSS = """
    RunScreen #body { height: 1fr; padding: 0 1; }
    RunScreen #title { height: auto; }
    RunScreen #progress-row { height: 1; }
    RunScreen #progress-row ProgressBar { width: auto; }
    RunScreen #eta { width: 1fr; padding-left: 2; }
    RunScreen #run-error { color: $error; height: auto; }
    RunScreen #member-detail { height: auto; }
    RunScreen #verdict-top { height: auto; }
    RunScreen #verdict { height: auto; }
    RunScreen .section { margin-top: 1; text-style: bold; color: $accent; }
    RunScreen DataTable { height: auto; max-height: 16; }
    RunScreen #mc-row { height: auto; }
    RunScreen #histogram { width: 1fr; max-width: 100; height: 10; }
    RunScreen #mc-stats { width: 30; height: auto; padding-left: 1; }
    RunScreen #curves { width: 1fr; }
    """

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("l", "log", "Log"),
        Binding("m", "next_scope", "MC scope"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(
        self,
        watcher: RunsWatcher,
        run_id: str,
        interval_s: float = 1.0,
        *,
        sampler: Any = None,
        hostname: str | None = None,
    ) -> None:
        super().__init__(interval_s)
        self.watcher = watcher
        self.run_id = run_id
        # The hardware sampler to read the workers from: given, else the app's (on mount)
        self.sampler = sampler
        self.hostname = hostname or socket.gethostname()
        self.snapshot: RunSnapshot | None = None
        self.hardware: HardwareSnapshot | None = None  # taken with the last poll, if any
        self.scope: str | None = None  # None: pooled, or the latest fold until pooled exists
        self.polls_rendered = 0
        self._members_keys: list[str] = []
        self._training_columns = False  # whether the members table has TRAINING_COLUMNS
        self._process_columns = False  # whether it has PROCESS_COLUMNS
        self._member_column_keys: tuple[str, ...] = ()

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        with VerticalScroll(id="body"):
            yield Static(f"Run {self.run_id}", id="title")
            with Horizontal(id="progress-row"):
                yield ProgressBar(total=_PROGRESS_STEPS, show_eta=False, id="progress")
                yield Static("", id="eta")
            yield Static("", id="run-error")
            yield Static("", id="verdict-top")
            yield Label("Members", classes="section")
            yield DataTable(id="members", cursor_type="row", zebra_stripes=True)
            yield Static("", id="member-detail")
            yield Label("Training curves", id="curves-title", classes="section")
            yield CurvesPanel(id="curves")
            yield Label("Out of sample: ensemble vs buy and hold", classes="section")
            yield DataTable(id="folds", cursor_type="none", zebra_stripes=True)
            yield Label("Monte Carlo", id="mc-title", classes="section")
            with Horizontal(id="mc-row"):
                yield Histogram(id="histogram")
                yield Static("", id="mc-stats")
            yield Label("Verdict", id="verdict-title", classes="section")
            yield VerdictPanel("", id="verdict")
        yield Footer()

    def on_mount(self) -> None:
        if self.sampler is None:
            self.sampler = getattr(self.app, "sampler", None)
        # Fixed widths: a DataTable whose columns grow repaints its header late.
        self._member_columns(self.query_one("#members", DataTable), training=False)
        _add_columns(self.query_one("#folds", DataTable), FOLD_COLUMNS)
        self.query_one("#run-error").display = False
        self.query_one("#member-detail").display = False
        self.query_one("#verdict-top").display = False
        self.poll_now()

    # ------------------------------------------------------------------ polling
    def fetch(self) -> tuple[RunSnapshot | None, HardwareSnapshot | None]:
        snap = self.watcher.poll_run(self.run_id)
        hardware = None
        wanted = snap is not None and snap.live
        if (
            wanted
            and self.sampler is not None
            and any(_local(m, self.hostname) for m in snap.members)
        ):
            try:  # the hardware screen's recent sample when there is one: no second sampling
                hardware = recent_sample(self.sampler, max(2.0 * self.interval_s, 1.0))
            except Exception:  # the run's view must not depend on the sampler
                hardware = None
        return snap, hardware

    def draw(self, result: tuple[RunSnapshot | None, HardwareSnapshot | None]) -> None:
        snap, self.hardware = result
        self.show(snap)

    def draw_error(self, error: BaseException) -> None:
        self.query_one("#title", Static).update(
            Text(f"Run {self.run_id}: cannot read it: {error}", style="red")
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group, state = event.worker.group, event.state
        if group == "run-action" and state == WorkerState.SUCCESS:
            self.notify(str(event.worker.result))
            self.poll_now()
        elif group == "run-action" and state == WorkerState.ERROR:
            self.notify(str(event.worker.error), severity="error", timeout=8)

    # ------------------------------------------------------------------ drawing
    def show(self, snap: RunSnapshot | None) -> None:
        """Draw one snapshot (the UI thread)."""
        self.snapshot = snap
        self.polls_rendered += 1
        title = self.query_one("#title", Static)
        if snap is None:
            title.update(Text(f"Run {self.run_id}: no such run (deleted?)", style="red"))
            return
        head = Text.assemble(
            ("Run ", "bold"),
            (snap.run_id, "bold"),
            "  ",
            state_text(snap.state_label),
        )
        if snap.pid:
            head.append(f"  pid {snap.pid}", style="dim")
        head.append(
            f"\n{snap.config or '?'} · {snap.algorithm or '?'} · {snap.n_folds} folds × "
            f"{snap.ensemble} members" + (f" · profile {snap.profile}" if snap.profile else ""),
            style="dim",
        )
        title.update(head)
        self.query_one("#progress", ProgressBar).update(
            progress=round(snap.progress * _PROGRESS_STEPS)
        )
        eta = f"ETA {format_duration(snap.eta_s)}" if snap.live else ""
        self.query_one("#eta", Static).update(
            f"elapsed {format_duration(snap.elapsed_s)}" + (f"   {eta}" if eta else "")
        )
        err = self.query_one("#run-error", Static)
        err.display = bool(snap.error)
        err.update(f"error: {snap.error}" if snap.error else "")
        self._show_members(snap)
        self._show_folds(snap)
        self._show_montecarlo(snap)
        self._show_verdict(snap)

    def _member_columns(self, table: DataTable, training: bool, process: bool = False) -> None:
        """(Re)build the members table's columns: with or without :data:`PROCESS_COLUMNS` and
        :data:`TRAINING_COLUMNS`."""
        table.clear(columns=True)
        columns = (
            MEMBER_COLUMNS
            + (PROCESS_COLUMNS if process else ())
            + (TRAINING_COLUMNS if training else ())
        )
        _add_columns(table, columns)
        width = (PROCESS_ERROR_WIDTH if process else ERROR_WIDTH)[training]
        table.add_column("error", key="error", width=width)
        self._member_column_keys = (*(key for _, key, _, _ in columns), "error")
        self._training_columns = training
        self._process_columns = process
        self._members_keys = []

    def member_process(self, m: MemberRow) -> ProcessReading | None:
        """The latest hardware reading of the member's worker, while it runs on this host."""
        hardware = self.hardware
        pid = m.local_pid(self.hostname)
        return None if hardware is None or pid is None else hardware.process(pid)

    def _show_members(self, snap: RunSnapshot) -> None:
        table = self.query_one("#members", DataTable)
        keys = [f"{m.fold}/{m.member}" for m in snap.members]
        training = any(m.has_training_detail for m in snap.members)
        process = snap.live and any(m.state == "running" for m in snap.members)
        self.query_one("#member-detail", Static).display = training or process
        if (training, process) != (self._training_columns, self._process_columns):
            self._member_columns(table, training, process)
        rows = [
            member_cells(m, training, process, self.member_process(m) if process else None)
            for m in snap.members
        ]
        if keys == self._members_keys:
            for key, cells in zip(keys, rows, strict=True):
                for col, cell in zip(self._member_column_keys, cells, strict=True):
                    table.update_cell(key, col, cell)
            self._show_member_detail()
            return
        cursor = table.cursor_row
        table.clear()
        for key, cells in zip(keys, rows, strict=True):
            table.add_row(*cells, key=key)
        self._members_keys = keys
        if keys:
            table.move_cursor(row=min(cursor, len(keys) - 1), animate=False)
        self._show_member_detail()

    def _show_member_detail(self) -> None:
        """The detail line of the member under the cursor (the table's columns in words)."""
        snap = self.snapshot
        detail = self.query_one("#member-detail", Static)
        if snap is None or not snap.members:
            self.query_one("#curves", CurvesPanel).show(None)
            return
        row = self.query_one("#members", DataTable).cursor_row
        m = snap.members[min(max(row, 0), len(snap.members) - 1)]
        fold_mates = [o for o in snap.members if o.fold == m.fold and o is not m]
        self.query_one("#curves", CurvesPanel).show(m, fold_mates[:MAX_FOLD_MATES])
        if not detail.display:
            return
        # a member "running" in the log of a dead trainer runs nowhere: no process words then
        proc = self.member_process(m) if snap.live else None
        sampled = self.hardware is not None
        detail.update(member_detail(m, proc, self.hostname, live=snap.live, sampled=sampled))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "members":
            self._show_member_detail()

    def _show_folds(self, snap: RunSnapshot) -> None:
        table = self.query_one("#folds", DataTable)
        table.clear()
        ensemble = snap.ensemble
        for f in snap.folds:
            if f.error and not f.oos:
                table.add_row(str(f.fold), Text(f"failed: {f.error}", style="red"))
                continue
            rows = [
                ("ensemble", f.oos, f"{f.members_used}/{ensemble}" if ensemble else "—"),
                ("buy & hold", f.buy_and_hold, ""),
            ]
            if f.buy_and_hold_matched:  # buy and hold at the ensemble's mean exposure
                exposure = number(f.buy_and_hold_matched.get("exposure"))
                share = "?" if exposure is None else f"{exposure:.0%}"
                rows.append((f"B&H @ {share}", f.buy_and_hold_matched, ""))
            for who, metrics, used in rows:
                ret = metrics.get("total_return")
                style = (
                    "" if not isinstance(ret, (int, float)) else ("green" if ret >= 0 else "red")
                )
                table.add_row(
                    str(f.fold) if who == "ensemble" else "",
                    Text(who, style="bold" if who == "ensemble" else "dim"),
                    Text(pct(ret), style=style, justify="right"),
                    Text(num(metrics.get("sharpe")), justify="right"),
                    Text(pct(metrics.get("max_drawdown"), signed=False), justify="right"),
                    Text(times(metrics.get("turnover")), justify="right"),
                    Text(used, justify="right"),
                )
        if not snap.folds:
            table.add_row("—", Text("no fold evaluated yet", style="dim"))

    def current_scope(self) -> str | None:
        snap = self.snapshot
        if snap is None:
            return None
        if self.scope in snap.montecarlo:
            return self.scope
        return snap.default_scope()

    def _show_montecarlo(self, snap: RunSnapshot) -> None:
        scope = self.current_scope()
        stats = snap.montecarlo.get(scope) if scope else None
        title = self.query_one("#mc-title", Label)
        hist = self.query_one("#histogram", Histogram)
        box = self.query_one("#mc-stats", Static)
        if not stats:
            title.update("Monte Carlo")
            hist.update_stats(None)
            box.update(Text("no Monte Carlo statistics yet", style="dim"))
            return
        n_scopes = len(snap.montecarlo_scopes())
        hint = "  (m: next scope)" if n_scopes > 1 else ""
        title.update(f"Monte Carlo: {scope_name(scope)}, final returns (% of start){hint}")
        hist.update_stats(stats)
        loss = stats.get("loss_probability")
        rows = [
            ("simulations", f"{stats.get('simulations', '—')}", ""),
            ("loss probability", pct(loss, signed=False), "bold yellow"),
            ("VaR 95", pct(stats.get("var_95")), "bold red"),
            ("CVaR 95", pct(stats.get("cvar_95")), "red"),
            ("median", pct(stats.get("median")), ""),
            ("mean", pct(stats.get("mean")), ""),
            ("max DD median", pct(stats.get("max_drawdown_median"), signed=False), ""),
            ("max DD p95", pct(stats.get("max_drawdown_p95"), signed=False), ""),
        ]
        text = Text()
        for i, (label, value, style) in enumerate(rows):
            text.append(f"{label:<17}")
            text.append(f"{value:>9}", style=style)
            if i < len(rows) - 1:
                text.append("\n")
        box.update(text)

    def _show_verdict(self, snap: RunSnapshot) -> None:
        scope = self.current_scope()
        self.query_one("#verdict", VerdictPanel).show(snap, scope)
        per_scope = snap.judged or any(f.nulls for f in snap.folds)  # a null-policy table
        hint = "  (m: next scope)" if per_scope and len(snap.montecarlo_scopes()) > 1 else ""
        self.query_one("#verdict-title", Label).update(f"Verdict{hint}")
        # Under the title: the verdict, and how orders filled when judged or optimistic.
        top = self.query_one("#verdict-top", Static)
        shown = verdict_headline(snap) or Text()
        fills = fills_line(snap)
        if fills is not None and (snap.fill_optimistic or shown):
            shown.append("\n" if shown else "")
            shown.append_text(fills)
        top.display = bool(shown)
        top.update(shown)

    # ------------------------------------------------------------------ actions
    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_next_scope(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        scopes = snap.montecarlo_scopes()
        if not scopes:
            self.notify("no Monte Carlo statistics yet")
            return
        current = self.current_scope()
        index = scopes.index(current) if current in scopes else -1
        self.scope = scopes[(index + 1) % len(scopes)]
        self._show_montecarlo(snap)
        self._show_verdict(snap)

    def action_help(self) -> None:
        self.app.push_screen(RunHelpScreen())

    def action_stop(self) -> None:
        self._act("stop")

    def action_resume(self) -> None:
        self._act("resume")

    def action_log(self) -> None:
        self.app.push_screen(LogScreen(self.watcher, self.run_id))

    def _act(self, verb: str) -> None:
        self._run_action(verb, self.run_id)

    @work(thread=True, group="run-action", exit_on_error=False)
    def _run_action(self, verb: str, run_id: str) -> str:
        result = getattr(self.watcher, verb)(run_id)
        return f"{run_id}: {verb} requested" + (f" (state {result})" if verb == "stop" else "")
