"""What an out-of-sample result survives: the cost-sensitivity table and its break-even, the
timing-skill permutation test (calibrated on noise, finding a planted edge, blind to drift), and
the Monte Carlo comparison with the null policies. Scripted NumPy policies, the real ledger."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import MonteCarloConfig
from engine.env.portfolio import BUY, HOLD, SELL, PortfolioEnvConfig
from engine.errors import DataError
from engine.evaluation.evaluate import ConstantPolicy, RandomPolicy, run_pass
from engine.evaluation.montecarlo import (
    MonteCarloResult,
    PolicyComparison,
    compare_policies,
    run_monte_carlo,
)
from engine.evaluation.robustness import (
    COST_GRID_BPS,
    TimingTest,
    break_even,
    cost_sensitivity,
    timing_test,
)


class ScriptedPolicy:
    """The same fixed sequence of per-ticker actions for every portfolio, one row per step."""

    def __init__(self, actions):
        self.actions = np.asarray(actions, dtype=np.int64)
        self.k = 0

    def reset(self, n):
        self.k = 0

    def act(self, obs, episode_start):
        row = self.actions[min(self.k, len(self.actions) - 1)]
        self.k += 1
        return np.broadcast_to(row, (len(obs), len(row))).copy()


class FeatureSignPolicy:
    """Long (buy) a ticker when feature ``feature`` of its current bar is > 0, sell otherwise.

    Reads the observation as the portfolio module lays it out: ``[L, ticker, feature]`` values
    of the lookback bars (oldest first), then weights and the cash fraction."""

    def __init__(self, lookback, n_tickers, n_features, feature=0):
        self.shape = (lookback, n_tickers, n_features)
        self.feature = feature

    def reset(self, n):
        pass

    def act(self, obs, episode_start):
        lookback, n_tickers, n_features = self.shape
        k = lookback * n_tickers * n_features
        assert obs.shape[1] == k + n_tickers + 1
        bars = obs[:, :k].reshape(len(obs), lookback, n_tickers, n_features)
        signal = bars[:, -1, :, self.feature]  # the current bar
        return np.where(signal > 0, BUY, SELL).astype(np.int64)


def noise_market(seed, n_bars=420, n_tickers=2, n_features=2, vol=0.01, gap_vol=0.003):
    """Random-walk closes (an overnight gap then an intraday move per bar) with opens, and
    standard normal features independent of every return."""
    rng = np.random.default_rng(seed)
    gaps = rng.normal(0.0, gap_vol, (n_bars, n_tickers))
    moves = rng.normal(0.0, vol, (n_bars, n_tickers))
    closes = 100.0 * np.exp(np.cumsum(gaps + moves, axis=0))
    opens = np.empty_like(closes)
    opens[0] = closes[0]
    opens[1:] = closes[:-1] * np.exp(gaps[1:])
    features = rng.standard_normal((n_bars, n_tickers, n_features)).astype(np.float32)
    return features, closes, opens


def planted_market(seed, noise=1.0, **kwargs):
    """The noise market, with feature 0 of bar t = sign of bar t's next-bar return + noise."""
    features, closes, opens = noise_market(seed, **kwargs)
    nxt = np.zeros_like(closes)
    nxt[:-1] = np.log(closes[1:] / closes[:-1])
    rng = np.random.default_rng(seed + 10_000)
    features[:, :, 0] = np.sign(nxt) + rng.normal(0.0, noise, nxt.shape)
    return features, closes, opens


TIMING_CONFIG = PortfolioEnvConfig(
    lookback=2,
    trade_fraction=0.5,
    max_units_per_ticker=1,
    commission_bps=1.0,
    slippage_bps=1.0,
    fill="next_open",
)
ROWS = (10, 410)  # 400 bars: 399 acted on


# ------------------------------------------------------------------------------ break even


def test_break_even_interpolates_linearly_between_the_grid_points_around_the_crossing():
    costs = np.array([0.0, 1.0, 2.0, 4.0])
    value, note = break_even(costs, np.array([0.03, 0.01, -0.01, -0.05]))
    assert value == pytest.approx(1.5, rel=1e-12) and "1.5 bps" in note
    value, _ = break_even(costs, np.array([0.03, 0.02, 0.005, -0.01]))
    assert value == pytest.approx(2.0 + 2.0 * 0.005 / 0.015, rel=1e-12)
    value, _ = break_even(costs, np.array([0.02, 0.0, -0.01, -0.02]))  # zero on a grid point
    assert value == 1.0
    value, _ = break_even(costs, np.array([0.01, -0.01, 0.02, -0.03]))  # the first crossing
    assert value == pytest.approx(0.5, rel=1e-12)


def test_break_even_is_none_without_profit_at_the_lowest_cost_or_above_the_whole_grid():
    costs = np.array([0.0, 1.0, 2.0, 4.0])
    value, note = break_even(costs, np.array([0.0, -0.01, -0.02, -0.04]))
    assert value is None and "no profit even at 0 bps" in note
    value, note = break_even(costs, np.array([-0.01, 0.02, 0.01, 0.0]))
    assert value is None and "no profit" in note
    value, note = break_even(costs, np.array([0.04, 0.03, 0.02, 0.001]))
    assert value is None and "profitable up to at least 4 bps" in note


# ------------------------------------------------------------------------------ cost tables


def step_market(closes, n_tickers=1):
    """One ticker, opens equal to the closes, zero features."""
    prices = np.asarray(closes, dtype=np.float64).reshape(-1, n_tickers)
    return np.zeros((*prices.shape, 1), dtype=np.float32), prices, prices.copy()


COST_CONFIG = PortfolioEnvConfig(
    trade_fraction=0.5,
    max_units_per_ticker=1,
    commission_bps=2.0,
    slippage_bps=1.0,
    fill="next_open",
)


def test_cost_sensitivity_on_a_flat_market_loses_the_rate_on_what_it_traded():
    # Buy half the equity, sell it the next bar, on flat prices: traded = 1 x V0, and the return
    # is -traded x rate at every cost level; nothing is profitable, so there is no break-even.
    features, prices, opens = step_market([100.0] * 8)
    policy = ScriptedPolicy([[BUY], [SELL], [HOLD]])
    table = cost_sensitivity(
        policy, features, prices, None, (0, 8), COST_CONFIG, [0.0, 1.0, 2.0, 7.0], fill_prices=opens
    )
    assert table["multipliers"] == [0.0, 1.0, 2.0, 7.0]
    assert table["cost_bps"] == [0.0, 3.0, 6.0, 21.0]
    assert table["total_return"] == pytest.approx([0.0, -3e-4, -6e-4, -21e-4], rel=1e-12, abs=0)
    grid = np.array(table["grid_bps"])
    assert grid.tolist() == sorted(set(COST_GRID_BPS) | {21.0})
    assert np.array(table["grid_return"]) == pytest.approx(-grid * 1e-4, rel=1e-12, abs=1e-15)
    assert table["break_even_bps"] is None and "no profit" in table["break_even_note"]
    json.dumps(table)


def test_cost_sensitivity_finds_the_break_even_of_a_known_linear_return():
    # Buy half the equity at 100 (open of bar 1), sell it at 101 (open of bar 3):
    # V_end = 1 - 0.5 (1 + r) + 0.505 (1 - r), a return of 0.005 - 1.005 r.
    features, prices, opens = step_market([100.0, 100.0, 100.0, 101.0, 101.0, 101.0])
    policy = ScriptedPolicy([[BUY], [HOLD], [SELL], [HOLD]])
    table = cost_sensitivity(
        policy, features, prices, None, (0, 6), COST_CONFIG, [0.0, 1.0, 2.0, 4.0], fill_prices=opens
    )
    expected = [0.005 - 1.005 * c * 1e-4 for c in (0.0, 3.0, 6.0, 12.0)]
    assert table["cost_bps"] == [0.0, 3.0, 6.0, 12.0]
    assert table["total_return"] == pytest.approx(expected, rel=1e-10)
    assert table["break_even_bps"] == pytest.approx(0.005 / 1.005 * 1e4, rel=1e-9)  # 49.75 bps
    assert "49.8 bps" in table["break_even_note"]


def test_cost_sensitivity_re_runs_a_policy_that_reacts_to_its_own_costs():
    # A policy that reads its cash fraction: it sells when that fraction is above 0.5, buys
    # otherwise, so at every cost level it is a real re-run; the rows must each equal a pass at
    # that single cost.
    features, prices, opens = noise_market(3, n_bars=80, n_tickers=1, n_features=1)

    class CashAware:
        def reset(self, n):
            pass

        def act(self, obs, episode_start):
            return np.where(obs[:, -1:] > 0.5, BUY, SELL).astype(np.int64)

    table = cost_sensitivity(
        CashAware(), features, prices, None, (5, 75), COST_CONFIG, [1.0, 10.0], fill_prices=opens
    )
    for bps, total in zip(table["cost_bps"], table["total_return"], strict=True):
        config = PortfolioEnvConfig(
            trade_fraction=0.5,
            max_units_per_ticker=1,
            commission_bps=bps,
            slippage_bps=0.0,
            fill="next_open",
        )
        alone = run_pass(CashAware(), features, prices, None, (5, 75), config, fill_prices=opens)
        assert total == pytest.approx(alone.equity[0, -1] / alone.equity[0, 0] - 1, rel=1e-12)


# ------------------------------------------------------------------------------ timing test


def test_timing_test_rejects_at_about_its_nominal_rate_on_noise():
    # Features independent of the random-walk returns: p must be about uniform.
    policy = FeatureSignPolicy(lookback=2, n_tickers=2, n_features=2)
    p_returns, p_sharpes = [], []
    for seed in range(60):
        features, closes, opens = noise_market(seed)
        test = timing_test(
            policy, features, closes, None, ROWS, TIMING_CONFIG, 99, 10, seed, fill_prices=opens
        )
        p_returns.append(test.p_return)
        p_sharpes.append(test.p_sharpe)
    for p in (np.array(p_returns), np.array(p_sharpes)):
        assert np.all((p >= 0.01) & (p <= 1.0))
        assert 0.0 <= np.mean(p <= 0.05) <= 0.15
        assert np.mean(p <= 0.5) == pytest.approx(0.5, abs=0.2)
        assert np.mean(p) == pytest.approx(0.5, abs=0.12)


def test_timing_test_finds_a_planted_edge():
    policy = FeatureSignPolicy(lookback=2, n_tickers=2, n_features=2)
    for seed in range(3):
        features, closes, opens = planted_market(seed)
        test = timing_test(
            policy, features, closes, None, ROWS, TIMING_CONFIG, 199, 10, seed, fill_prices=opens
        )
        assert test.p_return < 0.01 and test.p_sharpe < 0.01
        assert test.observed_return > np.max(test.null_returns)
        assert test.observed_return > 0.5  # the edge is worth a lot before costs of 2 bps


def test_timing_test_reads_the_feature_the_policy_is_told_to_read():
    # The planted edge sits in feature 0; a policy reading feature 1 (noise) has no edge.
    features, closes, opens = planted_market(1)
    blind = FeatureSignPolicy(lookback=2, n_tickers=2, n_features=2, feature=1)
    test = timing_test(
        blind, features, closes, None, ROWS, TIMING_CONFIG, 99, 10, 1, fill_prices=opens
    )
    assert test.p_return > 0.05


def test_the_real_order_of_the_timing_test_is_the_plain_pass():
    features, closes, opens = noise_market(5)
    policy = FeatureSignPolicy(lookback=2, n_tickers=2, n_features=2)
    test = timing_test(
        policy, features, closes, None, ROWS, TIMING_CONFIG, 19, 10, 0, fill_prices=opens
    )
    plain = run_pass(policy, features, closes, None, ROWS, TIMING_CONFIG, fill_prices=opens)
    assert test.observed_return == plain.equity[0, -1] / plain.equity[0, 0] - 1.0
    assert np.array_equal(test.returns, plain.simple_returns()[0])
    assert test.timestamps.tolist() == list(range(10, 409)) and test.block_bars == 10


def test_never_trading_gets_p_one():
    features, closes, opens = noise_market(0)
    test = timing_test(
        ConstantPolicy(HOLD, 2),
        features,
        closes,
        None,
        ROWS,
        TIMING_CONFIG,
        99,
        10,
        0,
        fill_prices=opens,
    )
    assert test.p_return == 1.0 and test.p_sharpe == 1.0
    assert test.observed_return == 0.0 and not test.null_returns.any()


def test_always_long_filled_at_the_close_gets_p_one_drift_is_not_timing():
    # Fully invested at the first close: every shuffle earns the same product of moves.
    config = PortfolioEnvConfig(lookback=2, trade_fraction=1.0, max_units_per_ticker=1)
    for seed in range(5):
        features, closes, _ = noise_market(seed, n_tickers=1)
        closes = closes * np.exp(0.002 * np.arange(len(closes)))[:, None]  # a strong drift
        test = timing_test(
            ConstantPolicy(BUY, 1), features, closes, None, ROWS, config, 99, 10, seed
        )
        assert test.observed_return > 0.5
        assert test.p_return == 1.0


def test_always_long_with_next_open_fills_is_not_judged_skilled():
    # Found by this test: with every bar shuffled, the first order filled at the open after the
    # first permuted bar b0, so that bar's overnight gap open[b0 + 1] / close[b0] was never
    # earned and differed from shuffle to shuffle (p about uniform: 0.04 on seed 35). The first
    # block now stays in place, so every shuffle enters the market the same way. The same holds
    # for a gradual build-up (trade_fraction 0.1, three units: the default config), below.
    config = PortfolioEnvConfig(
        lookback=2, trade_fraction=1.0, max_units_per_ticker=1, fill="next_open"
    )
    ps = []
    for seed in [35, *range(8)]:
        features, closes, opens = noise_market(seed, n_tickers=1)
        test = timing_test(
            ConstantPolicy(BUY, 1),
            features,
            closes,
            None,
            ROWS,
            config,
            99,
            10,
            seed,
            fill_prices=opens,
        )
        ps.append(test.p_return)
    assert ps == [1.0] * len(ps), f"always long judged on timing: p_return per seed {ps}"
    default = PortfolioEnvConfig(lookback=2, fill="next_open")  # 0.1 a unit, up to 3 units
    for seed in range(4):
        features, closes, opens = noise_market(seed, n_tickers=1)
        test = timing_test(
            ConstantPolicy(BUY, 1),
            features,
            closes,
            None,
            ROWS,
            default,
            99,
            10,
            seed,
            fill_prices=opens,
        )
        assert test.p_return == 1.0


def test_timing_test_save_load_round_trip(tmp_path):
    features, closes, opens = planted_market(2)
    policy = FeatureSignPolicy(lookback=2, n_tickers=2, n_features=2)
    stamps = 1_600_000_000_000_000 + np.arange(len(closes), dtype=np.int64) * 3_600_000_000
    test = timing_test(
        policy,
        features,
        closes,
        None,
        ROWS,
        TIMING_CONFIG,
        39,
        12,
        4,
        fill_prices=opens,
        timestamps=stamps,
    )
    path = tmp_path / "timing.npz"
    test.save(path)
    back = TimingTest.load(path)
    for name in ("null_returns", "null_sharpes", "returns", "timestamps"):
        assert np.array_equal(getattr(back, name), getattr(test, name)), name
        assert getattr(back, name).dtype == getattr(test, name).dtype
    assert back.observed_return == test.observed_return
    assert back.observed_sharpe == test.observed_sharpe
    assert back.block_bars == 12 and back.p_return == test.p_return
    assert back.to_dict() == test.to_dict()
    assert test.to_dict()["permutations"] == 39
    assert np.array_equal(back.timestamps, stamps[10:409])
    json.dumps(back.to_dict())
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(DataError, match="not a timing-test result"):
        TimingTest.load(bad)


# ------------------------------------------------------------------------------ Monte Carlo

MC = MonteCarloConfig(simulations=40, mean_block_bars=5, cost_jitter=0.5, seed=3)


def test_the_cash_stand_in_equals_the_cash_null_path_by_path():
    features, closes, opens = noise_market(1, n_bars=160)
    comparison = compare_policies(
        ConstantPolicy(HOLD, 2),
        features,
        closes,
        None,
        (20, 150),
        TIMING_CONFIG,
        MC,
        fill_prices=opens,
    )
    assert set(comparison.nulls) == {"cash", "always_long", "random"}
    cash = comparison.nulls["cash"]
    assert np.array_equal(comparison.ensemble.final_returns, cash.final_returns)
    assert not comparison.ensemble.final_returns.any()
    summary = comparison.summary()
    assert summary["nulls"]["cash"]["excess_mean"] == 0.0
    assert summary["nulls"]["cash"]["excess_median"] == 0.0
    assert summary["nulls"]["cash"]["beat_probability"] == 0.0
    # The random null is RandomPolicy(seed + 1) on the same plan.
    random = run_monte_carlo(
        RandomPolicy(2, MC.seed + 1),
        features,
        closes,
        None,
        (20, 150),
        TIMING_CONFIG,
        MC,
        fill_prices=opens,
    )
    assert np.array_equal(comparison.nulls["random"].final_returns, random.final_returns)
    assert summary["nulls"]["random"]["beat_probability"] == np.mean(random.final_returns < 0)
    json.dumps(summary)


def test_monte_carlo_final_returns_are_net_of_exit_costs():
    # Flat prices; always long puts all the cash in at the first fill (scaled to 1 / (1 + r))
    # and is sold at the end at its own rate r: final return (1 - r) / (1 + r) - 1.
    features, prices, opens = step_market([50.0] * 40)
    config = PortfolioEnvConfig(
        trade_fraction=1.0,
        max_units_per_ticker=1,
        commission_bps=20.0,
        slippage_bps=5.0,
        fill="next_open",
    )
    comparison = compare_policies(
        ConstantPolicy(BUY, 1),
        features,
        prices,
        None,
        (0, 40),
        config,
        MC,
        fill_prices=opens,
        nulls=["always_long", "cash"],
    )
    result = comparison.ensemble
    r = config.cost_rate * result.cost_multipliers
    assert result.final_returns == pytest.approx((1 - r) / (1 + r) - 1, rel=1e-12)
    assert np.array_equal(comparison.nulls["always_long"].final_returns, result.final_returns)
    assert comparison.summary()["nulls"]["cash"]["beat_probability"] == 0.0


def comparison(seed, nulls):
    def result(k):
        rng = np.random.default_rng(seed * 10 + k)
        return MonteCarloResult(
            final_returns=rng.normal(0, 0.1, 7),
            max_drawdowns=rng.uniform(0, 0.3, 7),
            lengths=rng.integers(5, 50, 7),
            cost_multipliers=rng.uniform(0.5, 1.5, 7),
        )

    return PolicyComparison(
        ensemble=result(0), nulls={name: result(k + 1) for k, name in enumerate(nulls)}
    )


def same(a, b):
    return all(
        np.array_equal(getattr(a, n), getattr(b, n)) and getattr(a, n).dtype == getattr(b, n).dtype
        for n in ("final_returns", "max_drawdowns", "lengths", "cost_multipliers")
    )


def test_policy_comparison_save_load_concat_and_the_old_reader(tmp_path):
    first = comparison(1, ["cash", "random", "always_long"])
    path = tmp_path / "mc.npz"
    first.save(path)
    back = PolicyComparison.load(path)
    assert same(back.ensemble, first.ensemble)
    assert set(back.nulls) == set(first.nulls)
    assert all(same(back.nulls[n], first.nulls[n]) for n in first.nulls)
    assert back.summary() == first.summary()
    assert same(MonteCarloResult.load(path), first.ensemble)  # a plain Monte Carlo reader
    # A plain MonteCarloResult file is a comparison without nulls.
    first.ensemble.save(tmp_path / "plain.npz")
    plain = PolicyComparison.load(tmp_path / "plain.npz")
    assert plain.nulls == {} and same(plain.ensemble, first.ensemble)

    second = comparison(2, ["random", "cash"])
    pooled = PolicyComparison.concat([first, second])
    assert sorted(pooled.nulls) == ["cash", "random"]
    assert pooled.ensemble.simulations == 14
    for name in ("cash", "random"):
        assert np.array_equal(
            pooled.nulls[name].final_returns,
            np.concatenate([first.nulls[name].final_returns, second.nulls[name].final_returns]),
        )
    assert np.array_equal(
        pooled.ensemble.lengths, np.concatenate([first.ensemble.lengths, second.ensemble.lengths])
    )
    with pytest.raises(ValueError, match="nothing"):
        PolicyComparison.concat([])
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError):
        PolicyComparison.load(tmp_path / "junk.npz")
