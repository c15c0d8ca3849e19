"""Next-bar fills (``env.fill``: next_open / next_vwap / close) in the ledger, the batched VecEnv,
the out-of-sample pass and the buy-and-hold benchmark, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from stable_baselines3 import PPO

from engine.env.portfolio import (
    BUY,
    HOLD,
    SELL,
    PortfolioBatch,
    PortfolioEnvConfig,
    PortfolioTradingEnv,
)
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.errors import ConfigError, DataError
from engine.evaluation.evaluate import (
    ConstantPolicy,
    EnsemblePolicy,
    MembersPolicy,
    RandomPolicy,
    buy_and_hold,
    evaluate_policy,
    run_pass,
)
from engine.features.compute import FeatureSet

REL = 1e-12


def fill_market(n_bars=300, n_tickers=3, n_features=3, seed=0, vol=0.02, gap_vol=0.005):
    """Random-walk closes with opens one overnight gap away from the previous close and vwaps
    between open and close; random float32 features. All read only."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_bars, n_tickers, n_features)).astype(np.float32)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (n_bars, n_tickers)), axis=0))
    gaps = np.exp(rng.normal(0.0, gap_vol, (n_bars, n_tickers)))
    opens = np.empty_like(closes)
    opens[0] = closes[0]
    opens[1:] = closes[:-1] * gaps[1:]
    share = rng.uniform(0.2, 0.8, (n_bars, n_tickers))
    vwaps = opens * (1 - share) + closes * share
    for array in (features, closes, opens, vwaps):
        array.flags.writeable = False
    return features, closes, opens, vwaps


def one_ticker(closes):
    """Zero features for a single ticker, closes as [time, 1]."""
    prices = np.asarray(closes, dtype=np.float64).reshape(-1, 1)
    return np.zeros((len(prices), 1, 1), dtype=np.float32), prices


def ledger_config(**overrides):
    base = dict(
        initial_equity=1000.0,
        trade_fraction=0.3,
        max_units_per_ticker=2,
        commission_bps=10.0,
        slippage_bps=0.0,
        ruin_fraction=0.0,
        episode_length=100,
        fill="next_open",
    )
    base.update(overrides)
    return PortfolioEnvConfig(**base)


# ------------------------------------------------------------------------------ ledger by hand

CLOSES = [100.0, 101.0, 103.0, 99.0, 100.0]
OPENS = [100.0, 102.0, 102.5, 100.0, 99.5]
VWAPS = [100.0, 101.4, 102.9, 99.3, 99.8]
RATE = 0.001


def hand_buy_buy_sell_sell(c, f):
    """Equity, cash and holdings after each step of buy, buy, sell, sell on one ticker filled at
    the next bar's price ``f`` (V0 1000, trade_fraction 0.3, 2 units at most, rate 0.001)."""
    v = [1000.0]
    # step 0 (decided at close 0, filled at f[1]): one unit = 0.3 x 1000, nothing held before
    u0 = 0.3 * 1000.0
    cash = 1000.0 - u0 * (1 + RATE)
    hold = u0 * c[1] / f[1]
    v.append(cash + hold)
    rows = [(cash, hold, 1, u0)]
    # step 1: the holding is marked to f[2] first; one unit = 0.3 x the equity there
    hold_fill = hold * f[2] / c[1]
    u1 = 0.3 * (cash + hold_fill)
    assert u1 * (1 + RATE) < cash  # not scaled
    cash -= u1 * (1 + RATE)
    hold = (hold_fill + u1) * c[2] / f[2]
    v.append(cash + hold)
    rows.append((cash, hold, 2, u1))
    # step 2: sell one of two units = half the holding, at f[3]
    hold_fill = hold * f[3] / c[2]
    sold = hold_fill / 2
    cash += sold * (1 - RATE)
    hold = (hold_fill - sold) * c[3] / f[3]
    v.append(cash + hold)
    rows.append((cash, hold, 1, sold))
    # step 3: sell the last unit = all of it, at f[4]
    sold = hold * f[4] / c[3]
    cash += sold * (1 - RATE)
    v.append(cash)
    rows.append((cash, 0.0, 0, sold))
    return v, rows


def run_script(env, actions, start=0):
    """Step ``env`` through ``actions``; returns per step (info, reward, units, traded)."""
    _, info = env.reset(options={"start_index": start})
    out = [(info, None, env.batch.units[:, 0].copy(), None)]
    for row in actions:
        _, reward, _, _, info = env.step(np.asarray(row))
        out.append((info, reward, env.batch.units[:, 0].copy(), float(env.batch.traded[0])))
    return out


@pytest.mark.parametrize("fill, fill_prices", [("next_open", OPENS), ("next_vwap", VWAPS)])
def test_next_bar_fill_by_hand_buys_sells_and_marks_through_the_fill_price(fill, fill_prices):
    features, prices = one_ticker(CLOSES)
    fills = np.array(fill_prices).reshape(-1, 1)
    env = PortfolioTradingEnv(features, prices, ledger_config(fill=fill), fill_prices=fills)
    steps = run_script(env, [[BUY], [BUY], [SELL], [SELL]])
    v, rows = hand_buy_buy_sell_sell(CLOSES, fill_prices)
    assert steps[0][0]["equity"] == 1000.0
    for k, (cash, hold, units, traded) in enumerate(rows, start=1):
        info, reward, held_units, batch_traded = steps[k]
        assert info["equity"] == pytest.approx(v[k], rel=REL)
        assert info["cash"] == pytest.approx(cash, rel=REL)
        assert info["equity"] - info["cash"] == pytest.approx(hold, rel=1e-9, abs=1e-9)
        assert held_units.tolist() == [units]
        assert batch_traded == pytest.approx(traded, rel=REL)
        assert reward == pytest.approx(math.log(v[k] / v[k - 1]), rel=1e-9, abs=1e-15)
        assert info["bar"] == k
    assert info["costs"] == pytest.approx(RATE * sum(r[3] for r in rows), rel=REL)
    total = sum(s[1] for s in steps[1:])
    assert total == pytest.approx(math.log(v[-1] / 1000.0), rel=1e-9)


def test_next_open_and_next_vwap_fill_at_their_own_prices():
    features, prices = one_ticker(CLOSES)
    finals = {}
    for fill, fills in (("next_open", OPENS), ("next_vwap", VWAPS)):
        env = PortfolioTradingEnv(
            features, prices, ledger_config(fill=fill), fill_prices=np.array(fills)[:, None]
        )
        finals[fill] = run_script(env, [[BUY], [BUY], [SELL], [SELL]])[-1][0]["equity"]
    assert finals["next_open"] != pytest.approx(finals["next_vwap"], rel=1e-6)
    assert finals["next_open"] == pytest.approx(hand_buy_buy_sell_sell(CLOSES, OPENS)[0][-1])


def test_close_fill_keeps_the_old_rule_by_hand_and_ignores_fill_prices():
    features, prices = one_ticker(CLOSES)
    c = CLOSES
    v = [1000.0]
    cash = 1000.0 - 300.0 * (1 + RATE)  # bought at close 0, the price just seen
    hold = 300.0 * c[1] / c[0]
    v.append(cash + hold)
    u1 = 0.3 * v[1]  # one unit = 0.3 x the equity at close 1
    cash -= u1 * (1 + RATE)
    hold = (hold + u1) * c[2] / c[1]
    v.append(cash + hold)
    cash += hold / 2 * (1 - RATE)
    hold = hold / 2 * c[3] / c[2]
    v.append(cash + hold)
    cash += hold * (1 - RATE)
    v.append(cash)
    config = ledger_config(fill="close")
    for fills in (None, np.array(OPENS)[:, None]):  # opens are not read under close fills
        env = PortfolioTradingEnv(features, prices, config, fill_prices=fills)
        steps = run_script(env, [[BUY], [BUY], [SELL], [SELL]])
        got = [s[0]["equity"] for s in steps]
        assert got == pytest.approx(v, rel=REL)
        assert [s[2].tolist() for s in steps] == [[0], [1], [2], [1], [0]]
    assert PortfolioEnvConfig().fill == "close"


def test_buys_beyond_the_cash_at_the_fill_are_scaled_and_sells_settle_first():
    closes = np.array([[100.0, 50.0], [101.0, 49.0], [102.0, 50.0], [103.0, 51.0]])
    opens = np.array([[100.0, 50.0], [102.0, 49.5], [101.0, 50.5], [102.5, 50.5]])
    features = np.zeros((4, 2, 1), dtype=np.float32)
    config = ledger_config(trade_fraction=0.6, max_units_per_ticker=2)
    env = PortfolioTradingEnv(features, closes, config, fill_prices=opens)
    env.reset(options={"start_index": 0})
    # Step 0: two buys of 0.6 x 1000 need 1201.2 > 1000: both scaled to spend all the cash.
    _, _, _, _, info = env.step(np.array([BUY, BUY]))
    u = 1000.0 / (2 * (1 + RATE))
    hold = np.array([u * 101.0 / 102.0, u * 49.0 / 49.5])
    assert info["cash"] == 0.0
    assert env.batch.units[:, 0].tolist() == [1.0, 1.0]
    assert float(env.batch.traded[0]) == pytest.approx(2 * u, rel=REL)
    assert info["costs"] == pytest.approx(2 * u * RATE, rel=REL)
    assert info["equity"] == pytest.approx(hold.sum(), rel=REL)
    # Step 1: sell ticker 0 (all of it) at open 2, buy ticker 1 with the proceeds only.
    v1 = info["equity"]
    _, reward, _, _, info = env.step(np.array([SELL, BUY]))
    at_fill = hold * opens[2] / closes[1]
    proceeds = at_fill[0] * (1 - RATE)
    unit = 0.6 * at_fill.sum()
    assert unit * (1 + RATE) > proceeds  # the buy is scaled to the cash the sale left
    bought = proceeds / (1 + RATE)
    v2 = (at_fill[1] + bought) * closes[2, 1] / opens[2, 1]
    assert info["cash"] == 0.0
    assert env.batch.units[:, 0].tolist() == [0.0, 2.0]
    assert float(env.batch.traded[0]) == pytest.approx(at_fill[0] + bought, rel=REL)
    assert info["equity"] == pytest.approx(v2, rel=REL)
    assert reward == pytest.approx(math.log(v2 / v1), rel=1e-9)


# ------------------------------------------------------------------------------ bit for bit


def test_single_env_vec_env_and_a_batch_of_one_agree_bit_for_bit_under_next_open():
    features, prices, opens, _ = fill_market(n_bars=300, n_tickers=4, seed=3, vol=0.04)
    opens = opens.copy()
    opens[np.random.default_rng(1).random(opens.shape) < 0.03] = np.nan  # unfillable bars
    tradable = np.random.default_rng(2).random(prices.shape) > 0.15  # stale bars
    config = PortfolioEnvConfig(
        window_start=5,
        episode_length=30,
        trade_fraction=0.3,
        max_units_per_ticker=2,
        ruin_fraction=0.85,
        fill="next_open",
    )
    n_envs, seed = 5, 7
    kwargs = dict(tradable=tradable, fill_prices=opens)
    vec = BatchedPortfolioVecEnv(features, prices, n_envs, config, **kwargs)
    vec.seed(seed)
    singles = [PortfolioTradingEnv(features, prices, config, **kwargs) for _ in range(n_envs)]
    ones = [PortfolioBatch(features, prices, config, 1, **kwargs) for _ in range(n_envs)]
    row = np.zeros(1, dtype=np.int64)
    vec_obs = vec.reset()
    for i, env in enumerate(singles):
        obs, info = env.reset(seed=seed + i)
        ones[i].reset_rows(row, np.array([info["bar"]]))
        assert np.array_equal(obs, vec_obs[i]) and np.array_equal(ones[i].observe()[0], obs)
    rng = np.random.default_rng(seed)
    n_dones = n_ruins = 0
    for _ in range(300):
        actions = rng.integers(0, 3, size=(n_envs, features.shape[1]))
        vec_obs, vec_rewards, vec_dones, infos = vec.step(actions)
        for i, env in enumerate(singles):
            obs, reward, terminated, truncated, info = env.step(actions[i])
            one_reward, one_term, one_trunc = ones[i].step(actions[i : i + 1])
            assert float(one_reward[0]) == reward and vec_rewards[i] == np.float32(reward)
            assert bool(one_term[0]) == terminated and bool(one_trunc[0]) == truncated
            assert vec_dones[i] == (terminated or truncated)
            for name in ("equity", "cash", "costs", "traded"):
                assert getattr(ones[i], name)[0] == getattr(env.batch, name)[0]
            assert np.array_equal(ones[i].units[:, 0], env.batch.units[:, 0])
            assert np.array_equal(ones[i].observe()[0], obs)
            if vec_dones[i]:
                n_dones += 1
                n_ruins += terminated
                assert np.array_equal(infos[i]["terminal_observation"], obs)
                assert infos[i]["final_equity"] == info["equity"]
                obs, info = env.reset()
                ones[i].reset_rows(row, np.array([info["bar"]]))
            assert np.array_equal(obs, vec_obs[i])
    assert n_dones > 30 and n_ruins > 0


# ------------------------------------------------------------------------------ fillable bars


def test_the_tradable_mask_applies_to_the_fill_bar():
    features, prices = one_ticker([100.0, 101.0, 102.0, 103.0, 104.0, 105.0])
    opens = prices.copy()
    tradable = np.array([True, False, True, True, False, True])[:, None]
    kwargs = dict(fill_prices=opens, tradable=tradable)
    # next_open: the buy at close 0 would fill on bar 1 (stale) -> nothing; at close 1 on bar 2.
    env = PortfolioTradingEnv(features, prices, ledger_config(), **kwargs)
    steps = run_script(env, [[BUY], [BUY], [SELL], [SELL]])
    assert [s[2].tolist() for s in steps] == [[0], [0], [1], [0], [0]]
    assert steps[1][0]["cash"] == 1000.0 and steps[1][0]["costs"] == 0.0 and steps[1][3] == 0.0
    assert steps[4][3] == 0.0  # the sell at close 3 would fill on bar 4 (stale)
    # close: the order at close t fills on bar t, so bar 0 trades and bar 1 does not.
    env = PortfolioTradingEnv(features, prices, ledger_config(fill="close"), **kwargs)
    steps = run_script(env, [[BUY], [BUY], [SELL], [SELL]])
    assert [s[2].tolist() for s in steps] == [[0], [1], [1], [0], [0]]


@pytest.mark.parametrize("bad", [np.nan, 0.0, -5.0])
def test_a_bar_without_a_fill_price_cannot_be_traded_and_is_marked_at_its_close(bad):
    closes = [100.0, 101.0, 104.0, 102.0, 103.0]
    features, prices = one_ticker(closes)
    opens = np.array([100.0, 100.5, bad, 102.5, 103.5])[:, None]
    env = PortfolioTradingEnv(features, prices, ledger_config(), fill_prices=opens)
    steps = run_script(env, [[BUY], [BUY], [BUY], [HOLD]])
    assert [s[2].tolist() for s in steps] == [[0], [1], [1], [2], [2]]
    # Step 1's order would fill at the missing open of bar 2: no trade, and the holding goes
    # from close 1 to close 2 as if the fill price were the close.
    cash, hold = steps[1][0]["cash"], steps[1][0]["equity"] - steps[1][0]["cash"]
    info = steps[2][0]
    assert steps[2][3] == 0.0 and info["cash"] == cash
    assert info["equity"] == pytest.approx(cash + hold * 104.0 / 101.0, rel=REL)
    assert math.isfinite(steps[-1][0]["equity"])


def test_next_bar_fills_need_fill_prices_of_the_right_shape():
    features, prices = one_ticker(CLOSES)
    for fill in ("next_open", "next_vwap"):
        config = ledger_config(fill=fill)
        with pytest.raises(ConfigError, match="fill_prices"):
            PortfolioTradingEnv(features, prices, config)
        with pytest.raises(ConfigError, match="fill_prices"):
            BatchedPortfolioVecEnv(features, prices, 2, config)
        with pytest.raises(ConfigError, match="fill_prices"):
            run_pass(ConstantPolicy(HOLD, 1), features, prices, None, (0, 5), config)
        with pytest.raises(ConfigError, match="fill prices"):
            buy_and_hold(prices, (0, 5), config, 252.0)
        with pytest.raises(DataError, match="must be float"):
            PortfolioTradingEnv(features, prices, config, fill_prices=np.ones((5, 2)))
    with pytest.raises(ConfigError, match="fill must be one of"):
        PortfolioEnvConfig(fill="next_close")


def feature_set(opens, vwaps, tickers):
    n_time, n_tickers = opens.shape
    return FeatureSet(
        features=np.zeros((n_time, n_tickers, 1), dtype=np.float32),
        prices=np.full((n_time, n_tickers), 10.0),
        timestamps=np.arange(n_time, dtype=np.int64) * 3_600_000_000,
        tradable=np.ones((n_time, n_tickers), dtype=bool),
        opens=opens,
        vwaps=vwaps,
        tickers=tuple(tickers),
        feature_names=("f",),
    )


def test_feature_set_fill_prices_names_the_ticker_without_vwaps():
    opens = np.full((6, 3), 10.0)
    vwaps = np.full((6, 3), 10.1)
    vwaps[:, 1] = np.nan  # BBB has no vwap at all
    vwaps[2, 2] = np.nan  # CCC misses one bar only: usable
    fs = feature_set(opens, vwaps, ["AAA", "BBB", "CCC"])
    assert fs.fill_prices("close") is None
    assert fs.fill_prices("next_open") is opens
    with pytest.raises(DataError, match="BBB") as err:
        fs.fill_prices("next_vwap")
    assert "AAA" not in str(err.value) and "CCC" not in str(err.value)
    ok = feature_set(opens, np.where(np.isnan(vwaps), 10.2, vwaps), ["AAA", "BBB", "CCC"])
    assert np.array_equal(ok.fill_prices("next_vwap"), ok.vwaps)


# ------------------------------------------------------------------------------ buy and hold

BH_CLOSES = np.array(
    [[10.0, 20.0], [10.0, 20.0], [11.0, 19.0], [12.0, 21.0], [11.5, 22.0], [12.5, 21.5]]
)
BH_OPENS = np.array(
    [[10.0, 20.0], [10.0, 20.0], [10.5, 19.5], [11.8, 20.5], [11.6, 21.8], [12.2, 21.9]]
)
BH_CONFIG = PortfolioEnvConfig(
    initial_equity=1000.0, commission_bps=5.0, slippage_bps=5.0, fill="next_open"
)
ROWS = (1, 6)  # bars 1 .. 5: V_0 at close 1, orders sent then fill at the opens of bar 2


def hand_buy_and_hold(fill_bar, weight=1.0):
    """The equity curve over bars 1..5 with ticker k bought at the open of ``fill_bar[k]`` (None:
    never) for ``weight * 1000 / (2 * 1.001)`` of notional, and the metrics' inputs."""
    per = weight * 1000.0 / (2 * (1 + RATE))
    curve, holdings = [1000.0], 0.0
    for bar in range(2, 6):
        cash = 1000.0
        holdings = 0.0
        for k in range(2):
            if fill_bar[k] is not None and bar >= fill_bar[k]:
                cash -= per * (1 + RATE)
                holdings += per / BH_OPENS[fill_bar[k], k] * BH_CLOSES[bar, k]
        curve.append(cash + holdings)
    curve[-1] -= RATE * holdings
    bought = sum(b is not None for b in fill_bar)
    return np.array(curve), per * bought + holdings


def check_metrics(m, curve, traded):
    assert m.n_bars == 4
    assert m.final_equity == pytest.approx(curve[-1], rel=REL)
    assert m.total_return == pytest.approx(curve[-1] / 1000.0 - 1, rel=1e-10)
    assert m.turnover == pytest.approx(traded / curve.mean(), rel=REL)
    peaks = np.maximum.accumulate(curve)
    assert m.max_drawdown == pytest.approx(np.max(1 - curve / peaks), rel=1e-9, abs=1e-15)
    r = np.diff(np.log(curve))
    assert m.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252.0), rel=1e-9)


def test_buy_and_hold_next_open_buys_at_the_open_after_the_start_by_hand():
    m = buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, fill_prices=BH_OPENS)
    curve, traded = hand_buy_and_hold([2, 2])
    check_metrics(m, curve, traded)
    # Not the close of the start bar (the old rule).
    closes_rule = buy_and_hold(
        BH_CLOSES,
        ROWS,
        PortfolioEnvConfig(initial_equity=1000.0, commission_bps=5.0, slippage_bps=5.0),
        252.0,
    )
    assert closes_rule.final_equity != pytest.approx(m.final_equity, rel=1e-6)


def test_buy_and_hold_buys_a_stale_or_unfillable_ticker_at_its_first_fillable_bar():
    stale = np.ones(BH_CLOSES.shape, dtype=bool)
    stale[2, 1] = False  # ticker 1 stale at start + 1
    m = buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, tradable=stale, fill_prices=BH_OPENS)
    check_metrics(m, *hand_buy_and_hold([2, 3]))
    opens = BH_OPENS.copy()
    opens[2, 1] = np.nan  # no open at start + 1 ...
    opens[3, 1] = 0.0  # ... nor a usable one at start + 2
    m = buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, fill_prices=opens)
    check_metrics(m, *hand_buy_and_hold([2, 4]))
    # The start bar itself is never a fill bar, tradable or not.
    only_start = np.zeros(BH_CLOSES.shape, dtype=bool)
    only_start[1] = True
    only_start[5, 0] = True  # ticker 0 fillable only at the last bar: bought there
    m = buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, tradable=only_start, fill_prices=opens)
    check_metrics(m, *hand_buy_and_hold([5, None]))


def test_buy_and_hold_keeps_a_never_tradable_ticker_in_cash():
    tradable = np.ones(BH_CLOSES.shape, dtype=bool)
    tradable[:, 0] = False
    m = buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, tradable=tradable, fill_prices=BH_OPENS)
    check_metrics(m, *hand_buy_and_hold([None, 2]))
    tradable[:, 1] = False
    m = buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, tradable=tradable, fill_prices=BH_OPENS)
    assert m.final_equity == 1000.0 and m.turnover == 0.0 and m.total_return == 0.0


def test_buy_and_hold_with_weight_one_half_keeps_half_in_cash():
    m = buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, fill_prices=BH_OPENS, weight=0.5)
    curve, traded = hand_buy_and_hold([2, 2], weight=0.5)
    check_metrics(m, curve, traded)
    full_curve, _ = hand_buy_and_hold([2, 2])
    # Half the stake: half the move (costs included), exactly.
    assert curve[1:] - 1000.0 == pytest.approx((full_curve[1:] - 1000.0) / 2, rel=1e-10)
    zero = buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, fill_prices=BH_OPENS, weight=0.0)
    assert zero.final_equity == 1000.0
    with pytest.raises(ConfigError, match="weight"):
        buy_and_hold(BH_CLOSES, ROWS, BH_CONFIG, 252.0, fill_prices=BH_OPENS, weight=1.5)


@pytest.mark.parametrize("fill", ["next_open", "next_vwap", "close"])
def test_always_buy_with_half_units_equals_buy_and_hold_under_every_fill(fill):
    # Two tickers, trade_fraction 0.5, one unit each: the first step's two buys need 1 + rate,
    # so both are scaled to spend exactly all the cash at the fill, as buy_and_hold buys.
    features, prices, opens, vwaps = fill_market(n_bars=120, n_tickers=2, seed=4)
    fills = {"next_open": opens, "next_vwap": vwaps, "close": None}[fill]
    config = PortfolioEnvConfig(
        trade_fraction=0.5,
        max_units_per_ticker=1,
        commission_bps=10.0,
        slippage_bps=5.0,
        fill=fill,
    )
    rows = (10, 110)
    bh = buy_and_hold(prices, rows, config, 1000.0, fill_prices=fills)
    m = evaluate_policy(
        ConstantPolicy(BUY, 2), features, prices, None, rows, config, 1000.0, fill_prices=fills
    )
    assert m.n_bars == bh.n_bars == 99
    assert m.final_equity == pytest.approx(bh.final_equity, rel=REL)
    assert m.total_return == pytest.approx(bh.total_return, rel=1e-10)
    assert m.turnover == pytest.approx(bh.turnover, rel=REL)
    assert m.max_drawdown == pytest.approx(bh.max_drawdown, rel=1e-9)
    assert m.sharpe == pytest.approx(bh.sharpe, rel=1e-8)
    assert m.mean_exposure == pytest.approx(1.0, abs=0.02)


# ------------------------------------------------------------------------------ passes


def test_run_pass_on_identity_price_paths_is_the_plain_pass_bit_for_bit():
    features, prices, opens, _ = fill_market(n_bars=200, n_tickers=3, seed=8)
    opens = opens.copy()
    opens[np.random.default_rng(3).random(opens.shape) < 0.05] = np.nan
    tradable = np.random.default_rng(4).random(prices.shape) > 0.1
    config = PortfolioEnvConfig(lookback=3, trade_fraction=0.25, fill="next_open")
    rows, n = (20, 180), 6
    identity = np.broadcast_to(np.arange(*rows, dtype=np.int64), (n, rows[1] - rows[0]))
    common = dict(n=n, fill_prices=opens, cost_rates=np.linspace(0.0, 0.002, n))
    plain = run_pass(RandomPolicy(3, seed=5), features, prices, tradable, rows, config, **common)
    paths = run_pass(
        RandomPolicy(3, seed=5),
        features,
        prices,
        tradable,
        rows,
        config,
        price_paths=identity,
        **common,
    )
    for name in ("equity", "traded", "exposure", "exit_costs"):
        assert np.array_equal(getattr(plain, name), getattr(paths, name)), name
    assert plain.traded.min() > 0 and np.unique(plain.equity[:, -1]).size == n


def test_run_pass_exit_costs_are_the_rate_on_the_holdings_at_the_last_close():
    features, prices, opens, _ = fill_market(n_bars=60, n_tickers=2, seed=2)
    config = PortfolioEnvConfig(trade_fraction=0.5, max_units_per_ticker=1, fill="next_open")
    rates = np.array([0.0, 0.001, 0.004])
    result = run_pass(
        ConstantPolicy(BUY, 2),
        features,
        prices,
        None,
        (5, 55),
        config,
        n=3,
        fill_prices=opens,
        cost_rates=rates,
    )
    v0 = 1.0
    # Each portfolio bought both tickers at the opens of bar 6 with all its cash.
    per = v0 / (2 * (1 + rates))
    held = (per[:, None] * prices[54] / opens[6]).sum(axis=1)
    assert result.exit_costs == pytest.approx(rates * held, rel=REL)
    assert result.equity[:, -1] == pytest.approx(held * (1 - rates), rel=REL)
    assert result.traded == pytest.approx(2 * per + held, rel=REL)
    assert result.exposure[:, -1] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def member_models():
    features, prices, opens, _ = fill_market(n_bars=150, n_tickers=3, seed=6)
    config = PortfolioEnvConfig(lookback=2, fill="next_open")
    vec = BatchedPortfolioVecEnv(features, prices, 2, config, fill_prices=opens)
    models = [
        PPO(
            "MlpPolicy",
            vec,
            seed=s,
            n_steps=16,
            batch_size=16,
            device="cpu",
            policy_kwargs={"net_arch": [16]},
        )
        for s in range(3)
    ]
    return features, prices, opens, config, models


def test_members_policy_runs_each_member_on_its_own_portfolio(member_models):
    features, prices, opens, config, models = member_models
    rows = (10, 140)
    together = run_pass(
        MembersPolicy(models), features, prices, None, rows, config, n=3, fill_prices=opens
    )
    for i, model in enumerate(models):
        alone = run_pass(
            EnsemblePolicy([model]), features, prices, None, rows, config, fill_prices=opens
        )
        for name in ("equity", "traded", "exposure", "exit_costs"):
            assert np.array_equal(getattr(together, name)[i], getattr(alone, name)[0]), name
        own = evaluate_policy(
            EnsemblePolicy([model]), features, prices, None, rows, config, 500.0, fill_prices=opens
        )
        assert together.metrics(i, 500.0) == own
    assert np.unique(together.equity[:, -1]).size == 3  # the members really differ
    with pytest.raises(ConfigError, match="one portfolio per member"):
        run_pass(
            MembersPolicy(models), features, prices, None, rows, config, n=2, fill_prices=opens
        )
