"""The hardware plan: profiles, auto rules on fake machines, errors, thread limits, real probing."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.system.gpus import visible_gpus
from engine.system.limits import ThreadLimits
from engine.train import plan as hardware
from engine.train.plan import (
    FIELDS,
    GpuInfo,
    HardwarePlan,
    MachineInfo,
    check_thread_limits,
    format_plan,
    load_hardware_profiles,
    probe_machine,
    resolve_plan,
)

ROOT = Path(__file__).resolve().parents[2]
HARDWARE_YAML = ROOT / "config" / "hardware.yaml"
GiB = 1024**3
RTX3090 = GpuInfo(index=0, name="NVIDIA GeForce RTX 3090", memory_total_bytes=24 * GiB)
NO_LIMITS = ThreadLimits(None, None, None)


def fake(
    cpus: int,
    ram_gib: float,
    *,
    gpus: tuple[GpuInfo, ...] = (),
    cuda: bool | None = None,
    host: int | None = None,
    quota: float | None = None,
    limit_gib: float | None = None,
    limits: ThreadLimits = NO_LIMITS,
) -> MachineInfo:
    return MachineInfo(
        usable_cpus=cpus,
        host_cpus=host or cpus,
        ram_total_bytes=int(ram_gib * GiB),
        ram_limit_bytes=None if limit_gib is None else int(limit_gib * GiB),
        gpus=gpus,
        thread_limits=limits,
        cuda_usable=bool(gpus) if cuda is None else cuda,
        affinity_cpus=host or cpus,
        cpu_quota=quota,
    )


RUNPOD = fake(256, 1024, gpus=(RTX3090,))
RUNPOD_NO_GPU = fake(256, 1024)


def values(plan: HardwarePlan) -> dict[str, object]:
    return {name: getattr(plan, name) for name in FIELDS}


# --------------------------------------------------------------------------- turbo


def test_turbo_on_the_seed_server_is_the_seed_settings():
    plan = resolve_plan("turbo", ensemble=20, machine=RUNPOD)
    assert values(plan) == {
        "device": "cuda",
        "n_envs": 256,
        "n_steps": 4096,
        "batch_size": 65536,
        "parallel_members": 20,
        "torch_threads": 1,
    }
    assert plan.rollout_size == 1_048_576
    assert plan.warnings == ()
    # never more units at once than the run has: one fold of 5 members is 5 units
    one_fold = resolve_plan("turbo", ensemble=5, folds=1, machine=RUNPOD)
    assert one_fold.parallel_members == 5
    assert one_fold.reasons["parallel_members"] == (
        "profile 'turbo' sets 20, capped by the run's 5 units (1 fold x 5 members)"
    )


def test_turbo_without_a_gpu_runs_on_cpu_with_a_cpu_sized_batch():
    plan = resolve_plan("turbo", ensemble=20, machine=RUNPOD_NO_GPU)
    assert plan.device == "cpu"
    assert "asks for cuda" in plan.reasons["device"] and "runs on cpu" in plan.reasons["device"]
    assert plan.batch_size == 4096 and plan.rollout_size % plan.batch_size == 0
    assert "GPU-sized batches only on a GPU" in plan.reasons["batch_size"]
    assert (plan.n_envs, plan.n_steps) == (256, 4096)
    assert any("runs on cpu" in w for w in plan.warnings)


def test_a_gpu_torch_cannot_use_is_reported_but_not_used():
    machine = fake(256, 1024, gpus=(RTX3090,), cuda=False)
    plan = resolve_plan("auto", ensemble=5, machine=machine)
    assert plan.device == "cpu"
    assert "torch cannot use" in plan.reasons["device"]
    assert plan.machine["gpus"][0]["name"] == "NVIDIA GeForce RTX 3090"
    assert resolve_plan("turbo", ensemble=5, machine=machine).device == "cpu"


def test_turbo_with_a_wide_net_warns_that_20_members_do_not_fit_a_3090():
    plan = resolve_plan("turbo", ensemble=20, net_arch=(512, 512, 512), machine=RUNPOD)
    assert plan.parallel_members == 20 and plan.batch_size == 65536  # fixed numbers stay
    assert any("VRAM" in w for w in plan.warnings)


# --------------------------------------------------------------------------- auto


def test_auto_on_a_small_cpu_machine():
    plan = resolve_plan("auto", ensemble=5, machine=fake(2, 24))
    assert values(plan) == {
        "device": "cpu",
        "n_envs": 32,
        "n_steps": 512,
        "batch_size": 4096,
        "parallel_members": 1,
        "torch_threads": 1,
    }
    assert "limited by the CPUs" in plan.reasons["parallel_members"]


def test_auto_uses_the_cgroup_quota_not_the_host_cores():
    machine = fake(32, 1024, host=256, quota=32.0)
    plan = resolve_plan("auto", ensemble=100, machine=machine)
    assert plan.parallel_members == 16 and plan.torch_threads == 1
    assert "32 usable CPUs (affinity 256, cgroup cpu.max 32)" in plan.reasons["parallel_members"]
    # a run of few units leaves cores over: they go to torch, never past the quota
    small = resolve_plan("auto", ensemble=5, machine=machine)
    assert small.parallel_members == 5 and small.torch_threads == 5
    assert small.parallel_members * (1 + small.torch_threads) <= 32
    why = small.reasons["parallel_members"]
    assert "5 units (1 fold x 5 members; fold count not given, one fold assumed)" in why
    assert why.endswith("limited by the units")


def test_auto_on_the_seed_server_uses_the_gpu():
    plan = resolve_plan("auto", ensemble=20, machine=RUNPOD)
    assert values(plan) == {
        "device": "cuda",
        "n_envs": 256,
        "n_steps": 4096,
        "batch_size": 65536,
        "parallel_members": 20,
        "torch_threads": 1,
    }
    assert "RTX 3090" in plan.reasons["device"]
    recurrent = resolve_plan("auto", ensemble=5, algorithm="recurrent_ppo", machine=RUNPOD)
    assert recurrent.n_steps == 2048 and recurrent.rollout_size % recurrent.batch_size == 0


def test_auto_shrinks_gpu_batches_so_the_members_fit_in_vram():
    wide = dict(net_arch=(512, 512, 512), obs_size=2000, machine=RUNPOD)
    plan = resolve_plan("auto", ensemble=20, **wide)
    assert plan.parallel_members == 20
    assert 4096 <= plan.batch_size < 65536 and plan.rollout_size % plan.batch_size == 0
    assert "halved" in plan.reasons["batch_size"]
    vram = hardware.member_vram_bytes(plan.batch_size, (512, 512, 512), 2000, "ppo")
    assert 20 * vram <= hardware.VRAM_FRACTION * 24 * GiB
    # a huge ensemble is bounded by the GPU's memory, not the 128 members the CPUs allow
    big = resolve_plan("auto", ensemble=500, **wide)
    assert big.parallel_members < 128 and "limited by the VRAM" in big.reasons["parallel_members"]


def test_a_small_cgroup_memory_limit_bounds_the_members():
    free = resolve_plan("auto", ensemble=10, machine=fake(64, 256))
    tight = resolve_plan("auto", ensemble=10, machine=fake(64, 256, limit_gib=6))
    assert free.parallel_members == 10
    assert tight.parallel_members == 2
    assert "limited by the RAM" in tight.reasons["parallel_members"]
    assert "cgroup limit" in tight.reasons["parallel_members"]
    # a bigger observation makes each member's rollout buffer, hence its RAM, bigger
    huge_obs = resolve_plan("auto", ensemble=10, obs_size=200_000, machine=fake(64, 64))
    assert (
        huge_obs.parallel_members
        < resolve_plan("auto", ensemble=10, machine=fake(64, 64)).parallel_members
    )


def test_auto_members_respect_a_tight_thread_limit():
    machine = fake(256, 1024, limits=ThreadLimits(ulimit_u=None, pids_max=200, threads_max=None))
    plan = resolve_plan("auto", ensemble=100, machine=machine)
    assert plan.parallel_members < 100
    assert "limited by the thread limit" in plan.reasons["parallel_members"]
    check_thread_limits(plan, machine.thread_limits)  # does not raise


machines = st.builds(
    lambda cpus, extra_host, ram, limit, gpu_mem, n_gpus, cuda, tl: MachineInfo(
        usable_cpus=cpus,
        host_cpus=cpus + extra_host,
        ram_total_bytes=ram,
        ram_limit_bytes=limit,
        gpus=tuple(GpuInfo(i, "GPU", gpu_mem) for i in range(n_gpus)),
        thread_limits=tl,
        cuda_usable=cuda,
    ),
    cpus=st.integers(1, 512),
    extra_host=st.integers(0, 256),
    ram=st.integers(1 * GiB, 2048 * GiB),
    limit=st.none() | st.integers(256 * 1024**2, 4096 * GiB),
    gpu_mem=st.integers(2 * GiB, 141 * GiB),
    n_gpus=st.integers(0, 2),
    cuda=st.booleans(),
    tl=st.builds(
        ThreadLimits,
        st.none() | st.integers(64, 200_000),
        st.none() | st.integers(64, 200_000),
        st.none() | st.integers(64, 200_000),
    ),
)
net_archs = st.lists(st.integers(1, 2048), min_size=1, max_size=4).map(tuple)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    machine=machines,
    profile=st.sampled_from(["auto", "turbo", "laptop"]),
    ensemble=st.integers(1, 64),
    folds=st.none() | st.integers(0, 12),
    algorithm=st.sampled_from(["ppo", "recurrent_ppo"]),
    net_arch=net_archs,
    obs_size=st.none() | st.integers(1, 20_000),
)
def test_every_plan_keeps_its_invariants(
    machine, profile, ensemble, folds, algorithm, net_arch, obs_size
):
    kwargs = {
        "ensemble": ensemble,
        "folds": folds,
        "algorithm": algorithm,
        "net_arch": net_arch,
        "obs_size": obs_size,
        "machine": machine,
        "hardware_file": HARDWARE_YAML,
    }
    plan = resolve_plan(profile, force=True, **kwargs)
    try:
        resolve_plan(profile, **kwargs)
    except ConfigError as err:  # only a fixed parallel_members beyond the RAM bound is refused
        assert profile == "turbo" and "--force" in str(err), err
        assert any("forced" in w for w in plan.warnings)
    assert plan.batch_size >= 2 and plan.rollout_size % plan.batch_size == 0
    units = ensemble * (1 if folds is None else folds)
    assert plan.inputs["units"] == units
    assert 1 <= plan.parallel_members <= max(1, units)
    assert plan.torch_threads >= 1
    assert all(plan.reasons.get(name) for name in (*FIELDS, "planned_threads"))
    assert plan.device in ("cpu", "cuda")
    if plan.device == "cuda":
        assert machine.usable_gpus and plan.batch_size <= hardware.GPU_BATCH_CAP
    assert plan.planned_threads == hardware.planned_threads(
        plan.parallel_members, plan.torch_threads, plan.device
    )
    assert HardwarePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    if profile == "auto":
        assert plan.device == ("cuda" if machine.usable_gpus else "cpu")
        assert plan.parallel_members * (1 + plan.torch_threads) <= max(machine.usable_cpus, 2)
        if plan.device == "cpu":
            assert plan.batch_size <= hardware.CPU_BATCH_CAP
        tight = machine.thread_limits.tightest
        if tight is None or hardware.planned_threads(
            1, 1, plan.device
        ) <= tight - hardware.thread_margin(tight):
            check_thread_limits(plan, machine.thread_limits)


@settings(max_examples=150, deadline=None)
@given(
    machine=machines,
    n_envs=st.none() | st.integers(1, 512),
    n_steps=st.none() | st.integers(1, 8192),
    batch_size=st.none() | st.integers(2, 70_000),
)
def test_overrides_never_give_a_batch_that_does_not_divide(machine, n_envs, n_steps, batch_size):
    overrides = {"n_envs": n_envs, "n_steps": n_steps, "batch_size": batch_size}
    try:
        plan = resolve_plan(
            "auto", ensemble=5, machine=machine, hardware_file=HARDWARE_YAML, overrides=overrides
        )
    except ConfigError as err:
        assert "n_envs x n_steps" in str(err) and "\n" not in str(err)
        return
    assert plan.rollout_size % plan.batch_size == 0 and plan.batch_size >= 2
    for name, value in overrides.items():
        if value is not None:
            assert getattr(plan, name) == value


# --------------------------------------------------------------------------- overrides


def test_overrides_replace_profile_values_and_are_validated():
    machine = fake(32, 128)
    plan = resolve_plan("auto", ensemble=5, machine=machine, overrides={"parallel_members": 2})
    assert plan.parallel_members == 2 and plan.reasons["parallel_members"] == "override sets 2"
    plan = resolve_plan("auto", ensemble=5, machine=machine, overrides={"batch_size": 1000})
    assert plan.batch_size == 1000 and plan.rollout_size % 1000 == 0
    assert "raised to" in plan.reasons["n_steps"]
    with pytest.raises(ConfigError, match=r"override 'threads' is not a hardware setting"):
        resolve_plan("auto", ensemble=5, machine=machine, overrides={"threads": 3})
    with pytest.raises(ConfigError, match=r"override 'n_envs': expected a whole number"):
        resolve_plan("auto", ensemble=5, machine=machine, overrides={"n_envs": "many"})
    with pytest.raises(ConfigError, match=r"override 'batch_size': must be at least 2"):
        resolve_plan("auto", ensemble=5, machine=machine, overrides={"batch_size": 1})
    with pytest.raises(ConfigError, match=r"override 'device'.*'gpu'"):
        resolve_plan("auto", ensemble=5, machine=machine, overrides={"device": "gpu"})
    with pytest.raises(
        ConfigError, match=r"'batch_size': 3000 does not divide n_envs x n_steps = 2048"
    ):
        resolve_plan("laptop", ensemble=5, machine=machine, overrides={"batch_size": 3000})
    with pytest.raises(ConfigError, match=r"ensemble must be"):
        resolve_plan("auto", ensemble=0, machine=machine)
    with pytest.raises(ConfigError, match=r"algorithm 'sac'"):
        resolve_plan("auto", ensemble=2, algorithm="sac", machine=machine)


# --------------------------------------------------------------------------- hardware.yaml


def test_the_shipped_profiles():
    profiles = load_hardware_profiles(HARDWARE_YAML)
    assert set(profiles) >= {"turbo", "auto", "laptop"}
    turbo = profiles["turbo"].model_dump()
    assert turbo == {
        "n_envs": 256,
        "n_steps": 4096,
        "batch_size": 65536,
        "parallel_members": 20,
        "torch_threads": 1,
        "device": "cuda",
    }
    assert set(profiles["auto"].model_dump().values()) == {"auto"}
    assert profiles["laptop"].model_dump() == {
        "n_envs": 8,
        "n_steps": 256,
        "batch_size": 512,
        "parallel_members": 1,
        "torch_threads": 1,
        "device": "cpu",
    }
    assert hardware.default_hardware_file() == HARDWARE_YAML


def _edited(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    text = HARDWARE_YAML.read_text()
    assert old in text
    text = text.replace(old, new, 1)
    path = tmp_path / "hardware.yaml"
    path.write_text(text)
    line = text[: text.index(new)].count("\n") + 1 + new.count("\n", 0, len(new.rstrip("\n")))
    return path, line


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "batch_size: 65536",
            "batch_size: 65000",
            r"key 'profiles\.turbo\.batch_size': 65000 does not divide n_envs x n_steps = "
            r"1048576; use a divisor such as 65536$",
        ),
        (
            "    device: cpu",
            "    device: cpu\n    n_env: 4",
            r"unknown key 'profiles\.laptop\.n_env'; remove it or check its spelling$",
        ),
        (
            "n_steps: auto",
            "n_steps: many",
            r"key 'profiles\.auto\.n_steps': expected a whole number >= 1 or 'auto' \(got 'many'\)$",
        ),
        ("n_envs: 8", "n_envs: 0", r"key 'profiles\.laptop\.n_envs': must be at least 1"),
        ("torch_threads: 1", "torch_threads: true", r"key 'profiles\.turbo\.torch_threads'"),
        (
            "device: cuda",
            "device: gpu",
            r"key 'profiles\.turbo\.device': Input should be 'cpu', 'cuda' or 'auto' \(got 'gpu'\)$",
        ),
    ],
)
def test_hardware_file_errors_name_file_line_and_key(tmp_path, old, new, expected):
    path, line = _edited(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        resolve_plan("laptop", ensemble=2, machine=fake(2, 24), hardware_file=path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert re.search(expected, message), message


def test_unknown_profile_lists_the_available_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_plan("turbo2", ensemble=2, machine=fake(2, 24), hardware_file=HARDWARE_YAML)
    assert "unknown hardware profile 'turbo2'; available: auto, laptop, turbo" in str(err.value)
    assert str(err.value).startswith(f"{hardware._shown(HARDWARE_YAML)}: ")
    empty = tmp_path / "hw.yaml"
    empty.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"hw\.yaml: expected a mapping"):
        resolve_plan("auto", ensemble=2, machine=fake(2, 24), hardware_file=empty)
    with pytest.raises(ConfigError, match=r"nothere\.yaml: file not found"):
        resolve_plan("auto", ensemble=2, hardware_file=tmp_path / "nothere.yaml")


# --------------------------------------------------------------------------- thread limits


def test_check_thread_limits_names_the_limit_and_what_to_do():
    plan = resolve_plan("turbo", ensemble=20, machine=RUNPOD)
    assert plan.planned_threads > 100
    check_thread_limits(plan, ThreadLimits(None, None, None))
    check_thread_limits(plan, ThreadLimits(ulimit_u=100_000, pids_max=None, threads_max=500_000))
    with pytest.raises(ConfigError) as err:
        check_thread_limits(plan, ThreadLimits(ulimit_u=4096, pids_max=128, threads_max=100_000))
    message = str(err.value)
    assert "\n" not in message
    assert "cgroup pids.max 128" in message
    assert "lower parallel_members" in message and "--hardware laptop" in message
    with pytest.raises(ConfigError, match=r"ulimit -u 200\b.*lower parallel_members to \d+"):
        check_thread_limits(plan, ThreadLimits(ulimit_u=200, pids_max=None, threads_max=None))
    # what already runs on the machine counts against ulimit -u too
    check_thread_limits(plan, ThreadLimits(4096, None, None), current_threads=100)
    with pytest.raises(ConfigError, match=r"\+ 3900 already running.*ulimit -u 4096"):
        check_thread_limits(plan, ThreadLimits(4096, None, None), current_threads=3900)


# --------------------------------------------------------------------------- display and JSON


def test_format_plan_shows_every_field_its_reason_and_the_machine():
    machine = fake(32, 1024, host=256, quota=32.0, limits=ThreadLimits(4096, 1024, 100_000))
    plan = resolve_plan("auto", ensemble=5, machine=machine)
    text = format_plan(plan)
    for name in FIELDS:
        assert re.search(rf"^  {name}\s+{getattr(plan, name)}\s+\S", text, re.M), name
    assert "32 usable CPUs of 256 on the host" in text
    assert "RAM 1024.0 GiB" in text and "no GPU" in text
    assert f"Threads: {plan.planned_threads} planned at peak" in text
    assert "cgroup pids.max 1024" in text
    fallback = format_plan(resolve_plan("turbo", ensemble=5, machine=RUNPOD_NO_GPU))
    assert "Warning: no usable GPU" in fallback


def test_plan_round_trips_through_json():
    plan = resolve_plan("auto", ensemble=3, obs_size=300, machine=RUNPOD)
    data = json.loads(plan.to_json())
    assert data["batch_size"] == plan.batch_size and data["machine"]["gpus"][0]["index"] == 0
    assert HardwarePlan.from_dict(data) == plan


# --------------------------------------------------------------------------- probing


def test_probe_machine_on_this_machine():
    machine = probe_machine()
    assert 1 <= machine.usable_cpus <= machine.host_cpus
    assert machine.ram_total_bytes > 0
    assert isinstance(machine.gpus, tuple)
    if not machine.gpus:  # no NVML library or no GPU here: reported, never a crash
        assert machine.gpu_note and not machine.cuda_usable
    plan = resolve_plan("auto", ensemble=2, machine=machine)
    assert plan.device == ("cuda" if machine.usable_gpus else "cpu")


def test_probe_machine_reads_cgroup_limits(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    (tmp_path / "memory.max").write_text(f"{4 * GiB}\n")
    (tmp_path / "pids.max").write_text("777\n")
    machine = probe_machine(cgroup_root=tmp_path)
    assert machine.usable_cpus == 1 and machine.cpu_quota == 0.5
    assert machine.ram_limit_bytes == 4 * GiB
    assert machine.ram_bytes == min(4 * GiB, machine.ram_total_bytes)
    assert machine.thread_limits.pids_max == 777
    (tmp_path / "memory.max").write_text("max\n")
    assert probe_machine(cgroup_root=tmp_path).ram_limit_bytes is None


def test_cgroup_v1_memory_limit(tmp_path):
    from engine.system.limits import cgroup_memory_limit

    (tmp_path / "memory").mkdir()
    limit = tmp_path / "memory" / "memory.limit_in_bytes"
    limit.write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_memory_limit(tmp_path) is None
    limit.write_text(f"{2 * GiB}\n")
    assert cgroup_memory_limit(tmp_path) == 2 * GiB
    assert cgroup_memory_limit(tmp_path / "missing") is None


class _FakeNvml(types.ModuleType):
    """Just enough of pynvml: one RTX 3090, or an init that fails."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__("pynvml")
        self.fail, self.shut = fail, False

    def nvmlInit(self):
        if self.fail:
            raise RuntimeError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA GeForce RTX 3090"

    def nvmlDeviceGetUUID(self, handle):
        return "GPU-1234abcd"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(total=24 * GiB)


def test_probe_gpus_through_nvml_and_torch(monkeypatch):
    nvml = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cpu_torch = types.SimpleNamespace(
        __version__="2.13.0+cpu", cuda=types.SimpleNamespace(is_available=lambda: False)
    )
    monkeypatch.setitem(sys.modules, "torch", cpu_torch)
    machine = probe_machine()
    assert machine.gpus == (RTX3090,) and nvml.shut
    assert not machine.cuda_usable and "2.13.0+cpu" in machine.gpu_note
    # force: this machine's real RAM may not hold 5 turbo members; the device is what is tested
    plan = resolve_plan("turbo", ensemble=5, machine=machine, force=True)
    assert plan.device == "cpu" and "torch cannot use" in plan.reasons["device"]

    cuda_torch = types.SimpleNamespace(
        __version__="2.5.1+cu124",
        cuda=types.SimpleNamespace(is_available=lambda: True),
        version=types.SimpleNamespace(cuda="12.4"),
    )
    monkeypatch.setitem(sys.modules, "torch", cuda_torch)
    assert probe_machine().cuda_usable
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert probe_machine().gpus == ()
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(fail=True))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    broken = probe_machine()
    assert broken.gpus == () and "Driver Not Loaded" in broken.gpu_note


def test_cuda_visible_devices_picks_and_orders_gpus():
    a = GpuInfo(0, "A", GiB)
    b = GpuInfo(1, "B", 2 * GiB)
    found = [(a, "GPU-aaaa"), (b, "GPU-bbbb")]
    assert visible_gpus(found, None) == (a, b)
    assert visible_gpus(found, "1,0") == (b, a)
    assert visible_gpus(found, "GPU-bb") == (b,)
    assert visible_gpus(found, "0,7,1") == (a,)  # CUDA stops at the first unknown
    assert visible_gpus(found, "-1") == ()


def test_plan_for_an_assumed_runpod_server_uses_its_gpu_and_cpus():
    from engine.train.plan import assumed_machine

    machine = assumed_machine("cpus=256,ram=1T,gpu=24G")
    assert machine.usable_cpus == 256 and machine.ram_total_bytes == 1024**4
    assert machine.cuda_usable and machine.gpus[0].memory_total_bytes == 24 * 1024**3
    plan = resolve_plan("turbo", ensemble=20, machine=machine, net_arch=(64, 64), obs_size=556)
    assert (plan.device, plan.n_envs, plan.n_steps, plan.batch_size) == ("cuda", 256, 4096, 65536)


@pytest.mark.parametrize("spec", ["cpus=0,ram=1T", "cpus=8", "cpus=8,ram=lots", "cores=8,ram=1T"])
def test_a_bad_assumed_machine_is_one_clear_line(spec):
    from engine.train.plan import assumed_machine

    with pytest.raises(ConfigError, match="--assume") as err:
        assumed_machine(spec)
    assert "\n" not in str(err.value)
