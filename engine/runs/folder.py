"""The run folder: the one module that knows its layout, its event log and its status file.

A run folder holds everything a training run produced, so a run can be watched, stopped and
resumed from nothing but the folder (the control panel re-attaches by reading it)::

    <runs>/<run_id>/
      config.yaml        the resolved configuration (validated, defaults filled in)
      run.json           where it came from: config file, feature cache, host, creation time
      plan.json          the resolved hardware plan, with a reason per number
      folds.json         the walk-forward folds (dates and rows)
      events.jsonl       append-only JSON Lines log (schema: docs/events.md)
      status.json        the latest summary, rewritten atomically
      logs/train.log     the trainer's own log (and its stdout/stderr when detached)
      models/fold_00/member_00/model.zip    the member's SB3 model (PPO.load / RecurrentPPO.load)
                                 /normalizer.npz  the fold's feature normaliser (train window only)
                                 /member.json     seed, timesteps, sha256 of model.zip
      checkpoints/fold_00/member_00/checkpoint.zip + checkpoint.json
      results/fold_00.json               out-of-sample metrics and Monte Carlo statistics
      results/fold_00_montecarlo.npz     per-simulation final returns and drawdowns
      results/summary.json               all folds + the pooled Monte Carlo statistics
      .lock              flock held by the live trainer (a dead trainer holds nothing)

Events are written by one process (the trainer); readers tail them by byte offset and only ever
consume complete lines, so a reader that meets a partial last line waits for the rest. Every
reader (``replay``, ``ploutos status``, the panel) goes through the one :class:`EventTail`, so one
rule holds for all: a line is whatever lies before its newline however long it is, up to
``MAX_LINE_BYTES``; a longer line, a line that is not a UTF-8 JSON object, and an event whose known
type lacks its fields are skipped and counted, never fatal. One bad run folder shows as
``unreadable`` with a reason and hides no other run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import atomic
from engine.errors import PloutosError

RUNS_DIR_ENV = "PLOUTOS_RUNS_DIR"
EVENTS_SCHEMA_VERSION = 1

# Run states as shown to users. "interrupted": the status says running but no trainer holds the
# run's lock (killed, machine rebooted): `ploutos resume` continues it. "unreadable": the
# folder's status.json cannot be read (RunState.reason says why).
STATES = (
    "starting",
    "running",
    "stopping",
    "stopped",
    "finished",
    "failed",
    "interrupted",
    "unreadable",
)
LIVE_STATES = ("starting", "running", "stopping")
RESUMABLE = ("stopped", "failed", "interrupted")

CHUNK_BYTES = 1 << 20  # one read of the event log
MAX_LINE_BYTES = 16 << 20  # a longer event line is skipped as unreadable (and status.json refused)
HEARTBEAT_S = 5.0  # the trainer rewrites status.json at least this often (its `heartbeat`)
STALL_AFTER_S = 60.0  # a live trainer whose heartbeat is older than this shows as stalled
MAX_RUN_ID_CHARS = 255  # one folder name (NAME_MAX)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def default_runs_root() -> Path:
    """``$PLOUTOS_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def utc_stamp() -> str:
    return (
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_stamp(stamp: object) -> float | None:
    """Epoch seconds of a timestamp (``2026-01-02T03:04:05.678Z``); None if not one."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def new_run_id(config_name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(config_name).stem)
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{stem}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder. Creating the object touches nothing on disk."""

    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def meta_path(self) -> Path:
        return self.root / "run.json"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    @property
    def folds_path(self) -> Path:
        return self.root / "folds.json"

    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs_dir / "train.log"

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    def member_dir(self, fold: int, member: int) -> Path:
        return self.root / "models" / f"fold_{fold:02d}" / f"member_{member:02d}"

    def checkpoint_dir(self, fold: int, member: int) -> Path:
        return self.root / "checkpoints" / f"fold_{fold:02d}" / f"member_{member:02d}"

    def fold_result_path(self, fold: int) -> Path:
        return self.results_dir / f"fold_{fold:02d}.json"

    def fold_montecarlo_path(self, fold: int) -> Path:
        return self.results_dir / f"fold_{fold:02d}_montecarlo.npz"

    @property
    def summary_path(self) -> Path:
        return self.results_dir / "summary.json"

    def exists(self) -> bool:
        try:
            return self.config_path.exists()
        except OSError:  # e.g. EACCES on the folder: it exists, and shows as unreadable
            return self.root.is_dir()

    def create(self) -> RunFolder:
        """Make the folder (it must not exist or be empty) and its sub-folders."""
        if self.root.exists() and any(self.root.iterdir()):
            raise PloutosError(
                f"{self.root}: the run folder already exists and is not empty; pick another "
                "--run-dir or `ploutos resume` it"
            )
        for sub in (self.root, self.logs_dir, self.results_dir):
            sub.mkdir(parents=True, exist_ok=True)
        return self

    # ------------------------------------------------------------------ status
    def read_status(self) -> dict[str, Any]:
        """The status file as a dict; ``{}`` when it is missing or unreadable."""
        return self.read_status_checked()[0]

    def read_status_checked(self) -> tuple[dict[str, Any], str | None]:
        """The status file and, when it cannot be used, why (one line naming the file).

        A missing file is no problem (``{}``, None): the run has not written one yet.
        """
        name = self.status_path.name
        try:
            with open(self.status_path, "rb") as fh:
                raw = fh.read(MAX_LINE_BYTES + 1)
        except FileNotFoundError:
            return {}, None
        except OSError as err:
            return {}, f"{name}: {err.strerror or err}"
        if len(raw) > MAX_LINE_BYTES:
            return {}, f"{name}: larger than {MAX_LINE_BYTES >> 20} MiB"
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return {}, f"{name}: not UTF-8"
        except (ValueError, RecursionError):
            return {}, f"{name}: not valid JSON"
        if not isinstance(data, dict):
            return {}, f"{name}: not a JSON object"
        state = data.get("state")
        if state is not None and not (isinstance(state, str) and state in STATES):
            return {}, f"{name}: unknown state {str(state)[:40]!r}"
        return data, None

    def write_status(self, status: dict[str, Any]) -> None:
        atomic.write_json(self.status_path, status)

    def read_meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def read_plan(self) -> dict[str, Any]:
        return json.loads(self.plan_path.read_text())

    def read_folds(self) -> list[dict[str, Any]]:
        return json.loads(self.folds_path.read_text())

    # ------------------------------------------------------------------ liveness
    def trainer_alive(self) -> bool:
        """True when a live trainer holds the run's lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the shared lock we may have taken
        return False

    @contextlib.contextmanager
    def hold_lock(self) -> Iterator[None]:
        """Held by the trainer for the whole run; refuses a second trainer on the same run."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PloutosError(
                f"{self.root}: a trainer is already running this run; `ploutos stop "
                f"{self.run_id}` first"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)

    def heartbeat_age(self, status: dict[str, Any], now: float | None = None) -> float | None:
        """Seconds since the lock holder last showed life: its status ``heartbeat`` or, for a
        trainer that has not written one yet, the moment it took the lock (None: neither)."""
        beats = [t for t in (parse_stamp(status.get("heartbeat")),) if t is not None]
        with contextlib.suppress(OSError):
            beats.append(self.lock_path.stat().st_mtime)
        if not beats:
            return None
        now = time.time() if now is None else now
        return max(0.0, now - max(beats))

    def run_state(
        self,
        now: float | None = None,
        status: dict[str, Any] | None = None,
        problem: str | None = None,
    ) -> RunState:
        """The run's state, corrected for a trainer that died (or stopped) without saying so.

        ``status``/``problem`` are :meth:`read_status_checked`'s answer when the caller has it;
        ``now`` (epoch seconds) is the clock the heartbeat age is measured on.
        """
        if status is None:
            status, problem = self.read_status_checked()
        if problem is not None:
            return RunState("unreadable", reason=problem)
        state = status.get("state") or ("starting" if self.exists() else "unknown")
        if state not in LIVE_STATES:
            return RunState(state)
        if not self.trainer_alive():
            return RunState("interrupted")
        age = self.heartbeat_age(status, now)
        stalled = age if age is not None and age > STALL_AFTER_S else None
        return RunState(state, stalled_s=stalled)

    def state(self) -> str:
        """The run's state, corrected for a trainer that died without saying so."""
        return self.run_state().state


@dataclass(frozen=True)
class RunState:
    """A run's state as shown to users, with why it is unreadable or how long it has stalled."""

    state: str
    reason: str | None = None  # why "unreadable"
    stalled_s: float | None = None  # a live trainer's heartbeat age, once over STALL_AFTER_S

    @property
    def label(self) -> str:
        """``running``, ``running (stalled 120 s)``, ``unreadable``."""
        if self.stalled_s is not None:
            return f"{self.state} (stalled {self.stalled_s:.0f} s)"
        return self.state


def _is_run(path: Path) -> bool:
    try:
        return (path / "config.yaml").is_file()
    except OSError:  # a folder we may not look into (EACCES): list it, it shows as unreadable
        return path.is_dir()


def _shown(name: str, limit: int = 60) -> str:
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name):,} characters)"


def resolve_run(name: str | os.PathLike[str], runs_root: Path | None = None) -> RunFolder:
    """A run given as a path (``runs/x``, ``./x``, ``.``) or as a run id under the runs root: the
    exact id or a prefix of exactly one. One clear error otherwise; never a pattern match."""
    root = runs_root or default_runs_root()
    text = os.fspath(name)
    if not isinstance(name, str) or os.sep in text or text in (".", ".."):
        path = Path(text)
        if _is_run(path):
            return RunFolder(path)
        raise PloutosError(
            f"{_shown(text)}: not a run folder (no config.yaml there); give a run id from "
            "`ploutos runs` or the path of a run folder"
        )
    if not text or len(text) > MAX_RUN_ID_CHARS or not _RUN_ID.fullmatch(text):
        what = "an empty run id" if not text else f"{_shown(text)!r} is not a run id"
        raise PloutosError(
            f"{what}: a run id is a folder name of letters, digits and . _ + - (at most "
            f"{MAX_RUN_ID_CHARS}); see `ploutos runs`"
        )
    for candidate in (root / text, Path(text)):
        if _is_run(candidate):
            return RunFolder(candidate)
    try:
        entries = sorted(p for p in root.iterdir() if p.name.startswith(text) and _is_run(p))
    except OSError:
        entries = []
    if len(entries) == 1:
        return RunFolder(entries[0])
    if entries:
        names = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise PloutosError(
            f"{text}: ambiguous, {len(entries)} runs in {root} start with it ({names}); "
            "give more of the run id"
        )
    raise PloutosError(f"{text}: no such run in {root} (see `ploutos runs`)")


def list_runs(runs_root: Path | None = None) -> list[RunFolder]:
    """Every run folder under the root, newest first."""
    root = runs_root or default_runs_root()
    try:
        runs = [RunFolder(p) for p in root.iterdir() if _is_run(p)]
    except OSError:  # no root yet (or not a folder we may read)
        return []
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


# ---------------------------------------------------------------------- events
class EventLog:
    """The writer of ``events.jsonl``: one JSON object per line, each written whole.

    Each line goes out in a single ``write`` on an ``O_APPEND`` descriptor, so a reader never sees
    two events interleaved; lifecycle events (everything but progress) are also fsynced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"ts": utc_stamp(), "type": type_, **fields}
        line = json.dumps(event, separators=(",", ":"), allow_nan=False, default=_json_default)
        data = (line + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if type_ != "member_progress":
            os.fsync(self._fd)
        return event

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _unreadable(offset: int, size: int, reason: str) -> dict[str, Any]:
    return {"type": "unreadable", "offset": offset, "bytes": size, "reason": reason}


def parse_event_line(raw: bytes, offset: int = 0) -> dict[str, Any] | None:
    """One line of the log as an event; an ``unreadable`` marker (``offset``, ``bytes``,
    ``reason``) when it is not a UTF-8 JSON object with a string ``type``; None when blank."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _unreadable(offset, len(raw), "not UTF-8")
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested brackets
        return _unreadable(offset, len(raw), "not valid JSON")
    if not isinstance(event, dict):
        return _unreadable(offset, len(raw), "not a JSON object")
    if not isinstance(event.get("type"), str):
        return _unreadable(offset, len(raw), "no string 'type'")
    return event


@dataclass
class EventTail:
    """The one reader of ``events.jsonl``: each ``poll()`` returns the events written since.

    ``offset`` is where the first line not yet returned starts. A line is one line however many
    chunks it spans; a partial last line is kept (and its bytes not read again) until its newline
    comes; a line over ``max_line_bytes`` is dropped unread up to its newline and reported as one
    ``unreadable`` marker, as is any line that is not a JSON object (``skipped`` counts them). A log
    that shrank was replaced: reading starts over and ``restarts`` goes up.
    """

    path: Path
    offset: int = 0
    chunk_bytes: int = CHUNK_BYTES
    max_line_bytes: int = MAX_LINE_BYTES
    bytes_read: int = 0  # by the last poll
    skipped: int = 0  # unreadable lines so far
    restarts: int = 0
    _pos: int = field(default=-1, repr=False)  # the next byte to read (offset + partial line)
    _partial: bytearray = field(default_factory=bytearray, repr=False)
    _dropping: int = field(default=-1, repr=False)  # bytes of an over-long line dropped so far

    def poll(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        """Complete events appended since the last poll, reading at most ``max_bytes`` (None: up
        to the end of the file); what the budget left unread comes with the next poll."""
        self.bytes_read = 0
        if self._pos < 0:
            self._pos = self.offset
        out: list[dict[str, Any]] = []
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            return out
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self._pos:
                self.offset = self._pos = 0
                self._partial.clear()
                self._dropping = -1
                self.restarts += 1
            fh.seek(self._pos)
            while self._pos < size and (max_bytes is None or self.bytes_read < max_bytes):
                want = self.chunk_bytes
                if max_bytes is not None:
                    want = min(want, max_bytes - self.bytes_read)
                block = fh.read(want)
                if not block:
                    break
                self.bytes_read += len(block)
                self._consume(block, out)
        return out

    def _consume(self, block: bytes, out: list[dict[str, Any]]) -> None:
        base = self._pos
        self._pos += len(block)
        start = 0
        while (nl := block.find(b"\n", start)) >= 0:
            piece = block[start:nl]
            if self._dropping >= 0:
                event: dict[str, Any] | None = _unreadable(
                    self.offset,
                    self._dropping + len(piece),
                    f"line longer than {self.max_line_bytes:,} bytes",
                )
                self._dropping = -1
            elif self._partial or len(piece) > self.max_line_bytes:
                self._partial += piece
                line, self._partial = bytes(self._partial), bytearray()
                if len(line) > self.max_line_bytes:
                    reason = f"line longer than {self.max_line_bytes:,} bytes"
                    event = _unreadable(self.offset, len(line), reason)
                else:
                    event = parse_event_line(line, self.offset)
            else:
                event = parse_event_line(piece, self.offset)
            if event is not None:
                if event["type"] == "unreadable":
                    self.skipped += 1
                out.append(event)
            self.offset = base + nl + 1
            start = nl + 1
        rest = block[start:]
        if not rest:
            return
        if self._dropping >= 0:
            self._dropping += len(rest)
            return
        self._partial += rest
        if len(self._partial) > self.max_line_bytes:  # stop holding it: drop on to its newline
            self._dropping = len(self._partial)
            self._partial = bytearray()


def read_events(
    path: Path, offset: int = 0, max_bytes: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Complete events from byte ``offset`` on, and the offset to continue from.

    :class:`EventTail`'s rules: a partial last line is left for the next call; an unreadable line
    is reported as ``{"type": "unreadable", "reason": ...}`` and reading goes on after it.
    """
    tail = EventTail(path, offset)
    events = tail.poll(max_bytes)
    return events, tail.offset


# ---------------------------------------------------------------------- event shapes
# What a reader relies on per known type (docs/events.md): required fields, then optional ones
# (null counts as absent). Kinds: "int" (a count or index, 0 <= n <= MAX_INDEX), "number"
# (finite), "str", "object". Fields not named here are never read, so never checked.
MAX_INDEX = 1_000_000_000_000
_MEMBER = {"fold": "int", "member": "int"}
_RUN = {
    "run_id": "str",
    "config": "str",
    "algorithm": "str",
    "n_folds": "int",
    "ensemble": "int",
    "total_timesteps": "int",
    "plan": "object",
    "threads": "object",
}
_EVENT_FIELDS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "run_started": ({}, _RUN),
    "run_resumed": ({}, _RUN),
    "fold_started": ({"fold": "int"}, {}),
    "member_started": (_MEMBER, {"timesteps": "int", "total": "int", "node": "str"}),
    "member_progress": (
        {**_MEMBER, "timesteps": "int", "total": "int"},
        {"fps": "number", "mean_reward": "number"},
    ),
    "member_finished": (_MEMBER, {"timesteps": "int"}),
    "member_stopped": (_MEMBER, {"timesteps": "int"}),
    "member_failed": (_MEMBER, {"error": "str"}),
    "fold_evaluated": (
        {"fold": "int", "oos": "object", "buy_and_hold": "object"},
        {"members_used": "int"},
    ),
    "fold_failed": ({"fold": "int"}, {"error": "str"}),
    "montecarlo": ({"stats": "object"}, {"scope": "str", "fold": "int"}),
    "run_failed": ({}, {"error": "str"}),
}
# run_started creates n_folds x ensemble member rows: a absurd pair must not exhaust memory
MAX_MEMBERS = 100_000


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INDEX
    if kind == "number":
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind == "str":
        return isinstance(value, str)
    return isinstance(value, dict)


def event_problem(event: Any) -> str | None:
    """Why a reader cannot use this event (one line), or None. Unknown types are fine."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return "not a JSON object with a string 'type'"
    kind = event["type"]
    if kind == "unreadable":
        where = event.get("offset")
        at = f" at byte {where}" if isinstance(where, int) else ""
        return f"line{at}: {event.get('reason') or 'unreadable'}"
    if "ts" in event and not isinstance(event["ts"], str):
        return f"{kind}: 'ts' is not a string"
    required, optional = _EVENT_FIELDS.get(kind, ({}, {}))
    for name, want in required.items():
        if name not in event or event[name] is None:
            return f"{kind}: '{name}' missing"
        if not _kind_ok(event[name], want):
            return f"{kind}: '{name}' is not a valid {want}"
    for name, want in optional.items():
        value = event.get(name)
        if value is not None and not _kind_ok(value, want):
            return f"{kind}: '{name}' is not a valid {want}"
    if kind in ("run_started", "run_resumed"):
        n_folds, ensemble = event.get("n_folds") or 0, event.get("ensemble") or 0
        if n_folds * ensemble > MAX_MEMBERS:
            return f"{kind}: {n_folds} folds x {ensemble} members is not a plausible run"
    return None


def _opt(event: dict[str, Any], name: str, default: Any) -> Any:
    value = event.get(name)
    return default if value is None else value


# ---------------------------------------------------------------------- summary
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
