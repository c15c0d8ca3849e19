"""The overview's alerts: what needs a look now, from one hardware snapshot, the runs and the disks.

:func:`overview_alerts` is pure (no I/O): it takes what the overview already fetched. It checks

* a unit (fold/member) of a live run that failed (its error's first line);
* a live trainer that stopped beating (stalled);
* a GPU idle (every one of its last :data:`GPU_IDLE_SAMPLES` readings under
  :data:`GPU_IDLE_PCT` % utilisation) while units of a live run train on this host;
* threads (or cgroup tasks) above :data:`THREAD_ALERT_FRACTION` of the tightest limit;
* RAM above :data:`MEM_ALERT_FRACTION` of the cgroup limit (or of the machine without one);
* a disk nearly full under the runs folder or the dataset: under :data:`DISK_FREE_FRACTION` of
  the filesystem free, or under :data:`DISK_FREE_BYTES`;
* a live job whose BLAS environment is NOT sanitized (its thread pools may oversubscribe).

:class:`AlertsBar` shows them, errors first, one line each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from ploutos_tui.model.runs import RunSnapshot
from ploutos_tui.model.sampling import HardwareSnapshot

GiB = 1024**3
GPU_IDLE_PCT = 10.0
GPU_IDLE_SAMPLES = 3
THREAD_ALERT_FRACTION = 0.8
MEM_ALERT_FRACTION = 0.9
DISK_FREE_FRACTION = 0.10
DISK_FREE_BYTES = 2 * GiB


@dataclass(frozen=True)
class DiskReading:
    """The filesystem that holds ``path`` (``label``: ``runs`` or ``dataset``)."""

    label: str
    path: Path
    total_bytes: int
    free_bytes: int
    device: int | None = None  # st_dev: two paths on one filesystem make one alert

    @property
    def free_fraction(self) -> float:
        return self.free_bytes / self.total_bytes if self.total_bytes else 1.0

    @property
    def nearly_full(self) -> bool:
        return self.free_fraction < DISK_FREE_FRACTION or self.free_bytes < DISK_FREE_BYTES


@dataclass(frozen=True)
class Alert:
    severity: str  # "error" or "warning"
    text: str


def _first_line(text: str | None, limit: int = 120) -> str:
    line = (text or "failed").strip().splitlines()[0] if (text or "").strip() else "failed"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n < GiB else f"{n / GiB:.1f} GiB"


def training_here(runs: Iterable[RunSnapshot], hostname: str) -> int:
    """Units running now in live runs on this host (a unit whose node is unknown counts)."""
    return sum(
        1
        for run in runs
        if run.live
        for m in run.members
        if m.state == "running" and (m.node is None or m.on_host(hostname))
    )


def overview_alerts(
    hardware: HardwareSnapshot | None,
    runs: Sequence[RunSnapshot],
    disks: Sequence[DiskReading] = (),
    gpu_util_history: Mapping[int, Sequence[float]] | None = None,
    hostname: str = "",
) -> list[Alert]:
    """Every alert, errors first (the order of the checks within a severity)."""
    out: list[Alert] = []
    live = [run for run in runs if run.live]
    for run in live:
        failed = [m for m in run.members if m.state == "failed"]
        for m in failed[:3]:
            out.append(
                Alert(
                    "error",
                    f"{run.run_id}: unit {m.fold}/{m.member} failed: {_first_line(m.error)}",
                )
            )
        if len(failed) > 3:
            out.append(Alert("error", f"{run.run_id}: {len(failed) - 3} more units failed"))
        if run.stalled_s is not None:
            out.append(
                Alert(
                    "error",
                    f"{run.run_id}: no heartbeat from its trainer for "
                    f"{run.stalled_s:.0f} s (stopped or hung)",
                )
            )
    seen_devices: set[object] = set()
    for disk in disks:
        if not disk.nearly_full:
            continue
        key = disk.device if disk.device is not None else disk.path
        if key in seen_devices:
            continue
        seen_devices.add(key)
        names = [d.label for d in disks if (d.device if d.device is not None else d.path) == key]
        severity = "error" if disk.free_fraction < DISK_FREE_FRACTION / 2 else "warning"
        out.append(
            Alert(
                severity,
                f"disk nearly full under the {' and '.join(names)} folder"
                f"{'s' if len(names) > 1 else ''} ({disk.path}): {_size(disk.free_bytes)} free "
                f"of {_size(disk.total_bytes)} ({100 * disk.free_fraction:.0f}%)",
            )
        )
    if hardware is not None:
        units = training_here(live, hostname)
        history = gpu_util_history or {}
        for gpu in hardware.gpus:
            recent = list(history.get(gpu.index, ()))[-GPU_IDLE_SAMPLES:] or [gpu.util_pct]
            if units and max(recent) < GPU_IDLE_PCT:
                devices = sorted(
                    {m.device for r in live for m in r.members if m.state == "running" and m.device}
                )
                on = f" (units on {', '.join(devices)})" if devices else ""
                out.append(
                    Alert(
                        "warning",
                        f"GPU{gpu.index} idle ({gpu.util_pct:.0f}% util) while "
                        f"{units} unit{'s' if units != 1 else ''} train{'s' if units == 1 else ''}"
                        f" on this host{on}",
                    )
                )
        against = hardware.threads_against_limit()
        if against is not None and against[0] / against[2] > THREAD_ALERT_FRACTION:
            used, name, limit = against
            what = "cgroup tasks" if name == "cgroup pids.max" else "threads"
            out.append(
                Alert(
                    "warning",
                    f"{what} near the limit: {used:,} of {limit:,} "
                    f"({100 * used / limit:.0f}%, {name}); new workers may fail to start",
                )
            )
        limit = hardware.mem_limit_bytes
        used_mem = hardware.mem_cgroup_used_bytes if limit else hardware.mem_used_bytes
        cap = limit or hardware.mem_total_bytes
        if used_mem is not None and cap and used_mem / cap > MEM_ALERT_FRACTION:
            where = "the cgroup limit" if limit else "the machine's RAM"
            out.append(
                Alert(
                    "warning",
                    f"RAM near {where}: {_size(used_mem)} of {_size(cap)} "
                    f"({100 * used_mem / cap:.0f}%)",
                )
            )
        for job in hardware.jobs:
            if job.sanitized is False:
                bad = [
                    f"{k}={'unset' if v is None else v}" for k, v in job.unsanitized_vars.items()
                ]
                shown = " ".join(bad[:2]) + (f" +{len(bad) - 2} more" if len(bad) > 2 else "")
                out.append(
                    Alert(
                        "warning",
                        f"{job.run_id}: BLAS NOT sanitized ({shown}): its thread "
                        "pools may oversubscribe the cores",
                    )
                )
    return sorted(out, key=lambda a: a.severity != "error")


def alerts_text(alerts: Sequence[Alert], limit: int) -> Text:
    """One line per alert (at most ``limit``; the last says how many more), or "no alerts"."""
    if not alerts:
        return Text("✓ no alerts", style="green")
    shown = list(alerts) if len(alerts) <= limit else list(alerts[: max(0, limit - 1)])
    out = Text(no_wrap=True, overflow="ellipsis", end="")
    for k, alert in enumerate(shown):
        if k:
            out.append("\n")
        mark = "✗ " if alert.severity == "error" else "⚠ "
        out.append(mark + alert.text, style="bold red" if alert.severity == "error" else "yellow")
    if len(shown) < len(alerts):
        if shown:
            out.append("\n")
        out.append(f"+{len(alerts) - len(shown)} more alerts", style="dim")
    return out


class AlertsBar(Static):
    """The alerts, one line each, at most ``max_lines`` lines (a count of the rest)."""

    DEFAULT_CSS = """
    AlertsBar {
        height: auto;
        padding: 0 1;
    }
    AlertsBar.-alerting {
        background: $error 15%;
    }
    """

    def __init__(self, *, max_lines: int = 3, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.max_lines = max_lines
        self.alerts: tuple[Alert, ...] = ()
        self._shown: Text | None = None

    def show(self, alerts: Sequence[Alert]) -> None:
        self.alerts = tuple(alerts)
        self._paint()

    def set_max_lines(self, lines: int) -> None:
        if lines != self.max_lines:
            self.max_lines = max(1, lines)
            self._paint()

    def _paint(self) -> None:
        text = alerts_text(self.alerts, self.max_lines)
        self.set_class(bool(self.alerts), "-alerting")
        if text != self._shown:
            self._shown = text
            self.update(text)
