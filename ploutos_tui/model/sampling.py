"""What the hardware screen shows, read from the machine into immutable snapshots.

Three sources sit behind small interfaces so that tests (and recorded fixtures) can stand in for
the machine:

* :class:`HostSource` (real: :class:`PsutilHost`): per-core and total CPU load measured since the
  previous sample (never blocking), load average, RAM, usable CPUs, cgroup quota and limits,
  threads alive on the machine and the limits on them.
* :class:`GpuSource` (real: ``engine.api.GpuMonitor``): per GPU utilisation and memory every sample,
  temperature and power cached for a few seconds. Any NVML problem means zero GPUs and a note,
  never an exception.
* ``JobSource``: a callable returning ``{run_id: pid}`` of the live jobs; :func:`job_threads`
  counts the processes and threads of each job's process tree and checks its BLAS environment,
  and every process of those trees gets a :class:`ProcessReading` (CPU % since the previous
  sample, RSS, threads, and the GPU memory and SM utilisation NVML reports for its pid), all from
  the one pass over ``/proc`` a sample makes (:func:`process_stats`).

:class:`HardwareSampler` combines them into one :class:`HardwareSnapshot`;
:class:`RecordedSampler` replays snapshots saved as JSON (tests, screenshots, demos).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import psutil

from engine.api import (
    THREAD_VARS,
    GpuMonitor,
    GpuReading,
    cgroup_cpu_quota,
    cgroup_memory_limit,
    machine_threads,
    thread_limits,
    usable_cpus,
)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_ROOT = Path("/proc")


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class JobThreads:
    """Processes and threads of one job's whole process tree, and its BLAS environment."""

    run_id: str
    pid: int
    processes: int
    threads: int
    sanitized: bool | None  # every THREAD_VAR == "1" in the job's environment; None: unreadable
    blas_env: dict[str, str | None] = field(default_factory=dict, hash=False)

    @property
    def unsanitized_vars(self) -> dict[str, str | None]:
        """The THREAD_VARS whose value is not "1" (None: not set)."""
        return {name: value for name, value in self.blas_env.items() if value != "1"}


@dataclass(frozen=True)
class ProcessReading:
    """One process of a live job's tree at one sample.

    ``cpu_pct``: its CPU time (user + system) since the previous sample over the wall time
    between them, percent of one core (a busy 8-thread process reads up to 800); None on the
    first sample that sees it. ``gpu_mem_bytes`` / ``gpu_util_pct``: summed over the GPUs NVML
    lists it on (SM utilisation where the driver reports it); None where NVML does not list its
    pid (no NVML, no GPU, not on a GPU, or a container whose pids NVML does not see).
    """

    pid: int
    ppid: int
    run_id: str
    cpu_pct: float | None
    rss_bytes: int
    threads: int
    gpu_mem_bytes: int | None = None
    gpu_util_pct: float | None = None
    # when it started (clock ticks after boot, /proc/<pid>/stat): with the pid, names this
    # process and no later one that reuses its pid; 0 where unknown
    start_ticks: int = 0


@dataclass(frozen=True)
class HardwareSnapshot:
    ts: float  # time.time() of the sample
    per_core_pct: tuple[float, ...]
    cpu_total_pct: float
    load_avg: tuple[float, float, float]
    usable_cpus: int
    host_cpus: int
    cpu_quota: float | None  # cgroup cpu.max in CPUs, None when unlimited
    mem_used_bytes: int
    mem_total_bytes: int
    mem_limit_bytes: int | None  # cgroup memory limit, None when unlimited
    gpus: tuple[GpuReading, ...]
    gpu_note: str  # why there is no GPU (or an NVML error); "" when all is well
    machine_threads: int | None  # threads alive on the machine (/proc/loadavg)
    ulimit_u: int | None
    pids_max: int | None
    threads_max: int | None
    jobs: tuple[JobThreads, ...]
    sample_ms: float  # how long taking this snapshot took
    # beyond the basics; None where not readable
    affinity_cpus: int | None = None
    pids_current: int | None = None  # tasks in this cgroup (what pids.max really limits)
    mem_cgroup_used_bytes: int | None = None  # memory charged to this cgroup
    # every process of the live jobs' trees, by run then pid; empty in snapshots from before
    processes: tuple[ProcessReading, ...] = ()

    @property
    def tightest_thread_limit(self) -> tuple[str, int] | None:
        """The smallest thread limit as (name, value), e.g. ("cgroup pids.max", 4096)."""
        named = [
            ("ulimit -u", self.ulimit_u),
            ("cgroup pids.max", self.pids_max),
            ("kernel threads-max", self.threads_max),
        ]
        present = [(name, value) for name, value in named if value]
        return min(present, key=lambda item: item[1]) if present else None

    def threads_against_limit(self) -> tuple[int, str, int] | None:
        """(threads counted, limit name, limit) for the tightest limit, None when unknown.

        pids.max limits the tasks of this cgroup, so ``pids_current`` is compared with it where
        known; otherwise (and for the other limits) the machine's thread count is used.
        """
        tight = self.tightest_thread_limit
        if tight is None:
            return None
        name, limit = tight
        used = self.pids_current if name == "cgroup pids.max" else None
        if used is None:
            used = self.machine_threads
        return None if used is None else (used, name, limit)

    @property
    def thread_limit_fraction(self) -> float | None:
        against = self.threads_against_limit()
        return None if against is None else against[0] / against[2]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardwareSnapshot:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["per_core_pct"] = tuple(float(v) for v in values["per_core_pct"])
        values["load_avg"] = tuple(float(v) for v in values["load_avg"])
        values["gpus"] = tuple(GpuReading.from_dict(gpu) for gpu in values.get("gpus", ()))
        values["jobs"] = tuple(JobThreads(**job) for job in values.get("jobs", ()))
        known_proc = {f.name for f in fields(ProcessReading)}
        values["processes"] = tuple(
            ProcessReading(**{k: v for k, v in proc.items() if k in known_proc})
            for proc in values.get("processes") or ()
        )
        return cls(**values)

    def process(self, pid: int | None) -> ProcessReading | None:
        """The reading of ``pid`` if it is in a live job's tree, else None."""
        if pid is None:
            return None
        return next((p for p in self.processes if p.pid == pid), None)


# --------------------------------------------------------------------------- host


@dataclass(frozen=True)
class HostReading:
    """What a :class:`HostSource` reads; the snapshot's host fields."""

    per_core_pct: tuple[float, ...]
    cpu_total_pct: float
    load_avg: tuple[float, float, float]
    usable_cpus: int
    host_cpus: int
    cpu_quota: float | None
    mem_used_bytes: int
    mem_total_bytes: int
    mem_limit_bytes: int | None
    machine_threads: int | None
    ulimit_u: int | None
    pids_max: int | None
    threads_max: int | None
    affinity_cpus: int | None = None
    pids_current: int | None = None
    mem_cgroup_used_bytes: int | None = None


class HostSource(Protocol):
    def read(self) -> HostReading: ...


def _busy_and_total(times: Any) -> tuple[float, float]:
    """Busy and total CPU seconds of one psutil ``cpu_times`` entry (as psutil counts them)."""
    values = times._asdict()
    total = sum(values.values())
    # guest time is already counted in user/nice on Linux
    total -= values.get("guest", 0.0) + values.get("guest_nice", 0.0)
    idle = values.get("idle", 0.0) + values.get("iowait", 0.0)
    return total - idle, total


def _percent(before: tuple[float, float], after: tuple[float, float]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * busy / total))


def _read_first_int(paths: Iterable[Path]) -> int | None:
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


class PsutilHost:
    """The real machine through psutil, /proc and the cgroup files.

    CPU load is measured since the previous :meth:`read` (or construction) from this object's
    own ``cpu_times`` counters: the same sums as ``psutil.cpu_percent(interval=None)``, without
    its module-wide state that any other caller in the process would disturb. Reads closer
    together than ``min_interval_s`` wait for the rest of it. Things that hardly change (usable
    CPUs, quota, limits) are re-read every ``refresh_s`` seconds.
    """

    def __init__(
        self,
        cgroup_root: Path = CGROUP_ROOT,
        proc_root: Path = PROC_ROOT,
        refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = 0.1,
    ) -> None:
        self._cgroup_root = cgroup_root
        self._min_interval_s = min_interval_s
        self._proc_root = proc_root
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._static: dict[str, Any] = {}
        self._static_at: float | None = None
        self._prev_total = _busy_and_total(psutil.cpu_times())
        self._prev_cores = [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
        self._prev_at = time.monotonic()

    def _read_static(self) -> dict[str, Any]:
        now = self._clock()
        if self._static_at is not None and now - self._static_at < self._refresh_s:
            return self._static
        root = self._cgroup_root
        limits = thread_limits(root, self._proc_root)
        try:
            affinity: int | None = len(psutil.Process().cpu_affinity() or ())
        except (AttributeError, psutil.Error, OSError):
            affinity = None
        self._static = {
            "usable_cpus": usable_cpus(root),
            "host_cpus": psutil.cpu_count() or 1,
            "cpu_quota": cgroup_cpu_quota(root),
            "mem_limit_bytes": cgroup_memory_limit(root),
            "ulimit_u": limits.ulimit_u,
            "pids_max": limits.pids_max,
            "threads_max": limits.threads_max,
            "affinity_cpus": affinity or None,
        }
        self._static_at = now
        return self._static

    def read(self) -> HostReading:
        with self._lock:
            static = self._read_static()
            # loads over a few milliseconds are noise (0 or 100 %): the first read after
            # construction waits until ``min_interval_s`` has passed (it runs in a worker thread)
            wait = self._min_interval_s - (time.monotonic() - self._prev_at)
            if wait > 0:
                time.sleep(wait)
            self._prev_at = time.monotonic()
            total_now = _busy_and_total(psutil.cpu_times())
            cores_now = [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
            if len(cores_now) != len(self._prev_cores):  # a CPU went on/offline
                self._prev_cores = cores_now
            per_core = tuple(
                round(_percent(b, a), 1) for b, a in zip(self._prev_cores, cores_now, strict=True)
            )
            total_pct = round(_percent(self._prev_total, total_now), 1)
            self._prev_total, self._prev_cores = total_now, cores_now

            memory = psutil.virtual_memory()
            try:
                load = tuple(float(v) for v in psutil.getloadavg())
            except (AttributeError, OSError):
                load = (0.0, 0.0, 0.0)
            root = self._cgroup_root
            return HostReading(
                per_core_pct=per_core,
                cpu_total_pct=total_pct,
                load_avg=(load[0], load[1], load[2]),
                mem_used_bytes=int(memory.total - memory.available),
                mem_total_bytes=int(memory.total),
                machine_threads=machine_threads(self._proc_root),
                pids_current=_read_first_int(
                    (root / "pids.current", root / "pids" / "pids.current")
                ),
                mem_cgroup_used_bytes=(
                    _read_first_int(
                        (root / "memory.current", root / "memory" / "memory.usage_in_bytes")
                    )
                    if static["mem_limit_bytes"] is not None
                    else None
                ),
                **static,
            )


# --------------------------------------------------------------------------- GPUs


class GpuSource(Protocol):
    def read(self) -> tuple[tuple[GpuReading, ...], str]:
        """The GPUs now, and a note ("" when fine; why there are none otherwise)."""
        ...


# --------------------------------------------------------------------------- jobs

JobSource = Callable[[], Mapping[str, int]]
"""Returns ``{run_id: pid}`` of the live jobs."""


def read_environ(pid: int, proc_root: Path = PROC_ROOT) -> dict[str, str] | None:
    """The environment a process was started with (``/proc/<pid>/environ``); None if unreadable.

    Only the environment at exec time: a process that changes ``os.environ`` later does not
    show it here.
    """
    try:
        raw = (proc_root / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


class ProcStat(NamedTuple):
    """What one read of ``/proc/<pid>/stat`` says about a process."""

    ppid: int
    threads: int
    cpu_ticks: int  # utime + stime, in clock ticks (``SC_CLK_TCK``)
    rss_pages: int
    start_ticks: int  # when it started, in clock ticks after boot: tells a reused pid apart


def _read_small(path: str) -> bytes | None:
    """A small ``/proc`` file in one ``read`` (no Python file object: a third of the cost)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def process_stats(proc_root: Path = PROC_ROOT) -> dict[int, ProcStat]:
    """:class:`ProcStat` of every process, from one read of each ``/proc/<pid>/stat``.

    One pass over ``/proc`` per sample: walking a 256-process job tree with psutil (which
    rebuilds the parent map and checks each process's creation time) cost ~70 ms a sample; the
    paths are plain strings and each file one ``os.read`` (``pathlib`` and buffered files cost
    more than the reads themselves).
    """
    table: dict[int, ProcStat] = {}
    root = os.fspath(proc_root)
    try:
        entries = os.listdir(root)
    except OSError:
        return table
    for name in entries:
        if not name.isdigit():
            continue
        stat = _parse_stat(_read_small(f"{root}/{name}/stat"))
        if stat is not None:  # else: exited while we read
            table[int(name)] = stat
    return table


def _parse_stat(raw: bytes | None) -> ProcStat | None:
    if not raw:
        return None
    # "pid (comm) state ppid ... utime stime ... num_threads ... starttime vsize rss ...":
    # comm may hold spaces and parentheses; fields[i] is stat field i + 3 (proc(5)).
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        ppid, threads = int(fields[1]), int(fields[17])
    except (IndexError, ValueError):
        return None
    try:
        ticks, start, rss = int(fields[11]) + int(fields[12]), int(fields[19]), int(fields[21])
    except (IndexError, ValueError):
        ticks = start = rss = 0  # a short line (a hand-written test table): counts only
    return ProcStat(ppid, threads, ticks, rss, start)


def read_stat(pid: int, proc_root: Path = PROC_ROOT) -> ProcStat | None:
    """:class:`ProcStat` of one process now; None when it is gone (or unreadable)."""
    return _parse_stat(_read_small(f"{os.fspath(proc_root)}/{int(pid)}/stat"))


def process_table(proc_root: Path = PROC_ROOT) -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, threads)}`` of every process (:func:`process_stats`, shortened)."""
    return {pid: (st.ppid, st.threads) for pid, st in process_stats(proc_root).items()}


def _children(table: Mapping[int, Sequence[int]]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for child, row in table.items():
        children.setdefault(row[0], []).append(child)
    return children


def _tree(pid: int, children: Mapping[int, Sequence[int]]) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def job_threads(
    run_id: str,
    pid: int,
    proc_root: Path = PROC_ROOT,
    table: Mapping[int, Sequence[int]] | None = None,
    children: Mapping[int, Sequence[int]] | None = None,
) -> JobThreads | None:
    """Processes and threads of ``pid`` and all its descendants; None when ``pid`` is gone.

    ``table``: a :func:`process_table` (or :func:`process_stats`) to reuse across the jobs of one
    sample, ``children`` the parent-to-children map built from it.
    """
    table = process_table(proc_root) if table is None else table
    if pid not in table:
        return None
    tree = _tree(pid, _children(table) if children is None else children)
    return _job_of(run_id, pid, tree, table, read_environ(pid, proc_root))


def _job_of(
    run_id: str,
    pid: int,
    tree: Sequence[int],
    table: Mapping[int, Sequence[int]],
    env: Mapping[str, str] | None,
) -> JobThreads:
    processes, threads = len(tree), sum(table[p][1] for p in tree)
    if env is None:
        return JobThreads(run_id, pid, processes, threads, None, {})
    blas = {name: env.get(name) for name in THREAD_VARS}
    sanitized = all(value == "1" for value in blas.values())
    return JobThreads(run_id, pid, processes, threads, sanitized, blas)


# --------------------------------------------------------------------------- samplers


class Sampler(Protocol):
    def sample(self) -> HardwareSnapshot: ...


class _NoJobs:
    def __call__(self) -> Mapping[str, int]:
        return {}


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (AttributeError, ValueError, OSError):
        return 100


def _page_size() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) or 4096
    except (AttributeError, ValueError, OSError):
        return 4096


def gpu_by_pid(gpus: Iterable[GpuReading]) -> dict[int, tuple[int | None, float | None]]:
    """``{pid: (GPU memory bytes, SM utilisation %)}`` summed over the GPUs NVML lists the pid
    on; a part is None where no GPU reported it."""
    out: dict[int, tuple[int | None, float | None]] = {}
    for gpu in gpus:
        for proc in gpu.processes:
            mem, util = out.get(proc.pid, (None, None))
            if proc.mem_used_bytes is not None:
                mem = (mem or 0) + proc.mem_used_bytes
            if proc.sm_util_pct is not None:
                util = (util or 0.0) + proc.sm_util_pct
            out[proc.pid] = (mem, util)
    return out


class HardwareSampler:
    """The live machine: host, GPUs and jobs in one snapshot per :meth:`sample` call.

    Calls are serialised by a lock, so it may be called from a worker thread (one at a time is
    what the hardware screen does anyway). The processes' CPU % is measured between consecutive
    samples (``monotonic`` clock), whoever asked for them: screens that share one sampler share
    its measurements, and :meth:`recent` lets a second screen reuse a fresh snapshot instead of
    sampling again. ``proc_root``: where ``/proc`` is (tests give a fake tree).
    """

    def __init__(
        self,
        host: HostSource | None = None,
        gpus: GpuSource | None = None,
        jobs: JobSource | None = None,
        clock: Callable[[], float] = time.time,
        *,
        proc_root: Path = PROC_ROOT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host if host is not None else PsutilHost()
        self.gpus = gpus if gpus is not None else GpuMonitor()
        self.jobs = jobs if jobs is not None else _NoJobs()
        self.proc_root = proc_root
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tick_s = 1.0 / _clock_ticks()
        self._page = _page_size()
        self._prev_cpu: dict[int, tuple[int, int]] = {}  # pid: (start_ticks, cpu_ticks)
        self._prev_cpu_at: float | None = None
        # job pid: (its start ticks, the environment it was started with), read once per job
        self._environ: dict[int, tuple[int, dict[str, str] | None]] = {}
        self._last: HardwareSnapshot | None = None
        self._last_at: float | None = None

    def _jobs(
        self, gpus: Sequence[GpuReading]
    ) -> tuple[tuple[JobThreads, ...], tuple[ProcessReading, ...]]:
        try:
            live = dict(self.jobs())
        except Exception:  # the job list is the lead's; a failure there must not stop sampling
            return (), ()
        if not live:
            self._prev_cpu, self._prev_cpu_at = {}, None
            return (), ()
        table = process_stats(self.proc_root)
        now = self._monotonic()
        elapsed = None if self._prev_cpu_at is None else now - self._prev_cpu_at
        children = _children(table)
        on_gpu = gpu_by_pid(gpus)
        found, procs = [], []
        cpu_now: dict[int, tuple[int, int]] = {}
        environ: dict[int, tuple[int, dict[str, str] | None]] = {}
        for run_id, pid in sorted(live.items()):
            try:
                pid = int(pid)
            except (TypeError, ValueError):
                continue
            st_root = table.get(pid)
            if st_root is None:
                continue
            # a job's environment is the one it was started with: read once per process
            known = self._environ.get(pid)
            if known is None or known[0] != st_root.start_ticks:
                known = (st_root.start_ticks, read_environ(pid, self.proc_root))
            environ[pid] = known
            tree = sorted(_tree(pid, children))
            job = _job_of(str(run_id), pid, tree, table, known[1])
            found.append(job)
            tick_s, page = self._tick_s, self._page
            for member in tree:
                st = table[member]
                cpu_now[member] = (st.start_ticks, st.cpu_ticks)
                before = self._prev_cpu.get(member)
                cpu = None
                if elapsed is not None and elapsed > 0 and before and before[0] == st.start_ticks:
                    used = max(0, st.cpu_ticks - before[1]) * tick_s
                    cpu = round(100.0 * used / elapsed, 1)
                mem, util = on_gpu.get(member, (None, None))
                procs.append(
                    ProcessReading(
                        member,
                        st.ppid,
                        job.run_id,
                        cpu,
                        st.rss_pages * page,
                        st.threads,
                        mem,
                        util,
                        st.start_ticks,
                    )
                )
        self._prev_cpu, self._prev_cpu_at = cpu_now, now
        self._environ = environ
        return tuple(found), tuple(procs)

    def sample(self) -> HardwareSnapshot:
        with self._lock:
            return self._sample()

    def recent(self, max_age_s: float) -> HardwareSnapshot:
        """The last snapshot if it was taken at most ``max_age_s`` seconds ago, else a new one."""
        with self._lock:
            last, at = self._last, self._last_at
            if last is not None and at is not None and self._monotonic() - at <= max_age_s:
                return last
            return self._sample()

    def _sample(self) -> HardwareSnapshot:
        start = time.perf_counter()
        host = self.host.read()
        try:
            gpus, note = self.gpus.read()
        except Exception as err:  # a GpuSource should not raise; be safe anyway
            gpus, note = (), f"GPU source failed: {err}"
        jobs, processes = self._jobs(gpus)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        snap = HardwareSnapshot(
            ts=self._clock(),
            gpus=tuple(gpus),
            gpu_note=note,
            jobs=jobs,
            sample_ms=round(elapsed_ms, 2),
            processes=processes,
            **asdict(host),
        )
        self._last, self._last_at = snap, self._monotonic()
        return snap

    def close(self) -> None:
        close = getattr(self.gpus, "close", None)
        if close is not None:
            close()


class RecordedSampler:
    """Replays recorded snapshots in order; the last one repeats forever."""

    def __init__(self, snapshots: Sequence[HardwareSnapshot]) -> None:
        if not snapshots:
            raise ValueError("RecordedSampler needs at least one snapshot")
        self.snapshots = list(snapshots)
        self.calls = 0
        self._lock = threading.Lock()

    @classmethod
    def from_json(cls, path: str | Path) -> RecordedSampler:
        return cls(load_snapshots(path))

    def sample(self) -> HardwareSnapshot:
        with self._lock:
            snapshot = self.snapshots[min(self.calls, len(self.snapshots) - 1)]
            self.calls += 1
            return snapshot

    def recent(self, max_age_s: float) -> HardwareSnapshot:
        """The snapshot last replayed (the replay does not move on); the first one before any."""
        with self._lock:
            return self.snapshots[min(max(self.calls - 1, 0), len(self.snapshots) - 1)]


def recent_sample(sampler: Any, max_age_s: float) -> HardwareSnapshot:
    """A snapshot at most ``max_age_s`` old from ``sampler``: its ``recent`` where it has one
    (a screen that shares the app's sampler reuses the hardware screen's samples), else a new
    :meth:`Sampler.sample`."""
    recent = getattr(sampler, "recent", None)
    return recent(max_age_s) if callable(recent) else sampler.sample()


def load_snapshots(path: str | Path) -> list[HardwareSnapshot]:
    """Snapshots from a JSON file: ``{"snapshots": [...]}`` or a plain list."""
    data = json.loads(Path(path).read_text())
    items = data["snapshots"] if isinstance(data, dict) else data
    return [HardwareSnapshot.from_dict(item) for item in items]


def save_snapshots(path: str | Path, snapshots: Iterable[HardwareSnapshot], note: str = "") -> None:
    """Write snapshots as JSON that :func:`load_snapshots` / :meth:`RecordedSampler.from_json` read."""
    doc: dict[str, Any] = {"snapshots": [s.to_dict() for s in snapshots]}
    if note:
        doc = {"note": note, **doc}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")
