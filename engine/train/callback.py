"""The SB3 callback of one training member: progress reports (with where the member's wall time
goes and SB3's training metrics), periodic checkpoints, the test hooks, graceful stop. Imports
stable-baselines3, so only a unit at work imports it (through
:func:`engine.train.units.make_member_callback`); the trainer process never does.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from engine.runs.view import SB3_METRICS, TIME_PHASES
from engine.train.executors.base import Report, ShouldStop
from engine.train.faults import inject_fault, park, pause_steps

# `sb3` field of member_progress -> the key PPO.train and RecurrentPPO.train record it under in
# the model's logger. `entropy` is train/entropy_loss negated: the mean entropy of the action
# distribution (nats, summed over the tickers of the MultiDiscrete action).
SB3_LOGGER_KEYS = {
    "policy_loss": "train/policy_gradient_loss",
    "value_loss": "train/value_loss",
    "entropy": "train/entropy_loss",
    "approx_kl": "train/approx_kl",
    "clip_fraction": "train/clip_fraction",
    "explained_variance": "train/explained_variance",
    "loss": "train/loss",
    "clip_range": "train/clip_range",
    "n_updates": "train/n_updates",
}
if tuple(SB3_LOGGER_KEYS) != SB3_METRICS:  # the view reads exactly these names
    raise RuntimeError("SB3_LOGGER_KEYS and engine.runs.view.SB3_METRICS disagree")

_STRETCHES = ("rollout", "gradient", "waiting")  # what PhaseClock.enter takes
_CALIBRATION_LOOPS = 200  # iterations per timing of a probe, best of _CALIBRATION_REPEATS
_CALIBRATION_REPEATS = 5


def sb3_metrics(name_to_value: Any) -> dict[str, float | int | None] | None:
    """SB3's metrics of its last ``train()`` from a logger's ``name_to_value``, named as in
    :data:`SB3_LOGGER_KEYS` (6 significant digits; None where absent or not finite); None before
    the first update (no ``train/n_updates``).

    ``name_to_value`` is a ``defaultdict``: it is only ever read with ``get``, so reading it adds
    no key. SB3's ``dump`` clears it, and ``learn`` dumps before ``train()``, so the values of the
    last update are there from the end of ``train()`` to the next dump: at the start of the next
    rollout and at the end of training, where :class:`MemberCallback` reads them.
    """
    if SB3_LOGGER_KEYS["n_updates"] not in name_to_value:
        return None
    out: dict[str, float | int | None] = {}
    for name, key in SB3_LOGGER_KEYS.items():
        value = name_to_value.get(key)
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x):
            out[name] = None
        elif name == "n_updates":
            out[name] = int(x)
        else:
            out[name] = float(f"{-x if name == 'entropy' else x:.6g}")
    return out


def _loop_cost(body: Callable[[int], None]) -> float:
    """Seconds per iteration of ``body(n)`` (which runs a probe ``n`` times): the median of a few
    timings, so one preemption does not set the figure."""
    runs = []
    for _ in range(_CALIBRATION_REPEATS):
        t0 = perf_counter()
        body(_CALIBRATION_LOOPS)
        runs.append((perf_counter() - t0) / _CALIBRATION_LOOPS)
    return statistics.median(runs)


def _env_probe(n: int) -> None:
    """What :meth:`BatchedPortfolioVecEnv.step_wait` adds per step: two clock reads and a sum."""
    acc = 0.0
    for _ in range(n):
        started = perf_counter()
        acc += perf_counter() - started


class PhaseClock:
    """Books one member's wall time (``time.perf_counter``) to the phases of
    :data:`engine.runs.view.TIME_PHASES`.

    The callback says which stretch training is in with :meth:`enter`: ``"rollout"``,
    ``"gradient"`` (SB3's ``train()``, from the end of one rollout to the start of the next) or
    ``"waiting"``. A rollout's time is split into ``env``, what ``env_seconds()`` (the VecEnv's
    cumulative stepping time) grew by, and ``inference``, the rest of it: policy forward passes,
    the rollout buffer, advantages. Work timed inside a stretch (a checkpoint, a progress report,
    a stop poll) is booked to its own phase by :meth:`timed` and taken out of the stretch's.
    Every second from construction to the last :meth:`enter` is booked once, so ``seconds`` sums
    to the wall time.

    :meth:`overhead_s` is what measuring cost: :meth:`enter`'s own clock reads (timed), plus each
    :meth:`timed` call and each env step's timer at their costs, timed once at construction by
    running the same code in a loop, plus whatever the caller adds to ``measure_s``.
    """

    def __init__(self, env_seconds: Callable[[], float]) -> None:
        started = perf_counter()
        self._env_seconds = env_seconds
        self.seconds: dict[str, float] = dict.fromkeys(TIME_PHASES, 0.0)
        self._booked = 0.0  # booked by timed() inside the current stretch so far
        self.timed_calls = 0
        self.env_probe_s = _loop_cost(_env_probe)
        self.timed_s = _loop_cost(self._timed_probe)
        # The probes booked into the phases: start them afresh. The calibration's own time is
        # measuring, spent while waiting to train.
        self.seconds = dict.fromkeys(TIME_PHASES, 0.0)
        self._booked = 0.0
        self.timed_calls = 0
        self.stretch = "waiting"
        self._env_mark = env_seconds()
        self._mark = started
        self.measure_s = perf_counter() - started

    def _timed_probe(self, n: int) -> None:
        for _ in range(n):
            self.timed("waiting", _nothing)

    def enter(self, stretch: str) -> None:
        """Book the time since the last :meth:`enter` to the stretch training was in, then go
        into ``stretch`` (the same one again just brings the books up to now)."""
        now = perf_counter()
        if stretch not in _STRETCHES:
            raise ValueError(f"PhaseClock: no stretch {stretch!r}; one of {', '.join(_STRETCHES)}")
        own = max(now - self._mark - self._booked, 0.0)
        if self.stretch == "rollout":
            env_now = self._env_seconds()
            env = min(max(env_now - self._env_mark, 0.0), own)
            self.seconds["env"] += env
            self.seconds["inference"] += own - env
            self._env_mark = env_now
        else:
            self.seconds[self.stretch] += own
        if stretch == "rollout" and self.stretch != "rollout":
            self._env_mark = self._env_seconds()
        self.stretch = stretch
        self._mark = now
        self._booked = 0.0
        self.measure_s += perf_counter() - now

    def timed(self, phase: str, work: Callable[[], Any]) -> Any:
        """``work()``, its wall time booked to ``phase`` (taken out of the current stretch)."""
        started = perf_counter()
        try:
            return work()
        finally:
            seconds = perf_counter() - started
            self.seconds[phase] += seconds
            self._booked += seconds
            self.timed_calls += 1

    def overhead_s(self, env_steps: int) -> float:
        """Seconds spent measuring so far, ``env_steps`` env steps timed."""
        return self.measure_s + self.timed_calls * self.timed_s + env_steps * self.env_probe_s


def _nothing() -> None:
    return None


def _no_env_clock() -> float:
    return 0.0


class MemberCallback(BaseCallback):
    """Reports ``member_progress``, checkpoints every ``checkpoint_every_timesteps``, stops when
    told; ``stopped`` says whether it did.

    ``env_seconds()``: the VecEnv's cumulative stepping time
    (:attr:`engine.env.vec_env.BatchedPortfolioVecEnv.step_wait_s`); without it the env's time
    counts as inference. Progress events carry the time breakdown of :class:`PhaseClock` and SB3's
    training metrics (fields in docs/events.md, ``member_progress``).
    """

    def __init__(
        self,
        *,
        fold: int,
        member: int,
        total: int,
        interval_s: float,
        checkpoint_every: int,
        report: Report,
        should_stop: ShouldStop,
        checkpoint: Callable[[Any], None],
        env_seconds: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.fold = fold
        self.member = member
        self.total = total
        self.report = report
        self.should_stop = should_stop
        self.checkpoint = checkpoint
        self.interval_s = interval_s
        self.checkpoint_every = checkpoint_every
        self.env_seconds = env_seconds or _no_env_clock
        self.stopped = False
        self.fault_checked = False
        self.pause_at = pause_steps(fold, member)
        self.clock: PhaseClock | None = None
        self.sb3: dict[str, float | int | None] | None = None
        self._reported_s = dict.fromkeys(TIME_PHASES, 0.0)  # clock.seconds at the last report

    def _on_training_start(self) -> None:
        n = self.training_env.num_envs
        self.episode_return = np.zeros(n)
        self.returns: deque[float] = deque(maxlen=100)
        self.t0 = time.monotonic()
        self.t_last = self.t0
        self.start_steps = self.num_timesteps
        self.last_checkpoint = self.num_timesteps
        self.clock = PhaseClock(self.env_seconds)
        self._reported_s = dict(self.clock.seconds)

    def _read_sb3(self) -> None:
        started = perf_counter()
        found = sb3_metrics(self.model.logger.name_to_value)  # set up by learn() before this
        if found is not None:
            self.sb3 = found
        if self.clock is not None:
            self.clock.measure_s += perf_counter() - started

    def _on_rollout_start(self) -> None:
        self._read_sb3()  # the update that just ended, before the next dump clears it
        if self.clock is not None:
            self.clock.enter("rollout")

    def _on_rollout_end(self) -> None:
        if self.clock is not None:
            self.clock.enter("gradient")

    def _on_training_end(self) -> None:
        if self.clock is not None:
            self.clock.enter("waiting")
        self._read_sb3()

    def progress(self) -> dict[str, Any]:
        """A ``member_progress`` event; its ``time_shares`` cover the time since the previous
        call (or the start of training)."""
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        event: dict[str, Any] = {
            "type": "member_progress",
            "timesteps": int(self.num_timesteps),
            "total": self.total,
            "fps": round((self.num_timesteps - self.start_steps) / elapsed, 1),
            "mean_reward": round(float(np.mean(self.returns)), 6) if self.returns else None,
            "episodes": len(self.returns),
        }
        clock = self.clock
        if clock is None:
            return event
        clock.enter(clock.stretch)
        started = perf_counter()
        seconds = dict(clock.seconds)
        interval = {k: seconds[k] - self._reported_s[k] for k in TIME_PHASES}
        self._reported_s = seconds
        wall = sum(interval.values())
        total = sum(seconds.values())
        event["time_shares"] = (
            {k: round(v / wall, 4) for k, v in interval.items()} if wall > 0 else None
        )
        event["time_s"] = {k: round(v, 3) for k, v in seconds.items()}
        event["sb3"] = dict(self.sb3) if self.sb3 is not None else None
        clock.measure_s += perf_counter() - started
        overhead = clock.overhead_s(self.n_calls)
        event["measure_overhead_share"] = round(overhead / total, 6) if total > 0 else None
        return event

    def _on_step(self) -> bool:
        rewards = np.asarray(self.locals["rewards"], dtype=np.float64)
        dones = np.asarray(self.locals["dones"], dtype=bool)
        self.episode_return += rewards
        if dones.any():
            self.returns.extend(self.episode_return[dones].tolist())
            self.episode_return[dones] = 0.0
        if not self.fault_checked:
            self.fault_checked = True
            inject_fault(self.fold, self.member)
        clock = self.clock
        if clock is None:  # SB3 starts training before the first step; only a bare call lands here
            raise RuntimeError("MemberCallback: _on_step before _on_training_start")
        now = time.monotonic()
        if now - self.t_last >= self.interval_s:
            self.t_last = now
            event = self.progress()
            clock.timed("waiting", lambda: self.report(event))
        if self.num_timesteps - self.last_checkpoint >= self.checkpoint_every:
            self.last_checkpoint = self.num_timesteps
            clock.timed("checkpoint", lambda: self.checkpoint(self.model))
        if self.pause_at is not None and self.num_timesteps >= self.pause_at:
            self.pause_at = None
            if self.last_checkpoint != self.num_timesteps:
                self.last_checkpoint = self.num_timesteps
                clock.timed("checkpoint", lambda: self.checkpoint(self.model))
            paused = {"type": "member_paused", "timesteps": int(self.num_timesteps)}
            clock.timed("waiting", lambda: park(self.report, self.should_stop, paused))
        if clock.timed("waiting", self.should_stop):
            self.stopped = True
            return False
        return True
