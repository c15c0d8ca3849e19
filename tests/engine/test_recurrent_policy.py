"""RecurrentLstmPolicy: its one-call LSTM pass equals sb3-contrib's per-step loop (outputs, final
states, gradients) on batches whose episode starts are at position 0 of their sequences, which is
every batch the rollout buffer makes; anything else goes to the loop; models save and load as
RecurrentPPO zips, and the stock policy's models still load."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from torch import nn

from engine.bench.markets import synthetic_market
from engine.config import PloutosConfig
from engine.env.portfolio import PortfolioEnvConfig
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.train.recurrent import RecurrentLstmPolicy, process_sequence
from engine.train.units import build_model

STOCK = RecurrentActorCriticPolicy._process_sequence
# float32: the two group the LSTM's input-product sums differently (all timesteps at once vs
# one at a time), a few ulps on gradients summed over every step; float64: the same maths.
TOLERANCES = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float64: {"rtol": 1e-12, "atol": 1e-12},
}


def _case(dtype: torch.dtype, n_seq: int, length: int, layers: int, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lstm = nn.LSTM(6, 5, num_layers=layers).to(dtype)
    features = torch.randn(n_seq * length, 6, generator=gen, dtype=dtype)
    hidden = torch.randn(layers, n_seq, 5, generator=gen, dtype=dtype)
    cell = torch.randn(layers, n_seq, 5, generator=gen, dtype=dtype)
    return {"lstm": lstm, "features": features, "hidden": hidden, "cell": cell}


def _run(func: Any, case: dict[str, Any], starts: torch.Tensor) -> list[torch.Tensor]:
    """Output, final states and the gradients of a loss of all three, with respect to the
    features, the initial states and every LSTM weight."""
    lstm = case["lstm"]
    inputs = [case[k].clone().requires_grad_(True) for k in ("features", "hidden", "cell")]
    lstm.zero_grad()
    output, (h_n, c_n) = func(inputs[0], (inputs[1], inputs[2]), starts, lstm)
    weights = torch.linspace(-1.0, 1.0, output.shape[-1], dtype=output.dtype)
    loss = (output * weights).square().sum() + h_n.sum() + 2.0 * c_n.pow(3).sum()
    loss.backward()
    grads = [t.grad for t in inputs] + [p.grad.clone() for p in lstm.parameters()]
    return [output.detach(), h_n.detach(), c_n.detach(), *grads]


def _assert_same(ours: list[torch.Tensor], stock: list[torch.Tensor], dtype: torch.dtype) -> None:
    assert len(ours) == len(stock)
    for mine, theirs in zip(ours, stock, strict=True):
        torch.testing.assert_close(mine, theirs, **TOLERANCES[dtype])


@pytest.fixture
def loop_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls into the stock method (the fallback), running it as it is."""
    calls: list[int] = []

    def counted(*args: Any) -> Any:
        calls.append(1)
        return STOCK(*args)

    monkeypatch.setattr(RecurrentActorCriticPolicy, "_process_sequence", staticmethod(counted))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n_seq", "length", "layers"), [(7, 13, 1), (4, 9, 2), (3, 1, 1)])
def test_starts_at_position_zero_run_in_one_call_equal_to_the_loop(
    dtype, n_seq, length, layers, loop_calls
):
    case = _case(dtype, n_seq, length, layers, seed=n_seq * 100 + length)
    starts = torch.zeros(n_seq, length, dtype=dtype)
    starts[::2, 0] = 1.0  # some sequences start an episode, the others carry their state on
    starts = starts.flatten()
    stock = _run(STOCK, case, starts)
    ours = _run(process_sequence, case, starts)
    assert loop_calls == []  # the one-call path
    _assert_same(ours, stock, dtype)
    # and the reset did something: sequences that start an episode ignore their initial state
    assert torch.all(ours[4][:, ::2] == 0) and torch.any(ours[4][:, 1::2] != 0)


def test_no_start_at_all_is_sb3_contrib_s_own_one_call_path(loop_calls):
    case = _case(torch.float32, 5, 8, 1, seed=1)
    starts = torch.zeros(5 * 8)
    _assert_same(_run(process_sequence, case, starts), _run(STOCK, case, starts), torch.float32)
    assert loop_calls == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_start_past_position_zero_falls_back_to_the_loop(dtype, loop_calls):
    case = _case(dtype, 4, 10, 1, seed=7)
    starts = torch.zeros(4, 10, dtype=dtype)
    starts[0, 0] = 1.0
    starts[2, 6] = 1.0  # mid-sequence: only the loop resets there
    starts = starts.flatten()
    stock = _run(STOCK, case, starts)
    ours = _run(process_sequence, case, starts)
    assert loop_calls == [1]
    _assert_same(ours, stock, dtype)


# ------------------------------------------------------------------------------------------------
# In training
# ------------------------------------------------------------------------------------------------

# build_model reads only the rollout shape and the device; 20-bar episodes start mid-rollout.
PLAN = SimpleNamespace(n_envs=2, n_steps=32, batch_size=16, device="cpu")
CFG = PloutosConfig.model_validate(
    {
        "dataset_path": "x",
        "training": {
            "algorithm": "recurrent_ppo",
            "net_arch": [8],
            "n_epochs": 2,
            "recurrent": {"lstm_hidden_size": 4},
        },
    }
)


@pytest.fixture
def venv():
    features, prices = synthetic_market(n_bars=300, n_tickers=2, n_features=3, seed=4)
    env = BatchedPortfolioVecEnv(
        features, prices, PLAN.n_envs, PortfolioEnvConfig(episode_length=20), seed=2
    )
    yield env
    env.close()


def _trained(venv: Any, policy: Any = None) -> Any:
    model = build_model(CFG, PLAN, venv, seed=0, policy=policy)
    model.learn(2 * PLAN.n_envs * PLAN.n_steps)
    return model


def test_build_model_uses_our_policy_with_the_stock_one_s_weights(venv):
    ours = build_model(CFG, PLAN, venv, seed=0)
    stock = build_model(CFG, PLAN, venv, seed=0, policy="MlpLstmPolicy")
    assert type(ours.policy) is RecurrentLstmPolicy
    assert type(stock.policy) is RecurrentActorCriticPolicy
    theirs = stock.policy.state_dict()
    assert list(ours.policy.state_dict()) == list(theirs)
    for name, tensor in ours.policy.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name], rtol=0, atol=0)


def test_every_training_batch_has_its_starts_at_position_zero_and_matches_the_loop(
    venv, loop_calls
):
    model = _trained(venv)
    buffer = model.rollout_buffer
    assert buffer.episode_starts.sum() > PLAN.n_envs  # episodes started inside the rollout
    policy = model.policy
    loop_calls.clear()
    batches = 0
    for data in buffer.get(PLAN.batch_size):
        n_seq = data.lstm_states.pi[0].shape[1]
        starts = data.episode_starts.reshape(n_seq, -1)
        assert torch.all(starts[:, 1:] == 0)
        batches += int(bool(starts.any()))
        args = (data.observations, data.actions.long(), data.lstm_states, data.episode_starts)
        ours = policy.evaluate_actions(*args)
        policy._process_sequence = STOCK  # this instance only: the stock loop
        stock = policy.evaluate_actions(*args)
        del policy._process_sequence
        for mine, theirs in zip(ours, stock, strict=True):
            torch.testing.assert_close(mine, theirs, **TOLERANCES[torch.float32])
    assert batches >= 2  # batches with starts were compared
    assert loop_calls == []


def _policy_class_pickle(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read("data"))
    return base64.b64decode(data["policy_class"][":serialized:"])


def _actions(model: Any, obs: np.ndarray) -> np.ndarray:
    actions, _ = model.predict(obs, state=None, episode_start=np.ones(len(obs)), deterministic=True)
    return actions


def test_our_model_saves_and_loads_as_a_recurrent_ppo_zip(venv, tmp_path):
    model = _trained(venv)
    model.save(tmp_path / "ours.zip")
    # stored by reference (module and name), not by value: no method of it in the zip
    raw = _policy_class_pickle(tmp_path / "ours.zip")
    assert b"engine.train.recurrent" in raw and b"RecurrentLstmPolicy" in raw
    assert b"process_sequence" not in raw
    loaded = RecurrentPPO.load(tmp_path / "ours.zip", device="cpu")
    assert type(loaded.policy) is RecurrentLstmPolicy
    for name, tensor in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[name], tensor, rtol=0, atol=0)
    obs = venv.reset()
    np.testing.assert_array_equal(_actions(loaded, obs), _actions(model, obs))


def test_a_stock_policy_model_still_loads_and_evaluates(venv, tmp_path):
    model = _trained(venv, policy="MlpLstmPolicy")
    model.save(tmp_path / "stock.zip")
    loaded = RecurrentPPO.load(tmp_path / "stock.zip", device="cpu")
    assert type(loaded.policy) is RecurrentActorCriticPolicy
    obs = venv.reset()
    state, starts = None, np.ones(PLAN.n_envs)
    state_ref = None
    for _ in range(5):  # a few steps with the LSTM state carried
        actions, state = loaded.predict(obs, state=state, episode_start=starts, deterministic=True)
        expected, state_ref = model.predict(
            obs, state=state_ref, episode_start=starts, deterministic=True
        )
        np.testing.assert_array_equal(actions, expected)
        obs, _, dones, _ = venv.step(actions)
        starts = dones.astype(np.float32)
