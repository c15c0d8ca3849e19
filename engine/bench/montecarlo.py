"""Monte Carlo throughput benchmark: the batched run against the per-simulation predict loop.

``bench_montecarlo`` returns a JSON-ready dict (``ploutos bench montecarlo --json``). It builds a
synthetic market (random-walk prices, standard normal features) and an ensemble of freshly
initialised members: throughput does not depend on the weights, so no training is needed. Both
runs use the same plan (same seed), so the naive run's simulations are the first ones of the
batched run, and the dict says whether their results agree. :func:`run_monte_carlo_naive`, the
per-simulation reference implementation, lives here too (tests check the batched run against it).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from engine.bench.markets import synthetic_market
from engine.config import MonteCarloConfig
from engine.env.portfolio import PortfolioEnvConfig, PortfolioTradingEnv
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.errors import ConfigError
from engine.evaluation.evaluate import (
    NULL_POLICIES,
    EnsemblePolicy,
    Policy,
    Vote,
    distribution_probs,
    is_recurrent,
    majority_vote,
    mean_prob_vote,
    null_policy,
)
from engine.evaluation.montecarlo import (
    MonteCarloResult,
    PolicyComparison,
    compare_policies,
    simulation_setup,
)

# Six months of regular-session hourly bars: ~126 trading days x 7 bars.
DEFAULT_WINDOW_BARS = 882


def _members(
    algorithm: str,
    members: int,
    features: np.ndarray,
    prices: np.ndarray,
    config: PortfolioEnvConfig,
    seed: int,
    lstm_hidden_size: int,
) -> list[BaseAlgorithm]:
    env = BatchedPortfolioVecEnv(features, prices, 2, config, seed=seed)
    common: dict[str, Any] = dict(n_steps=16, batch_size=32, device="cpu", verbose=0)
    if algorithm == "ppo":
        from stable_baselines3 import PPO

        return [
            PPO("MlpPolicy", env, seed=seed + j, policy_kwargs={"net_arch": [64, 64]}, **common)
            for j in range(members)
        ]
    if algorithm == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        kwargs = {"net_arch": [64, 64], "lstm_hidden_size": lstm_hidden_size}
        return [
            RecurrentPPO("MlpLstmPolicy", env, seed=seed + j, policy_kwargs=kwargs, **common)
            for j in range(members)
        ]
    raise ConfigError(f"algorithm must be 'ppo' or 'recurrent_ppo', got {algorithm!r}")


def bench_montecarlo(
    simulations: int = 1000,
    naive_simulations: int = 20,
    members: int = 2,
    algorithm: str = "ppo",
    vote: Vote = "majority",
    window_bars: int = DEFAULT_WINDOW_BARS,
    n_tickers: int = 15,
    n_features: int = 40,
    lookback: int = 1,
    repeats: int = 3,
    naive_repeats: int = 1,
    torch_threads: int | None = 1,
    lstm_hidden_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Time :func:`engine.evaluation.montecarlo.run_monte_carlo` (``simulations`` at once) against
    :func:`run_monte_carlo_naive` (its first ``naive_simulations``).

    Args:
        simulations: simulations of the batched run.
        naive_simulations: simulations of the naive run (one at a time, slow).
        members: ensemble members, ``algorithm`` ``"ppo"`` (MLP [64, 64]) or
            ``"recurrent_ppo"`` (LSTM of ``lstm_hidden_size``, then MLP [64, 64]).
        window_bars: bars of the test window (``window_bars - 1`` steps at most).
        repeats, naive_repeats: timed runs of each; figures are medians.
        torch_threads: ``torch.set_num_threads`` for the benchmark (restored after); the
            default 1 is what training runs with (``ploutos train`` caps every BLAS/OpenMP
            pool at 1 thread); ``None`` keeps this process's setting. On a small shared
            machine 2 threads made the batched run 3-5x slower (OpenMP regions around
            tiny tensor ops).

    Returns a JSON-ready dict. ``*_bar_steps_per_s`` count the steps each simulation needs
    (the sum of their lengths); the batched run also computes the steps of simulations that
    ended early (``batched_steps_computed``), counted as waste, not as throughput.
    """
    if simulations < 1 or naive_simulations < 1 or repeats < 1 or naive_repeats < 1:
        raise ConfigError("simulations, naive_simulations and repeats must be >= 1")
    previous_threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        n_bars = window_bars + lookback + 64  # some history before the test window
        features, prices = synthetic_market(n_bars, n_tickers, n_features, seed=seed)
        config = PortfolioEnvConfig(lookback=lookback)
        rows = (n_bars - window_bars, n_bars)
        models = _members(algorithm, members, features, prices, config, seed, lstm_hidden_size)
        policy = EnsemblePolicy(models, vote)
        mc = MonteCarloConfig(simulations=simulations, seed=seed)

        batched_times: list[float] = []
        comparison: PolicyComparison | None = None
        for _ in range(repeats):
            start = time.perf_counter()
            comparison = compare_policies(policy, features, prices, None, rows, config, mc)
            batched_times.append(time.perf_counter() - start)
        assert comparison is not None
        batched = comparison.ensemble
        naive_times: list[float] = []
        naive: MonteCarloResult | None = None
        naive_nulls: dict[str, MonteCarloResult] = {}
        for _ in range(naive_repeats):
            start = time.perf_counter()
            naive = run_monte_carlo_naive(
                models, features, prices, None, rows, config, mc, vote=vote, limit=naive_simulations
            )
            for name in NULL_POLICIES:
                null = null_policy(name, n_tickers, mc.seed + 1)
                naive_nulls[name] = run_policy_naive(
                    null, features, prices, None, rows, config, mc, limit=naive_simulations
                )
            naive_times.append(time.perf_counter() - start)
        assert naive is not None
    finally:
        threads_used = torch.get_num_threads()
        torch.set_num_threads(previous_threads)

    batched_s = statistics.median(batched_times)
    naive_s = statistics.median(naive_times)
    policies = 1 + len(NULL_POLICIES)  # every simulation is run for the ensemble and each null
    batched_rate = policies * float(batched.lengths.sum()) / batched_s
    naive_rate = policies * float(naive.lengths.sum()) / naive_s
    k = naive.simulations
    diff = np.abs(naive.final_returns - batched.final_returns[:k])
    nulls_match = {
        name: bool(
            np.allclose(
                naive_nulls[name].final_returns,
                comparison.nulls[name].final_returns[:k],
                rtol=0,
                atol=1e-12,
            )
        )
        for name in NULL_POLICIES
        # The random null draws one [n, ticker] block per step for the batch, the naive loop
        # one row per simulation: the same distribution, not the same draws.
        if name != "random"
    }
    return {
        "algorithm": algorithm,
        "members": members,
        "vote": vote,
        "net_arch": [64, 64],
        "window_bars": window_bars,
        "max_steps": window_bars - 1,
        "n_tickers": n_tickers,
        "n_features": n_features,
        "lookback": lookback,
        "obs_size": int(policy.models[0].observation_space.shape[0]),
        "torch_threads": threads_used,
        "simulations": simulations,
        "naive_simulations": k,
        "repeats": repeats,
        "naive_repeats": naive_repeats,
        "batched_wall_s": round(batched_s, 3),
        "batched_wall_s_all": [round(t, 3) for t in batched_times],
        "naive_wall_s": round(naive_s, 3),
        "naive_wall_s_all": [round(t, 3) for t in naive_times],
        "batched_bar_steps": int(batched.lengths.sum()),
        "batched_steps_computed": int(batched.lengths.max()) * simulations,
        "naive_bar_steps": int(naive.lengths.sum()),
        "batched_bar_steps_per_s": round(batched_rate, 1),
        "naive_bar_steps_per_s": round(naive_rate, 1),
        "speedup": round(batched_rate / naive_rate, 2),
        "naive_matches_batched": bool(
            np.array_equal(naive.final_returns, batched.final_returns[:k])
        ),
        "naive_max_abs_diff": float(diff.max()),
        "null_policies": list(NULL_POLICIES),
        "naive_nulls_match_batched": nulls_match,
        "loss_probability": {
            "ensemble": batched.stats().loss_probability,
            **{n: r.stats().loss_probability for n, r in comparison.nulls.items()},
        },
        "note": "medians over repeats; both sides run the ensemble and every null policy on the "
        "same plan (bar steps count all of them); the naive run covers the first "
        "naive_simulations simulations of that plan",
    }


def _member_output(
    model: BaseAlgorithm,
    obs: np.ndarray,
    state: Any,
    episode_start: bool,
    vote: Vote,
) -> tuple[np.ndarray, Any]:
    """One member's deterministic action ``[1, ticker]`` (``vote="majority"``, through
    ``model.predict``) or action probabilities ``[1, ticker, 3]`` for one observation."""
    if vote == "majority":
        if is_recurrent(model):
            actions, state = model.predict(
                obs, state=state, episode_start=np.array([episode_start]), deterministic=True
            )
        else:
            actions, _ = model.predict(obs, deterministic=True)
        return np.asarray(actions).reshape(1, -1), state
    policy = model.policy
    policy.set_training_mode(False)
    with torch.no_grad():
        obs_t = torch.as_tensor(obs.reshape(1, -1), device=policy.device)
        if is_recurrent(model):
            if state is None:
                layers, _, hidden = policy.lstm_hidden_state_shape
                zeros = torch.zeros((layers, 1, hidden), device=policy.device)
                state = (zeros, zeros.clone())
            starts = torch.tensor([float(episode_start)], device=policy.device)
            dist, state = policy.get_distribution(obs_t, state, starts)
        else:
            dist = policy.get_distribution(obs_t)
        return distribution_probs(dist).cpu().numpy(), state


def run_policy_naive(
    policy: Policy,
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    mc: MonteCarloConfig,
    seed: int | None = None,
    limit: int | None = None,
    *,
    fill_prices: np.ndarray | None = None,
) -> MonteCarloResult:
    """The naive loop for any :class:`engine.evaluation.evaluate.Policy` (the null policies):
    one simulation after another in one gym env, one ``act`` per step on one observation."""
    plan, config = simulation_setup(features, rows, env_config, mc, seed)
    count = mc.simulations if limit is None else min(limit, mc.simulations)
    env = PortfolioTradingEnv(features, prices, config, tradable=tradable, fill_prices=fill_prices)
    v0 = config.initial_equity
    final, max_dd = np.empty(count), np.empty(count)
    policy.reset(1)
    for i in range(count):
        length = int(plan.lengths[i])
        obs, info = env.reset(options={"index_path": plan.paths[i, : length + 1]})
        env.batch.set_cost_multipliers(plan.cost_multipliers[i : i + 1])
        peak, worst, equity = v0, 0.0, v0
        for k in range(length):
            action = policy.act(obs.reshape(1, -1), np.array([k == 0]))
            obs, _, _, _, info = env.step(np.asarray(action)[0])
            equity = info["equity"]
            peak = max(peak, equity)
            worst = max(worst, 1.0 - equity / peak)
        exit_cost = config.cost_rate * plan.cost_multipliers[i] * (equity - info["cash"])
        final[i] = (equity - exit_cost) / v0 - 1.0
        max_dd[i] = worst
    return MonteCarloResult(
        final_returns=final,
        max_drawdowns=max_dd,
        lengths=plan.lengths[:count],
        cost_multipliers=plan.cost_multipliers[:count],
    )


def run_monte_carlo_naive(
    models: Sequence[BaseAlgorithm],
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    mc: MonteCarloConfig,
    seed: int | None = None,
    vote: Vote = "majority",
    limit: int | None = None,
    *,
    fill_prices: np.ndarray | None = None,
) -> MonteCarloResult:
    """The naive reference: the per-simulation loop :func:`run_monte_carlo` replaces, one
    :class:`engine.env.portfolio.PortfolioTradingEnv`, one simulation after another, each step one
    ``model.predict`` per member (``vote="mean_prob"``: one ``get_distribution`` per member)
    on one observation, combined by the same vote as :class:`EnsemblePolicy`.

    Runs the same plan as :func:`run_monte_carlo` for the same ``mc`` and ``seed``, so it gives
    the same results (up to the members' float rounding at batch size 1 vs ``n``, which can
    flip an action only when two are within rounding of a tie). ``limit`` runs only the first
    ``limit`` simulations of that plan (the baseline is slow).
    """
    EnsemblePolicy(models, vote)  # the same checks on the members
    loop = _PredictLoop(models, vote)
    return run_policy_naive(
        loop, features, prices, tradable, rows, env_config, mc, seed, limit, fill_prices=fill_prices
    )


class _PredictLoop:
    """The members as the naive loop runs them: one ``predict`` (or ``get_distribution``) per
    member on one observation, LSTM states restarted on ``episode_start``."""

    def __init__(self, models: Sequence[BaseAlgorithm], vote: Vote) -> None:
        self.models, self.vote = list(models), vote
        self.states: list[Any] = [None] * len(self.models)

    def reset(self, n: int) -> None:
        self.states = [None] * len(self.models)

    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        first = bool(episode_start[0])
        if first:
            self.states = [None] * len(self.models)
        outputs = []
        for j, model in enumerate(self.models):
            output, self.states[j] = _member_output(model, obs[0], self.states[j], first, self.vote)
            outputs.append(output)
        return majority_vote(outputs) if self.vote == "majority" else mean_prob_vote(outputs)
