"""The one place that decides thread settings and reads the machine's real CPU and thread limits.

Hundreds of workers that each start a BLAS pool of one thread per host core is how the old code
reached 32,768 threads (``OpenBLAS blas_thread_init: pthread_create failed``). Every launcher (CLI,
``start_training.sh``, the control panel, worker processes) takes its environment from
``sanitized_env``.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

THREAD_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
)


def pool_settings(threads: int = 1) -> dict[str, str]:
    """The variables that cap every BLAS/OpenMP pool at ``threads``."""
    return {name: str(threads) for name in THREAD_VARS}


def sanitized_env(base: dict[str, str] | None = None, threads: int = 1) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with every BLAS/OpenMP pool capped at ``threads``."""
    return {**(os.environ if base is None else base), **pool_settings(threads)}


def apply_in_process(threads: int = 1) -> None:
    """Cap the pools of the current process (a worker that was not started with ``sanitized_env``).

    Environment variables only take effect before the libraries load, so torch is also told directly.
    """
    os.environ.update(pool_settings(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


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
    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    return ThreadLimits(
        ulimit_u=None if soft == resource.RLIM_INFINITY else int(soft),
        pids_max=_read_int(cgroup_root / "pids.max")
        or _read_int(cgroup_root / "pids" / "pids.max"),
        threads_max=_read_int(proc_root / "sys" / "kernel" / "threads-max"),
    )


def shell_exports(threads: int = 1) -> str:
    """``export OMP_NUM_THREADS=1`` lines, for ``eval "$(ploutos threads --shell)"``."""
    return "\n".join(f"export {name}={value}" for name, value in pool_settings(threads).items())


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
