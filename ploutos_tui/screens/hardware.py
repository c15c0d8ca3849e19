"""The hardware screen, the panel's home: CPU cores, RAM, GPUs and threads of the running jobs.

Sampling never runs on the UI thread: :class:`~ploutos_tui.screens.base.PollingScreen` calls
``sampler.sample()`` in a worker and schedules the next sample only once this one is drawn, so a
slow sample (a hung NVML call, a huge process tree) delays the next one instead of piling up
behind it. The screen always shows the latest snapshot only.
"""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import var
from textual.widgets import Footer, Header, Static

from ploutos_tui.model.sampling import HardwareSnapshot, JobThreads, Sampler
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


class HardwareScreen(PollingScreen[HardwareSnapshot]):
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
    """

    snapshot: var[HardwareSnapshot | None] = var(None)
    """The snapshot on screen now (None before the first sample)."""

    def __init__(
        self,
        sampler: Sampler,
        interval_s: float = 1.0,
        history: int = 60,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(interval_s, name=name, id=id, classes=classes)
        self.sampler = sampler
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
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#hw-cpu").border_title = "CPU"
        self.query_one("#hw-gpus").border_title = "GPU"
        self.query_one("#hw-threads").border_title = "Threads"
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

    def fetch(self) -> HardwareSnapshot:
        return self.sampler.sample()

    def draw(self, result: HardwareSnapshot) -> None:
        self.last_error = ""
        self._show(result)
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
