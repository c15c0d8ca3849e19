"""Walk-forward ensemble training: units of work, the local executor and the run orchestrator.

Two kinds of unit, each a self-contained function of plain data (the resolved config, the plan,
one fold, a seed, the path of the shared feature cache), so another executor can run them as is:

- :func:`train_member`: one ensemble member on one fold's train window, with checkpoints;
- :func:`evaluate_fold`: the fold's ensemble out of sample (vote), against buy-and-hold, and its
  Monte Carlo statistics.

Units report progress through a ``report(event)`` callable and poll ``should_stop()``; they
never write the event log themselves. :class:`LocalExecutor` runs each unit in its own worker
process (a crash in one member cannot take the others down) started from a forkserver that has
torch and stable-baselines3 already imported. :class:`Trainer` owns the run folder: it
schedules the units, writes ``events.jsonl`` and ``status.json``, and handles stop and resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from engine import atomic
from engine.config import PloutosConfig, load_config
from engine.errors import PloutosError
from engine.runs.folder import HEARTBEAT_S, EventLog, RunFolder, RunView, utc_stamp
from engine.system.threads import memory_hint
from engine.train.folds import Fold

log = logging.getLogger("ploutos.trainer")

Report = Callable[[dict[str, Any]], None]
ShouldStop = Callable[[], bool]

# Test hook, documented in docs/events.md: PLOUTOS_FAULT holds comma-separated faults.
# "raise@F/M" (or "exit@F/M") makes member M of fold F fail at its first environment step, the way
# a bug (or a segfault) would; "pause@F/M:STEPS" parks it, checkpointed, once it has STEPS
# timesteps, and "pause-eval@F" parks fold F's evaluation before it writes anything, so a test
# can stop or kill the run while that unit is provably still at work instead of racing it.
FAULT_ENV = "PLOUTOS_FAULT"
PAUSE_POLL_S = 0.05


# ---------------------------------------------------------------------------------- units
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
    def key(self) -> tuple[str, int, int]:
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

    kind = "evaluate"

    @property
    def key(self) -> tuple[str, int, int]:
        return ("evaluate", int(self.fold["index"]), -1)


def _algorithm_class(name: str) -> type:
    if name == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    from stable_baselines3 import PPO

    return PPO


def _env_config(cfg: PloutosConfig, rows: tuple[int, int], *, evaluation: bool = False):
    from engine.env.portfolio import PortfolioEnvConfig

    return PortfolioEnvConfig(
        window_start=rows[0],
        window_end=rows[1],
        episode_length=(rows[1] - rows[0]) if evaluation else cfg.env.episode_length,
        lookback=cfg.env.lookback,
        commission_bps=cfg.env.commission_bps,
        slippage_bps=cfg.env.slippage_bps,
        # Out of sample we want the whole path, ruin included, not an early stop.
        **({"ruin_fraction": 0.0} if evaluation else {}),
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        return info.get("sha256") == file_sha256(member_dir / "model.zip")
    except (OSError, ValueError, AttributeError):
        return False


def _fault(kinds: tuple[str, ...], where: str) -> tuple[str, str] | None:
    """The first ``(kind, argument)`` of ``$PLOUTOS_FAULT`` aimed at ``where`` ("F/M" or "F")."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        kind, _, target = item.strip().partition("@")
        target, _, argument = target.partition(":")
        if kind in kinds and target == where:
            return kind, argument
    return None


def _maybe_inject_fault(fold: int, member: int) -> None:
    found = _fault(("raise", "exit"), f"{fold}/{member}")
    if found is None:
        return
    if found[0] == "exit":
        os._exit(3)
    raise RuntimeError(f"injected fault ({FAULT_ENV}={found[0]}@{fold}/{member})")


def _pause_steps(fold: int, member: int) -> int | None:
    """Timesteps after which ``pause@F/M:STEPS`` parks this member; None without that fault."""
    found = _fault(("pause",), f"{fold}/{member}")
    return int(found[1] or 0) if found is not None else None


def _park(report: Report, should_stop: ShouldStop, event: dict[str, Any]) -> None:
    """Report ``event`` (with this process's ``pid``), then wait until the unit is told to stop
    (stop, or its trainer died) or this process gets SIGUSR1 (the unit goes on)."""
    released = {"flag": False}

    def release(_signum: int, _frame: Any) -> None:
        released["flag"] = True

    try:
        previous = signal.signal(signal.SIGUSR1, release)
    except ValueError:  # not the main thread (a Ray task): only stop releases it
        previous = None
    try:
        report({**event, "pid": os.getpid()})
        log.info("%s: parked by %s until stopped", event["type"], FAULT_ENV)
        while not should_stop() and not released["flag"]:
            time.sleep(PAUSE_POLL_S)
    finally:
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)


class _MemberCallback:
    """SB3 callback: progress reports, periodic checkpoints, graceful stop."""

    def __new__(cls, *args: Any, **kwargs: Any):  # built lazily so importing needs no SB3
        from stable_baselines3.common.callbacks import BaseCallback

        class MemberCallback(BaseCallback):
            def __init__(
                self,
                task: MemberTask,
                total: int,
                report: Report,
                should_stop: ShouldStop,
                checkpoint: Callable[[Any], None],
            ) -> None:
                super().__init__()
                cfg = task.config["training"]
                self.task = task
                self.total = total
                self.report = report
                self.should_stop = should_stop
                self.checkpoint = checkpoint
                self.interval_s = float(cfg["progress_interval_s"])
                self.checkpoint_every = int(cfg["checkpoint_every_timesteps"])
                self.stopped = False
                self.fault_checked = False
                self.pause_at = _pause_steps(int(task.fold["index"]), task.member)

            def _on_training_start(self) -> None:
                n = self.training_env.num_envs
                self.episode_return = np.zeros(n)
                self.returns: deque[float] = deque(maxlen=100)
                self.t0 = time.monotonic()
                self.t_last = self.t0
                self.start_steps = self.num_timesteps
                self.last_checkpoint = self.num_timesteps

            def progress(self) -> dict[str, Any]:
                elapsed = max(time.monotonic() - self.t0, 1e-9)
                return {
                    "type": "member_progress",
                    "timesteps": int(self.num_timesteps),
                    "total": self.total,
                    "fps": round((self.num_timesteps - self.start_steps) / elapsed, 1),
                    "mean_reward": round(float(np.mean(self.returns)), 6) if self.returns else None,
                    "episodes": len(self.returns),
                }

            def _on_step(self) -> bool:
                rewards = np.asarray(self.locals["rewards"], dtype=np.float64)
                dones = np.asarray(self.locals["dones"], dtype=bool)
                self.episode_return += rewards
                if dones.any():
                    self.returns.extend(self.episode_return[dones].tolist())
                    self.episode_return[dones] = 0.0
                if not self.fault_checked:
                    self.fault_checked = True
                    _maybe_inject_fault(int(self.task.fold["index"]), self.task.member)
                now = time.monotonic()
                if now - self.t_last >= self.interval_s:
                    self.t_last = now
                    self.report(self.progress())
                if self.num_timesteps - self.last_checkpoint >= self.checkpoint_every:
                    self.last_checkpoint = self.num_timesteps
                    self.checkpoint(self.model)
                if self.pause_at is not None and self.num_timesteps >= self.pause_at:
                    self.pause_at = None
                    if self.last_checkpoint != self.num_timesteps:
                        self.last_checkpoint = self.num_timesteps
                        self.checkpoint(self.model)
                    paused = {"type": "member_paused", "timesteps": int(self.num_timesteps)}
                    _park(self.report, self.should_stop, paused)
                if self.should_stop():
                    self.stopped = True
                    return False
                return True

        return MemberCallback(*args, **kwargs)


def _torch_settings(torch: Any, threads: int) -> None:
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

    Returns ``{"status": "finished" | "stopped", "timesteps", ...}``. Artifacts in
    ``task.member_dir``: ``model.zip``, ``normalizer.npz``, ``member.json`` (written last: its
    presence with a matching sha256 is what "finished" means on resume).

    ``features``: an already attached :class:`~engine.features.compute.FeatureSet` (e.g. arrays from
    Ray's object store); default: memory-map ``task.features_path``. ``on_checkpoint(folder)``
    is called after each checkpoint is written (an executor without a shared filesystem ships
    it home from there).
    """
    import torch

    from engine.env.vec_env import BatchedPortfolioVecEnv
    from engine.features.compute import fit_normalizer, open_features
    from engine.train.plan import HardwarePlan

    started = time.monotonic()
    cfg = PloutosConfig.model_validate(task.config)
    plan = HardwarePlan.from_dict(task.plan)
    _torch_settings(torch, plan.torch_threads)
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
        _env_config(cfg, fold.train_rows),
        seed=task.seed,
        tradable=fs.tradable[:end],
    )
    algo = _algorithm_class(cfg.training.algorithm)
    total = cfg.training.total_timesteps
    resumed_from = 0
    if ckpt_zip.exists():
        model = algo.load(ckpt_zip, env=venv, device=plan.device)
        resumed_from = int(model.num_timesteps)
    else:
        policy = "MlpLstmPolicy" if cfg.training.algorithm == "recurrent_ppo" else "MlpPolicy"
        model = algo(
            policy,
            venv,
            n_steps=plan.n_steps,
            batch_size=plan.batch_size,
            learning_rate=cfg.training.learning_rate,
            gamma=cfg.training.gamma,
            ent_coef=cfg.training.ent_coef,
            policy_kwargs={"net_arch": list(cfg.training.net_arch)},
            seed=task.seed,
            device=plan.device,
            tensorboard_log=task.tensorboard_dir,
            verbose=0,
        )
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

    callback = _MemberCallback(task, total, report, should_stop, checkpoint)
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
    sha = file_sha256(member_dir / "model.zip")
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
    tickers, and Monte Carlo on the test window; writes ``result_path`` and ``montecarlo_path``.

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
        bars_per_year,
        buy_and_hold,
        evaluate_policy,
    )
    from engine.evaluation.montecarlo import run_monte_carlo
    from engine.features.compute import Normalizer, open_features
    from engine.train.plan import HardwarePlan

    def check_stop() -> None:
        if should_stop():
            raise UnitStopped("stop requested")

    started = time.monotonic()
    cfg = PloutosConfig.model_validate(task.config)
    plan = HardwarePlan.from_dict(task.plan)
    _torch_settings(torch, plan.torch_threads)
    fold = Fold.from_dict(task.fold)
    if not task.member_dirs:
        raise PloutosError(f"{fold.name}: no finished member to evaluate")
    fs = open_features(task.features_path)
    end = fold.test_rows[1]
    normalizer = Normalizer.load(Path(task.member_dirs[0]) / "normalizer.npz")
    features = normalizer.apply(fs.features[:end])
    prices, tradable = fs.prices[:end], fs.tradable[:end]
    algo = _algorithm_class(cfg.training.algorithm)
    models = [algo.load(Path(d) / "model.zip", device=plan.device) for d in task.member_dirs]
    if _fault(("pause-eval",), str(fold.index)) is not None:
        _park(report, should_stop, {"type": "evaluation_paused"})
    check_stop()
    env_cfg = _env_config(cfg, fold.test_rows, evaluation=True)
    per_year = bars_per_year(np.asarray(fs.timestamps))
    vote = cfg.training.vote
    policy = EnsemblePolicy(models, vote=vote)
    oos = evaluate_policy(policy, features, prices, tradable, fold.test_rows, env_cfg, per_year)
    members = []
    for m in models:
        check_stop()
        single = EnsemblePolicy([m], vote=vote)
        metrics = evaluate_policy(
            single, features, prices, tradable, fold.test_rows, env_cfg, per_year
        )
        members.append(metrics.to_dict())
    bh = buy_and_hold(prices, fold.test_rows, env_cfg, per_year)
    check_stop()
    mc = run_monte_carlo(
        policy,
        features,
        prices,
        tradable,
        fold.test_rows,
        env_cfg,
        cfg.monte_carlo,
        seed=cfg.monte_carlo.seed + fold.index,
    )
    check_stop()
    stats = mc.stats(cfg.monte_carlo.histogram_bins).to_dict()
    result = {
        "fold": fold.to_dict(),
        "members_used": len(models),
        "member_dirs": [str(d) for d in task.member_dirs],
        "vote": vote,
        "oos": oos.to_dict(),
        "buy_and_hold": bh.to_dict(),
        "members": members,
        "montecarlo": stats,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    mc.save(task.montecarlo_path)
    atomic.write_json(task.result_path, result)
    return result


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
    }


# ------------------------------------------------------------------------------- executor
def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (Linux only; no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(kind: str, task_data: dict[str, Any], out: Any) -> None:
    die_with_parent()
    # The parent is the forkserver, which exits when the trainer dies: a changed parent means
    # the trainer is gone.
    parent_pid = os.getppid()
    stop = {"flag": False, "abandon": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True
        # An evaluation keeps nothing: it ends at once, not at its next check (a Monte Carlo can
        # take minutes), so it cannot outlive a killed trainer and write a result nobody records.
        if stop["abandon"]:
            stop["abandon"] = False
            raise UnitStopped(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    task = task_from_dict(kind, task_data)
    key = task.key

    def should_stop() -> bool:
        # A parent that died without a signal reaching us (PDEATHSIG is Linux only) also stops us.
        return stop["flag"] or os.getppid() != parent_pid

    def report(event: dict[str, Any]) -> None:
        try:
            out.put(("event", key, event))
        except (OSError, ValueError):
            stop["flag"] = True

    try:
        stop["abandon"] = kind == "evaluate"
        try:
            result = UNITS[kind](task, report, should_stop)
        finally:
            stop["abandon"] = False
        out.put(("result", key, result))
    except UnitStopped:
        out.put(("result", key, {"status": "stopped"}))
    except BaseException as err:  # noqa: BLE001 - every failure must reach the trainer
        message = f"{type(err).__name__}: {err}".splitlines()[0][:500] + memory_hint(err)
        out.put(("error", key, {"error": message, "traceback": traceback.format_exc()}))
    finally:
        out.close()
        out.join_thread()


_CONTEXT: mp.context.BaseContext | None = None


def _mp_context() -> mp.context.BaseContext:
    """A forkserver that imports torch and SB3 once; each unit forks from it in milliseconds."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(
            [
                "torch",
                # torch.optim imports dynamo lazily on the first optimizer: 2.6 s per worker.
                "torch._dynamo",
                "stable_baselines3",
                "sb3_contrib",
                "engine.train.orchestrator",
                "engine.features.compute",
                "engine.env.vec_env",
                "engine.train.plan",
                "engine.evaluation.evaluate",
                "engine.evaluation.montecarlo",
                "engine.system.forkserver_init",
            ]
        )
        _CONTEXT = ctx
    return _CONTEXT


@dataclass
class _Running:
    task: MemberTask | FoldTask
    process: Any
    finished: bool = False


class LocalExecutor:
    """Runs units in worker processes on this machine, at most ``max_parallel`` at once."""

    def __init__(self, max_parallel: int) -> None:
        self.max_parallel = max(1, int(max_parallel))
        self.ctx = _mp_context()
        self.queue = self.ctx.Queue()
        self.running: dict[tuple[str, int, int], _Running] = {}

    def has_room(self) -> bool:
        return len(self.running) < self.max_parallel

    def submit(self, task: MemberTask | FoldTask) -> None:
        data = {k: v for k, v in asdict(task).items()}
        process = self.ctx.Process(
            target=_worker_main,
            args=(task.kind, data, self.queue),
            name=f"ploutos-{task.kind}-{task.key[1]}-{task.key[2]}",
            daemon=False,
        )
        try:
            process.start()
        except (EOFError, ConnectionError) as err:
            # The forkserver died: with an address-space limit that is the preload of torch
            # running out of memory (its traceback went to our stderr, the pipe says only EOF).
            hint = memory_hint(MemoryError())
            if hint:
                raise MemoryError(
                    f"cannot allocate memory for the worker processes: their forkserver, which "
                    f"loads torch and stable-baselines3, died{hint}"
                ) from err
            raise RuntimeError(
                "the worker processes' forkserver died; its traceback is in the trainer's output"
            ) from err
        self.running[task.key] = _Running(task, process)

    def poll(self, timeout: float) -> list[tuple[str, tuple[str, int, int], dict[str, Any]]]:
        """Messages from workers: ``("event" | "result" | "error", key, payload)``; a worker that
        died without saying so becomes an ``error`` with its exit code."""
        out = []
        try:
            out.append(self.queue.get(timeout=timeout))
            while True:
                out.append(self.queue.get_nowait())
        except queue_mod.Empty:
            pass
        for kind, key, _payload in out:
            if kind in ("result", "error") and key in self.running:
                self.running[key].finished = True
        for key, run in list(self.running.items()):
            if run.process.is_alive():
                continue
            run.process.join()
            if not run.finished:
                # Give the queue's feeder a moment: a result may still be in flight.
                try:
                    while True:
                        msg = self.queue.get(timeout=0.5)
                        out.append(msg)
                        if msg[0] in ("result", "error") and msg[1] in self.running:
                            self.running[msg[1]].finished = True
                except queue_mod.Empty:
                    pass
            if not run.finished:
                code = run.process.exitcode
                out.append(("error", key, {"error": f"worker process exited with code {code}"}))
            del self.running[key]
        return out

    def close(self) -> None:
        """Nothing to release: worker processes end with their unit."""

    def signal_all(self, signum: int) -> None:
        for run in self.running.values():
            if run.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.process.pid, signum)


def make_executor(cfg: PloutosConfig, plan: dict[str, Any], features_path: str) -> Any:
    """The executor the config asks for, sized by the plan."""
    if cfg.executor == "ray":
        from engine.train.executors.ray import RayExecutor

        return RayExecutor(
            int(plan["parallel_members"]),
            plan=plan,
            features_path=features_path,
            address=cfg.ray_address,
        )
    return LocalExecutor(int(plan["parallel_members"]))


# ------------------------------------------------------------------------------ orchestrator
class RunFailed(PloutosError):
    """The run ended failed for a cause outside the program (disk, memory); already recorded."""

    exit_code = 1


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


class Trainer:
    """Runs (or resumes) one walk-forward run in its folder until finished, stopped or failed."""

    STOP_GRACE_S = 120.0

    def __init__(self, folder: RunFolder, echo: Callable[[str], None] | None = None) -> None:
        self.folder = folder
        self.cfg = load_config(folder.config_path)  # the one YAML reader: one-line errors
        self.plan = folder.read_plan()
        self.folds = [Fold.from_dict(f) for f in folder.read_folds()]
        self.meta = folder.read_meta()
        self.features_path = str(self.meta["features_path"])
        self.echo = echo or (lambda _line: None)
        self.stop_requested = False
        self.view = RunView(run_id=folder.run_id)
        self._status_written = 0.0
        self.failures: list[str] = []

    # -- tasks -----------------------------------------------------------------------------
    def member_task(self, fold: Fold, member: int) -> MemberTask:
        seed = self.cfg.training.seed + 1000 * fold.index + member
        tb = str(self.folder.tensorboard_dir) if self.cfg.training.tensorboard else None
        return MemberTask(
            fold=fold.to_dict(),
            member=member,
            seed=seed,
            config=self.cfg.model_dump(mode="json"),
            plan=self.plan,
            features_path=self.features_path,
            member_dir=str(self.folder.member_dir(fold.index, member)),
            checkpoint_dir=str(self.folder.checkpoint_dir(fold.index, member)),
            tensorboard_dir=tb,
        )

    def fold_task(self, fold: Fold) -> FoldTask:
        dirs = tuple(
            str(self.folder.member_dir(fold.index, m))
            for m in range(self.cfg.training.ensemble)
            if member_is_finished(self.folder.member_dir(fold.index, m))
        )
        return FoldTask(
            fold=fold.to_dict(),
            config=self.cfg.model_dump(mode="json"),
            plan=self.plan,
            features_path=self.features_path,
            member_dirs=dirs,
            result_path=str(self.folder.fold_result_path(fold.index)),
            montecarlo_path=str(self.folder.fold_montecarlo_path(fold.index)),
        )

    def fold_done(self, fold: Fold) -> bool:
        path = self.folder.fold_result_path(fold.index)
        if not path.exists():
            return False
        try:
            result = json.loads(path.read_text())
            recordable = all(
                isinstance(result[k], dict) for k in ("oos", "buy_and_hold", "montecarlo")
            ) and isinstance(result["members"], list)
            return recordable and int(result["members_used"]) == self.cfg.training.ensemble
        except (OSError, KeyError, TypeError, ValueError):
            return False

    # -- events ----------------------------------------------------------------------------
    def emit(self, events: EventLog, type_: str, **fields: Any) -> dict[str, Any]:
        event = events.emit(type_, **fields)
        self.view.apply(event)
        now = time.monotonic()
        if type_ != "member_progress" or now - self._status_written >= 1.0:
            self.write_status()
        return event

    def write_status(self) -> None:
        self._status_written = time.monotonic()
        status = self.view.to_status()
        status.update(
            pid=os.getpid(),
            pgid=os.getpgid(0),
            host=socket.gethostname(),
            features_path=self.features_path,
            run_dir=str(self.folder.root),
            heartbeat=utc_stamp(),
        )
        self.folder.write_status(status)

    # -- main loop -------------------------------------------------------------------------
    def run(self, resumed: bool = False) -> int:
        """0 finished, 1 failed, 3 stopped.

        The run ends ``failed`` with its cause whatever ended it, a full disk included: the space
        that last event and status need is set aside up front (:meth:`_reserve_space`) and given
        back just before they are written. A full disk or an exhausted memory limit is raised as
        a one-line :class:`RunFailed`; anything else (a bug) keeps its traceback.
        """
        with self.folder.hold_lock():
            events: EventLog | None = None
            try:
                self._reserve_space()
                events = EventLog(self.folder.events_path)
                return self._run(events, resumed)
            except BaseException as err:
                message = _one_line(err)
                log.exception("run failed")
                self._release_space()
                self._record_failure(events, message)
                if isinstance(err, (OSError, MemoryError)):
                    raise RunFailed(
                        f"run {self.folder.run_id} failed: {message}; fix that, then "
                        f"`ploutos resume {self.folder.run_id}` (log: {self.folder.log_path})"
                    ) from err
                raise
            finally:
                self._release_space()
                if events is not None:
                    events.close()

    RESERVE_BYTES = 1 << 20

    @property
    def _reserve_path(self) -> Path:
        return self.folder.root / ".space-reserve"

    def _reserve_space(self) -> None:
        """Allocate :attr:`RESERVE_BYTES` (really allocated, not a sparse file) in the run folder,
        enough for the final ``run_failed`` event and ``status.json`` once the disk is full."""
        fd = os.open(self._reserve_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, self.RESERVE_BYTES)
        finally:
            os.close(fd)

    def _release_space(self) -> None:
        with contextlib.suppress(OSError):
            self._reserve_path.unlink()

    def _record_failure(self, events: EventLog | None, message: str) -> None:
        """``run_failed`` in the log and the status, as far as the disk lets either be written: a
        status that still said running would show the run as interrupted, hiding the cause."""
        if events is not None:
            try:
                self.emit(events, "run_failed", error=message)
                return
            except OSError as err:
                log.error("could not record the failure: %s", _one_line(err))
        if self.view.state != "failed":
            self.view.apply({"type": "run_failed", "ts": utc_stamp(), "error": message})
        try:
            self.write_status()
        except OSError as err:
            log.error("could not write the failed status: %s", _one_line(err))

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: Any) -> None:
            if not self.stop_requested:
                self.stop_requested = True
                log.info("signal %s: stopping after checkpoints", signum)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        # A closed SSH session or terminal must not end the run.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _run(self, events: EventLog, resumed: bool) -> int:
        from engine.runs.folder import replay

        self._install_signals()
        if resumed:
            self.view = replay(self.folder)
        ensemble = self.cfg.training.ensemble
        self.emit(
            events,
            "run_resumed" if resumed else "run_started",
            run_id=self.folder.run_id,
            config=self.meta.get("config_source", ""),
            algorithm=self.cfg.training.algorithm,
            n_folds=len(self.folds),
            ensemble=ensemble,
            total_timesteps=self.cfg.training.total_timesteps,
            plan=self.plan,
            threads=worker_thread_report(),
            features_path=self.features_path,
            folds=[f.to_dict() for f in self.folds],
        )
        self._record_unrecorded_folds(events)
        pending: list[MemberTask] = []
        for fold in self.folds:
            if self.fold_done(fold):
                continue
            for m in range(ensemble):
                if member_is_finished(self.folder.member_dir(fold.index, m)):
                    continue
                pending.append(self.member_task(fold, m))
        evaluations = [f for f in self.folds if not self.fold_done(f)]
        started_folds: set[int] = set()
        executor = make_executor(self.cfg, self.plan, self.features_path)
        stop_deadline: float | None = None
        self.echo(
            f"run {self.folder.run_id}: {len(self.folds)} folds x {ensemble} members, "
            f"{len(pending)} members and {len(evaluations)} evaluations to do, "
            f"{executor.max_parallel} at a time"
        )

        def fold_members_settled(fold: Fold) -> bool:
            return not any(t.key[1] == fold.index for t in pending) and not any(
                k[0] == "member" and k[1] == fold.index for k in executor.running
            )

        while pending or evaluations or executor.running:
            if self.stop_requested and stop_deadline is None:
                stop_deadline = time.monotonic() + self.STOP_GRACE_S
                self.emit(events, "run_stopping", running=len(executor.running))
                executor.signal_all(signal.SIGTERM)
            if stop_deadline is not None:
                if not executor.running:
                    break
                if time.monotonic() > stop_deadline:
                    executor.signal_all(signal.SIGKILL)
            else:
                while executor.has_room():
                    ready = next((f for f in evaluations if fold_members_settled(f)), None)
                    if ready is not None:
                        evaluations.remove(ready)
                        executor.submit(self.fold_task(ready))
                        continue
                    if not pending:
                        break
                    task = pending.pop(0)
                    fold_index = task.key[1]
                    if fold_index not in started_folds:
                        started_folds.add(fold_index)
                        fold = self.folds[fold_index]
                        self.emit(events, "fold_started", fold=fold_index, **_dates(fold))
                    executor.submit(task)
            for kind, key, payload in executor.poll(timeout=0.5):
                self._handle(events, kind, key, payload)
            # heartbeat (engine.runs.folder): a SIGSTOPped or hung trainer then shows as stalled
            if time.monotonic() - self._status_written >= HEARTBEAT_S:
                self.write_status()
        executor.close()
        if self.stop_requested:
            self.emit(events, "run_stopped", reason="stop requested")
            self.echo(f"run {self.folder.run_id}: stopped; `ploutos resume {self.folder.run_id}`")
            return 3
        summary = self.write_summary()
        if summary.get("montecarlo") is not None:
            self.emit(events, "montecarlo", scope="pooled", stats=summary["montecarlo"])
        if self.failures:
            error = f"{len(self.failures)} unit(s) failed: {self.failures[0]}"
            self.emit(events, "run_failed", error=error, summary_path=str(self.folder.summary_path))
            self.echo(f"run {self.folder.run_id}: failed: {error}")
            return 1
        self.emit(events, "run_finished", summary_path=str(self.folder.summary_path))
        self.echo(f"run {self.folder.run_id}: finished; results in {self.folder.results_dir}")
        return 0

    def _handle(
        self, events: EventLog, kind: str, key: tuple[str, int, int], payload: dict[str, Any]
    ) -> None:
        unit, fold, member = key
        where = {"fold": fold} if unit == "evaluate" else {"fold": fold, "member": member}
        if kind == "event":
            payload = dict(payload)
            type_ = payload.pop("type")
            self.emit(events, type_, **where, **payload)
            return
        if kind == "error":
            log.error(
                "%s %s failed: %s\n%s", unit, where, payload["error"], payload.get("traceback", "")
            )
            name = f"fold {fold}" + (f" member {member}" if unit == "member" else "")
            self.failures.append(f"{name}: {payload['error']}")
            self.emit(
                events,
                "member_failed" if unit == "member" else "fold_failed",
                **where,
                error=payload["error"],
            )
            self.echo(f"{name} failed: {payload['error']}")
            return
        if unit == "member":
            if payload["status"] == "stopped":
                self.emit(events, "member_stopped", **where, timesteps=payload["timesteps"])
                return
            self.emit(events, "member_finished", **where, **payload)
            self.echo(
                f"fold {fold} member {member}: finished {payload['timesteps']:,} timesteps "
                f"in {payload['elapsed_s']:.1f} s"
            )
            return
        if payload.get("status") == "stopped":
            log.info("fold %s: evaluation stopped; a resume evaluates it again", fold)
            return
        self._record_fold(events, fold, payload)

    def _record_fold(self, events: EventLog, fold: int, result: dict[str, Any]) -> None:
        """The ``fold_evaluated`` and per-fold ``montecarlo`` events of one fold's result."""
        self.emit(
            events,
            "fold_evaluated",
            fold=fold,
            members_used=result["members_used"],
            oos=result["oos"],
            buy_and_hold=result["buy_and_hold"],
            members=result["members"],
            result_path=str(self.folder.fold_result_path(fold)),
        )
        self.emit(
            events, "montecarlo", scope=f"fold_{fold:02d}", fold=fold, stats=result["montecarlo"]
        )
        mc = result["montecarlo"]
        self.echo(
            f"fold {fold}: out of sample {result['oos']['total_return']:+.2%} "
            f"(buy and hold {result['buy_and_hold']['total_return']:+.2%}); Monte Carlo "
            f"loss probability {mc['loss_probability']:.1%}, VaR95 {mc['var_95']:+.2%}"
        )

    def _record_unrecorded_folds(self, events: EventLog) -> None:
        """Events for evaluated folds the log does not show (their evaluation finished after its
        trainer was killed, before that evaluation died with it): status, panel and summary then
        show every fold whose result file counts it as done."""
        for fold in self.folds:
            if not self.fold_done(fold):
                continue
            path = self.folder.fold_result_path(fold.index)
            result = json.loads(path.read_text())
            seen = self.view.folds_evaluated.get(fold.index, {})
            if seen.get("members_used") == result["members_used"] and (
                seen.get("oos") == result["oos"]
            ):
                continue
            log.info("fold %s: recording its evaluation from %s", fold.index, path)
            self._record_fold(events, fold.index, result)

    def write_summary(self) -> dict[str, Any]:
        """Every evaluated fold and the Monte Carlo statistics pooled over them."""
        from engine.evaluation.montecarlo import MonteCarloResult

        folds, pooled = [], []
        for fold in self.folds:
            path = self.folder.fold_result_path(fold.index)
            if path.exists():
                folds.append(json.loads(path.read_text()))
                mc_path = self.folder.fold_montecarlo_path(fold.index)
                if mc_path.exists():
                    pooled.append(MonteCarloResult.load(mc_path))
        stats = (
            MonteCarloResult.concat(pooled).stats(self.cfg.monte_carlo.histogram_bins).to_dict()
            if pooled
            else None
        )
        summary = {"run_id": self.folder.run_id, "folds": folds, "montecarlo": stats}
        atomic.write_json(self.folder.summary_path, summary)
        return summary


def _dates(fold: Fold) -> dict[str, Any]:
    return {
        "train": [fold.train_start, fold.train_end],
        "test": [fold.test_start, fold.test_end],
        "train_rows": list(fold.train_rows),
        "test_rows": list(fold.test_rows),
    }


# ------------------------------------------------------------------------------ entry points
def resolved_config(
    config_path: str | Path,
    *,
    ensemble: int | None = None,
    algorithm: str | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
) -> PloutosConfig:
    """The config file with command-line overrides applied and validated like the file itself."""
    from engine.config import load_config

    cfg = load_config(config_path)
    training = cfg.training.model_dump(mode="json")
    if ensemble is not None:
        training["ensemble"] = ensemble
    if algorithm is not None:
        training["algorithm"] = algorithm
    data = cfg.model_dump(mode="json")
    data["training"] = training
    if executor is not None:
        data["executor"] = executor
    if ray_address is not None:
        data["ray_address"] = ray_address
    try:
        return PloutosConfig.model_validate(data)
    except Exception as err:  # pydantic ValidationError: name the flag
        raise PloutosError(f"{config_path}: command-line override rejected: {err}") from None


def plan_for(
    cfg: PloutosConfig,
    profile: str | None,
    obs_size: int | None,
    machine: Any = None,
    *,
    hardware_file: str | Path | None = None,
    force: bool = False,
) -> Any:
    """The hardware plan of a config (the one resolver, with this config's sizes); ``machine``
    defaults to this one, probed; ``hardware_file`` and ``force`` as in ``resolve_plan``."""
    from engine.train.plan import resolve_plan

    return resolve_plan(
        profile or cfg.hardware_profile,
        ensemble=cfg.training.ensemble,
        algorithm=cfg.training.algorithm,
        net_arch=tuple(cfg.training.net_arch),
        obs_size=obs_size,
        machine=machine,
        hardware_file=hardware_file,
        force=force,
    )


def observation_size(cfg: PloutosConfig, features_shape: tuple[int, ...]) -> int:
    _t, n_tickers, n_features = features_shape
    return cfg.env.lookback * n_tickers * n_features + n_tickers + 1


def prepare_run(
    config_path: str | Path,
    *,
    profile: str | None = None,
    ensemble: int | None = None,
    algorithm: str | None = None,
    run_dir: str | Path | None = None,
    runs_root: str | Path | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    hardware_file: str | Path | None = None,
    force: bool = False,
) -> RunFolder:
    """Validate everything, then create the run folder; nothing is trained yet.

    Every check that can fail (config, dataset, folds, plan, thread limits) runs before the folder
    exists, so a refused run leaves nothing behind.
    """
    from engine.features.compute import load_or_build_features
    from engine.runs.folder import default_runs_root, new_run_id, utc_stamp
    from engine.system.threads import machine_threads, thread_limits
    from engine.train.folds import walk_forward_folds
    from engine.train.plan import check_thread_limits

    cfg = resolved_config(
        config_path,
        ensemble=ensemble,
        algorithm=algorithm,
        executor=executor,
        ray_address=ray_address,
    )
    if cfg.executor == "ray":
        from engine.train.executors.ray import require_ray

        require_ray()
    fs = load_or_build_features(cfg.dataset_path, cfg.features)
    folds = walk_forward_folds(fs.timestamps, cfg.walk_forward, str(config_path))
    plan = plan_for(
        cfg,
        profile,
        observation_size(cfg, fs.features.shape),
        hardware_file=hardware_file,
        force=force,
    )
    check_thread_limits(plan, thread_limits(), machine_threads())
    root = (
        Path(run_dir)
        if run_dir
        else Path(runs_root or default_runs_root()) / new_run_id(str(config_path))
    )
    folder = RunFolder(root).create()
    atomic.write_text(
        folder.config_path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    )
    atomic.write_json(folder.plan_path, plan.to_dict())
    atomic.write_json(folder.folds_path, [f.to_dict() for f in folds])
    atomic.write_json(
        folder.meta_path,
        {
            "run_id": folder.run_id,
            "config_source": str(config_path),
            "features_path": str(fs.path),
            "features_shape": list(fs.features.shape),
            "created": utc_stamp(),
            "host": socket.gethostname(),
        },
    )
    folder.write_status({"run_id": folder.run_id, "state": "starting"})
    return folder


def run_training(folder: RunFolder, echo: Callable[[str], None] | None = None) -> int:
    """Run or continue the run in ``folder`` in this process (its workers are child processes).

    A run with no ``run_started`` event yet starts; any other continues: finished members and
    folds are kept, interrupted members continue from their last checkpoint.
    """
    from engine.runs.folder import read_events

    _setup_file_log(folder)
    events, _ = read_events(folder.events_path)
    started = any(e.get("type") == "run_started" for e in events)
    return Trainer(folder, echo=echo).run(resumed=started)


def _setup_file_log(folder: RunFolder) -> None:
    folder.logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
