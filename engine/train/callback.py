"""The SB3 callback of one training member: progress reports, periodic checkpoints, the test
hooks, graceful stop. Imports stable-baselines3, so only a unit at work imports it (through
:func:`engine.train.units.make_member_callback`); the trainer process never does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from engine.train.executors.base import Report, ShouldStop
from engine.train.faults import inject_fault, park, pause_steps


class MemberCallback(BaseCallback):
    """Reports ``member_progress``, checkpoints every ``checkpoint_every_timesteps``, stops when
    told; ``stopped`` says whether it did."""

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
        self.stopped = False
        self.fault_checked = False
        self.pause_at = pause_steps(fold, member)

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
            inject_fault(self.fold, self.member)
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
            park(self.report, self.should_stop, paused)
        if self.should_stop():
            self.stopped = True
            return False
        return True
