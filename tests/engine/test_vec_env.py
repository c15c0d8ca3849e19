"""The batched VecEnv: bit-for-bit agreement with single envs, SB3 conventions, PPO training."""

from __future__ import annotations

import numpy as np
import pytest
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecMonitor

from engine.bench.env import bench_env_steps
from engine.bench.markets import synthetic_market
from engine.env.portfolio import PortfolioBatch, PortfolioEnvConfig, PortfolioTradingEnv
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.errors import ConfigError


def market(n_bars=400, n_tickers=3, n_features=4, seed=0, vol=0.01, price_dtype=np.float64):
    """Random-walk prices [time, ticker] and random float32 features [time, ticker, feature],
    read only like shared memory maps."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_bars, n_tickers, n_features)).astype(np.float32)
    steps = rng.normal(0.0, vol, (n_bars, n_tickers))
    prices = (100.0 * np.exp(np.cumsum(steps, axis=0))).astype(price_dtype)
    features.flags.writeable = False
    prices.flags.writeable = False
    return features, prices


def run_side_by_side(
    features, prices, config, n_envs, n_steps, seed, index_paths=None, tradable=None
):
    """Step a VecEnv and n_envs single envs with the same random actions; assert that
    observations, rewards, dones and terminal infos agree exactly. Returns (dones, ruins)."""
    vec = BatchedPortfolioVecEnv(
        features, prices, n_envs, config, index_paths=index_paths, tradable=tradable
    )
    vec.seed(seed)
    singles = [
        PortfolioTradingEnv(features, prices, config, tradable=tradable) for _ in range(n_envs)
    ]
    vec_obs = vec.reset()
    for i, env in enumerate(singles):
        options = None if index_paths is None else {"index_path": index_paths[i]}
        obs, _ = env.reset(seed=seed + i, options=options)
        assert np.array_equal(obs, vec_obs[i])

    rng = np.random.default_rng(seed)
    n_dones = n_ruins = 0
    for _ in range(n_steps):
        actions = rng.integers(0, 3, size=(n_envs, features.shape[1]))
        vec_obs, vec_rewards, vec_dones, infos = vec.step(actions)
        assert vec_obs.dtype == np.float32 and vec_rewards.dtype == np.float32
        for i, env in enumerate(singles):
            obs, reward, terminated, truncated, _ = env.step(actions[i])
            # SB3's DummyVecEnv stores rewards as float32 too.
            assert vec_rewards[i] == np.float32(reward)
            assert vec_dones[i] == (terminated or truncated)
            if vec_dones[i]:
                n_dones += 1
                n_ruins += terminated
                assert np.array_equal(infos[i]["terminal_observation"], obs)
                assert infos[i]["TimeLimit.truncated"] == (truncated and not terminated)
                obs, _ = env.reset()
            assert np.array_equal(obs, vec_obs[i])
    return n_dones, n_ruins


def test_batched_env_matches_single_envs_bit_for_bit_across_resets_and_ruin():
    # Volatile prices, a high ruin level and short episodes: many truncations and ruins, and
    # the window runs to the data end, so observations of the very last bar are covered.
    features, prices = market(n_bars=300, n_tickers=5, vol=0.05)
    config = PortfolioEnvConfig(
        window_start=10, episode_length=25, trade_fraction=0.3, ruin_fraction=0.9
    )
    n_dones, n_ruins = run_side_by_side(features, prices, config, 6, 300, seed=3)
    assert n_dones > 50 and n_ruins > 5


def test_batched_env_matches_with_lookback_float32_prices_clip_and_many_tickers():
    # 17 tickers: NumPy would sum a batch of one pairwise (>= 16 terms), a batch of many in
    # order; the env must add in the same order for both.
    features, prices = market(n_bars=250, n_tickers=17, n_features=3, price_dtype=np.float32)
    config = PortfolioEnvConfig(
        window_start=40,
        window_end=200,
        episode_length=30,
        lookback=3,
        obs_clip=1.5,
        max_units_per_ticker=2,
        commission_bps=3.0,
        slippage_bps=7.5,
    )
    n_dones, _ = run_side_by_side(features, prices, config, 5, 200, seed=11)
    assert n_dones > 20


def test_batched_env_matches_on_non_contiguous_features_and_a_batch_of_one():
    base, prices = market(n_bars=200, n_tickers=4, n_features=6)
    features = base[:, :, ::2]  # a strided view: the plain gather path
    assert not features.flags.c_contiguous
    config = PortfolioEnvConfig(episode_length=40, lookback=2)
    run_side_by_side(features, prices, config, 3, 150, seed=5)
    run_side_by_side(base, prices, config, 1, 150, seed=5)


def test_index_paths_match_single_envs_following_the_same_paths():
    features, prices = market(n_bars=120, n_tickers=3)
    rng = np.random.default_rng(0)
    paths = rng.integers(1, 119, size=(4, 12))  # lookback 2: bars >= 1; acted bars <= 118
    config = PortfolioEnvConfig(lookback=2, ruin_fraction=0.0)
    n_dones, _ = run_side_by_side(features, prices, config, 4, 40, seed=1, index_paths=paths)
    assert n_dones == 4 * 3  # 11 steps per path, restarted 3 times in 40 steps
    with pytest.raises(ConfigError, match="index_paths"):
        BatchedPortfolioVecEnv(features, prices, 4, config, index_paths=paths[:, :1])
    with pytest.raises(ConfigError, match="index_paths"):
        BatchedPortfolioVecEnv(features, prices, 4, config, index_paths=paths * 0)


def test_returned_arrays_are_fresh_and_never_overwritten_by_later_steps():
    features, prices = market()
    vec = BatchedPortfolioVecEnv(features, prices, 4, PortfolioEnvConfig(episode_length=3), seed=0)
    first = vec.reset()
    kept = first.copy()
    obs, rewards, dones, infos = vec.step(np.full((4, 3), 2))
    copies = obs.copy(), rewards.copy(), dones.copy()
    for _ in range(5):
        vec.step(np.zeros((4, 3), dtype=np.int64))
    assert np.array_equal(first, kept)
    assert np.array_equal(obs, copies[0]) and np.array_equal(rewards, copies[1])
    assert np.array_equal(dones, copies[2])


def test_infos_of_running_envs_are_empty_and_writes_into_them_do_not_leak():
    features, prices = market()
    vec = BatchedPortfolioVecEnv(features, prices, 3, PortfolioEnvConfig(episode_length=2), seed=0)
    vec.reset()
    _, _, dones, infos = vec.step(np.ones((3, 3), dtype=np.int64))
    assert not dones.any() and infos == [{}, {}, {}]
    infos[1]["note"] = "written by a wrapper"
    _, _, dones, infos = vec.step(np.ones((3, 3), dtype=np.int64))
    assert dones.all()
    assert set(infos[0]) == {
        "terminal_observation",
        "TimeLimit.truncated",
        "final_equity",
        "episode_costs",
    }
    assert infos[0]["TimeLimit.truncated"] is True and infos[0]["final_equity"] == 1.0
    _, _, _, infos = vec.step(np.ones((3, 3), dtype=np.int64))
    assert infos == [{}, {}, {}]


def test_set_options_start_index_applies_to_the_next_reset_only():
    features, prices = market(n_bars=300)
    config = PortfolioEnvConfig(episode_length=5)
    vec = BatchedPortfolioVecEnv(features, prices, 3, config, seed=1)
    vec.set_options([{"start_index": 10}, {"start_index": 20}, {}])
    vec.reset()
    bars = vec.get_attr("bar")
    assert bars[:2] == [10, 20]
    single = PortfolioTradingEnv(features, prices, config)
    assert bars[2] == single.reset(seed=3)[1]["bar"]  # env 2 gets seed 1 + 2
    vec.set_options({"start_index": 50})
    vec.reset()
    assert vec.get_attr("bar") == [50, 50, 50]
    vec.reset()
    assert vec.get_attr("bar") != [50, 50, 50]


def test_get_attr_set_attr_env_method_and_env_is_wrapped():
    features, prices = market()
    vec = BatchedPortfolioVecEnv(features, prices, 4, seed=0)
    vec.reset()
    assert vec.get_attr("equity") == [1.0] * 4
    assert vec.get_attr("cash", indices=[1, 3]) == [1.0, 1.0]
    assert vec.get_attr("render_mode") == [None] * 4
    assert vec.get_attr("config", indices=0)[0] is vec.config
    vec.set_attr("note", 7)
    assert vec.get_attr("note", indices=[2]) == [7]
    with pytest.raises(ValueError, match="shared by all envs"):
        vec.set_attr("note", 8, indices=[0])
    with pytest.raises(AttributeError, match="per-env portfolio state"):
        vec.set_attr("equity", 2.0)
    with pytest.raises(AttributeError, match="build a new"):
        vec.set_attr("config", PortfolioEnvConfig())
    # Methods taking `indices` get them; others run once for the whole batch.
    assert vec.env_method("get_attr", "t", indices=[0, 1]) == [0, 0]
    assert vec.env_method("close", indices=[0, 1]) == [None, None]
    assert vec.env_is_wrapped(Monitor) == [False] * 4
    assert vec.has_attr("equity")


def test_256_envs_share_the_arrays_and_own_only_small_buffers():
    features, prices = market(n_bars=2000, n_tickers=15, n_features=40)
    vec = BatchedPortfolioVecEnv(features, prices, 256, seed=0)
    vec.reset()
    batch = vec.batch
    assert batch.features is features and batch.prices is prices
    own = 0
    for value in vars(batch).values():
        if isinstance(value, np.ndarray) and not (
            np.may_share_memory(value, features) or np.may_share_memory(value, prices)
        ):
            own += value.nbytes
    assert own < 1_000_000  # state and scratch buffers: a few hundred kB


def test_batch_refuses_a_bad_size():
    features, prices = market()
    with pytest.raises(ConfigError, match=">= 1"):
        PortfolioBatch(features, prices, PortfolioEnvConfig(), n=0)


def test_sb3_ppo_learns_on_the_batched_env():
    features, prices = market(n_bars=300, n_tickers=3)
    vec = VecMonitor(
        BatchedPortfolioVecEnv(features, prices, 8, PortfolioEnvConfig(episode_length=20))
    )
    model = PPO(
        "MlpPolicy",
        vec,
        n_steps=16,
        batch_size=32,
        n_epochs=2,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    assert len(model.ep_info_buffer) > 0  # episodes finished and VecMonitor saw them


def test_recurrent_ppo_learns_on_the_batched_env():
    features, prices = market(n_bars=300, n_tickers=3)
    vec = BatchedPortfolioVecEnv(features, prices, 4, PortfolioEnvConfig(episode_length=20))
    model = RecurrentPPO(
        "MlpLstmPolicy",
        vec,
        n_steps=16,
        batch_size=32,
        n_epochs=2,
        policy_kwargs={"net_arch": [16], "lstm_hidden_size": 8},
        seed=0,
        device="cpu",
    )
    model.learn(total_timesteps=128)
    assert model.num_timesteps >= 128


def test_bench_env_reports_every_figure_for_each_batch_size():
    features, prices = synthetic_market(n_bars=400, n_tickers=3, n_features=4)
    report = bench_env_steps(features, prices, n_envs_list=(1, 4), seconds=0.01, repeats=1)
    assert set(report["vec_env_steps_per_s"]) == {"1", "4"}
    assert set(report["dummy_vec_env_steps_per_s"]) == {"1", "4"}
    assert report["single_env_steps_per_s"] > 0 and report["startup_256_s"] > 0
    assert report["owned_buffers_256_mb"] < 1.0


def test_batched_env_matches_single_envs_with_a_tradable_mask():
    features, prices = market(n_bars=300, seed=5)
    tradable = np.random.default_rng(5).random(prices.shape) > 0.2
    config = PortfolioEnvConfig(episode_length=40)
    run_side_by_side(features, prices, config, n_envs=6, n_steps=150, seed=9, tradable=tradable)


def test_orders_on_stale_bars_are_held_not_traded():
    """A carried-forward bar (tradable False) must not fill a buy or a sell at a price that never printed."""
    features, prices = market(n_bars=50, n_tickers=2, seed=1)
    tradable = np.ones(prices.shape, dtype=bool)
    tradable[10, 0] = False
    config = PortfolioEnvConfig(episode_length=20, commission_bps=1.0, slippage_bps=0.0)
    env = PortfolioTradingEnv(features, prices, config, tradable=tradable)
    env.reset(seed=0, options={"start_index": 10})
    _, _, _, _, info = env.step(np.array([2, 2]))  # buy both; ticker 0 is stale at bar 10
    assert env._batch.units[:, 0].tolist() == [0.0, 1.0]
    assert info["costs"] == pytest.approx(config.trade_fraction * config.cost_rate)
    _, _, _, _, info = env.step(np.array([2, 1]))  # bar 11: ticker 0 tradable again
    assert env._batch.units[:, 0].tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="tradable must have shape"):
        PortfolioTradingEnv(features, prices, config, tradable=tradable[:, :1])
