"""bench_train: a tiny run of every layout returns the documented keys and consistent figures."""

from __future__ import annotations

import os

import pytest
import torch

from engine.bench.train import LAYOUTS, START_METHOD, bench_train
from engine.errors import ConfigError
from engine.system.threads import THREAD_VARS, pool_environ

TINY = {
    "n_envs": 2,
    "timesteps": 256,
    "n_steps": 64,
    "batch_size": 64,
    "net_arch": (16, 16),
    "repeats": 1,
    "tickers": 3,
    "bars": 300,
    "n_features": 4,
    "episode_length": 100,
}

SETTINGS = {
    "n_envs",
    "timesteps",
    "timesteps_done",
    "n_steps",
    "batch_size",
    "n_epochs",
    "net_arch",
    "repeats",
    "tickers",
    "bars",
    "n_features",
    "obs_size",
    "cpus",
    "torch_threads",
    "start_method",
    "layouts",
}
PER_LAYOUT = {
    "startup_s",
    "close_s",
    "fps",
    "learn_s",
    "rollout_s",
    "train_s",
    "rollout_fps",
    "fps_runs",
}
RATIOS = {
    "fps_ratio_batched_subproc",
    "fps_ratio_batched_dummy",
    "rollout_fps_ratio_batched_subproc",
    "rollout_fps_ratio_batched_dummy",
}


def _thread_environ() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in THREAD_VARS}


def test_tiny_run_of_every_layout() -> None:
    threads_before = torch.get_num_threads()
    environ_before = _thread_environ()

    result = bench_train(**TINY)

    assert set(result) == SETTINGS | set(LAYOUTS) | RATIOS
    assert result["layouts"] == list(LAYOUTS)
    assert result["start_method"] == START_METHOD
    assert result["torch_threads"] == 1
    assert result["cpus"] >= 1
    assert result["n_envs"] == 2
    assert result["net_arch"] == [16, 16]
    assert result["obs_size"] == 3 * 4 + 3 + 1
    # PPO runs whole rollouts of n_envs * n_steps = 128 steps: 256 is exactly two.
    assert result["timesteps_done"] == 256
    for name in LAYOUTS:
        figures = result[name]
        assert set(figures) == PER_LAYOUT
        assert figures["fps"] > 0
        assert figures["rollout_fps"] >= figures["fps"]
        assert figures["startup_s"] >= 0
        assert figures["close_s"] >= 0
        assert figures["learn_s"] > 0
        assert 0 < figures["rollout_s"] <= figures["learn_s"]
        assert len(figures["fps_runs"]) == 1
        assert figures["fps"] == pytest.approx(256 / figures["learn_s"], rel=0.01)
    for other in ("subproc", "dummy"):
        for key in ("fps", "rollout_fps"):
            expected = result["batched"][key] / result[other][key]
            ratio = result[f"{key}_ratio_batched_{other}"]
            assert ratio == pytest.approx(expected, rel=1e-3, abs=1e-3)
    # Thread settings are the caller's again.
    assert torch.get_num_threads() == threads_before
    assert _thread_environ() == environ_before


def test_chosen_layouts_only_and_ratios_none_without_partner() -> None:
    result = bench_train(**{**TINY, "timesteps": 128, "repeats": 2}, layouts=("batched",))
    assert result["layouts"] == ["batched"]
    assert "subproc" not in result and "dummy" not in result
    assert len(result["batched"]["fps_runs"]) == 2
    assert result["batched"]["fps"] > 0
    assert all(result[key] is None for key in RATIOS)


@pytest.mark.parametrize(
    "override",
    [
        {"layouts": ("batched", "fork")},
        {"layouts": ()},
        {"layouts": ("dummy", "dummy")},
        {"n_envs": 0},
        {"repeats": 0},
        {"batch_size": 1},
    ],
)
def test_bad_arguments_are_config_errors(override: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="bench train"):
        bench_train(**{**TINY, **override})


def test_pool_environ_sets_caps_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with pool_environ(1):  # what bench train sets around its spawned workers
        assert all(os.environ[name] == "1" for name in THREAD_VARS)
    assert os.environ["OMP_NUM_THREADS"] == "8"
    assert "MKL_NUM_THREADS" not in os.environ
