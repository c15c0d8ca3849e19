"""The hardware screen, the panel's home: CPU cores, RAM, GPUs, threads of the running jobs, and
their training processes (CPU %, RSS, threads, GPU memory per worker, named by the unit it trains).

Sampling never runs on the UI thread: :class:`~ploutos_tui.screens.base.PollingScreen` calls
``sampler.sample()`` in a worker and schedules the next sample only once this one is drawn, so a
slow sample (a hung NVML call, a huge process tree) delays the next one instead of piling up
behind it. The screen always shows the latest snapshot only. Which unit (fold/member) a worker pid trains
comes from the run's ``member_started`` events, read through the app's runs watcher (its
``poll_run``, in the same worker thread), only while a sample has job processes.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import var
from textual.widgets import Footer, Header, Static

from ploutos_tui.model.sampling import HardwareSnapshot, JobThreads, ProcessReading, Sampler
from ploutos_tui.screens.base import PollingScreen
from ploutos_tui.widgets.gpu import GpuCard, PercentSparkline
from ploutos_tui.widgets.heatmap import CoreHeatmap, load_style

GiB = 1024**3
THREAD_WARNING_FRACTION = 0.8  # above this share of the tightest thread limit: warning style


def _style_for(pct: float):
    return load_style(int(round(max(0.0, min(100.0, pct)) / 5.0) * 5))


def _load(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def cpu_line(snap: HardwareSnapshot) -> Text:
    """``CPU  88%  load 230 228 226  32 usable of 256 (cgroup cpu.max 32)``."""
    text = Text("CPU ", style="bold")
    text.append(f"{snap.cpu_total_pct:3.0f}%", _style_for(snap.cpu_total_pct))
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


def mem_line(snap: HardwareSnapshot) -> Text:
    """``RAM 812.3/1007.7 GiB 81%  cgroup 700.1/900.0 GiB``."""
    pct = 100.0 * snap.mem_used_bytes / snap.mem_total_bytes if snap.mem_total_bytes else 0.0
    text = Text("RAM ", style="bold")
    text.append(
        f"{snap.mem_used_bytes / GiB:.1f}/{snap.mem_total_bytes / GiB:.1f} GiB {pct:.0f}%",
        _style_for(pct),
    )
    limit = snap.mem_limit_bytes
    if limit is None:
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


def job_text(job: JobThreads, max_vars: int = 1) -> Text:
    """Run id and pid, processes and threads, and whether its BLAS pools are capped at 1."""
    text = Text(job.run_id, style="bold")
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
    ("threads", 7, True),
    ("GPU mem", 9, True),
    ("run", 26, False),
)


def _gpu_sum(procs: list[ProcessReading]) -> int | None:
    known = [p.gpu_mem_bytes for p in procs if p.gpu_mem_bytes is not None]
    return sum(known) if known else None


def process_rows(
    snap: HardwareSnapshot, units: Mapping[int, str]
) -> list[tuple[str, str, str, str, str, str, str]]:
    """The training processes table: per job its trainer (the job's pid) and each worker whose
    pid a running unit's events name (``units``: pid to ``fold/member``), in unit order; the
    job's other processes (forkserver, helpers, a worker not named yet) in one ``+N other`` row
    of their sums. CPU is percent of one core since the previous sample (``—`` on the first)."""
    rows: list[tuple[str, str, str, str, str, str, str]] = []
    by_run: dict[str, list[ProcessReading]] = {}
    for proc in snap.processes:
        by_run.setdefault(proc.run_id, []).append(proc)
    roots = {job.run_id: job.pid for job in snap.jobs}

    def unit_key(proc: ProcessReading) -> tuple[int, ...]:
        fold, _, member = units[proc.pid].partition("/")
        return (int(fold), int(member)) if fold.isdigit() and member.isdigit() else (1 << 30,)

    for run_id in sorted(by_run):
        procs = by_run[run_id]
        root = roots.get(run_id)
        trainer = [p for p in procs if p.pid == root]
        workers = sorted((p for p in procs if p.pid in units and p.pid != root), key=unit_key)
        others = [p for p in procs if p.pid != root and p.pid not in units]
        for proc in trainer + workers:
            unit = units.get(proc.pid)
            label = unit if proc.pid != root else ("trainer" + (f" {unit}" if unit else ""))
            rows.append(
                (
                    str(proc.pid),
                    label,
                    _cpu(proc.cpu_pct),
                    _size(proc.rss_bytes),
                    f"{proc.threads:,}",
                    _size(proc.gpu_mem_bytes),
                    run_id,
                )
            )
        if others:
            measured = [p.cpu_pct for p in others if p.cpu_pct is not None]
            rows.append(
                (
                    "",
                    f"+{len(others)} other",
                    _cpu(sum(measured)) if measured else "—",
                    _size(sum(p.rss_bytes for p in others)),
                    f"{sum(p.threads for p in others):,}",
                    _size(_gpu_sum(others)),
                    run_id,
                )
            )
    return rows


def _line(cells: tuple[str, ...]) -> str:
    return "  ".join(
        cell.rjust(width) if right else cell.ljust(width)
        for cell, (_, width, right) in zip(cells, PROCESS_COLUMNS, strict=True)
    ).rstrip()


def process_table_text(rows: list[tuple[str, str, str, str, str, str, str]]) -> Text:
    """:func:`process_rows` as aligned columns under a bold header, one line each (cropped,
    never wrapped, in a narrow terminal)."""
    out = Text(no_wrap=True, overflow="crop")
    out.append(_line(tuple(label for label, _, _ in PROCESS_COLUMNS)), style="bold")
    for row in rows:
        out.append("\n" + _line(row), style="dim" if not row[0] else "")
    return out


class HardwareScreen(PollingScreen[tuple[HardwareSnapshot, dict[int, str]]]):
    """Cores, RAM, GPUs and threads, sampled every ``interval_s`` seconds off the UI thread."""

    SUB_TITLE = "hardware"
    PAUSE_WHEN_COVERED = False  # the history sparklines keep going while another mode is shown

    DEFAULT_CSS = """
    HardwareScreen {
        layout: vertical;
    }
    HardwareScreen #hw-cpu {
        height: auto;
        border: round $primary;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0 1;
    }
    HardwareScreen .hw-row {
        height: 1;
    }
    HardwareScreen .hw-row > Static {
        width: auto;
        max-width: 100%;
    }
    HardwareScreen .hw-row > PercentSparkline {
        width: 1fr;
        min-width: 0;
        margin-left: 2;
    }
    HardwareScreen #hw-bottom {
        height: 1fr;
        min-height: 6;
    }
    HardwareScreen #hw-gpus, HardwareScreen #hw-threads {
        width: 1fr;
        height: 1fr;
        border: round $primary;
        border-title-style: bold;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    HardwareScreen #hw-no-gpu {
        color: $text-muted;
    }
    HardwareScreen #hw-threads.-warning {
        border: round $error;
    }
    HardwareScreen #hw-thread-total.-warning {
        color: $error;
    }
    HardwareScreen #hw-jobs {
        margin-top: 1;
    }
    HardwareScreen #hw-procs {
        height: auto;
        max-height: 12;
        border: round $primary;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    HardwareScreen #hw-procs-table {
        text-wrap: nowrap;
        text-overflow: clip;
    }
    """

    UNITS_EVERY_S = 5.0  # a steady process tree: its run's events are re-read this often

    snapshot: var[HardwareSnapshot | None] = var(None)
    """The snapshot on screen now (None before the first sample)."""

    def __init__(
        self,
        sampler: Sampler,
        interval_s: float = 1.0,
        history: int = 60,
        *,
        watcher: Any = None,
        hostname: str | None = None,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(interval_s, name=name, id=id, classes=classes)
        self.sampler = sampler
        # where the units of worker pids are read: given, else the app's runs watcher (on mount)
        self.watcher = watcher
        self.hostname = hostname or socket.gethostname()
        self.units: dict[int, str] = {}  # worker pid -> "fold/member", as of the last sample
        self._process_rows: list[tuple[str, ...]] = []
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

    @property
    def latest(self) -> HardwareSnapshot | None:
        return self.snapshot

    def gpu_history(self, index: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The utilisation and memory history (percent) kept for GPU ``index``."""
        return tuple(self._gpu_util.get(index, ())), tuple(self._gpu_mem.get(index, ()))

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="hw-cpu"):
            yield CoreHeatmap(id="hw-heatmap")
            with Horizontal(classes="hw-row"):
                yield Static("sampling…", id="hw-cpu-text")
                yield PercentSparkline(id="hw-cpu-history")
            with Horizontal(classes="hw-row"):
                yield Static(id="hw-mem-text")
                yield PercentSparkline(id="hw-mem-history")
        with Horizontal(id="hw-bottom"):
            with VerticalScroll(id="hw-gpus"):
                yield Static("sampling…", id="hw-no-gpu")
            with VerticalScroll(id="hw-threads"):
                yield Static(id="hw-thread-total")
                yield Static(id="hw-jobs")
        with VerticalScroll(id="hw-procs"):  # a Static, not a DataTable: 10x cheaper to draw
            yield Static(id="hw-procs-table")
        yield Footer()

    def on_mount(self) -> None:
        if self.watcher is None:
            self.watcher = getattr(self.app, "watcher", None)
        self.query_one("#hw-cpu").border_title = "CPU"
        self.query_one("#hw-gpus").border_title = "GPU"
        self.query_one("#hw-threads").border_title = "Threads"
        procs = self.query_one("#hw-procs")
        procs.border_title = "Training processes"
        procs.border_subtitle = "CPU % of one core since the last sample"
        procs.display = False
        self._fit_heatmap(self.size.height)
        self.poll_now()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_heatmap(event.size.height)

    def _fit_heatmap(self, height: int) -> None:
        """Tall terminals may give the cores more rows (numbers instead of bare blocks)."""
        rows = 4 if height < 36 else min(12, 4 + (height - 36) // 2)
        self.query_one(CoreHeatmap).max_rows = rows

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
        self.query_one("#hw-cpu-history", PercentSparkline).data = list(self._cpu_history)
        self.query_one("#hw-mem-history", PercentSparkline).data = list(self._mem_history)
        self._update("#hw-cpu-text", cpu_line(snap))
        self._update("#hw-mem-text", mem_line(snap))
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime(snap.ts))
        self.query_one("#hw-cpu").border_subtitle = f"{stamp} · sampled in {snap.sample_ms:.1f} ms"
        self._show_gpus(snap)
        self._show_threads(snap)
        self._show_processes(snap)

    def _show_processes(self, snap: HardwareSnapshot) -> None:
        rows = process_rows(snap, self.units)
        self.query_one("#hw-procs").display = bool(rows)
        if rows != self._process_rows:
            self._process_rows = list(rows)
            self._update("#hw-procs-table", process_table_text(rows))

    def _show_gpus(self, snap: HardwareSnapshot) -> None:
        panel = self.query_one("#hw-gpus", VerticalScroll)
        no_gpu = self.query_one("#hw-no-gpu", Static)
        for gpu in snap.gpus:
            self._gpu_util.setdefault(gpu.index, deque(maxlen=self.history)).append(gpu.util_pct)
            self._gpu_mem.setdefault(gpu.index, deque(maxlen=self.history)).append(gpu.mem_pct)
        cards = list(panel.query(GpuCard))
        if [card.gpu.index for card in cards] != [gpu.index for gpu in snap.gpus]:
            for card in cards:
                card.remove()
            cards = [GpuCard(gpu, id=f"hw-gpu-{gpu.index}") for gpu in snap.gpus]
            if cards:
                panel.mount_all(cards)
        for card, gpu in zip(cards, snap.gpus, strict=True):
            card.show(gpu, self._gpu_util[gpu.index], self._gpu_mem[gpu.index])
        if snap.gpus:
            no_gpu.display = False
            panel.border_title = "GPU" if len(snap.gpus) == 1 else f"GPUs ({len(snap.gpus)})"
        else:
            no_gpu.display = True
            text = Text("no GPU", style="bold")
            if snap.gpu_note:
                text.append(f": {snap.gpu_note}", style="")
            self._update("#hw-no-gpu", text)
            panel.border_title = "GPU"

    def _show_threads(self, snap: HardwareSnapshot) -> None:
        line, warning = threads_line(snap)
        self._update("#hw-thread-total", line)
        self.query_one("#hw-thread-total").set_class(warning, "-warning")
        self.query_one("#hw-threads").set_class(warning, "-warning")
        if snap.jobs:
            jobs = Text("\n").join(job_text(job) for job in snap.jobs)
        else:
            jobs = Text("no running jobs", style="dim")
        self._update("#hw-jobs", jobs)
