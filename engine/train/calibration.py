"""Torch threads per CPU unit from a measurement on this machine, not a constant.

``ploutos plan --calibrate`` (:func:`engine.bench.calibrate.calibrate`) trains, for each
candidate count of torch threads t (1, 2, 4, 8, 16 as the CPUs allow), as many real units of
the config at once as the plan would run with t threads each, and records every split's
aggregate timesteps/s here. The plan then uses the t whose split trained the most timesteps per
second, on this machine and for this unit shape only: :func:`find` matches the CPU model, the
usable CPUs, the torch version and everything that sets a gradient step's cost (algorithm, net,
LSTM, observation size, envs, rollout length, batch). Anything else, or no file, leaves the
plan's rule of thumb in place and the plan says that it is one.

The file: ``$PLOUTOS_CALIBRATION_FILE``, else ``$XDG_CACHE_HOME/ploutos/calibration.json``
(``~/.cache``): one JSON object ``{"calibrations": [entry, ...]}``, the newest entry for a key
replacing the older one. An unreadable file is ignored by the plan (and said so) and replaced,
whole and atomically, by the next calibration.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine import atomic

CALIBRATION_ENV = "PLOUTOS_CALIBRATION_FILE"
CANDIDATE_THREADS = (1, 2, 4, 8, 16)
KEY_FIELDS = (
    "cpu_model",
    "usable_cpus",
    "torch",
    "algorithm",
    "net_arch",
    "lstm",
    "obs_size",
    "n_envs",
    "n_steps",
    "batch_size",
)


def calibration_path() -> Path:
    explicit = os.environ.get(CALIBRATION_ENV)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ploutos" / "calibration.json"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (the first ``model name`` line on Linux), else the platform's."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def torch_version() -> str | None:
    """torch's version without importing it (seconds) when it is installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def candidates(usable_cpus: int) -> tuple[int, ...]:
    """Torch thread counts worth timing: those that leave a core for the env-stepping thread
    (always 1)."""
    return tuple(t for t in CANDIDATE_THREADS if t == 1 or t + 1 <= usable_cpus)


def unit_key(
    *,
    usable_cpus: int,
    algorithm: str,
    net_arch: Sequence[int],
    lstm: Mapping[str, Any] | None,
    obs_size: int,
    n_envs: int,
    n_steps: int,
    batch_size: int,
    cpu: str | None = None,
    torch: str | None = None,
) -> dict[str, Any]:
    """What must match for a calibration to apply (``cpu``/``torch``: this machine's)."""
    return {
        "cpu_model": cpu if cpu is not None else cpu_model(),
        "usable_cpus": int(usable_cpus),
        "torch": torch if torch is not None else torch_version(),
        "algorithm": algorithm,
        "net_arch": [int(w) for w in net_arch],
        "lstm": dict(lstm) if lstm else None,
        "obs_size": int(obs_size),
        "n_envs": int(n_envs),
        "n_steps": int(n_steps),
        "batch_size": int(batch_size),
    }


def best_split(splits: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The split (``torch_threads``, ``units``, ``aggregate_fps``) that trained the most
    timesteps per second; ties go to fewer threads (more units, less idle spinning)."""
    if not splits:
        raise ValueError("no split measured")
    return max(splits, key=lambda s: (float(s["aggregate_fps"]), -int(s["torch_threads"])))


def load(path: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """The entries of the calibration file and a note ("" when fine or absent)."""
    path = calibration_path() if path is None else path
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return [], ""
    except OSError as err:
        return [], f"calibration file {path} unreadable ({err.strerror}); ignored"
    try:
        data = json.loads(raw)
        entries = data["calibrations"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise TypeError("calibrations is not a list of objects")
    except (ValueError, KeyError, TypeError) as err:
        return [], f"calibration file {path} is not a calibration ({err}); ignored"
    return entries, ""


def find(entries: Sequence[Mapping[str, Any]], key: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The newest entry whose key matches ``key`` field by field and whose splits are readable
    (each with an int ``torch_threads`` >= 1 and a numeric ``per_unit_fps``)."""
    for entry in reversed(entries):
        if not all(entry.get("key", {}).get(f) == key.get(f) for f in KEY_FIELDS):
            continue
        splits = entry.get("splits")
        if isinstance(splits, list) and splits and all(_readable(s) for s in splits):
            return entry
    return None


def _readable(split: Any) -> bool:
    if not isinstance(split, Mapping):
        return False
    t, rate = split.get("torch_threads"), split.get("per_unit_fps")
    return (
        isinstance(t, int)
        and not isinstance(t, bool)
        and t >= 1
        and isinstance(rate, (int, float))
        and rate >= 0
    )


def save(entry: Mapping[str, Any], path: Path | None = None) -> Path:
    """Add ``entry`` (``key``, ``splits``, ``best``, ``measured_at``...), replacing one of the
    same key; the file is rewritten atomically (an unreadable one is replaced)."""
    path = calibration_path() if path is None else path
    entries, _note = load(path)
    kept = [e for e in entries if e.get("key") != entry["key"]]
    kept.append(dict(entry))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, {"calibrations": kept})
    return path
