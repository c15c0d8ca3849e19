"""What the control panel knows about training runs: read from the run folders, never from memory.

:class:`RunsWatcher` follows every run folder under a runs root. Each :meth:`RunsWatcher.poll`
rescans the root (new runs appear), tails each run's ``events.jsonl`` with the engine's one
reader (``EventTail`` of :mod:`engine.api`: only what was appended since the last poll is read, at
most ``max_read_bytes`` per run per poll) into a ``RunView``, and returns
immutable :class:`RunSnapshot` copies the UI thread can keep. A run folder that cannot be read
shows as ``unreadable`` with its reason; the others are listed as usual. ``poll`` does file I/O
and is meant to run in a worker thread; this module imports nothing from Textual.

The watcher is also the screens' one handle on the runs: its ``launch_run``, ``stop`` and
``resume`` only forward to :mod:`ploutos_tui.actions` (so tests can stand in for them).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.api import (
    LIVE,
    RESUMABLE,
    EventTail,
    RunFolder,
    RunState,
    RunView,
    default_runs_root,
    list_runs,
    parse_stamp,
    resolve_run,
)
from ploutos_tui import actions

DEFAULT_MAX_READ_BYTES = 4 << 20  # per run per poll


# ---------------------------------------------------------------------------- snapshots
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def freeze(value: Any) -> Any:
    """A read-only deep copy of JSON-like data: dicts become mapping proxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class MemberCurves:
    """One member's training curves, as its progress events drew them: ``steps`` (timesteps,
    increasing) and, per name of ``HISTORY_SERIES`` (``mean_reward``, ``fps``, ``policy_loss``,
    ``value_loss``, ``entropy``, ``approx_kl``, ``clip_fraction``, ``explained_variance``), one
    value per step (None where that event had none). At most ``HISTORY_POINTS`` + 1 points,
    evenly spread over the whole training (engine.runs.view.MemberHistory)."""

    steps: tuple[int, ...] = ()
    series: Mapping[str, tuple[float | None, ...]] = field(default_factory=lambda: _EMPTY)

    def __len__(self) -> int:
        return len(self.steps)

    def values(self, name: str) -> tuple[float | None, ...]:
        """One series (empty when unknown)."""
        return self.series.get(name, ())


NO_CURVES = MemberCurves()


@dataclass(frozen=True)
class MemberRow:
    """One member as of its last events. ``time_shares`` (``env``, ``inference``, ``gradient``,
    ``checkpoint``, ``waiting``: fractions of the interval before its last progress event),
    ``time_s`` (the same, cumulative seconds) and ``sb3`` (its last update's metrics) are as
    docs/events.md describes ``member_progress``; empty when its events had none (older runs,
    no progress yet, or before the first update for ``sb3``); a value may be None.
    ``pid``, ``node`` and ``device``: its worker process as its last ``member_started`` named
    it (None where unknown). ``curves``: its training curves (:class:`MemberCurves`)."""

    fold: int
    member: int
    state: str
    timesteps: int
    total: int
    fps: float
    mean_reward: float | None
    eta_s: float | None
    node: str | None
    error: str | None
    time_shares: Mapping[str, float | None] = field(default_factory=lambda: _EMPTY)
    time_s: Mapping[str, float | None] = field(default_factory=lambda: _EMPTY)
    sb3: Mapping[str, float | int | None] = field(default_factory=lambda: _EMPTY)
    measure_overhead_share: float | None = None
    pid: int | None = None
    device: str | None = None
    curves: MemberCurves = NO_CURVES

    def on_host(self, hostname: str) -> bool:
        """Whether its worker runs on the machine called ``hostname`` (its ``node`` is the host
        name, or ``host/<Ray node id>`` with the Ray executor)."""
        return self.node is not None and self.node.split("/", 1)[0] == hostname

    def local_pid(self, hostname: str) -> int | None:
        """Its worker's pid while it runs on ``hostname``, else None (another machine's pid,
        or a member that is not running, says nothing about this one's processes)."""
        if self.state != "running" or not self.on_host(hostname):
            return None
        return self.pid

    @property
    def has_training_detail(self) -> bool:
        """Whether its events said where its time goes or how its updates went."""
        return bool(self.time_shares or self.time_s or self.sb3)

    def shown_time_shares(self) -> tuple[Mapping[str, float | None], str]:
        """The time split worth showing and what it covers: while the member runs, its last
        interval's (``"last interval"``); once it is done, its whole training's, from
        ``time_s`` (``"whole training"``); an empty mapping when its events had neither."""
        if self.state != "running" and self.time_s:
            seconds = {k: _finite_or_none(v) for k, v in self.time_s.items()}
            total = sum(v for v in seconds.values() if v is not None and v >= 0)
            if total > 0:
                shares = {
                    k: (v / total if v is not None and v >= 0 else None) for k, v in seconds.items()
                }
                return MappingProxyType(shares), "whole training"
        return self.time_shares, "last interval"


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    """A frozen copy of ``value`` when it is a JSON object, else an empty mapping: an event
    field of the wrong type reads as absent."""
    return freeze(value) if isinstance(value, Mapping) else _EMPTY


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class FoldRow:
    """One evaluated (or failed) fold. The judged fields are those of docs/results.md, frozen as
    the ``fold_evaluated`` event carried them (empty when it had none: older runs)."""

    fold: int
    oos: Mapping[str, Any]
    buy_and_hold: Mapping[str, Any]
    members_used: int
    error: str | None = None
    fill: str | None = None
    fill_optimistic: bool = False
    buy_and_hold_matched: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    cost_sensitivity: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    nulls: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    timing: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    seed_dispersion: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    montecarlo: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    montecarlo_kind: str | None = None

    @property
    def judged(self) -> bool:
        """Whether the fold carries any verdict field (runs before verdicts have none)."""
        return bool(
            self.fill
            or self.buy_and_hold_matched
            or self.cost_sensitivity
            or self.nulls
            or self.timing
            or self.seed_dispersion
        )


def p_text(p: Any) -> str:
    """A p-value as the verdict line writes it: two decimals, one significant digit below 0.01
    (``0.43``, ``0.004``); ``—`` when it is not a finite number in [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        return "—"  # NaN fails the range test too
    return f"{p:.1g}" if 0 < p < 0.01 else f"{p:.2f}"


@dataclass(frozen=True)
class RunSnapshot:
    """One run as last polled. A copy, and read-only all the way down (mappings are
    ``MappingProxyType``, lists are tuples): safe to hand to the UI thread and keep."""

    run_id: str
    path: Path
    state: str
    progress: float
    elapsed_s: float | None
    eta_s: float | None
    config: str
    algorithm: str
    n_folds: int
    ensemble: int
    members: tuple[MemberRow, ...] = ()
    folds: tuple[FoldRow, ...] = ()
    montecarlo: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)
    fps_history: tuple[float, ...] = ()
    reward_history: tuple[float, ...] = ()
    pid: int | None = None
    log_path: Path | None = None
    error: str | None = None
    profile: str = ""
    started_at: str | None = None
    updated_at: str | None = None
    stalled_s: float | None = None  # a live trainer's heartbeat age, once it counts as stalled
    skipped_events: int = 0  # event lines skipped as unreadable or malformed
    # The run's verdict (docs/results.md), from its `verdict` event: empty until judged.
    verdict: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)  # skill, line, reasons
    pooled: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    overfitting: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    seed_dispersion: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    fill: str | None = None  # next_open / next_vwap / close (verdict's, else the newest fold's)
    fill_optimistic: bool = False  # close fills: the close the agent just saw

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def judged(self) -> bool:
        """Whether the run has a verdict (its ``verdict`` event has been read)."""
        return bool(self.verdict)

    @property
    def verdict_short(self) -> str:
        """The verdict in a few characters for the jobs list: ``skill p=0.004``, ``no skill
        p=0.43`` (p of the pooled timing test on returns), ``—`` before the run is judged."""
        skill = self.verdict.get("skill")
        if not isinstance(skill, bool):
            return "—"
        head = "skill" if skill else "no skill"
        timing = self.pooled.get("timing")
        p = p_text(timing.get("p_return") if isinstance(timing, Mapping) else None)
        return head if p == "—" else f"{head} p={p}"

    @property
    def state_label(self) -> str:
        """``running``, or ``running (stalled 120 s)`` for a trainer that stopped beating."""
        return RunState(self.state, stalled_s=self.stalled_s).label

    @property
    def resumable(self) -> bool:
        return self.state in RESUMABLE

    def montecarlo_scopes(self) -> list[str]:
        """Scopes with statistics: ``pooled`` first, then the folds newest first."""
        folds = sorted((s for s in self.montecarlo if s != "pooled"), reverse=True)
        return (["pooled"] if "pooled" in self.montecarlo else []) + folds

    def default_scope(self) -> str | None:
        scopes = self.montecarlo_scopes()
        return scopes[0] if scopes else None


def format_steps(n: float) -> str:
    """Timesteps, short: ``4,096``, ``250k``, ``12.5M``, ``1.2G``."""
    n = int(n)
    if n < 100_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1e6:.1f}M" if n < 1e9 else f"{n / 1e9:.1f}G"


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``, ``2d03h``; an em dash when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def parse_ts(stamp: str | None) -> float | None:
    """Epoch seconds of an event timestamp (``2026-01-02T03:04:05.678Z``), None if unreadable."""
    return parse_stamp(stamp)


# ---------------------------------------------------------------------------- reading folders
def job_pids(runs_root: Path | None = None) -> dict[str, int]:
    """Trainer pid of every live run (a trainer holds its lock) under the runs root."""
    out: dict[str, int] = {}
    for folder in list_runs(runs_root):
        pid = folder.trainer_pid()
        if pid:
            out[folder.run_id] = pid
    return out


def log_tail(run: RunFolder | RunSnapshot | os.PathLike[str] | str, lines: int = 200) -> list[str]:
    """The last ``lines`` lines of the run's ``logs/train.log`` (or of a log file given directly),
    read backwards from the end of the file in blocks: a huge log costs only its tail."""
    if isinstance(run, RunFolder):
        path = run.log_path
    elif isinstance(run, RunSnapshot):
        path = run.log_path or RunFolder(run.path).log_path
    else:
        path = Path(run)
        if path.is_dir():
            path = RunFolder(path).log_path
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            pos, data = end, b""
            # one more newline than lines wanted, so the first kept line is whole
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(64 << 10, pos)
                pos -= step
                fh.seek(pos)
                data = fh.read(step) + data
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    out = text.split("\n")
    if out and out[-1] == "":
        out.pop()
    if pos > 0 and out:
        out = out[1:]  # the first piece may be the end of a longer line
    # a carriage return redraws the line in a terminal: keep what would be shown
    return [line.rsplit("\r", 1)[-1] if "\r" in line else line for line in out[-lines:]]


# ---------------------------------------------------------------------------- the watcher
@dataclass
class _Tracked:
    folder: RunFolder
    view: RunView
    tail: EventTail
    version: int = 0  # bumped when new events were applied
    built_version: int = -1
    fold_errors: dict[int, str] = field(default_factory=dict)
    static: dict[str, Any] = field(default_factory=dict)  # config, algorithm, folds, ensemble
    status_key: tuple[int, int] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    status_problem: str | None = None
    snapshot: RunSnapshot | None = None
    # (history version, frozen curves) per member: a member whose curves did not move is not
    # copied again
    curves: dict[tuple[int, int], tuple[int, MemberCurves]] = field(default_factory=dict)

    @classmethod
    def of(cls, folder: RunFolder) -> _Tracked:
        return cls(folder, RunView(run_id=folder.run_id), EventTail(folder.events_path))

    @property
    def offset(self) -> int:
        """Where the first event line not yet applied starts in ``events.jsonl``."""
        return self.tail.offset


class RunsWatcher:
    """Follows the run folders under ``runs_root``; :meth:`poll` from one worker thread at a time.

    ``clock`` (epoch seconds) is only used for the elapsed time of live runs; ended runs show the
    time between their first and last event, so recorded runs render the same at any time.
    """

    def __init__(
        self,
        runs_root: Path | str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    ) -> None:
        self.runs_root = Path(runs_root) if runs_root is not None else default_runs_root()
        self.clock = clock
        self.max_read_bytes = max(1, int(max_read_bytes))
        self._tracked: dict[str, _Tracked] = {}
        self._latest: dict[str, RunSnapshot] = {}
        self._lock = threading.Lock()
        self.bytes_read_last_poll = 0

    # -------------------------------------------------------------- reading
    def poll(self) -> list[RunSnapshot]:
        """Every run, newest first, with the events appended since the previous poll applied."""
        actions.reap_children()
        with self._lock:
            self.bytes_read_last_poll = 0
            folders = list_runs(self.runs_root)
            seen = set()
            out = []
            for folder in folders:
                seen.add(folder.run_id)
                tracked = self._tracked.get(folder.run_id)
                if tracked is None or tracked.folder.root != folder.root:
                    tracked = _Tracked.of(folder)
                    self._tracked[folder.run_id] = tracked
                out.append(self._poll_guarded(tracked))
            for gone in set(self._tracked) - seen:
                del self._tracked[gone]
            self._latest = {snap.run_id: snap for snap in out}
            return out

    def poll_run(self, run_id: str) -> RunSnapshot | None:
        """Only this run (cheaper than :meth:`poll` for a screen that shows one run)."""
        actions.reap_children()
        with self._lock:
            folder = RunFolder(self.runs_root / run_id)
            if not folder.exists():
                known = self._tracked.get(run_id)
                folder = known.folder if known is not None else folder
            if not folder.exists():
                self._tracked.pop(run_id, None)
                self._latest.pop(run_id, None)
                return None
            tracked = self._tracked.get(run_id)
            if tracked is None or tracked.folder.root != folder.root:
                tracked = _Tracked.of(folder)
                self._tracked[run_id] = tracked
            self.bytes_read_last_poll = 0
            snap = self._poll_guarded(tracked)
            self._latest = {**self._latest, run_id: snap}
            return snap

    def snapshot(self, run_id: str) -> RunSnapshot | None:
        """The run as of the last poll (None if unknown)."""
        return self._latest.get(run_id)

    def _poll_guarded(self, t: _Tracked) -> RunSnapshot:
        """:meth:`_poll_one`, but a folder that breaks it shows as unreadable instead of taking
        every other run's listing down with it (the next poll tries it afresh)."""
        try:
            return self._poll_one(t)
        except Exception as err:  # any: one run folder must never end the panel's listing
            self._tracked.pop(t.folder.run_id, None)
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            return self._unreadable(t.folder, f"cannot read the run folder ({reason})")

    @staticmethod
    def _unreadable(folder: RunFolder, reason: str) -> RunSnapshot:
        return RunSnapshot(
            run_id=folder.run_id,
            path=folder.root,
            state="unreadable",
            progress=0.0,
            elapsed_s=None,
            eta_s=None,
            config="",
            algorithm="",
            n_folds=0,
            ensemble=0,
            log_path=folder.log_path,
            error=reason,
        )

    def _poll_one(self, t: _Tracked) -> RunSnapshot:
        self._read_events(t)
        status = self._read_status(t)
        run_state = self._state(t, status)
        state = run_state.state
        if t.snapshot is None or t.built_version != t.version:
            t.snapshot = self._build(t)
            t.built_version = t.version
        snap = t.snapshot
        view = t.view
        started = parse_ts(view.started_at)
        if started is None:
            elapsed = None
        elif state in LIVE:
            elapsed = max(0.0, self.clock() - started)
        else:
            last = parse_ts(view.updated_at)
            elapsed = max(0.0, last - started) if last is not None else None
        pid = None
        if state in LIVE:
            pid = t.folder.trainer_pid(status)
        error = view.error or (status.get("error") if state == "failed" else None)
        if run_state.reason:
            error = run_state.reason
        elif run_state.stalled_s is not None:
            who = f"trainer pid {pid}" if pid else "the trainer"
            error = (
                f"no heartbeat from {who} for {run_state.stalled_s:.0f} s: stopped (SIGSTOP; "
                "`kill -CONT` it) or hung"
            )
        return replace(
            snap,
            state=state,
            elapsed_s=elapsed,
            eta_s=view.eta_s() if state in ("running", "stopping") else None,
            pid=pid,
            error=error if isinstance(error, str) or error is None else str(error),
            stalled_s=run_state.stalled_s,
        )

    def _read_events(self, t: _Tracked) -> None:
        tail = t.tail
        restarts = tail.restarts
        events = tail.poll(self.max_read_bytes)
        self.bytes_read_last_poll += tail.bytes_read
        if tail.restarts != restarts:  # the log was replaced: what it said before is void
            t.view = RunView(run_id=t.folder.run_id)
            t.fold_errors.clear()
            t.curves.clear()
            t.version += 1
        for event in events:
            self._apply(t, event)
        if events:
            t.version += 1

    @staticmethod
    def _apply(t: _Tracked, event: dict[str, Any]) -> None:
        if not t.view.apply(event):
            return  # unreadable or malformed: skipped and counted (docs/events.md)
        kind = event["type"]
        if kind == "fold_failed":
            t.fold_errors[event["fold"]] = str(event.get("error") or "failed")
        elif kind in ("fold_evaluated", "fold_started"):
            t.fold_errors.pop(event["fold"], None)

    def _read_status(self, t: _Tracked) -> dict[str, Any]:
        try:
            st = t.folder.status_path.stat()
            key = (st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key != t.status_key or key is None:
            t.status_key = key
            t.status, t.status_problem = t.folder.read_status_checked()
        return t.status

    def _state(self, t: _Tracked, status: dict[str, Any]) -> RunState:
        found = t.folder.run_state(self.clock(), status, t.status_problem)
        if found.state == "interrupted" and actions.child_alive(t.folder.run_id):
            return RunState("starting")  # a trainer this panel just launched has no lock yet
        return found

    def _static(self, t: _Tracked) -> dict[str, Any]:
        """What the folder says before any event: config file, algorithm, folds, ensemble."""
        if t.static:
            return t.static
        info: dict[str, Any] = {"config": "", "algorithm": "", "n_folds": 0, "ensemble": 0}
        with contextlib.suppress(OSError, ValueError, AttributeError):
            info["config"] = str(t.folder.read_meta().get("config_source") or "")
        with contextlib.suppress(OSError, ValueError, TypeError):
            info["n_folds"] = len(t.folder.read_folds())
        try:
            from engine.api import read_yaml  # PyYAML: not before the first frame needs it

            training = read_yaml(t.folder.config_path)[0].get("training", {})
            info["algorithm"] = str(training.get("algorithm") or "")
            info["ensemble"] = int(training.get("ensemble") or 0)
        except Exception:  # unreadable, hostile or not YAML: the events will say
            pass
        t.static = info
        return info

    @staticmethod
    def _curves(t: _Tracked, key: tuple[int, int]) -> MemberCurves:
        """The member's curves, copied only when its history moved since the last build."""
        history = t.view.histories.get(key)
        if history is None:
            return NO_CURVES
        cached = t.curves.get(key)
        if cached is not None and cached[0] == history.version:
            return cached[1]
        steps, values = history.points()
        curves = MemberCurves(
            tuple(steps), MappingProxyType({k: tuple(v) for k, v in values.items()})
        )
        t.curves[key] = (history.version, curves)
        return curves

    def _build(self, t: _Tracked) -> RunSnapshot:
        view = t.view
        static = self._static(t)
        members = tuple(
            MemberRow(
                fold=m.fold,
                member=m.member,
                state=m.state,
                timesteps=m.timesteps,
                total=m.total,
                fps=m.fps,
                mean_reward=m.mean_reward,
                eta_s=m.eta_s,
                node=m.node,
                error=m.error,
                time_shares=_mapping(m.time_shares),
                time_s=_mapping(m.time_s),
                sb3=_mapping(m.sb3),
                measure_overhead_share=m.measure_overhead_share,
                pid=m.pid,
                device=m.device,
                curves=self._curves(t, key),
            )
            for key, m in sorted(view.members.items())
        )
        fold_ids = sorted(set(view.folds_evaluated) | set(t.fold_errors))
        folds = []
        for fold in fold_ids:
            event = view.folds_evaluated.get(fold, {})
            fill = _text(event.get("fill"))
            folds.append(
                FoldRow(
                    fold=fold,
                    oos=freeze(event.get("oos") or {}),
                    buy_and_hold=freeze(event.get("buy_and_hold") or {}),
                    members_used=int(event.get("members_used") or 0),
                    error=t.fold_errors.get(fold),
                    fill=fill,
                    fill_optimistic=fill == "close" or event.get("fill_optimistic") is True,
                    buy_and_hold_matched=_mapping(event.get("buy_and_hold_matched")),
                    cost_sensitivity=_mapping(event.get("cost_sensitivity")),
                    nulls=_mapping(event.get("nulls")),
                    timing=_mapping(event.get("timing")),
                    seed_dispersion=_mapping(event.get("seed_dispersion")),
                    montecarlo=_mapping(event.get("montecarlo")),
                    montecarlo_kind=_text(event.get("montecarlo_kind")),
                )
            )
        montecarlo = freeze(
            {scope: event.get("stats") or {} for scope, event in view.montecarlo.items()}
        )
        judged = view.verdict or {}
        return RunSnapshot(
            run_id=t.folder.run_id,
            path=t.folder.root,
            state=view.state,
            progress=view.progress,
            elapsed_s=None,
            eta_s=None,
            config=view.config or static["config"],
            algorithm=view.algorithm or static["algorithm"],
            n_folds=view.n_folds or static["n_folds"],
            ensemble=view.ensemble or static["ensemble"],
            members=members,
            folds=tuple(folds),
            montecarlo=montecarlo,
            fps_history=tuple(view.fps_history),
            reward_history=tuple(view.reward_history),
            log_path=t.folder.log_path,
            error=view.error,
            profile=view.profile,
            started_at=view.started_at,
            updated_at=view.updated_at,
            skipped_events=view.skipped_events,
            verdict=_mapping(judged.get("verdict")),
            pooled=_mapping(judged.get("pooled")),
            overfitting=_mapping(judged.get("overfitting")),
            seed_dispersion=_mapping(judged.get("seed_dispersion")),
            fill=view.fill,
            fill_optimistic=bool(view.fill_optimistic),
        )

    # -------------------------------------------------------------- acting
    def job_pids(self) -> dict[str, int]:
        return job_pids(self.runs_root)

    def launch_run(
        self,
        config_path: str | Path,
        profile: str | None = None,
        ensemble: int | None = None,
        algorithm: str | None = None,
    ) -> RunFolder:
        return actions.launch_run(config_path, profile, ensemble, algorithm, self.runs_root)

    def stop(self, run_id: str) -> str:
        return actions.stop(self._resolve(run_id))

    def resume(self, run_id: str) -> RunFolder:
        return actions.resume(self._resolve(run_id))

    def log_tail(self, run_id: str, lines: int = 200) -> list[str]:
        return log_tail(self._resolve(run_id), lines)

    def _resolve(self, run_id: str) -> RunFolder:
        snap = self._latest.get(run_id)
        if snap is not None:
            return RunFolder(snap.path)
        candidate = self.runs_root / run_id
        if candidate.is_dir():
            return RunFolder(candidate)
        return resolve_run(run_id, self.runs_root)
