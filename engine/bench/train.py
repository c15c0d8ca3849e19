"""PPO training throughput: our batched VecEnv vs the seed's one-process-per-env layout, in one run.

``bench_train`` returns a JSON-ready dict (``ploutos bench train --json`` prints it). Three layouts
of the same ``n_envs`` environments over the same arrays train the same SB3 PPO:

- ``batched``: :class:`engine.env.vec_env.BatchedPortfolioVecEnv`, all envs one NumPy batch, in process;
- ``subproc``: SB3 ``SubprocVecEnv`` of single :class:`engine.env.portfolio.PortfolioTradingEnv`, one process
  per env, as the seed code trained;
- ``dummy``: SB3 ``DummyVecEnv`` of single envs, in process, one Python ``step`` per env
  (reference).

Each layout's vec env is built once (``startup_s``: construction and the first ``reset``, which
waits for every worker); after one untimed warm-up rollout, each repeat trains a fresh,
identically seeded PPO on it for ``timesteps``, the layouts taking turns (batched, subproc, dummy,
batched, ...) so that machine noise hits them alike. Building once keeps the default run short:
every ``subproc`` worker is a fresh interpreter importing torch and SB3, seconds of CPU each.

Start method of ``subproc``: ``spawn``. Each worker is a fresh interpreter whose environment is
``os.environ`` at the moment it is created, so the thread caps of
:func:`engine.system.threads.pool_environ`, set around its creation, surely reach it. ``forkserver``
(SB3's default on Linux) forks workers from a server that keeps the environment of whoever first
started it, possibly without the caps; ``fork`` after torch has started its thread pools can copy
locks held by other threads into the child and deadlock. Spawn costs little more than forkserver
here: the server preloads nothing, so its workers import torch and SB3 themselves as well.

Threads: torch runs on one thread in this process during the bench (restored after), and every
worker gets the sanitized pool variables: with 16 workers each starting a BLAS pool of one thread
per core, the comparison would measure oversubscription rather than the layouts.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from engine.bench.markets import synthetic_market
from engine.env.portfolio import PortfolioEnvConfig, PortfolioTradingEnv
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.errors import ConfigError
from engine.system.limits import usable_cpus
from engine.system.threads import pool_environ

__all__ = ["LAYOUTS", "START_METHOD", "bench_train"]

LAYOUTS: tuple[str, ...] = ("batched", "subproc", "dummy")
START_METHOD = "spawn"  # of the SubprocVecEnv workers; see the module docstring
_TORCH_THREADS = 1


class _MappedEnvFactory:
    """Builds one :class:`PortfolioTradingEnv` over the arrays saved as ``.npy`` files, memory
    mapped read only. Picklable, so a ``spawn`` worker gets two paths, not a copy of the arrays
    (all workers then share the page cache, like the real memory-mapped features)."""

    def __init__(self, features_path: Path, prices_path: Path, config: PortfolioEnvConfig) -> None:
        self.features_path = str(features_path)
        self.prices_path = str(prices_path)
        self.config = config

    def __call__(self) -> PortfolioTradingEnv:
        features = np.load(self.features_path, mmap_mode="r")
        prices = np.load(self.prices_path, mmap_mode="r")
        return PortfolioTradingEnv(features, prices, self.config)


class _RolloutTimer(BaseCallback):
    """Sums the wall time of rollout collection (env steps and policy forward passes); the rest
    of ``learn`` is PPO's gradient updates."""

    def __init__(self) -> None:
        super().__init__(verbose=0)
        self.seconds = 0.0
        self._started = 0.0

    def _on_rollout_start(self) -> None:
        self._started = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._started

    def _on_step(self) -> bool:
        return True


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _build(layout: str, n_envs: int, factory: _MappedEnvFactory) -> VecEnv:
    if layout == "batched":
        features = np.load(factory.features_path, mmap_mode="r")
        prices = np.load(factory.prices_path, mmap_mode="r")
        return BatchedPortfolioVecEnv(features, prices, n_envs, factory.config)
    if layout == "dummy":
        return DummyVecEnv([factory] * n_envs)
    with pool_environ(_TORCH_THREADS):  # spawn: the workers copy os.environ as it is now
        return SubprocVecEnv([factory] * n_envs, start_method=START_METHOD)


def _check_args(
    layouts: Sequence[str],
    n_envs: int,
    timesteps: int,
    n_steps: int,
    batch_size: int,
    repeats: int,
    bars: int,
    episode_length: int,
) -> None:
    unknown = [name for name in layouts if name not in LAYOUTS]
    checks = [
        (not unknown, f"unknown layouts {unknown}: choose from {list(LAYOUTS)}"),
        (
            len(layouts) >= 1 and len(set(layouts)) == len(layouts),
            "layouts: one or more, once each",
        ),
        (n_envs >= 1, "n_envs must be >= 1"),
        (timesteps >= 1, "timesteps must be >= 1"),
        (n_steps >= 1, "n_steps must be >= 1"),
        (batch_size >= 2, "batch_size must be >= 2 (PPO normalises advantages per batch)"),
        (repeats >= 1, "repeats must be >= 1"),
        (bars >= 3, "bars must be >= 3"),
        (episode_length >= 1, "episode_length must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"bench train: {message}")


def _median(values: list[float], digits: int) -> float:
    return round(statistics.median(values), digits)


def _ratio(result: dict[str, Any], a: str, b: str, key: str) -> float | None:
    if a not in result or b not in result or result[b][key] <= 0:
        return None
    return round(result[a][key] / result[b][key], 3)


def bench_train(
    n_envs: int = 16,
    timesteps: int = 6144,
    n_steps: int = 128,
    batch_size: int = 512,
    net_arch: Sequence[int] = (64, 64),
    repeats: int = 3,
    tickers: int = 15,
    bars: int = 5000,
    seed: int = 0,
    layouts: Sequence[str] = LAYOUTS,
    n_features: int = 40,
    episode_length: int = 2048,
) -> dict[str, Any]:
    """Time ``PPO("MlpPolicy", venv).learn(timesteps)`` on CPU for each layout of ``n_envs`` envs.

    Args:
        n_envs: environments in every layout (one process each for ``subproc``).
        timesteps: ``learn`` target; PPO runs whole rollouts of ``n_envs * n_steps`` steps, so it
            does ``timesteps_done`` = that rounded up to a whole rollout.
        n_steps, batch_size, net_arch: PPO's rollout length per env, minibatch size and
            ``policy_kwargs={"net_arch": ...}``; other PPO settings are SB3's defaults.
        repeats: training runs per layout; each figure is their median.
        tickers, bars, n_features: shape of the synthetic market (:func:`synthetic_market`),
            saved to a temporary directory and memory mapped by every layout.
        seed: market, PPO and env seed (the same for every layout and repeat).
        layouts: which of ``LAYOUTS`` to run, in this order within each round.
        episode_length: of the env config (auto-resets every so many steps per env).

    Returns a JSON-ready dict: the settings (``n_envs``, ``timesteps``, ``timesteps_done``,
    ``n_steps``, ``batch_size``, ``n_epochs``, ``net_arch``, ``repeats``, ``tickers``, ``bars``,
    ``n_features``, ``obs_size``, ``cpus`` (usable), ``torch_threads`` (during the bench),
    ``start_method``, ``layouts``); per layout a dict under its name with ``startup_s`` (build
    the vec env and reset it once) and ``close_s`` (``close()``, joining any workers), each
    measured once; ``fps`` (timesteps per second of ``learn``), ``learn_s``, ``rollout_s``
    (collecting rollouts: env steps and policy forward passes), ``train_s`` (the rest: gradient
    updates) and ``rollout_fps``, medians over the repeats; and ``fps_runs`` (every repeat, in
    order). Then the ratios ``fps_ratio_batched_subproc``, ``fps_ratio_batched_dummy``,
    ``rollout_fps_ratio_batched_subproc`` and ``rollout_fps_ratio_batched_dummy`` (batched's
    figure over the other's, as reported; ``None`` where either layout was not run).

    ``subproc`` spawns workers, which import the caller's main script again: a script calling
    this must guard its entry point with ``if __name__ == "__main__":`` (the ``ploutos``
    console script does).
    """
    layouts = tuple(layouts)
    _check_args(layouts, n_envs, timesteps, n_steps, batch_size, repeats, bars, episode_length)
    config = PortfolioEnvConfig(episode_length=episode_length)
    rollout = n_envs * n_steps
    result: dict[str, Any] = {
        "n_envs": n_envs,
        "timesteps": timesteps,
        "timesteps_done": -(-timesteps // rollout) * rollout,
        "n_steps": n_steps,
        "batch_size": batch_size,
        "n_epochs": None,  # filled from the first model (SB3's default)
        "net_arch": [int(width) for width in net_arch],
        "repeats": repeats,
        "tickers": tickers,
        "bars": bars,
        "n_features": n_features,
        "obs_size": config.lookback * tickers * n_features + tickers + 1,
        "cpus": usable_cpus(),
        "torch_threads": _TORCH_THREADS,
        "start_method": START_METHOD,
        "layouts": list(layouts),
    }
    runs: dict[str, dict[str, list[float]]] = {
        name: {"learn_s": [], "rollout_s": [], "fps": [], "rollout_fps": []} for name in layouts
    }
    startup: dict[str, float] = {}
    closing: dict[str, float] = {}
    venvs: dict[str, VecEnv] = {}

    with (
        tempfile.TemporaryDirectory(prefix="ploutos-bench-train-") as tmp,
        _torch_threads(_TORCH_THREADS),
    ):
        features, prices = synthetic_market(bars, tickers, n_features, seed)
        features_path, prices_path = Path(tmp) / "features.npy", Path(tmp) / "prices.npy"
        np.save(features_path, features)
        np.save(prices_path, prices)
        del features, prices
        factory = _MappedEnvFactory(features_path, prices_path, config)
        try:
            for name in layouts:
                gc.collect()
                started = time.perf_counter()
                venvs[name] = _build(name, n_envs, factory)
                venvs[name].reset()
                startup[name] = time.perf_counter() - started

            def new_model(venv: VecEnv, **kwargs: Any) -> PPO:
                return PPO(
                    "MlpPolicy",
                    venv,
                    n_steps=n_steps,
                    batch_size=batch_size,
                    policy_kwargs={"net_arch": list(result["net_arch"])},
                    device="cpu",
                    seed=seed,
                    verbose=0,
                    **kwargs,
                )

            # Untimed warm-up (one rollout, one epoch): torch's first passes and allocations
            # would otherwise land on whichever layout comes first.
            new_model(venvs[layouts[0]], n_epochs=1).learn(rollout)
            for _ in range(repeats):
                for name in layouts:
                    gc.collect()
                    model = new_model(venvs[name])
                    result["n_epochs"] = model.n_epochs
                    timer = _RolloutTimer()
                    started = time.perf_counter()
                    model.learn(timesteps, callback=timer)
                    learn_s = time.perf_counter() - started
                    done = model.num_timesteps
                    result["timesteps_done"] = done
                    runs[name]["learn_s"].append(learn_s)
                    runs[name]["rollout_s"].append(timer.seconds)
                    runs[name]["fps"].append(done / learn_s)
                    runs[name]["rollout_fps"].append(done / timer.seconds)
                    del model
        finally:
            for name, venv in venvs.items():
                started = time.perf_counter()
                venv.close()
                closing[name] = time.perf_counter() - started

    for name in layouts:
        r = runs[name]
        result[name] = {
            "startup_s": round(startup[name], 3),
            "close_s": round(closing[name], 3),
            "fps": _median(r["fps"], 1),
            "learn_s": _median(r["learn_s"], 3),
            "rollout_s": _median(r["rollout_s"], 3),
            "train_s": _median(
                [a - b for a, b in zip(r["learn_s"], r["rollout_s"], strict=True)], 3
            ),
            "rollout_fps": _median(r["rollout_fps"], 1),
            "fps_runs": [round(v, 1) for v in r["fps"]],
        }
    for key in ("fps", "rollout_fps"):
        for other in ("subproc", "dummy"):
            result[f"{key}_ratio_batched_{other}"] = _ratio(result, "batched", other, key)
    return result
