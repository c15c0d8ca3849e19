"""Units of work: one ensemble member trained, one fold evaluated.

Each unit is a self-contained function of plain data (the resolved config, the plan, one fold, a
seed, the path of the shared feature cache), so any executor can run it as is:

- :func:`train_member`: one ensemble member on one fold's train window, with checkpoints;
- :func:`evaluate_fold`: the fold's ensemble out of sample (vote), against buy-and-hold, and its
  Monte Carlo statistics.

Units report progress through a ``report(event)`` callable and poll ``should_stop()``; they
never write the event log themselves. torch and SB3 are imported only when a unit runs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import atomic
from engine.config import TORCH_ACTIVATIONS, PloutosConfig, TrainingConfig
from engine.errors import PloutosError
from engine.train.executors.base import Report, ShouldStop, UnitKey
from engine.train.faults import fault, park
from engine.train.folds import Fold

if TYPE_CHECKING:
    from engine.train.plan import HardwarePlan


@dataclass(frozen=True)
class MemberTask:
    """Everything one member needs; JSON-safe so it can cross any process or machine boundary."""

    fold: dict[str, Any]
    member: int
    seed: int
    config: dict[str, Any]
    plan: dict[str, Any]
    features_path: str
    member_dir: str
    checkpoint_dir: str
    tensorboard_dir: str | None = None

    kind = "member"

    @property
    def key(self) -> UnitKey:
        return ("member", int(self.fold["index"]), self.member)


@dataclass(frozen=True)
class FoldTask:
    """Evaluation of one fold's ensemble: the members' folders and where results go."""

    fold: dict[str, Any]
    config: dict[str, Any]
    plan: dict[str, Any]
    features_path: str
    member_dirs: tuple[str, ...]
    result_path: str
    montecarlo_path: str
    trials_path: str
    permutation_path: str

    kind = "evaluate"

    @property
    def key(self) -> UnitKey:
        return ("evaluate", int(self.fold["index"]), -1)


def _algorithm_class(name: str) -> type:
    if name == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    from stable_baselines3 import PPO

    return PPO


# TrainingConfig keys passed to the SB3 algorithm under the same name (PPO and RecurrentPPO
# take the same ones); the policy's keys are in model_kwargs.
SB3_ALGORITHM_KEYS = (
    "learning_rate",
    "gamma",
    "ent_coef",
    "n_epochs",
    "gae_lambda",
    "clip_range",
    "clip_range_vf",
    "normalize_advantage",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
)


def model_kwargs(training: TrainingConfig) -> dict[str, Any]:
    """The SB3 keyword arguments of ``training``: the algorithm's (``SB3_ALGORITHM_KEYS``) and
    ``policy_kwargs`` (``net_arch``, ``activation_fn`` as its torch.nn class, ``ortho_init`` and,
    for ``recurrent_ppo``, the ``recurrent`` section's LSTM keys). The rollout shape, seed and
    device are not among them: they come from the hardware plan and the task."""
    from torch import nn

    policy_kwargs: dict[str, Any] = {
        "net_arch": list(training.net_arch),
        "activation_fn": getattr(nn, TORCH_ACTIVATIONS[training.activation_fn]),
        "ortho_init": training.ortho_init,
    }
    if training.algorithm == "recurrent_ppo":
        policy_kwargs.update(training.recurrent.model_dump())
    kwargs = {key: getattr(training, key) for key in SB3_ALGORITHM_KEYS}
    return {**kwargs, "policy_kwargs": policy_kwargs}


def build_model(
    cfg: PloutosConfig,
    plan: HardwarePlan,
    venv: Any,
    seed: int,
    *,
    tensorboard_dir: str | None = None,
    policy: Any = None,
) -> Any:
    """A new, untrained SB3 model of ``cfg.training`` on ``venv`` (what :func:`train_member`
    trains): ``PPO("MlpPolicy")`` or ``RecurrentPPO`` with
    :class:`engine.train.recurrent.RecurrentLstmPolicy` (sb3-contrib's ``MlpLstmPolicy`` with
    its LSTM run in one call over a training batch; same saved format) with
    :func:`model_kwargs`, and ``n_steps``, ``batch_size`` and ``device`` from ``plan``
    (``n_envs`` is ``venv.num_envs``, which the caller sized from the plan).

    ``policy``: another SB3 policy (a class or SB3's name, e.g. ``"MlpLstmPolicy"``, the stock
    one ``ploutos bench walkforward`` sets ours against); default the one above."""
    training = cfg.training
    if policy is None and training.algorithm == "recurrent_ppo":
        from engine.train.recurrent import RecurrentLstmPolicy

        policy = RecurrentLstmPolicy
    elif policy is None:
        policy = "MlpPolicy"
    return _algorithm_class(training.algorithm)(
        policy,
        venv,
        n_steps=plan.n_steps,
        batch_size=plan.batch_size,
        seed=seed,
        device=plan.device,
        tensorboard_log=tensorboard_dir,
        verbose=0,
        **model_kwargs(training),
    )


def env_config(cfg: PloutosConfig, rows: tuple[int, int], *, evaluation: bool = False):
    """The :class:`~engine.env.portfolio.PortfolioEnvConfig` of ``cfg.env`` on the bars ``rows``:
    training episodes of ``env.episode_length``; with ``evaluation``, one episode over the whole
    window and no early stop at ruin."""
    from engine.env.portfolio import PortfolioEnvConfig

    return PortfolioEnvConfig(
        window_start=rows[0],
        window_end=rows[1],
        episode_length=(rows[1] - rows[0]) if evaluation else cfg.env.episode_length,
        lookback=cfg.env.lookback,
        commission_bps=cfg.env.commission_bps,
        slippage_bps=cfg.env.slippage_bps,
        fill=cfg.env.fill,
        # Out of sample we want the whole path, ruin included, not an early stop.
        **({"ruin_fraction": 0.0} if evaluation else {}),
    )


def _sliced(values: np.ndarray | None, end: int) -> np.ndarray | None:
    return None if values is None else values[:end]


def _save_model(model: Any, target: Path) -> None:
    """SB3 ``save`` into a temporary file, then rename: a reader never sees half a zip."""

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            model.save(fh)

    atomic.write_with(target, writer)


def member_is_finished(member_dir: str | Path) -> bool:
    """A member counts as finished only when its model matches the checksum it recorded."""
    member_dir = Path(member_dir)
    try:
        info = json.loads((member_dir / "member.json").read_text())
        return info.get("sha256") == atomic.file_sha256(member_dir / "model.zip")
    except (OSError, ValueError, AttributeError):
        return False


def make_member_callback(
    task: MemberTask,
    total: int,
    report: Report,
    should_stop: ShouldStop,
    checkpoint: Callable[[Any], None],
    env_seconds: Callable[[], float] | None = None,
) -> Any:
    """The SB3 callback of ``task`` (a :class:`engine.train.callback.MemberCallback`); imported
    here, so importing this module needs no SB3. ``env_seconds()``: the VecEnv's cumulative
    stepping time, for the progress events' time breakdown."""
    from engine.train.callback import MemberCallback

    training = task.config["training"]
    return MemberCallback(
        fold=int(task.fold["index"]),
        member=task.member,
        total=total,
        interval_s=float(training["progress_interval_s"]),
        checkpoint_every=int(training["checkpoint_every_timesteps"]),
        report=report,
        should_stop=should_stop,
        checkpoint=checkpoint,
        env_seconds=env_seconds,
    )


def torch_settings(torch: Any, threads: int) -> None:
    """The plan's intra-op threads; and no argument validation in torch distributions: SB3 builds
    one Categorical per ticker per forward pass, and checking their arguments costs more than the
    environment step (profiled in ``ploutos bench train``)."""
    torch.set_num_threads(threads)
    torch.distributions.Distribution.set_default_validate_args(False)


def train_member(
    task: MemberTask,
    report: Report,
    should_stop: ShouldStop,
    features: Any = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Train (or continue from its checkpoint) one member on its fold's train window.

    Returns ``{"status": "finished" | "stopped", "timesteps", ...}``. Its ``member_progress``
    events say where its wall time goes (env stepping timed in the VecEnv) and carry SB3's
    training metrics (docs/events.md). Artifacts in
    ``task.member_dir``: ``model.zip``, ``normalizer.npz``, ``member.json`` (written last: its
    presence with a matching sha256 is what "finished" means on resume).

    ``features``: an already attached :class:`~engine.features.compute.FeatureSet` (e.g. arrays from
    Ray's object store); default: memory-map ``task.features_path``. ``on_checkpoint(folder)``
    is called after each checkpoint is written (an executor without a shared filesystem ships
    it home from there).
    """
    import torch

    from engine.env.vec_env import BatchedPortfolioVecEnv
    from engine.features.cache import open_features
    from engine.features.normalize import fit_normalizer
    from engine.train.plan import HardwarePlan

    started = time.monotonic()
    cfg = PloutosConfig.model_validate(task.config)
    plan = HardwarePlan.from_dict(task.plan)
    torch_settings(torch, plan.torch_threads)
    fold = Fold.from_dict(task.fold)
    member_dir, ckpt_dir = Path(task.member_dir), Path(task.checkpoint_dir)
    member_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_zip = ckpt_dir / "checkpoint.zip"

    fs = features if features is not None else open_features(task.features_path)
    end = fold.train_rows[1]
    norm_cfg = cfg.features.normalization
    normalizer = fit_normalizer(fs.features, fold.train_rows, norm_cfg.method, norm_cfg.clip)
    features = normalizer.apply(fs.features[:end])
    venv = BatchedPortfolioVecEnv(
        features,
        fs.prices[:end],
        plan.n_envs,
        env_config(cfg, fold.train_rows),
        seed=task.seed,
        tradable=fs.tradable[:end],
        fill_prices=_sliced(fs.fill_prices(cfg.env.fill), end),
    )
    algo = _algorithm_class(cfg.training.algorithm)
    total = cfg.training.total_timesteps
    resumed_from = 0
    if ckpt_zip.exists():
        model = algo.load(ckpt_zip, env=venv, device=plan.device)
        resumed_from = int(model.num_timesteps)
    else:
        model = build_model(cfg, plan, venv, task.seed, tensorboard_dir=task.tensorboard_dir)
    report(
        {
            "type": "member_started",
            "timesteps": resumed_from,
            "total": total,
            "seed": task.seed,
            "resumed_from": resumed_from,
            "device": str(model.device),
            **worker_thread_report(),
        }
    )

    def checkpoint(m: Any) -> None:
        _save_model(m, ckpt_zip)
        atomic.write_json(
            ckpt_dir / "checkpoint.json", {"timesteps": int(m.num_timesteps), "seed": task.seed}
        )
        if on_checkpoint is not None:
            on_checkpoint(ckpt_dir)

    callback = make_member_callback(
        task, total, report, should_stop, checkpoint, env_seconds=lambda: venv.step_wait_s
    )
    remaining = total - resumed_from
    if remaining > 0:
        model.learn(
            remaining,
            callback=callback,
            reset_num_timesteps=resumed_from == 0,
            tb_log_name=f"fold_{fold.index:02d}_member_{task.member:02d}",
        )
    venv.close()
    if callback.stopped:
        checkpoint(model)
        return {"status": "stopped", "timesteps": int(model.num_timesteps)}
    if remaining > 0:
        report(callback.progress())
    _save_model(model, member_dir / "model.zip")
    normalizer.save(member_dir / "normalizer.npz")
    sha = atomic.file_sha256(member_dir / "model.zip")
    info = {
        "fold": fold.index,
        "member": task.member,
        "seed": task.seed,
        "algorithm": cfg.training.algorithm,
        "timesteps": int(model.num_timesteps),
        "resumed_from": resumed_from,
        "sha256": sha,
    }
    atomic.write_json(member_dir / "member.json", info)
    return {
        "status": "finished",
        "timesteps": int(model.num_timesteps),
        "elapsed_s": round(time.monotonic() - started, 3),
        "model": str(member_dir / "model.zip"),
        "sha256": sha,
        "resumed_from": resumed_from,
    }


class UnitStopped(BaseException):
    """A unit with nothing worth keeping (an evaluation) abandons its work when told to stop.

    A BaseException, so no ``except Exception`` in a library swallows it on the way out."""


def evaluate_fold(task: FoldTask, report: Report, should_stop: ShouldStop) -> dict[str, Any]:
    """Out-of-sample metrics of the fold's ensemble (and of each member), buy-and-hold of the same
    tickers (also exposure-matched), the cost-sensitivity table, Monte Carlo of the ensemble and of
    the null policies on the test window, and the timing-skill test; writes ``trials_path`` (the
    members' per-bar returns), ``permutation_path``, ``montecarlo_path`` and, last,
    ``result_path`` (fields in docs/results.md).

    Told to stop (stop asked, or the trainer died), it returns ``{"status": "stopped"}`` having
    written nothing: a result file exists only for an evaluation its trainer asked for and saw.
    """
    try:
        return _evaluate_fold(task, report, should_stop)
    except UnitStopped:
        return {"status": "stopped"}


def _evaluate_fold(task: FoldTask, report: Report, should_stop: ShouldStop) -> dict[str, Any]:
    import torch

    from engine.evaluation.evaluate import (
        EnsemblePolicy,
        MembersPolicy,
        bars_per_year,
        buy_and_hold,
        run_pass,
    )
    from engine.evaluation.montecarlo import MONTECARLO_KIND, compare_policies
    from engine.evaluation.robustness import cost_sensitivity, timing_test
    from engine.evaluation.skill import seed_dispersion
    from engine.evaluation.trials import FoldTrials
    from engine.features.cache import open_features
    from engine.features.normalize import Normalizer
    from engine.train.plan import HardwarePlan

    def check_stop() -> None:
        if should_stop():
            raise UnitStopped("stop requested")

    started = time.monotonic()
    cfg = PloutosConfig.model_validate(task.config)
    plan = HardwarePlan.from_dict(task.plan)
    torch_settings(torch, plan.torch_threads)
    fold = Fold.from_dict(task.fold)
    if not task.member_dirs:
        raise PloutosError(f"{fold.name}: no finished member to evaluate")
    fs = open_features(task.features_path)
    start, end = fold.test_rows
    normalizer = Normalizer.load(Path(task.member_dirs[0]) / "normalizer.npz")
    features = normalizer.apply(fs.features[:end])
    prices, tradable = fs.prices[:end], fs.tradable[:end]
    fills = _sliced(fs.fill_prices(cfg.env.fill), end)
    market = (features, prices, tradable)
    algo = _algorithm_class(cfg.training.algorithm)
    models = [algo.load(Path(d) / "model.zip", device=plan.device) for d in task.member_dirs]
    seeds = [_member_seed(Path(d)) for d in task.member_dirs]
    if fault(("pause-eval",), str(fold.index)) is not None:
        park(report, should_stop, {"type": "evaluation_paused"})
    check_stop()
    env_cfg = env_config(cfg, fold.test_rows, evaluation=True)
    per_year = bars_per_year(np.asarray(fs.timestamps))
    vote = cfg.training.vote
    policy = EnsemblePolicy(models, vote=vote)
    verdict_cfg = cfg.verdict

    ensemble = run_pass(policy, *market, fold.test_rows, env_cfg, fill_prices=fills)
    oos = ensemble.metrics(0, per_year)
    check_stop()
    # Every member alone (one portfolio each, one batch): the run's trials.
    alone = run_pass(
        MembersPolicy(models, vote=vote),
        *market,
        fold.test_rows,
        env_cfg,
        n=len(models),
        fill_prices=fills,
    )
    members = [alone.metrics(i, per_year).to_dict() for i in range(len(models))]
    trials = FoldTrials(
        fold=fold.index,
        timestamps=np.asarray(fs.timestamps[start : end - 1], dtype=np.int64),
        returns=alone.simple_returns(),
        seeds=np.asarray(seeds, dtype=np.int64),
        members=np.asarray([_member_index(Path(d)) for d in task.member_dirs], dtype=np.int64),
    )
    exposure = float(oos.mean_exposure or 0.0)
    bench = {"tradable": tradable, "fill_prices": fills}
    bh = buy_and_hold(prices, fold.test_rows, env_cfg, per_year, **bench)
    matched = buy_and_hold(prices, fold.test_rows, env_cfg, per_year, weight=exposure, **bench)
    check_stop()
    costs = cost_sensitivity(
        policy, *market, fold.test_rows, env_cfg, verdict_cfg.cost_multipliers, fill_prices=fills
    )
    check_stop()
    comparison = compare_policies(
        policy,
        *market,
        fold.test_rows,
        env_cfg,
        cfg.monte_carlo,
        seed=cfg.monte_carlo.seed + fold.index,
        fill_prices=fills,
    )
    check_stop()
    timing = timing_test(
        policy,
        *market,
        fold.test_rows,
        env_cfg,
        verdict_cfg.permutations,
        verdict_cfg.permutation_block_bars,
        seed=verdict_cfg.seed + fold.index,
        fill_prices=fills,
        timestamps=np.asarray(fs.timestamps),
    )
    check_stop()
    mc = comparison.summary(cfg.monte_carlo.histogram_bins)
    result = {
        "fold": fold.to_dict(),
        "members_used": len(models),
        "member_dirs": [str(d) for d in task.member_dirs],
        "vote": vote,
        "fill": cfg.env.fill,
        "fill_optimistic": cfg.env.fill == "close",
        "oos": oos.to_dict(),
        "buy_and_hold": bh.to_dict(),
        "buy_and_hold_matched": {**matched.to_dict(), "exposure": exposure},
        "members": members,
        "seed_dispersion": seed_dispersion([m["total_return"] for m in members]).to_dict(),
        "cost_sensitivity": costs,
        "montecarlo": mc["montecarlo"],
        "montecarlo_kind": MONTECARLO_KIND,
        "nulls": mc["nulls"],
        "timing": timing.to_dict(),
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    # The result file last: a fold counts as evaluated only once every file of it is there.
    comparison.save(task.montecarlo_path)
    trials.save(task.trials_path)
    timing.save(task.permutation_path)
    atomic.write_json(task.result_path, result)
    return result


def _member_seed(member_dir: Path) -> int:
    try:
        return int(json.loads((member_dir / "member.json").read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1  # an older member without its seed recorded


def _member_index(member_dir: Path) -> int:
    name = member_dir.name  # member_03
    return int(name.rsplit("_", 1)[-1]) if name.rsplit("_", 1)[-1].isdigit() else -1


UNITS: dict[str, Callable[[Any, Report, ShouldStop], dict[str, Any]]] = {
    "member": train_member,
    "evaluate": evaluate_fold,
}


def task_from_dict(kind: str, data: dict[str, Any]) -> MemberTask | FoldTask:
    if kind == "member":
        return MemberTask(**data)
    data = dict(data)
    data["member_dirs"] = tuple(data["member_dirs"])
    return FoldTask(**data)


GPU_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


def worker_thread_report() -> dict[str, Any]:
    """Thread settings in effect in this process, as threadpoolctl and torch see them."""
    from threadpoolctl import threadpool_info

    from engine.system.threads import THREAD_VARS

    pools = [
        {
            "api": p.get("internal_api"),
            "num_threads": p.get("num_threads"),
            "library": Path(p.get("filepath", "")).name,
        }
        for p in threadpool_info()
    ]
    torch = sys.modules.get("torch")
    return {
        "pid": os.getpid(),
        "node": socket.gethostname(),
        "torch_threads": torch.get_num_threads() if torch else None,
        "threadpools": pools,
        "env": {name: os.environ.get(name) for name in THREAD_VARS},
        # the GPU the executor gave this worker (None on cpu and where nothing was set)
        "gpu_env": {name: os.environ.get(name) for name in GPU_VARS},
    }
