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
consume complete lines, so a reader that meets a partial last line waits for the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import atomic
from engine.errors import PloutosError

RUNS_DIR_ENV = "PLOUTOS_RUNS_DIR"
EVENTS_SCHEMA_VERSION = 1

# Run states as shown to users. "interrupted": the status says running but no trainer holds the
# run's lock (killed, machine rebooted): `ploutos resume` continues it.
STATES = ("starting", "running", "stopping", "stopped", "finished", "failed", "interrupted")
RESUMABLE = ("stopped", "failed", "interrupted")


def default_runs_root() -> Path:
    """``$PLOUTOS_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def utc_stamp() -> str:
    return (
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


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
        return self.config_path.exists()

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
        try:
            return json.loads(self.status_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError):
            return {}

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

    def state(self) -> str:
        """The run's state, corrected for a trainer that died without saying so."""
        status = self.read_status()
        state = status.get("state", "starting" if self.exists() else "unknown")
        if state in ("starting", "running", "stopping") and not self.trainer_alive():
            return "interrupted"
        return state


def resolve_run(name: str | os.PathLike[str], runs_root: Path | None = None) -> RunFolder:
    """A run given as a path or as a run id under the runs root; one clear error otherwise."""
    path = Path(name)
    if (path / "config.yaml").exists():
        return RunFolder(path)
    root = runs_root or default_runs_root()
    candidate = root / str(name)
    if (candidate / "config.yaml").exists():
        return RunFolder(candidate)
    matches = sorted(p for p in root.glob(f"*{name}*") if (p / "config.yaml").exists())
    if len(matches) == 1:
        return RunFolder(matches[0])
    hint = f"; matches: {', '.join(p.name for p in matches)}" if matches else ""
    raise PloutosError(f"{name}: no such run in {root} (see `ploutos runs`){hint}")


def list_runs(runs_root: Path | None = None) -> list[RunFolder]:
    """Every run folder under the root, newest first."""
    root = runs_root or default_runs_root()
    if not root.is_dir():
        return []
    runs = [RunFolder(p) for p in root.iterdir() if (p / "config.yaml").exists()]
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


def read_events(
    path: Path, offset: int = 0, max_bytes: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Complete events from byte ``offset`` on, and the offset to continue from.

    A partial last line (the writer is mid-write, or died there) is left for the next call. A
    line that is not valid JSON is skipped (reported as ``{"type": "unreadable"}``) rather than
    stopping the reader for good.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read() if max_bytes is None else fh.read(max_bytes)
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for raw in chunk[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            events.append(json.loads(raw))
        except json.JSONDecodeError:
            events.append({"type": "unreadable", "bytes": len(raw)})
    return events, offset + end + 1


@dataclass
class EventTail:
    """Follows one events file: each ``poll()`` returns the complete events written since."""

    path: Path
    offset: int = 0
    chunk_bytes: int = 1 << 20

    def poll(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            events, offset = read_events(self.path, self.offset, self.chunk_bytes)
            if offset == self.offset:
                return out
            self.offset = offset
            out.extend(events)


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
    """What the events say about a run: the trainer's status file and the panel both use it."""

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

    def member(self, fold: int, member: int) -> MemberView:
        key = (fold, member)
        if key not in self.members:
            self.members[key] = MemberView(fold, member)
        return self.members[key]

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        self.updated_at = event.get("ts", self.updated_at)
        if kind in ("run_started", "run_resumed"):
            self.run_id = event.get("run_id", self.run_id)
            self.state = "running"
            self.config = event.get("config", self.config)
            self.profile = event.get("plan", {}).get("profile", self.profile)
            self.plan = event.get("plan", self.plan)
            self.threads = event.get("threads", self.threads)
            self.algorithm = event.get("algorithm", self.algorithm)
            self.n_folds = event.get("n_folds", self.n_folds)
            self.ensemble = event.get("ensemble", self.ensemble)
            self.started_at = self.started_at or event.get("ts")
            self.error = None
            for view in self.members.values():
                if view.state in ("running", "stopped", "failed"):
                    view.state = "pending"
            for fold in range(self.n_folds):
                for member in range(self.ensemble):
                    view = self.member(fold, member)
                    if view.total == 0:
                        view.total = int(event.get("total_timesteps", 0))
        elif kind == "member_started":
            view = self.member(event["fold"], event["member"])
            view.state = "running"
            view.timesteps = int(event.get("timesteps", view.timesteps))
            view.total = int(event.get("total", view.total))
            view.node = event.get("node")
            view.error = None
        elif kind == "member_progress":
            view = self.member(event["fold"], event["member"])
            view.state = "running"
            view.timesteps = int(event["timesteps"])
            view.total = int(event["total"])
            view.fps = float(event.get("fps") or 0.0)
            view.mean_reward = event.get("mean_reward")
            view.eta_s = (view.total - view.timesteps) / view.fps if view.fps > 0 else None
            self.fps_history.append(view.fps)
            if view.mean_reward is not None:
                self.reward_history.append(float(view.mean_reward))
            del self.fps_history[:-512], self.reward_history[:-512]
        elif kind == "member_finished":
            view = self.member(event["fold"], event["member"])
            view.state = "finished"
            view.timesteps = int(event.get("timesteps", view.total))
            view.eta_s = 0.0
        elif kind == "member_stopped":
            view = self.member(event["fold"], event["member"])
            view.state = "stopped"
            view.timesteps = int(event.get("timesteps", view.timesteps))
        elif kind == "member_failed":
            view = self.member(event["fold"], event["member"])
            view.state = "failed"
            view.error = event.get("error")
        elif kind == "fold_evaluated":
            self.folds_evaluated[int(event["fold"])] = event
        elif kind == "montecarlo":
            self.montecarlo[str(event.get("scope", "pooled"))] = event
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
        }


def replay(folder: RunFolder) -> RunView:
    """The run as its whole event log describes it."""
    view = RunView(run_id=folder.run_id)
    for event in EventTail(folder.events_path).poll():
        view.apply(event)
    return view
