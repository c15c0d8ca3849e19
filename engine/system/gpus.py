"""The one NVML reader: the GPUs this process may use (``CUDA_VISIBLE_DEVICES`` honoured) and
their load, memory, temperature and power, and the processes on each of them (GPU memory per pid,
and SM utilisation per pid where the driver reports it).

``pynvml`` (nvidia-ml-py) is imported when a reading is asked for, never at import time. No
library, no driver or any NVML error is an :class:`NvmlUnavailable` (one-shot listing) or zero GPUs
and a note (:class:`GpuMonitor`), never a crash.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, TypeVar

__all__ = [
    "GpuDevice",
    "GpuMonitor",
    "GpuProcess",
    "GpuReading",
    "Nvml",
    "NvmlUnavailable",
    "visible_gpus",
]


class _Indexed(Protocol):
    @property
    def index(self) -> int: ...


_G = TypeVar("_G", bound=_Indexed)


def visible_gpus(found: Sequence[tuple[_G, str]], cuda_visible: str | None) -> tuple[_G, ...]:
    """The GPUs that ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) leaves visible, in its order.

    ``found``: ``(gpu, uuid)`` per GPU NVML lists (every GPU of the host, ``gpu.index`` = NVML
    index). CUDA stops at the first entry it cannot match, and so does this.
    """
    if cuda_visible is None:
        return tuple(gpu for gpu, _uuid in found)
    visible: list[_G] = []
    for token in (t.strip() for t in cuda_visible.split(",")):
        match = None
        if token.isdigit():
            match = next((g for g, _u in found if g.index == int(token)), None)
        elif token and not token.startswith("-"):
            match = next(
                (g for g, u in found if u.startswith(token) or u.startswith(f"GPU-{token}")), None
            )
        if match is None:
            break
        visible.append(match)
    return tuple(visible)


def _needs_uuids(cuda_visible: str | None) -> bool:
    """Whether matching ``CUDA_VISIBLE_DEVICES`` needs the GPUs' UUIDs (one NVML call per GPU)."""
    return cuda_visible is not None and any(
        t.strip() and not t.strip().isdigit() for t in cuda_visible.split(",")
    )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class GpuDevice:
    """One GPU this process may use: its NVML index (host order), name and NVML handle."""

    index: int
    name: str
    handle: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GpuProcess:
    """One process on one GPU, as NVML sees it (``pid`` is NVML's: the host's pid namespace).

    ``mem_used_bytes``: GPU memory it holds (None where the driver does not say, e.g. WDDM);
    ``sm_util_pct``: its share of the GPU's SMs over the interval since the previous reading,
    percent (0 when the driver took no sample of it in that interval); None where the driver
    does not report per-process utilisation.
    """

    pid: int
    mem_used_bytes: int | None
    sm_util_pct: float | None = None


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment; ``None`` where the driver does not report a value.

    ``processes``: the compute and graphics processes on it, by pid (empty when NVML lists none,
    or cannot list them).
    """

    index: int
    name: str
    util_pct: float
    mem_used_bytes: int
    mem_total_bytes: int
    temp_c: float | None
    power_w: float | None
    power_limit_w: float | None
    processes: tuple[GpuProcess, ...] = ()

    @property
    def mem_pct(self) -> float:
        return 100.0 * self.mem_used_bytes / self.mem_total_bytes if self.mem_total_bytes else 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuReading:
        """A reading from its ``dataclasses.asdict`` (JSON) form; readings recorded before
        ``processes`` existed load with none."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["processes"] = tuple(
            GpuProcess(
                int(p["pid"]),
                None if p.get("mem_used_bytes") is None else int(p["mem_used_bytes"]),
                None if p.get("sm_util_pct") is None else float(p["sm_util_pct"]),
            )
            for p in values.get("processes") or ()
        )
        return cls(**values)


class NvmlUnavailable(Exception):
    """NVML cannot be used; ``str()`` says why, ``stage`` where it failed: ``library`` (no
    nvidia-ml-py), ``init`` (no driver, the text is the driver's) or ``list``."""

    def __init__(self, stage: Literal["library", "init", "list"], reason: str) -> None:
        super().__init__(reason)
        self.stage = stage


class Nvml:
    """One NVML session: initialised and the visible GPUs listed on construction, shut down by
    :meth:`close` (or ``with``). Raises :class:`NvmlUnavailable` when NVML cannot be used.

    :attr:`devices` are those this process's ``CUDA_VISIBLE_DEVICES`` leaves visible, in its
    order; :attr:`hidden` counts the GPUs NVML lists that it hides.
    """

    def __init__(self) -> None:
        cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            import pynvml
        except ImportError:
            raise NvmlUnavailable("library", "nvidia-ml-py is not installed") from None
        try:
            pynvml.nvmlInit()
        except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            raise NvmlUnavailable("init", _text(err) or type(err).__name__) from None
        try:
            uuids = _needs_uuids(cuda_visible)
            found = []
            for i in range(int(pynvml.nvmlDeviceGetCount())):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = _text(pynvml.nvmlDeviceGetName(handle))
                uuid = _text(pynvml.nvmlDeviceGetUUID(handle)) if uuids else ""
                found.append((GpuDevice(i, name, handle), uuid))
        except Exception as err:
            with contextlib.suppress(Exception):
                pynvml.nvmlShutdown()
            raise NvmlUnavailable("list", f"NVML failed listing GPUs: {err}") from None
        self._nvml: Any = pynvml
        self.devices: tuple[GpuDevice, ...] = visible_gpus(found, cuda_visible)
        self.hidden = len(found) - len(self.devices)

    @property
    def none_note(self) -> str:
        """Why :attr:`devices` is empty ("NVML sees no GPU", or hidden by CUDA_VISIBLE_DEVICES)."""
        return "NVML sees no GPU" + (" (hidden by CUDA_VISIBLE_DEVICES)" if self.hidden else "")

    def memory_bytes(self, device: GpuDevice) -> tuple[int, int]:
        """``(used, total)`` bytes of the device's memory; raises NVML's error."""
        memory = self._nvml.nvmlDeviceGetMemoryInfo(device.handle)
        return int(memory.used), int(memory.total)

    def memory_total_bytes(self, device: GpuDevice) -> int:
        """Total bytes of the device's memory; raises NVML's error."""
        return int(self._nvml.nvmlDeviceGetMemoryInfo(device.handle).total)

    def util_pct(self, device: GpuDevice) -> float:
        """GPU utilisation over the driver's last sample period, percent; raises NVML's error."""
        return float(self._nvml.nvmlDeviceGetUtilizationRates(device.handle).gpu)

    def slow_values(self, device: GpuDevice) -> tuple[float | None, float | None, float | None]:
        """``(temp_c, power_w, power_limit_w)``, each None where the board does not report it.

        Some drivers take tens of milliseconds for these: callers sampling often cache them.
        """
        nvml, handle = self._nvml, device.handle
        temp_c = power_w = limit_w = None
        with contextlib.suppress(Exception):  # NVML_ERROR_NOT_SUPPORTED on some boards
            temp_c = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        with contextlib.suppress(Exception):
            power_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # milliwatts
        with contextlib.suppress(Exception):
            limit_w = nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        return temp_c, power_w, limit_w

    def process_memory(self, device: GpuDevice) -> dict[int, int | None]:
        """``{pid: GPU memory bytes or None}`` of the compute and graphics processes on the
        device (a pid in both lists: the larger figure; the driver often reports it twice).

        Never raises: a list NVML cannot give (not supported, no permission, an older library
        without the call) is empty.
        """
        nvml, handle = self._nvml, device.handle
        found: dict[int, int | None] = {}
        for name in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
        ):
            call = getattr(nvml, name, None)
            if call is None:
                continue
            try:
                listed = call(handle) or ()
            except Exception:  # NVMLError_NotSupported, NoPermission, ...
                continue
            for proc in listed:
                try:
                    pid = int(proc.pid)
                except (AttributeError, TypeError, ValueError):
                    continue
                used = getattr(proc, "usedGpuMemory", None)
                used = int(used) if isinstance(used, int) and used >= 0 else None
                before = found.get(pid)
                found[pid] = used if before is None else max(before, used or 0)
        return found

    def process_util(
        self, device: GpuDevice, since_us: int
    ) -> tuple[dict[int, float] | None, int, bool]:
        """SM utilisation per pid from the driver's samples newer than ``since_us`` (its own
        microsecond timestamps; 0: every sample it keeps), as the mean of each pid's samples;
        the newest timestamp seen (``since_us`` when there was none); and whether the driver
        can report per-process utilisation at all.

        ``({}, since_us, True)`` when it took no sample since then (NVML's "not found": the
        processes were idle); ``(None, since_us, False)`` when it cannot (not supported, no
        permission, the call missing from the library or the driver); ``(None, since_us,
        True)`` for any other NVML error (unknown this time). Never raises.
        """
        nvml = self._nvml
        call = getattr(nvml, "nvmlDeviceGetProcessUtilization", None)
        if call is None:
            return None, since_us, False
        try:
            samples = call(device.handle, since_us) or ()
        except Exception as err:
            code = getattr(err, "value", None)
            if code in (0, getattr(nvml, "NVML_ERROR_NOT_FOUND", 6)):  # 0: success, no samples
                return {}, since_us, True
            never = (
                getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3),
                getattr(nvml, "NVML_ERROR_NO_PERMISSION", 4),
                getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13),
            )
            return None, since_us, code not in never
        sums: dict[int, list[float]] = {}
        newest = since_us
        for sample in samples:
            try:
                stamp, pid, util = int(sample.timeStamp), int(sample.pid), float(sample.smUtil)
            except (AttributeError, TypeError, ValueError):
                continue
            if stamp <= since_us or not 0 <= util <= 100:
                continue
            newest = max(newest, stamp)
            acc = sums.setdefault(pid, [0.0, 0.0])
            acc[0] += util
            acc[1] += 1
        return {pid: round(total / n, 1) for pid, (total, n) in sums.items()}, newest, True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GpuMonitor:
    """Readings of the visible GPUs, for a sampler that asks every second or so.

    NVML is initialised once, on the first read. Utilisation, memory and the processes on each GPU
    (their memory, and their SM utilisation since the previous read where the driver reports it)
    are read every time; temperature, power and the power limit are cached for ``slow_ttl_s``
    seconds. No library, no
    driver or any NVML error gives zero GPUs and a note; :meth:`read` never raises.
    """

    def __init__(
        self, slow_ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slow_ttl_s = slow_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._nvml: Nvml | None = None
        self._init_note: str | None = None  # set once initialisation was tried
        self._slow: dict[int, tuple[float, float | None, float | None, float | None]] = {}
        # per GPU index: the newest per-process utilisation sample seen (driver microseconds),
        # or None once the driver said it cannot report per-process utilisation
        self._util_seen: dict[int, int | None] = {}

    def _init(self) -> None:
        try:
            nvml = Nvml()
        except NvmlUnavailable as err:
            self._init_note = f"no NVIDIA GPU / driver: {err}"
            return
        self._nvml = nvml
        self._init_note = "" if nvml.devices else f"no NVIDIA GPU / driver: {nvml.none_note}"

    def _slow_values(
        self, nvml: Nvml, device: GpuDevice
    ) -> tuple[float | None, float | None, float | None]:
        now = self._clock()
        cached = self._slow.get(device.index)
        if cached is not None and now - cached[0] < self.slow_ttl_s:
            return cached[1], cached[2], cached[3]
        temp, power, limit = nvml.slow_values(device)
        self._slow[device.index] = (now, temp, power, limit)
        return temp, power, limit

    def _processes(self, nvml: Nvml, device: GpuDevice) -> tuple[GpuProcess, ...]:
        """The processes on the device: memory every read, SM utilisation since the last read
        (None for all of them after an NVML error, and from then on once the driver said it
        cannot report it: not asked again)."""
        memory = nvml.process_memory(device)
        util: dict[int, float] | None = None
        seen = self._util_seen.get(device.index, 0)
        if seen is not None and memory:
            util, newest, supported = nvml.process_util(device, seen)
            self._util_seen[device.index] = newest if supported else None
        return tuple(
            GpuProcess(pid, used, None if util is None else util.get(pid, 0.0))
            for pid, used in sorted(memory.items())
        )

    def read(self) -> tuple[tuple[GpuReading, ...], str]:
        """The visible GPUs now, and a note ("" when fine; why there are none otherwise)."""
        with self._lock:
            if self._init_note is None:
                self._init()
            nvml = self._nvml
            if nvml is None:
                return (), self._init_note or ""
            readings = []
            for device in nvml.devices:
                try:
                    util = nvml.util_pct(device)
                    used, total = nvml.memory_bytes(device)
                except Exception as err:  # GPU fell off the bus, driver reloaded, ...
                    return (
                        (),
                        f"NVML error on GPU {device.index}: {_text(err) or type(err).__name__}",
                    )
                temp, power, limit = self._slow_values(nvml, device)
                processes = self._processes(nvml, device)
                readings.append(
                    GpuReading(
                        device.index, device.name, util, used, total, temp, power, limit, processes
                    )
                )
            return tuple(readings), ""

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                self._nvml.close()
            self._nvml = None
            self._init_note = None
            self._util_seen.clear()
