"""The overview, the panel's home: is the machine busy, are the runs healthy, what needs a look.

Three parts, each a few widgets that draw many cells:

* the machine strip: every core (:class:`~ploutos_tui.widgets.core_strip.CoreStrip`, readable
  from 2 to 512 cores), total CPU and RAM (with the cgroup limit) with their history, and every
  GPU's utilisation, memory, temperature and power with history
  (:class:`~ploutos_tui.widgets.gpu_strip.GpuStrip`);
* the alerts (:mod:`ploutos_tui.widgets.alerts`);
* the live runs with their units (:class:`~ploutos_tui.widgets.live_runs.RunsPanel`).

Everything is read in the polling worker thread (:class:`PollingScreen`): a hardware snapshot
from the app's one sampler (``recent`` where it has one: the hardware screen's fresh sample is
reused, never a second sampler), the runs through the app's runs watcher, and the free space
under the runs folder and the dataset (every :attr:`OverviewScreen.DISK_EVERY_S` seconds). The
screen keeps polling while another mode is shown, so its history has no gaps and it notifies
(Textual ``notify``) when a run finishes or fails wherever the user is; while covered it only
keeps the history and draws again once shown.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header

from engine.api import LIVE
from ploutos_tui.model.runs import RunSnapshot
from ploutos_tui.model.sampling import HardwareSnapshot, recent_sample
from ploutos_tui.screens.base import PollingScreen
from ploutos_tui.widgets.alerts import Alert, AlertsBar, DiskReading, overview_alerts
from ploutos_tui.widgets.core_strip import CoreStrip
from ploutos_tui.widgets.gpu_strip import GpuStrip, strip_height
from ploutos_tui.widgets.heatmap import load_style
from ploutos_tui.widgets.history import HistoryGraph
from ploutos_tui.widgets.live_runs import RunsPanel, runs_needed

GiB = 1024**3
DiskReader = Callable[[Sequence[tuple[str, Path]]], tuple[DiskReading, ...]]


def _existing(path: Path) -> Path | None:
    """``path`` or its nearest existing parent (a runs folder not created yet is on its parent's
    filesystem)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def read_disks(paths: Sequence[tuple[str, Path]]) -> tuple[DiskReading, ...]:
    """The filesystem of each ``(label, path)`` (``shutil.disk_usage``); unreadable ones left out."""
    out = []
    for label, path in paths:
        found = _existing(Path(path).absolute())
        if found is None:
            continue
        try:
            usage = shutil.disk_usage(found)
            device: int | None = os.stat(found).st_dev
        except OSError:
            continue
        out.append(DiskReading(label, Path(path), usage.total, usage.free, device))
    return tuple(out)


@dataclass(frozen=True)
class Overview:
    """One poll: the hardware (None when there is no sampler or it failed), every run, the disks."""

    hardware: HardwareSnapshot | None
    runs: tuple[RunSnapshot, ...]
    disks: tuple[DiskReading, ...] = ()
    hardware_error: str = ""


@dataclass(frozen=True)
class Transition:
    """A run that was live in the previous poll and ended in this one."""

    run: RunSnapshot
    before: str


class RunTransitions:
    """Which runs ended (finished, failed, stopped, interrupted) between two polls.

    The first poll only records the states: runs that ended before the panel looked are not news.
    A run first seen live and later ended is; so is one that was live, vanished and came back
    ended.
    """

    ENDED = ("finished", "failed", "stopped", "interrupted")

    def __init__(self) -> None:
        self._states: dict[str, str] | None = None

    def update(self, runs: Sequence[RunSnapshot]) -> list[Transition]:
        now = {run.run_id: run.state for run in runs}
        before, out = self._states, []
        if before is not None:
            for run in runs:
                old = before.get(run.run_id)
                if old in LIVE and run.state in self.ENDED:
                    out.append(Transition(run, old))
        # a live run missing from this poll stays known as live
        kept = {k: v for k, v in (before or {}).items() if k not in now and v in LIVE}
        self._states = {**kept, **now}
        return out


def notification(t: Transition) -> tuple[str, str, str]:
    """(message, title, severity) of a run that ended."""
    run = t.run
    if run.state == "finished":
        verdict = f" · {run.verdict_short}" if run.judged else ""
        return f"{run.run_id} finished{verdict}", "Run finished", "information"
    if run.state == "stopped":
        return (
            f"{run.run_id} stopped (resume it with r on the jobs screen)",
            "Run stopped",
            "warning",
        )
    why = (run.error or "").strip().splitlines()
    detail = f": {why[0][:160]}" if why else ""
    if run.state == "interrupted":
        return f"{run.run_id}: its trainer is gone{detail}", "Run interrupted", "error"
    return f"{run.run_id} failed{detail}", "Run failed", "error"


def _pct_style(pct: float):
    return load_style(int(round(max(0.0, min(100.0, pct)) / 5.0) * 5))


def cpu_label(snap: HardwareSnapshot, wide: bool) -> Text:
    """``CPU  88%  load 23.1  32 usable of 256 (cgroup cpu.max 32)``."""
    text = Text("CPU ", style="bold")
    text.append(f"{snap.cpu_total_pct:3.0f}%", _pct_style(snap.cpu_total_pct))
    text.append(f"  load {snap.load_avg[0]:.1f}")
    text.append(f"  {snap.usable_cpus} usable of {snap.host_cpus}" if wide else "")
    if not wide and snap.usable_cpus != snap.host_cpus:
        text.append(f"  {snap.usable_cpus}/{snap.host_cpus} usable")
    if wide and snap.cpu_quota is not None:
        text.append(f" (cgroup cpu.max {snap.cpu_quota:g})")
    return text


def ram_label(snap: HardwareSnapshot) -> Text:
    """``RAM 812.3/1007.7 GiB 81%  cgroup 700.1/900.0 GiB`` (``no cgroup limit`` without one)."""
    total = snap.mem_total_bytes
    pct = 100.0 * snap.mem_used_bytes / total if total else 0.0
    text = Text("RAM ", style="bold")
    text.append(
        f"{snap.mem_used_bytes / GiB:.1f}/{total / GiB:.1f} GiB {pct:.0f}%", _pct_style(pct)
    )
    limit = snap.mem_limit_bytes
    if limit is None:
        text.append("  no cgroup limit", style="dim")
    elif snap.mem_cgroup_used_bytes is not None:
        cg = 100.0 * snap.mem_cgroup_used_bytes / limit
        text.append("  cgroup ")
        text.append(f"{snap.mem_cgroup_used_bytes / GiB:.1f}/{limit / GiB:.1f} GiB", _pct_style(cg))
    else:
        text.append(f"  cgroup limit {limit / GiB:.1f} GiB")
    return text


def ram_pct(snap: HardwareSnapshot) -> float:
    """RAM in use, percent of the cgroup limit where there is one (what OOM-kills), else of the
    machine."""
    if snap.mem_limit_bytes and snap.mem_cgroup_used_bytes is not None:
        return 100.0 * snap.mem_cgroup_used_bytes / snap.mem_limit_bytes
    return 100.0 * snap.mem_used_bytes / snap.mem_total_bytes if snap.mem_total_bytes else 0.0


class OverviewScreen(PollingScreen[Overview]):
    """Machine strip, alerts and live runs, every ``interval_s`` seconds off the UI thread."""

    SUB_TITLE = "overview"
    PAUSE_WHEN_COVERED = False  # history and notifications go on while another mode is shown
    DISK_EVERY_S = 30.0
    MAX_GRAPH_ROWS = 24

    DEFAULT_CSS = """
    OverviewScreen {
        layout: vertical;
    }
    OverviewScreen #ov-machine {
        height: auto;
        border: round $primary;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0 1;
    }
    OverviewScreen #ov-host {
        height: auto;
        layout: vertical;
    }
    OverviewScreen.-wide #ov-host {
        layout: horizontal;
    }
    OverviewScreen #ov-host > HistoryGraph {
        width: 1fr;
    }
    OverviewScreen.-wide #ov-host > #ov-cpu {
        margin-right: 2;
    }
    OverviewScreen #ov-gpus {
        margin-top: 0;
    }
    OverviewScreen #ov-runs-box {
        height: 1fr;
        min-height: 4;
        border: round $primary;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(
        self,
        sampler: Any = None,
        watcher: Any = None,
        interval_s: float = 1.0,
        history: int = 240,
        *,
        disk_paths: Sequence[tuple[str, Path]] = (),
        disk_reader: DiskReader = read_disks,
        hostname: str | None = None,
        notify_runs: bool = True,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(interval_s, name=name, id=id, classes=classes)
        self.sampler = sampler
        self.watcher = watcher
        self.disk_paths = tuple(disk_paths)
        self.disk_reader = disk_reader
        self.hostname = hostname or socket.gethostname()
        self.notify_runs = notify_runs
        self.history = max(2, history)
        self.data: Overview | None = None
        self.alerts: list[Alert] = []
        self.samples_shown = 0
        self.notified: list[tuple[str, str, str]] = []  # (message, title, severity) sent
        self._transitions = RunTransitions()
        self._disks: tuple[DiskReading, ...] = ()
        self._disks_at: float | None = None
        self._cpu: deque[float] = deque(maxlen=self.history)
        self._ram: deque[float] = deque(maxlen=self.history)
        self._gpu_util: dict[int, deque[float]] = {}
        self._gpu_mem: dict[int, deque[float]] = {}
        self._stale = False  # drawn while covered: paint again when shown
        self._graph_rows: int | None = None  # rows of each history graph (0: one line)

    @property
    def latest(self) -> HardwareSnapshot | None:
        """The hardware snapshot shown now (the first-frame probe of ``ploutos bench tui``)."""
        return None if self.data is None else self.data.hardware

    def gpu_history(self, index: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self._gpu_util.get(index, ())), tuple(self._gpu_mem.get(index, ()))

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="ov-machine"):
            yield CoreStrip(id="ov-cores")
            with Horizontal(id="ov-host"):
                yield HistoryGraph(id="ov-cpu")
                yield HistoryGraph(id="ov-ram")
            yield GpuStrip(id="ov-gpus")
        yield AlertsBar(id="ov-alerts")
        with Vertical(id="ov-runs-box"):
            yield RunsPanel(id="ov-runs")
        yield Footer()

    def on_mount(self) -> None:
        if self.sampler is None:
            self.sampler = getattr(self.app, "sampler", None)
        if self.watcher is None:
            self.watcher = getattr(self.app, "watcher", None)
        if not self.disk_paths:
            paths = []
            for label, attr in (("runs", "runs_root"), ("dataset", "dataset")):
                value = getattr(self.app, attr, None)
                if value is not None:
                    paths.append((label, Path(value)))
            self.disk_paths = tuple(paths)
        machine = self.query_one("#ov-machine")
        machine.border_title = "Machine"
        machine.border_subtitle = "sampling…"
        self.query_one("#ov-runs-box").border_title = "Runs"
        self._fit()
        self.poll_now()

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        """Share the height out: the core strip gets a few rows (more when tall: numbers instead
        of bare blocks), the alerts and the runs what they need (every unit when it can), and
        the history graphs (CPU, RAM, each GPU) grow into what is left; with too little left,
        each graph is one line."""
        width, height = self.size
        wide = width >= 150
        self.set_class(wide, "-wide")
        inner = max(1, width - 4)  # border and padding
        if height < 30:
            core_rows, alert_max = 2, 3
        elif height < 40:
            core_rows, alert_max = 3, 4
        else:
            core_rows, alert_max = 6, 5
        strip = self.query_one(CoreStrip)
        strip.max_rows = core_rows
        alerts = self.query_one(AlertsBar)
        alerts.set_max_lines(alert_max)
        data = self.data
        hw = data.hardware if data is not None else None
        runs = data.runs if data is not None else ()
        gpus = len(hw.gpus) if hw is not None else 0
        used = 2 + 2 + 2  # header and footer, the machine and runs borders
        used += strip.lines_for(inner) if strip.loads else 2
        used += max(1, min(len(self.alerts), alert_max))
        used += max(4, runs_needed(runs, inner))
        budget = height - used
        graphs = 1 if wide else 2  # CPU and RAM side by side, or one above the other
        best = 0
        for rows in range(1, self.MAX_GRAPH_ROWS + 1):
            if graphs * (1 + rows) + strip_height(gpus, inner, rows) > budget:
                break
            best = rows
        if best != self._graph_rows:  # a new height lays the screen out again: only on change
            self._graph_rows = best
            for graph_id in ("#ov-cpu", "#ov-ram"):
                self.query_one(graph_id, HistoryGraph).styles.height = 1 + best if best else 1
            self.query_one(GpuStrip).graph_rows = best

    # ------------------------------------------------------------------ polling
    def fetch(self) -> Overview:
        hardware, error = None, ""
        if self.sampler is not None:
            try:  # a fresh sample another screen just took is reused
                hardware = recent_sample(self.sampler, 0.9 * self.interval_s)
            except Exception as err:  # the runs must show even when sampling fails
                error = f"{type(err).__name__}: {err}"
        runs = tuple(self.watcher.poll()) if self.watcher is not None else ()
        return Overview(hardware, runs, self._read_disks(), error)

    def _read_disks(self) -> tuple[DiskReading, ...]:
        now = time.monotonic()
        if self._disks_at is None or now - self._disks_at >= self.DISK_EVERY_S:
            try:
                self._disks = tuple(self.disk_reader(self.disk_paths))
            except Exception:  # a disk that cannot be read raises no alert, and no error
                self._disks = ()
            self._disks_at = now
        return self._disks

    def refresh_disks(self) -> None:
        """Read the disks again at the next poll (they are otherwise cached)."""
        self._disks_at = None

    def draw(self, result: Overview) -> None:
        self.data = result
        hw = result.hardware
        if hw is not None:
            self._cpu.append(hw.cpu_total_pct)
            self._ram.append(ram_pct(hw))
            for gpu in hw.gpus:
                self._gpu_util.setdefault(gpu.index, deque(maxlen=self.history)).append(
                    gpu.util_pct
                )
                self._gpu_mem.setdefault(gpu.index, deque(maxlen=self.history)).append(gpu.mem_pct)
        self.alerts = overview_alerts(
            hw, result.runs, result.disks, self._gpu_util, hostname=self.hostname
        )
        for transition in self._transitions.update(result.runs):
            self._notify(transition)
        self.samples_shown += 1
        if self.is_current:
            self._paint()
        else:
            self._stale = True

    def draw_error(self, error: BaseException) -> None:
        self.query_one("#ov-runs-box").border_subtitle = f"cannot read the runs: {error}"
        self.samples_shown += 1

    def _notify(self, transition: Transition) -> None:
        message, title, severity = notification(transition)
        self.notified.append((message, title, severity))
        if self.notify_runs:
            self.app.notify(message, title=title, severity=severity, timeout=12)  # type: ignore[arg-type]

    def on_screen_resume(self) -> None:
        if self._stale and self.data is not None:
            self._paint()

    # ------------------------------------------------------------------ drawing
    def _paint(self) -> None:
        self._stale = False
        data = self.data
        if data is None:
            return
        hw = data.hardware
        machine = self.query_one("#ov-machine")
        if hw is not None:
            wide = self.has_class("-wide")
            self.query_one(CoreStrip).loads = hw.per_core_pct
            self.query_one("#ov-cpu", HistoryGraph).show(cpu_label(hw, wide), self._cpu)
            self.query_one("#ov-ram", HistoryGraph).show(ram_label(hw), self._ram)
            self.query_one(GpuStrip).show(hw.gpus, self._gpu_util, self._gpu_mem, hw.gpu_note)
            # no clock here: a subtitle that changes every second repaints the whole box
            machine.border_subtitle = (
                f"a sample every {self.interval_s:g} s · graphs: the last {self.history}"
            )
            gpus = len(hw.gpus)
            machine.border_title = "Machine" + (
                f" · {gpus} GPU{'s' if gpus > 1 else ''}" if gpus else ""
            )
        elif data.hardware_error:
            machine.border_subtitle = f"sampling failed: {data.hardware_error}"
        self.query_one(AlertsBar).show(self.alerts)
        self.query_one(RunsPanel).show(data.runs)
        self._fit()
        live = sum(1 for run in data.runs if run.live)
        box = self.query_one("#ov-runs-box")
        box.border_title = f"Runs · {live} live" if live else "Runs"
        box.border_subtitle = f"{len(data.runs)} in the runs folder · j: jobs"
