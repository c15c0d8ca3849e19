"""Runs side by side: what differs in their configs, the figures they can be compared on, and the
measured training rate a new run of the same config can be projected from.

Everything here reads run folders (:class:`engine.runs.folder.RunFolder`) through the one event
reader (:func:`engine.runs.view.replay`) and the one fold reader
(:func:`engine.runs.view.fold_summary`); nothing is drawn. Returns, exposures and probabilities are
fractions, as in docs/results.md; a figure a run does not have (a run from before verdicts, a
failed or unfinished one) is None.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.runs.folder import RunFolder, list_runs
from engine.runs.view import NULL_POLICIES, dig, fold_summary, number, replay, schedule_eta_s


class _Missing:
    """A key one config has and another lacks (shown as such, never equal to a value)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# ---------------------------------------------------------------------- config differences
def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{dotted path: leaf}``: ``{"training": {"gamma": 0.99}}`` gives
    ``{"training.gamma": 0.99}``. Lists are leaves (compared whole); an empty mapping is a leaf."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def config_differences(configs: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The dotted keys whose values are not the same in every config, sorted, each with its value
    in each config (:data:`MISSING` where a config lacks the key)."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    out = []
    for key in keys:
        values = [f.get(key, MISSING) for f in flat]
        first = values[0]
        if any(not _same(first, v) for v in values[1:]):
            out.append((key, values))
    return out


def _same(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    # 1 and 1.0 and True are equal in Python; in a config they are different values
    return type(a) is type(b) and a == b


def read_config(folder: RunFolder) -> tuple[dict[str, Any], str | None]:
    """A run's resolved ``config.yaml`` as a mapping, and why it cannot be read (else None)."""
    from engine.yamlio import read_yaml  # PyYAML: only when a config is read

    try:
        data, _ = read_yaml(folder.config_path, shown=folder.config_path.name)
    except Exception as err:  # any failure of a hostile or damaged file: said, not raised
        return {}, " ".join(str(err).split()) or type(err).__name__
    if not isinstance(data, dict):
        return {}, f"{folder.config_path.name}: not a mapping"
    return data, None


# ---------------------------------------------------------------------- comparable figures
@dataclass(frozen=True)
class RunFigures:
    """What one run can be compared on. ``folds``: :func:`engine.runs.view.fold_summary` of each
    evaluated fold by fold index, with ``loss_probability`` (its Monte Carlo's share of losing
    paths) added; ``loss_probability`` and ``beat_probability`` (``{cash, always_long,
    random}``) are the pooled Monte Carlo's (None before there is one, or before a verdict for
    the beat probabilities); ``verdict_line`` and ``skill`` are the verdict's (None before one).
    """

    run_id: str
    state: str
    config_source: str = ""
    algorithm: str = ""
    n_folds: int = 0
    ensemble: int = 0
    folds: dict[int, dict[str, Any]] = field(default_factory=dict)
    loss_probability: float | None = None
    beat_probability: dict[str, float | None] = field(default_factory=dict)
    pooled_return: float | None = None
    pooled_buy_and_hold_return: float | None = None
    verdict_line: str | None = None
    skill: bool | None = None
    error: str | None = None

    @property
    def has_results(self) -> bool:
        return bool(self.folds) or self.loss_probability is not None


def run_figures(folder: RunFolder) -> RunFigures:
    """The figures of one run folder, from its whole event log and its status."""
    run_state = folder.run_state()
    view = replay(folder)
    folds = {}
    for index, event in sorted(view.folds_evaluated.items()):
        summary = fold_summary(event)
        stats = dig(view.montecarlo.get(f"fold_{index:02d}"), "stats") or event.get("montecarlo")
        summary["loss_probability"] = number(dig(stats, "loss_probability"))
        folds[index] = summary
    verdict = view.verdict or {}
    pooled = verdict.get("pooled")
    line = dig(verdict, "verdict", "line")
    skill = dig(verdict, "verdict", "skill")
    config_source = view.config
    if not config_source:
        config_source = _meta(folder).get("config_source") or ""
    return RunFigures(
        run_id=folder.run_id,
        state=run_state.state,
        config_source=str(config_source),
        algorithm=view.algorithm,
        n_folds=view.n_folds,
        ensemble=view.ensemble,
        folds=folds,
        loss_probability=number(dig(view.montecarlo.get("pooled"), "stats", "loss_probability")),
        beat_probability={
            p: number(dig(pooled, "nulls", p, "beat_probability")) for p in NULL_POLICIES
        },
        pooled_return=number(dig(pooled, "oos_return")),
        pooled_buy_and_hold_return=number(dig(pooled, "buy_and_hold_return")),
        verdict_line=line if isinstance(line, str) else None,
        skill=skill if isinstance(skill, bool) else None,
        error=run_state.reason or (view.error if isinstance(view.error, str) else None),
    )


@dataclass(frozen=True)
class Comparison:
    """Runs side by side: their figures in the order given, the config keys that differ
    (:func:`config_differences` of the configs that could be read, with None in ``values`` for
    a run whose config could not be: its reason in ``config_errors``)."""

    runs: tuple[RunFigures, ...]
    differences: tuple[tuple[str, tuple[Any, ...]], ...]
    config_errors: dict[str, str]

    @property
    def fold_indices(self) -> list[int]:
        """Every fold any of the runs evaluated, in order."""
        return sorted(set().union(*(r.folds for r in self.runs))) if self.runs else []


def compare_runs(folders: Iterable[RunFolder]) -> Comparison:
    """The :class:`Comparison` of these run folders (file I/O: call it off the UI thread)."""
    folders = list(folders)
    configs, errors = [], {}
    for folder in folders:
        config, problem = read_config(folder)
        configs.append(config)
        if problem is not None:
            errors[folder.run_id] = problem
    readable = [i for i, f in enumerate(folders) if f.run_id not in errors]
    differences = []
    for key, values in config_differences([configs[i] for i in readable]):
        row: list[Any] = [None] * len(folders)
        for i, value in zip(readable, values, strict=True):
            row[i] = value
        differences.append((key, tuple(row)))
    return Comparison(
        runs=tuple(run_figures(f) for f in folders),
        differences=tuple(differences),
        config_errors=errors,
    )


# ---------------------------------------------------------------------- measured rates
@dataclass(frozen=True)
class MeasuredRate:
    """Timesteps per second of one unit, measured on a finished run: its finished units' trained
    timesteps over their summed ``member_finished`` elapsed seconds; ``slots``: units that ran at
    once there (its plan's ``parallel_members``)."""

    run_id: str
    rate: float
    units: int
    slots: int

    def projected_wall_s(self, units: int, timesteps: int, slots: int) -> float:
        """Seconds to train ``units`` units of ``timesteps`` each, ``slots`` at a time, at this
        rate (the same greedy schedule as a live run's ETA)."""
        return schedule_eta_s([], [timesteps] * max(0, units), max(1, slots), self.rate)


def _meta(folder: RunFolder) -> dict[str, Any]:
    try:
        meta = folder.read_meta()
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError, ValueError):
        return os.fspath(a) == os.fspath(b)


def measured_rate(
    runs_root: Path | str,
    config_path: str | os.PathLike[str],
    algorithm: str,
    *,
    host: str | None = None,
) -> MeasuredRate | None:
    """The rate of the newest finished run under ``runs_root`` made from ``config_path`` with
    ``algorithm`` on ``host`` (this machine by default, as its ``run.json`` names it); None when
    there is no such run with a finished unit that says how long it took."""
    host = socket.gethostname() if host is None else host
    for folder in list_runs(Path(runs_root)):  # newest first
        meta = _meta(folder)
        source = meta.get("config_source")
        if meta.get("host") != host or not isinstance(source, str):
            continue
        if not _same_file(source, config_path) or folder.state() != "finished":
            continue
        config, problem = read_config(folder)
        if problem is not None or dig(config, "training", "algorithm") != algorithm:
            continue
        view = replay(folder)
        done = [
            m
            for m in view.members.values()
            if m.state == "finished" and m.elapsed_s and m.timesteps > (m.resumed_from or 0)
        ]
        seconds = sum(m.elapsed_s or 0.0 for m in done)
        if not done or seconds <= 0:
            continue
        trained = sum(m.timesteps - (m.resumed_from or 0) for m in done)
        return MeasuredRate(folder.run_id, trained / seconds, len(done), view.slots)
    return None
