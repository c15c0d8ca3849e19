"""What a run's events say about it: per-member and per-run views, and ``replay`` of a whole log.

The trainer's status file, ``ploutos status`` and the panel all build a :class:`RunView` from the
events :class:`engine.runs.events.EventTail` reads, so they all see the same run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.runs.events import CHUNK_BYTES, EventTail, event_problem
from engine.runs.folder import RunFolder


def _opt(event: dict[str, Any], name: str, default: Any) -> Any:
    value = event.get(name)
    return default if value is None else value


@dataclass
class MemberView:
    fold: int
    member: int
    state: str = "pending"
    timesteps: int = 0
    total: int = 0
    fps: float = 0.0
    mean_reward: float | None = None
    node: str | None = None
    error: str | None = None
    eta_s: float | None = None


@dataclass
class RunView:
    """What the events say about a run: the trainer's status file and the panel both use it.

    An event :func:`event_problem` rejects changes nothing: it is counted in ``skipped_events``
    (``skip_reason`` keeps the first reason) and the next one is applied as usual.
    """

    run_id: str = ""
    state: str = "starting"
    config: str = ""
    profile: str = ""
    algorithm: str = ""
    n_folds: int = 0
    ensemble: int = 0
    started_at: str | None = None
    updated_at: str | None = None
    members: dict[tuple[int, int], MemberView] = field(default_factory=dict)
    folds_evaluated: dict[int, dict[str, Any]] = field(default_factory=dict)
    montecarlo: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    threads: dict[str, Any] = field(default_factory=dict)
    fps_history: list[float] = field(default_factory=list)
    reward_history: list[float] = field(default_factory=list)
    skipped_events: int = 0
    skip_reason: str | None = None

    def member(self, fold: int, member: int) -> MemberView:
        key = (fold, member)
        if key not in self.members:
            self.members[key] = MemberView(fold, member)
        return self.members[key]

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one event; False (and counted) when it is unreadable or malformed."""
        problem = event_problem(event)
        if problem is not None:
            self.skipped_events += 1
            self.skip_reason = self.skip_reason or problem
            return False
        self._apply(event)
        return True

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        self.updated_at = _opt(event, "ts", self.updated_at)
        if kind in ("run_started", "run_resumed"):
            self.run_id = _opt(event, "run_id", self.run_id)
            self.state = "running"
            self.config = _opt(event, "config", self.config)
            self.plan = _opt(event, "plan", self.plan)
            profile = self.plan.get("profile")
            self.profile = profile if isinstance(profile, str) else self.profile
            self.threads = _opt(event, "threads", self.threads)
            self.algorithm = _opt(event, "algorithm", self.algorithm)
            self.n_folds = _opt(event, "n_folds", self.n_folds)
            self.ensemble = _opt(event, "ensemble", self.ensemble)
            self.started_at = self.started_at or event.get("ts")
            self.error = None
            for view in self.members.values():
                if view.state in ("running", "stopped", "failed"):
                    view.state = "pending"
            total = _opt(event, "total_timesteps", 0)
            for fold in range(self.n_folds):
                for member in range(self.ensemble):
                    view = self.member(fold, member)
                    if view.total == 0:
                        view.total = total
        elif kind == "member_started":
            view = self.member(event["fold"], event["member"])
            view.state = "running"
            view.timesteps = _opt(event, "timesteps", view.timesteps)
            view.total = _opt(event, "total", view.total)
            view.node = event.get("node")
            view.error = None
        elif kind == "member_progress":
            view = self.member(event["fold"], event["member"])
            view.state = "running"
            view.timesteps = event["timesteps"]
            view.total = event["total"]
            view.fps = float(_opt(event, "fps", 0.0))
            reward = event.get("mean_reward")
            view.mean_reward = None if reward is None else float(reward)
            view.eta_s = (view.total - view.timesteps) / view.fps if view.fps > 0 else None
            self.fps_history.append(view.fps)
            if view.mean_reward is not None:
                self.reward_history.append(view.mean_reward)
            del self.fps_history[:-512], self.reward_history[:-512]
        elif kind == "member_finished":
            view = self.member(event["fold"], event["member"])
            view.state = "finished"
            view.timesteps = _opt(event, "timesteps", view.total)
            view.eta_s = 0.0
        elif kind == "member_stopped":
            view = self.member(event["fold"], event["member"])
            view.state = "stopped"
            view.timesteps = _opt(event, "timesteps", view.timesteps)
        elif kind == "member_failed":
            view = self.member(event["fold"], event["member"])
            view.state = "failed"
            view.error = event.get("error")
        elif kind == "fold_evaluated":
            self.folds_evaluated[event["fold"]] = event
        elif kind == "montecarlo":
            self.montecarlo[_opt(event, "scope", "pooled")] = event
        elif kind == "run_stopping":
            self.state = "stopping"
        elif kind == "run_stopped":
            self.state = "stopped"
        elif kind == "run_finished":
            self.state = "finished"
        elif kind == "run_failed":
            self.state = "failed"
            self.error = event.get("error")

    @property
    def total_timesteps(self) -> int:
        return sum(m.total for m in self.members.values())

    @property
    def done_timesteps(self) -> int:
        return sum(min(m.timesteps, m.total) for m in self.members.values())

    @property
    def progress(self) -> float:
        total = self.total_timesteps
        return self.done_timesteps / total if total else 0.0

    def count(self, state: str) -> int:
        return sum(1 for m in self.members.values() if m.state == state)

    def eta_s(self) -> float | None:
        """Remaining timesteps over the summed fps of the running members."""
        fps = sum(m.fps for m in self.members.values() if m.state == "running")
        remaining = self.total_timesteps - self.done_timesteps
        return remaining / fps if fps > 0 else None

    def to_status(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "config": self.config,
            "profile": self.profile,
            "algorithm": self.algorithm,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "folds": self.n_folds,
            "folds_evaluated": sorted(self.folds_evaluated),
            "ensemble": self.ensemble,
            "members": {
                "total": len(self.members),
                "finished": self.count("finished"),
                "running": self.count("running"),
                "failed": self.count("failed"),
            },
            "timesteps": {"done": self.done_timesteps, "total": self.total_timesteps},
            "progress": round(self.progress, 4),
            "eta_s": self.eta_s(),
            "montecarlo_pooled": self.montecarlo.get("pooled", {}).get("stats"),
            "error": self.error,
            "skipped_events": self.skipped_events,
            "skip_reason": self.skip_reason,
        }


def replay(folder: RunFolder) -> RunView:
    """The run as its whole event log describes it (unreadable events skipped and counted)."""
    view = RunView(run_id=folder.run_id)
    tail = EventTail(folder.events_path)
    while True:  # in bounded reads: a log of any size costs bounded memory
        for event in tail.poll(CHUNK_BYTES * 16):
            view.apply(event)
        if tail.bytes_read == 0:
            return view
