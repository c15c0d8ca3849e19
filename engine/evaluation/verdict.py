"""The verdict of a run: pooled out-of-sample figures, the tests of skill and overfitting, and one line.

:func:`judge_run` reads what the fold evaluations wrote into the run folder (results/fold_XX.json,
its Monte Carlo comparison, trials and timing-test files) and returns the run-level fields of
results/summary.json (docs/results.md):

- ``pooled``: the ensemble over every test bar of every fold (each bar once), against buy-and-hold
  and against the null policies on the pooled Monte Carlo paths, and the pooled timing-skill test
  (the folds' permutations paired: :func:`engine.evaluation.skill.pooled_permutation_pvalue`);
- ``overfitting``: from the trial registry (every member of every run on this dataset,
  :class:`engine.evaluation.trials.TrialRegistry`): the probability of backtest overfitting by
  CSCV over the trials' common bars, the deflated Sharpe ratio of the ensemble's pooled returns
  with N = the trials registered, and White's Reality Check of the best trial against cash;
- ``seed_dispersion`` of the members' out-of-sample returns, ``verdict`` (thresholds from the
  config's ``verdict`` section) and ``reproducibility``.

A statistic that cannot be computed (one fold evaluated, one trial) is None with a note; the
verdict then says so and never counts a missing test as passed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import PloutosConfig
from engine.runs.folder import RunFolder

__all__ = ["judge_run"]


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _pooled_series(tests: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's per-bar returns of every fold on one time axis, each bar once (a later
    fold's value wins where opted-in overlapping test windows share bars)."""
    by_time: dict[int, float] = {}
    for test in tests:  # folds in order: later ones overwrite
        by_time.update(zip(test.timestamps.tolist(), test.returns.tolist(), strict=True))
    times = np.array(sorted(by_time), dtype=np.int64)
    return times, np.array([by_time[t] for t in times.tolist()], dtype=np.float64)


def judge_run(
    folder: RunFolder, cfg: PloutosConfig, folds: list[dict[str, Any]], fold_indices: list[int]
) -> dict[str, Any]:
    """The run-level verdict fields (module docstring) from the evaluated folds ``folds`` (their
    result dicts, in fold order) whose indices are ``fold_indices``."""
    from engine.errors import DataError
    from engine.evaluation.montecarlo import PolicyComparison
    from engine.evaluation.robustness import TimingTest
    from engine.evaluation.skill import (
        VerdictThresholds,
        deflated_sharpe,
        pbo_cscv,
        pooled_permutation_pvalue,
        reality_check,
        seed_dispersion,
        sharpe_ratio,
        verdict,
    )
    from engine.evaluation.trials import (
        TrialRegistry,
        config_hash,
        reproducibility_key,
        run_trials,
    )

    vcfg = cfg.verdict
    meta = folder.read_meta()
    tests, comparisons = [], []
    for index in fold_indices:
        try:
            tests.append(TimingTest.load(folder.fold_permutation_path(index)))
            comparisons.append(PolicyComparison.load(folder.fold_montecarlo_path(index)))
        except DataError:
            continue  # a fold evaluated by an older version: no tests to pool
    fill = cfg.env.fill
    out: dict[str, Any] = {"fill": fill, "fill_optimistic": fill == "close"}

    # ---- pooled figures
    times, returns = _pooled_series(tests) if tests else (np.empty(0, np.int64), np.empty(0))
    n_bars = sum(int(f["oos"].get("n_bars", 0)) for f in folds)
    exposure = (
        sum(float(f["oos"].get("mean_exposure") or 0.0) * int(f["oos"]["n_bars"]) for f in folds)
        / n_bars
        if n_bars
        else 0.0
    )
    per_year = _bars_per_year(folder)
    pooled: dict[str, Any] = {
        "oos_return": float(np.prod(1.0 + returns) - 1.0) if len(returns) else None,
        "sharpe": (
            sharpe_ratio(returns) * math.sqrt(per_year) if len(returns) > 1 and per_year else None
        ),
        "mean_exposure": exposure,
        "n_bars": int(len(returns)),
        "buy_and_hold_return": float(
            np.prod([1.0 + f["buy_and_hold"]["total_return"] for f in folds]) - 1.0
        )
        if folds
        else None,
        "nulls": {},
        "timing": None,
    }
    if comparisons:
        summary = PolicyComparison.concat(comparisons).summary(cfg.monte_carlo.histogram_bins)
        pooled["nulls"] = summary["nulls"]
    if tests:
        pooled["timing"] = {
            "p_return": pooled_permutation_pvalue(
                [t.observed_return for t in tests], [t.null_returns for t in tests]
            ),
            "p_sharpe": pooled_permutation_pvalue(
                [t.observed_sharpe for t in tests], [t.null_sharpes for t in tests]
            ),
            "permutations": int(len(tests[0].null_returns)),
            "folds": len(tests),
        }
    out["pooled"] = pooled

    # ---- trials: PBO, deflated Sharpe, reality check
    chash = str(meta.get("config_hash") or config_hash(cfg.model_dump(mode="json")))
    own = run_trials(folder, chash)
    checksum = meta.get("dataset_checksum")
    registry = (
        TrialRegistry.scan(folder.root.parent, str(checksum), include=own)
        if checksum
        else TrialRegistry(trials=tuple(own), dataset_checksum="", runs=(folder.run_id,))
    )
    overfitting: dict[str, Any] = {
        "n_trials": registry.n_trials,
        "n_runs": len(registry.runs),
        "pbo": None,
        "pbo_note": None,
        "pbo_splits": None,
        "deflated_sharpe": None,
        "sharpe_per_bar": sharpe_ratio(returns) if len(returns) > 1 else None,
        "sr0": None,
        "reality_check_p": None,
    }
    splits = vcfg.pbo_splits
    _, matrix, ids = registry.aligned(min_bars=2 * splits)
    if matrix.ndim == 2 and matrix.shape[1] >= 2 and matrix.shape[0] >= 2 * splits:
        pbo = pbo_cscv(matrix, n_splits=splits)
        overfitting.update(pbo=pbo.pbo, pbo_splits=splits, pbo_trials=len(ids))
        rc = reality_check(
            np.zeros(matrix.shape[0]),
            matrix,
            block=float(vcfg.permutation_block_bars),
            reps=1000,
            seed=vcfg.seed,
        )
        overfitting["reality_check_p"] = rc.p_consistent
    else:
        overfitting["pbo_note"] = (
            f"needs >= 2 trials on >= {2 * splits} common bars; have {registry.n_trials} "
            f"trial(s), {matrix.shape[0] if matrix.ndim == 2 else 0} common bars"
        )
    if len(returns) > 1:
        dsr = deflated_sharpe(returns, registry.sharpes(), n_trials=max(1, registry.n_trials))
        overfitting.update(deflated_sharpe=_finite(dsr.dsr), sr0=_finite(dsr.sr0))
    out["overfitting"] = overfitting

    # ---- seeds, verdict, reproducibility
    member_returns = [m["total_return"] for f in folds for m in f.get("members", [])]
    out["seed_dispersion"] = seed_dispersion(member_returns).to_dict() if member_returns else None
    nulls = pooled["nulls"]
    timing = pooled["timing"] or {}
    thresholds = VerdictThresholds(
        alpha=vcfg.alpha, min_deflated_sharpe=vcfg.min_deflated_sharpe, max_pbo=vcfg.max_pbo
    )
    judged = verdict(
        p_return=timing.get("p_return"),
        p_sharpe=timing.get("p_sharpe"),
        deflated_sharpe=overfitting["deflated_sharpe"],
        pbo=overfitting["pbo"],
        oos_return=pooled["oos_return"] if pooled["oos_return"] is not None else 0.0,
        beats_always_long=(nulls.get("always_long") or {}).get("beat_probability"),
        beats_cash=(nulls.get("cash") or {}).get("beat_probability"),
        exposure=exposure,
        thresholds=thresholds,
    ).to_dict()
    judged["thresholds"] = {
        "alpha": vcfg.alpha,
        "min_deflated_sharpe": vcfg.min_deflated_sharpe,
        "max_pbo": vcfg.max_pbo,
    }
    if fill == "close":
        judged["line"] += " [fills at the seen close: optimistic]"
    out["verdict"] = judged
    seeds = sorted({t.seed for t in own})
    out["reproducibility"] = reproducibility_key(
        dataset_checksum=checksum,
        feature_key=meta.get("feature_key"),
        config_hash=chash,
        seeds=seeds,
    )
    return out


def _bars_per_year(folder: RunFolder) -> float | None:
    from engine.errors import DataError
    from engine.evaluation.evaluate import bars_per_year
    from engine.features.cache import open_features

    try:
        fs = open_features(Path(folder.read_meta()["features_path"]))
        return bars_per_year(np.asarray(fs.timestamps))
    except (DataError, KeyError, OSError):
        return None
