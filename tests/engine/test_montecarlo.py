"""Per-portfolio cost rates, the stationary bootstrap, and the batched Monte Carlo (checked
against the naive per-simulation predict loop and against hand computations)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO

from engine.bench.markets import synthetic_market
from engine.bench.montecarlo import run_monte_carlo_naive
from engine.config import MonteCarloConfig
from engine.env.portfolio import BUY, HOLD, PortfolioBatch, PortfolioEnvConfig
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.errors import ConfigError, DataError
from engine.evaluation.evaluate import EnsemblePolicy
from engine.evaluation.montecarlo import (
    MonteCarloResult,
    plan_monte_carlo,
    run_monte_carlo,
    stationary_bootstrap_paths,
)

N_TICKERS = 3


def market(n_bars=160, n_tickers=N_TICKERS, n_features=4, seed=0, vol=0.01):
    return synthetic_market(n_bars, n_tickers, n_features, seed, vol)


class ConstantPolicy:
    def __init__(self, action, n_tickers=N_TICKERS):
        self.action, self.n_tickers = action, n_tickers

    def reset(self, n):
        pass

    def act(self, obs, episode_start):
        return np.full((obs.shape[0], self.n_tickers), self.action, dtype=np.int64)


MODEL_CONFIG = PortfolioEnvConfig(lookback=2)


@pytest.fixture(scope="module")
def members():
    features, prices = market()
    vec = BatchedPortfolioVecEnv(features, prices, 2, MODEL_CONFIG)
    kwargs = dict(n_steps=16, batch_size=16, device="cpu")
    ppos = [
        PPO("MlpPolicy", vec, seed=s, policy_kwargs={"net_arch": [16, 16]}, **kwargs)
        for s in range(2)
    ]
    lstm = RecurrentPPO(
        "MlpLstmPolicy",
        vec,
        seed=9,
        policy_kwargs={"net_arch": [16], "lstm_hidden_size": 8},
        **kwargs,
    )
    return features, prices, [*ppos, lstm]


# ------------------------------------------------------------------------ cost multipliers


def run_batch(features, prices, config, n, actions, multipliers=None, tradable=None):
    batch = PortfolioBatch(features, prices, config, n, tradable=tradable)
    if multipliers is not None:
        batch.set_cost_multipliers(multipliers)
    batch.reset_rows(np.arange(n), np.arange(n) + 5)
    trace = []
    for row in actions:
        reward, _, _ = batch.step(row)
        trace.append(
            np.concatenate([reward, batch.equity, batch.cash, batch.costs, batch.units.ravel()])
        )
    return np.array(trace)


def test_cost_multipliers_of_one_equal_the_scalar_rate_bit_for_bit():
    features, prices = market(n_bars=120)
    tradable = np.random.default_rng(1).random((120, N_TICKERS)) > 0.1
    config = PortfolioEnvConfig(trade_fraction=0.4, commission_bps=11.0, slippage_bps=4.0)
    actions = np.random.default_rng(2).integers(0, 3, size=(80, 6, N_TICKERS))
    scalar = run_batch(features, prices, config, 6, actions, tradable=tradable)
    ones = run_batch(features, prices, config, 6, actions, np.ones(6), tradable=tradable)
    assert np.array_equal(scalar, ones)
    assert scalar[-1, 3 * 6 : 4 * 6].min() > 0  # costs were paid


def test_a_multiplier_of_two_doubles_the_cost_of_a_step():
    features, prices = market()
    config = PortfolioEnvConfig(trade_fraction=0.2, commission_bps=10.0, slippage_bps=5.0)
    batch = PortfolioBatch(features, prices, config, 3)
    batch.set_cost_multipliers(np.array([1.0, 2.0, 0.0]))
    batch.reset_rows(np.arange(3), np.full(3, 10))
    buy_one = np.array([[BUY, HOLD, HOLD]] * 3)
    batch.step(buy_one)
    # Each bought 0.2 of equity in ticker 0 at the close of bar 10, paying 0.2 * rate * mult.
    rate = 0.0015
    assert batch.costs.tolist() == pytest.approx([0.2 * rate, 0.4 * rate, 0.0], rel=1e-15)
    assert batch.cash.tolist() == pytest.approx(
        [0.8 - 0.2 * rate, 0.8 - 0.4 * rate, 0.8], rel=1e-15
    )
    growth = prices[11, 0] / prices[10, 0]
    assert batch.equity[1] == pytest.approx(0.8 - 0.4 * rate + 0.2 * growth, rel=1e-15)
    # None restores the scalar rate for everyone.
    batch.set_cost_multipliers(None)
    batch.step(np.array([[0, HOLD, HOLD]] * 3))  # sell it back
    sold = 0.2 * growth  # the whole holding: one unit
    expected = [0.2 * rate + sold * rate, 0.4 * rate + sold * rate, sold * rate]
    assert batch.costs.tolist() == pytest.approx(expected, rel=1e-12)


def test_cost_multipliers_are_validated():
    features, prices = market()
    batch = PortfolioBatch(features, prices, PortfolioEnvConfig(), 2)
    with pytest.raises(ConfigError):
        batch.set_cost_multipliers(np.ones(3))
    with pytest.raises(ConfigError):
        batch.set_cost_multipliers(np.array([1.0, -0.5]))
    with pytest.raises(ConfigError):
        batch.set_cost_multipliers(np.array([1.0, np.nan]))


# ------------------------------------------------------------------------ bootstrap


def continuation(paths, lo, hi):
    """True where index k+1 is the bar after index k (wrapping from hi - 1 to lo)."""
    nxt = np.where(paths[:, :-1] + 1 >= hi, lo, paths[:, :-1] + 1)
    return paths[:, 1:] == nxt


def test_bootstrap_paths_stay_in_the_window_and_are_reproducible():
    lo, hi = 100, 160
    paths = stationary_bootstrap_paths(np.random.default_rng(0), lo, hi, 500, 300, 8.0)
    assert paths.shape == (500, 300) and paths.dtype == np.int64
    assert paths.min() == lo and paths.max() == hi - 1  # acted bars: the next one is in [lo, hi]
    again = stationary_bootstrap_paths(np.random.default_rng(0), lo, hi, 500, 300, 8.0)
    assert np.array_equal(paths, again)
    other = stationary_bootstrap_paths(np.random.default_rng(1), lo, hi, 500, 300, 8.0)
    assert not np.array_equal(paths, other)
    # Blocks wrap around the end of the window.
    wraps = (paths[:, :-1] == hi - 1) & (paths[:, 1:] == lo)
    assert wraps.sum() > 100


def test_bootstrap_blocks_have_geometric_lengths_of_the_requested_mean():
    lo, hi = 0, 2000
    for mean_block in (1.0, 5.0, 48.0):
        paths = stationary_bootstrap_paths(np.random.default_rng(3), lo, hi, 400, 2000, mean_block)
        cont = continuation(paths, lo, hi)
        # A fresh draw continues the previous bar by chance with probability 1 / 2000.
        p_new = (1 / mean_block) * (1 - 1 / 2000)
        assert 1 - cont.mean() == pytest.approx(p_new, rel=0.03)
        # Mean length of runs of consecutive bars (runs cut by the path end included).
        runs = paths.size / (paths.shape[0] + (~cont).sum())
        assert runs == pytest.approx(mean_block, rel=0.06)


def test_bootstrap_starts_and_columns_are_uniform_over_the_window():
    lo, hi = 10, 30  # 20 acted bars
    paths = stationary_bootstrap_paths(np.random.default_rng(4), lo, hi, 20_000, 50, 10.0)
    for column in (0, 49):
        counts = np.bincount(paths[:, column] - lo, minlength=20)
        expected = 20_000 / 20
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert len(counts) == 20 and chi2 < 50  # 19 dof: p ~ 1e-4 at 50


def test_bootstrap_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError):
        stationary_bootstrap_paths(rng, 5, 5, 10, 10, 3.0)
    with pytest.raises(ConfigError):
        stationary_bootstrap_paths(rng, 0, 50, 10, 10, 0.5)


# ------------------------------------------------------------------------ Monte Carlo


@pytest.mark.parametrize("vote", ["majority", "mean_prob"])
def test_batched_monte_carlo_equals_the_naive_predict_loop(members, vote):
    features, prices, models = members
    config = PortfolioEnvConfig(commission_bps=5.0, slippage_bps=5.0, lookback=2)
    mc = MonteCarloConfig(simulations=6, mean_block_bars=4, cost_jitter=0.5, seed=11)
    rows = (100, 150)
    tradable = np.random.default_rng(12).random(prices.shape) > 0.1  # stale bars: no trade
    policy = EnsemblePolicy(models, vote)
    batched = run_monte_carlo(policy, features, prices, tradable, rows, config, mc)
    naive = run_monte_carlo_naive(models, features, prices, tradable, rows, config, mc, vote=vote)
    assert np.array_equal(batched.lengths, naive.lengths)
    assert np.array_equal(batched.cost_multipliers, naive.cost_multipliers)
    assert np.array_equal(batched.final_returns, naive.final_returns)
    assert np.array_equal(batched.max_drawdowns, naive.max_drawdowns)
    assert len(set(batched.lengths.tolist())) > 1  # different lengths were read at their step
    assert np.ptp(batched.final_returns) > 0
    first = run_monte_carlo_naive(models, features, prices, tradable, rows, config, mc, limit=2)
    assert first.simulations == 2 and np.array_equal(first.lengths, batched.lengths[:2])


def test_monte_carlo_is_deterministic_for_a_seed(members):
    features, prices, models = members
    mc = MonteCarloConfig(simulations=16, mean_block_bars=5, seed=1)
    policy = EnsemblePolicy(models[:2])
    config = MODEL_CONFIG
    with pytest.raises(ValueError, match="observation size"):
        run_monte_carlo(policy, features, prices, None, (100, 160), PortfolioEnvConfig(), mc)
    a = run_monte_carlo(policy, features, prices, None, (100, 160), config, mc)
    b = run_monte_carlo(policy, features, prices, None, (100, 160), config, mc)
    c = run_monte_carlo(policy, features, prices, None, (100, 160), config, mc, seed=2)
    assert np.array_equal(a.final_returns, b.final_returns)
    assert np.array_equal(a.max_drawdowns, b.max_drawdowns)
    assert not np.array_equal(a.final_returns, c.final_returns)


def test_plan_lengths_and_multipliers_follow_the_config():
    mc = MonteCarloConfig(simulations=4000, cost_jitter=0.3, min_length_fraction=0.5, seed=0)
    plan = plan_monte_carlo(100, 200, mc)  # 100 steps
    assert plan.lengths.min() == 50 and plan.lengths.max() == 100
    assert plan.cost_multipliers.min() >= 0.7 and plan.cost_multipliers.max() < 1.3
    assert plan.cost_multipliers.mean() == pytest.approx(1.0, abs=0.01)
    assert plan.paths.shape == (4000, 101)
    assert plan.paths.min() >= 100 and plan.paths.max() <= 199


def test_no_jitter_and_full_length_run_every_simulation_over_the_whole_window():
    features, prices = market()
    mc = MonteCarloConfig(simulations=12, cost_jitter=0.0, min_length_fraction=1.0, seed=3)
    config = PortfolioEnvConfig(lookback=3)
    result = run_monte_carlo(ConstantPolicy(HOLD), features, prices, None, (50, 90), config, mc)
    assert result.lengths.tolist() == [39] * 12  # bars 50..88 acted, 89 the last valued
    assert result.cost_multipliers.tolist() == [1.0] * 12
    assert result.final_returns.tolist() == [0.0] * 12
    assert result.max_drawdowns.tolist() == [0.0] * 12
    # A window starting before the lookback starts at the first bar with a full lookback.
    early = run_monte_carlo(ConstantPolicy(HOLD), features, prices, None, (0, 40), config, mc)
    assert early.lengths.tolist() == [37] * 12


def test_buying_on_a_flat_market_loses_exactly_the_jittered_costs():
    features = np.zeros((60, 2, 3), dtype=np.float32)
    prices = np.full((60, 2), 40.0)
    config = PortfolioEnvConfig(
        trade_fraction=0.25, max_units_per_ticker=1, commission_bps=8.0, slippage_bps=2.0
    )
    mc = MonteCarloConfig(simulations=50, cost_jitter=0.5, min_length_fraction=0.2, seed=5)
    result = run_monte_carlo(ConstantPolicy(BUY, 2), features, prices, None, (10, 60), config, mc)
    # Two buys of 0.25 at the first step, then full, and the 0.5 held sold at the end: the loss
    # is those costs, and only that; the drawdown before the exit is the buys' costs.
    rate = 0.001 * result.cost_multipliers
    bought = -0.5 * rate
    expected = bought - 0.5 * rate
    np.testing.assert_allclose(result.final_returns, expected, rtol=1e-12)
    np.testing.assert_allclose(result.max_drawdowns, -bought, rtol=1e-12)
    stats = result.stats(bins=10)
    assert stats.loss_probability == 1.0
    assert stats.max_drawdown_median > 0


def test_stats_match_numpy_on_the_arrays():
    rng = np.random.default_rng(8)
    n = 1001
    result = MonteCarloResult(
        final_returns=rng.normal(0.01, 0.05, n),
        max_drawdowns=rng.uniform(0, 0.3, n),
        lengths=rng.integers(10, 20, n),
        cost_multipliers=rng.uniform(0.5, 1.5, n),
    )
    r = result.final_returns
    s = result.stats(bins=25)
    var = np.percentile(r, 5)
    assert s.simulations == n
    assert s.loss_probability == np.count_nonzero(r < 0) / n
    assert s.mean == pytest.approx(r.mean()) and s.median == np.median(r)
    assert s.std == pytest.approx(r.std())
    assert s.var_95 == var and s.var_95 < 0
    assert s.cvar_95 == pytest.approx(np.sort(r)[: int(np.sum(r <= var))].mean())
    assert s.cvar_95 < s.var_95
    assert s.max_drawdown_median == np.median(result.max_drawdowns)
    assert s.max_drawdown_p95 == np.percentile(result.max_drawdowns, 95)
    counts, edges = np.histogram(r, bins=25)
    d = s.to_dict()
    assert d["histogram"] == {"edges": edges.tolist(), "counts": counts.tolist()}
    assert sum(d["histogram"]["counts"]) == n
    assert json.loads(json.dumps(d)) == d  # plain JSON types
    assert all(type(d[k]) is float for k in ("mean", "var_95", "cvar_95", "loss_probability"))


def test_save_load_round_trip_and_concat_pool_folds(tmp_path):
    rng = np.random.default_rng(9)

    def result(n):
        return MonteCarloResult(
            rng.normal(size=n), rng.uniform(size=n), rng.integers(1, 9, n), rng.uniform(size=n)
        )

    a, b = result(5), result(7)
    path = tmp_path / "fold_0" / "montecarlo.npz"
    a.save(path)
    loaded = MonteCarloResult.load(path)
    for name in ("final_returns", "max_drawdowns", "lengths", "cost_multipliers"):
        assert np.array_equal(getattr(loaded, name), getattr(a, name))
    assert loaded.lengths.dtype == np.int64
    assert [p.name for p in path.parent.iterdir()] == ["montecarlo.npz"]  # no temporary left
    pooled = MonteCarloResult.concat([a, b])
    assert pooled.simulations == 12
    assert np.array_equal(pooled.final_returns, np.concatenate([a.final_returns, b.final_returns]))
    assert pooled.stats(5).simulations == 12
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        MonteCarloResult.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError):
        MonteCarloResult(np.zeros(2), np.zeros(3), np.zeros(2), np.zeros(2))


def test_drawdown_is_read_along_each_path_up_to_its_own_length():
    # One ticker rising by 1 % a bar, then falling 2 % a bar: always-buy with everything.
    n_bars = 41
    moves = np.where(np.arange(n_bars - 1) < 20, 1.01, 0.98)
    prices = 100.0 * np.concatenate([[1.0], np.cumprod(moves)])[:, None]
    features = np.zeros((n_bars, 1, 1), dtype=np.float32)
    config = PortfolioEnvConfig(
        trade_fraction=1.0, max_units_per_ticker=1, commission_bps=0.0, slippage_bps=0.0
    )
    mc = MonteCarloConfig(
        simulations=200, mean_block_bars=1000, min_length_fraction=0.1, cost_jitter=0.0, seed=2
    )
    result = run_monte_carlo(
        ConstantPolicy(BUY, 1), features, prices, None, (0, n_bars), config, mc
    )
    plan = plan_monte_carlo(0, n_bars - 1, mc)
    for i in range(mc.simulations):
        bars = plan.paths[i, : result.lengths[i]]
        curve = np.concatenate([[1.0], np.cumprod(prices[bars + 1, 0] / prices[bars, 0])])
        assert result.final_returns[i] == pytest.approx(curve[-1] - 1, rel=1e-12, abs=1e-14)
        dd = np.max(1 - curve / np.maximum.accumulate(curve))
        assert result.max_drawdowns[i] == pytest.approx(dd, rel=1e-12, abs=1e-14)
    assert result.max_drawdowns.max() > 0.1 and math.isfinite(result.final_returns.sum())
