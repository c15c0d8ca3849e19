"""The hardware screen: every core, history graphs of total CPU, RAM and each GPU's utilisation and
memory that fill the window, the threads of the running jobs against the machine's limits, and
the training processes of the live runs (CPU %, RSS, threads, GPU memory per worker, named by the
unit it trains): sortable (``s``), with a cursor (up / down) and ``t`` to send SIGTERM to one
worker after a confirmation (:class:`TerminateModal`; what the engine then does is in its text).

Sampling never runs on the UI thread: :class:`~ploutos_tui.screens.base.PollingScreen` calls
``sampler.sample()`` in a worker and schedules the next sample only once this one is drawn, so a
slow sample (a hung NVML call, a huge process tree) delays the next one instead of piling up
behind it. The screen always shows the latest snapshot only. Which unit (fold/member) a worker pid trains
comes from the run's ``member_started`` events, read through the app's runs watcher (its
``poll_run``, in the same worker thread), only while a sample has job processes.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import var
from textual.widgets import Footer, Header, Static

from ploutos_tui.model.sampling import (
    PROC_ROOT,
    HardwareSnapshot,
    JobThreads,
    ProcessReading,
    Sampler,
    read_stat,
)
from ploutos_tui.screens.base import PollingScreen
from ploutos_tui.screens.modal import PanelModal
from ploutos_tui.widgets.gpu import GpuHistory
from ploutos_tui.widgets.heatmap import CoreHeatmap, load_style, plan_layout
from ploutos_tui.widgets.history import HistoryGraph
from ploutos_tui.widgets.lines import LinesWidget

GiB = 1024**3
THREAD_WARNING_FRACTION = 0.8  # above this share of the tightest thread limit: warning style


def _style_for(pct: float):
    return load_style(int(round(max(0.0, min(100.0, pct)) / 5.0) * 5))


def _load(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def cpu_line(snap: HardwareSnapshot, short: bool = False) -> Text:
    """``CPU  88%  load 230 228 226  32 usable of 256 (cgroup cpu.max 32)``; ``short``: the
    1-minute load and ``32/256 usable`` only."""
    text = Text("CPU ", style="bold")
    text.append(f"{snap.cpu_total_pct:3.0f}%", _style_for(snap.cpu_total_pct))
    if short:
        text.append(f"  load {_load(snap.load_avg[0])}  {snap.usable_cpus}/{snap.host_cpus} usable")
        if snap.cpu_quota is not None:
            text.append(f" (cpu.max {snap.cpu_quota:g})")
        return text
    text.append("  load " + " ".join(_load(v) for v in snap.load_avg))
    text.append(f"  {snap.usable_cpus} usable of {snap.host_cpus}")
    why = []
    if snap.affinity_cpus is not None and snap.affinity_cpus < snap.host_cpus:
        why.append(f"affinity {snap.affinity_cpus}")
    if snap.cpu_quota is not None:
        why.append(f"cgroup cpu.max {snap.cpu_quota:g}")
    if why:
        text.append(f" ({', '.join(why)})")
    return text


def mem_line(snap: HardwareSnapshot, short: bool = False) -> Text:
    """``RAM 812.3/1007.7 GiB 81%  cgroup 700.1/900.0 GiB`` (``short``: no "no cgroup limit")."""
    pct = 100.0 * snap.mem_used_bytes / snap.mem_total_bytes if snap.mem_total_bytes else 0.0
    text = Text("RAM ", style="bold")
    text.append(
        f"{snap.mem_used_bytes / GiB:.1f}/{snap.mem_total_bytes / GiB:.1f} GiB {pct:.0f}%",
        _style_for(pct),
    )
    limit = snap.mem_limit_bytes
    if limit is None:
        if not short:
            text.append("  no cgroup limit", style="dim")
    elif snap.mem_cgroup_used_bytes is not None:
        cg_pct = 100.0 * snap.mem_cgroup_used_bytes / limit
        text.append("  cgroup ")
        text.append(
            f"{snap.mem_cgroup_used_bytes / GiB:.1f}/{limit / GiB:.1f} GiB", _style_for(cg_pct)
        )
    else:
        text.append(f"  cgroup limit {limit / GiB:.1f} GiB")
    return text


def threads_line(snap: HardwareSnapshot) -> tuple[Text, bool]:
    """Threads against the tightest limit (named), and whether that is above the warning line."""
    against = snap.threads_against_limit()
    if against is None:
        count = "?" if snap.machine_threads is None else f"{snap.machine_threads:,}"
        return Text(f"machine threads {count}\nno thread limit found", style=""), False
    used, name, limit = against
    fraction = used / limit
    warning = fraction > THREAD_WARNING_FRACTION
    by_cgroup = name == "cgroup pids.max" and snap.pids_current is not None
    text = Text("cgroup tasks " if by_cgroup else "threads ", style="bold")
    text.append(f"{used:,} of {limit:,} ")
    text.append(f"({100 * fraction:.0f}%)", style="bold" if warning else "")
    text.append(f"\nlimit: {name}", style="" if warning else "dim")
    if by_cgroup and snap.machine_threads is not None:
        text.append(f" · machine threads {snap.machine_threads:,}", style="dim")
    if warning:
        text.append("\n⚠ near the limit", style="bold")
    return text, warning


def job_text(job: JobThreads, max_vars: int = 1, compact: bool = False) -> Text:
    """Run id and pid, processes and threads, and whether its BLAS pools are capped at 1 (on
    three lines, or one when ``compact``)."""
    text = Text(job.run_id, style="bold")
    if compact:
        text.append(f" · {job.processes} procs, {job.threads:,} threads · ")
    else:
        text.append(f"  pid {job.pid}\n  {job.processes} procs, {job.threads:,} threads\n  ")
    if job.sanitized is None:
        text.append("BLAS env unreadable", style="dim")
    elif job.sanitized:
        text.append("BLAS sanitized ✓", style="green")
    else:
        bad = [f"{k}={'unset' if v is None else v}" for k, v in job.unsanitized_vars.items()]
        shown = " ".join(bad[:max_vars])
        more = f" +{len(bad) - max_vars} more" if len(bad) > max_vars else ""
        text.append(f"NOT sanitized ({shown}{more})", style="bold red")
    return text


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 2**20:.0f} MiB" if n < GiB else f"{n / GiB:.1f} GiB"


def _cpu(pct: float | None) -> str:
    return "—" if pct is None else f"{pct:.0f}%"


# label, width, right-aligned
# (the run last: a narrow terminal crops it, not the numbers; its width is only its header's)
PROCESS_COLUMNS = (
    ("pid", 8, True),
    ("unit", 9, False),
    ("CPU %", 6, True),
    ("RSS", 9, True),
    ("threads", 8, True),
    ("GPU mem", 9, True),
    ("run", 26, False),
)

Cells = tuple[str, str, str, str, str, str, str]


@dataclass(frozen=True)
class ProcessRow:
    """One line of the training processes table: a trainer, a worker named by its unit, or a
    job's other processes summed (``pid`` None)."""

    cells: Cells
    run_id: str
    pid: int | None = None
    unit: str | None = None  # "fold/member" of a worker (a trainer running one too: its unit)
    trainer: bool = False
    start_ticks: int = 0
    cpu_pct: float | None = None
    rss_bytes: int = 0
    threads: int = 0
    gpu_mem_bytes: int | None = None

    @property
    def worker(self) -> bool:
        """A unit's worker process (what ``t`` may send SIGTERM to)."""
        return self.pid is not None and self.unit is not None and not self.trainer


def _unit_order(unit: str | None) -> tuple[int, ...]:
    fold, _, member = (unit or "").partition("/")
    return (int(fold), int(member)) if fold.isdigit() and member.isdigit() else (1 << 30,)


# name shown in the header, the column it marks, how rows compare (None: the unit order), and
# whether the biggest comes first
SORTS: tuple[tuple[str, int, Callable[[ProcessRow], Any] | None, bool], ...] = (
    ("unit", 1, None, False),
    ("CPU %", 2, lambda r: -1.0 if r.cpu_pct is None else r.cpu_pct, True),
    ("RSS", 3, lambda r: r.rss_bytes, True),
    ("GPU mem", 5, lambda r: -1 if r.gpu_mem_bytes is None else r.gpu_mem_bytes, True),
    ("threads", 4, lambda r: r.threads, True),
    ("pid", 0, lambda r: r.pid or 0, False),
)


def _gpu_sum(procs: list[ProcessReading]) -> int | None:
    known = [p.gpu_mem_bytes for p in procs if p.gpu_mem_bytes is not None]
    return sum(known) if known else None


def table_rows(snap: HardwareSnapshot, units: Mapping[int, str], sort: int = 0) -> list[ProcessRow]:
    """The training processes table, run by run: its trainer (the job's pid) and each worker
    whose pid a running unit's events name (``units``: pid to ``fold/member``), ordered by
    :data:`SORTS` ``[sort]`` (the unit order: trainer first, then fold and member); the job's
    other processes (forkserver, helpers, a worker not named yet) last, in one ``+N other`` row
    of their sums. CPU is percent of one core since the previous sample (``—`` on the first)."""
    rows: list[ProcessRow] = []
    by_run: dict[str, list[ProcessReading]] = {}
    for proc in snap.processes:
        by_run.setdefault(proc.run_id, []).append(proc)
    roots = {job.run_id: job.pid for job in snap.jobs}
    _name, _column, key, biggest_first = SORTS[sort % len(SORTS)]
    for run_id in sorted(by_run):
        procs = by_run[run_id]
        root = roots.get(run_id)
        named: list[ProcessRow] = []
        others = []
        for proc in procs:
            unit = units.get(proc.pid)
            if proc.pid != root and unit is None:
                others.append(proc)
                continue
            trainer = proc.pid == root
            label = unit if not trainer else ("trainer" + (f" {unit}" if unit else ""))
            cells = (
                str(proc.pid),
                label or "",
                _cpu(proc.cpu_pct),
                _size(proc.rss_bytes),
                f"{proc.threads:,}",
                _size(proc.gpu_mem_bytes),
                run_id,
            )
            named.append(
                ProcessRow(
                    cells,
                    run_id,
                    proc.pid,
                    unit,
                    trainer,
                    proc.start_ticks,
                    proc.cpu_pct,
                    proc.rss_bytes,
                    proc.threads,
                    proc.gpu_mem_bytes,
                )
            )
        named.sort(key=lambda r: (not r.trainer, _unit_order(r.unit), r.pid or 0))
        if key is not None:  # a stable sort: ties keep the unit order
            named.sort(key=key, reverse=biggest_first)
        rows.extend(named)
        if others:
            measured = [p.cpu_pct for p in others if p.cpu_pct is not None]
            cells = (
                "",
                f"+{len(others)} other",
                _cpu(sum(measured)) if measured else "—",
                _size(sum(p.rss_bytes for p in others)),
                f"{sum(p.threads for p in others):,}",
                _size(_gpu_sum(others)),
                run_id,
            )
            rows.append(ProcessRow(cells, run_id))
    return rows


def process_rows(snap: HardwareSnapshot, units: Mapping[int, str], sort: int = 0) -> list[Cells]:
    """:func:`table_rows` as the cells shown."""
    return [row.cells for row in table_rows(snap, units, sort)]


def _line(cells: Sequence[str]) -> str:
    return "  ".join(
        cell.rjust(width) if right else cell.ljust(width)
        for cell, (_, width, right) in zip(cells, PROCESS_COLUMNS, strict=True)
    ).rstrip()


def header_cells(sort: int = 0) -> tuple[str, ...]:
    """The column labels, the sorted one marked ``▼`` (biggest first) or ``▲``."""
    _name, column, _key, biggest_first = SORTS[sort % len(SORTS)]
    mark = "▼" if biggest_first else "▲"
    return tuple(
        label + mark if k == column else label for k, (label, _, _) in enumerate(PROCESS_COLUMNS)
    )


def process_table_text(rows: Sequence[Cells], sort: int = 0) -> Text:
    """Rows as aligned columns under a bold header, one line each (cropped, never wrapped)."""
    out = Text(no_wrap=True, overflow="crop")
    out.append(_line(header_cells(sort)), style="bold")
    for row in rows:
        out.append("\n" + _line(row), style="dim" if not row[0] else "")
    return out


class ProcessTable(LinesWidget):
    """The training processes: a header and as many rows as its height holds, scrolled to keep
    the cursor (a highlighted row, which follows its process when the rows re-sort) in view."""

    DEFAULT_CSS = """
    ProcessTable {
        height: auto;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[ProcessRow] = []
        self.sort = 0
        self.cursor = 0
        self.top_row = 0
        self._cursor_pid: int | None = None

    @property
    def current(self) -> ProcessRow | None:
        """The row under the cursor (None without rows)."""
        return self.rows[self.cursor] if self.rows else None

    def show(self, rows: list[ProcessRow], sort: int) -> None:
        """New rows (the cursor stays on its process while that has a row)."""
        if rows == self.rows and sort == self.sort:
            return
        self.rows, self.sort = rows, sort
        if self._cursor_pid is not None:
            found = next((k for k, r in enumerate(rows) if r.pid == self._cursor_pid), None)
            if found is not None:
                self.cursor = found
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        self._cursor_pid = self.current.pid if self.current else None
        self.update_lines()

    def move(self, delta: int) -> None:
        if not self.rows:
            return
        self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))
        self._cursor_pid = self.rows[self.cursor].pid
        self.update_lines()

    def build(self, width: int, height: int) -> list[Text]:
        lines = [Text(_line(header_cells(self.sort)), style="bold", no_wrap=True, end="")]
        room = max(0, height - 1)
        if room and self.rows:
            if self.cursor < self.top_row:
                self.top_row = self.cursor
            elif self.cursor >= self.top_row + room:
                self.top_row = self.cursor - room + 1
            self.top_row = max(0, min(self.top_row, max(0, len(self.rows) - room)))
            for k in range(self.top_row, min(len(self.rows), self.top_row + room)):
                row = self.rows[k]
                style = "dim" if row.pid is None else ""
                if k == self.cursor:
                    style = "reverse"
                line = Text(_line(row.cells), style=style, no_wrap=True, end="")
                if k == self.cursor:
                    line.pad_right(max(0, width - line.cell_len))
                lines.append(line)
        return [line[:width] if line.cell_len > width else line for line in lines]


# --------------------------------------------------------------------------- SIGTERM


def terminate_text(row: ProcessRow) -> Text:
    """What the confirmation says: whom it signals and what the engine then does."""
    fold, _, member = (row.unit or "?/?").partition("/")
    text = Text("Send SIGTERM to pid ", style="bold")
    text.append(f"{row.pid}", style="bold")
    text.append(f", the worker of unit {row.unit} (fold {fold}, member {member}) of run ")
    text.append(row.run_id, style="bold")
    text.append("?\n\n")
    text.append(
        "The worker saves a checkpoint at its next check and exits; its trainer records the unit "
        "as stopped (member_stopped) and does not start it again in this run. The other units go "
        "on: the fold is then evaluated with its finished members only (one fewer), and once the "
        "run has finished, `ploutos resume` no longer brings this unit back. To keep every unit "
        "resumable, stop the whole run instead (s on the Jobs screen).\n\n"
    )
    text.append("y / enter: send SIGTERM   n / esc: cancel", style="dim")
    return text


def signal_worker(
    row: ProcessRow,
    live_trainers: Mapping[str, int],
    proc_root: Path = PROC_ROOT,
    kill: Callable[[int, int], None] = os.kill,
) -> tuple[bool, str]:
    """SIGTERM to ``row``'s worker if it still is that process (same start time) and still a
    descendant of its run's live trainer (``live_trainers``: run id to trainer pid, read now);
    (sent, one line saying what happened). Never raises for a process that is gone."""
    pid, run_id = row.pid, row.run_id
    if pid is None or not row.worker:
        return False, "only a unit's worker can be stopped here: nothing sent"
    trainer = live_trainers.get(run_id)
    if trainer is None:
        return False, f"run {run_id} is no longer live: nothing sent to pid {pid}"
    stat = read_stat(pid, proc_root)
    if stat is None:
        return False, f"pid {pid} is gone (unit {row.unit} ended): nothing sent"
    if row.start_ticks and stat.start_ticks != row.start_ticks:
        return False, f"pid {pid} is another process now (unit {row.unit} ended): nothing sent"
    parent, seen = stat.ppid, 0
    while parent not in (trainer, 0, 1) and seen < 64:
        up = read_stat(parent, proc_root)
        parent, seen = (0 if up is None else up.ppid), seen + 1
    if parent != trainer or pid == trainer:
        return False, f"pid {pid} is no longer a worker of run {run_id}'s trainer: nothing sent"
    try:
        kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False, f"pid {pid} is gone (unit {row.unit} ended): nothing sent"
    except PermissionError:
        return False, f"not allowed to signal pid {pid}: nothing sent"
    return True, (
        f"SIGTERM sent to pid {pid} (unit {row.unit} of {run_id}): it checkpoints and stops; "
        "the run shows it as stopped"
    )


class TerminateModal(PanelModal[bool]):
    """Asks before a worker gets SIGTERM: y / enter sends it, n / escape cancels."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Send SIGTERM"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]
    DEFAULT_CSS = """
    TerminateModal { align: center middle; }
    TerminateModal #hw-term { width: 90%; max-width: 84; height: auto; border: round $error;
        padding: 0 1; background: $surface; }
    """

    def __init__(self, row: ProcessRow) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        yield Static(terminate_text(self.row), id="hw-term")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#hw-term").border_title = "Stop one unit"

    def action_answer(self, send: bool) -> None:
        self.dismiss(send)


# --------------------------------------------------------------------------- the screen


class HardwareScreen(PollingScreen[tuple[HardwareSnapshot, dict[int, str]]]):
    """Cores, RAM, GPUs, threads and the training processes, sampled every ``interval_s``
    seconds off the UI thread."""

    SUB_TITLE = "hardware"
    PAUSE_WHEN_COVERED = False  # the history graphs keep going while another mode is shown
    MAX_GRAPH_ROWS = 20
    WIDE = 150  # from this width: CPU beside RAM is roomy, the threads box beside the table

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor(-10)", "Page up", show=False),
        Binding("pagedown", "cursor(10)", "Page down", show=False),
        Binding("home", "cursor(-100000)", "First", show=False),
        Binding("end", "cursor(100000)", "Last", show=False),
        Binding("s", "sort", "Sort"),
        Binding("t", "terminate", "SIGTERM unit"),
    ]

    DEFAULT_CSS = """
    HardwareScreen {
        layout: vertical;
        overflow: hidden hidden;
    }
    HardwareScreen #hw-cpu, HardwareScreen #hw-gpus {
        height: auto;
        border: round $primary;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0 1;
    }
    HardwareScreen #hw-host {
        height: auto;
    }
    HardwareScreen #hw-host > HistoryGraph {
        width: 1fr;
    }
    HardwareScreen #hw-cpu-graph {
        margin-right: 2;
    }
    HardwareScreen #hw-no-gpu {
        color: $text-muted;
        height: 1;
    }
    HardwareScreen #hw-bottom {
        height: auto;
        layout: vertical;
    }
    HardwareScreen.-wide #hw-bottom {
        layout: horizontal;
    }
    HardwareScreen #hw-procs {
        border: round $primary;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0 1;
        width: 1fr;
    }
    HardwareScreen #hw-threads {
        height: auto;
        border: round $primary;
        border-title-style: bold;
        padding: 0 1;
        width: 1fr;
    }
    HardwareScreen.-wide #hw-threads {
        width: 56;
    }
    HardwareScreen #hw-threads.-warning {
        border: round $error;
    }
    HardwareScreen #hw-thread-total.-warning {
        color: $error;
    }
    """

    UNITS_EVERY_S = 5.0  # a steady process tree: its run's events are re-read this often

    snapshot: var[HardwareSnapshot | None] = var(None)
    """The snapshot on screen now (None before the first sample)."""

    def __init__(
        self,
        sampler: Sampler,
        interval_s: float = 1.0,
        history: int = 240,
        *,
        watcher: Any = None,
        hostname: str | None = None,
        proc_root: Path = PROC_ROOT,
        kill: Callable[[int, int], None] = os.kill,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(interval_s, name=name, id=id, classes=classes)
        self.sampler = sampler
        # where the units of worker pids are read: given, else the app's runs watcher (on mount)
        self.watcher = watcher
        self.hostname = hostname or socket.gethostname()
        self.proc_root = proc_root
        self.kill = kill
        self.units: dict[int, str] = {}  # worker pid -> "fold/member", as of the last sample
        self.sort = 0  # index into SORTS
        self.last_signal = ""  # what the last SIGTERM attempt said
        # run id -> (when its events were read, its process tree then, the units they named)
        self._units_cache: dict[str, tuple[float, frozenset[int], dict[int, str]]] = {}
        self.history = max(2, history)
        self.samples_shown = 0
        self.last_error = ""
        self._cpu_history: deque[float] = deque(maxlen=self.history)
        self._mem_history: deque[float] = deque(maxlen=self.history)
        self._gpu_util: dict[int, deque[float]] = {}
        self._gpu_mem: dict[int, deque[float]] = {}
        self._shown: dict[str, Text] = {}
        self._layout: tuple[Any, ...] | None = None

    @property
    def latest(self) -> HardwareSnapshot | None:
        return self.snapshot

    @property
    def table(self) -> ProcessTable:
        return self.query_one(ProcessTable)

    def gpu_history(self, index: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The utilisation and memory history (percent) kept for GPU ``index``."""
        return tuple(self._gpu_util.get(index, ())), tuple(self._gpu_mem.get(index, ()))

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="hw-cpu"):
            yield CoreHeatmap(id="hw-heatmap")
            with Horizontal(id="hw-host"):
                yield HistoryGraph(id="hw-cpu-graph")
                yield HistoryGraph(id="hw-mem-graph")
        with Vertical(id="hw-gpus"):
            yield Static("sampling…", id="hw-no-gpu")
        with Horizontal(id="hw-bottom"):
            yield ProcessTable(id="hw-procs")
            with VerticalScroll(id="hw-threads"):
                yield Static(id="hw-thread-total")
                yield Static(id="hw-jobs")
        yield Footer()

    def on_mount(self) -> None:
        if self.watcher is None:
            self.watcher = getattr(self.app, "watcher", None)
        self.query_one("#hw-cpu").border_title = "CPU"
        self.query_one("#hw-gpus").border_title = "GPU"
        threads = self.query_one("#hw-threads")
        threads.border_title = "Threads"
        threads.can_focus = False  # up / down move the table's cursor
        procs = self.query_one("#hw-procs")
        procs.border_title = "Training processes"
        procs.display = False
        self._fit()
        self.poll_now()

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        """Share the height out: the cores a few rows (more when tall), the table of training
        processes up to a third of the screen, the threads box what its lines need, and the
        history graphs (CPU and RAM side by side, then each GPU's utilisation beside its
        memory) grow into the rest, all equally tall; with too little left each graph is one
        line, and on a short screen the threads box gives its room to the table (its count
        then in the table's subtitle)."""
        width, height = self.size
        if width <= 0 or height <= 0:
            return
        wide = width >= self.WIDE
        snap = self.snapshot
        cores = len(snap.per_core_pct) if snap is not None else 0
        gpus = len(snap.gpus) if snap is not None else 0
        jobs = tuple(snap.jobs) if snap is not None else ()
        rows = len(self.table.rows)
        inner = max(1, width - 4)
        core_rows = 2 if height < 30 else 3 if height < 40 else 4
        if cores:
            per_row = plan_layout(cores, inner, core_rows)[2]
            heat = -(-cores // per_row) + 1
        else:
            heat = 1
        fixed = 2 + (2 + heat) + (2 if gpus else 3)  # header, footer; CPU box; GPU box
        table = 0 if not rows else 3 + min(rows, max(2, height // 3))
        # the total (2 lines), then per job 3 lines (wide) or 1
        thread_lines = 2 + (max(1, 3 * len(jobs)) if wide else max(1, len(jobs)))
        threads_box = 2 + thread_lines
        graphs = 1 + gpus  # rows of graphs: CPU / RAM, then one per GPU
        bottom = max(table, threads_box) if wide else table + threads_box
        show_threads = True
        if not wide and height - fixed - bottom < graphs:
            show_threads, bottom = False, table  # a short screen: the table keeps its rows
        if table and height - fixed - bottom < graphs:
            table = max(4, height - fixed - graphs)
            bottom = table if not (wide and show_threads) else max(table, threads_box)
        budget = height - fixed - bottom
        best = max(0, min(self.MAX_GRAPH_ROWS, budget // graphs - 1))
        # what the equal shares leave goes to CPU and RAM: no blank line above the footer
        spare = max(0, budget - graphs * (1 + best))
        layout = (wide, core_rows, best, spare, table, bottom, show_threads, gpus)
        if layout == self._layout:
            return
        self._layout = layout
        self.set_class(wide, "-wide")
        self.query_one(CoreHeatmap).max_rows = core_rows
        for graph_id in ("#hw-cpu-graph", "#hw-mem-graph"):
            self.query_one(graph_id, HistoryGraph).styles.height = 1 + best + spare
        for card in self.query(GpuHistory):
            card.set_rows(best)
        procs = self.query_one("#hw-procs", ProcessTable)
        procs.display = bool(table)
        if table:
            procs.styles.height = table
        threads = self.query_one("#hw-threads")
        threads.display = show_threads
        if show_threads:
            threads.styles.height = bottom if wide and table else threads_box
        self.query_one("#hw-bottom").styles.height = bottom if (table or show_threads) else 0

    # ------------------------------------------------------------------ sampling

    def sample_now(self) -> None:
        """Take a sample at once unless one is being taken; the schedule goes on from there."""
        if not self.polling:
            self.poll_now()

    def fetch(self) -> tuple[HardwareSnapshot, dict[int, str]]:
        snap = self.sampler.sample()
        return snap, self._units(snap)

    def _units(self, snap: HardwareSnapshot) -> dict[int, str]:
        """``{worker pid: "fold/member"}`` of the running units on this host of the sampled jobs,
        from their runs' events (worker thread); empty without job processes or a watcher.

        A run's events are read again when its process tree changed (a worker started or
        ended), else at most every :attr:`UNITS_EVERY_S` seconds: a steady tree costs no
        event reading per sample."""
        watcher = self.watcher
        poll = getattr(watcher, "poll_run", None)
        if not snap.processes or poll is None:
            self._units_cache.clear()
            return {}
        pids: dict[str, set[int]] = {}
        for proc in snap.processes:
            pids.setdefault(proc.run_id, set()).add(proc.pid)
        trees = {run_id: frozenset(found) for run_id, found in pids.items()}
        now = time.monotonic()
        units: dict[int, str] = {}
        for job in snap.jobs:
            tree = trees.get(job.run_id, frozenset())
            cached = self._units_cache.get(job.run_id)
            if cached is None or cached[1] != tree or now - cached[0] >= self.UNITS_EVERY_S:
                found: dict[int, str] = {}
                try:
                    run = poll(job.run_id)
                except Exception:  # a run folder that cannot be read names no unit
                    run = None
                for m in getattr(run, "members", ()):
                    pid = m.local_pid(self.hostname)
                    if pid is not None:
                        found[pid] = f"{m.fold}/{m.member}"
                cached = (now, tree, found)
                self._units_cache[job.run_id] = cached
            units.update(cached[2])
        for gone in set(self._units_cache) - {job.run_id for job in snap.jobs}:
            del self._units_cache[gone]
        return units

    def draw(self, result: tuple[HardwareSnapshot, dict[int, str]]) -> None:
        self.last_error = ""
        snap, self.units = result
        self._show(snap)
        self.samples_shown += 1

    def draw_error(self, error: BaseException) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        self.query_one("#hw-cpu").border_subtitle = f"sampling failed: {self.last_error}"
        self.samples_shown += 1

    # ------------------------------------------------------------------ keys

    def action_cursor(self, delta: int) -> None:
        self.table.move(delta)

    def action_sort(self) -> None:
        """The next sort column (shown in the table's header and subtitle)."""
        self.sort = (self.sort + 1) % len(SORTS)
        self._show_processes()

    def action_terminate(self) -> None:
        """Ask before SIGTERM to the worker under the cursor."""
        row = self.table.current
        if row is None:
            self.last_signal = "no training process to stop"
            self.notify(self.last_signal, severity="warning")
            return
        if not row.worker:
            what = "a trainer" if row.trainer else "not one unit's worker"
            self.last_signal = (
                f"the cursor is on {what}: move it (up / down) to a unit's worker to stop it"
            )
            self.notify(self.last_signal, severity="warning")
            return

        def answered(send: bool | None) -> None:
            if send:
                self._send_sigterm(row)

        self.app.push_screen(TerminateModal(row), answered)

    def _send_sigterm(self, row: ProcessRow) -> None:
        """Check again, now, that the pid is still that worker of a live run; then signal it."""
        try:
            trainers = dict(self.watcher.job_pids()) if self.watcher is not None else {}
        except Exception as err:  # the runs folder cannot be read: nothing is sent
            trainers = {}
            self.last_signal = f"cannot read the live runs ({err}): nothing sent"
            self.notify(self.last_signal, severity="error")
            return
        sent, self.last_signal = signal_worker(row, trainers, self.proc_root, self.kill)
        self.notify(self.last_signal, severity="information" if sent else "warning")
        if sent:
            self.sample_now()

    # ------------------------------------------------------------------ rendering

    def _update(self, selector: str, text: Text) -> None:
        """Update a Static only when its text changed."""
        if self._shown.get(selector) != text:
            self._shown[selector] = text
            self.query_one(selector, Static).update(text)

    def _show(self, snap: HardwareSnapshot) -> None:
        self.snapshot = snap
        self.query_one(CoreHeatmap).loads = snap.per_core_pct
        self._cpu_history.append(snap.cpu_total_pct)
        mem_pct = 100.0 * snap.mem_used_bytes / snap.mem_total_bytes if snap.mem_total_bytes else 0
        self._mem_history.append(mem_pct)
        short = self.size.width < self.WIDE
        cpu_text, mem_text = cpu_line(snap, short), mem_line(snap, short)
        self.query_one("#hw-cpu-graph", HistoryGraph).show(cpu_text, self._cpu_history)
        self.query_one("#hw-mem-graph", HistoryGraph).show(mem_text, self._mem_history)
        # no clock: a subtitle that changes every second repaints the whole box
        self.query_one(
            "#hw-cpu"
        ).border_subtitle = (
            f"a sample every {self.interval_s:g} s · sampled in {snap.sample_ms:.0f} ms"
        )
        self._show_gpus(snap)
        self._show_threads(snap)
        self._show_processes()
        self._fit()

    def _show_processes(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        rows = table_rows(snap, self.units, self.sort)
        table = self.table
        table.show(rows, self.sort)
        if rows:
            name = SORTS[self.sort][0]
            if self.size.width >= self.WIDE:
                table.border_subtitle = (
                    f"CPU % of one core since the last sample · sorted by {name} (s) · "
                    "t: SIGTERM the unit under the cursor"
                )
            else:
                table.border_subtitle = f"sorted by {name} (s) · t: SIGTERM · CPU % of one core"
            self._fit()

    def _show_gpus(self, snap: HardwareSnapshot) -> None:
        panel = self.query_one("#hw-gpus")
        no_gpu = self.query_one("#hw-no-gpu", Static)
        for gpu in snap.gpus:
            self._gpu_util.setdefault(gpu.index, deque(maxlen=self.history)).append(gpu.util_pct)
            self._gpu_mem.setdefault(gpu.index, deque(maxlen=self.history)).append(gpu.mem_pct)
        cards = list(panel.query(GpuHistory))
        if [card.index for card in cards] != [gpu.index for gpu in snap.gpus]:
            for card in cards:
                card.remove()
            cards = [GpuHistory(gpu.index, id=f"hw-gpu-{gpu.index}") for gpu in snap.gpus]
            if cards:
                panel.mount_all(cards)
            self._layout = None  # the new cards get their height at the next fit

            def shown() -> None:
                self._show_gpus_now()
                self._fit()

            self.call_after_refresh(shown)
        else:
            self._show_gpus_now()
        if snap.gpus:
            no_gpu.display = False
            panel.border_title = "GPU" if len(snap.gpus) == 1 else f"GPUs ({len(snap.gpus)})"
            panel.border_subtitle = "utilisation · temperature · power | memory"
        else:
            no_gpu.display = True
            text = Text("no GPU", style="bold")
            if snap.gpu_note:
                text.append(f": {snap.gpu_note}", style="")
            self._update("#hw-no-gpu", text)
            panel.border_title = "GPU"
            panel.border_subtitle = ""

    def _show_gpus_now(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        cards = {card.index: card for card in self.query(GpuHistory)}
        for gpu in snap.gpus:
            card = cards.get(gpu.index)
            if card is not None and card.is_mounted and card.children:
                short = self.size.width < self.WIDE
                card.show(gpu, self._gpu_util[gpu.index], self._gpu_mem[gpu.index], short)

    def _show_threads(self, snap: HardwareSnapshot) -> None:
        line, warning = threads_line(snap)
        self._update("#hw-thread-total", line)
        self.query_one("#hw-thread-total").set_class(warning, "-warning")
        self.query_one("#hw-threads").set_class(warning, "-warning")
        compact = not self.has_class("-wide")
        if snap.jobs:
            jobs = Text("\n").join(job_text(job, compact=compact) for job in snap.jobs)
        else:
            jobs = Text("no running jobs", style="dim")
        self._update("#hw-jobs", jobs)
