"""The SB3 / sb3-contrib hyperparameters of ``training:``: each reaches the model train_member
builds, the defaults are the installed SB3's, and a bad value is one ConfigError line naming it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import pytest
import torch
import yaml
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from engine.bench.markets import synthetic_market
from engine.config import (
    TORCH_ACTIVATIONS,
    ActivationName,
    PloutosConfig,
    RecurrentConfig,
    TrainingConfig,
    load_config,
)
from engine.env.portfolio import PortfolioEnvConfig
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.errors import ConfigError
from engine.evaluation.trials import config_hash
from engine.train.prepare import resolved_config
from engine.train.units import SB3_ALGORITHM_KEYS, build_model, model_kwargs

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_RUNS = sorted((ROOT / "tests" / "tui" / "fixtures" / "runs").glob("*/config.yaml"))
CLASSES = {"ppo": PPO, "recurrent_ppo": RecurrentPPO}
POLICIES = {"ppo": "MlpPolicy", "recurrent_ppo": "MlpLstmPolicy"}

# The keys TrainingConfig has that are not SB3 keywords: they shape the run, not the model.
RUN_KEYS = {
    "algorithm",
    "total_timesteps",
    "ensemble",
    "seed",
    "vote",
    "checkpoint_every_timesteps",
    "progress_interval_s",
    "tensorboard",
}
POLICY_KEYS = {"net_arch", "activation_fn", "ortho_init", "recurrent"}

# Every SB3 key at a value that is not its default (nor Ploutos's).
TUNED: dict[str, Any] = {
    "net_arch": [16, 8],
    "ent_coef": 0.02,
    "learning_rate": 1e-3,
    "gamma": 0.95,
    "n_epochs": 3,
    "gae_lambda": 0.9,
    "clip_range": 0.15,
    "clip_range_vf": 0.3,
    "normalize_advantage": False,
    "vf_coef": 0.7,
    "max_grad_norm": 1.5,
    "target_kl": 0.02,
    "activation_fn": "relu",
    "ortho_init": False,
}
TUNED_LSTM = {
    "lstm_hidden_size": 12,
    "n_lstm_layers": 2,
    "shared_lstm": True,
    "enable_critic_lstm": False,
}


# A stand-in for HardwarePlan: build_model reads only the rollout shape and the device, and a
# plan resolved for a real machine would make the test depend on this one.
PLAN = SimpleNamespace(n_envs=2, n_steps=16, batch_size=16, device="cpu")


@pytest.fixture(scope="module")
def venv():
    features, prices = synthetic_market(n_bars=400, n_tickers=3, n_features=4, seed=5)
    env = BatchedPortfolioVecEnv(
        features, prices, PLAN.n_envs, PortfolioEnvConfig(episode_length=64), seed=1
    )
    yield env
    env.close()


def config(**training: Any) -> PloutosConfig:
    return PloutosConfig.model_validate({"dataset_path": "x", "training": training})


def load_training(tmp_path: Path, body: str) -> PloutosConfig:
    path = tmp_path / "bad.yaml"
    path.write_text("dataset_path: x\ntraining:\n" + body)
    return load_config(path)


# ------------------------------------------------------------------------------------------------
# Wiring
# ------------------------------------------------------------------------------------------------


def test_every_training_key_is_passed_to_sb3_or_is_a_run_key():
    fields = set(TrainingConfig.model_fields)
    assert fields == set(SB3_ALGORITHM_KEYS) | POLICY_KEYS | RUN_KEYS
    kwargs = model_kwargs(TrainingConfig(algorithm="recurrent_ppo"))
    assert set(kwargs) == set(SB3_ALGORITHM_KEYS) | {"policy_kwargs"}
    lstm = set(kwargs["policy_kwargs"]) - {"net_arch", "activation_fn", "ortho_init"}
    assert lstm == set(RecurrentConfig.model_fields)


def test_every_activation_name_is_a_torch_module():
    assert set(get_args(ActivationName)) == set(TORCH_ACTIVATIONS)
    for name, cls_name in TORCH_ACTIVATIONS.items():
        cls = getattr(nn, cls_name)
        assert issubclass(cls, nn.Module), name
        assert cls_name.lower().replace("leakyrelu", "leaky_relu") == name


def test_ppo_takes_no_lstm_keys():
    kwargs = model_kwargs(TrainingConfig(algorithm="ppo"))
    assert set(kwargs["policy_kwargs"]) == {"net_arch", "activation_fn", "ortho_init"}


# ------------------------------------------------------------------------------------------------
# Defaults
# ------------------------------------------------------------------------------------------------


def _defaults(func: Any) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize("algorithm", ["ppo", "recurrent_ppo"])
def test_config_defaults_are_the_installed_sb3_signature_defaults(algorithm):
    ours = TrainingConfig(algorithm=algorithm)
    theirs = _defaults(CLASSES[algorithm].__init__)
    # ent_coef and net_arch are the seed's lessons, on purpose not SB3's.
    for key in set(SB3_ALGORITHM_KEYS) - {"ent_coef"}:
        assert getattr(ours, key) == theirs[key], key
    policy = _defaults(ActorCriticPolicy.__init__)
    assert getattr(nn, TORCH_ACTIVATIONS[ours.activation_fn]) is policy["activation_fn"]
    assert ours.ortho_init is policy["ortho_init"]
    lstm = _defaults(RecurrentActorCriticPolicy.__init__)
    assert ours.recurrent.model_dump() == {k: lstm[k] for k in RecurrentConfig.model_fields}


def _model_settings(model: Any) -> dict[str, Any]:
    """What a built model actually uses, read off the model and its policy."""
    policy = model.policy
    out = {
        "n_epochs": model.n_epochs,
        "gae_lambda": model.gae_lambda,
        "clip_range": model.clip_range(1.0),
        "clip_range_vf": None if model.clip_range_vf is None else model.clip_range_vf(1.0),
        "normalize_advantage": model.normalize_advantage,
        "vf_coef": model.vf_coef,
        "max_grad_norm": model.max_grad_norm,
        "target_kl": model.target_kl,
        "gamma": model.gamma,
        "ent_coef": model.ent_coef,
        "learning_rate": model.lr_schedule(1.0),
        "optimizer_lr": policy.optimizer.param_groups[0]["lr"],
        "activation_fn": policy.activation_fn,
        "ortho_init": policy.ortho_init,
        "net_arch": policy.net_arch,
        "layers": [type(m) for m in policy.mlp_extractor.policy_net],
    }
    if isinstance(policy, RecurrentActorCriticPolicy):
        out.update(
            lstm_hidden_size=policy.lstm_actor.hidden_size,
            n_lstm_layers=policy.lstm_actor.num_layers,
            shared_lstm=policy.shared_lstm,
            enable_critic_lstm=policy.enable_critic_lstm,
            critic_lstm=None if policy.lstm_critic is None else policy.lstm_critic.hidden_size,
            critic_linear=policy.critic is not None,
        )
    return out


@pytest.mark.parametrize("algorithm", ["ppo", "recurrent_ppo"])
def test_built_model_with_default_config_matches_sb3_built_with_no_kwargs(venv, algorithm):
    cfg = config(algorithm=algorithm)
    built = build_model(cfg, PLAN, venv, seed=0)
    ours = _model_settings(built)
    reference = CLASSES[algorithm](
        POLICIES[algorithm],
        venv,
        n_steps=PLAN.n_steps,
        batch_size=PLAN.batch_size,
        seed=0,
        device="cpu",
        # the two seed's lessons, the only keys where Ploutos's default is not SB3's
        ent_coef=0.01,
        policy_kwargs={"net_arch": [512, 512, 512]},
    )
    assert ours == _model_settings(reference)
    # and the same weights from the same seed: the configs' models are what they were before
    for name, tensor in reference.policy.state_dict().items():
        torch.testing.assert_close(built.policy.state_dict()[name], tensor, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Every key reaches the model
# ------------------------------------------------------------------------------------------------


def _value_head_norm(model: Any) -> float:
    """Norm of the value head's weight row: exactly its orthogonal gain 1 when ortho_init is on."""
    return float(torch.linalg.vector_norm(model.policy.value_net.weight.detach()))


@pytest.mark.parametrize("algorithm", ["ppo", "recurrent_ppo"])
def test_every_key_reaches_the_built_model(venv, algorithm):
    training = {"algorithm": algorithm, **TUNED}
    if algorithm == "recurrent_ppo":
        training["recurrent"] = TUNED_LSTM
    model = build_model(config(**training), PLAN, venv, seed=3)
    got = _model_settings(model)
    expected = {k: v for k, v in TUNED.items() if k != "activation_fn"}
    expected["optimizer_lr"] = TUNED["learning_rate"]
    assert {k: got[k] for k in expected} == expected
    assert got["activation_fn"] is nn.ReLU
    assert got["layers"] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert model.n_steps == PLAN.n_steps and model.batch_size == PLAN.batch_size
    assert model.n_envs == PLAN.n_envs
    # ortho_init off: SB3's orthogonal init (unit-norm value head) did not run.
    assert abs(_value_head_norm(model) - 1.0) > 0.05
    if algorithm == "recurrent_ppo":
        assert {k: got[k] for k in TUNED_LSTM} == TUNED_LSTM
        assert got["critic_lstm"] is None and not got["critic_linear"]  # shared: no own input
        assert model.policy.lstm_actor.input_size == model.policy.features_dim
    # SB3 accepts every value through a rollout and an update (clip_range_vf, target_kl paths).
    model.learn(PLAN.n_envs * PLAN.n_steps)
    assert model.num_timesteps == PLAN.n_envs * PLAN.n_steps


def test_ortho_init_on_gives_an_orthogonal_value_head(venv):
    model = build_model(config(algorithm="ppo", net_arch=[8]), PLAN, venv, seed=0)
    assert _value_head_norm(model) == pytest.approx(1.0, abs=1e-5)


def test_a_critic_without_lstm_gets_a_linear_layer_of_the_lstm_width(venv):
    recurrent = {"lstm_hidden_size": 10, "enable_critic_lstm": False}
    cfg = config(algorithm="recurrent_ppo", net_arch=[8], recurrent=recurrent)
    policy = build_model(cfg, PLAN, venv, seed=0).policy
    assert policy.lstm_critic is None
    assert isinstance(policy.critic, nn.Linear) and policy.critic.out_features == 10


def test_a_saved_model_keeps_its_hyperparameters_on_resume(venv, tmp_path):
    training = {"algorithm": "recurrent_ppo", **TUNED, "recurrent": TUNED_LSTM}
    model = build_model(config(**training), PLAN, venv, seed=3)
    model.save(tmp_path / "checkpoint.zip")
    loaded = RecurrentPPO.load(tmp_path / "checkpoint.zip", env=venv, device="cpu")
    assert _model_settings(loaded) == _model_settings(model)


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "key"),
    [
        ("  n_epochs: 0\n", 3, "training.n_epochs"),
        ("  n_epochs: 2.5\n", 3, "training.n_epochs"),
        ("  gae_lambda: 1.5\n", 3, "training.gae_lambda"),
        ("  clip_range: 0\n", 3, "training.clip_range"),
        ("  clip_range: 1.0\n", 3, "training.clip_range"),
        ("  seed: 1\n  clip_range_vf: -0.1\n", 4, "training.clip_range_vf"),
        ("  clip_range_vf: .nan\n", 3, "training.clip_range_vf"),
        ("  normalize_advantage: perhaps\n", 3, "training.normalize_advantage"),
        ("  vf_coef: -1\n", 3, "training.vf_coef"),
        ("  max_grad_norm: 0\n", 3, "training.max_grad_norm"),
        ("  max_grad_norm: .inf\n", 3, "training.max_grad_norm"),
        ("  target_kl: 0\n", 3, "training.target_kl"),
        ("  activation_fn: sigmoid\n", 3, "training.activation_fn"),
        ("  activation_fn: Tanh\n", 3, "training.activation_fn"),
        ("  ortho_init: sometimes\n", 3, "training.ortho_init"),
        ("  recurrent:\n    lstm_hidden_size: 0\n", 4, "training.recurrent.lstm_hidden_size"),
        ("  recurrent:\n    n_lstm_layers: 0\n", 4, "training.recurrent.n_lstm_layers"),
        ("  recurrent:\n    shared_lstm: maybe\n", 4, "training.recurrent.shared_lstm"),
        ("  recurrent: 256\n", 3, "training.recurrent"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key_and_its_line(tmp_path, body, line, key):
    with pytest.raises(ConfigError) as err:
        load_training(tmp_path, body)
    message = str(err.value)
    assert "\n" not in message
    assert re.match(rf".*bad\.yaml:{line}: key '{re.escape(key)}': ", message), message


def test_a_misspelt_recurrent_key_is_an_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match=r"bad\.yaml:4: unknown key 'training\.recurrent\.lstm_"):
        load_training(tmp_path, "  recurrent:\n    lstm_size: 64\n")


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("  algorithm: recurrent_ppo\n  recurrent:\n    shared_lstm: true\n", 5),
        (
            "  recurrent:\n    enable_critic_lstm: true\n    shared_lstm: true\n",
            5,
        ),
    ],
    ids=["shared_lstm alone", "both true"],
)
def test_shared_lstm_with_a_critic_lstm_is_refused(tmp_path, body, line):
    with pytest.raises(ConfigError) as err:
        load_training(tmp_path, body)
    message = str(err.value)
    assert "\n" not in message
    assert f"bad.yaml:{line}: key 'training.recurrent.shared_lstm'" in message
    assert "enable_critic_lstm" in message


def test_shared_lstm_without_a_critic_lstm_is_accepted(tmp_path):
    body = "  recurrent:\n    shared_lstm: true\n    enable_critic_lstm: false\n"
    assert load_training(tmp_path, body).training.recurrent.shared_lstm


@pytest.mark.parametrize(
    ("key", "value"),
    [("lstm_hidden_size", 64), ("n_lstm_layers", 2), ("enable_critic_lstm", "false")],
)
def test_an_lstm_key_with_algorithm_ppo_is_refused(tmp_path, key, value):
    body = f"  algorithm: ppo\n  recurrent:\n    {key}: {value}\n"
    with pytest.raises(ConfigError) as err:
        load_training(tmp_path, body)
    message = str(err.value)
    assert "\n" not in message
    assert f"bad.yaml:5: key 'training.recurrent.{key}': applies only to algorithm" in message


def test_lstm_keys_at_their_defaults_with_algorithm_ppo_load(tmp_path):
    # What a ppo run folder's config.yaml holds: every key written out, defaults included.
    body = "  algorithm: ppo\n  recurrent: {lstm_hidden_size: 256, shared_lstm: false}\n"
    assert load_training(tmp_path, body).training.recurrent == RecurrentConfig()


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("use_sde", "MultiDiscrete"),
        ("sde_sample_freq", "MultiDiscrete"),
        ("n_steps", "hardware plan"),
        ("batch_size", "hardware plan"),
        ("n_envs", "hardware plan"),
        ("policy_kwargs", "activation_fn"),
        ("n_timesteps", "total_timesteps"),
    ],
)
def test_an_rl_zoo_key_ploutos_does_not_take_says_why(tmp_path, key, says):
    with pytest.raises(ConfigError) as err:
        load_training(tmp_path, f"  seed: 0\n  {key}: 4\n")
    message = str(err.value)
    assert "\n" not in message
    assert f"bad.yaml:4: key 'training.{key}': not a training key: " in message
    assert says in message


# ------------------------------------------------------------------------------------------------
# Configs on disk, old and shipped
# ------------------------------------------------------------------------------------------------


def test_there_are_old_run_folders_to_check():
    assert len(FIXTURE_RUNS) >= 1


@pytest.mark.parametrize("path", FIXTURE_RUNS, ids=lambda p: p.parent.name)
def test_an_old_run_folders_config_still_loads_with_sb3_defaults(path):
    training = load_config(path).training
    assert "n_epochs" not in (yaml.safe_load(path.read_text())["training"])
    fresh = TrainingConfig(algorithm=training.algorithm)
    for key in set(SB3_ALGORITHM_KEYS) - {"learning_rate", "gamma", "ent_coef"}:
        assert getattr(training, key) == getattr(fresh, key), key
    assert training.recurrent == RecurrentConfig()


@pytest.mark.parametrize("name", ["demo.yaml", "training_config_v8.yaml"])
def test_shipped_configs_keep_sb3_defaults_and_survive_the_run_folder_round_trip(tmp_path, name):
    cfg = load_config(ROOT / "config" / name)
    fresh = TrainingConfig(algorithm=cfg.training.algorithm)
    new_keys = set(SB3_ALGORITHM_KEYS) - {"learning_rate", "gamma", "ent_coef"}
    new_keys |= {"activation_fn", "ortho_init", "recurrent"}
    assert {k: getattr(cfg.training, k) for k in new_keys} == {
        k: getattr(fresh, k) for k in new_keys
    }
    # train writes the resolved config into the run folder like this; it must load back equal.
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    assert load_config(saved).training == cfg.training


def test_the_algorithm_override_still_applies_to_the_recurrent_config():
    cfg = resolved_config(ROOT / "config" / "training_config_v8.yaml", algorithm="ppo")
    assert cfg.training.algorithm == "ppo"
    assert set(model_kwargs(cfg.training)["policy_kwargs"]) == {
        "net_arch",
        "activation_fn",
        "ortho_init",
    }


# ------------------------------------------------------------------------------------------------
# Trial registry
# ------------------------------------------------------------------------------------------------

CHANGED: dict[str, Any] = {
    "n_epochs": 11,
    "gae_lambda": 0.9,
    "clip_range": 0.1,
    "clip_range_vf": 0.2,
    "normalize_advantage": False,
    "vf_coef": 1.0,
    "max_grad_norm": 1.0,
    "target_kl": 0.01,
    "activation_fn": "relu",
    "ortho_init": False,
    "recurrent": {"lstm_hidden_size": 128},
}


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_changing_a_hyperparameter_changes_the_config_hash(key):
    base = config(algorithm="recurrent_ppo").model_dump(mode="json")
    changed = config(algorithm="recurrent_ppo", **{key: CHANGED[key]}).model_dump(mode="json")
    assert changed["training"] != base["training"]
    assert config_hash(changed) != config_hash(base)
