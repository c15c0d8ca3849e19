"""What a run's events say about it: per-member and per-run views, and ``replay`` of a whole log.

The trainer's status file, ``ploutos status`` and the panel all build a :class:`RunView` from the
events :class:`engine.runs.events.EventTail` reads, so they all see the same run.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.runs.events import CHUNK_BYTES, EventTail, event_problem
from engine.runs.folder import RunFolder


def _opt(event: dict[str, Any], name: str, default: Any) -> Any:
    value = event.get(name)
    return default if value is None else value


# ---------------------------------------------------------------------- verdict fields
# The objects of a `verdict` event (docs/events.md, docs/results.md) that RunView keeps.
VERDICT_OBJECTS = ("verdict", "pooled", "overfitting", "seed_dispersion")
NULL_POLICIES = ("cash", "always_long", "random")
_MAX_DEPTH = 32  # deeper JSON in a verdict payload is dropped (None), never recursed into


def number(value: Any) -> float | None:
    """``value`` as a finite float; None for a bool, a non-number, NaN, inf or an int too large
    for a float (an event may carry any JSON: a reader never trusts a field's type)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def dig(value: Any, *path: str) -> Any:
    """``value[path[0]][path[1]]...``; None as soon as a step is not a mapping or lacks the key."""
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def plain_json(value: Any, depth: int = 0) -> Any:
    """A copy of JSON-like data that ``json.dumps(allow_nan=False)`` accepts: non-finite floats
    and anything not JSON (or nested over 32 deep) become None, mappings keep their string keys."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value if isinstance(value, int) and abs(value) < 1 << 63 else number(value)
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {k: plain_json(v, depth + 1) for k, v in value.items() if isinstance(k, str)}
    if isinstance(value, (list, tuple)):
        return [plain_json(v, depth + 1) for v in value]
    return None


def verdict_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """What :attr:`RunView.verdict` keeps of a ``verdict`` event: ``verdict``, ``pooled``,
    ``overfitting`` and ``seed_dispersion`` (each a dict, or None when absent or not an object),
    ``fill`` (str or None) and ``fill_optimistic`` (bool or None), all JSON-safe."""
    out: dict[str, Any] = {}
    for name in VERDICT_OBJECTS:
        value = event.get(name)
        out[name] = plain_json(value) if isinstance(value, Mapping) else None
    fill = event.get("fill")
    out["fill"] = fill if isinstance(fill, str) else None
    optimistic = event.get("fill_optimistic")
    out["fill_optimistic"] = optimistic if isinstance(optimistic, bool) else None
    return out


def _verdict_problem(event: Mapping[str, Any]) -> str | None:
    """Why a ``verdict`` event cannot be used (its ``verdict`` must be an object), or None."""
    if event.get("type") != "verdict":
        return None
    value = event.get("verdict")
    if value is None:
        return "verdict: 'verdict' missing"
    if not isinstance(value, Mapping):
        return "verdict: 'verdict' is not a valid object"
    return None


def _optimistic(fill: str | None, flag: Any) -> bool | None:
    """A ``close`` fill is optimistic whatever the flag says; no fill known: the flag, or None."""
    if fill == "close":
        return True
    if isinstance(flag, bool):
        return flag
    return None if fill is None else False


def _seed_numbers(seeds: Mapping[str, Any]) -> dict[str, Any]:
    """A seed-dispersion object's numbers (``n`` an int), None where not a finite number."""
    out: dict[str, Any] = {k: number(v) for k, v in seeds.items() if isinstance(k, str)}
    n = out.get("n")
    if n is not None:
        out["n"] = int(n) if n >= 0 and n == int(n) else None
    return out


def fold_summary(event: Mapping[str, Any]) -> dict[str, Any]:
    """The judged numbers of one ``fold_evaluated`` event (or ``results/fold_XX.json``), flat and
    JSON-safe: None where the event lacks a field or holds something that is not a finite number.

    Keys: ``fold``; ``fill``, ``fill_optimistic``; ``oos_return``, ``sharpe``, ``mean_exposure``
    (fractions; Sharpe annualised); ``buy_and_hold_return``; ``matched_return`` and
    ``matched_exposure`` (buy and hold at the ensemble's mean exposure); ``timing_p_return``,
    ``timing_p_sharpe``, ``permutations``; ``beat_probability``: ``{cash, always_long, random}``
    (fractions of Monte Carlo paths on which the ensemble ends above the policy);
    ``break_even_bps`` (bps per side) and ``break_even_note``; ``seed_dispersion`` (a dict of
    numbers, or None); ``montecarlo_kind`` (what the simulations resample, a sentence).
    """
    fold = event.get("fold")
    if isinstance(fold, Mapping):  # results/fold_XX.json holds the whole fold
        fold = fold.get("index")
    fill = event.get("fill") if isinstance(event.get("fill"), str) else None
    permutations = number(dig(event, "timing", "permutations"))
    seeds = event.get("seed_dispersion")
    note = dig(event, "cost_sensitivity", "break_even_note")
    kind = event.get("montecarlo_kind")
    return {
        "fold": fold if isinstance(fold, int) and not isinstance(fold, bool) else None,
        "fill": fill,
        "fill_optimistic": _optimistic(fill, event.get("fill_optimistic")),
        "oos_return": number(dig(event, "oos", "total_return")),
        "sharpe": number(dig(event, "oos", "sharpe")),
        "mean_exposure": number(dig(event, "oos", "mean_exposure")),
        "buy_and_hold_return": number(dig(event, "buy_and_hold", "total_return")),
        "matched_return": number(dig(event, "buy_and_hold_matched", "total_return")),
        "matched_exposure": number(dig(event, "buy_and_hold_matched", "exposure")),
        "timing_p_return": number(dig(event, "timing", "p_return")),
        "timing_p_sharpe": number(dig(event, "timing", "p_sharpe")),
        "permutations": int(permutations) if permutations is not None else None,
        "beat_probability": {
            policy: number(dig(event, "nulls", policy, "beat_probability"))
            for policy in NULL_POLICIES
        },
        "break_even_bps": number(dig(event, "cost_sensitivity", "break_even_bps")),
        "break_even_note": note if isinstance(note, str) else None,
        "seed_dispersion": _seed_numbers(seeds) if isinstance(seeds, Mapping) else None,
        "montecarlo_kind": kind if isinstance(kind, str) else None,
    }


# ---------------------------------------------------------------------- member progress
# Where a member's wall time goes, as `member_progress` reports it (docs/events.md): env stepping,
# policy inference (and the rest of a rollout that is not env), SB3's gradient phase, checkpoints,
# and waiting (progress reports, stop polls, pauses: everything else).
TIME_PHASES = ("env", "inference", "gradient", "checkpoint", "waiting")
# SB3's training metrics of the member's last update, as `member_progress` names them in `sb3`.
SB3_METRICS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "loss",
    "clip_range",
    "n_updates",
)


def phase_numbers(value: Any) -> dict[str, float | None] | None:
    """A ``time_shares`` or ``time_s`` object as ``{phase: float >= 0 or None}`` over
    :data:`TIME_PHASES` (other keys dropped); None when ``value`` is not an object."""
    if not isinstance(value, Mapping):
        return None
    out: dict[str, float | None] = {}
    for phase in TIME_PHASES:
        x = number(value.get(phase))
        out[phase] = x if x is not None and x >= 0 else None
    return out


def sb3_numbers(value: Any) -> dict[str, float | int | None] | None:
    """An ``sb3`` object as ``{metric: finite float or None}`` over :data:`SB3_METRICS`
    (``n_updates`` an int >= 0; other keys dropped); None when ``value`` is not an object."""
    if not isinstance(value, Mapping):
        return None
    out: dict[str, float | int | None] = {name: number(value.get(name)) for name in SB3_METRICS}
    n = out["n_updates"]
    out["n_updates"] = int(n) if n is not None and n >= 0 and n == int(n) else None
    return out


@dataclass
class MemberView:
    """One member as its events describe it. ``time_shares`` (fractions of the interval before
    its last progress event), ``time_s`` (seconds since it started training in its process),
    ``sb3`` (:func:`sb3_numbers`) and ``measure_overhead_share`` come from its last
    ``member_progress``; None when that event had none (older runs, or no update yet for ``sb3``).
    ``pid``, ``node`` and ``device`` are those of the worker process its last ``member_started``
    named (None before one, or where the event lacked them); ``elapsed_s`` and ``resumed_from``
    come from its ``member_finished`` (its measured rate once done: :attr:`finished_rate`).
    """

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
    time_shares: dict[str, float | None] | None = None
    time_s: dict[str, float | None] | None = None
    sb3: dict[str, float | int | None] | None = None
    measure_overhead_share: float | None = None
    pid: int | None = None
    device: str | None = None
    elapsed_s: float | None = None
    resumed_from: int | None = None

    @property
    def finished_rate(self) -> float | None:
        """A finished member's timesteps per second over its whole ``member_finished`` elapsed
        time (start-up included), else its last ``fps``; None when neither is known."""
        if self.state != "finished":
            return None
        trained = self.timesteps - (self.resumed_from or 0)
        if self.elapsed_s is not None and self.elapsed_s > 0 and trained > 0:
            return trained / self.elapsed_s
        return self.fps if self.fps > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for ``status.json``'s ``per_member``."""
        return asdict(self)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def schedule_eta_s(
    running: list[tuple[int, float | None]], pending: list[int], slots: int, rate: float
) -> float:
    """Seconds until the last unit ends, by greedy list scheduling.

    ``running``: ``(remaining timesteps, own rate or None)`` of each unit in flight (each holds
    a slot from now; None: it has no rate of its own yet, ``rate`` is used); ``pending``: the
    remaining timesteps of each unit waiting, in the order they start, each at ``rate`` on the
    slot that frees first; ``slots``: units that run at once (at least the running ones).
    """
    free = [
        max(0, remaining) / (own if own is not None and own > 0 else rate)
        for remaining, own in running
    ]
    free += [0.0] * max(0, slots - len(free))
    heapq.heapify(free)
    end = max(free, default=0.0)
    for remaining in pending:
        start = heapq.heappop(free)
        finish = start + max(0, remaining) / rate
        end = max(end, finish)
        heapq.heappush(free, finish)
    return end


# ---------------------------------------------------------------------- per-member histories
# The series a member's curves are drawn from, one value per kept `member_progress` (None where
# the event had none): `mean_reward`, `fps`, and SB3's metrics of the last update.
HISTORY_SERIES = (
    "mean_reward",
    "fps",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
)
HISTORY_POINTS = 512  # kept per member and series at most (the newest point is one more)


class MemberHistory:
    """One member's training curves: at most :data:`HISTORY_POINTS` points, ordered by timesteps.

    Every ``stride``-th progress event is kept (``stride`` starts at 1); when the kept points
    would pass the cap, every other one is dropped and ``stride`` doubles, so the points stay
    evenly spread over the whole training at a bounded cost (amortised O(1) an event). The
    newest event is always the last point (:meth:`points`), kept or not. A point at or past a
    new event's timesteps is dropped first (a resumed member starts again from its checkpoint:
    what it trained past that was lost), so ``steps`` only grows. ``version`` changes with
    every change (a reader copies the points only when it moved).
    """

    __slots__ = ("steps", "values", "stride", "version", "_since", "_latest", "cap")

    def __init__(self, cap: int = HISTORY_POINTS) -> None:
        self.cap = max(2, cap + cap % 2)  # even: a thinning keeps the last kept point
        self.steps: list[int] = []
        self.values: dict[str, list[float | None]] = {name: [] for name in HISTORY_SERIES}
        self.stride = 1
        self.version = 0
        self._since = 0  # events since the last kept one
        self._latest: tuple[int, tuple[float | None, ...]] | None = None  # when not kept

    def __len__(self) -> int:
        return len(self.steps) + (self._latest is not None)

    def rewind(self, timesteps: int) -> None:
        """Drop the points past ``timesteps`` (a member restarted from a checkpoint there)."""
        self._drop_from(timesteps, inclusive=False)

    def _drop_from(self, timesteps: int, inclusive: bool) -> None:
        steps = self.steps
        cut = len(steps)
        while cut and (steps[cut - 1] >= timesteps if inclusive else steps[cut - 1] > timesteps):
            cut -= 1
        latest = self._latest
        drop_latest = latest is not None and (
            latest[0] >= timesteps if inclusive else latest[0] > timesteps
        )
        if cut == len(steps) and not drop_latest:
            return
        del steps[cut:]
        for series in self.values.values():
            del series[cut:]
        if drop_latest:
            self._latest = None
        self._since = self.stride  # the first point after a restart is kept
        self.version += 1

    def add(self, timesteps: int, values: tuple[float | None, ...]) -> None:
        """One progress event's :data:`HISTORY_SERIES` values at ``timesteps``."""
        self._drop_from(timesteps, inclusive=True)
        self.version += 1
        if self.steps and self._since + 1 < self.stride:
            self._since += 1
            self._latest = (timesteps, values)
            return
        self._since = 0
        self._latest = None
        self.steps.append(timesteps)
        for series, value in zip(self.values.values(), values, strict=True):
            series.append(value)
        if len(self.steps) > self.cap:  # cap + 1 points: keep 0, 2, ..., cap (the last one)
            del self.steps[1::2]
            for series in self.values.values():
                del series[1::2]
            self.stride *= 2

    def points(self) -> tuple[list[int], dict[str, list[float | None]]]:
        """Copies of the steps and of each series, the newest event last."""
        steps = list(self.steps)
        values = {name: list(series) for name, series in self.values.items()}
        if self._latest is not None:
            steps.append(self._latest[0])
            for series, value in zip(values.values(), self._latest[1], strict=True):
                series.append(value)
        return steps, values


def history_values(view: MemberView) -> tuple[float | None, ...]:
    """The :data:`HISTORY_SERIES` values of a member's last progress (None where unknown)."""
    sb3 = view.sb3 or {}
    fps = view.fps if view.fps > 0 else None
    head: tuple[float | None, ...] = (number(view.mean_reward), fps)
    return head + tuple(number(sb3.get(name)) for name in HISTORY_SERIES[2:])


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
    # The last `verdict` event's payload (:func:`verdict_payload`); None before one (and again
    # once the run is resumed: its folds are judged anew).
    verdict: dict[str, Any] | None = None
    # Each member's training curves (:class:`MemberHistory`), by (fold, member); not in the
    # status file (the panel reads them from the events).
    histories: dict[tuple[int, int], MemberHistory] = field(default_factory=dict)

    def history(self, fold: int, member: int) -> MemberHistory:
        key = (fold, member)
        found = self.histories.get(key)
        if found is None:
            found = self.histories[key] = MemberHistory()
        return found

    def member(self, fold: int, member: int) -> MemberView:
        key = (fold, member)
        if key not in self.members:
            self.members[key] = MemberView(fold, member)
        return self.members[key]

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one event; False (and counted) when it is unreadable or malformed."""
        problem = event_problem(event) or _verdict_problem(event)
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
            self.verdict = None
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
            view.pid = _int_or_none(event.get("pid"))
            device = event.get("device")
            view.device = device if isinstance(device, str) else None
            view.error = None
            view.elapsed_s = view.resumed_from = None
            started_at = _int_or_none(event.get("timesteps"))
            if started_at is not None and (view.fold, view.member) in self.histories:
                self.histories[view.fold, view.member].rewind(started_at)
        elif kind == "member_progress":
            view = self.member(event["fold"], event["member"])
            view.state = "running"
            view.timesteps = event["timesteps"]
            view.total = event["total"]
            view.fps = float(_opt(event, "fps", 0.0))
            reward = event.get("mean_reward")
            view.mean_reward = None if reward is None else float(reward)
            view.eta_s = (view.total - view.timesteps) / view.fps if view.fps > 0 else None
            view.time_shares = phase_numbers(event.get("time_shares"))
            view.time_s = phase_numbers(event.get("time_s"))
            view.sb3 = sb3_numbers(event.get("sb3"))
            overhead = number(event.get("measure_overhead_share"))
            view.measure_overhead_share = (
                overhead if overhead is not None and overhead >= 0 else None
            )
            timesteps = _int_or_none(view.timesteps)
            if timesteps is not None:
                self.history(view.fold, view.member).add(timesteps, history_values(view))
            self.fps_history.append(view.fps)
            if view.mean_reward is not None:
                self.reward_history.append(view.mean_reward)
            del self.fps_history[:-512], self.reward_history[:-512]
        elif kind == "member_finished":
            view = self.member(event["fold"], event["member"])
            view.state = "finished"
            view.timesteps = _opt(event, "timesteps", view.total)
            view.eta_s = 0.0
            elapsed = number(event.get("elapsed_s"))
            view.elapsed_s = elapsed if elapsed is not None and elapsed >= 0 else None
            view.resumed_from = _int_or_none(event.get("resumed_from"))
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
        elif kind == "verdict":
            self.verdict = verdict_payload(event)
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

    def unit_rate(self) -> float | None:
        """Timesteps per second of one unit, as measured: the median ``fps`` of the running
        units that report one, else the median :attr:`MemberView.finished_rate` of the finished
        ones; None when no unit has a measured rate yet."""
        running = [m.fps for m in self.members.values() if m.state == "running" and m.fps > 0]
        if running:
            return statistics.median(running)
        done = [m.finished_rate for m in self.members.values()]
        rates = [r for r in done if r is not None and r > 0]
        return statistics.median(rates) if rates else None

    @property
    def slots(self) -> int:
        """Units that run at once: the plan's ``parallel_members`` (at least 1; 1 when the plan
        does not say)."""
        value = _int_or_none(self.plan.get("parallel_members")) if self.plan else None
        return max(1, value or 1)

    def eta_s(self) -> float | None:
        """Seconds until every running and pending unit is trained, from measured rates.

        Each running unit goes on at its own ``fps`` (the typical rate, :meth:`unit_rate`,
        while it has none); pending units (in fold, member order) take the slot that frees
        first, at the typical rate, with :attr:`slots` units at a time: so the tail of a run,
        with fewer units left than slots, is counted as the wait it is. None when no unit has a
        measured rate yet.
        """
        rate = self.unit_rate()
        if rate is None:
            return None
        running, pending = [], []
        for _, m in sorted(self.members.items()):
            remaining = max(0, m.total - m.timesteps)
            if m.state == "running":
                running.append((remaining, m.fps if m.fps > 0 else None))
            elif m.state == "pending":
                pending.append(remaining)
        return schedule_eta_s(running, pending, max(self.slots, len(running)), rate)

    @property
    def fill(self) -> str | None:
        """How orders filled: the verdict's ``fill``, else that of the newest evaluated fold."""
        if self.verdict is not None and self.verdict["fill"] is not None:
            return self.verdict["fill"]
        for _, event in sorted(self.folds_evaluated.items(), reverse=True):
            if isinstance(event.get("fill"), str):
                return event["fill"]
        return None

    @property
    def fill_optimistic(self) -> bool | None:
        """True for ``close`` fills (the close the agent just saw: impossible live); None when no
        event said how orders filled."""
        flag = None if self.verdict is None else self.verdict["fill_optimistic"]
        if flag is None:
            for _, event in sorted(self.folds_evaluated.items(), reverse=True):
                if isinstance(event.get("fill_optimistic"), bool):
                    flag = event["fill_optimistic"]
                    break
        return _optimistic(self.fill, flag)

    def to_status(self) -> dict[str, Any]:
        """The status summary (``status.json``, ``ploutos status --json``): progress, members
        (counts in ``members``; each member's :meth:`MemberView.to_dict`, its time breakdown and
        SB3 metrics included, in ``per_member``), and, once judged, the verdict fields of
        docs/results.md (``fill``, ``fill_optimistic``, ``verdict``, ``pooled``,
        ``overfitting``, ``seed_dispersion``: None until the ``verdict`` event;
        ``fold_results``: :func:`fold_summary` of each evaluated fold)."""
        verdict = self.verdict or {}
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
            "per_member": [m.to_dict() for _, m in sorted(self.members.items())],
            "progress": round(self.progress, 4),
            "eta_s": self.eta_s(),
            "montecarlo_pooled": self.montecarlo.get("pooled", {}).get("stats"),
            "fill": self.fill,
            "fill_optimistic": self.fill_optimistic,
            "verdict": verdict.get("verdict"),
            "pooled": verdict.get("pooled"),
            "overfitting": verdict.get("overfitting"),
            "seed_dispersion": verdict.get("seed_dispersion"),
            "fold_results": [fold_summary(e) for _, e in sorted(self.folds_evaluated.items())],
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
