"""The one NVML reader: the GPUs this process may use (``CUDA_VISIBLE_DEVICES`` honoured) and
their load, memory, temperature and power.

``pynvml`` (nvidia-ml-py) is imported when a reading is asked for, never at import time. No
library, no driver or any NVML error is an :class:`NvmlUnavailable` (one-shot listing) or zero GPUs
and a note (:class:`GpuMonitor`), never a crash.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

__all__ = [
    "GpuDevice",
    "GpuMonitor",
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
class GpuReading:
    """One GPU at one moment; ``None`` where the driver does not report a value."""

    index: int
    name: str
    util_pct: float
    mem_used_bytes: int
    mem_total_bytes: int
    temp_c: float | None
    power_w: float | None
    power_limit_w: float | None

    @property
    def mem_pct(self) -> float:
        return 100.0 * self.mem_used_bytes / self.mem_total_bytes if self.mem_total_bytes else 0.0


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

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GpuMonitor:
    """Readings of the visible GPUs, for a sampler that asks every second or so.

    NVML is initialised once, on the first read. Utilisation and memory are read every time;
    temperature, power and the power limit are cached for ``slow_ttl_s`` seconds. No library, no
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
                readings.append(
                    GpuReading(device.index, device.name, util, used, total, temp, power, limit)
                )
            return tuple(readings), ""

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                self._nvml.close()
            self._nvml = None
            self._init_note = None
