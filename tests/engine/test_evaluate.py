"""Ensemble votes, the out-of-sample pass and its metrics, against hand computations."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO

from engine.bench.markets import synthetic_market
from engine.env.portfolio import BUY, HOLD, SELL, PortfolioEnvConfig, PortfolioTradingEnv
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.errors import ConfigError, DataError
from engine.evaluation.evaluate import (
    EnsemblePolicy,
    action_logits,
    bars_per_year,
    buy_and_hold,
    combine_votes,
    distribution_probs,
    equity_metrics,
    evaluate_policy,
    logits_to_probs,
    majority_vote,
    mean_prob_vote,
)

N_TICKERS = 3


def market(n_bars=120, n_tickers=N_TICKERS, n_features=4, seed=0, vol=0.01):
    return synthetic_market(n_bars, n_tickers, n_features, seed, vol)


def trend_market(n_bars, growth, n_features=2):
    """Prices p[t, i] = 100 * (1 + growth[i]) ** t; zero features."""
    growth = np.asarray(growth, dtype=np.float64)
    t = np.arange(n_bars, dtype=np.float64)[:, None]
    prices = 100.0 * (1.0 + growth[None, :]) ** t
    features = np.zeros((n_bars, len(growth), n_features), dtype=np.float32)
    return features, prices


class ConstantPolicy:
    """Always the same action for every ticker; records its resets."""

    def __init__(self, action, n_tickers):
        self.action = action
        self.n_tickers = n_tickers
        self.resets = []

    def reset(self, n):
        self.resets.append(n)

    def act(self, obs, episode_start):
        return np.full((obs.shape[0], self.n_tickers), self.action, dtype=np.int64)


class ScriptedPolicy:
    """Plays a fixed sequence of action rows, one per step."""

    def __init__(self, actions):
        self.actions = actions
        self.k = 0

    def reset(self, n):
        self.k = 0

    def act(self, obs, episode_start):
        assert bool(episode_start[0]) == (self.k == 0)
        row = self.actions[self.k]
        self.k += 1
        return row.reshape(1, -1)


@pytest.fixture(scope="module")
def tiny_models():
    features, prices = market()
    vec = BatchedPortfolioVecEnv(features, prices, 2, PortfolioEnvConfig())
    kwargs = dict(n_steps=16, batch_size=16, device="cpu")
    ppos = [
        PPO("MlpPolicy", vec, seed=s, policy_kwargs={"net_arch": [16, 16]}, **kwargs)
        for s in range(3)
    ]
    lstm = RecurrentPPO(
        "MlpLstmPolicy",
        vec,
        seed=7,
        policy_kwargs={"net_arch": [16], "lstm_hidden_size": 8},
        **kwargs,
    )
    return features, prices, ppos, lstm


# ------------------------------------------------------------------------------ votes


def test_majority_vote_counts_per_ticker_and_breaks_ties_toward_hold_then_lowest():
    members = [
        np.array([[SELL, BUY, SELL, BUY, SELL]]),
        np.array([[SELL, BUY, BUY, HOLD, HOLD]]),
        np.array([[BUY, SELL, HOLD, SELL, BUY]]),
    ]
    # ticker 0: 2 sells; 1: 2 buys; 2: one each -> hold; 3: one each -> hold; 4: one each -> hold
    assert majority_vote(members).tolist() == [[SELL, BUY, HOLD, HOLD, HOLD]]
    two = [np.array([[SELL, SELL, BUY]]), np.array([[BUY, HOLD, BUY]])]
    # sell vs buy without hold: the lowest (sell); sell vs hold: hold; unanimous buy: buy
    assert majority_vote(two).tolist() == [[SELL, HOLD, BUY]]
    assert majority_vote(two).dtype == np.int64


def test_mean_prob_vote_averages_probabilities_and_ties_go_to_hold():
    a = np.array([[[0.6, 0.1, 0.3], [0.5, 0.0, 0.5], [0.2, 0.4, 0.4]]])
    b = np.array([[[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.2, 0.4, 0.4]]])
    # means: [0.3, 0.3, 0.4] -> buy; [0.5, 0, 0.5] -> sell (lowest, no hold); [.2, .4, .4] -> hold
    assert mean_prob_vote([a, b]).tolist() == [[BUY, SELL, HOLD]]
    assert combine_votes(np.array([1, 1, 1])) == HOLD
    assert combine_votes(np.array([0.1, 0.2, 0.7])) == BUY


def test_logits_path_equals_sb3_distribution_for_ppo_and_recurrent_ppo(tiny_models):
    _, _, ppos, lstm = tiny_models
    obs = torch.as_tensor(np.random.default_rng(1).standard_normal((5, 16)), dtype=torch.float32)
    with torch.no_grad():
        logits, _ = action_logits(ppos[0].policy, obs)
        expected = distribution_probs(ppos[0].policy.get_distribution(obs))
        assert torch.equal(logits_to_probs(logits, N_TICKERS), expected)

        zeros = torch.zeros((1, 5, 8))
        states = (zeros + 0.3, zeros - 0.2)
        starts = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
        logits, new_states = action_logits(lstm.policy, obs, states, starts)
        dist, ref_states = lstm.policy.get_distribution(obs, states, starts)
        assert torch.equal(logits_to_probs(logits, N_TICKERS), distribution_probs(dist))
        assert torch.equal(new_states[0], ref_states[0])
        assert torch.equal(new_states[1], ref_states[1])


def test_mode_from_raw_logits_is_sb3s_mode_near_ties_included(monkeypatch):
    from stable_baselines3.common.distributions import MultiCategoricalDistribution

    import engine.evaluation.evaluate as evaluate

    rng = np.random.default_rng(0)
    n_tickers = 5
    dist = MultiCategoricalDistribution([3] * n_tickers)
    one_ulp = np.nextafter(np.float32(1.0), np.float32(2.0))
    crafted = np.array(
        [
            [0.5, 0.5, 0.1],  # exact tie: the first
            [0.2, 0.2, 0.2],
            [1.0, one_ulp, -3.0],  # one ulp apart: SB3's probabilities may tie
            [-2.0, 30.0, 30.0 + 1e-5],
            [0.01, 0.0100001, 0.0],
        ],
        dtype=np.float32,
    )
    # Pairs one ulp apart: on ~5 % of them SB3's float32 probabilities tie and it takes the
    # first action where the raw argmax would take the second.
    x = (rng.standard_normal((300, n_tickers)) * 3).astype(np.float32)
    ulp_pairs = np.stack(
        [x, np.nextafter(x, np.float32(np.inf)), rng.standard_normal(x.shape).astype(np.float32)],
        axis=-1,
    ).reshape(300, -1)
    near = np.concatenate([crafted.reshape(1, -1), ulp_pairs])
    raw_mode = near.reshape(-1, n_tickers, 3).argmax(-1)
    sb3_mode = dist.proba_distribution(torch.as_tensor(near)).mode().numpy()
    assert (raw_mode != sb3_mode).sum() >= 20  # the raw argmax alone would be wrong there
    recomputed = []
    real = evaluate.logits_to_probs

    def counting(logits, n):
        recomputed.append(logits.shape[0])
        return real(logits, n)

    monkeypatch.setattr(evaluate, "logits_to_probs", counting)
    for scale in (0.01, 1.0, 30.0):
        random = torch.as_tensor((rng.standard_normal((2000, 15)) * scale).astype(np.float32))
        expected = dist.proba_distribution(random).mode().numpy()
        assert np.array_equal(evaluate.logits_to_mode(random, n_tickers), expected)
    # Random logits almost never need SB3's exact path...
    assert sum(recomputed) < 60
    # ... near ties do, and get SB3's answer.
    expected = dist.proba_distribution(torch.as_tensor(near)).mode().numpy()
    assert np.array_equal(evaluate.logits_to_mode(torch.as_tensor(near), n_tickers), expected)


def test_ensemble_majority_equals_the_vote_of_each_members_predict(tiny_models):
    _, _, ppos, _ = tiny_models
    obs = np.random.default_rng(2).standard_normal((64, 16)).astype(np.float32)
    policy = EnsemblePolicy(ppos, "majority")
    policy.reset(64)
    actions = policy.act(obs, np.ones(64, dtype=bool))
    predicted = [m.predict(obs, deterministic=True)[0] for m in ppos]
    assert actions.shape == (64, N_TICKERS) and actions.dtype == np.int64
    assert np.array_equal(actions, majority_vote(predicted))
    # A single member is its own majority.
    alone = EnsemblePolicy(ppos[:1])
    assert np.array_equal(alone.act(obs, np.zeros(64, dtype=bool)), predicted[0])


def test_ensemble_mean_prob_takes_the_argmax_of_the_mean_distribution(tiny_models):
    _, _, ppos, _ = tiny_models
    obs = np.random.default_rng(3).standard_normal((32, 16)).astype(np.float32)
    policy = EnsemblePolicy(ppos, "mean_prob")
    with torch.no_grad():
        probs = [
            distribution_probs(m.policy.get_distribution(torch.as_tensor(obs)))
            .numpy()
            .astype(np.float64)
            for m in ppos
        ]
    expected = np.mean(probs, axis=0).argmax(axis=-1)
    assert np.array_equal(policy.act(obs, np.zeros(32, dtype=bool)), expected)


def test_recurrent_member_keeps_states_per_portfolio_and_resets_them_on_episode_start(
    tiny_models,
):
    _, _, _, lstm = tiny_models
    rng = np.random.default_rng(4)
    policy = EnsemblePolicy([lstm])
    with pytest.raises(RuntimeError, match="reset"):
        policy.act(np.zeros((2, 16), dtype=np.float32), np.ones(2, dtype=bool))
    policy.reset(2)
    state = None
    starts = [[True, True], [False, False], [False, False], [True, False], [False, True]]
    seen = []
    for start in starts:
        obs = rng.standard_normal((2, 16)).astype(np.float32)
        seen.append(obs)
        episode_start = np.array(start)
        ours = policy.act(obs, episode_start)
        ref, state = lstm.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        assert np.array_equal(ours, ref)
        assert np.array_equal(policy._states[0][0].numpy(), state[0])

    def fresh_run(row, steps):
        """LSTM hidden state of portfolio ``row`` run alone from zeros over ``steps``."""
        h = (torch.zeros((1, 1, 8)), torch.zeros((1, 1, 8)))
        with torch.no_grad():
            for k in steps:
                obs = torch.as_tensor(seen[k][row : row + 1])
                _, h = action_logits(lstm.policy, obs, h, torch.tensor([float(k == steps[0])]))
        return h[0][:, 0].numpy()

    hidden = policy._states[0][0].numpy()  # [layer, portfolio, unit]
    # Row 0 restarted at step 3, row 1 at step 4: their states forget what came before.
    np.testing.assert_allclose(hidden[:, 0], fresh_run(0, [3, 4]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(hidden[:, 1], fresh_run(1, [4]), rtol=0, atol=1e-6)
    assert not np.allclose(hidden[:, 0], fresh_run(0, [0, 1, 2, 3, 4]), rtol=0, atol=1e-4)
    policy.reset(2)
    assert not policy._states[0][0].any() and not policy._states[0][1].any()


def test_ensemble_rejects_bad_members_and_votes(tiny_models):
    _, _, ppos, _ = tiny_models
    with pytest.raises(ConfigError, match="at least one"):
        EnsemblePolicy([])
    with pytest.raises(ConfigError, match="vote"):
        EnsemblePolicy(ppos, vote="unanimous")
    other_features, other_prices = market(n_tickers=2)
    other = PPO(
        "MlpPolicy",
        BatchedPortfolioVecEnv(other_features, other_prices, 1),
        n_steps=16,
        batch_size=16,
        device="cpu",
    )
    with pytest.raises(ConfigError, match="action space"):
        EnsemblePolicy([ppos[0], other])


# ------------------------------------------------------------------------------ metrics


def test_equity_metrics_on_a_known_curve():
    curve = np.array([1.0, 1.1, 0.99, 1.2])
    m = equity_metrics(curve, traded_notional=2.5, bars_per_year=100.0)
    r = np.diff(np.log(curve))
    assert m.total_return == pytest.approx(0.2)
    assert m.max_drawdown == pytest.approx(1 - 0.99 / 1.1)
    assert m.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * 10.0)
    assert m.turnover == pytest.approx(2.5 / curve.mean())
    assert m.n_bars == 3 and m.final_equity == 1.2
    assert m.to_dict()["n_bars"] == 3
    flat = equity_metrics(np.ones(5), 0.0, 100.0)
    assert (flat.sharpe, flat.max_drawdown, flat.total_return) == (0.0, 0.0, 0.0)


def test_bars_per_year_counts_intervals_over_the_span():
    hourly = np.arange(8767, dtype=np.int64) * 3_600_000_000  # exactly 365.25 days
    assert bars_per_year(hourly) == pytest.approx(8766.0)
    assert bars_per_year(hourly[::2]) == pytest.approx(4383.0)
    with pytest.raises(DataError):
        bars_per_year(np.array([5], dtype=np.int64))


def test_evaluate_an_always_hold_policy_keeps_the_initial_equity():
    features, prices = market()
    config = PortfolioEnvConfig(initial_equity=1.0)
    policy = ConstantPolicy(HOLD, N_TICKERS)
    m = evaluate_policy(policy, features, prices, None, (40, 100), config, 1764.0)
    assert policy.resets == [1]
    assert m.final_equity == 1.0 and m.total_return == 0.0 and m.turnover == 0.0
    assert m.max_drawdown == 0.0 and m.sharpe == 0.0 and m.n_bars == 59


def test_always_buy_with_one_unit_of_half_the_equity_is_buy_and_hold():
    # Two tickers, trade_fraction 0.5, one unit each: the first step's two buys need 1 + rate,
    # so both are scaled down to spend exactly all the cash, like buy_and_hold; nothing after.
    features, prices = trend_market(30, [0.001, 0.002])
    config = PortfolioEnvConfig(
        trade_fraction=0.5, max_units_per_ticker=1, commission_bps=10.0, slippage_bps=5.0
    )
    rate = 0.0015
    m = evaluate_policy(ConstantPolicy(BUY, 2), features, prices, None, (5, 25), config, 1000.0)
    bh = buy_and_hold(prices, (5, 25), config, 1000.0)
    steps = 19
    per_ticker = 1.0 / (2 * (1 + rate))
    held = per_ticker * (1.001**steps + 1.002**steps)
    expected_final = held * (1 - rate)  # sold at the last close, paying the rate
    for metrics in (m, bh):
        assert metrics.n_bars == steps
        assert metrics.final_equity == pytest.approx(expected_final, rel=1e-12)
        # Rising prices: the only drawdown is the cost paid at the first step.
        assert metrics.max_drawdown == pytest.approx(1 - per_ticker * (1.001 + 1.002), rel=1e-9)
        curve = np.concatenate(
            [[1.0], per_ticker * (1.001 ** np.arange(1, 20) + 1.002 ** np.arange(1, 20))]
        )
        curve[-1] = expected_final
        traded = 2 * per_ticker + held
        assert metrics.turnover == pytest.approx(traded / curve.mean(), rel=1e-12)
    assert m.sharpe == pytest.approx(bh.sharpe, rel=1e-6)


def test_always_buy_on_a_flat_market_pays_three_units_of_costs_and_counts_their_turnover():
    features = np.zeros((20, 1, 2), dtype=np.float32)
    prices = np.full((20, 1), 50.0)
    config = PortfolioEnvConfig(
        trade_fraction=0.1, max_units_per_ticker=3, commission_bps=20.0, slippage_bps=0.0
    )
    rate = 0.002
    m = evaluate_policy(ConstantPolicy(BUY, 1), features, prices, None, (0, 11), config, 252.0)
    # Each buy of 0.1 * V costs 0.1 * V * rate; then the ticker is full.
    curve = np.array([(1 - 0.1 * rate) ** min(k, 3) for k in range(11)])
    held = 0.1 * curve[:3].sum()  # three units, each 0.1 x the equity before its buy
    curve[-1] -= rate * held  # the exit: everything sold at the last close
    assert m.final_equity == pytest.approx(curve[-1], rel=1e-14)
    assert m.turnover == pytest.approx(2 * held / curve.mean(), rel=1e-14)
    assert m.max_drawdown == pytest.approx(1 - curve[-1], rel=1e-9)
    assert m.mean_exposure == pytest.approx(
        np.mean([0.1 * curve[: min(k, 3)].sum() / curve[min(k, 3)] for k in range(1, 11)]),
        rel=1e-12,
    )


def test_turnover_of_random_trading_matches_the_costs_the_env_charged():
    features, prices = market(n_bars=200, seed=5)
    config = PortfolioEnvConfig(
        trade_fraction=0.3, max_units_per_ticker=2, commission_bps=7.0, slippage_bps=3.0
    )
    start, stop = 20, 180
    actions = np.random.default_rng(6).integers(0, 3, size=(stop - start - 1, N_TICKERS))
    m = evaluate_policy(ScriptedPolicy(actions), features, prices, None, (start, stop), config, 1.0)

    single = replace(config, ruin_fraction=0.0, episode_length=stop - 1 - start, window_end=stop)
    env = PortfolioTradingEnv(features, prices, single)
    _, info = env.reset(options={"start_index": start})
    curve = [info["equity"]]
    scaled = 0
    for row in actions:
        cash_before = info["cash"]
        _, _, _, trunc, info = env.step(row)
        curve.append(info["equity"])
        scaled += info["cash"] == 0.0 and cash_before > 0
    held = info["equity"] - info["cash"]
    curve[-1] -= config.cost_rate * held
    assert trunc and m.final_equity == pytest.approx(curve[-1], rel=1e-15)
    traded = info["costs"] / config.cost_rate + held
    assert m.turnover == pytest.approx(traded / np.mean(curve), rel=1e-9)
    assert scaled > 0  # the scaled-buy branch was exercised


def test_buy_and_hold_by_hand():
    prices = np.array([[10.0, 20.0], [11.0, 20.0], [12.0, 18.0], [9.0, 22.0]])
    config = PortfolioEnvConfig(initial_equity=1000.0, commission_bps=0.0, slippage_bps=10.0)
    m = buy_and_hold(prices, (0, 4), config, 252.0)
    each = 1000.0 / (2 * 1.001)
    curve = np.array([1000.0] + [each * (p[0] / 10.0 + p[1] / 20.0) for p in prices[1:]])
    held = curve[-1]  # all the cash was spent at the first close
    curve[-1] = held * (1 - 0.001)  # sold at the last close
    assert m.final_equity == pytest.approx(curve[-1], rel=1e-14)
    assert m.total_return == pytest.approx(curve[-1] / 1000.0 - 1, rel=1e-12)
    assert m.max_drawdown == pytest.approx(1 - curve[3] / curve[2], rel=1e-12)
    assert m.turnover == pytest.approx((2 * each + held) / curve.mean(), rel=1e-14)
    r = np.diff(np.log(curve))
    assert m.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252.0), rel=1e-9)


def test_evaluate_rejects_windows_without_a_step_or_before_the_lookback():
    features, prices = market()
    with pytest.raises(ConfigError):
        evaluate_policy(
            ConstantPolicy(HOLD, N_TICKERS),
            features,
            prices,
            None,
            (50, 51),
            PortfolioEnvConfig(),
            252.0,
        )
    with pytest.raises(ConfigError):
        evaluate_policy(
            ConstantPolicy(HOLD, N_TICKERS),
            features,
            prices,
            None,
            (2, 60),
            PortfolioEnvConfig(lookback=5),
            252.0,
        )


def test_evaluate_a_real_ensemble_equals_a_step_by_step_predict_loop(tiny_models):
    features, prices, ppos, lstm = tiny_models
    config = PortfolioEnvConfig(commission_bps=5.0, slippage_bps=5.0)
    members = [ppos[0], ppos[1], lstm]
    m = evaluate_policy(EnsemblePolicy(members), features, prices, None, (30, 110), config, 1.0)

    env = PortfolioTradingEnv(
        features,
        prices,
        PortfolioEnvConfig(commission_bps=5.0, slippage_bps=5.0, ruin_fraction=0.0, window_end=110),
    )
    obs, info = env.reset(options={"start_index": 30})
    state = None
    for k in range(79):
        votes = [
            ppos[0].predict(obs, deterministic=True)[0],
            ppos[1].predict(obs, deterministic=True)[0],
        ]
        action, state = lstm.predict(
            obs, state=state, episode_start=np.array([k == 0]), deterministic=True
        )
        votes.append(action)
        obs, _, _, _, info = env.step(majority_vote([v.reshape(1, -1) for v in votes])[0])
    exit_cost = config.cost_rate * (info["equity"] - info["cash"])
    assert m.final_equity == pytest.approx(info["equity"] - exit_cost, rel=1e-15)
