"""Environment throughput benchmark: batched VecEnv vs single envs, on the same arrays, in one run.

``bench_env_steps`` returns a JSON-ready dict; ``ploutos bench env --json`` runs it over the real
memory-mapped features (tests pass :func:`engine.bench.markets.synthetic_market`).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psutil
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from engine.env.portfolio import PortfolioEnvConfig, PortfolioTradingEnv
from engine.env.vec_env import BatchedPortfolioVecEnv

_N_ACTION_SETS = 64  # pre-generated action batches, cycled through in timed loops


def _timed_rate(step: Callable[[int], None], steps_per_call: int, seconds: float) -> float:
    """Call ``step(k)`` for k = 0, 1, ... for about ``seconds``; returns env-steps per second."""
    step(0)  # warm-up: first-touch allocations out of the timing
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(16):  # read the clock every 16 calls, not every call
            step(calls)
            calls += 1
        now = time.perf_counter()
        if now >= deadline:
            return calls * steps_per_call / (now - start)


def _single_env_rate(
    features: np.ndarray,
    prices: np.ndarray,
    config: PortfolioEnvConfig,
    seconds: float,
    seed: int,
) -> float:
    env = PortfolioTradingEnv(features, prices, config)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, size=(_N_ACTION_SETS * 16, features.shape[1]))

    def step(k: int) -> None:
        _, _, terminated, truncated, _ = env.step(actions[k % len(actions)])
        if terminated or truncated:
            env.reset()

    return _timed_rate(step, 1, seconds)


def _vec_rate(vec: VecEnv, n_envs: int, n_tickers: int, seconds: float, seed: int) -> float:
    vec.seed(seed)
    vec.reset()
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, size=(_N_ACTION_SETS, n_envs, n_tickers))
    return _timed_rate(lambda k: vec.step(actions[k % _N_ACTION_SETS]), n_envs, seconds)


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def bench_env_steps(
    features: np.ndarray,
    prices: np.ndarray,
    n_envs_list: Sequence[int] = (1, 16, 256),
    seconds: float = 0.5,
    repeats: int = 5,
    config: PortfolioEnvConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure environment throughput with random actions (generated outside the timed loops).

    Args:
        features: float32[time, ticker, feature], shared by every env built here.
        prices: float64 | float32[time, ticker].
        n_envs_list: batch sizes to time (the VecEnv and, for comparison, SB3's DummyVecEnv of
            single envs, the usual way).
        seconds: wall time of one measurement.
        repeats: measurements per figure; each figure is their median.
        config: trading rules (default :class:`PortfolioEnvConfig()`).

    Returns a JSON-ready dict: ``single_env_steps_per_s``; ``vec_env_steps_per_s`` and
    ``dummy_vec_env_steps_per_s`` keyed by ``str(n_envs)`` (env-steps per second, all envs
    counted); ``startup_256_s`` (build 256 envs and reset them); ``rss_256_mb`` (growth of this
    process's resident memory over building 256 envs, resetting and stepping once, garbage
    collected before and after, measured first so that nothing freed earlier is reused) and
    ``owned_buffers_256_mb`` (the arrays the 256-env batch owns, the shared inputs excluded).
    """
    config = config or PortfolioEnvConfig()
    n_tickers = features.shape[1]
    result: dict[str, Any] = {
        "n_bars": int(features.shape[0]),
        "n_tickers": int(n_tickers),
        "n_features": int(features.shape[2]),
        "lookback": config.lookback,
        "seconds": seconds,
        "repeats": repeats,
    }

    before = _rss_mb()
    vec = BatchedPortfolioVecEnv(features, prices, 256, config, seed=seed)
    vec.reset()
    vec.step(np.ones((256, n_tickers), dtype=np.int64))
    result["rss_256_mb"] = round(_rss_mb() - before, 2)
    owned = sum(
        v.nbytes
        for v in vars(vec.batch).values()
        if isinstance(v, np.ndarray)
        and not (np.may_share_memory(v, features) or np.may_share_memory(v, prices))
    )
    result["owned_buffers_256_mb"] = round(owned / 2**20, 3)
    del vec

    startups = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        vec = BatchedPortfolioVecEnv(features, prices, 256, config, seed=seed)
        vec.reset()
        startups.append(time.perf_counter() - start)
        del vec
    result["startup_256_s"] = round(statistics.median(startups), 5)

    def median_rate(measure: Callable[[], float]) -> float:
        return round(statistics.median(measure() for _ in range(repeats)), 1)

    result["single_env_steps_per_s"] = median_rate(
        lambda: _single_env_rate(features, prices, config, seconds, seed)
    )
    vec_rates: dict[str, float] = {}
    dummy_rates: dict[str, float] = {}
    for n_envs in n_envs_list:
        vec = BatchedPortfolioVecEnv(features, prices, n_envs, config)
        vec_rates[str(n_envs)] = median_rate(
            lambda vec=vec, n=n_envs: _vec_rate(vec, n, n_tickers, seconds, seed)
        )
        dummy = DummyVecEnv(
            [lambda: PortfolioTradingEnv(features, prices, config) for _ in range(n_envs)]
        )
        dummy_rates[str(n_envs)] = median_rate(
            lambda dummy=dummy, n=n_envs: _vec_rate(dummy, n, n_tickers, seconds, seed)
        )
        del vec, dummy
    result["vec_env_steps_per_s"] = vec_rates
    result["dummy_vec_env_steps_per_s"] = dummy_rates
    return result
