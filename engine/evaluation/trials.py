"""Trials: every ensemble member ever judged on one dataset, with its per-bar out-of-sample returns.

Selection bias grows with the number of strategies tried before the one reported. The deflated
Sharpe ratio (Bailey & Lopez de Prado 2014, "The Deflated Sharpe Ratio: Correcting for Selection
Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 40(5)) needs that
number and the variance of the tried strategies' Sharpe ratios; the probability of backtest
overfitting (Bailey, Borwein, Lopez de Prado & Zhu 2017, "The Probability of Backtest Overfitting",
J. Computational Finance 20(4)) needs their returns on common bars. Here a *trial* is one
member slot of one run: its series is that member's out-of-sample returns over the run's folds.

The evaluation of fold ``k`` writes :class:`FoldTrials` to ``results/fold_KK_trials.npz``;
:func:`run_trials` joins a run's folds into :class:`Trial` series; :meth:`TrialRegistry.scan` gathers
the trials of every run whose ``run.json`` names the same dataset checksum.
:func:`reproducibility_key` records what a result depends on. NumPy and the standard library only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import engine
from engine import atomic
from engine.errors import DataError, PloutosError
from engine.runs.folder import RunFolder, list_runs

__all__ = [
    "FoldTrials",
    "Trial",
    "TrialRegistry",
    "config_hash",
    "reproducibility_key",
    "run_trials",
]

# ------------------------------------------------------------------------------------------------
# Configuration identity
# ------------------------------------------------------------------------------------------------

# Keys of a resolved config that change neither what is learnt nor how it is judged. ``None``
# drops the whole key; a set drops those keys of the sub-mapping.
_NOT_HASHED: dict[str, set[str] | None] = {
    "dataset_path": None,  # where the data lives; which data it is is the dataset checksum
    "data": None,  # how `ploutos dataset build` fetches the data: also the checksum's business
    "hardware_profile": None,
    "executor": None,
    "ray_address": None,
    "training": {"progress_interval_s", "checkpoint_every_timesteps", "tensorboard"},
}

CONFIG_HASH_HEX_DIGITS = 16


def _canonical(value: Any) -> Any:
    """Integral floats as ints (``5.0`` and ``5`` are the same setting: a float key's default may
    be written as an int), tuples as lists, mappings with string keys."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _hashed_part(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        dropped = _NOT_HASHED.get(key, set())
        if dropped is None:
            continue
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in dropped}
        out[key] = _canonical(value)
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of what a config learns and judges by.

    ``config`` is a resolved config, ``PloutosConfig.model_dump(mode="json")``. Canonical JSON:
    keys sorted, separators ``(",", ":")``, integral floats written as ints and tuples as lists,
    so key order, whitespace and ``5`` versus ``5.0`` never matter. Hashed: ``features``, ``env``
    (costs, episode length, lookback), ``training`` (the algorithm, network, PPO coefficients,
    timesteps, ensemble size, seed, vote), ``walk_forward``, ``monte_carlo`` and any key added
    later: each changes the agents learnt or the statistics they are judged by, and the seed is
    among them because a different seed learns a different agent.

    Left out, because they change where or how fast the same computation runs, not its result:
    ``dataset_path`` and ``data`` (which bars were used is the dataset checksum's job: the same files
    moved, or fetched by the same recipe, are the same data, and :class:`TrialRegistry` groups
    trials by that checksum), ``hardware_profile``, ``executor``, ``ray_address``, and
    ``training.progress_interval_s`` / ``checkpoint_every_timesteps`` / ``tensorboard``
    (reporting and resumability). Raises ``TypeError`` on a value JSON cannot hold (a Path or a
    date among the hashed keys: pass the ``mode="json"`` dump).
    """
    text = json.dumps(_hashed_part(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:CONFIG_HASH_HEX_DIGITS]


# ------------------------------------------------------------------------------------------------
# Arrays
# ------------------------------------------------------------------------------------------------


def _int_array(value: Any, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim or not (array.dtype.kind in "iu" or array.size == 0):
        raise ValueError(f"{name} must be a {ndim}-D integer array, got {array.dtype}{array.shape}")
    out = np.array(array, dtype=np.int64)  # a copy, frozen below: callers cannot break invariants
    out.setflags(write=False)
    return out


def _float_array(value: Any, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim or not (array.dtype.kind in "fiu" or array.size == 0):
        raise ValueError(f"{name} must be a {ndim}-D float array, got {array.dtype}{array.shape}")
    out = np.array(array, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} holds NaN or infinite returns")
    out.setflags(write=False)
    return out


def _check_increasing(timestamps: np.ndarray, name: str) -> None:
    if timestamps.size > 1 and not (np.diff(timestamps) > 0).all():
        raise ValueError(f"{name} must be strictly increasing")


def _plain_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


_FOLD_ARRAYS = ("timestamps", "returns", "seeds", "members")


@dataclass(frozen=True, eq=False)
class FoldTrials:
    """The out-of-sample returns of each member of one fold on the fold's test window.

    ``timestamps: int64[T]``: the start (UTC microseconds) of the bar each return is earned from,
    strictly increasing. ``returns: float64[M, T]``: member ``m``'s simple return from bar ``t`` to
    bar ``t + 1``, ``V_{t+1} / V_t - 1`` (finite). ``seeds: int64[M]``: the seed each member was
    trained with. ``members: int64[M]``: member indices (the ``member_XX`` slots), distinct and
    non-negative. Arrays are stored as read-only copies.
    """

    fold: int
    timestamps: np.ndarray
    returns: np.ndarray
    seeds: np.ndarray
    members: np.ndarray

    def __post_init__(self) -> None:
        fold = _plain_int(self.fold, "fold")
        if fold < 0:
            raise ValueError(f"fold must be >= 0, got {fold}")
        timestamps = _int_array(self.timestamps, "timestamps", 1)
        returns = _float_array(self.returns, "returns", 2)
        seeds = _int_array(self.seeds, "seeds", 1)
        members = _int_array(self.members, "members", 1)
        _check_increasing(timestamps, "timestamps")
        n_members = members.shape[0]
        if returns.shape != (n_members, timestamps.shape[0]) or seeds.shape != (n_members,):
            raise ValueError(
                f"returns must be [members, timestamps] = [{n_members}, {timestamps.shape[0]}] "
                f"and seeds [{n_members}], got returns {returns.shape} and seeds {seeds.shape}"
            )
        if len(np.unique(members)) != n_members or (members < 0).any():
            raise ValueError(f"members must be distinct and >= 0, got {members.tolist()}")
        for name, value in zip(
            ("fold", *_FOLD_ARRAYS),
            (fold, timestamps, returns, seeds, members),
            strict=True,
        ):
            object.__setattr__(self, name, value)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` atomically (a reader sees the old file or the new one)."""

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                arrays = {name: getattr(self, name) for name in _FOLD_ARRAYS}
                np.savez(fh, fold=np.int64(self.fold), **arrays)

        atomic.write_with(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FoldTrials:
        """Read a file written by :meth:`save`; ``DataError`` (one line naming it) otherwise."""
        try:
            with np.load(path, allow_pickle=False) as data:
                fold = data["fold"]
                if fold.shape != () or fold.dtype.kind not in "iu":
                    raise ValueError(f"fold must be one integer, got {fold.dtype}{fold.shape}")
                return cls(fold=int(fold), **{name: data[name] for name in _FOLD_ARRAYS})
        except FileNotFoundError:
            raise DataError(f"{path}: no such fold trials file; evaluate the fold first") from None
        except (
            KeyError,
            ValueError,
            TypeError,
            OSError,
            EOFError,
            zipfile.BadZipFile,
            zlib.error,
        ) as err:
            reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise DataError(
                f"{path}: not a fold trials file ({reason}); evaluate the fold again"
            ) from None


# ------------------------------------------------------------------------------------------------
# Trials of one run
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Trial:
    """One member slot of one run over every fold it was evaluated on.

    ``timestamps: int64[T]`` (strictly increasing bar starts, UTC microseconds) and ``returns:
    float64[T]`` (per-bar simple returns earned from each of those bars), as in
    :class:`FoldTrials`. ``seed`` is the member's seed in its earliest fold; ``folds`` the fold
    indices the series is made of, in time order.
    """

    run_id: str
    config_hash: str
    member: int
    seed: int
    folds: tuple[int, ...]
    timestamps: np.ndarray
    returns: np.ndarray

    def __post_init__(self) -> None:
        member = _plain_int(self.member, "member")
        if member < 0:
            raise ValueError(f"member must be >= 0, got {member}")
        timestamps = _int_array(self.timestamps, "timestamps", 1)
        returns = _float_array(self.returns, "returns", 1)
        _check_increasing(timestamps, "timestamps")
        if returns.shape != timestamps.shape:
            raise ValueError(
                f"returns {returns.shape} and timestamps {timestamps.shape} differ in length"
            )
        object.__setattr__(self, "member", member)
        object.__setattr__(self, "seed", _plain_int(self.seed, "seed"))
        object.__setattr__(self, "folds", tuple(_plain_int(f, "fold") for f in self.folds))
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "returns", returns)

    @property
    def trial_id(self) -> str:
        """``<run_id>/m<member, two digits>``, unique across runs."""
        return f"{self.run_id}/m{self.member:02d}"

    @property
    def n_bars(self) -> int:
        return int(self.timestamps.shape[0])


def run_trials(folder: RunFolder, config_hash: str) -> list[Trial]:
    """The trials of one run, one per member slot, in member order.

    Reads ``results/fold_KK_trials.npz`` for each fold of ``folds.json``; a missing file is a fold
    not evaluated yet and is skipped. A member's series is its returns over the folds it appears
    in, in time order (folds sorted by their first bar, then by index). Folds whose test windows
    overlap (``walk_forward.step_months < test_months``) give a bar twice: the later fold's value
    is kept, since its agent was trained on the more recent data and is the one a live run would
    use there. A member with no bars at all forms no trial.

    Raises ``DataError`` on a damaged trials file, or one whose ``fold`` is not the fold its name
    says; ``OSError`` / ``ValueError`` when ``folds.json`` cannot be read.
    """
    loaded: list[FoldTrials] = []
    for fold in folder.read_folds():
        index = int(fold["index"])
        path = folder.fold_trials_path(index)
        if not path.exists():
            continue
        trials = FoldTrials.load(path)
        if trials.fold != index:
            raise DataError(
                f"{path}: holds fold {trials.fold}, not fold {index}; evaluate it again"
            )
        loaded.append(trials)
    loaded.sort(key=lambda ft: (int(ft.timestamps[0]) if ft.timestamps.size else -1, ft.fold))

    members = sorted({int(m) for ft in loaded for m in ft.members})
    out = []
    for member in members:
        parts = [
            (ft, int(rows[0]))
            for ft in loaded
            if ft.timestamps.size and (rows := np.flatnonzero(ft.members == member)).size
        ]
        if not parts:
            continue
        ts = np.concatenate([ft.timestamps for ft, _ in parts])
        rets = np.concatenate([ft.returns[row] for ft, row in parts])
        # Stable sort by time; of equal timestamps the last one (the later fold) is kept.
        order = np.argsort(ts, kind="stable")
        ts, rets = ts[order], rets[order]
        last = np.append(ts[1:] != ts[:-1], True)
        out.append(
            Trial(
                run_id=folder.run_id,
                config_hash=config_hash,
                member=member,
                seed=int(parts[0][0].seeds[parts[0][1]]),
                folds=tuple(ft.fold for ft, _ in parts),
                timestamps=ts[last],
                returns=rets[last],
            )
        )
    return out


# ------------------------------------------------------------------------------------------------
# Every trial on one dataset
# ------------------------------------------------------------------------------------------------


def _run_config_hash(folder: RunFolder, dataset_checksum: str) -> tuple[str | None, str | None]:
    """(the run's config hash, None) when it is on this dataset; (None, why not) when it cannot
    be counted; (None, None) when it is on another dataset."""
    try:
        meta = folder.read_meta()
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"run.json: {getattr(err, 'strerror', None) or type(err).__name__}"
    if not isinstance(meta, dict):
        return None, "run.json: not a JSON object"
    checksum, hashed = meta.get("dataset_checksum"), meta.get("config_hash")
    if not isinstance(checksum, str):
        return None, "run.json has no dataset_checksum (a run from before trials were recorded)"
    if checksum != dataset_checksum:
        return None, None
    if not isinstance(hashed, str):
        return None, "run.json has no config_hash (a run from before trials were recorded)"
    return hashed, None


@dataclass(frozen=True)
class TrialRegistry:
    """The trials of every run on one dataset (the multiple-testing count), in priority order.

    ``trials`` are unique by :attr:`Trial.trial_id`; their order is the order :meth:`aligned`
    keeps them in. ``runs``: the run ids the trials come from, in order of first appearance.
    ``skipped``: ``(run_id, reason)`` of run folders that could not be counted (unreadable
    ``run.json``, ``folds.json`` or trials file; a run from before ``dataset_checksum`` /
    ``config_hash`` were recorded). Runs on other datasets are neither counted nor skipped.
    """

    trials: tuple[Trial, ...]
    dataset_checksum: str
    runs: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @classmethod
    def scan(
        cls, runs_root: Path, dataset_checksum: str, include: Sequence[Trial] = ()
    ) -> TrialRegistry:
        """Every trial of every run under ``runs_root`` whose ``run.json`` has this
        ``dataset_checksum``, plus ``include`` (e.g. the current run's trials, not on disk yet).

        A trial id in ``include`` wins over the same id on disk, so a run already written is not
        counted twice. Order (the priority of :meth:`aligned`): ``include`` in its order, then the
        runs' trials by most bars, then by trial id. A run folder that cannot be read is skipped
        (listed in ``skipped``) and hides no other run. Never raises for a bad run folder.
        """
        chosen: dict[str, Trial] = {}
        for trial in include:
            chosen.setdefault(trial.trial_id, trial)
        found: list[Trial] = []
        skipped: list[tuple[str, str]] = []
        for folder in list_runs(Path(runs_root)):
            hashed, problem = _run_config_hash(folder, dataset_checksum)
            if hashed is None:
                if problem is not None:
                    skipped.append((folder.run_id, problem))
                continue
            try:
                found.extend(run_trials(folder, hashed))
            except PloutosError as err:
                skipped.append((folder.run_id, str(err)))
            except (OSError, ValueError, KeyError, TypeError) as err:
                reason = getattr(err, "strerror", None) or type(err).__name__
                skipped.append((folder.run_id, f"folds.json or trials unreadable: {reason}"))
        found.sort(key=lambda t: (-t.n_bars, t.trial_id))
        for trial in found:
            chosen.setdefault(trial.trial_id, trial)
        trials = tuple(chosen.values())
        return cls(
            trials=trials,
            dataset_checksum=dataset_checksum,
            runs=tuple(dict.fromkeys(t.run_id for t in trials)),
            skipped=tuple(skipped),
        )

    @property
    def n_trials(self) -> int:
        """The number of trials: ``N`` of the deflated Sharpe ratio."""
        return len(self.trials)

    @property
    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]

    def aligned(self, min_bars: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The trials on their common bars: ``(timestamps: int64[T], returns: float64[T, N],
        trial_ids: list[str] of N)``, columns in priority order.

        Greedy in the order of :attr:`trials`: a trial is kept when the bars it shares with the
        trials kept so far number at least ``min_bars``; otherwise it is dropped and the others
        keep their bars (one short trial would otherwise shrink every trial's sample). The common
        bars are the intersection of the kept trials' timestamps. Nothing kept: ``T = N = 0``.
        """
        if isinstance(min_bars, bool) or not isinstance(min_bars, int) or min_bars < 1:
            raise ValueError(f"min_bars must be an integer >= 1, got {min_bars!r}")
        common: np.ndarray | None = None
        kept: list[Trial] = []
        for trial in self.trials:
            shared = (
                trial.timestamps
                if common is None
                else np.intersect1d(common, trial.timestamps, assume_unique=True)
            )
            if shared.size >= min_bars:
                common = shared
                kept.append(trial)
        if common is None:
            return np.empty(0, np.int64), np.empty((0, 0), np.float64), []
        returns = np.empty((common.size, len(kept)), dtype=np.float64)
        for column, trial in enumerate(kept):
            returns[:, column] = trial.returns[np.searchsorted(trial.timestamps, common)]
        return np.array(common, dtype=np.int64), returns, [t.trial_id for t in kept]

    def sharpes(self) -> np.ndarray:
        """``float64[N]``: each trial's per-bar Sharpe ratio over its own bars, in trial order.

        ``mean(r) / std(r, ddof=1)``, not annualised; 0 for a trial with fewer than two bars or
        whose returns are all equal (std 0). Their variance across trials is the ``V[SR_n]`` of
        the deflated Sharpe ratio's expected maximum Sharpe ``SR_0`` (Bailey & Lopez de Prado 2014).
        """
        out = np.zeros(len(self.trials), dtype=np.float64)
        for i, trial in enumerate(self.trials):
            r = trial.returns
            if r.size < 2 or (r == r[0]).all():
                continue
            std = float(np.std(r, ddof=1))
            if std > 0:
                out[i] = float(np.mean(r)) / std
        return out


# ------------------------------------------------------------------------------------------------
# What a result depends on
# ------------------------------------------------------------------------------------------------

_PACKAGES = (
    "numpy",
    "pandas",
    "torch",
    "stable-baselines3",
    "sb3-contrib",
    "gymnasium",
    "scipy",
    "arch",
)
GIT_TIMEOUT_S = 2.0
_SOURCE_DIR = Path(__file__).resolve().parent.parent  # engine/


def _git(args: Sequence[str], cwd: Path) -> tuple[int, str] | None:
    """``git <args>`` in ``cwd``: (exit status, stdout); None if git is missing or too slow."""
    # No optional locks: `git status` must not refresh the index of a tree others are editing.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.returncode, done.stdout.decode("utf-8", "replace")


def _git_state(where: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether the work tree has changes) of the git work tree holding ``where``;
    (None, None) outside one, without git, or when ``where`` is ignored there (a package
    installed into a virtual environment inside some repository is not that repository's code).
    """
    head = _git(["rev-parse", "HEAD"], where)
    commit = head[1].strip() if head is not None and head[0] == 0 else ""
    if len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
        return None, None
    ignored = _git(["check-ignore", "-q", "."], where)
    if ignored is None or ignored[0] == 0:
        return None, None
    status = _git(["status", "--porcelain"], where)
    dirty = None if status is None or status[0] != 0 else bool(status[1].strip())
    return commit, dirty


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except Exception:  # PackageNotFoundError, or a broken distribution's metadata
        return None


def _safe(compute: Callable[[], Any]) -> Any:
    """``compute()``, or None if it raises: a key records what it can and never fails a run."""
    try:
        return compute()
    except Exception:
        return None


def _text(value: Any) -> str | None:
    return None if value is None else _safe(lambda: str(value))


def _feature_code_version() -> int:
    from engine.features.compute import FEATURE_CODE_VERSION  # pandas: only when a key is made

    return int(FEATURE_CODE_VERSION)


def reproducibility_key(
    *,
    dataset_checksum: str | None,
    feature_key: str | None,
    config_hash: str,
    seeds: Sequence[int],
) -> dict[str, Any]:
    """What a result depends on, as a JSON-safe dict; never raises (an unknown part is None).

    Keys: ``dataset_checksum``, ``feature_key``, ``config_hash``, ``seeds`` (ints) as given;
    ``python`` (version), ``machine`` (``platform.machine()``: float results may differ across
    CPU architectures), ``ploutos`` (version), ``feature_code_version``
    (:data:`engine.features.compute.FEATURE_CODE_VERSION`), ``git_commit`` / ``git_dirty`` (HEAD
    and ``git status --porcelain`` of the work tree holding ``engine/``, each within
    ``GIT_TIMEOUT_S``; None when it is no git work tree or git is missing) and ``versions``
    (installed versions of the numerical and learning packages; None where not installed).
    """
    try:
        seed_list: list[int] | None = [int(s) for s in seeds]
    except Exception:  # not a sequence of integers: recorded as unknown rather than refused
        seed_list = None
    try:
        git_commit, git_dirty = _git_state(_SOURCE_DIR)
    except Exception:
        git_commit, git_dirty = None, None
    return {
        "dataset_checksum": _text(dataset_checksum),
        "feature_key": _text(feature_key),
        "config_hash": _text(config_hash),
        "seeds": seed_list,
        "python": _safe(platform.python_version),
        "machine": _safe(platform.machine) or None,
        "ploutos": _safe(lambda: str(engine.__version__)) or _package_version("ploutos"),
        "feature_code_version": _safe(_feature_code_version),
        "git_commit": git_commit,
        "git_dirty": git_dirty,
        "versions": {name: _package_version(name) for name in _PACKAGES},
    }
