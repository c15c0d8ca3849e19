"""The single trading env: API checkers, hand-computed accounting, timing at the data's end."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from engine.bench.markets import synthetic_market
from engine.env.portfolio import BUY, HOLD, SELL, PortfolioEnvConfig, PortfolioTradingEnv
from engine.errors import ConfigError, DataError


def market(n_bars=400, n_tickers=3, n_features=4, seed=0, vol=0.01):
    return synthetic_market(n_bars, n_tickers, n_features, seed, vol)


def flat_market(n_bars=50, n_tickers=2, n_features=3, price=25.0):
    features = np.zeros((n_bars, n_tickers, n_features), dtype=np.float32)
    prices = np.full((n_bars, n_tickers), price)
    features.flags.writeable = False
    prices.flags.writeable = False
    return features, prices


def acts(*per_ticker):
    return np.array(per_ticker, dtype=np.int64)


RATE_CONFIG = dict(commission_bps=10.0, slippage_bps=5.0)  # 15 bps in all


def test_single_env_passes_the_gymnasium_and_sb3_env_checkers():
    features, prices = market()
    with warnings.catch_warnings():
        # Unbounded features make both checkers warn; that is a remark, not a failure.
        warnings.simplefilter("ignore")
        gymnasium_check_env(PortfolioTradingEnv(features, prices))
        sb3_check_env(PortfolioTradingEnv(features, prices))
    # With clipped features the Box is bounded and the SB3 checker has nothing to say.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(PortfolioTradingEnv(features, prices, PortfolioEnvConfig(obs_clip=5.0)))


def test_observation_is_current_bar_features_then_weights_then_cash_fraction():
    features, prices = market(n_tickers=3, n_features=4)
    env = PortfolioTradingEnv(features, prices, PortfolioEnvConfig(lookback=2))
    obs, info = env.reset(options={"start_index": 10})
    assert obs.dtype == np.float32 and obs.shape == (2 * 3 * 4 + 3 + 1,)
    assert np.array_equal(
        obs[:24], features[9:11].reshape(-1)
    )  # [L, ticker, feature], oldest first
    assert np.array_equal(obs[24:], [0, 0, 0, 1])
    assert info == {"equity": 1.0, "cash": 1.0, "bar": 10, "costs": 0.0}
    obs, *_ = env.step(acts(BUY, HOLD, HOLD))
    assert np.array_equal(obs[:24], features[10:12].reshape(-1))
    assert obs[24] > 0 and obs[25] == 0 and obs[26] == 0
    assert obs[24:].sum() == pytest.approx(1.0, abs=1e-6)


def test_a_buy_pays_commission_and_slippage_on_its_notional():
    features, prices = market()
    config = PortfolioEnvConfig(trade_fraction=0.25, **RATE_CONFIG)
    env = PortfolioTradingEnv(features, prices, config)
    env.reset(options={"start_index": 5})
    obs, reward, terminated, truncated, info = env.step(acts(BUY, HOLD, HOLD))

    notional = 0.25 * 1.0  # a quarter of the starting equity
    fee = notional * 0.0015
    cash = 1.0 - notional - fee
    holding = notional * prices[6, 0] / prices[5, 0]
    assert info["cash"] == pytest.approx(cash, rel=1e-15)
    assert info["costs"] == pytest.approx(fee, rel=1e-15)
    assert info["equity"] == pytest.approx(cash + holding, rel=1e-15)
    assert reward == pytest.approx(math.log(cash + holding), rel=1e-12)
    assert not terminated and not truncated
    assert env.batch.units[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert obs[-4] == pytest.approx(holding / (cash + holding), rel=1e-6)


def test_a_buy_with_too_little_cash_spends_all_the_cash_pro_rata():
    features, prices = flat_market(n_tickers=2)
    config = PortfolioEnvConfig(trade_fraction=0.6, max_units_per_ticker=3, **RATE_CONFIG)
    env = PortfolioTradingEnv(features, prices, config)
    env.reset(options={"start_index": 0})
    _, _, _, _, info = env.step(acts(BUY, BUY))

    # Two units of 0.6 plus costs cost 1.2 * 1.0015 > 1: both are scaled by the same factor.
    spent_per_ticker = 0.5 / 1.0015
    assert info["cash"] == 0.0
    assert env.batch.hold[:, 0] == pytest.approx([spent_per_ticker] * 2, rel=1e-15)
    assert info["costs"] == pytest.approx(1.0 - 1.0 / 1.0015, rel=1e-12)
    assert env.batch.units[:, 0].tolist() == [1.0, 1.0]

    # With no cash left, another buy changes nothing and adds no unit.
    _, reward, _, _, info2 = env.step(acts(BUY, BUY))
    assert reward == 0.0 and info2["cash"] == 0.0 and info2["costs"] == info["costs"]
    assert env.batch.units[:, 0].tolist() == [1.0, 1.0]


def test_selling_what_is_not_held_does_nothing():
    features, prices = market()
    env = PortfolioTradingEnv(features, prices, PortfolioEnvConfig(**RATE_CONFIG))
    env.reset(options={"start_index": 3})
    obs, reward, _, _, info = env.step(acts(SELL, SELL, SELL))
    assert reward == 0.0
    assert info["cash"] == 1.0 and info["equity"] == 1.0 and info["costs"] == 0.0
    assert np.array_equal(obs[-4:], [0, 0, 0, 1])


def test_selling_the_last_unit_closes_the_position_without_dust():
    features, prices = market()
    config = PortfolioEnvConfig(trade_fraction=0.2, **RATE_CONFIG)
    env = PortfolioTradingEnv(features, prices, config)
    env.reset(options={"start_index": 3})
    env.step(acts(BUY, HOLD, HOLD))
    env.step(acts(BUY, HOLD, HOLD))
    held = env.batch.hold[0, 0]
    _, _, _, _, before = env.step(acts(SELL, HOLD, HOLD))
    # One unit of two is half the holding (valued at the close it is sold at).
    assert env.batch.units[0, 0] == 1.0
    assert env.batch.hold[0, 0] == pytest.approx(held / 2 * prices[6, 0] / prices[5, 0], rel=1e-12)
    env.step(acts(SELL, HOLD, HOLD))
    assert env.batch.units[0, 0] == 0.0 and env.batch.hold[0, 0] == 0.0


def test_a_flat_market_episode_returns_exactly_minus_the_costs():
    features, prices = flat_market(n_tickers=2)
    config = PortfolioEnvConfig(episode_length=8, trade_fraction=0.1, **RATE_CONFIG)
    env = PortfolioTradingEnv(features, prices, config)
    env.reset(options={"start_index": 0})
    plan = [
        acts(BUY, BUY),  # two units of 0.1 * V0
        acts(BUY, HOLD),  # one unit of 0.1 * V1
        acts(HOLD, SELL),  # all of ticker 1 (its only unit)
        acts(HOLD, HOLD),
        acts(SELL, HOLD),  # half of ticker 0 (two units)
        acts(SELL, SELL),  # the rest of ticker 0; nothing to sell in ticker 1
        acts(HOLD, HOLD),
        acts(SELL, SELL),  # nothing held: nothing happens
    ]
    rewards = []
    for step, action in enumerate(plan):
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        assert not terminated and truncated == (step == len(plan) - 1)

    rate = 0.0015
    v1 = 1.0 - 2 * 0.1 * rate
    ticker0 = 0.1 + 0.1 * v1
    costs = 2 * 0.1 * rate + 0.1 * v1 * rate + 0.1 * rate + ticker0 * rate
    assert info["costs"] == pytest.approx(costs, rel=1e-12)
    assert info["equity"] == pytest.approx(1.0 - costs, rel=1e-15)
    assert info["cash"] == info["equity"]
    assert sum(rewards) == pytest.approx(math.log1p(-costs), rel=1e-12)


def test_the_last_bar_of_the_data_truncates_without_reading_past_the_end():
    n_bars = 60
    features, prices = market(n_bars=n_bars)
    for lookback in (1, 3):
        config = PortfolioEnvConfig(lookback=lookback, episode_length=100)
        env = PortfolioTradingEnv(features, prices, config)
        env.reset(options={"start_index": n_bars - 3})
        _, _, _, truncated, info = env.step(acts(BUY, BUY, BUY))
        assert not truncated and info["bar"] == n_bars - 2
        obs, reward, terminated, truncated, info = env.step(acts(HOLD, HOLD, HOLD))
        # The agent acted at bar n-2; the P&L used the last price; it must not act again.
        assert truncated and not terminated and info["bar"] == n_bars - 1
        hold = env.batch.hold[:, 0]
        assert np.all(hold > 0)
        k = lookback * 3 * 4
        assert np.array_equal(obs[:k], features[n_bars - lookback :].reshape(-1))
        assert np.array_equal(obs[k:-1], (hold / info["equity"]).astype(np.float32))
        with pytest.raises(RuntimeError, match="reset"):
            env.step(acts(HOLD, HOLD, HOLD))
        # n-1 cannot be a start: there would be no step at all.
        with pytest.raises(ConfigError, match="start_index"):
            env.reset(options={"start_index": n_bars - 1})


def test_window_end_truncates_at_its_last_bar_and_episode_length_before():
    features, prices = market(n_bars=100)
    config = PortfolioEnvConfig(window_start=20, window_end=50, episode_length=10)
    env = PortfolioTradingEnv(features, prices, config)
    env.reset(options={"start_index": 45})
    steps = 0
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(acts(BUY, HOLD, SELL))
        steps += 1
    assert steps == 4 and info["bar"] == 49
    env.reset(options={"start_index": 20})
    for _ in range(10):
        _, _, _, truncated, info = env.step(acts(HOLD, HOLD, HOLD))
    assert truncated and info["bar"] == 30


def test_random_starts_stay_in_the_window_and_follow_the_seed():
    features, prices = market(n_bars=300)
    config = PortfolioEnvConfig(window_start=100, window_end=200, episode_length=30)
    env = PortfolioTradingEnv(features, prices, config)
    starts = [env.reset(seed=s)[1]["bar"] for s in range(200)]
    assert min(starts) >= 100 and max(starts) <= 200 - 1 - 30
    assert len(set(starts)) > 30
    again = PortfolioTradingEnv(features, prices, config)
    assert [again.reset(seed=s)[1]["bar"] for s in range(200)] == starts
    # Without a new seed, resets continue the same random stream.
    env.reset(seed=7)
    follow = [env.reset()[1]["bar"] for _ in range(5)]
    again.reset(seed=7)
    assert [again.reset()[1]["bar"] for _ in range(5)] == follow


def test_ruin_terminates_the_episode():
    features, prices = flat_market(n_bars=20, n_tickers=1)
    prices = prices.copy()
    prices[5:] = prices[0] * 0.05  # a 95 % crash after bar 4
    config = PortfolioEnvConfig(trade_fraction=1.0, max_units_per_ticker=1, ruin_fraction=0.5)
    env = PortfolioTradingEnv(features, prices, config)
    env.reset(options={"start_index": 2})
    assert env.step(acts(BUY))[2:4] == (False, False)
    assert env.step(acts(HOLD))[2:4] == (False, False)
    _, reward, terminated, truncated, info = env.step(acts(HOLD))
    assert terminated and not truncated
    assert info["equity"] < 0.5 and reward < math.log(0.5)


def test_index_path_observes_path_bars_and_earns_each_bars_own_next_return():
    features, prices = market(n_bars=50, n_tickers=1)
    config = PortfolioEnvConfig(trade_fraction=1.0, max_units_per_ticker=1, ruin_fraction=0.0)
    env = PortfolioTradingEnv(features, prices, config)
    path = [30, 7, 7, 12]
    obs, info = env.reset(options={"index_path": path})
    assert info["bar"] == 30 and np.array_equal(obs[:4], features[30].reshape(-1))
    _, r1, *_ = env.step(acts(BUY))
    _, r2, *_ = env.step(acts(HOLD))
    obs, r3, terminated, truncated, info = env.step(acts(HOLD))
    assert truncated and not terminated and info["bar"] == 12
    assert np.array_equal(obs[:4], features[12].reshape(-1))
    # r1 includes the buy's cost; r2 and r3 are pure bar returns of bar 7.
    assert r2 == pytest.approx(math.log(prices[8, 0] / prices[7, 0]), rel=1e-12)
    assert r3 == pytest.approx(r2, rel=1e-12)
    assert env.reset()[1]["bar"] == 30  # the path is kept until cleared
    assert env.reset(options={"index_path": None, "start_index": 3})[1]["bar"] == 3


def test_inputs_are_used_in_place_and_never_written():
    features, prices = market()  # read only: any write would raise
    env = PortfolioTradingEnv(features, prices, PortfolioEnvConfig(lookback=2))
    assert env.batch.features is features and env.batch.prices is prices
    env.reset(seed=0)
    for _ in range(50):
        env.step(env.action_space.sample())


def test_memory_mapped_inputs_work(tmp_path):
    features, prices = market(n_bars=120)
    f_path, p_path = tmp_path / "f.npy", tmp_path / "p.npy"
    np.save(f_path, features)
    np.save(p_path, prices.astype(np.float32))
    f_map = np.load(f_path, mmap_mode="r")
    p_map = np.load(p_path, mmap_mode="r")
    env = PortfolioTradingEnv(f_map, p_map)
    obs, _ = env.reset(options={"start_index": 118})
    assert np.array_equal(obs[:12], features[118].reshape(-1))
    _, _, _, truncated, _ = env.step(acts(BUY, BUY, BUY))
    assert truncated


def test_bad_arrays_and_settings_are_refused_with_a_fix():
    features, prices = market(n_bars=30)
    with pytest.raises(DataError, match="float32"):
        PortfolioTradingEnv(features.astype(np.float64), prices)
    bad = prices.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="finite and > 0"):
        PortfolioTradingEnv(features, bad)
    with pytest.raises(DataError, match="disagree"):
        PortfolioTradingEnv(features, prices[:, :2])
    with pytest.raises(ConfigError, match="widen the window"):
        PortfolioTradingEnv(features, prices, PortfolioEnvConfig(window_start=29))
    with pytest.raises(ConfigError, match="past the data end"):
        PortfolioTradingEnv(features, prices, PortfolioEnvConfig(window_end=31))
    with pytest.raises(ConfigError, match="trade_fraction"):
        PortfolioEnvConfig(trade_fraction=0.0)
    env = PortfolioTradingEnv(features, prices)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="integers in"):
        env.step(acts(3, 0, 0))
