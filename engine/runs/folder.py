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
      results/fold_00_montecarlo.npz     per-simulation final returns and drawdowns, per policy
      results/fold_00_trials.npz         per-bar out-of-sample returns of every member (trials)
      results/fold_00_permutation.npz    the ensemble's return and Sharpe on each permutation
      results/summary.json               all folds, pooled statistics and the verdict
      .lock              flock held by the live trainer (a dead trainer holds nothing)

The event log itself (writer, reader, event shapes) is :mod:`engine.runs.events`; what the events
say about a run is :mod:`engine.runs.view`. One bad run folder shows as ``unreadable`` with a reason
and hides no other run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import atomic
from engine.errors import PloutosError
from engine.runs.events import MAX_LINE_BYTES, parse_stamp

RUNS_DIR_ENV = "PLOUTOS_RUNS_DIR"

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
LIVE = ("starting", "running", "stopping")  # a trainer should hold the lock
RESUMABLE = ("stopped", "failed", "interrupted")  # `ploutos resume` continues these

HEARTBEAT_S = 5.0  # the trainer rewrites status.json at least this often (its `heartbeat`)
STALL_AFTER_S = 60.0  # a live trainer whose heartbeat is older than this shows as stalled
MAX_RUN_ID_CHARS = 255  # one folder name (NAME_MAX)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def default_runs_root() -> Path:
    """``$PLOUTOS_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


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

    def fold_trials_path(self, fold: int) -> Path:
        """Per-bar out-of-sample returns of each member of the fold: its trials."""
        return self.results_dir / f"fold_{fold:02d}_trials.npz"

    def fold_permutation_path(self, fold: int) -> Path:
        """The timing-skill test's statistics of the ensemble on each permutation."""
        return self.results_dir / f"fold_{fold:02d}_permutation.npz"

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

    def trainer_pid(self, status: Mapping[str, Any] | None = None) -> int | None:
        """The pid of the live trainer (the one to signal), None when no trainer holds the lock.

        The lock file is written by the process that holds the run's flock, so it names the live
        trainer; ``status.json`` (``status`` when the caller has read it) may be stale or damaged (a
        pid from another boot names another process), so it is only the fallback, and only when it
        really is a positive integer.
        """
        if not self.trainer_alive():
            return None
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = self.lock_path.read_text().strip()
            if text.isdigit() and int(text) > 0:
                return int(text)
        pid = (self.read_status() if status is None else status).get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None

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
        if state not in LIVE:
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
