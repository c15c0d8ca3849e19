"""Hardware sampling: the real machine, fake NVML, real child process trees, recorded fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from engine.system.gpus import GpuMonitor, GpuReading
from engine.system.threads import THREAD_VARS, sanitized_env
from ploutos_tui.model.sampling import (
    HardwareSampler,
    HardwareSnapshot,
    HostReading,
    JobThreads,
    PsutilHost,
    RecordedSampler,
    job_threads,
    load_snapshots,
    save_snapshots,
)

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = (
    "hardware_2cores_nogpu.json",
    "hardware_16cores.json",
    "hardware_256cores_3090.json",
    "hardware_threads_near_limit.json",
)
GiB = 1024**3


# --------------------------------------------------------------------------- the real machine


def test_hardware_sampler_on_this_machine_never_raises():
    sampler = HardwareSampler()
    first = sampler.sample()
    time.sleep(0.05)
    snap = sampler.sample()
    sampler.close()

    assert len(snap.per_core_pct) == psutil.cpu_count()
    assert all(0.0 <= v <= 100.0 for v in snap.per_core_pct)
    assert 0.0 <= snap.cpu_total_pct <= 100.0
    assert 1 <= snap.usable_cpus <= snap.host_cpus
    assert 0 < snap.mem_used_bytes <= snap.mem_total_bytes
    assert snap.machine_threads is None or snap.machine_threads > 0
    assert snap.sample_ms >= 0.0 and snap.ts >= first.ts
    assert snap.jobs == ()
    if not snap.gpus:  # this box (2 CPUs, no GPU): zero GPUs and a note saying why
        assert snap.gpu_note.startswith("no NVIDIA GPU / driver")
    assert HardwareSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap


def test_psutil_host_reads_quota_and_limits_from_the_cgroup_files(tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # 1 CPU
    (tmp_path / "memory.max").write_text(f"{8 * GiB}\n")
    (tmp_path / "memory.current").write_text(f"{3 * GiB}\n")
    (tmp_path / "pids.max").write_text("4096\n")
    (tmp_path / "pids.current").write_text("123\n")
    reading = PsutilHost(cgroup_root=tmp_path).read()
    assert isinstance(reading, HostReading)
    assert reading.cpu_quota == 1.0 and reading.usable_cpus == 1
    assert reading.mem_limit_bytes == 8 * GiB and reading.mem_cgroup_used_bytes == 3 * GiB
    assert reading.pids_max == 4096 and reading.pids_current == 123
    assert reading.host_cpus == psutil.cpu_count()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, None),
        ({"memory.max": "max\n"}, None),
        ({"memory.max": "8589934592\n"}, 8 * GiB),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1 "unlimited"
        ({"memory/memory.limit_in_bytes": "4294967296\n"}, 4 * GiB),
        ({"memory.max": "junk\n", "memory/memory.limit_in_bytes": "4294967296\n"}, 4 * GiB),
    ],
)
def test_cgroup_memory_limit_reads_v2_then_v1(tmp_path, files, expected):
    from engine.system.limits import cgroup_memory_limit  # the sampler and the plan share it

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_memory_limit(tmp_path) == expected


def test_sampling_does_not_import_pandas():
    code = "import sys, ploutos_tui.model.sampling; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_psutil_host_never_measures_load_over_a_few_milliseconds():
    host = PsutilHost(min_interval_s=0.2)
    start = time.monotonic()
    host.read()
    assert time.monotonic() - start >= 0.15


def test_psutil_host_rereads_static_facts_only_after_refresh(tmp_path):
    now = [0.0]
    (tmp_path / "pids.max").write_text("100\n")
    host = PsutilHost(cgroup_root=tmp_path, refresh_s=30.0, clock=lambda: now[0])
    assert host.read().pids_max == 100
    (tmp_path / "pids.max").write_text("200\n")
    now[0] = 10.0
    assert host.read().pids_max == 100
    now[0] = 31.0
    assert host.read().pids_max == 200


# --------------------------------------------------------------------------- NVML (fake module)


class FakeNVMLError(Exception):
    pass


def fake_pynvml(
    *, fail_init: bool = False, fail_util: bool = False, name=b"NVIDIA GeForce RTX 3090"
):
    """A stand-in for pynvml that reads one RTX 3090 and counts its calls."""
    calls: dict[str, int] = {}

    def counted(fn_name, result):
        def fn(*_args):
            calls[fn_name] = calls.get(fn_name, 0) + 1
            if callable(result):
                return result()
            return result

        return fn

    def init():
        calls["nvmlInit"] = calls.get("nvmlInit", 0) + 1
        if fail_init:
            raise FakeNVMLError("Driver Not Loaded")

    def util():
        if fail_util:
            raise FakeNVMLError("GPU is lost")
        return types.SimpleNamespace(gpu=95, memory=40)

    module = types.ModuleType("pynvml")
    module.NVMLError = FakeNVMLError
    module.NVML_TEMPERATURE_GPU = 0
    module.nvmlInit = init
    module.nvmlShutdown = counted("nvmlShutdown", None)
    module.nvmlDeviceGetCount = counted("nvmlDeviceGetCount", 1)
    module.nvmlDeviceGetHandleByIndex = counted("nvmlDeviceGetHandleByIndex", "handle0")
    module.nvmlDeviceGetName = counted("nvmlDeviceGetName", name)
    module.nvmlDeviceGetUtilizationRates = counted("nvmlDeviceGetUtilizationRates", util)
    module.nvmlDeviceGetMemoryInfo = counted(
        "nvmlDeviceGetMemoryInfo",
        types.SimpleNamespace(used=22 * GiB, total=24 * GiB, free=2 * GiB),
    )
    module.nvmlDeviceGetTemperature = counted("nvmlDeviceGetTemperature", 78)
    module.nvmlDeviceGetPowerUsage = counted("nvmlDeviceGetPowerUsage", 330_000)  # mW
    module.nvmlDeviceGetEnforcedPowerLimit = counted("nvmlDeviceGetEnforcedPowerLimit", 350_000)
    module.calls = calls
    return module


def test_nvml_gpus_reads_a_3090(monkeypatch):
    fake = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus, note = GpuMonitor().read()
    assert note == ""
    assert gpus == (
        GpuReading(0, "NVIDIA GeForce RTX 3090", 95.0, 22 * GiB, 24 * GiB, 78.0, 330.0, 350.0),
    )
    assert gpus[0].mem_pct == pytest.approx(100 * 22 / 24)


def test_nvml_init_error_means_no_gpu_and_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(fail_init=True))
    source = GpuMonitor()
    assert source.read() == ((), "no NVIDIA GPU / driver: Driver Not Loaded")
    assert source.read()[0] == ()
    assert sys.modules["pynvml"].calls["nvmlInit"] == 1  # initialised once, not every sample


def test_missing_nvml_library_means_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    gpus, note = GpuMonitor().read()
    assert gpus == () and "nvidia-ml-py is not installed" in note


def test_nvml_error_while_reading_means_no_gpu_not_an_exception(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(fail_util=True))
    gpus, note = GpuMonitor().read()
    assert gpus == () and note == "NVML error on GPU 0: GPU is lost"
    snap = HardwareSampler(gpus=GpuMonitor()).sample()
    assert snap.gpus == () and "GPU is lost" in snap.gpu_note


def test_temperature_and_power_are_cached_for_the_ttl(monkeypatch):
    fake = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    now = [100.0]
    source = GpuMonitor(slow_ttl_s=5.0, clock=lambda: now[0])
    for t in (100.0, 101.0, 104.9):
        now[0] = t
        assert source.read()[0][0].temp_c == 78.0
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 3  # every sample
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 3
    assert fake.calls["nvmlDeviceGetTemperature"] == 1  # cached
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 1
    now[0] = 105.1
    source.read()
    assert fake.calls["nvmlDeviceGetTemperature"] == 2
    assert fake.calls["nvmlInit"] == 1


def test_close_shuts_nvml_down(monkeypatch):
    fake = fake_pynvml(name="NVIDIA GeForce RTX 3090")  # str names (newer nvidia-ml-py)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = HardwareSampler(gpus=GpuMonitor())
    assert sampler.sample().gpus[0].name == "NVIDIA GeForce RTX 3090"
    sampler.close()
    assert fake.calls["nvmlShutdown"] == 1


# --------------------------------------------------------------------------- job threads

CHILD = """
import subprocess, sys, threading
stop = threading.Event()
for _ in range(3):
    threading.Thread(target=stop.wait, daemon=True).start()
grandchild = None
if len(sys.argv) > 1:
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
sys.stdin.readline()
if grandchild is not None:
    grandchild.kill()
    grandchild.wait()
"""


class Child:
    def __init__(self, env: dict[str, str], grandchild: bool = False) -> None:
        args = [sys.executable, "-c", CHILD] + (["grandchild"] if grandchild else [])
        self.proc = subprocess.Popen(
            args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def __enter__(self) -> subprocess.Popen:
        return self.proc

    def __exit__(self, *exc) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _unsanitized_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARS}


def test_job_threads_of_a_real_process_tree():
    with Child(sanitized_env(), grandchild=True) as good, Child(_unsanitized_env()) as bad:
        ok = job_threads("good", good.pid)
        not_ok = job_threads("bad", bad.pid)
        sampler = HardwareSampler(jobs=lambda: {"good": good.pid, "bad": bad.pid})
        snap = sampler.sample()
    assert ok is not None and not_ok is not None
    assert ok.processes == 2 and ok.threads >= 5  # child: main + 3, grandchild: 1
    assert ok.sanitized is True and ok.blas_env == {v: "1" for v in THREAD_VARS}
    assert ok.unsanitized_vars == {}
    assert not_ok.processes == 1 and not_ok.threads >= 4
    assert not_ok.sanitized is False
    assert not_ok.unsanitized_vars == {v: None for v in THREAD_VARS}
    assert [job.run_id for job in snap.jobs] == ["bad", "good"]
    assert snap.jobs[1].sanitized is True


def test_job_threads_of_a_gone_process_is_none_and_a_failing_job_source_is_ignored():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert job_threads("gone", proc.pid) is None

    def broken():
        raise RuntimeError("registry unreadable")

    assert HardwareSampler(jobs=broken).sample().jobs == ()
    assert HardwareSampler(jobs=lambda: {"gone": proc.pid}).sample().jobs == ()


def test_unreadable_environment_gives_sanitized_none(tmp_path):
    from ploutos_tui.model.sampling import process_table

    table = process_table()  # the real process table, but no <pid>/environ under tmp_path
    job = job_threads("me", os.getpid(), proc_root=tmp_path, table=table)
    assert job is not None and job.sanitized is None and job.blas_env == {}
    assert job.threads >= 1


# --------------------------------------------------------------------------- snapshots


def _snapshot(i: int = 0, **changes) -> HardwareSnapshot:
    values = dict(
        ts=1767268800.0 + i,
        per_core_pct=(10.0 + i, 90.5),
        cpu_total_pct=50.2,
        load_avg=(1.0, 2.0, 3.0),
        usable_cpus=2,
        host_cpus=4,
        cpu_quota=2.0,
        mem_used_bytes=3 * GiB,
        mem_total_bytes=16 * GiB,
        mem_limit_bytes=8 * GiB,
        gpus=(GpuReading(0, "RTX 3090", 95.0, 22 * GiB, 24 * GiB, None, 330.0, 350.0),),
        gpu_note="",
        machine_threads=900,
        ulimit_u=None,
        pids_max=1000,
        threads_max=200000,
        jobs=(JobThreads("wf-a", 42, 3, 17, False, {"OMP_NUM_THREADS": None}),),
        sample_ms=1.5,
    )
    values.update(changes)
    return HardwareSnapshot(**values)


def test_snapshot_json_round_trip(tmp_path):
    snap = _snapshot(pids_current=950, mem_cgroup_used_bytes=5 * GiB, affinity_cpus=4)
    assert HardwareSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap
    path = tmp_path / "snaps.json"
    save_snapshots(path, [snap, _snapshot(1)], note="test")
    assert load_snapshots(path) == [snap, _snapshot(1)]
    assert json.loads(path.read_text())["note"] == "test"
    # files written before the optional fields existed (or with fields added later) still load
    older = {k: v for k, v in _snapshot().to_dict().items() if k != "pids_current"}
    assert HardwareSnapshot.from_dict({**older, "future_field": 1}) == _snapshot()


def test_tightest_thread_limit_names_the_limit():
    snap = _snapshot()
    assert snap.tightest_thread_limit == ("cgroup pids.max", 1000)
    assert snap.threads_against_limit() == (900, "cgroup pids.max", 1000)
    assert snap.thread_limit_fraction == pytest.approx(0.9)
    # pids.max counts this cgroup's tasks: compared with pids.current when it is known
    assert _snapshot(pids_current=400).threads_against_limit() == (400, "cgroup pids.max", 1000)
    # other limits are compared with the machine's threads
    assert _snapshot(ulimit_u=500, pids_current=400).threads_against_limit() == (
        900,
        "ulimit -u",
        500,
    )
    assert _snapshot(pids_max=None, threads_max=None).tightest_thread_limit is None
    assert _snapshot(pids_max=None, threads_max=None).thread_limit_fraction is None


def test_recorded_sampler_replays_in_order_then_repeats_the_last():
    snaps = [_snapshot(i) for i in range(3)]
    sampler = RecordedSampler(snaps)
    assert [sampler.sample() for _ in range(5)] == snaps + [snaps[-1], snaps[-1]]
    assert sampler.calls == 5
    with pytest.raises(ValueError):
        RecordedSampler([])


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_recorded_fixtures_load(name):
    sampler = RecordedSampler.from_json(FIXTURES / name)
    assert len(sampler.snapshots) >= 3  # sparklines need some history
    stamps = [s.ts for s in sampler.snapshots]
    assert stamps == sorted(stamps)
    for snap in sampler.snapshots:
        assert HardwareSnapshot.from_dict(snap.to_dict()) == snap
        assert len(snap.per_core_pct) == snap.host_cpus


def test_fixture_contents_match_their_names():
    two = load_snapshots(FIXTURES / "hardware_2cores_nogpu.json")[-1]
    assert len(two.per_core_pct) == 2 and two.gpus == () and two.gpu_note

    big = load_snapshots(FIXTURES / "hardware_256cores_3090.json")[-1]
    assert len(big.per_core_pct) == 256 and 85 <= big.cpu_total_pct <= 95
    assert sum(1 for v in big.per_core_pct if v < 5) >= 10
    assert big.mem_total_bytes >= 1000 * GiB and big.mem_limit_bytes is not None
    (gpu,) = big.gpus
    assert "3090" in gpu.name and gpu.util_pct == 95 and gpu.temp_c == 78
    assert (round(gpu.power_w), gpu.power_limit_w) == (330, 350)
    assert sorted(job.sanitized for job in big.jobs) == [False, True]

    near = load_snapshots(FIXTURES / "hardware_threads_near_limit.json")[-1]
    assert near.tightest_thread_limit == ("cgroup pids.max", 4096)
    assert near.thread_limit_fraction is not None and near.thread_limit_fraction > 0.95


def test_process_table_reads_parents_and_threads_even_with_spaces_in_names(tmp_path):
    from ploutos_tui.model.sampling import process_table

    for pid, stat in {
        "10": "10 (bash) S 1 10 10 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 1 2 3",
        "11": "11 (my (odd) name) S 10 11 10 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 7 0 1 2 3",
        "12": "12 (python) S 11 11 10 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0 1 2 3",
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "stat").write_text(stat)
    (tmp_path / "self").mkdir()
    assert process_table(tmp_path) == {10: (1, 1), 11: (10, 7), 12: (11, 4)}
    job = job_threads("r", 11, proc_root=tmp_path)
    assert (job.processes, job.threads) == (2, 11)
    assert job_threads("r", 99, proc_root=tmp_path) is None


# --------------------------------------------------------------------------- per-process readings


def stat_line(pid, ppid, utime, stime, threads, start, rss, comm="python"):
    """A full /proc/<pid>/stat line (proc(5) field order)."""
    return (
        f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 {utime} {stime} 0 0 20 0 "
        f"{threads} 0 {start} 123456789 {rss} 18446744073709551615 1 1 0 0 0 0 0\n"
    )


def write_proc(root: Path, rows: dict[int, tuple]) -> None:
    """A fake /proc: ``{pid: (ppid, utime, stime, threads, start, rss[, comm])}``."""
    for pid, row in rows.items():
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "stat").write_text(stat_line(pid, *row))


class FixedHost:
    def read(self) -> HostReading:
        return HostReading(
            per_core_pct=(1.0, 2.0),
            cpu_total_pct=1.5,
            load_avg=(0.1, 0.2, 0.3),
            usable_cpus=2,
            host_cpus=2,
            cpu_quota=None,
            mem_used_bytes=GiB,
            mem_total_bytes=8 * GiB,
            mem_limit_bytes=None,
            machine_threads=100,
            ulimit_u=None,
            pids_max=None,
            threads_max=None,
        )


class FixedGpus:
    def __init__(self, readings=()) -> None:
        self.readings = tuple(readings)

    def read(self):
        return self.readings, "" if self.readings else "no NVIDIA GPU / driver: test"


TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def test_per_process_cpu_rss_threads_and_gpu_of_a_fake_job_tree(tmp_path):
    """Trainer 100 -> forkserver 101 -> workers 102, 103; 200 is not in any job."""
    from engine.system.gpus import GpuProcess

    write_proc(
        tmp_path,
        {
            100: (1, 10, 5, 4, 1000, 25_000),
            101: (100, 1, 0, 1, 1001, 2_000),
            102: (101, 100, 20, 9, 1002, 300_000, "my (odd) worker"),
            103: (101, 50, 50, 9, 1003, 310_000),
            200: (1, 999, 999, 1, 5, 1),
        },
    )
    gpu = GpuReading(
        0,
        "H200",
        50.0,
        8 * GiB,
        141 * GiB,
        None,
        None,
        None,
        (GpuProcess(102, 3 * GiB, 35.0), GpuProcess(999, GiB, 10.0)),
    )
    now = [50.0]
    sampler = HardwareSampler(
        host=FixedHost(),
        gpus=FixedGpus([gpu]),
        jobs=lambda: {"run-a": 100},
        proc_root=tmp_path,
        monotonic=lambda: now[0],
    )
    first = sampler.sample()
    assert [p.pid for p in first.processes] == [100, 101, 102, 103]
    assert all(p.cpu_pct is None for p in first.processes)  # nothing to measure against yet
    assert first.jobs[0].processes == 4 and first.jobs[0].threads == 23

    # two seconds later: 102 used 2 s of CPU (200 % of a core), 103 half a second, 100 none;
    # 101 is a new process under the same pid (its start time changed): not measured
    now[0] = 52.0
    write_proc(
        tmp_path,
        {
            100: (1, 10, 5, 4, 1000, 25_000),
            101: (100, 0, 0, 1, 7777, 2_000),
            102: (101, 100 + TICK * 3 // 2, 20 + TICK // 2, 9, 1002, 300_000),
            103: (101, 50 + TICK // 4, 50 + TICK // 4, 9, 1003, 320_000),
        },
    )
    snap = sampler.sample()
    by_pid = {p.pid: p for p in snap.processes}
    assert by_pid[100].cpu_pct == 0.0
    assert by_pid[101].cpu_pct is None
    assert by_pid[102].cpu_pct == pytest.approx(100.0)  # 2 s of CPU over 2 s of wall time
    assert by_pid[103].cpu_pct == pytest.approx(25.0)
    assert by_pid[102].rss_bytes == 300_000 * PAGE and by_pid[103].rss_bytes == 320_000 * PAGE
    assert (by_pid[102].threads, by_pid[102].ppid, by_pid[102].run_id) == (9, 101, "run-a")
    assert (by_pid[102].gpu_mem_bytes, by_pid[102].gpu_util_pct) == (3 * GiB, 35.0)
    assert (by_pid[103].gpu_mem_bytes, by_pid[103].gpu_util_pct) == (None, None)
    assert snap.process(102) is by_pid[102] and snap.process(999) is None
    assert snap.process(None) is None
    # the snapshot, processes included, survives JSON
    assert HardwareSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap


def test_cpu_percent_counts_every_core_a_process_uses(tmp_path):
    write_proc(tmp_path, {10: (1, 0, 0, 8, 1, 1)})
    now = [0.0]
    sampler = HardwareSampler(
        host=FixedHost(),
        gpus=FixedGpus(),
        jobs=lambda: {"r": 10},
        proc_root=tmp_path,
        monotonic=lambda: now[0],
    )
    sampler.sample()
    now[0] = 0.5
    write_proc(tmp_path, {10: (1, 2 * TICK, 0, 8, 1, 1)})  # 2 s of CPU in 0.5 s: four cores
    assert sampler.sample().processes[0].cpu_pct == pytest.approx(400.0)


def test_no_live_job_means_no_process_readings_and_a_fresh_start(tmp_path):
    write_proc(tmp_path, {10: (1, 0, 0, 1, 1, 1)})
    live = [{}]
    now = [0.0]
    sampler = HardwareSampler(
        host=FixedHost(),
        gpus=FixedGpus(),
        jobs=lambda: live[0],
        proc_root=tmp_path,
        monotonic=lambda: now[0],
    )
    assert sampler.sample().processes == ()
    live[0] = {"r": 10}
    now[0] = 1.0
    assert sampler.sample().processes[0].cpu_pct is None
    live[0] = {"r": 999}  # gone
    assert sampler.sample().processes == ()


def test_recent_reuses_a_fresh_snapshot_and_samples_when_it_is_old(tmp_path):
    now = [0.0]
    calls = [0]

    class CountingHost(FixedHost):
        def read(self):
            calls[0] += 1
            return super().read()

    sampler = HardwareSampler(host=CountingHost(), gpus=FixedGpus(), monotonic=lambda: now[0])
    first = sampler.recent(2.0)  # nothing yet: samples
    now[0] = 1.5
    assert sampler.recent(2.0) is first and calls[0] == 1
    now[0] = 2.5
    assert sampler.recent(2.0) is not first and calls[0] == 2
    assert sampler.sample() is not None and calls[0] == 3

    snaps = [_snapshot(i) for i in range(3)]
    recorded = RecordedSampler(snaps)
    assert recorded.recent(1.0) == snaps[0] and recorded.calls == 0  # the replay stays put
    recorded.sample()
    recorded.sample()
    assert recorded.recent(1.0) == snaps[1]


def test_the_real_process_of_a_real_job_tree_is_read():
    with Child(sanitized_env(), grandchild=True) as child:
        sampler = HardwareSampler(gpus=FixedGpus(), jobs=lambda: {"r": child.pid})
        sampler.sample()
        snap = sampler.sample()
    procs = {p.pid: p for p in snap.processes}
    assert child.pid in procs and len(procs) == 2  # the child and its grandchild
    me = procs[child.pid]
    assert me.run_id == "r" and me.threads >= 4 and me.rss_bytes > 1 << 20
    assert me.cpu_pct is not None and me.cpu_pct >= 0.0


def test_snapshots_recorded_before_process_readings_still_load():
    old = _snapshot().to_dict()
    del old["processes"]
    for gpu in old["gpus"]:
        del gpu["processes"]
    assert HardwareSnapshot.from_dict(old) == _snapshot()
    assert HardwareSnapshot.from_dict(old).processes == ()


# --------------------------------------------------------------------------- NVML per process


class FakeNotFound(FakeNVMLError):
    value = 6


class FakeNotSupported(FakeNVMLError):
    value = 3


def nvml_with_processes(
    *, util=None, compute=None, graphics=None, compute_error=None, with_calls=True
):
    """:func:`fake_pynvml` plus the per-process calls: ``util`` a list of sample lists handed
    out one per call (an exception instance is raised instead)."""
    fake = fake_pynvml()
    if not with_calls:
        return fake
    utils = list(util or [])
    seen_stamps: list[int] = []

    def proc(pid, mem):
        return types.SimpleNamespace(pid=pid, usedGpuMemory=mem)

    def running(kind, listed):
        def fn(_handle):
            fake.calls[kind] = fake.calls.get(kind, 0) + 1
            if kind == "compute" and compute_error is not None:
                raise compute_error
            return [proc(pid, mem) for pid, mem in listed]

        return fn

    def process_util(_handle, since):
        fake.calls["util"] = fake.calls.get("util", 0) + 1
        seen_stamps.append(since)
        result = utils.pop(0) if utils else []
        if isinstance(result, Exception):
            raise result
        return [types.SimpleNamespace(pid=p, timeStamp=t, smUtil=u) for p, t, u in result]

    fake.NVML_ERROR_NOT_FOUND = 6
    fake.nvmlDeviceGetComputeRunningProcesses = running("compute", compute or [])
    fake.nvmlDeviceGetGraphicsRunningProcesses = running("graphics", graphics or [])
    fake.nvmlDeviceGetProcessUtilization = process_util
    fake.seen_stamps = seen_stamps
    return fake


def test_nvml_lists_each_processes_memory_and_sm_utilisation(monkeypatch):
    from engine.system.gpus import GpuProcess

    fake = nvml_with_processes(
        compute=[(4242, 3 * GiB), (4343, None)],
        graphics=[(4242, 3 * GiB), (77, 64 << 20)],  # 4242 in both lists: counted once
        util=[
            [(4242, 1_000, 30), (4242, 2_000, 50), (4343, 1_500, 200)],  # 200 %: not a sample
            FakeNotFound("Not Found"),  # no sample since: the processes were idle
            [(4242, 2_000, 99), (4242, 3_000, 10)],  # 2,000 was seen already
        ],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monitor = GpuMonitor()
    (gpu,) = monitor.read()[0]
    assert gpu.processes == (
        GpuProcess(77, 64 << 20, 0.0),
        GpuProcess(4242, 3 * GiB, 40.0),
        GpuProcess(4343, None, 0.0),
    )
    assert [p.sm_util_pct for p in monitor.read()[0][0].processes] == [0.0, 0.0, 0.0]
    assert {p.pid: p.sm_util_pct for p in monitor.read()[0][0].processes}[4242] == 10.0
    assert fake.seen_stamps == [0, 2_000, 2_000]  # each call asks only for newer samples
    # the reading survives JSON
    assert GpuReading.from_dict(json.loads(json.dumps(asdict(gpu)))) == gpu


def test_per_process_utilisation_not_supported_is_none_and_not_asked_again(monkeypatch):
    fake = nvml_with_processes(compute=[(4242, GiB)], util=[FakeNotSupported("Not Supported")] * 3)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monitor = GpuMonitor()
    for _ in range(3):
        (gpu,) = monitor.read()[0]
        assert [(p.pid, p.mem_used_bytes, p.sm_util_pct) for p in gpu.processes] == [
            (4242, GiB, None)
        ]
    assert fake.calls["util"] == 1 and fake.calls["compute"] == 3


class FakeGpuLost(FakeNVMLError):
    value = 15


def test_a_passing_utilisation_error_is_unknown_once_then_asked_again(monkeypatch):
    fake = nvml_with_processes(
        compute=[(4242, GiB)], util=[FakeGpuLost("GPU is lost"), [(4242, 5, 70)]]
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monitor = GpuMonitor()
    assert monitor.read()[0][0].processes[0].sm_util_pct is None
    assert monitor.read()[0][0].processes[0].sm_util_pct == 70.0
    assert fake.calls["util"] == 2


def test_nvml_process_errors_and_an_old_library_never_break_the_reading(monkeypatch):
    failing = nvml_with_processes(
        compute_error=FakeNotSupported("Not Supported"), graphics=[(9, GiB)]
    )
    monkeypatch.setitem(sys.modules, "pynvml", failing)
    (gpu,) = GpuMonitor().read()[0]
    assert [p.pid for p in gpu.processes] == [9]  # the list that worked
    assert gpu.util_pct == 95.0

    monkeypatch.setitem(sys.modules, "pynvml", nvml_with_processes(with_calls=False))
    gpus, note = GpuMonitor().read()  # a library without the per-process calls
    assert note == "" and gpus[0].processes == ()

    no_processes = nvml_with_processes()
    monkeypatch.setitem(sys.modules, "pynvml", no_processes)
    assert GpuMonitor().read()[0][0].processes == ()
    assert "util" not in no_processes.calls  # nothing on the GPU: utilisation not asked


def test_the_sampler_joins_nvml_processes_to_the_job_tree_by_pid(monkeypatch, tmp_path):
    write_proc(tmp_path, {500: (1, 0, 0, 3, 1, 1000), 501: (500, 0, 0, 12, 2, 90_000)})
    fake = nvml_with_processes(compute=[(501, 5 * GiB)], util=[[(501, 10, 62)]])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = HardwareSampler(
        host=FixedHost(), gpus=GpuMonitor(), jobs=lambda: {"r": 500}, proc_root=tmp_path
    )
    snap = sampler.sample()
    assert {p.pid: (p.gpu_mem_bytes, p.gpu_util_pct) for p in snap.processes} == {
        500: (None, None),
        501: (5 * GiB, 62.0),
    }
