"""bench_walkforward: a tiny walk-forward benched here reports both algorithms, FLOPs counted from
the net's shapes, and wall times that are exactly work / rate, projected ones labelled so."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import yaml

from engine.bench.markets import synthetic_market
from engine.bench.walkforward import (
    ARITHMETIC_LABEL,
    LAYOUTS,
    MEASURED_LABEL,
    bench_rollout,
    bench_walkforward,
    config_for,
    format_walkforward,
    gradient_flops,
    market_shape,
    matmul_peak,
    policy_matmul_weights,
    project_wall_time,
)
from engine.config import PloutosConfig, load_config
from engine.errors import ConfigError
from engine.train.plan import GiB, HardwarePlan, MachineInfo
from tests.conftest import ROOT, ploutos

TINY_CONFIG = {
    "dataset_path": "no-dataset-here",
    "data": {
        "source": "synthetic-demo",
        "start": "2018-01-01",
        "end": "2020-12-31",  # 1-year windows, 6-month steps: 3 folds
        "tickers": ["AAA", "BBB"],
    },
    "features": {"macro": []},  # 20 indicators + 4 calendar = 24 features
    "env": {"episode_length": 64},
    "training": {
        "algorithm": "recurrent_ppo",
        "net_arch": [8],
        "n_epochs": 2,
        "recurrent": {"lstm_hidden_size": 4},
        "total_timesteps": 10_000,
        "ensemble": 1,
    },
    "walk_forward": {"train_years": 1, "test_months": 6, "step_months": 6},
    "hardware_profile": "tiny",
}
TINY_HARDWARE = {
    "profiles": {
        "tiny": {
            "n_envs": 2,
            "n_steps": 32,
            "batch_size": 32,
            "parallel_members": "auto",
            "torch_threads": 1,
            "device": "cpu",
        }
    }
}
# The plan is resolved for 4 CPUs: 2 units in flight (1 env-stepping + 1 torch thread each) of
# the run's 3 (3 folds x 1 member), against an old cap of 1 (the ensemble); they run here.
FOUR_CPUS = MachineInfo(usable_cpus=4, host_cpus=4, ram_total_bytes=64 * GiB)
ASSUME = "cpus=64,ram=256G"
TIMESTEPS = 128  # 2 rollouts of 2 envs x 32 steps
POLICY_REPEATS = 2  # RecurrentPPO alone with the stock policy and ours, twice each
OURS = "engine.train.recurrent.RecurrentLstmPolicy"
STOCK = "sb3_contrib.common.recurrent.policies.RecurrentActorCriticPolicy"  # MlpLstmPolicy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("walkforward")
    config, hardware = folder / "tiny.yaml", folder / "hardware.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    hardware.write_text(yaml.safe_dump(TINY_HARDWARE))
    return config, hardware


@pytest.fixture(scope="module")
def result(tiny):
    config, hardware = tiny
    return bench_walkforward(
        config,
        assume=ASSUME,
        timesteps_per_unit=TIMESTEPS,
        hardware_file=hardware,
        machine=FOUR_CPUS,
        matmul_size=64,
        policy_repeats=POLICY_REPEATS,
    )


def _plan(n_envs: int = 2, n_steps: int = 16, batch_size: int = 16) -> HardwarePlan:
    return HardwarePlan(
        profile="test",
        n_envs=n_envs,
        n_steps=n_steps,
        batch_size=batch_size,
        parallel_members=1,
        torch_threads=1,
        device="cpu",
        reasons={},
        planned_threads=0,
        machine={},
    )


def test_both_algorithms_are_reported_config_first_with_every_layout(result):
    assert json.loads(json.dumps(result)) == result  # JSON-ready as it is
    assert list(result["algorithms"]) == ["recurrent_ppo", "ppo"]
    assert result["config_algorithm"] == "recurrent_ppo"
    assert result["market"]["obs_size"] == 1 * 2 * 24 + 2 + 1
    assert result["run"] == {
        "folds": 3,
        "ensemble": 1,
        "units": 3,
        "folds_note": result["run"]["folds_note"],
        "total_timesteps": 10_000,
        "work_timesteps": 30_000,
    }
    for algorithm, entry in result["algorithms"].items():
        assert set(entry["layouts"]) == set(LAYOUTS), algorithm
        assert entry["plan"]["parallel_members"] == 2
        assert entry["old_cap_plan"]["parallel_members"] == 1
        layouts = entry["layouts"]
        assert [layouts[n]["units"] for n in LAYOUTS] == [1, 2, 1]
        # the old cap and a unit alone are the same (1 unit, 1 torch thread): run once
        assert layouts["alone"]["same_run_as"] is None
        assert layouts["planned"]["same_run_as"] is None
        assert layouts["old_cap"]["same_run_as"] == "alone"
        assert entry["bench_rollout"]["rollout"] == 64
        updates = layouts["alone"]["updates"]
        assert len(updates) == 2
        # every env starts its episode in the first rollout
        assert updates[0]["episode_starts"] is True
        assert layouts["alone"]["train_s_per_update_with_episode_starts"] > 0
        for name in LAYOUTS:
            figures = layouts[name]
            assert figures["timesteps_per_unit"] == TIMESTEPS
            assert len(figures["per_unit_fps_runs"]) == figures["units"]
            for key in (
                "per_unit_fps",
                "aggregate_fps",
                "window_s",
                "train_s",
                "rollout_s",
                "gradient_flops",
                "matmul_peak_gflops",
            ):
                assert figures[key] > 0, (algorithm, name, key)
            assert 0 < figures["gradient_share"] < 1
    assert result["matmul_peak"]["1"]["gflops"] > 0
    assert result["comparison"]["recurrent_over_ppo_flops_per_sample"] > 1


def test_recurrent_ppo_reports_the_stock_policy_and_ours_side_by_side(result):
    rec = result["algorithms"]["recurrent_ppo"]
    assert "policy_variants" not in result["algorithms"]["ppo"]
    for name in LAYOUTS:  # training's units are built with ours
        assert rec["layouts"][name]["policy"] == OURS
    assert result["algorithms"]["ppo"]["layouts"]["alone"]["policy"].endswith(".ActorCriticPolicy")
    variants = rec["policy_variants"]
    stock, ours = variants["stock"], variants["ours"]
    assert (stock["policy"], ours["policy"]) == (STOCK, OURS)
    assert stock["repeats"] == ours["repeats"] == POLICY_REPEATS
    assert len(stock["per_unit_fps_runs"]) == len(ours["per_unit_fps_runs"]) == POLICY_REPEATS
    # the first of ours is the alone layout; the figures are medians of the runs
    assert ours["per_unit_fps_runs"][0] == rec["layouts"]["alone"]["per_unit_fps"]
    for figures in (stock, ours):
        assert figures["per_unit_fps"] == round(statistics.median(figures["per_unit_fps_runs"]), 3)
        for key in ("train_s", "rollout_s", "train_s_per_update_with_episode_starts"):
            assert figures[key] > 0, key
    assert variants["ours_over_stock_fps"] == round(ours["per_unit_fps"] / stock["per_unit_fps"], 3)
    assert variants["stock_over_ours_train_s"] == round(stock["train_s"] / ours["train_s"], 3)
    ppo_fps = result["algorithms"]["ppo"]["layouts"]["alone"]["per_unit_fps"]
    comparison = result["comparison"]
    assert comparison["ppo_over_recurrent_stock_fps"] == round(ppo_fps / stock["per_unit_fps"], 3)
    assert comparison["ppo_over_recurrent_ours_fps"] == round(ppo_fps / ours["per_unit_fps"], 3)
    assert "stock LSTM policy" in format_walkforward(result)


def test_policy_repeats_below_one_are_refused(tiny):
    with pytest.raises(ConfigError, match="policy repeats must be >= 1"):
        bench_walkforward(tiny[0], hardware_file=tiny[1], policy_repeats=0)


def test_reported_gradient_flops_are_six_weights_per_sample_per_epoch_run(result):
    for entry in result["algorithms"].values():
        alone = entry["layouts"]["alone"]
        rollout = entry["bench_rollout"]["rollout"]
        assert alone["epochs"] == 2 * 2  # 2 updates of n_epochs 2
        weights = entry["net"]["matmul_weights"]
        assert alone["gradient_flops"] == 6 * weights * rollout * alone["epochs"]
        assert entry["net"]["gradient_flops_per_sample_epoch"] == 6 * weights


def test_projected_wall_time_is_work_over_the_reported_aggregate_rate(result):
    run = result["run"]
    for entry in result["algorithms"].values():
        here = entry["projection"]["this_machine"]
        assert here["label"] == MEASURED_LABEL
        for name in ("planned", "old_cap"):
            proj, measured = here[name], entry["layouts"][name]
            assert proj["aggregate_fps"] == measured["aggregate_fps"]
            assert proj["units_in_flight"] == measured["units"]
            assert proj["work_timesteps"] == run["units"] * run["total_timesteps"]
            assert proj["wall_s"] == proj["work_timesteps"] / proj["aggregate_fps"]
            assert proj["wall_days"] == proj["wall_s"] / 86400
        assert here["wall_ratio_old_cap_over_planned"] == round(
            here["old_cap"]["wall_s"] / here["planned"]["wall_s"], 3
        )


def test_assumed_machine_is_an_arithmetic_projection_from_the_rate_measured_here(result):
    for entry in result["algorithms"].values():
        assumed = entry["projection"]["assumed"]
        assert assumed["label"] == ARITHMETIC_LABEL == "arithmetic projection, not measured"
        assert assumed["assume"] == ASSUME
        per_unit = entry["layouts"]["planned"]["per_unit_fps"]
        assert assumed["per_unit_fps_measured_here"] == per_unit
        # 64 CPUs // (1 + 1 torch thread) = 32 would fit; the run has 3 units, the old cap 1
        for name, in_flight in (("planned", 3), ("old_cap", 1)):
            proj = assumed[name]
            assert proj["units_in_flight"] == in_flight
            assert proj["aggregate_fps"] == round(per_unit * in_flight, 1)
            assert proj["wall_s"] == proj["work_timesteps"] / proj["aggregate_fps"]
    summary = format_walkforward(result)
    assert f"{ASSUME} ({ARITHMETIC_LABEL})" in summary
    assert f"here ({MEASURED_LABEL})" in summary


def test_without_assume_nothing_is_projected_for_another_machine(tiny):
    config, hardware = tiny
    out = bench_walkforward(
        config,
        timesteps_per_unit=64,
        algorithms=["ppo"],
        hardware_file=hardware,
        machine=FOUR_CPUS,
        matmul_size=64,
        matmul_repeats=1,
    )
    assert list(out["algorithms"]) == ["ppo"]
    assert set(out["algorithms"]["ppo"]["projection"]) == {"this_machine"}
    assert "comparison" not in out
    assert ARITHMETIC_LABEL not in format_walkforward(out)


def test_wall_time_worked_example_25_units_of_5m_timesteps():
    five = project_wall_time(25, 5_000_000, 5, 1000.0)
    assert five["work_timesteps"] == 125_000_000
    assert five["wall_s"] == 125_000.0
    assert five["waves"] == 5
    assert five["wall_s_whole_waves"] == 125_000.0  # 5 full waves of 5 units at 200 each
    two = project_wall_time(25, 5_000_000, 2, 1000.0)
    assert two["wall_s"] == 125_000.0
    assert two["waves"] == 13  # the 13th wave trains one unit alone
    assert two["wall_s_whole_waves"] == 13 * 5_000_000 / 500.0


def _tiny_model(algorithm: str, **recurrent):
    from engine.env.vec_env import BatchedPortfolioVecEnv
    from engine.train.units import build_model, env_config

    training = {"algorithm": algorithm, "net_arch": [4], "recurrent": recurrent}
    cfg = PloutosConfig.model_validate({"dataset_path": "x", "training": training})
    features, prices = synthetic_market(300, 2, 2, seed=0)  # obs = 1 x 2 x 2 + 2 + 1 = 7
    config = env_config(cfg, (0, 300))
    env = BatchedPortfolioVecEnv(features, prices, 2, config, seed=0, fill_prices=prices)
    return build_model(cfg, _plan(), env, seed=0)


@pytest.mark.parametrize(
    ("algorithm", "recurrent", "weights"),
    [
        # actor 7x4 + action 4x(2 tickers x 3); critic 7x4 + value 4x1
        ("ppo", {}, 28 + 24 + 28 + 4),
        # + an LSTM 4 x 3 x (7 + 3) = 120 for each of actor and critic; MLPs read 3 inputs
        ("recurrent_ppo", {"lstm_hidden_size": 3}, 120 + 120 + 12 + 24 + 12 + 4),
        # one LSTM, the critic reads it
        (
            "recurrent_ppo",
            {"lstm_hidden_size": 3, "shared_lstm": True, "enable_critic_lstm": False},
            120 + 12 + 24 + 12 + 4,
        ),
        # no critic LSTM: a 7x3 linear layer instead
        (
            "recurrent_ppo",
            {"lstm_hidden_size": 3, "enable_critic_lstm": False},
            120 + 21 + 12 + 24 + 12 + 4,
        ),
    ],
)
def test_matmul_weights_match_a_hand_count_of_a_tiny_net(algorithm, recurrent, weights):
    model = _tiny_model(algorithm, **recurrent)
    assert policy_matmul_weights(model.policy) == weights
    assert gradient_flops(weights, samples=32, epochs=10) == 6 * weights * 32 * 10


def test_real_config_market_is_15_tickers_by_36_features():
    cfg = load_config(ROOT / "config" / "training_config_v8.yaml")
    shape = market_shape(cfg)
    assert (shape.tickers, shape.n_features, shape.lookback) == (15, 36, 1)
    assert shape.obs_size == 15 * 36 + 15 + 1 == 556
    assert shape.bars > 2 * cfg.env.episode_length
    # --obs-size keeps the tickers and takes the nearest whole feature count
    asked = market_shape(cfg, obs_size=700)
    assert (asked.n_features, asked.obs_size, asked.obs_size_asked) == (46, 706, 700)
    with pytest.raises(ConfigError, match="--obs-size 20"):
        market_shape(cfg, obs_size=20)


def test_ppo_config_of_a_recurrent_config_drops_only_the_lstm_section(tiny):
    cfg = load_config(tiny[0])
    ppo = config_for(cfg, "ppo")
    assert ppo.training.algorithm == "ppo"
    assert ppo.training.recurrent.lstm_hidden_size == 256  # back to its default
    assert ppo.training.net_arch == cfg.training.net_arch
    assert ppo.env == cfg.env and ppo.walk_forward == cfg.walk_forward


def test_bench_rollout_keeps_the_batch_and_the_real_share_of_episode_starts():
    plan = _plan(n_envs=32, n_steps=512, batch_size=4096)  # this 2-core machine's plan
    default = bench_rollout(plan, episode_length=2048)
    assert (default["n_steps"], default["rollout"]) == (128, 4096)
    # one update in 2048 / 512 = 4 holds episode starts in training: 4 updates, the first has them
    assert (default["rollouts"], default["timesteps"], default["episode_start_share"]) == (
        4,
        16384,
        0.25,
    )
    assert bench_rollout(plan, 2048, timesteps=100)["timesteps"] == 4096  # whole rollouts
    assert bench_rollout(plan, 2048, timesteps=5000)["rollouts"] == 2
    assert bench_rollout(plan, 100)["rollouts"] == 2  # at least MIN_ROLLOUTS
    laptop = bench_rollout(_plan(n_envs=8, n_steps=256, batch_size=512), 2048)
    assert (laptop["n_steps"], laptop["rollouts"]) == (128, 8)
    gpu = bench_rollout(_plan(n_envs=256, n_steps=4096, batch_size=65536), 2048)
    assert gpu["n_steps"] == 256 and gpu["rollout"] % 65536 == 0
    small = bench_rollout(_plan(n_envs=2, n_steps=32, batch_size=32), 64)
    assert small["n_steps"] == 32  # never above the plan's


def test_matmul_peak_counts_two_n_cubed_flops():
    peak = matmul_peak(1, size=32, repeats=3)
    assert peak["threads"] == 1 and len(peak["seconds_runs"]) == 3
    fastest, median = sorted(peak["seconds_runs"])[:2]
    assert math.isclose(peak["gflops"], 2 * 32**3 / fastest / 1e9, rel_tol=0.01, abs_tol=0.01)
    assert math.isclose(peak["gflops_median"], 2 * 32**3 / median / 1e9, rel_tol=0.01, abs_tol=0.01)


def test_unknown_algorithm_is_refused_in_one_line(tiny):
    with pytest.raises(ConfigError, match=r"unknown algorithms \['a2c'\]"):
        bench_walkforward(tiny[0], algorithms=["a2c"], hardware_file=tiny[1])


def test_cli_prints_the_json_with_the_projection_labelled(tiny):
    proc = ploutos(
        "bench",
        "walkforward",
        "--json",
        "--config",
        str(tiny[0]),
        "--hardware",
        "laptop",  # the packaged profile: 8 envs, batch 512, 1 unit at a time
        "--timesteps",
        "1024",
        "--assume",
        "cpus=256,ram=1T",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["timesteps_per_unit"] == 1024
    for entry in out["algorithms"].values():
        rollout = entry["bench_rollout"]
        assert (rollout["n_envs"], rollout["n_steps"], rollout["rollouts"]) == (8, 128, 1)
        assert entry["projection"]["assumed"]["label"] == ARITHMETIC_LABEL
        assert entry["projection"]["this_machine"]["label"] == MEASURED_LABEL
