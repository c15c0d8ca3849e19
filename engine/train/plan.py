"""The one place that turns a hardware profile and the machine into training numbers, with reasons.

Long (about 1,000 lines) because it is one job with many reasons to print: every number the plan
chooses carries the sentence that justified it, and the machine probe it needs lives beside it.

``resolve_plan`` reads a profile from the hardware file (``--hardware-file``, else
``config/hardware.yaml`` in the working directory, else the packaged one; the plan names the file
it read) with fixed numbers or ``auto``, looks at
the machine this process may really use (:func:`probe_machine`: CPU affinity and cgroup quota, RAM
and its cgroup limit, GPUs through NVML and whether torch can use them) and returns a
:class:`HardwarePlan`: ``n_envs``, ``n_steps``, ``batch_size``, ``parallel_members`` (the
training units in flight; the name predates folds training side by side), ``torch_threads`` and
``device``, each with one sentence saying why. ``format_plan`` prints it
(``ploutos plan``); ``check_thread_limits`` refuses a plan that would hit a thread limit, and a
fixed ``parallel_members`` (``turbo``) whose members need more RAM than the RAM bound below allows
is refused unless forced (``--force``).

Rules for ``auto`` (constants below, every estimate deliberately on the generous side):

* device: ``cuda`` when NVML sees a GPU and ``torch.cuda.is_available()``; else ``cpu``. A profile
  that demands ``cuda`` on a machine without a usable GPU runs on ``cpu``, and its GPU-sized batch
  is cut to the largest divisor of the rollout not above ``CPU_BATCH_CAP``.
* n_envs: ``GPU_N_ENVS`` on cuda; on cpu 16 per usable CPU (rounded down to a power of two),
  at most ``CPU_N_ENVS_MAX``. One member steps all its envs as one NumPy batch in one thread.
* n_steps: ``N_STEPS[device, algorithm]``.
* batch_size: the largest divisor of ``n_envs * n_steps`` not above ``CPU_BATCH_CAP`` on cpu; on
  cuda not above ``GPU_BATCH_CAP``, halved (down to ``GPU_BATCH_FLOOR``) while the members that the
  CPUs and RAM allow would not fit in the GPU's memory.
* parallel_members: how many (fold, member) units train at once. The orchestrator schedules the
  members of every fold from one list and evaluates a fold as soon as its members finish, so the
  cap is the run's units (:class:`TrainingUnits`: folds x ensemble; one fold when the folds are
  not known), not the ensemble: min(units, CPU bound, RAM bound, VRAM bound on cuda, thread-limit
  bound), at least 1; a fixed value above the units is capped at them. CPU bound: usable CPUs
  // (1 env-stepping thread + torch threads). RAM bound: (``RAM_FRACTION`` x min(RAM, cgroup
  limit) - ``RAM_RESERVE``) // RAM per member, where a member needs ``MEMBER_RAM_BASE``
  (+ ``MEMBER_RAM_CUDA`` on cuda) + 2 x its rollout buffer (n_envs x n_steps x (obs_size [+ 4 x
  n_lstm_layers x lstm_hidden_size LSTM states]) x 4 bytes; SB3 copies it when it flattens).
  VRAM bound: the sum over every usable GPU of ``VRAM_FRACTION`` x its memory // VRAM per
  member, where a member needs ``CUDA_CONTEXT_BYTES`` + 16 bytes per parameter (weights,
  gradients, two Adam moments) + ``ALLOCATOR_SLACK`` x batch_size x floats kept for backward per
  sample x 4 bytes (the input, the pre- and post-activation of every hidden layer of the actor
  and the critic, the gates and states of each LSTM for ``recurrent_ppo``, whose shape comes
  from the config's ``training.recurrent``: :class:`LstmShape`).
* gpu_slots (cuda only): the units in flight spread over every usable GPU, as evenly as each
  GPU's own VRAM bound allows; the executor gives each worker one GPU
  (``CUDA_VISIBLE_DEVICES``, :func:`unit_gpu_environ`) on the GPU with the fewest units. CPU
  units beside full GPU slots are not planned: on a cuda plan every core not stepping an
  environment is left to the CUDA driver and the env-stepping threads, and no measurement here
  has shown that slower CPU units shorten the run rather than delay its last fold.
* torch_threads: 1 on cuda (the GPU does the maths); on cpu, with a calibration of this unit
  shape on this machine (:mod:`engine.train.calibration`, ``ploutos plan --calibrate``), the
  measured count whose units in flight x measured per-unit rate is largest (the CPU bound then
  uses it); else the rule of thumb, said to be one: the spare cores go to torch,
  max(1, min(``TORCH_THREADS_MAX``, usable CPUs // parallel_members - 1)), so that
  parallel_members x (1 + torch_threads) <= max(usable CPUs, 2).

``obs_size`` unknown means ``DEFAULT_OBS_SIZE`` is assumed for the memory estimates (and said so).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from engine.config import line_of, read_yaml, validate_yaml
from engine.errors import ConfigError
from engine.system.gpus import Nvml, NvmlUnavailable
from engine.system.limits import (
    ThreadLimits,
    cgroup_cpu_quota,
    cgroup_memory_limit,
    thread_limits,
    usable_cpus,
)

MiB, GiB = 1024**2, 1024**3

FIELDS: tuple[str, ...] = (
    "device",
    "n_envs",
    "n_steps",
    "batch_size",
    "parallel_members",
    "torch_threads",
)
ALGORITHMS: tuple[str, ...] = ("ppo", "recurrent_ppo")

CPU_BATCH_CAP = 4096  # GPU-sized batches only on a GPU
GPU_BATCH_CAP = 65536  # the seed's batch on a 24 GB RTX 3090
GPU_BATCH_FLOOR = 4096
GPU_N_ENVS = 256
CPU_N_ENVS_MAX = 64
CPU_N_ENVS_PER_CPU = 16
N_STEPS: dict[tuple[str, str], int] = {
    ("cpu", "ppo"): 512,
    ("cpu", "recurrent_ppo"): 512,
    ("cuda", "ppo"): 4096,  # the seed's rollout
    ("cuda", "recurrent_ppo"): 2048,  # its buffer also keeps 4 LSTM states per step
}
TORCH_THREADS_MAX = 8  # more intra-op threads hardly speed up 64..512-wide layers
MEMBER_RAM_BASE = 1.5 * GiB  # python + torch + SB3 + its view of the dataset
MEMBER_RAM_CUDA = 1 * GiB  # CUDA libraries and staging buffers in host memory
RAM_FRACTION = 0.85
RAM_RESERVE = 1 * GiB  # orchestrator and OS
CUDA_CONTEXT_BYTES = 500 * MiB  # per process: context, cuBLAS/cuDNN workspaces, kernels
VRAM_FRACTION = 0.9
ALLOCATOR_SLACK = 1.2  # PyTorch's caching allocator fragments
DEFAULT_OBS_SIZE = 512
# Threads of one member process besides its torch threads: the main thread steps the envs and runs
# torch's first intra-op thread, plus the multiprocessing queue feeder, progress/logging, one
# spare; CUDA adds its driver's event/callback threads.
MEMBER_EXTRA_THREADS = 3
CUDA_EXTRA_THREADS = 4
ORCHESTRATOR_THREADS = 8  # plus one per member (result/pipe reader)


# --------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_bytes: int


@dataclass(frozen=True)
class MachineInfo:
    """What this process may use. ``probe_machine`` reads it; tests build fake ones."""

    usable_cpus: int
    host_cpus: int
    ram_total_bytes: int
    ram_limit_bytes: int | None = None
    gpus: tuple[GpuInfo, ...] = ()
    thread_limits: ThreadLimits = ThreadLimits(None, None, None)
    cuda_usable: bool = False  # torch.cuda.is_available() (only asked when NVML saw a GPU)
    affinity_cpus: int | None = None
    cpu_quota: float | None = None  # cgroup cpu.max in CPUs, None when unlimited
    gpu_note: str = ""  # why no GPU is usable, or the torch/CUDA version when one is

    @property
    def ram_bytes(self) -> int:
        """RAM this process may use: the total, or the cgroup limit when that is smaller."""
        if self.ram_limit_bytes is None:
            return self.ram_total_bytes
        return min(self.ram_total_bytes, self.ram_limit_bytes)

    @property
    def usable_gpus(self) -> tuple[GpuInfo, ...]:
        return self.gpus if self.cuda_usable else ()

    def cpu_description(self) -> str:
        parts = [f"affinity {self.affinity_cpus if self.affinity_cpus else '?'}"]
        parts.append(
            "no cgroup cpu quota"
            if self.cpu_quota is None
            else f"cgroup cpu.max {self.cpu_quota:g}"
        )
        return f"{self.usable_cpus} usable CPUs ({', '.join(parts)})"

    def summary(self) -> dict[str, Any]:
        return {
            "usable_cpus": self.usable_cpus,
            "host_cpus": self.host_cpus,
            "affinity_cpus": self.affinity_cpus,
            "cpu_quota": self.cpu_quota,
            "ram_total_bytes": self.ram_total_bytes,
            "ram_limit_bytes": self.ram_limit_bytes,
            "gpus": [asdict(g) for g in self.gpus],
            "cuda_usable": self.cuda_usable,
            "gpu_note": self.gpu_note,
            "thread_limits": {
                "ulimit_u": self.thread_limits.ulimit_u,
                "pids_max": self.thread_limits.pids_max,
                "threads_max": self.thread_limits.threads_max,
            },
        }


def assumed_machine(spec: str) -> MachineInfo:
    """A machine described on the command line, to plan a rental before paying for it.

    ``spec``: comma-separated ``cpus=N``, ``ram=SIZE`` and optionally ``gpu=SIZE`` (CUDA GPUs
    of that memory) with ``gpus=N`` of them (1 when not given), sizes with a ``G`` or ``T``
    suffix, e.g. ``cpus=256,ram=1T,gpu=24G`` (a RunPod server with an RTX 3090). Thread limits
    are taken as unlimited.
    """
    units = {"G": 1024**3, "T": 1024**4}
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("cpus", "ram", "gpu", "gpus"):
            raise ConfigError(
                f"--assume {spec!r}: expected cpus=N,ram=SIZE[,gpu=SIZE[,gpus=N]] (e.g. "
                f"cpus=256,ram=1T,gpu=24G), got {part!r}"
            )
        fields[key] = value.strip().upper()

    def size(key: str) -> int:
        value = fields[key]
        try:
            return int(float(value[:-1]) * units[value[-1]])
        except (KeyError, ValueError, IndexError):
            raise ConfigError(
                f"--assume: {key}={value!r} is not a size; write it like 24G or 1T"
            ) from None

    if "cpus" not in fields or "ram" not in fields:
        raise ConfigError("--assume needs at least cpus=N and ram=SIZE (e.g. cpus=256,ram=1T)")
    if not fields["cpus"].isdigit() or int(fields["cpus"]) < 1:
        raise ConfigError(f"--assume: cpus={fields['cpus']!r} is not a positive integer")
    cpus = int(fields["cpus"])
    count = fields.get("gpus", "1")
    if "gpus" in fields and "gpu" not in fields:
        raise ConfigError("--assume: gpus=N needs gpu=SIZE too (each GPU's memory, e.g. 24G)")
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--assume: gpus={count!r} is not a positive integer")
    gpus = (
        tuple(GpuInfo(i, "assumed GPU", size("gpu")) for i in range(int(count)))
        if "gpu" in fields
        else ()
    )
    return MachineInfo(
        usable_cpus=cpus,
        host_cpus=cpus,
        ram_total_bytes=size("ram"),
        gpus=gpus,
        cuda_usable=bool(gpus),
        affinity_cpus=cpus,
        gpu_note="assumed on the command line" if gpus else "no GPU assumed",
    )


def _probe_gpus() -> tuple[tuple[GpuInfo, ...], str]:
    """GPUs NVML shows this process (``()`` on any NVML problem) and a note on why there are none."""
    try:
        with Nvml() as nvml:
            gpus = tuple(
                GpuInfo(index=d.index, name=d.name, memory_total_bytes=nvml.memory_total_bytes(d))
                for d in nvml.devices
            )
            none_note = nvml.none_note
    except NvmlUnavailable as err:
        return (), f"NVML unavailable: {err}" if err.stage == "init" else str(err)
    except Exception as err:  # the memory of a listed GPU could not be read
        return (), f"NVML failed listing GPUs: {err}"
    return gpus, "" if gpus else none_note


def _torch_cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    try:
        ok = bool(torch.cuda.is_available())
    except Exception as err:
        return False, f"torch.cuda failed: {err}"
    if not ok:
        return False, f"torch {torch.__version__} has no usable CUDA (CPU-only build or old driver)"
    return True, f"torch {torch.__version__}, CUDA {torch.version.cuda}"


def probe_machine(cgroup_root: Path = Path("/sys/fs/cgroup")) -> MachineInfo:
    """Read the machine for real; never raises for a missing GPU, driver or cgroup file."""
    import psutil

    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = None
    gpus, note = _probe_gpus()
    cuda = False
    if gpus:  # torch is only imported (seconds) when there is a GPU to ask about
        cuda, note = _torch_cuda()
    return MachineInfo(
        usable_cpus=usable_cpus(cgroup_root),
        host_cpus=os.cpu_count() or 1,
        ram_total_bytes=int(psutil.virtual_memory().total),
        ram_limit_bytes=cgroup_memory_limit(cgroup_root),
        gpus=gpus,
        thread_limits=thread_limits(cgroup_root),
        cuda_usable=cuda,
        affinity_cpus=affinity,
        cpu_quota=cgroup_cpu_quota(cgroup_root),
        gpu_note=note,
    )


# --------------------------------------------------------------------------- hardware.yaml


def _count(minimum: int) -> BeforeValidator:
    def check(value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticCustomError("count", f"expected a whole number >= {minimum} or 'auto'")
        if value < minimum:
            raise PydanticCustomError("count", f"must be at least {minimum} (or 'auto')")
        return value

    return BeforeValidator(check)


Count = Annotated[int | Literal["auto"], _count(1)]
BatchSize = Annotated[int | Literal["auto"], _count(2)]  # SB3's PPO refuses a batch of 1


class HardwareProfile(BaseModel):
    """One profile; a key left out means ``auto``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_envs: Count = "auto"
    n_steps: Count = "auto"
    batch_size: BatchSize = "auto"
    parallel_members: Count = "auto"
    torch_threads: Count = "auto"
    device: Literal["cpu", "cuda", "auto"] = "auto"


class HardwareFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, HardwareProfile] = Field(min_length=1)


PACKAGED_HARDWARE_FILE = Path(__file__).resolve().parents[2] / "config" / "hardware.yaml"
FROM_OPTION = "--hardware-file"
FROM_CWD = "working directory"
FROM_PACKAGE = "packaged default"


def find_hardware_file(explicit: str | Path | None = None) -> tuple[Path, str]:
    """The hardware file to read and where it came from, in this order:

    ``explicit`` (``--hardware-file``), else ``config/hardware.yaml`` in the current directory
    (the user's edited copy), else the copy shipped beside the engine. A missing ``explicit``
    file is an error when it is read, never a silent fallback.
    """
    if explicit is not None:
        return Path(explicit), FROM_OPTION
    here = Path.cwd() / "config" / "hardware.yaml"
    if here.is_file():
        return here, FROM_CWD
    return PACKAGED_HARDWARE_FILE, FROM_PACKAGE


def default_hardware_file() -> Path:
    """The hardware file read without ``--hardware-file`` (see :func:`find_hardware_file`)."""
    return find_hardware_file()[0]


def _shown(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _largest_divisor(n: int, cap: int) -> int:
    return max(d for d in _divisors(n) if d <= cap)


def _nearest_divisor(n: int, wanted: int) -> int:
    candidates = [d for d in _divisors(n) if d > 1] or [n]
    return min(candidates, key=lambda d: (abs(d - wanted), -d))


def _not_dividing(where: str, key: str, batch: int, n_envs: int, n_steps: int) -> ConfigError:
    rollout = n_envs * n_steps
    return ConfigError(
        f"{where}: key {key!r}: {batch} does not divide n_envs x n_steps = {rollout}; "
        f"use a divisor such as {_nearest_divisor(rollout, batch)}"
    )


def load_hardware_profiles(path: str | Path | None = None) -> dict[str, HardwareProfile]:
    """Read and validate the hardware file (default: :func:`find_hardware_file`); fixed numbers
    are checked against each other."""
    path, found = find_hardware_file(path)
    shown = _shown(path)
    if found == FROM_PACKAGE and not path.is_file():  # an install without the repository's copy
        raise ConfigError(
            f"no hardware file: none at {Path('config') / 'hardware.yaml'} in the working "
            f"directory and none packaged at {path}; pass --hardware-file PATH"
        )
    raw, node = read_yaml(path, shown)
    parsed = validate_yaml(HardwareFile, raw, node, shown)
    for name, prof in parsed.profiles.items():
        b, e, s = prof.batch_size, prof.n_envs, prof.n_steps
        if isinstance(b, int) and isinstance(e, int) and isinstance(s, int) and (e * s) % b:
            line = line_of(node, ["profiles", name, "batch_size"])
            where = f"{shown}:{line}" if line else str(shown)
            raise _not_dividing(where, f"profiles.{name}.batch_size", b, e, s)
    return dict(parsed.profiles)


# --------------------------------------------------------------------------- the plan


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class TrainingUnits:
    """The (fold, member) units of a run, each one member trained on one fold's train window:
    what ``parallel_members`` is capped at.

    ``folds``: the run's fold count; None when not known (one fold is assumed, as before folds
    were counted). ``note``: how the folds were counted, said in the plan's reason ("" for the
    dataset's own folds), e.g. ``folds estimated from data.start..end 2019-01-01..2026-12-01``.
    """

    ensemble: int
    folds: int | None = None
    note: str = ""

    @property
    def count(self) -> int:
        return (1 if self.folds is None else self.folds) * self.ensemble

    def describe(self) -> str:
        """E.g. ``25 units (5 folds x 5 members)``, with the note after a semicolon."""
        folds = 1 if self.folds is None else self.folds
        note = self.note or ("fold count not given, one fold assumed" if self.folds is None else "")
        shape = f"{_plural(folds, 'fold')} x {_plural(self.ensemble, 'member')}"
        return f"{_plural(self.count, 'unit')} ({shape}{'; ' + note if note else ''})"


@dataclass(frozen=True)
class HardwarePlan:
    """Resolved numbers for one training run, each with the reason it was chosen."""

    profile: str
    n_envs: int
    n_steps: int
    batch_size: int
    parallel_members: int
    torch_threads: int
    device: str
    reasons: dict[str, str]
    planned_threads: int
    machine: dict[str, Any]
    warnings: tuple[str, ...] = ()
    # ensemble, algorithm, net_arch, obs_size; folds, units, folds_note (absent in older plans)
    inputs: dict[str, Any] = field(default_factory=dict)
    hardware_file: str = ""  # the file the profile was read from ("" in plans from before)
    hardware_file_from: str = ""  # why that file: FROM_OPTION, FROM_CWD or FROM_PACKAGE
    # cuda: (GPU index, units at most on it) for every GPU units run on; () on cpu and in plans
    # from before (every unit then shares the first visible GPU)
    gpu_slots: tuple[tuple[int, int], ...] = ()

    @property
    def rollout_size(self) -> int:
        return self.n_envs * self.n_steps

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardwarePlan:
        data = dict(data)
        data["warnings"] = tuple(data.get("warnings", ()))
        data.setdefault("inputs", {})
        data["gpu_slots"] = tuple((int(i), int(n)) for i, n in data.get("gpu_slots", ()))
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def _mlp_params(n_in: int, arch: Sequence[int]) -> int:
    total, prev = 0, n_in
    for width in arch:
        total += prev * width + width
        prev = width
    return total


@dataclass(frozen=True)
class LstmShape:
    """The LSTMs of a ``recurrent_ppo`` member, as the config's ``training.recurrent`` sets them
    (defaults: sb3-contrib's). ``critic_lstm``: the critic has an LSTM of its own
    (``enable_critic_lstm``); otherwise it shares the actor's or reads a linear layer."""

    hidden: int = 256
    layers: int = 1
    critic_lstm: bool = True

    @classmethod
    def from_config(cls, recurrent: Any) -> LstmShape:
        """From a ``RecurrentConfig`` (or anything with its attribute names)."""
        return cls(
            hidden=int(recurrent.lstm_hidden_size),
            layers=int(recurrent.n_lstm_layers),
            critic_lstm=bool(recurrent.enable_critic_lstm),
        )

    def params(self, obs_size: int) -> int:
        """Weights of one LSTM stack: 4 gates x (input + hidden weights + 2 biases) per layer."""
        h, total, n_in = self.hidden, 0, obs_size
        for _ in range(self.layers):
            total += 4 * (n_in * h + h * h + 2 * h)
            n_in = h
        return total

    @property
    def stacks(self) -> int:
        """LSTM stacks that run forward and backward: the actor's, and the critic's own."""
        return 2 if self.critic_lstm else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def member_vram_bytes(
    batch_size: int,
    net_arch: Sequence[int],
    obs_size: int,
    algorithm: str,
    lstm: LstmShape | None = None,
) -> int:
    """GPU memory one member needs while it trains on a mini-batch (see the module docstring)."""
    if algorithm == "recurrent_ppo":
        lstm = lstm or LstmShape()
        h = lstm.hidden
        critic_in = 0 if lstm.critic_lstm else obs_size * h + h  # the linear critic input layer
        params = lstm.stacks * lstm.params(obs_size) + critic_in + 2 * _mlp_params(h, net_arch)
        # per layer and stack: 4 gates, cell and hidden state kept for backward
        per_sample = obs_size + lstm.stacks * lstm.layers * 6 * h + 4 * sum(net_arch)
    else:
        params = 2 * _mlp_params(obs_size, net_arch)
        per_sample = obs_size + 4 * sum(net_arch)
    return int(CUDA_CONTEXT_BYTES + 16 * params + ALLOCATOR_SLACK * batch_size * per_sample * 4)


def member_ram_bytes(
    n_envs: int,
    n_steps: int,
    obs_size: int,
    algorithm: str,
    device: str,
    lstm: LstmShape | None = None,
) -> int:
    """Host memory one member needs (see the module docstring). sb3-contrib's recurrent buffer
    keeps 4 state tensors a step (actor and critic, hidden and cell) of every layer, whether or
    not the critic has an LSTM of its own."""
    states = 0
    if algorithm == "recurrent_ppo":
        lstm = lstm or LstmShape()
        states = 4 * lstm.layers * lstm.hidden
    per_step = obs_size + states + 8
    buffer = n_envs * n_steps * per_step * 4
    base = MEMBER_RAM_BASE + (MEMBER_RAM_CUDA if device == "cuda" else 0)
    return int(base + 2 * buffer)


def _threads_per_member(torch_threads: int, device: str) -> int:
    cuda = CUDA_EXTRA_THREADS if device == "cuda" else 0
    return torch_threads + MEMBER_EXTRA_THREADS + cuda + 1  # + its reader in the orchestrator


def planned_threads(parallel_members: int, torch_threads: int, device: str) -> int:
    """Threads the run creates at peak, with every BLAS/OpenMP pool capped (engine.system.threads)."""
    per = _threads_per_member(torch_threads, device)
    return parallel_members * per + ORCHESTRATOR_THREADS


def thread_margin(limit: int) -> int:
    return max(32, limit // 10)


_LIMIT_NAMES = {
    "ulimit_u": "ulimit -u",
    "pids_max": "cgroup pids.max",
    "threads_max": "kernel threads-max",
}


def _tightest_named(limits: ThreadLimits) -> tuple[str, int] | None:
    named = [(getattr(limits, k), k) for k in _LIMIT_NAMES if getattr(limits, k)]
    if not named:
        return None
    value, key = min(named)
    return _LIMIT_NAMES[key], value


def _check_inputs(
    ensemble: int, algorithm: str, net_arch: Sequence[int], obs_size: int | None
) -> None:
    if isinstance(ensemble, bool) or not isinstance(ensemble, int) or ensemble < 1:
        raise ConfigError(f"ensemble must be a whole number >= 1 (got {ensemble!r})")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    if not net_arch or any(
        isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in net_arch
    ):
        raise ConfigError(f"net_arch must be a list of layer widths >= 1 (got {list(net_arch)!r})")
    if obs_size is not None and (isinstance(obs_size, bool) or obs_size < 1):
        raise ConfigError(f"obs_size must be >= 1 (got {obs_size!r})")


def _apply_overrides(
    profile: HardwareProfile, overrides: Mapping[str, int | str | None] | None
) -> tuple[HardwareProfile, set[str]]:
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"override {unknown[0]!r} is not a hardware setting; use one of {', '.join(FIELDS)}"
        )
    try:
        merged = HardwareProfile.model_validate({**profile.model_dump(), **given})
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        got = first.get("input")
        raise ConfigError(f"override {key!r}: {first['msg']} (got {got!r})") from None
    return merged, set(given)


def resolve_plan(
    profile: str,
    *,
    ensemble: int,
    algorithm: str = "ppo",
    net_arch: Sequence[int] = (64, 64),
    obs_size: int | None = None,
    machine: MachineInfo | None = None,
    hardware_file: str | Path | None = None,
    overrides: Mapping[str, int | str | None] | None = None,
    force: bool = False,
    folds: int | None = None,
    folds_note: str = "",
    lstm: LstmShape | None = None,
    calibrations: Sequence[Mapping[str, Any]] | None = None,
    calibration_note: str = "",
) -> HardwarePlan:
    """THE hardware decision: the profile's fixed numbers, ``auto`` ones derived from ``machine``.

    ``folds``: the run's walk-forward folds (0 when none fits), so that ``folds x ensemble``
    units can train at once; None when not known (one fold assumed). ``folds_note`` says how they
    were counted, in the reason (see :class:`TrainingUnits`).
    ``lstm``: the LSTM shape of a ``recurrent_ppo`` member (default: sb3-contrib's), for the
    memory estimates.
    ``calibrations``: the entries of this machine's calibration file
    (:mod:`engine.train.calibration`), for an ``auto`` torch_threads on cpu; None when the
    machine is not this one (an assumed machine); ``calibration_note`` says why a file was
    ignored.
    ``hardware_file``: see :func:`find_hardware_file`; the plan records which file it read.
    ``overrides`` (CLI flags; ``None`` values are ignored) replace the profile's values first and
    are validated the same way. Raises ``ConfigError`` for a bad file, profile name or override,
    and for a fixed ``parallel_members`` whose members need more RAM than the machine has, unless
    ``force`` (then it is a warning).
    """
    _check_inputs(ensemble, algorithm, net_arch, obs_size)
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 0):
        raise ConfigError(f"folds must be a whole number >= 0 (got {folds!r})")
    units = TrainingUnits(ensemble, folds, folds_note)
    path, found = find_hardware_file(hardware_file)
    profiles = load_hardware_profiles(hardware_file)
    if profile not in profiles:
        raise ConfigError(
            f"{_shown(path)}: unknown hardware profile {profile!r}; "
            f"available: {', '.join(sorted(profiles))}"
        )
    spec, overridden = _apply_overrides(profiles[profile], overrides)
    machine = probe_machine() if machine is None else machine
    plan = _Resolver(
        spec,
        overridden,
        profile,
        units,
        algorithm,
        tuple(net_arch),
        obs_size,
        machine,
        force,
        lstm if algorithm == "recurrent_ppo" else None,
        calibrations,
        calibration_note,
    ).resolve()
    if plan.rollout_size % plan.batch_size:  # the resolver picks divisors; a bug otherwise
        raise RuntimeError(
            f"internal error: rollout size {plan.rollout_size} is not a multiple of batch size "
            f"{plan.batch_size} ({plan})"
        )
    return replace(plan, hardware_file=str(path.resolve()), hardware_file_from=found)


def _allow(bound: str) -> str:
    return f"{bound} allow" if bound == "CPUs" else f"{bound} allows"


class _Resolver:
    """The auto rules, step by step (one object so each step can read the earlier results)."""

    def __init__(
        self,
        spec: HardwareProfile,
        overridden: set[str],
        profile: str,
        units: TrainingUnits,
        algorithm: str,
        net_arch: tuple[int, ...],
        obs_size: int | None,
        machine: MachineInfo,
        force: bool = False,
        lstm: LstmShape | None = None,
        calibrations: Sequence[Mapping[str, Any]] | None = None,
        calibration_note: str = "",
    ) -> None:
        self.spec, self.overridden, self.profile = spec, overridden, profile
        self.lstm = (lstm or LstmShape()) if algorithm == "recurrent_ppo" else None
        self.force = force
        self.units, self.algorithm, self.net_arch = units, algorithm, net_arch
        self.ensemble = units.ensemble
        self.machine = machine
        self.obs_known = obs_size is not None
        self.obs = obs_size if obs_size is not None else DEFAULT_OBS_SIZE
        self.reasons: dict[str, str] = {}
        self.warnings: list[str] = []
        self.calibrations = calibrations
        self.calibration_note = calibration_note
        self.calibrated: dict[str, Any] | None = None  # the split chosen from a calibration
        self.calibration_why = ""  # why none applied, for the torch_threads reason

    def _fixed(self, key: str) -> str:
        return "override" if key in self.overridden else f"profile {self.profile!r}"

    def _obs_note(self) -> str:
        return f"obs {self.obs}" if self.obs_known else f"obs size unknown, assumed {self.obs}"

    # ---- device
    def device(self) -> tuple[str, bool]:
        m, want = self.machine, self.spec.device
        gpus = m.usable_gpus
        if gpus:
            g = gpus[0]
            have = f"GPU {g.index} {g.name} ({_gib(g.memory_total_bytes)}) usable by torch"
        elif m.gpus:
            have = f"NVML sees {len(m.gpus)} GPU(s) but torch cannot use them ({m.gpu_note})"
        else:
            have = f"no GPU ({m.gpu_note})" if m.gpu_note else "no GPU"
        if want == "auto":
            device = "cuda" if gpus else "cpu"
            self.reasons["device"] = f"auto: {have}"
            return device, False
        if want == "cuda" and not gpus:
            self.reasons["device"] = (
                f"{self._fixed('device')} asks for cuda but {have}: runs on cpu"
            )
            self.warnings.append(f"no usable GPU: the cuda profile {self.profile!r} runs on cpu")
            return "cpu", True
        self.reasons["device"] = f"{self._fixed('device')} sets {want}"
        return want, False

    # ---- n_envs / n_steps
    def n_envs(self, device: str) -> int:
        if self.spec.n_envs != "auto":
            self.reasons["n_envs"] = f"{self._fixed('n_envs')} sets {self.spec.n_envs}"
            return int(self.spec.n_envs)
        if device == "cuda":
            self.reasons["n_envs"] = (
                f"auto: {GPU_N_ENVS} on cuda; one NumPy thread steps them all as a batch and the "
                "big rollout feeds GPU-sized batches"
            )
            return GPU_N_ENVS
        n = min(CPU_N_ENVS_MAX, CPU_N_ENVS_PER_CPU * _pow2_floor(self.machine.usable_cpus))
        self.reasons["n_envs"] = (
            f"auto: {CPU_N_ENVS_PER_CPU} per usable CPU (power of two), at most {CPU_N_ENVS_MAX} "
            f"on cpu; one NumPy thread steps them all as a batch -> {n}"
        )
        return n

    def n_steps(self, device: str) -> int:
        if self.spec.n_steps != "auto":
            self.reasons["n_steps"] = f"{self._fixed('n_steps')} sets {self.spec.n_steps}"
            return int(self.spec.n_steps)
        n = N_STEPS[(device, self.algorithm)]
        why = {
            ("cpu", "ppo"): "short rollouts keep the updates frequent on cpu",
            ("cpu", "recurrent_ppo"): "short rollouts keep the updates frequent on cpu",
            ("cuda", "ppo"): "long rollouts amortise the CPU/GPU hand-over (the seed's value)",
            ("cuda", "recurrent_ppo"): "half of ppo's: its buffer also keeps 4 LSTM states a step",
        }[(device, self.algorithm)]
        self.reasons["n_steps"] = f"auto: {n} for {self.algorithm} on {device}; {why}"
        return n

    def fit_fixed_batch(self, batch: int, n_envs: int, n_steps: int) -> tuple[int, int]:
        """Make an auto n_steps (or n_envs) a multiple that a fixed batch_size divides."""
        if (n_envs * n_steps) % batch == 0:
            return n_envs, n_steps
        # Fixed values from the file alone were checked when it was loaded: an override is involved.
        where = f"hardware profile {self.profile!r} with overrides"
        if self.spec.n_steps == "auto":
            step = batch // math.gcd(batch, n_envs)
            new = -(-n_steps // step) * step
            self.reasons["n_steps"] += (
                f"; raised to {new} so batch_size {batch} divides the rollout"
            )
            return n_envs, new
        if self.spec.n_envs == "auto":
            step = batch // math.gcd(batch, n_steps)
            new = -(-n_envs // step) * step
            self.reasons["n_envs"] += f"; raised to {new} so batch_size {batch} divides the rollout"
            return new, n_steps
        raise _not_dividing(where, "batch_size", batch, n_envs, n_steps)

    # ---- members and batch
    def cpu_bound(self, torch_threads: int) -> int:
        return max(1, self.machine.usable_cpus // (1 + torch_threads))

    def ram_bound(self, per_member: int) -> int:
        budget = RAM_FRACTION * self.machine.ram_bytes - RAM_RESERVE
        return max(1, int(budget // per_member))

    def vram_member(self, batch: int) -> int:
        return member_vram_bytes(batch, self.net_arch, self.obs, self.algorithm, self.lstm)

    def vram_per_gpu(self, batch: int) -> list[int]:
        """Units each usable GPU's memory holds at this batch size (0 when not even one)."""
        each = self.vram_member(batch)
        return [int(VRAM_FRACTION * g.memory_total_bytes) // each for g in self.machine.usable_gpus]

    def vram_units(self, batch: int) -> int:
        return sum(self.vram_per_gpu(batch))

    def thread_bound(self, torch_threads: int, device: str) -> int | None:
        tight = self.machine.thread_limits.tightest
        if tight is None:
            return None
        budget = tight - thread_margin(tight) - ORCHESTRATOR_THREADS
        return max(1, budget // _threads_per_member(torch_threads, device))

    def batch_size(
        self, device: str, fallback: bool, n_envs: int, n_steps: int, wanted_members: int
    ) -> int:
        rollout = n_envs * n_steps
        fixed = self.spec.batch_size
        if fixed != "auto" and fallback:
            batch = _largest_divisor(rollout, min(int(fixed), CPU_BATCH_CAP))
            self.reasons["batch_size"] = (
                f"{self._fixed('batch_size')} sets {fixed} for a GPU; on cpu the largest divisor "
                f"of the rollout {rollout} not above {CPU_BATCH_CAP} (GPU-sized batches only on a "
                f"GPU) -> {batch}"
            )
        elif fixed != "auto":
            batch = int(fixed)
            self.reasons["batch_size"] = (
                f"{self._fixed('batch_size')} sets {batch}; divides the rollout {rollout}"
            )
        elif device == "cpu":
            batch = _largest_divisor(rollout, CPU_BATCH_CAP)
            self.reasons["batch_size"] = (
                f"auto: largest divisor of the rollout {n_envs} x {n_steps} = {rollout} "
                f"not above {CPU_BATCH_CAP} on cpu -> {batch}"
            )
        else:
            largest = batch = _largest_divisor(rollout, GPU_BATCH_CAP)
            while batch > GPU_BATCH_FLOOR and self.vram_units(batch) < wanted_members:
                batch = _largest_divisor(rollout, batch // 2)
            shrunk = (
                f", halved until {wanted_members} units fit in the GPU's memory"
                if batch < largest
                else ""
            )
            self.reasons["batch_size"] = (
                f"auto: largest divisor of the rollout {n_envs} x {n_steps} = {rollout} not above "
                f"{GPU_BATCH_CAP} on cuda{shrunk} -> {batch}"
            )
        if batch < 2:
            raise ConfigError(
                f"n_envs x n_steps = {rollout} has no divisor between 2 and the batch cap; "
                "choose n_envs and n_steps with small factors (powers of two)"
            )
        return batch

    def parallel_members(self, bounds: dict[str, int], details: dict[str, str], wanted: int) -> int:
        machine_bounds = [k for k in bounds if k != "units"]
        if self.spec.parallel_members != "auto":
            capped = int(self.spec.parallel_members) > bounds["units"]
            self.reasons["parallel_members"] = (
                f"{self._fixed('parallel_members')} sets {self.spec.parallel_members}"
                + (f", capped by the run's {self.units.describe()}" if capped else "")
            )
            self.warnings.extend(
                f"parallel_members {wanted} is more than the {_allow(k)} {bounds[k]} = {details[k]}"
                for k in machine_bounds
                if wanted > bounds[k]
            )
            return wanted
        pm = max(1, min(bounds.values()))
        limiting = min(bounds, key=lambda k: bounds[k])
        listed = "; ".join(f"{_allow(k)} {bounds[k]} = {details[k]}" for k in machine_bounds)
        self.reasons["parallel_members"] = (
            f"auto: {listed}; the run has {self.units.describe()} -> {pm} at once, limited by "
            f"the {limiting}"
        )
        return pm

    def check_ram(self, pm: int, ram_bound: int, ram_member: int) -> None:
        """Refuse a fixed ``parallel_members`` that the RAM cannot hold (auto never exceeds it).

        One member that alone exceeds the RAM is only a warning (below): fewer members would
        not help, smaller rollouts would.
        """
        if pm <= ram_bound:
            return
        m = self.machine
        budget = RAM_FRACTION * m.ram_bytes - RAM_RESERVE
        limited = " (cgroup limit)" if m.ram_bytes < m.ram_total_bytes else ""
        message = (
            f"hardware profile {self.profile!r}: {_plural(pm, 'parallel unit')} x "
            f"~{_gib(ram_member)} each = ~{_gib(pm * ram_member)} of RAM, more than the "
            f"~{_gib(budget)} usable ({RAM_FRACTION:g} x {_gib(m.ram_bytes)}{limited} - "
            f"{_gib(RAM_RESERVE)} reserve)"
        )
        if self.force:
            self.warnings.append(f"{message}; forced, expect swapping or the OOM killer")
            return
        raise ConfigError(
            f"{message}; lower parallel_members to {ram_bound}, use --hardware auto, or pass "
            "--force to run it anyway"
        )

    def calibrated_split(
        self, n_envs: int, n_steps: int, batch: int, ram_member: int
    ) -> dict[str, Any] | None:
        """The calibrated split for this unit shape on this machine (see
        :mod:`engine.train.calibration`): of the measured torch-thread counts, the one whose
        units in flight here (min of the run's units, the CPU, RAM and thread-limit bounds at
        that count) times its measured per-unit rate is largest. None, and the reason for the
        plan, when there is no matching calibration."""
        from engine.train import calibration

        if self.calibrations is None:
            self.calibration_why = "not calibrated (the machine is assumed, not measured here)"
            return None
        key = calibration.unit_key(
            usable_cpus=self.machine.usable_cpus,
            algorithm=self.algorithm,
            net_arch=self.net_arch,
            lstm=self.lstm.to_dict() if self.lstm else None,
            obs_size=self.obs,
            n_envs=n_envs,
            n_steps=n_steps,
            batch_size=batch,
        )
        entry = calibration.find(self.calibrations, key) if self.obs_known else None
        if entry is None:
            self.calibration_why = (
                self.calibration_note + "; " if self.calibration_note else ""
            ) + "not calibrated for this unit shape here (ploutos plan --calibrate measures it)"
            return None
        options = []
        for split in entry.get("splits", ()):
            t, rate = int(split["torch_threads"]), float(split["per_unit_fps"])
            k = min(
                max(1, self.units.count),
                self.cpu_bound(t),
                self.ram_bound(ram_member),
                self.thread_bound(t, "cpu") or self.units.count,
            )
            options.append({"torch_threads": t, "units": max(1, k), "estimate": k * rate, **split})
        if not options:
            return None
        best = max(options, key=lambda o: (o["estimate"], -o["torch_threads"]))
        shown = "; ".join(
            f"{o['torch_threads']} x {o['units']} units -> ~{o['estimate']:,.0f}"
            for o in sorted(options, key=lambda o: o["torch_threads"])
        )
        self.calibrated = {
            **best,
            "measured_at": entry.get("measured_at"),
            "reason": (
                f"auto: calibrated here {str(entry.get('measured_at', ''))[:10]} (per-unit "
                f"timesteps/s measured with that many units at once; torch threads x units "
                f"in flight -> aggregate timesteps/s: {shown}) -> {best['torch_threads']}, the "
                "most timesteps per second"
            ),
        }
        return self.calibrated

    def torch_threads(self, device: str, pm: int) -> int:
        if self.calibrated is not None:
            self.reasons["torch_threads"] = self.calibrated["reason"]
            return int(self.calibrated["torch_threads"])
        if self.spec.torch_threads != "auto":
            self.reasons["torch_threads"] = (
                f"{self._fixed('torch_threads')} sets {self.spec.torch_threads}"
            )
            return int(self.spec.torch_threads)
        if device == "cuda":
            self.reasons["torch_threads"] = (
                "auto: 1 on cuda; the GPU does the maths, more CPU threads would only spin"
            )
            return 1
        usable = self.machine.usable_cpus
        tt = max(1, min(TORCH_THREADS_MAX, usable // pm - 1))
        note = ""
        while tt > 1 and (self.thread_bound(tt, device) or pm) < pm:
            tt -= 1
            note = ", lowered to fit the thread limit"
        why = self.calibration_why
        self.reasons["torch_threads"] = (
            f"auto: spare cores go to torch: max(1, min({TORCH_THREADS_MAX}, {usable} usable "
            f"CPUs // {_plural(pm, 'unit')} - 1 env-stepping thread)) -> {tt}{note}"
            + (f"; a rule of thumb, {why}" if why else "")
        )
        return tt

    def gpu_slots(self, pm: int, batch: int) -> tuple[tuple[int, int], ...]:
        """``(GPU index, units at most on it)`` per usable GPU: ``pm`` units dealt round-robin
        to the GPUs that still have VRAM room, so they spread evenly (a GPU that holds fewer
        gets fewer); a fixed ``parallel_members`` above the VRAM bound (warned about) is dealt
        round-robin over all of them."""
        gpus = self.machine.usable_gpus
        room = self.vram_per_gpu(batch)
        dealt = [0] * len(gpus)
        for _ in range(pm):
            open_ = [i for i in range(len(gpus)) if dealt[i] < room[i]] or list(range(len(gpus)))
            dealt[min(open_, key=lambda i: (dealt[i], i))] += 1
        shown = ", ".join(f"GPU {g.index}: {n}" for g, n in zip(gpus, dealt, strict=True))
        self.reasons["gpu_slots"] = (
            f"{_plural(pm, 'unit')} over {_plural(len(gpus), 'usable GPU')} ({shown}), each "
            "worker on one GPU (CUDA_VISIBLE_DEVICES), the least loaded first; no CPU units "
            "beside them (not measured to shorten a run)"
        )
        return tuple((g.index, n) for g, n in zip(gpus, dealt, strict=True) if n)

    def resolve(self) -> HardwarePlan:
        m = self.machine
        device, fallback = self.device()
        n_envs, n_steps = self.n_envs(device), self.n_steps(device)
        if self.spec.batch_size != "auto" and not fallback:
            n_envs, n_steps = self.fit_fixed_batch(int(self.spec.batch_size), n_envs, n_steps)
        if n_envs * n_steps < 2:
            raise ConfigError("n_envs x n_steps must be at least 2 (PPO needs a batch of 2)")

        # Members are sized with the fixed torch threads, the calibrated ones, or 1 (spare cores
        # go to torch after).
        tt = int(self.spec.torch_threads) if self.spec.torch_threads != "auto" else 1
        ram_member = member_ram_bytes(n_envs, n_steps, self.obs, self.algorithm, device, self.lstm)
        if device == "cpu" and self.spec.torch_threads == "auto":
            cpu_batch = self.batch_size(device, fallback, n_envs, n_steps, 1)  # pm-independent
            calibrated = self.calibrated_split(n_envs, n_steps, cpu_batch, ram_member)
            if calibrated is not None:
                tt = int(calibrated["torch_threads"])
        limited = m.ram_limit_bytes is not None and m.ram_limit_bytes < m.ram_total_bytes
        bounds = {
            "units": max(1, self.units.count),
            "CPUs": self.cpu_bound(tt),
            "RAM": self.ram_bound(ram_member),
        }
        details = {
            "CPUs": f"{m.cpu_description()} // {1 + tt} threads each (1 env-stepping + {tt} torch)",
            "RAM": f"({RAM_FRACTION:g} x {_gib(m.ram_bytes)}{' (cgroup limit)' if limited else ''}"
            f" - {_gib(RAM_RESERVE)}) // ~{_gib(ram_member)} each ({self._obs_note()})",
        }
        thr_b = self.thread_bound(tt, device)
        named = _tightest_named(m.thread_limits)
        if thr_b is not None and named is not None:
            bounds["thread limit"] = thr_b
            details["thread limit"] = (
                f"({named[0]} {named[1]} - margin {thread_margin(named[1])} - "
                f"{ORCHESTRATOR_THREADS}) // {_threads_per_member(tt, device)} threads each"
            )
        if self.spec.parallel_members != "auto":
            wanted = min(int(self.spec.parallel_members), bounds["units"])
        else:
            wanted = min(bounds.values())

        batch = self.batch_size(device, fallback, n_envs, n_steps, wanted)
        if device == "cuda":
            vram_member = self.vram_member(batch)
            per_gpu = self.vram_per_gpu(batch)
            bounds["VRAM"] = max(1, sum(per_gpu))
            gpus = m.usable_gpus
            if len({g.memory_total_bytes for g in gpus}) == 1:  # alike: say it once
                each_gpu = (f"{len(gpus)} x " if len(gpus) > 1 else "") + (
                    f"({VRAM_FRACTION:g} x {_gib(gpus[0].memory_total_bytes)} of GPU "
                    f"{','.join(str(g.index) for g in gpus)} // ~{_gib(vram_member)} = "
                    f"{per_gpu[0]})"
                )
            else:
                each_gpu = " + ".join(
                    f"({VRAM_FRACTION:g} x {_gib(g.memory_total_bytes)} of GPU {g.index} // "
                    f"~{_gib(vram_member)} = {n})"
                    for g, n in zip(gpus, per_gpu, strict=True)
                )
            details["VRAM"] = (
                f"{each_gpu} (each unit: CUDA context {CUDA_CONTEXT_BYTES // MiB} MiB + "
                f"batch {batch} through net {'x'.join(map(str, self.net_arch))}"
                + (f", LSTM {self.lstm.hidden} x {self.lstm.layers}" if self.lstm else "")
                + f", {self._obs_note()})"
            )
        pm = self.parallel_members(bounds, details, wanted)
        self.check_ram(pm, bounds["RAM"], ram_member)
        if self.units.folds == 0:
            self.warnings.append(
                "no walk-forward fold fits the data"
                + (f" ({self.units.note})" if self.units.note else "")
                + ": training will be refused; lower walk_forward.train_years or test_months, "
                "or use more data"
            )
        if ram_member > RAM_FRACTION * m.ram_bytes - RAM_RESERVE:
            self.warnings.append(
                f"one member needs ~{_gib(ram_member)} but only {_gib(m.ram_bytes)} of RAM is "
                "usable: lower n_envs or n_steps"
            )
        tt = self.torch_threads(device, pm)
        if pm * (1 + tt) > max(m.usable_cpus, 2):
            self.warnings.append(
                f"{_plural(pm, 'unit')} x (1 + {tt} torch threads) = {pm * (1 + tt)} busy "
                f"threads on {m.usable_cpus} usable CPUs: oversubscribed, expect slow steps"
            )
        per = _threads_per_member(tt, device)
        self.reasons["planned_threads"] = (
            f"{_plural(pm, 'unit')} x {per} ({tt} torch + {MEMBER_EXTRA_THREADS} python/IPC"
            + (f" + {CUDA_EXTRA_THREADS} CUDA driver" if device == "cuda" else "")
            + f" + 1 reader) + {ORCHESTRATOR_THREADS} orchestrator; BLAS/OpenMP pools capped"
        )
        slots = self.gpu_slots(pm, batch) if device == "cuda" else ()
        return HardwarePlan(
            profile=self.profile,
            n_envs=n_envs,
            n_steps=n_steps,
            batch_size=batch,
            parallel_members=pm,
            torch_threads=tt,
            device=device,
            reasons={
                k: self.reasons[k]
                for k in (*FIELDS, "planned_threads", "gpu_slots")
                if k in self.reasons
            },
            planned_threads=planned_threads(pm, tt, device),
            machine=m.summary(),
            warnings=tuple(self.warnings),
            gpu_slots=slots,
            inputs={
                "calibration": (
                    None
                    if self.calibrated is None
                    else {
                        k: self.calibrated.get(k)
                        for k in ("torch_threads", "units", "estimate", "measured_at")
                    }
                ),
                "ensemble": self.ensemble,
                "folds": self.units.folds,
                "units": self.units.count,
                "folds_note": self.units.note,
                "algorithm": self.algorithm,
                "net_arch": list(self.net_arch),
                "obs_size": self.obs if self.obs_known else None,
                "lstm": self.lstm.to_dict() if self.lstm else None,
            },
        )


def unit_gpu_environ(
    plan: Mapping[str, Any], gpu_index: int, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables that give one worker exactly GPU ``gpu_index`` (an NVML index from the
    plan's ``gpu_slots``; ``plan`` as :meth:`HardwarePlan.to_dict` writes it): set in the
    worker before CUDA starts, so its ``cuda`` is that GPU.

    Without ``CUDA_VISIBLE_DEVICES`` in ``environ`` (default: this process's), the NVML index
    with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (NVML's order; CUDA's default order puts the fastest
    GPU first). With it, the trainer's own entry for that GPU, as the user wrote it (an index or
    a UUID), so a restriction the user made is kept.
    """
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(gpu_index)}
    order = [int(g["index"]) for g in (plan.get("machine") or {}).get("gpus", ())]
    tokens = [t.strip() for t in visible.split(",")]
    if gpu_index not in order or order.index(gpu_index) >= len(tokens):
        raise ConfigError(
            f"GPU {gpu_index} of the plan is not among CUDA_VISIBLE_DEVICES={visible!r}; "
            "plan the run again in the environment that trains it"
        )
    return {"CUDA_VISIBLE_DEVICES": tokens[order.index(gpu_index)]}


# --------------------------------------------------------------------------- checks and display


def check_thread_limits(
    plan: HardwarePlan, limits: ThreadLimits, current_threads: int | None = None
) -> None:
    """Refuse (``ConfigError``) a plan whose threads, plus ``current_threads`` already running,
    would come within a safety margin of the tightest limit."""
    named = _tightest_named(limits)
    if named is None:
        return
    name, limit = named
    margin = thread_margin(limit)
    running = current_threads or 0
    need = plan.planned_threads + running
    if need <= limit - margin:
        return
    per = _threads_per_member(plan.torch_threads, plan.device)
    fits = (limit - margin - running - ORCHESTRATOR_THREADS) // per
    lower = (
        f"lower parallel_members to {fits}"
        if 1 <= fits < plan.parallel_members
        else "lower parallel_members"
    )
    raise_it = {
        "ulimit -u": "raise it (ulimit -u in the shell that starts ploutos)",
        "cgroup pids.max": "raise the container's pids limit",
        "kernel threads-max": "raise it (sysctl kernel.threads-max)",
    }[name]
    already = f" + {running} already running" if running else ""
    raise ConfigError(
        f"the plan needs ~{plan.planned_threads} threads "
        f"({_plural(plan.parallel_members, 'unit')} x {per} + {ORCHESTRATOR_THREADS}){already}, "
        f"more than {name} {limit} minus a safety margin of {margin}; {lower}, use --hardware "
        f"laptop, or {raise_it}"
    )


def _machine_line(machine: Mapping[str, Any]) -> str:
    quota = machine.get("cpu_quota")
    cpus = (
        f"{machine['usable_cpus']} usable CPUs of {machine['host_cpus']} on the host "
        f"(affinity {machine.get('affinity_cpus') or '?'}, "
        + ("no cgroup cpu quota" if quota is None else f"cgroup cpu.max {quota:g}")
        + ")"
    )
    limit = machine.get("ram_limit_bytes")
    ram = f"RAM {_gib(machine['ram_total_bytes'])}" + (
        f", cgroup limit {_gib(limit)}" if limit else " (no cgroup limit)"
    )
    gpus = machine.get("gpus") or []
    if gpus:
        names = ", ".join(
            f"{g['index']}: {g['name']} {_gib(g['memory_total_bytes'])}" for g in gpus
        )
        usable = "usable by torch" if machine.get("cuda_usable") else "NOT usable by torch"
        gpu = f"GPUs {names} ({usable}; {machine.get('gpu_note') or ''})".replace("; )", ")")
    else:
        note = machine.get("gpu_note")
        gpu = f"no GPU ({note})" if note else "no GPU"
    return f"{cpus}; {ram}; {gpu}"


def format_plan(plan: HardwarePlan, width: int = 100) -> str:
    """The plan as a table: each field, its value and why; the machine; threads vs limits."""
    import textwrap

    inputs = plan.inputs
    head = f"Hardware plan: profile {plan.profile!r}"
    if inputs:
        arch = "x".join(str(w) for w in inputs.get("net_arch", []))
        obs = inputs.get("obs_size")
        head += f" for ensemble {inputs.get('ensemble')}, {inputs.get('algorithm')}, net {arch}" + (
            f", obs {obs}" if obs else ", obs size unknown"
        )
    lines = [head]
    if plan.hardware_file:
        # Relative to the working directory where it lies under it: short, and the same on
        # every checkout (plan.json keeps the absolute path).
        shown = _shown(Path(plan.hardware_file))
        lines.append(f"Hardware file: {shown} ({plan.hardware_file_from})")
    lines += ["Machine: " + _machine_line(plan.machine), ""]
    rows = [(name, str(getattr(plan, name)), plan.reasons.get(name, "")) for name in FIELDS]
    rows.append(("rollout", str(plan.rollout_size), "n_envs x n_steps per member per update"))
    rows.append(
        ("planned threads", str(plan.planned_threads), plan.reasons.get("planned_threads", ""))
    )
    if plan.gpu_slots:
        shown = ",".join(f"{i}:{n}" for i, n in plan.gpu_slots)
        rows.append(("gpu slots", shown, plan.reasons.get("gpu_slots", "")))
    key_w = max(len(r[0]) for r in rows)
    val_w = max(len(r[1]) for r in rows)
    indent = " " * (2 + key_w + 2 + val_w + 2)
    lines.append(f"  {'setting':<{key_w}}  {'value':>{val_w}}  why")
    for name, value, why in rows:
        first = f"  {name:<{key_w}}  {value:>{val_w}}  "
        wrapped = textwrap.wrap(why, width=max(30, width - len(indent))) or [""]
        lines.append(first + wrapped[0])
        lines.extend(indent + more for more in wrapped[1:])
    tl = plan.machine.get("thread_limits") or {}
    named = _tightest_named(
        ThreadLimits(tl.get("ulimit_u"), tl.get("pids_max"), tl.get("threads_max"))
    )
    lines.append("")
    if named:
        name, limit = named
        lines.append(
            f"Threads: {plan.planned_threads} planned at peak vs the tightest limit {name} {limit} "
            f"(refused above {limit - thread_margin(limit)})"
        )
    else:
        lines.append(f"Threads: {plan.planned_threads} planned at peak; no thread limit is set")
    lines.extend(f"Warning: {w}" for w in plan.warnings)
    return "\n".join(lines)
