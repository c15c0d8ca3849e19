"""The run orchestrator: :class:`Trainer` owns one run folder.

It schedules the units (:mod:`engine.train.units`) on an executor (local worker processes or a Ray
cluster, behind :class:`~engine.train.executors.base.Executor`), writes ``events.jsonl`` and
``status.json``, and handles stop and resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import atomic
from engine.config import load_config
from engine.errors import PloutosError
from engine.runs.events import EventLog, utc_stamp
from engine.runs.folder import HEARTBEAT_S, RunFolder
from engine.runs.view import RunView
from engine.train.executors.base import Executor, UnitKey
from engine.train.executors.factory import make_executor
from engine.train.folds import Fold
from engine.train.units import FoldTask, MemberTask, member_is_finished, worker_thread_report

log = logging.getLogger("ploutos.trainer")


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
            trials_path=str(self.folder.fold_trials_path(fold.index)),
            permutation_path=str(self.folder.fold_permutation_path(fold.index)),
        )

    def fold_done(self, fold: Fold) -> bool:
        path = self.folder.fold_result_path(fold.index)
        if not path.exists():
            return False
        try:
            result = json.loads(path.read_text())
            recordable = all(
                isinstance(result[k], dict)
                for k in ("oos", "buy_and_hold", "montecarlo", "nulls", "timing")
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
        from engine.runs.view import replay

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
        executor: Executor = make_executor(
            self.cfg, self.plan, self.features_path, pending_units=len(pending) + len(evaluations)
        )
        stop_deadline: float | None = None
        self.echo(
            f"run {self.folder.run_id}: {len(self.folds)} folds x {ensemble} members, "
            f"{len(pending)} members and {len(evaluations)} evaluations to do, "
            f"{executor.max_parallel} at a time"
        )

        def fold_members_settled(fold: Fold) -> bool:
            return not any(t.key[1] == fold.index for t in pending) and not any(
                k[0] == "member" and k[1] == fold.index for k in executor.running_keys()
            )

        while pending or evaluations or executor.running_keys():
            if self.stop_requested and stop_deadline is None:
                stop_deadline = time.monotonic() + self.STOP_GRACE_S
                self.emit(events, "run_stopping", running=len(executor.running_keys()))
                executor.signal_all(signal.SIGTERM)
            if stop_deadline is not None:
                if not executor.running_keys():
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
        if summary.get("verdict") is not None:
            self.emit(
                events,
                "verdict",
                **{key: summary.get(key) for key in RUN_VERDICT_KEYS},
            )
            self.echo(f"run {self.folder.run_id}: {summary['verdict']['line']}")
        if self.failures:
            error = f"{len(self.failures)} unit(s) failed: {self.failures[0]}"
            self.emit(events, "run_failed", error=error, summary_path=str(self.folder.summary_path))
            self.echo(f"run {self.folder.run_id}: failed: {error}")
            return 1
        self.emit(events, "run_finished", summary_path=str(self.folder.summary_path))
        self.echo(f"run {self.folder.run_id}: finished; results in {self.folder.results_dir}")
        return 0

    def _handle(self, events: EventLog, kind: str, key: UnitKey, payload: dict[str, Any]) -> None:
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
            **{key: result.get(key) for key in FOLD_VERDICT_KEYS},
        )
        self.emit(
            events, "montecarlo", scope=f"fold_{fold:02d}", fold=fold, stats=result["montecarlo"]
        )
        mc = result["montecarlo"]
        self.echo(
            f"fold {fold}: out of sample {result['oos']['total_return']:+.2%} "
            f"(buy and hold {result['buy_and_hold']['total_return']:+.2%}); Monte Carlo "
            f"loss probability {mc['loss_probability']:.1%}, VaR95 {mc['var_95']:+.2%}"
            + _timing_note(result)
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
        """Every evaluated fold, the Monte Carlo statistics pooled over them and the run's
        verdict (:func:`engine.evaluation.verdict.judge_run`; fields in docs/results.md)."""
        from engine.evaluation.montecarlo import MonteCarloResult
        from engine.evaluation.verdict import judge_run

        folds, pooled, indices = [], [], []
        for fold in self.folds:
            path = self.folder.fold_result_path(fold.index)
            if path.exists():
                folds.append(json.loads(path.read_text()))
                indices.append(fold.index)
                mc_path = self.folder.fold_montecarlo_path(fold.index)
                if mc_path.exists():
                    pooled.append(MonteCarloResult.load(mc_path))
        stats = (
            MonteCarloResult.concat(pooled).stats(self.cfg.monte_carlo.histogram_bins).to_dict()
            if pooled
            else None
        )
        summary: dict[str, Any] = {
            "run_id": self.folder.run_id,
            "folds": folds,
            "montecarlo": stats,
        }
        if folds:
            summary.update(judge_run(self.folder, self.cfg, folds, indices))
        atomic.write_json(self.folder.summary_path, summary)
        return summary


# The keys of a fold's result that the verdict adds (docs/results.md), carried on its event.
FOLD_VERDICT_KEYS = (
    "fill",
    "fill_optimistic",
    "buy_and_hold_matched",
    "seed_dispersion",
    "cost_sensitivity",
    "montecarlo_kind",
    "nulls",
    "timing",
)


# The run-level verdict fields carried on the `verdict` event (docs/events.md).
RUN_VERDICT_KEYS = (
    "verdict",
    "pooled",
    "overfitting",
    "seed_dispersion",
    "fill",
    "fill_optimistic",
)


def _timing_note(result: dict[str, Any]) -> str:
    timing = result.get("timing")
    if not isinstance(timing, dict) or timing.get("p_return") is None:
        return ""
    return f"; timing-skill p={timing['p_return']:.3g}"


def _dates(fold: Fold) -> dict[str, Any]:
    return {
        "train": [fold.train_start, fold.train_end],
        "test": [fold.test_start, fold.test_end],
        "train_rows": list(fold.train_rows),
        "test_rows": list(fold.test_rows),
    }
