"""Time to a finished walk-forward: units trained here, their rates, and the real run's wall time.

``bench_walkforward`` returns a JSON-ready dict (``ploutos bench walkforward --json``). For each
algorithm (the config's first, then the other one) it builds the model exactly as training does
(:func:`engine.train.units.build_model`, the hardware plan resolved for this machine, the config's
net and PPO settings) on a synthetic market of the config's shape (tickers x features), trains
every unit for the same short number of timesteps in real worker processes, and measures:

- ``alone``: one unit on its own: timesteps/s, the gradient phase (``model.train()``, timed by
  wrapping it) and the rollouts (``collect_rollouts``, timed between SB3's rollout callbacks);
- ``planned``: the plan's units in flight (``parallel_members``, sized from folds x ensemble)
  training at once, their aggregate timesteps/s;
- ``old_cap``: the same with units in flight capped at the ensemble size, as before folds trained
  side by side (the plan resolved with the run counted as one fold);
- for RecurrentPPO, ``policy_variants``: one unit alone built with sb3-contrib's stock
  ``MlpLstmPolicy`` against one built with ours (:mod:`engine.train.recurrent`, what training
  builds: the LSTM in one call over a batch with episode starts), interleaved in the same run.

Layouts with the same units in flight and torch threads are one run, said by ``same_run_as``
(on a 2-core machine all three are usually one unit alone).

FLOPs of the gradient phase are counted from the net's shapes, not measured: ``W`` = the weights
of every matrix product of the policy (each ``nn.Linear``: in x out; each ``nn.LSTM`` layer:
4 h x (in + h), the input and the recurrent product of its four gates); one sample's forward pass
is ``2 W`` FLOPs (a multiply and an add per weight), forward + backward about ``3 x`` that, so

    gradient FLOPs = 6 x W x rollout samples x epochs run

Biases, activations, distributions, the optimiser and RecurrentPPO's sequence padding are not
counted (the real cost is higher; the count is the useful work). Achieved GFLOP/s are set against
a float32 ``torch.matmul`` peak measured in the same run at the same torch threads.

Wall time of the real config: work = units (folds x ensemble, as the plan counts them) x
``training.total_timesteps``; wall time = work / aggregate timesteps/s, for this machine from the
measured rates; for an ``assume``-d machine by arithmetic only (labelled
``arithmetic projection, not measured``). Fold evaluations are not included.

Workers start from the trainer's forkserver (:func:`engine.system.procs.trainer_context`, torch
and SB3 preloaded, as the local executor starts them), cap every BLAS/OpenMP pool at 1 thread
(:func:`engine.system.threads.apply_in_process`) and then give torch the plan's threads, as
``train_member`` does; they wait at one barrier after building, so k units train at the same time.
"""

from __future__ import annotations

import math
import queue
import statistics
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ConfigError, PloutosError

if TYPE_CHECKING:
    from engine.config import PloutosConfig
    from engine.train.plan import HardwarePlan, MachineInfo

__all__ = [
    "ALGORITHMS",
    "ARITHMETIC_LABEL",
    "DEFAULT_CONFIG",
    "POLICIES",
    "MEASURED_LABEL",
    "MarketShape",
    "bench_rollout",
    "bench_walkforward",
    "config_for",
    "format_walkforward",
    "gradient_flops",
    "market_shape",
    "matmul_peak",
    "policy_matmul_weights",
    "project_wall_time",
]

DEFAULT_CONFIG = Path("config/training_config_v8.yaml")
BENCH_N_STEPS = 128  # steps per env of a benched rollout (whole batches, at most the plan's)
MIN_ROLLOUTS = 2  # updates of a unit at the least, by default
ALGORITHMS: tuple[str, ...] = ("ppo", "recurrent_ppo")
MATMUL_SIZE = 2048
MATMUL_REPEATS = 10
BARRIER_TIMEOUT_S = 600.0  # workers waiting for the slowest to build its model
MEASURED_LABEL = "measured on this machine"
ARITHMETIC_LABEL = "arithmetic projection, not measured"
LAYOUTS: tuple[str, ...] = ("alone", "planned", "old_cap")
# The policy a unit is built with, for build_model: ours (None: training's own, for RecurrentPPO
# engine.train.recurrent.RecurrentLstmPolicy) or sb3-contrib's stock LSTM policy.
POLICIES: dict[str, str | None] = {"ours": None, "stock": "MlpLstmPolicy"}
# Figures of a policy variant: medians over its repeats (each one unit alone).
VARIANT_KEYS: tuple[str, ...] = (
    "per_unit_fps",
    "learn_s",
    "rollout_s",
    "train_s",
    "gradient_share",
    "gradient_gflops",
    "train_s_per_update_with_episode_starts",
    "train_s_per_update_without",
)


# --------------------------------------------------------------------------- FLOPs and the peak


def policy_matmul_weights(policy: Any) -> int:
    """``W``: weights of every matrix product of ``policy``'s forward pass (module docstring).

    Each distinct ``nn.Linear`` counts ``in x out``; each ``nn.LSTM`` layer ``4 h x (in + h)``
    per direction (``in`` = the input size for layer 0, else ``h`` x directions). Biases are not
    counted. A module shared by two parts of the policy (SB3's shared features extractor) counts
    once, as it runs once.
    """
    from torch import nn

    total = 0
    for module in policy.modules():
        if isinstance(module, nn.Linear):
            total += int(module.in_features) * int(module.out_features)
        elif isinstance(module, nn.LSTM):
            if module.proj_size:
                raise ConfigError("policy_matmul_weights: LSTMs with proj_size are not counted")
            # SB3 sizes the input from np.prod of the observation shape: a NumPy integer
            h, directions = int(module.hidden_size), 2 if module.bidirectional else 1
            for layer in range(module.num_layers):
                n_in = int(module.input_size) if layer == 0 else h * directions
                total += directions * 4 * h * (n_in + h)
    return total


def gradient_flops(weights: int, samples: int, epochs: int) -> int:
    """FLOPs of PPO's gradient phase: ``6 x weights x samples x epochs`` (module docstring)."""
    return 6 * weights * samples * epochs


def matmul_peak(
    threads: int, size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS, seed: int = 0
) -> dict[str, Any]:
    """GFLOP/s of ``torch.matmul`` of two float32 ``size x size`` matrices at ``threads`` torch
    threads (restored after): ``2 size^3`` FLOPs per product, ``repeats`` timed after one untimed.

    ``gflops`` (the peak) is of the fastest product: other load on a shared machine only slows
    a product down, so the best one is the nearest to what the cores can do; ``gflops_median``
    is of the median one."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
        torch.matmul(a, b, out=out)
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.matmul(a, b, out=out)
            seconds.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(saved)
    flops = 2 * size**3
    return {
        "threads": threads,
        "size": size,
        "repeats": repeats,
        "gflops": round(flops / min(seconds) / 1e9, 2),
        "gflops_median": round(flops / statistics.median(seconds) / 1e9, 2),
        "seconds_runs": [float(f"{s:.4g}") for s in seconds],
    }


# --------------------------------------------------------------------------- the market


@dataclass(frozen=True)
class MarketShape:
    """The synthetic market's shape: ``features: float32[bars, tickers, n_features]``; the
    policy sees ``obs_size = lookback x tickers x n_features + tickers + 1`` (weights, cash)."""

    tickers: int
    n_features: int
    lookback: int
    bars: int
    obs_size_asked: int | None = None

    @property
    def obs_size(self) -> int:
        return self.lookback * self.tickers * self.n_features + self.tickers + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "tickers": self.tickers,
            "n_features": self.n_features,
            "lookback": self.lookback,
            "bars": self.bars,
            "obs_size": self.obs_size,
            "obs_size_asked": self.obs_size_asked,
        }


def market_shape(
    cfg: PloutosConfig, obs_size: int | None = None, source: str = "config"
) -> MarketShape:
    """The config's market: ``data.tickers`` and the features its ``features:`` section computes
    (ticker indicators, calendar, the macro series: ``features.macro``, else ``data.macro``).

    ``obs_size`` (``--obs-size``): keep the tickers, pick the feature count whose observation is
    nearest to it (reported as ``obs_size``, the asked value as ``obs_size_asked``). Bars: room
    for two episodes of ``env.episode_length``.
    """
    from engine.features.schema import feature_names

    lookback = cfg.env.lookback
    bars = max(512, 2 * (cfg.env.episode_length + lookback) + 1)
    if cfg.data is None:
        raise ConfigError(
            f"{source}: no data.tickers to size the synthetic market; add a data: section"
        )
    tickers = len(cfg.data.tickers)
    if obs_size is None:
        macro = cfg.features.macro if cfg.features.macro is not None else tuple(cfg.data.macro)
        return MarketShape(tickers, len(feature_names(cfg.features, macro)), lookback, bars)
    smallest = lookback * tickers + tickers + 1
    if isinstance(obs_size, bool) or obs_size < smallest:
        raise ConfigError(
            f"--obs-size {obs_size}: {tickers} tickers with lookback {lookback} observe at least "
            f"{smallest} values (one feature each); pass a larger size"
        )
    n_features = max(1, round((obs_size - tickers - 1) / (lookback * tickers)))
    return MarketShape(tickers, n_features, lookback, bars, obs_size_asked=obs_size)


def write_market(folder: Path, shape: MarketShape, seed: int) -> tuple[Path, Path]:
    """The synthetic market of ``shape`` saved as ``features.npy`` and ``prices.npy`` in
    ``folder`` (the unit workers memory-map them); their paths."""
    from engine.bench.markets import synthetic_market

    features, prices = synthetic_market(shape.bars, shape.tickers, shape.n_features, seed)
    features_path, prices_path = folder / "features.npy", folder / "prices.npy"
    np.save(features_path, features)
    np.save(prices_path, prices)
    return features_path, prices_path


def config_for(cfg: PloutosConfig, algorithm: str) -> PloutosConfig:
    """``cfg`` training ``algorithm`` instead, everything else the same; for ``ppo`` the
    ``recurrent`` section (refused with ppo unless at its defaults) goes back to its defaults."""
    from engine.config import PloutosConfig

    data = cfg.model_dump(mode="json")
    data["training"]["algorithm"] = algorithm
    if algorithm != "recurrent_ppo":
        data["training"].pop("recurrent", None)
    return PloutosConfig.model_validate(data)


# --------------------------------------------------------------------------- one unit, in a worker


def bench_rollout(
    plan: HardwarePlan, episode_length: int, timesteps: int | None = None
) -> dict[str, Any]:
    """The rollouts a benched unit trains: the plan's ``n_envs`` and ``batch_size``, its
    ``n_steps`` cut to the first multiple of ``batch_size / gcd(batch_size, n_envs)`` (so the
    batch still divides the rollout) not below ``BENCH_N_STEPS`` (never above the plan's).

    ``rollouts``: ``ceil(timesteps / rollout)``; by default (``timesteps`` None)
    ``max(MIN_ROLLOUTS, ceil(episode_length / plan.n_steps))``. Every env of a member starts its
    episode together, so in training one update in ``episode_length / n_steps`` holds episode
    starts (``episode_start_share`` of them), and sb3-contrib's RecurrentPPO runs its LSTM one
    step at a time over such a batch: by default the first of the benched updates is that one
    and the rest are not, the real run's mix when the plan's rollout is no longer than an
    episode (each update's ``episode_starts`` is reported).
    """
    step = plan.batch_size // math.gcd(plan.batch_size, plan.n_envs)
    n_steps = min(plan.n_steps, -(-BENCH_N_STEPS // step) * step)  # both multiples of step
    rollout = plan.n_envs * n_steps
    if timesteps is None:
        rollouts = max(MIN_ROLLOUTS, math.ceil(episode_length / plan.n_steps))
    else:
        rollouts = math.ceil(timesteps / rollout)
    return {
        "n_envs": plan.n_envs,
        "n_steps": n_steps,
        "n_steps_plan": plan.n_steps,
        "batch_size": plan.batch_size,
        "rollout": rollout,
        "rollouts": rollouts,
        "timesteps": rollouts * rollout,
        "episode_start_share": round(min(1.0, plan.n_steps / episode_length), 4),
    }


class _Timer:
    """Per update: the rollout's seconds (between SB3's rollout callbacks), the gradient phase's
    (around ``model.train``) and whether the rollout held an episode start."""

    def __init__(self, model: Any) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        self.updates: list[dict[str, Any]] = []
        timer = self

        class Rollouts(BaseCallback):
            def _on_rollout_start(self) -> None:
                self.started = time.perf_counter()

            def _on_rollout_end(self) -> None:
                seconds = time.perf_counter() - self.started
                starts = bool(np.asarray(self.model.rollout_buffer.episode_starts).any())
                timer.updates.append({"rollout_s": seconds, "train_s": 0.0, "starts": starts})

            def _on_step(self) -> bool:
                return True

        self.callback = Rollouts(verbose=0)
        train = model.train

        def timed_train() -> None:
            started = time.perf_counter()
            train()
            if timer.updates:
                timer.updates[-1]["train_s"] = time.perf_counter() - started

        model.train = timed_train  # the instance attribute shadows the method learn() calls

    def total(self, key: str) -> float:
        return sum(u[key] for u in self.updates)


def _unit_worker(spec: dict[str, Any], barrier: Any, out: Any) -> None:
    """Build one unit as training does, wait for the others, train, put the figures on ``out``."""
    unit = spec["unit"]
    try:
        from engine.system.threads import apply_in_process

        apply_in_process(1)
        import torch

        from engine.config import PloutosConfig
        from engine.env.vec_env import BatchedPortfolioVecEnv
        from engine.train.plan import HardwarePlan
        from engine.train.units import build_model, env_config, torch_settings

        cfg = PloutosConfig.model_validate(spec["config"])
        plan = replace(
            HardwarePlan.from_dict(spec["plan"]),
            n_steps=spec["n_steps"],
            torch_threads=spec["torch_threads"],
        )
        torch_settings(torch, plan.torch_threads)
        features = np.load(spec["features_path"], mmap_mode="r")
        prices = np.load(spec["prices_path"], mmap_mode="r")
        env_cfg = env_config(cfg, (0, int(features.shape[0])))
        venv = BatchedPortfolioVecEnv(
            features,
            prices,
            plan.n_envs,
            env_cfg,
            seed=spec["seed"],
            fill_prices=None if env_cfg.fill == "close" else prices,  # opens = closes
        )
        model = build_model(cfg, plan, venv, spec["seed"], policy=POLICIES[spec["policy"]])
        policy_class = type(model.policy)
        timer = _Timer(model)
        weights = policy_matmul_weights(model.policy)
        barrier.wait(BARRIER_TIMEOUT_S)
        started = time.monotonic()  # system-wide clock: comparable between the workers
        model.learn(spec["timesteps"], callback=timer.callback)
        ended = time.monotonic()
        venv.close()
        out.put(
            {
                "unit": unit,
                "started": started,
                "ended": ended,
                "timesteps": int(model.num_timesteps),
                "epochs": int(model._n_updates),  # SB3 counts one per epoch run
                "n_epochs": int(model.n_epochs),
                "rollout_s": timer.total("rollout_s"),
                # the VecEnv's own stepping clock, where it has one (the rest of a rollout is
                # policy inference and the rollout buffer)
                "env_step_s": getattr(venv, "step_wait_s", None),
                "train_s": timer.total("train_s"),
                "updates": timer.updates,
                "weights": weights,
                "torch_threads": torch.get_num_threads(),
                "rollout": plan.n_envs * plan.n_steps,
                "policy": f"{policy_class.__module__}.{policy_class.__qualname__}",
            }
        )
    except threading.BrokenBarrierError:
        out.put({"unit": unit, "error": "another unit failed before training started"})
    except BaseException as err:  # noqa: BLE001 - every failure must reach the parent
        message = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        out.put({"unit": unit, "error": message, "traceback": traceback.format_exc()})


def _run_units(ctx: Any, spec: dict[str, Any], k: int, torch_threads: int) -> list[dict[str, Any]]:
    """Train ``k`` units of ``spec`` at once (seeds ``seed .. seed + k - 1``) with
    ``torch_threads`` each; their reports, by unit."""
    barrier = ctx.Barrier(k)
    out = ctx.Queue()
    procs = []
    for unit in range(k):
        unit_spec = {**spec, "unit": unit, "seed": spec["seed"] + unit}
        unit_spec["torch_threads"] = torch_threads
        procs.append(ctx.Process(target=_unit_worker, args=(unit_spec, barrier, out), daemon=True))
    from engine.system.threads import pool_environ

    with pool_environ(1):  # a forkserver started here keeps it for its workers
        for proc in procs:
            proc.start()
    reports: dict[int, dict[str, Any]] = {}
    try:
        while len(reports) < k:
            try:
                report = out.get(timeout=1.0)
            except queue.Empty:
                dead = [
                    i
                    for i, p in enumerate(procs)
                    if i not in reports and p.exitcode is not None and p.exitcode != 0
                ]
                if dead:
                    raise PloutosError(
                        f"bench walkforward: unit {dead[0]} died (exit code "
                        f"{procs[dead[0]].exitcode}) before reporting"
                    ) from None
                continue
            if "error" in report:
                raise PloutosError(f"bench walkforward: unit {report['unit']}: {report['error']}")
            reports[report["unit"]] = report
    finally:
        if len(reports) < k:
            barrier.abort()
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
        for proc in procs:
            proc.join(timeout=30)
    return [reports[i] for i in range(k)]


def _median(values: Sequence[float], digits: int) -> float:
    return round(statistics.median(values), digits)


def _layout_figures(reports: list[dict[str, Any]], peak_gflops: float) -> dict[str, Any]:
    """One layout's figures from its units' reports (medians over the units, aggregate over the
    window from the first start to the last end)."""
    wall = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    done = sum(r["timesteps"] for r in reports)
    learn = [r["ended"] - r["started"] for r in reports]
    fps = [r["timesteps"] / s for r, s in zip(reports, learn, strict=True)]
    flops = [gradient_flops(r["weights"], r["rollout"], r["epochs"]) for r in reports]
    gflops = [f / r["train_s"] / 1e9 for f, r in zip(flops, reports, strict=True)]
    share = [r["train_s"] / s for r, s in zip(reports, learn, strict=True)]
    per_unit_gflops = statistics.median(gflops)
    env = [r["env_step_s"] for r in reports]
    # RecurrentPPO steps its LSTM one timestep at a time over a batch holding an episode start
    split = {
        flag: [u["train_s"] for r in reports for u in r["updates"] if u["starts"] is flag]
        for flag in (True, False)
    }
    return {
        "units": len(reports),
        "torch_threads": reports[0]["torch_threads"],
        "timesteps_per_unit": reports[0]["timesteps"],
        "per_unit_fps": _median(fps, 1),
        "aggregate_fps": round(done / wall, 1),
        "window_s": round(wall, 3),
        "learn_s": _median(learn, 3),
        "rollout_s": _median([r["rollout_s"] for r in reports], 3),
        "env_step_s": None if None in env else _median(env, 3),
        "train_s": _median([r["train_s"] for r in reports], 3),
        "gradient_share": _median(share, 3),
        "train_s_per_update_with_episode_starts": _median(split[True], 3) if split[True] else None,
        "train_s_per_update_without": _median(split[False], 3) if split[False] else None,
        "epochs": reports[0]["epochs"],
        "matmul_weights": reports[0]["weights"],
        "gradient_flops": flops[0],
        "gradient_gflops": round(per_unit_gflops, 3),
        "matmul_peak_gflops": peak_gflops,
        "gradient_gflops_vs_peak": round(per_unit_gflops / peak_gflops, 4),
        "aggregate_gradient_gflops": round(sum(flops) / wall / 1e9, 3),
        "per_unit_fps_runs": [round(v, 1) for v in fps],
        "policy": reports[0]["policy"],
        "updates": [
            {"rollout_s": round(u["rollout_s"], 3), "train_s": round(u["train_s"], 3)}
            | {"episode_starts": u["starts"]}
            for u in reports[0]["updates"]
        ],
        "same_run_as": None,
    }


def _measure_layouts(
    ctx: Any,
    spec: dict[str, Any],
    wanted: dict[str, tuple[int, HardwarePlan]],
    peak_at: Callable[[int], float],
) -> dict[str, dict[str, Any]]:
    """Each layout's figures: ``wanted[name]`` = (units in flight, the plan they train with).
    Layouts that would train the same thing are run once (``same_run_as``); the matmul peak at
    a layout's torch threads is measured (``peak_at``) before its units start."""
    layouts: dict[str, dict[str, Any]] = {}
    runs: dict[tuple[int, ...], str] = {}
    for name, (k, plan) in wanted.items():
        rollouts = bench_rollout(plan, spec["episode_length"], spec["timesteps_asked"])
        n_steps = rollouts["n_steps"]
        key = (k, plan.torch_threads, plan.n_envs, n_steps, plan.batch_size, rollouts["timesteps"])
        peak = peak_at(plan.torch_threads)
        if key in runs:
            layouts[name] = {**layouts[runs[key]], "same_run_as": runs[key]}
            continue
        unit_spec = {**spec, "plan": plan.to_dict(), "n_steps": n_steps}
        unit_spec["timesteps"] = rollouts["timesteps"]
        layouts[name] = _layout_figures(_run_units(ctx, unit_spec, k, plan.torch_threads), peak)
        runs[key] = name
    return layouts


def _variant_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A policy variant's figures: medians of :data:`VARIANT_KEYS` over its runs (each an
    ``alone`` layout's figures), and each run's per-unit rate."""
    out: dict[str, Any] = {"policy": runs[0]["policy"], "repeats": len(runs)}
    for key in VARIANT_KEYS:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    out["per_unit_fps_runs"] = [r["per_unit_fps"] for r in runs]
    return out


def _measure_policy_variants(
    ctx: Any,
    spec: dict[str, Any],
    plan: HardwarePlan,
    ours_alone: dict[str, Any],
    peak: float,
    repeats: int,
) -> dict[str, Any]:
    """RecurrentPPO's unit alone with sb3-contrib's stock ``MlpLstmPolicy`` against ours, in the
    same run: ``repeats`` rounds of stock then ours, the first ours being the ``alone`` layout
    just measured (``ours_alone``), so load on the machine hits both alike."""
    rollouts = bench_rollout(plan, spec["episode_length"], spec["timesteps_asked"])
    unit_spec = {**spec, "plan": plan.to_dict(), "n_steps": rollouts["n_steps"]}
    unit_spec["timesteps"] = rollouts["timesteps"]

    def alone(policy: str) -> dict[str, Any]:
        reports = _run_units(ctx, {**unit_spec, "policy": policy}, 1, plan.torch_threads)
        return _layout_figures(reports, peak)

    runs: dict[str, list[dict[str, Any]]] = {"stock": [], "ours": [ours_alone]}
    for repeat in range(repeats):
        runs["stock"].append(alone("stock"))
        if repeat:
            runs["ours"].append(alone("ours"))
    stock, ours = _variant_figures(runs["stock"]), _variant_figures(runs["ours"])
    return {
        "stock": stock,
        "ours": ours,
        "ours_over_stock_fps": round(ours["per_unit_fps"] / stock["per_unit_fps"], 3),
        "stock_over_ours_train_s": round(stock["train_s"] / ours["train_s"], 3)
        if ours["train_s"]
        else None,
    }


# --------------------------------------------------------------------------- the projection


def project_wall_time(
    units: int, total_timesteps: int, units_in_flight: int, aggregate_fps: float, **extra: Any
) -> dict[str, Any]:
    """Wall time of ``units`` units of ``total_timesteps`` each at ``aggregate_fps`` timesteps/s
    with ``units_in_flight`` training at once.

    ``wall_s = work_timesteps / aggregate_fps`` (work = ``units x total_timesteps``), exactly,
    on the returned numbers; ``wall_h`` and ``wall_days`` are it in hours and days.
    ``wall_s_whole_waves`` counts whole waves instead: ``ceil(units / units_in_flight)`` waves
    of one unit's ``total_timesteps`` at ``aggregate_fps / units_in_flight`` each (longer when the
    last wave is not full). ``extra`` is copied into the dict first.
    """
    work = units * total_timesteps
    waves = math.ceil(units / units_in_flight) if units else 0
    wall = work / aggregate_fps
    return {
        **extra,
        "units_in_flight": units_in_flight,
        "aggregate_fps": aggregate_fps,
        "work_timesteps": work,
        "wall_s": wall,
        "wall_h": wall / 3600,
        "wall_days": wall / 86400,
        "waves": waves,
        "wall_s_whole_waves": waves * total_timesteps * units_in_flight / aggregate_fps,
    }


def _plan_summary(plan: HardwarePlan) -> dict[str, Any]:
    return {
        "device": plan.device,
        "n_envs": plan.n_envs,
        "n_steps": plan.n_steps,
        "batch_size": plan.batch_size,
        "parallel_members": plan.parallel_members,
        "torch_threads": plan.torch_threads,
        "reason": plan.reasons.get("parallel_members", ""),
        "warnings": list(plan.warnings),
    }


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    return round(a["wall_s"] / b["wall_s"], 3) if b["wall_s"] else None


def _assumed_projection(
    spec: str,
    plans: dict[str, HardwarePlan],
    measured: dict[str, Any],
    units: int,
    total: int,
) -> dict[str, Any]:
    """Arithmetic: the per-unit rate measured here (planned layout) x the units that fit there."""
    per_unit = measured["per_unit_fps"]
    here_threads = measured["torch_threads"]
    cpus = int(plans["planned"].machine["usable_cpus"])
    fit = max(1, cpus // (1 + here_threads))
    out: dict[str, Any] = {
        "label": ARITHMETIC_LABEL,
        "assume": spec,
        "per_unit_fps_measured_here": per_unit,
        "torch_threads_measured_here": here_threads,
        "assumptions": (
            f"each unit there trains at the per-unit rate measured here ({per_unit} timesteps/s "
            f"with {here_threads} torch thread(s), {measured['units']} unit(s) in flight); no gain "
            f"from more torch threads, no memory-bandwidth or cache contention beyond what was "
            f"measured; units in flight capped at {cpus} CPUs // (1 env-stepping + "
            f"{here_threads} torch) = {fit}"
        ),
    }
    if any(p.device == "cuda" for p in plans.values()):
        out["assumptions"] += "; the plan there trains on cuda, but a GPU's speed is not modelled"
    for name, plan in plans.items():
        effective = min(plan.parallel_members, fit)
        out[name] = project_wall_time(
            units,
            total,
            effective,
            round(per_unit * effective, 1),
            plan=_plan_summary(plan),
        )
    out["wall_ratio_old_cap_over_planned"] = _ratio(out["old_cap"], out["planned"])
    return out


# --------------------------------------------------------------------------- the benchmark


def _check_args(
    timesteps: int | None,
    algorithms: Sequence[str],
    matmul_size: int,
    repeats: int,
    policy_repeats: int = 1,
) -> None:
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    checks = [
        (not unknown, f"unknown algorithms {unknown}: choose from {list(ALGORITHMS)}"),
        (len(algorithms) >= 1 and len(set(algorithms)) == len(algorithms), "algorithms: once each"),
        (timesteps is None or timesteps >= 1, "timesteps per unit must be >= 1"),
        (matmul_size >= 1 and repeats >= 1, "matmul size and repeats must be >= 1"),
        (policy_repeats >= 1, "policy repeats must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"bench walkforward: {message}")


def bench_walkforward(
    config_path: str | Path | None = None,
    assume: str | None = None,
    timesteps_per_unit: int | None = None,
    algorithms: Sequence[str] | None = None,
    seed: int = 0,
    *,
    obs_size: int | None = None,
    profile: str | None = None,
    hardware_file: str | Path | None = None,
    machine: MachineInfo | None = None,
    matmul_size: int = MATMUL_SIZE,
    matmul_repeats: int = MATMUL_REPEATS,
    policy_repeats: int = 1,
) -> dict[str, Any]:
    """Measure units of the config's walk-forward here and project the real run's wall time.

    Args:
        config_path: training YAML (default ``config/training_config_v8.yaml``); its net, PPO
            settings, env rules, ensemble, folds and ``total_timesteps`` are used.
        assume: ``cpus=N,ram=SIZE[,gpu=SIZE]`` (as ``ploutos plan --assume``): add the
            arithmetic projection for that machine; the measurement is always this machine's.
        timesteps_per_unit: each unit's ``learn`` target, rounded up to whole rollouts of
            :func:`bench_rollout`; None: as many rollouts as make the real run's share of
            updates with episode starts (at least ``MIN_ROLLOUTS``).
        algorithms: which to run, in order; default the config's, then the other.
        seed: market and first unit's seed (unit ``i`` of a layout gets ``seed + i``).
        obs_size: observation size to bench instead of the config's (``--obs-size``; see
            :func:`market_shape`).
        profile, hardware_file: the hardware profile and file (default: the config's, and the
            file :func:`engine.train.plan.find_hardware_file` finds).
        machine: the machine the plans are resolved for (default: this one, probed); the units
            always run here.
        matmul_size, matmul_repeats: the peak measurement (:func:`matmul_peak`).
        policy_repeats: RecurrentPPO's units alone with the stock sb3-contrib policy and with
            ours, interleaved, this many of each (``policy_variants``).

    Returns a JSON-ready dict:

    - ``config``, ``config_algorithm``, ``timesteps_per_unit`` (as asked; None by default),
      ``seed``, ``assume``, ``start_method``, ``market`` (:class:`MarketShape`), ``machine``
      (what the plan saw), ``run`` (``folds``, ``ensemble``, ``units``, ``folds_note``,
      ``total_timesteps``, ``work_timesteps``), ``matmul_peak`` (:func:`matmul_peak`'s, keyed
      by torch threads as a string);
    - ``algorithms``, per algorithm: ``plan`` and ``old_cap_plan`` (this machine's);
      ``bench_rollout`` (:func:`bench_rollout`'s, with ``n_epochs``); ``net``
      (``matmul_weights`` W, ``forward_flops_per_sample`` 2 W,
      ``gradient_flops_per_sample_epoch`` 6 W); ``layouts`` (``alone``, ``planned``,
      ``old_cap``), each with ``units``, ``torch_threads``, ``timesteps_per_unit`` (done),
      ``per_unit_fps`` (median over the units), ``aggregate_fps`` (all their timesteps over
      ``window_s``, first start to last end), ``learn_s``, ``rollout_s``, ``env_step_s`` (the
      VecEnv's stepping inside the rollouts; None where it has no clock), ``train_s`` (the
      gradient phase), ``gradient_share``, ``train_s_per_update_with_episode_starts`` and
      ``train_s_per_update_without`` (medians over every unit's updates; None where there is
      none), ``epochs``, ``matmul_weights``, ``gradient_flops``, ``gradient_gflops``,
      ``matmul_peak_gflops``, ``gradient_gflops_vs_peak``, ``aggregate_gradient_gflops``,
      ``per_unit_fps_runs``, ``updates`` (the first unit's ``rollout_s``, ``train_s`` and
      ``episode_starts`` per update), ``policy`` (the class the units were built with) and
      ``same_run_as``; ``projection``: ``this_machine``
      (``label`` :data:`MEASURED_LABEL`; ``planned`` and ``old_cap``, :func:`project_wall_time`
      of the measured aggregate rates; ``wall_ratio_old_cap_over_planned``) and, with
      ``assume``, ``assumed`` (``label`` :data:`ARITHMETIC_LABEL`, its ``assumptions``, the
      same two and their ratio); for ``recurrent_ppo``, ``policy_variants``: ``stock``
      (sb3-contrib's ``MlpLstmPolicy``) and ``ours`` (what training builds,
      :class:`engine.train.recurrent.RecurrentLstmPolicy`), each one unit alone with the
      ``alone`` plan, ``policy_repeats`` times interleaved (the first ``ours`` is the ``alone``
      layout): ``policy``, ``repeats``, the medians of :data:`VARIANT_KEYS` and
      ``per_unit_fps_runs``; ``ours_over_stock_fps`` and ``stock_over_ours_train_s``;
    - with both algorithms, ``comparison``: ``ppo_over_recurrent_fps`` (alone, ours),
      ``ppo_over_recurrent_stock_fps`` and ``ppo_over_recurrent_ours_fps`` (the same against
      the policy variants' medians) and
      ``recurrent_over_ppo_flops_per_sample``; ``notes``: what the figures leave out.

    Workers come from a forkserver: a script calling this must guard its entry point with
    ``if __name__ == "__main__":`` (the ``ploutos`` console script does).
    """
    from engine.system.procs import trainer_context
    from engine.train.plan import assumed_machine, probe_machine
    from engine.train.prepare import plan_for, resolved_config

    config_path = Path(config_path) if config_path is not None else DEFAULT_CONFIG
    source = str(config_path)
    base_cfg = resolved_config(config_path)
    if algorithms is None:
        first = base_cfg.training.algorithm
        algorithms = (first, *(a for a in ALGORITHMS if a != first))
    algorithms = tuple(algorithms)
    _check_args(timesteps_per_unit, algorithms, matmul_size, matmul_repeats, policy_repeats)
    shape = market_shape(base_cfg, obs_size, source)
    machine = probe_machine() if machine is None else machine
    there = assumed_machine(assume) if assume else None

    def plans_for(cfg: PloutosConfig, on: MachineInfo) -> dict[str, HardwarePlan]:
        def one(folds: int | None) -> HardwarePlan:
            return plan_for(
                cfg,
                profile,
                shape.obs_size,
                on,
                hardware_file=hardware_file,
                folds=folds,
                source=source,
            )

        return {"planned": one(None), "old_cap": one(1)}  # old cap: the run as one fold

    result: dict[str, Any] = {
        "config": source,
        "config_algorithm": base_cfg.training.algorithm,
        "timesteps_per_unit": timesteps_per_unit,
        "seed": seed,
        "market": shape.to_dict(),
        "start_method": "forkserver",
        "assume": assume,
        "matmul_peak": {},
        "algorithms": {},
    }
    ctx = trainer_context()

    def peak_at(threads: int) -> float:
        key = str(threads)
        if key not in result["matmul_peak"]:
            result["matmul_peak"][key] = matmul_peak(threads, matmul_size, matmul_repeats, seed)
        return result["matmul_peak"][key]["gflops"]

    with tempfile.TemporaryDirectory(prefix="ploutos-bench-walkforward-") as tmp:
        features_path, prices_path = write_market(Path(tmp), shape, seed)
        for algorithm in algorithms:
            cfg = config_for(base_cfg, algorithm)
            plans = plans_for(cfg, machine)
            plan = plans["planned"]
            if "run" not in result:
                inputs = plan.inputs
                units = int(inputs["units"])
                total = cfg.training.total_timesteps
                result["machine"] = plan.machine
                result["run"] = {
                    "folds": inputs["folds"],
                    "ensemble": inputs["ensemble"],
                    "units": units,
                    "folds_note": inputs["folds_note"],
                    "total_timesteps": total,
                    "work_timesteps": units * total,
                }
            rollouts = bench_rollout(plan, cfg.env.episode_length, timesteps_per_unit)
            spec = {
                "config": cfg.model_dump(mode="json"),
                "timesteps_asked": timesteps_per_unit,
                "episode_length": cfg.env.episode_length,
                "features_path": str(features_path),
                "prices_path": str(prices_path),
                "seed": seed,
                "policy": "ours",
            }
            layouts = _measure_layouts(
                ctx,
                spec,
                {
                    "alone": (1, plan),
                    "planned": (plan.parallel_members, plan),
                    "old_cap": (plans["old_cap"].parallel_members, plans["old_cap"]),
                },
                peak_at,
            )
            weights = layouts["alone"]["matmul_weights"]
            units, total = result["run"]["units"], result["run"]["total_timesteps"]
            this = {
                "label": MEASURED_LABEL,
                **{
                    name: project_wall_time(
                        units,
                        total,
                        layouts[name]["units"],
                        layouts[name]["aggregate_fps"],
                        plan=_plan_summary(plans[name]),
                    )
                    for name in ("planned", "old_cap")
                },
            }
            this["wall_ratio_old_cap_over_planned"] = _ratio(this["old_cap"], this["planned"])
            projection: dict[str, Any] = {"this_machine": this}
            if there is not None and assume is not None:
                projection["assumed"] = _assumed_projection(
                    assume, plans_for(cfg, there), layouts["planned"], units, total
                )
            result["algorithms"][algorithm] = {
                "plan": _plan_summary(plan),
                "old_cap_plan": _plan_summary(plans["old_cap"]),
                "bench_rollout": {**rollouts, "n_epochs": cfg.training.n_epochs},
                "net": {
                    "net_arch": list(cfg.training.net_arch),
                    "recurrent": cfg.training.recurrent.model_dump()
                    if algorithm == "recurrent_ppo"
                    else None,
                    "matmul_weights": weights,
                    "forward_flops_per_sample": 2 * weights,
                    "gradient_flops_per_sample_epoch": 6 * weights,
                },
                "layouts": layouts,
                "projection": projection,
            }
            if algorithm == "recurrent_ppo":
                result["algorithms"][algorithm]["policy_variants"] = _measure_policy_variants(
                    ctx,
                    spec,
                    plan,
                    layouts["alone"],
                    peak_at(plan.torch_threads),
                    policy_repeats,
                )
    algos = result["algorithms"]
    if "ppo" in algos and "recurrent_ppo" in algos:
        ppo, rec = algos["ppo"], algos["recurrent_ppo"]
        result["comparison"] = {
            "ppo_over_recurrent_fps": round(
                ppo["layouts"]["alone"]["per_unit_fps"] / rec["layouts"]["alone"]["per_unit_fps"],
                3,
            ),
            # the same against the policy variants' medians (stock and ours alike)
            **{
                f"ppo_over_recurrent_{name}_fps": round(
                    ppo["layouts"]["alone"]["per_unit_fps"]
                    / rec["policy_variants"][name]["per_unit_fps"],
                    3,
                )
                for name in ("stock", "ours")
            },
            "recurrent_over_ppo_flops_per_sample": round(
                rec["net"]["matmul_weights"] / ppo["net"]["matmul_weights"], 3
            ),
        }
    result["notes"] = [
        "units train on a synthetic market of the config's shape, not the dataset",
        f"n_steps is cut from the plan's to {BENCH_N_STEPS} or the first multiple that keeps the "
        "batch a divisor (n_envs and batch_size kept); the gradient phase's cost per sample does "
        "not depend on n_steps for PPO, for RecurrentPPO through its sequence lengths and "
        "padding; by default a unit makes as many updates as the real run has per episode, the "
        "first one with every env's episode start",
        "the first update also carries each process's warm-up (first allocations)",
        "FLOPs count the matrix products only (6 x W per sample per epoch), not padding, biases, "
        "activations, distributions or the optimiser",
        "wall times cover training only: fold evaluations and Monte Carlo are not included",
    ]
    return result


# --------------------------------------------------------------------------- the summary


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min"


def format_walkforward(result: dict[str, Any]) -> str:
    """A few lines per algorithm: rates, gradient GFLOP/s vs the peak, projected wall times."""
    run = result["run"]
    lines = [
        f"bench walkforward: {result['config']}, {run['units']} units ({run['folds']} fold(s) "
        f"x {run['ensemble']} member(s)) x {run['total_timesteps']:,} timesteps; "
        f"obs {result['market']['obs_size']}"
    ]
    for algorithm, a in result["algorithms"].items():
        alone, planned, old = (a["layouts"][n] for n in LAYOUTS)
        mine = " (the config's)" if algorithm == result["config_algorithm"] else ""
        lines.append(
            f"{algorithm}{mine}, {alone['timesteps_per_unit']:,} timesteps per unit: one unit "
            f"{alone['per_unit_fps']:,} timesteps/s, gradient phase "
            f"{alone['gradient_share']:.0%} of it at {alone['gradient_gflops']:.1f} GFLOP/s = "
            f"{alone['gradient_gflops_vs_peak']:.2f} x the matmul peak "
            f"{alone['matmul_peak_gflops']:.1f} GFLOP/s (torch threads {alone['torch_threads']})"
        )
        variants = a.get("policy_variants")
        if variants is not None:
            stock, ours = variants["stock"], variants["ours"]
            lines.append(
                f"  sb3-contrib's stock LSTM policy {stock['per_unit_fps']:,} timesteps/s "
                f"(gradient phase {stock['train_s']} s) vs ours {ours['per_unit_fps']:,} "
                f"({ours['train_s']} s): {variants['ours_over_stock_fps']}x (median of "
                f"{stock['repeats']})"
            )
        with_starts = alone["train_s_per_update_with_episode_starts"]
        without = alone["train_s_per_update_without"]
        if with_starts is not None and without is not None:
            lines.append(
                f"  gradient phase per update: {with_starts} s with episode starts in the "
                f"batch, {without} s without"
            )
        lines.append(
            f"  in aggregate: planned {planned['units']} in flight {planned['aggregate_fps']:,} "
            f"timesteps/s; old cap {old['units']} in flight {old['aggregate_fps']:,} timesteps/s"
        )
        for key, proj in a["projection"].items():
            where = "here" if key == "this_machine" else proj["assume"]
            lines.append(
                f"  real config {where} ({proj['label']}): "
                f"{_duration(proj['planned']['wall_s'])} with {proj['planned']['units_in_flight']}"
                f" in flight vs {_duration(proj['old_cap']['wall_s'])} with "
                f"{proj['old_cap']['units_in_flight']} (old cap; "
                f"{proj['wall_ratio_old_cap_over_planned']}x as long)"
            )
    return "\n".join(lines)
