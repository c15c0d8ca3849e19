"""Where a member's wall time goes, and SB3's training metrics, in its ``member_progress`` events:
real short PPO and RecurrentPPO trainings through ``train_member``, the phase clock on a fake
clock (hand-computed books), SB3's logger read at the right moment, and the readers' side."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from engine.bench.markets import synthetic_market
from engine.config import PloutosConfig
from engine.env.vec_env import BatchedPortfolioVecEnv
from engine.features.compute import FeatureSet
from engine.runs.events import event_problem
from engine.runs.view import SB3_METRICS, TIME_PHASES, RunView
from engine.train import callback as callback_mod
from engine.train.callback import SB3_LOGGER_KEYS, MemberCallback, PhaseClock, sb3_metrics
from engine.train.plan import HardwarePlan
from engine.train.units import MemberTask, build_model, env_config, train_member
from tests.engine.event_lines import STARTED, member_event

ROOT = Path(__file__).resolve().parents[2]
N_BARS, TRAIN_END = 700, 600
N_ENVS, N_STEPS = 4, 128  # 512 timesteps a rollout
N_EPOCHS = 3


@pytest.fixture(autouse=True)
def torch_as_it_was():
    """train_member sets torch's threads and argument validation for the process: put them back."""
    threads = torch.get_num_threads()
    validate = torch.distributions.Distribution._validate_args
    yield
    torch.set_num_threads(threads)
    torch.distributions.Distribution.set_default_validate_args(validate)


def feature_set(seed: int = 3) -> FeatureSet:
    features, prices = synthetic_market(n_bars=N_BARS, n_tickers=3, n_features=4, seed=seed)
    return FeatureSet(
        features=features,
        prices=prices,
        timestamps=np.arange(N_BARS, dtype=np.int64) * 3_600_000_000,
        tradable=np.ones(prices.shape, dtype=bool),
        opens=np.asarray(prices).copy(),
        vwaps=np.full(prices.shape, np.nan),
        tickers=("A", "B", "C"),
        feature_names=("f0", "f1", "f2", "f3"),
    )


def config(**training: Any) -> dict[str, Any]:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["dataset_path"] = "unused"
    # a report about every step, so some fall inside the first rollout however fast the machine
    cfg["training"].update(
        {"n_epochs": N_EPOCHS, "progress_interval_s": 0.001, "checkpoint_every_timesteps": 1024}
    )
    cfg["training"].update(training)
    return PloutosConfig.model_validate(cfg).model_dump(mode="json")


PLAN = HardwarePlan(
    profile="test",
    n_envs=N_ENVS,
    n_steps=N_STEPS,
    batch_size=256,
    parallel_members=1,
    torch_threads=1,
    device="cpu",
    reasons={},
    planned_threads=2,
    machine={},
)
FOLD = {
    "index": 0,
    "train_rows": [0, TRAIN_END],
    "test_rows": [TRAIN_END, N_BARS],
    "train_start": "a",
    "train_end": "b",
    "test_start": "c",
    "test_end": "d",
}


def train(tmp_path: Path, **training: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One member trained by train_member; its events as the trainer would log them."""
    task = MemberTask(
        fold=FOLD,
        member=0,
        seed=7,
        config=config(**training),
        plan=PLAN.to_dict(),
        features_path="unused",
        member_dir=str(tmp_path / "member"),
        checkpoint_dir=str(tmp_path / "checkpoint"),
    )
    events: list[dict[str, Any]] = []

    def report(event: dict[str, Any]) -> None:
        # what the trainer adds before it writes an event, and the writer's JSON rules
        logged = {"ts": "2026-01-01T00:00:00.000Z", **event, "fold": 0, "member": 0}
        events.append(json.loads(json.dumps(logged, allow_nan=False)))

    result = train_member(task, report, lambda: False, features=feature_set())
    return events, result


def progress_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "member_progress"]


def check_progress_events(progress: list[dict[str, Any]], rollouts: int) -> None:
    assert len(progress) >= 2
    for event in progress:
        assert event_problem(event) is None, event
        shares = event["time_shares"]
        assert set(shares) == set(TIME_PHASES)
        assert all(share >= 0 for share in shares.values()), shares
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
        assert set(event["time_s"]) == set(TIME_PHASES)
        assert event["measure_overhead_share"] >= 0
    cumulative = [sum(e["time_s"].values()) for e in progress]
    assert cumulative == sorted(cumulative)  # the books only grow
    final = progress[-1]
    assert final["timesteps"] == rollouts * N_ENVS * N_STEPS
    for phase in ("env", "inference", "gradient", "checkpoint"):
        assert final["time_s"][phase] > 0, phase
    # the first update ends after the first rollout: events before it have no SB3 metrics
    before = [e for e in progress if e["timesteps"] <= N_ENVS * N_STEPS]
    assert before and before[0]["sb3"] is None
    after = [e for e in progress if e["sb3"] is not None]
    assert after and after[-1] is final
    for event in after:
        assert set(event["sb3"]) == set(SB3_METRICS)
        for name, value in event["sb3"].items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
        assert 0 <= event["sb3"]["clip_fraction"] <= 1
        assert event["sb3"]["approx_kl"] >= 0
        assert event["sb3"]["entropy"] > 0  # 3 tickers x 3 actions: at most 3 ln 3
        assert event["sb3"]["entropy"] <= 3 * math.log(3) + 1e-6
        assert event["sb3"]["clip_range"] == pytest.approx(0.2)
    assert final["sb3"]["n_updates"] == rollouts * N_EPOCHS  # the last update is in the last event
    updates = [e["sb3"]["n_updates"] for e in after]
    assert updates == sorted(updates)


def test_ppo_progress_events_carry_the_time_breakdown_and_sb3_metrics(tmp_path):
    events, result = train(tmp_path, total_timesteps=6 * N_ENVS * N_STEPS)
    assert result["status"] == "finished"
    progress = progress_of(events)
    check_progress_events(progress, rollouts=6)
    # every second booked lies inside the unit's own run time
    assert sum(progress[-1]["time_s"].values()) <= result["elapsed_s"]


def test_recurrent_ppo_progress_events_carry_the_time_breakdown_and_sb3_metrics(tmp_path):
    events, result = train(
        tmp_path,
        algorithm="recurrent_ppo",
        total_timesteps=3 * N_ENVS * N_STEPS,
        recurrent={"lstm_hidden_size": 8},
        net_arch=[16],
    )
    assert result["status"] == "finished"
    check_progress_events(progress_of(events), rollouts=3)


def test_metrics_are_read_from_the_logger_sb3_filled_with_no_output_configured():
    """build_model's model logs nowhere (verbose 0, no tensorboard), yet its logger holds the last
    update's values after learn: the callback reports exactly those."""
    cfg = PloutosConfig.model_validate(config(total_timesteps=2 * N_ENVS * N_STEPS))
    fs = feature_set()
    venv = BatchedPortfolioVecEnv(
        fs.features[:TRAIN_END],
        fs.prices[:TRAIN_END],
        N_ENVS,
        env_config(cfg, (0, TRAIN_END)),
        seed=1,
        fill_prices=fs.opens[:TRAIN_END],
    )
    model = build_model(cfg, PLAN, venv, seed=1)
    events: list[dict[str, Any]] = []
    cb = MemberCallback(
        fold=0,
        member=0,
        total=cfg.training.total_timesteps,
        interval_s=1e9,
        checkpoint_every=10**9,
        report=events.append,
        should_stop=lambda: False,
        checkpoint=lambda m: None,
        env_seconds=lambda: venv.step_wait_s,
    )
    model.learn(cfg.training.total_timesteps, callback=cb)
    assert model.logger.output_formats == []
    values = model.logger.name_to_value
    assert cb.sb3 is not None and cb.sb3["n_updates"] == 2 * N_EPOCHS
    for name, key in SB3_LOGGER_KEYS.items():
        want = -values[key] if name == "entropy" else values[key]
        assert cb.sb3[name] == pytest.approx(float(want), rel=1e-5, abs=1e-9), name
    assert events == []  # no report was due
    final = cb.progress()
    assert final["sb3"] == cb.sb3 and final["time_s"]["env"] > 0


# ---------------------------------------------------------------------- the books, by hand
class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_phase_clock_books_each_second_once(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(callback_mod, "perf_counter", fake)
    env = {"s": 50.0}  # the VecEnv's own cumulative step time
    clock = PhaseClock(lambda: env["s"])
    assert clock.env_probe_s == 0 and clock.timed_s == 0  # no time passes on the fake clock
    fake.t += 2  # waiting before the first rollout
    clock.enter("rollout")
    fake.t += 4
    env["s"] += 3  # 3 s of those 4 in step_wait

    def save() -> None:
        fake.t += 1.5

    clock.timed("checkpoint", save)
    fake.t += 2.5
    env["s"] += 1
    clock.enter("rollout")  # a progress report settles the books mid-rollout
    assert clock.seconds == {
        "env": 4.0,
        "inference": 2.5,  # 4 + 1.5 + 2.5 = 8 s of rollout: 4 env, 1.5 checkpoint, 2.5 left
        "gradient": 0.0,
        "checkpoint": 1.5,
        "waiting": 2.0,
    }
    fake.t += 1
    clock.timed("waiting", lambda: setattr(fake, "t", fake.t + 0.25))
    clock.enter("gradient")
    fake.t += 10
    env["s"] += 7  # not in a rollout (say an evaluation of the same env): not this member's env
    clock.enter("rollout")
    fake.t += 1
    env["s"] += 0.5
    clock.enter("waiting")
    assert clock.seconds == {
        "env": 4.5,
        "inference": 4.0,  # 2.5, then 1 s before the stop poll, then 0.5 s of a 1 s rollout
        "gradient": 10.0,
        "checkpoint": 1.5,
        "waiting": 2.25,
    }
    assert sum(clock.seconds.values()) == pytest.approx(fake.t - 100.0)
    assert clock.timed_calls == 2
    with pytest.raises(ValueError, match="no stretch 'env'"):
        clock.enter("env")


def test_sb3_metrics_from_a_logger_dict():
    values: defaultdict[str, float] = defaultdict(float)
    assert sb3_metrics(values) is None and not values  # before any update; nothing added
    values.update(
        {
            "train/policy_gradient_loss": -0.0123456789,
            "train/value_loss": 0.5,
            "train/entropy_loss": -3.2,
            "train/approx_kl": np.float32(0.004),
            "train/clip_fraction": 0.125,
            "train/explained_variance": float("nan"),  # SB3's value for a constant return
            "train/loss": 0.25,
            "train/clip_range": 0.2,
            "train/n_updates": 30,
        }
    )
    got = sb3_metrics(values)
    assert got == {
        "policy_loss": -0.0123457,
        "value_loss": 0.5,
        "entropy": 3.2,
        "approx_kl": pytest.approx(0.004),
        "clip_fraction": 0.125,
        "explained_variance": None,
        "loss": 0.25,
        "clip_range": 0.2,
        "n_updates": 30,
    }
    assert isinstance(got["n_updates"], int)
    json.dumps(got, allow_nan=False)


# ---------------------------------------------------------------------- the readers' side
SHARES = {"env": 0.2, "inference": 0.1, "gradient": 0.65, "checkpoint": 0.01, "waiting": 0.04}
SB3 = {"policy_loss": -0.01, "value_loss": 0.03, "entropy": 3.1, "n_updates": 20}


def test_the_view_keeps_each_members_breakdown_and_metrics_and_status_carries_them():
    view = RunView()
    view.apply(STARTED)
    event = member_event(
        "member_progress",
        1,
        timesteps=50,
        total=100,
        fps=10.0,
        time_shares=SHARES,
        time_s={k: 10 * v for k, v in SHARES.items()},
        sb3=SB3,
        measure_overhead_share=0.001,
    )
    assert view.apply(event)
    m = view.members[(0, 1)]
    assert m.time_shares == SHARES and m.time_s["gradient"] == 6.5
    assert m.sb3 == {name: SB3.get(name) for name in SB3_METRICS}
    assert m.measure_overhead_share == 0.001
    status = view.to_status()
    json.dumps(status, allow_nan=False)
    rows = {(r["fold"], r["member"]): r for r in status["per_member"]}
    assert rows[(0, 1)]["time_shares"] == SHARES and rows[(0, 1)]["sb3"]["n_updates"] == 20
    assert rows[(0, 0)]["time_shares"] is None and rows[(0, 0)]["sb3"] is None
    # a later event without them (an older trainer) leaves the member without them
    assert view.apply(member_event("member_progress", 1, timesteps=60, total=100, fps=10.0))
    assert view.members[(0, 1)].time_shares is None and view.members[(0, 1)].sb3 is None


def test_odd_values_inside_the_objects_read_as_absent_and_wrong_kinds_are_skipped():
    view = RunView()
    view.apply(STARTED)
    odd = json.loads(
        '{"type": "member_progress", "fold": 0, "member": 0, "timesteps": 5, "total": 100,'
        ' "time_shares": {"env": "x", "inference": -0.5, "gradient": 1e400, "waiting": true,'
        ' "extra": 1}, "sb3": {"policy_loss": [1], "n_updates": 2.5, "entropy": 1e400,'
        ' "value_loss": 0.1}}'
    )
    assert view.apply(odd)
    m = view.members[(0, 0)]
    assert m.time_shares == dict.fromkeys(TIME_PHASES)
    assert m.sb3 == {**dict.fromkeys(SB3_METRICS), "value_loss": 0.1}
    json.dumps(view.to_status(), allow_nan=False)
    for field, bad in (("time_shares", [0.5]), ("sb3", "x"), ("measure_overhead_share", "1%")):
        event = member_event("member_progress", 0, timesteps=6, total=100, **{field: bad})
        assert event_problem(event) == f"member_progress: '{field}' is not a valid " + (
            "number" if field == "measure_overhead_share" else "object"
        )
        assert not view.apply(event)
