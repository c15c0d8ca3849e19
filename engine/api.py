"""The one door into the engine for the control panel (and for the CLI where it wants one name).

``ploutos_tui`` imports nothing of ``engine`` but this module and :mod:`engine.errors` (an
import-linter contract in pyproject.toml holds it to that). Every name below is imported when it
is first used (PEP 562 ``__getattr__``), so ``import engine.api`` costs nothing and the panel's
first frame never waits for pandas, torch or Stable-Baselines3 behind a name it does not use yet.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine import __version__

if TYPE_CHECKING:  # the same names, for type checkers and import-linter (both read this block)
    from engine.config import load_config
    from engine.data.builder import (
        BuildStatus,
        build_alpaca,
        build_log_path,
        out_folder_problem,
        read_build_status,
    )
    from engine.data.check import check_dataset
    from engine.data.demo import write_demo
    from engine.data.sources.alpaca import ENV_KEY_ID as ALPACA_ENV_KEY_ID
    from engine.data.sources.alpaca import ENV_SECRET_KEY as ALPACA_ENV_SECRET_KEY
    from engine.data.store import Dataset, manifest_path, parse_symbols
    from engine.runs.compare import (
        MISSING,
        Comparison,
        MeasuredRate,
        RunFigures,
        compare_runs,
        measured_rate,
    )
    from engine.runs.events import EventLog, EventTail, parse_stamp
    from engine.runs.folder import (
        LIVE,
        RESUMABLE,
        RunFolder,
        RunState,
        default_runs_root,
        list_runs,
        resolve_run,
    )
    from engine.runs.jobs import (
        recent_builds,
        resume_build,
        start_build_detached,
        start_detached,
        stop_build,
        stop_run,
    )
    from engine.runs.view import RunView, dig, number
    from engine.system.gpus import GpuMonitor, GpuReading
    from engine.system.limits import (
        cgroup_cpu_quota,
        cgroup_memory_limit,
        machine_threads,
        thread_limits,
        usable_cpus,
    )
    from engine.system.threads import THREAD_VARS
    from engine.train.plan import format_plan, load_hardware_profiles, probe_machine
    from engine.train.prepare import (
        dataset_observation_size,
        plan_for,
        prepare_run,
        resolved_config,
    )
    from engine.yamlio import read_yaml

# A literal list (not built from _LAZY) so that linters see the names above as exported.
__all__ = [
    "__version__",
    # the machine (light: no pandas)
    "THREAD_VARS",
    "cgroup_cpu_quota",
    "cgroup_memory_limit",
    "machine_threads",
    "thread_limits",
    "usable_cpus",
    "GpuMonitor",
    "GpuReading",
    # run folders, their events and the jobs that write them (light)
    "LIVE",
    "RESUMABLE",
    "RunFolder",
    "RunState",
    "dig",
    "number",
    "default_runs_root",
    "list_runs",
    "resolve_run",
    "EventLog",
    "EventTail",
    "parse_stamp",
    "RunView",
    # runs side by side, and the measured rate a new run is projected from (light)
    "MISSING",
    "Comparison",
    "MeasuredRate",
    "RunFigures",
    "compare_runs",
    "measured_rate",
    "start_detached",
    "stop_run",
    "read_yaml",
    # datasets (pandas, pyarrow)
    "Dataset",
    "manifest_path",
    "parse_symbols",
    "check_dataset",
    "write_demo",
    "build_alpaca",
    "ALPACA_ENV_KEY_ID",
    "ALPACA_ENV_SECRET_KEY",
    # dataset builds from the panel: detached, with a status file (docs/dataset-build.md)
    "load_config",
    "BuildStatus",
    "read_build_status",
    "build_log_path",
    "out_folder_problem",
    "start_build_detached",
    "resume_build",
    "stop_build",
    "recent_builds",
    # plans and runs to train (pandas; a plan may build the dataset's features first)
    "load_hardware_profiles",
    "format_plan",
    "probe_machine",
    "resolved_config",
    "dataset_observation_size",
    "plan_for",
    "prepare_run",
]

# name here -> (module, name there); the same pairs as the TYPE_CHECKING block (tests/engine/
# test_api.py checks that, that __all__ lists exactly these, and that every name resolves).
_LAZY: dict[str, tuple[str, str]] = {
    "THREAD_VARS": ("engine.system.threads", "THREAD_VARS"),
    "cgroup_cpu_quota": ("engine.system.limits", "cgroup_cpu_quota"),
    "cgroup_memory_limit": ("engine.system.limits", "cgroup_memory_limit"),
    "machine_threads": ("engine.system.limits", "machine_threads"),
    "thread_limits": ("engine.system.limits", "thread_limits"),
    "usable_cpus": ("engine.system.limits", "usable_cpus"),
    "GpuMonitor": ("engine.system.gpus", "GpuMonitor"),
    "GpuReading": ("engine.system.gpus", "GpuReading"),
    "LIVE": ("engine.runs.folder", "LIVE"),
    "RESUMABLE": ("engine.runs.folder", "RESUMABLE"),
    "RunFolder": ("engine.runs.folder", "RunFolder"),
    "RunState": ("engine.runs.folder", "RunState"),
    "default_runs_root": ("engine.runs.folder", "default_runs_root"),
    "list_runs": ("engine.runs.folder", "list_runs"),
    "resolve_run": ("engine.runs.folder", "resolve_run"),
    "EventLog": ("engine.runs.events", "EventLog"),
    "EventTail": ("engine.runs.events", "EventTail"),
    "parse_stamp": ("engine.runs.events", "parse_stamp"),
    "RunView": ("engine.runs.view", "RunView"),
    "dig": ("engine.runs.view", "dig"),
    "number": ("engine.runs.view", "number"),
    "MISSING": ("engine.runs.compare", "MISSING"),
    "Comparison": ("engine.runs.compare", "Comparison"),
    "MeasuredRate": ("engine.runs.compare", "MeasuredRate"),
    "RunFigures": ("engine.runs.compare", "RunFigures"),
    "compare_runs": ("engine.runs.compare", "compare_runs"),
    "measured_rate": ("engine.runs.compare", "measured_rate"),
    "start_detached": ("engine.runs.jobs", "start_detached"),
    "stop_run": ("engine.runs.jobs", "stop_run"),
    "read_yaml": ("engine.yamlio", "read_yaml"),
    "Dataset": ("engine.data.store", "Dataset"),
    "manifest_path": ("engine.data.store", "manifest_path"),
    "parse_symbols": ("engine.data.store", "parse_symbols"),
    "check_dataset": ("engine.data.check", "check_dataset"),
    "write_demo": ("engine.data.demo", "write_demo"),
    "build_alpaca": ("engine.data.builder", "build_alpaca"),
    "ALPACA_ENV_KEY_ID": ("engine.data.sources.alpaca", "ENV_KEY_ID"),
    "ALPACA_ENV_SECRET_KEY": ("engine.data.sources.alpaca", "ENV_SECRET_KEY"),
    "load_config": ("engine.config", "load_config"),
    "BuildStatus": ("engine.data.builder", "BuildStatus"),
    "read_build_status": ("engine.data.builder", "read_build_status"),
    "build_log_path": ("engine.data.builder", "build_log_path"),
    "out_folder_problem": ("engine.data.builder", "out_folder_problem"),
    "start_build_detached": ("engine.runs.jobs", "start_build_detached"),
    "resume_build": ("engine.runs.jobs", "resume_build"),
    "stop_build": ("engine.runs.jobs", "stop_build"),
    "recent_builds": ("engine.runs.jobs", "recent_builds"),
    "load_hardware_profiles": ("engine.train.plan", "load_hardware_profiles"),
    "format_plan": ("engine.train.plan", "format_plan"),
    "probe_machine": ("engine.train.plan", "probe_machine"),
    "resolved_config": ("engine.train.prepare", "resolved_config"),
    "dataset_observation_size": ("engine.train.prepare", "dataset_observation_size"),
    "plan_for": ("engine.train.prepare", "plan_for"),
    "prepare_run": ("engine.train.prepare", "prepare_run"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    # Looked up on every access, not cached here: a test that patches the defining module's
    # name (``monkeypatch.setattr(engine.data.demo, "write_demo", ...)``) is seen through the door.
    return getattr(importlib.import_module(module), attr)


def __dir__() -> list[str]:
    return sorted(__all__)
