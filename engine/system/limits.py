"""What this machine really allows a process: CPUs (affinity, cgroup quota), memory (cgroup limit,
``ulimit -v``) and threads (``ulimit -u``, ``pids.max``, ``threads-max``).

``os.cpu_count()`` inside a container reports the host's cores; every plan and pool size here is
read from the limits that really apply.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ThreadLimits",
    "cgroup_cpu_quota",
    "cgroup_memory_limit",
    "machine_threads",
    "memory_hint",
    "thread_limits",
    "usable_cpus",
]


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 cfs quota), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


_V1_UNLIMITED = 2**62  # cgroup v1 writes "no limit" as LONG_MAX rounded down to a page


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes allowed by the cgroup (v2 ``memory.max`` or v1 ``memory/memory.limit_in_bytes``),
    None when unlimited."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < _V1_UNLIMITED else None
    return None


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: affinity, then the cgroup quota (never the host's count).

    ``os.cpu_count()`` inside a RunPod container reports the host's cores; planning 256 workers on a
    32-CPU quota is what throttles everything.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


@dataclass(frozen=True)
class ThreadLimits:
    """Limits on how many threads may exist; ``None`` where a limit is not set or not readable."""

    ulimit_u: int | None
    pids_max: int | None
    threads_max: int | None

    @property
    def tightest(self) -> int | None:
        values = [v for v in (self.ulimit_u, self.pids_max, self.threads_max) if v]
        return min(values) if values else None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def thread_limits(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_root: Path = Path("/proc")
) -> ThreadLimits:
    """``ulimit -u``, the cgroup's ``pids.max`` (v2, then v1) and the kernel's ``threads-max``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    return ThreadLimits(
        ulimit_u=None if soft == resource.RLIM_INFINITY else int(soft),
        pids_max=_read_int(cgroup_root / "pids.max")
        or _read_int(cgroup_root / "pids" / "pids.max"),
        threads_max=_read_int(proc_root / "sys" / "kernel" / "threads-max"),
    )


def machine_threads(proc_root: Path = Path("/proc")) -> int | None:
    """Threads alive on the whole machine (kernel scheduling entities), from ``/proc/loadavg``."""
    try:
        return int((proc_root / "loadavg").read_text().split()[3].split("/")[1])
    except (OSError, IndexError, ValueError):
        return None


def memory_hint(err: BaseException) -> str:
    """A clause naming the address-space limit (``ulimit -v``) when ``err`` is an allocation
    failure and this process has such a limit, which is then almost surely the cause; else ""."""
    text = str(err).lower()
    out_of_memory = (
        isinstance(err, MemoryError)
        or (
            isinstance(err, (ImportError, OSError))
            and ("failed to map segment" in text or "cannot allocate memory" in text)
        )
        # pyarrow's import, short of memory, can return an error without setting one
        or (isinstance(err, SystemError) and "without exception set" in text)
    )
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if not out_of_memory or soft == resource.RLIM_INFINITY:
        return ""
    return (
        f" under the virtual memory limit `ulimit -v {soft // 1024}` ({soft / 2**30:.2f} GiB); "
        "raise it (`ulimit -v unlimited`)"
    )
