"""``ploutos plan --calibrate``: measure which split of the cores between units and torch threads
trains the most timesteps per second on this machine, and record it for the plan.

For each candidate count t of torch threads (:func:`engine.train.calibration.candidates`: 1, 2,
4, 8, 16 as the CPUs allow) the config is planned with t fixed, which gives the units it would
run at once (the CPU bound is usable CPUs // (1 + t)); that many real units, built exactly as
training builds them (the walk-forward benchmark's workers, on its synthetic market of the
config's shape), train together for a few short rollouts, and their timesteps/s are timed from
the first start to the last end. Units running side by side share memory bandwidth and caches,
so the per-unit rate is measured under the contention it will really have. The entry written to
the calibration file holds every split; the plan then picks, for the run it plans, the split
whose units in flight times their measured per-unit rate is largest.

On a cuda plan nothing is calibrated: the GPU does the maths and each unit keeps one torch
thread.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError

# Short: a calibration is a minute or two, not a benchmark. Two rollouts per unit: the first
# update also pays for warming torch's kernels, the second is the steady state.
CALIBRATION_ROLLOUTS = 2
CALIBRATION_N_STEPS = 64


def _figures(reports: list[dict[str, Any]]) -> dict[str, Any]:
    wall = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    fps = [r["timesteps"] / (r["ended"] - r["started"]) for r in reports]
    return {
        "units": len(reports),
        "per_unit_fps": round(statistics.median(fps), 1),
        "aggregate_fps": round(sum(r["timesteps"] for r in reports) / wall, 1),
        "window_s": round(wall, 3),
        "gradient_share": round(
            statistics.median(r["train_s"] / (r["ended"] - r["started"]) for r in reports), 3
        ),
    }


def calibrate(
    config_path: str | Path,
    *,
    profile: str | None = None,
    hardware_file: str | Path | None = None,
    obs_size: int | None = None,
    seed: int = 0,
    save_to: Path | None = None,
    threads: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Measure every split here and save the entry (see the module docstring); returns it.

    ``threads``: the candidate torch-thread counts (default: all that fit this machine).
    ``save_to``: the calibration file (default :func:`engine.train.calibration.calibration_path`).
    Workers come from a forkserver: a script calling this must guard its entry point.
    """
    from engine.bench.walkforward import _run_units, market_shape, write_market
    from engine.system.procs import trainer_context
    from engine.train import calibration
    from engine.train.plan import probe_machine
    from engine.train.prepare import dataset_observation_size, plan_for, resolved_config

    source = str(config_path)
    cfg = resolved_config(config_path)
    if obs_size is None:  # the dataset's, as the plan will see it, once it is built
        obs_size = dataset_observation_size(cfg)
    shape = market_shape(cfg, obs_size, source)
    # The key names the observation the plan will see (the dataset's when built); the units
    # train on the synthetic market nearest to it.
    obs = obs_size if obs_size is not None else shape.obs_size
    machine = probe_machine()
    base = plan_for(cfg, profile, obs, machine, hardware_file=hardware_file)
    if base.device != "cpu":
        raise ConfigError(
            f"{source}: the plan trains on {base.device}; torch threads are calibrated for CPU "
            "units only (on a GPU each unit keeps 1 torch thread)"
        )
    wanted = threads or calibration.candidates(machine.usable_cpus)
    if any(t < 1 for t in wanted):
        raise ConfigError("--calibrate: torch thread counts must be >= 1")
    n_steps = min(base.n_steps, CALIBRATION_N_STEPS)
    step = base.batch_size // np.gcd(base.batch_size, base.n_envs)
    n_steps = max(step, n_steps - n_steps % step)  # the batch still divides the rollout
    timesteps = CALIBRATION_ROLLOUTS * base.n_envs * n_steps
    splits = []
    ctx = trainer_context()
    with tempfile.TemporaryDirectory(prefix="ploutos-calibrate-") as tmp:
        features_path, prices_path = write_market(Path(tmp), shape, seed)
        for t in wanted:
            plan = plan_for(
                cfg,
                profile,
                obs,
                machine,
                hardware_file=hardware_file,
                overrides={"torch_threads": t},
            )
            spec = {
                "config": cfg.model_dump(mode="json"),
                "features_path": str(features_path),
                "prices_path": str(prices_path),
                "seed": seed,
                "plan": plan.to_dict(),
                "n_steps": n_steps,
                "timesteps": timesteps,
                "episode_length": cfg.env.episode_length,
                "policy": "ours",  # the policy training builds
            }
            reports = _run_units(ctx, spec, plan.parallel_members, t)
            splits.append({"torch_threads": t, **_figures(reports)})
    key = calibration.unit_key(
        usable_cpus=machine.usable_cpus,
        algorithm=cfg.training.algorithm,
        net_arch=cfg.training.net_arch,
        lstm=base.inputs.get("lstm"),
        obs_size=obs,
        n_envs=base.n_envs,
        n_steps=base.n_steps,
        batch_size=base.batch_size,
    )
    entry = {
        "key": key,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": source,
        "timesteps_per_unit": timesteps,
        "bench_n_steps": n_steps,
        "splits": splits,
        "best": dict(calibration.best_split(splits)),
    }
    fixed = not base.reasons.get("torch_threads", "").startswith("auto")
    entry["file"] = str(calibration.save(entry, save_to))
    # Not part of the saved entry: true of this profile, not of the machine.
    entry["note"] = (
        f"profile {base.profile!r} fixes torch_threads ({base.reasons['torch_threads']}): its "
        "plans keep that value; the calibration applies where torch_threads is auto"
        if fixed
        else ""
    )
    return entry


def format_calibration(entry: dict[str, Any]) -> str:
    key = entry["key"]
    lines = [
        f"Calibrated {key['algorithm']} units (net {'x'.join(map(str, key['net_arch']))}, obs "
        f"{key['obs_size']}, {key['n_envs']} envs, batch {key['batch_size']}) on "
        f"{key['usable_cpus']} usable CPUs ({key['cpu_model']}, torch {key['torch']}):",
        "  torch threads  units at once  timesteps/s per unit  aggregate",
    ]
    for s in entry["splits"]:
        mark = "  <- most" if s["torch_threads"] == entry["best"]["torch_threads"] else ""
        lines.append(
            f"  {s['torch_threads']:>13}  {s['units']:>13}  {s['per_unit_fps']:>20,.1f}  "
            f"{s['aggregate_fps']:>9,.1f}{mark}"
        )
    lines.append(f"Saved to {entry['file']}; `ploutos plan` now uses it for this unit shape.")
    if entry.get("note"):
        lines.append(f"Note: {entry['note']}")
    return "\n".join(lines)
