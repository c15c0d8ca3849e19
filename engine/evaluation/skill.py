"""Statistics behind a run's verdict: is the out-of-sample edge timing skill, or luck and selection?

NumPy and scipy.stats only (arch for :func:`reality_check`, imported inside it); arrays in, frozen
dataclasses out, each with ``to_dict()`` giving plain JSON values (NaN and inf become ``None``).

Conventions, everywhere in this module:

* Returns are per-bar simple or log returns (float64) of a strategy's out-of-sample equity curve:
  ``r[t]`` is earned from bar ``t`` to ``t + 1`` by the position chosen at bar ``t``.
* Sharpe is per bar, not annualised: ``mean / std(ddof=1)``; 0.0 with fewer than 2 bars or a std
  of 0 (a std below ``1e-12`` times the root mean square counts as 0, so rounding noise of a
  constant series gives 0, not a huge ratio).
* What a permutation test permutes: the positions (equivalently the features the policy saw) stay
  where they are and the *next-bar returns* are reordered in blocks (:func:`block_permutations`);
  the statistic is recomputed on each reordered series. The null is "the positions carry no
  information about the returns that follow them". A statistic the reordering cannot change (never
  in the market; always long, judged by total return) therefore gets p = 1: it tests timing, not
  drift.
* Ties count against skill: p = (1 + #{null >= observed}) / (1 + n_null), where a null value
  within ``rtol`` (relative) of the observed value counts as >= it, and so does a NaN.
* Kurtosis is *non-excess* (3 for a normal). Sample skew and kurtosis are the plug-in moments
  (``scipy.stats.skew/kurtosis`` with ``bias=True``, ``fisher=False``): the moments of the
  empirical distribution satisfy ``kurt >= 1 + skew**2``, so the PSR variance term
  ``1 - skew*sr + (kurt - 1)/4 * sr**2 >= (1 - skew*sr/2)**2`` is never negative; the
  bias-corrected estimators can break that inequality in short samples.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from engine.errors import ConfigError

__all__ = [
    "DeflatedSharpe",
    "PBOResult",
    "RealityCheck",
    "SeedDispersion",
    "Verdict",
    "VerdictThresholds",
    "block_permutations",
    "deflated_sharpe",
    "expected_max_sharpe",
    "pbo_cscv",
    "permutation_pvalue",
    "pooled_permutation_pvalue",
    "probabilistic_sharpe_ratio",
    "reality_check",
    "seed_dispersion",
    "sharpe_ratio",
    "verdict",
]

EULER_GAMMA = 0.5772156649015329
_ZERO_STD = 1e-12  # a std at most this times the root mean square is treated as 0


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    return value


class _Plain:
    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values: floats, ints, bools, strings, lists; NaN -> None."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _int_at_least(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _finite(name: str, array: Any, ndim: int) -> np.ndarray:
    out = np.asarray(array, dtype=np.float64)
    if out.ndim != ndim:
        raise ConfigError(f"{name} must be a {ndim}-d array, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ConfigError(f"{name} holds NaN or inf values: drop or fill them first")
    return out


def _sharpe_from_sums(s1, s2, n: int, shift, rms):
    """Per-bar Sharpe from sums of (shifted) values and their squares over ``n`` bars."""
    var = np.maximum((s2 - s1 * s1 / n) / (n - 1), 0.0)
    std = np.sqrt(var)
    mean = s1 / n + shift
    ok = std > _ZERO_STD * rms
    return np.where(ok, mean / np.where(ok, std, 1.0), 0.0)


def sharpe_ratio(returns: np.ndarray) -> float:
    """Per-bar Sharpe ``mean / std(ddof=1)`` of ``returns: float[T]``; 0.0 if T < 2 or std is 0."""
    r = _finite("returns", returns, 1)
    if r.size < 2:
        return 0.0
    mean = float(r.mean())
    centred = r - mean
    rms = math.sqrt(float(np.mean(r * r)))
    return float(_sharpe_from_sums(centred.sum(), (centred**2).sum(), r.size, mean, rms))


# --- permutation tests ------------------------------------------------------------------------


def block_permutations(rng: np.random.Generator, n: int, n_perms: int, block: int) -> np.ndarray:
    """``int64[n_perms, n]``: each row a block-shuffled permutation of ``range(n)``.

    Per row, an offset ``o`` uniform in ``[0, block)`` places cuts at ``o, o + block, o + 2 block,
    ...``; the partial pieces before the first cut and after the last stay two separate pieces (a
    piece never wraps from position ``n - 1`` to 0), so every piece is a run of consecutive
    positions and block boundaries differ between rows. This equals cutting at a random circular
    offset and splitting the block that straddles the wrap in two. The pieces are then put in a
    uniformly random order. Pieces keep the short-range dependence of the returns; shuffling them
    breaks their alignment with the features. ``block == 1`` is a plain shuffle. ``block >= n``
    gives circular shifts ``(arange(n) + s) % n``, ``s`` uniform in ``[0, n)`` (``s = 0`` is the
    identity). Draws per call, in order: offsets (or shifts) ``[n_perms]``, then piece-order
    uniforms ``[n_perms, n_pieces]``.
    """
    n = _int_at_least("n", n, 1)
    n_perms = _int_at_least("n_perms", n_perms, 1)
    block = _int_at_least("block", block, 1)
    positions = np.arange(n, dtype=np.int64)
    if block >= n:
        shifts = rng.integers(0, n, size=n_perms)
        return (positions[None, :] + shifts[:, None]) % n
    offsets = rng.integers(0, block, size=n_perms)
    # piece 0 is [0, o) (empty when o == 0); piece k >= 1 starts at o + (k - 1) * block
    piece = (positions[None, :] + (block - offsets)[:, None]) // block
    n_pieces = (n - 1 + block) // block + 1
    piece_rank = np.argsort(rng.random((n_perms, n_pieces)), axis=1)  # a random order of pieces
    keys = np.take_along_axis(piece_rank, piece, axis=1)
    return np.argsort(keys, axis=1, kind="stable").astype(np.int64)


def permutation_pvalue(observed: float, null: np.ndarray, rtol: float = 1e-10) -> float:
    """``(1 + #{null >= observed}) / (1 + len(null))``: ties (within ``rtol`` relative) and NaNs
    count against skill, so a statistic the permutation cannot change gets p = 1."""
    values = np.asarray(null, dtype=np.float64).ravel()
    finite = np.abs(values[np.isfinite(values)])
    scale = max(abs(observed) if math.isfinite(observed) else 0.0, float(finite.max(initial=0.0)))
    not_below = ~(values < observed - rtol * scale)
    return float((1 + int(not_below.sum())) / (1 + values.size))


def pooled_permutation_pvalue(observed: Sequence[float], nulls: Sequence[np.ndarray]) -> float:
    """p of the folds' summed statistic, the k-th permutation of every fold paired.

    ``observed[f]`` is fold ``f``'s statistic, ``nulls[f]`` its values under ``K`` permutations
    (the same ``K`` for every fold). Each fold's permutations are drawn independently and under the
    joint null (no fold's positions inform its returns) each fold's observed value is exchangeable
    with its own null draws; the tuple (fold 1 draw k, ..., fold F draw k) is then a draw from the
    joint null, so sum over folds of draw k is a draw of the summed statistic's null distribution
    and :func:`permutation_pvalue` of the observed sum against these K sums is valid.
    """
    if len(observed) != len(nulls) or len(nulls) == 0:
        raise ConfigError(
            f"pooled permutation test needs one null per fold, got {len(observed)} statistics "
            f"and {len(nulls)} nulls"
        )
    rows = [np.asarray(x, dtype=np.float64).ravel() for x in nulls]
    if len({row.size for row in rows}) != 1:
        raise ConfigError(
            f"every fold's null needs the same number of permutations, got {[r.size for r in rows]}"
        )
    return permutation_pvalue(float(np.sum(observed)), np.sum(rows, axis=0))


# --- Sharpe under selection ----------------------------------------------------------------------


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n_bars: int, skew: float, kurtosis: float
) -> float:
    """Probability that the true Sharpe exceeds ``sr_benchmark`` (Bailey & Lopez de Prado 2012,
    "The Sharpe ratio efficient frontier", Journal of Risk 15(2)):
    ``Phi((sr - sr*) sqrt(n - 1) / sqrt(1 - skew sr + (kurtosis - 1) / 4 sr^2))``.

    Sharpes per bar over ``n_bars`` bars; ``kurtosis`` non-excess (3 for normal returns). NaN when
    the variance term is not positive (moments with ``kurtosis < 1 + skew**2`` can do that).
    """
    n_bars = _int_at_least("n_bars", n_bars, 2)
    variance_term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not variance_term > 0:
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n_bars - 1) / math.sqrt(variance_term)
    return float(stats.norm.cdf(z))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected largest Sharpe of ``n_trials`` independent skill-less trials whose Sharpes have
    variance ``sr_variance`` (Bailey & Lopez de Prado 2014, false strategy theorem):
    ``sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))``, g Euler-Mascheroni; 0 for N = 1.
    """
    n_trials = _int_at_least("n_trials", n_trials, 1)
    if not (math.isfinite(sr_variance) and sr_variance >= 0):
        raise ConfigError(f"sr_variance must be a finite number >= 0, got {sr_variance!r}")
    if n_trials == 1:
        return 0.0
    ppf = stats.norm.ppf
    z = (1 - EULER_GAMMA) * ppf(1 - 1 / n_trials) + EULER_GAMMA * ppf(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(sr_variance) * z)


@dataclass(frozen=True)
class DeflatedSharpe(_Plain):
    """PSR of the chosen strategy against ``sr0``, the best Sharpe luck alone would give."""

    dsr: float
    sharpe: float  # per bar
    sr0: float  # per bar
    n_trials: int
    sr_variance: float  # of the trial Sharpes, ddof=1
    skew: float
    kurtosis: float  # non-excess
    n_bars: int


def deflated_sharpe(
    returns: np.ndarray, trial_sharpes: np.ndarray, n_trials: int | None = None
) -> DeflatedSharpe:
    """Deflated Sharpe ratio (Bailey & Lopez de Prado 2014, "The Deflated Sharpe Ratio: correcting
    for selection bias, backtest overfitting and non-normality", J. Portfolio Management 40(5)).

    ``returns: float[T]`` of the strategy kept; ``trial_sharpes: float[K]`` the per-bar Sharpes of
    every trial tried (the kept one included). ``sr0 = expected_max_sharpe(N, V)`` with ``N =
    n_trials or K`` and ``V`` the ddof=1 variance of ``trial_sharpes`` (0 if K < 2); ``dsr =
    PSR(sharpe, sr0, T, skew, kurtosis)`` with plug-in moments (a constant series: skew 0,
    kurtosis 3).
    """
    r = _finite("returns", returns, 1)
    trials = _finite("trial_sharpes", trial_sharpes, 1)
    n = _int_at_least("n_trials", trials.size if n_trials is None else n_trials, 1)
    if r.size < 2:
        raise ConfigError(f"deflated Sharpe needs at least 2 bars of returns, got {r.size}")
    variance = float(trials.var(ddof=1)) if trials.size >= 2 else 0.0
    sr = sharpe_ratio(r)
    if float(r.std()) <= _ZERO_STD * math.sqrt(float(np.mean(r * r))):
        skew, kurt = 0.0, 3.0
    else:
        skew = float(stats.skew(r, bias=True))
        kurt = float(stats.kurtosis(r, fisher=False, bias=True))
    sr0 = expected_max_sharpe(n, variance)
    dsr = probabilistic_sharpe_ratio(sr, sr0, r.size, skew, kurt)
    return DeflatedSharpe(dsr, sr, sr0, n, variance, skew, kurt, int(r.size))


# --- probability of backtest overfitting ---------------------------------------------------------


@dataclass(frozen=True)
class PBOResult(_Plain):
    """CSCV estimate of the probability of backtest overfitting and its companions."""

    pbo: float
    n_trials: int
    n_splits: int
    n_combinations: int
    logits: list[float]  # per combination, in itertools.combinations order
    degradation_slope: float  # OLS slope of the selected trial's OOS Sharpe on its IS Sharpe
    prob_oos_loss: float  # fraction of combinations whose selected trial has OOS Sharpe < 0


def pbo_cscv(performance: np.ndarray, n_splits: int = 16) -> PBOResult:
    """Combinatorially symmetric cross-validation (Bailey, Borwein, Lopez de Prado & Zhu, "The
    probability of backtest overfitting", J. Computational Finance 20(4), 2017, section 2).

    ``performance: float[T, N]`` per-bar returns of N trials on the same T bars. The first ``T mod
    S`` rows are dropped (the most recent bars are kept) and the rest cut into ``S = n_splits``
    contiguous blocks of equal length. For each of the ``C(S, S/2)`` choices of S/2 blocks
    (in-sample; the other blocks out of sample), the trial with the best in-sample Sharpe (ties:
    lowest index) is ranked among all N out-of-sample Sharpes (1 = worst, ties averaged),
    ``omega = rank / (N + 1)`` and ``logit = ln(omega / (1 - omega))``. PBO is the fraction of
    combinations with ``logit <= 0`` (the pick lands at or below the OOS median). Each subset's
    Sharpe comes from per-block sums, so the combinations cost one small matrix product.
    """
    perf = _finite("performance", performance, 2)
    s = _int_at_least("n_splits", n_splits, 2)
    if s % 2:
        raise ConfigError(f"n_splits must be even (half the blocks are in-sample), got {s}")
    n_bars, n = perf.shape
    if n < 2:
        raise ConfigError(f"PBO needs at least 2 trials (columns), got {n}")
    if n_bars < 2 * s:
        raise ConfigError(f"PBO with n_splits={s} needs at least {2 * s} bars, got {n_bars}")
    length = n_bars // s
    perf = perf[n_bars - length * s :]
    shift = perf.mean(axis=0)
    rms = np.sqrt(np.mean(perf * perf, axis=0))
    blocks = (perf - shift).reshape(s, length, n)
    s1, s2 = blocks.sum(axis=1), (blocks**2).sum(axis=1)  # [S, N]
    combos = np.array(list(itertools.combinations(range(s), s // 2)))
    mask = np.zeros((len(combos), s))
    mask[np.arange(len(combos))[:, None], combos] = 1.0
    half = length * s // 2
    is1, is2 = mask @ s1, mask @ s2
    is_sr = _sharpe_from_sums(is1, is2, half, shift, rms)
    oos_sr = _sharpe_from_sums(s1.sum(0) - is1, s2.sum(0) - is2, half, shift, rms)
    rows = np.arange(len(combos))
    pick = np.argmax(is_sr, axis=1)  # first maximum: lowest index wins ties
    pick_is, pick_oos = is_sr[rows, pick], oos_sr[rows, pick]
    rank = (oos_sr < pick_oos[:, None]).sum(1) + ((oos_sr == pick_oos[:, None]).sum(1) + 1) / 2
    omega = rank / (n + 1)
    logits = np.log(omega / (1 - omega))
    spread = float(np.var(pick_is))
    slope = (
        float(np.mean((pick_is - pick_is.mean()) * (pick_oos - pick_oos.mean())) / spread)
        if spread > 0
        else math.nan
    )
    return PBOResult(
        pbo=float(np.mean(logits <= 0)),
        n_trials=n,
        n_splits=s,
        n_combinations=len(combos),
        logits=logits.tolist(),
        degradation_slope=slope,
        prob_oos_loss=float(np.mean(pick_oos < 0)),
    )


# --- seeds and the reality check ----------------------------------------------------------------


@dataclass(frozen=True)
class SeedDispersion(_Plain):
    """Spread of one metric over training seeds; the CI is a Student t interval of the mean."""

    n: int
    mean: float
    std: float | None  # ddof=1, None with n < 2
    min: float
    max: float
    ci_low: float | None
    ci_high: float | None


def seed_dispersion(values: Sequence[float], confidence: float = 0.95) -> SeedDispersion:
    """``mean +- t_{(1 + confidence)/2, n - 1} * std / sqrt(n)`` of one value per seed."""
    x = _finite("seed values", np.asarray(values, dtype=np.float64).ravel(), 1)
    if x.size == 0:
        raise ConfigError("seed dispersion needs at least one value")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    mean = float(x.mean())
    if x.size < 2:
        return SeedDispersion(1, mean, None, float(x[0]), float(x[0]), None, None)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1)) * std / math.sqrt(x.size)
    return SeedDispersion(
        int(x.size), mean, std, float(x.min()), float(x.max()), mean - half, mean + half
    )


@dataclass(frozen=True)
class RealityCheck(_Plain):
    """Hansen's SPA p-values (lower / consistent / upper) for "no model beats the benchmark"."""

    p_lower: float
    p_consistent: float
    p_upper: float
    best_model: int  # column with the largest mean excess return
    best_mean_excess: float  # per bar, model minus benchmark
    n_models: int
    n_bars: int


def reality_check(
    benchmark: np.ndarray, models: np.ndarray, block: float, reps: int, seed: int
) -> RealityCheck:
    """White's (2000) Reality Check in Hansen's (2005) SPA form, via ``arch.bootstrap.SPA``.

    ``benchmark: float[T]`` and ``models: float[T, N]`` (or ``float[T]``) per-bar returns; losses
    are minus returns. Stationary bootstrap with mean block ``block`` bars, ``reps`` replications,
    seeded by ``seed`` (``SPA(..., seed=seed)`` builds ``numpy.random.default_rng(seed)``, so equal
    inputs give equal p-values). p-values are arch's fraction of bootstrap maxima above the observed
    maximum (no +1, so 0.0 can occur). Note: arch 8.0 builds the statistic from the raw mean loss
    differentials; its ``studentize`` flag does not change the p-values (checked), the variance
    estimate only sets the "consistent" re-centring threshold.
    """
    from arch.bootstrap import SPA  # slow import, only where the test runs

    bench = _finite("benchmark", benchmark, 1)
    mods = np.asarray(models, dtype=np.float64)
    mods = _finite("models", mods[:, None] if mods.ndim == 1 else mods, 2)
    if mods.shape[0] != bench.size or bench.size < 2:
        raise ConfigError(
            f"models need one row per benchmark bar (>= 2), got {mods.shape} vs {bench.size} bars"
        )
    if not (math.isfinite(block) and block >= 1):
        raise ConfigError(f"block must be a mean block length >= 1 bar, got {block!r}")
    reps = _int_at_least("reps", reps, 1)
    spa = SPA(-bench, -mods, block_size=block, reps=reps, bootstrap="stationary", seed=seed)
    spa.compute()
    p = spa.pvalues
    excess = (mods - bench[:, None]).mean(axis=0)
    best = int(np.argmax(excess))
    return RealityCheck(
        float(p["lower"]),
        float(p["consistent"]),
        float(p["upper"]),
        best,
        float(excess[best]),
        int(mods.shape[1]),
        int(bench.size),
    )


# --- the verdict ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerdictThresholds:
    """What a run must reach to be called skilled."""

    alpha: float = 0.05  # largest timing permutation p-value
    min_deflated_sharpe: float = 0.95
    max_pbo: float = 0.5

    def __post_init__(self) -> None:
        for name in ("alpha", "min_deflated_sharpe", "max_pbo"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"verdict threshold {name} must lie in (0, 1), got {value!r}")


@dataclass(frozen=True)
class Verdict(_Plain):
    skill: bool
    line: str  # one line for the user, failing checks first
    reasons: list[str]  # one sentence per check, pass or fail


def _num(x: float, limit: float | None = None, small: bool = False) -> str:
    """Two decimals (with ``small``, values below 0.01 to one significant digit), more where
    rounding would make a value look equal to the limit it is compared with."""
    if small and 0 < x < 0.01:
        return f"{x:.1g}"
    for digits in range(2, 7):
        text = f"{x:.{digits}f}"
        if limit is None or x == limit or text != f"{limit:.{digits}f}":
            return text
    return repr(x)


_SHUFFLED = "the same bars shuffled against its features"
_TEXTS = {  # segment label, reason label, limit label, reason tail on pass, on fail
    "timing": (
        "timing p=",
        "timing skill: p=",
        "alpha ",
        f"the ensemble's return beats {_SHUFFLED}",
        f"the ensemble's return is typical of {_SHUFFLED}",
    ),
    "pbo": (
        "PBO ",
        "overfitting: PBO ",
        "",
        "the in-sample best trial usually stays in the top half out of sample",
        "the in-sample best trial usually drops to the bottom half out of sample",
    ),
    "dsr": (
        "deflated Sharpe ",
        "deflated Sharpe: ",
        "",
        "the Sharpe survives the number of trials and the shape of the returns",
        "the Sharpe is within what the best of the trials reaches by luck",
    ),
}


def _check(key: str, value: float | None, limit: float, at_most: bool) -> tuple[bool, str, str]:
    """(passed, line segment, reason) of ``value <= limit`` (``at_most``) or ``value >= limit``."""
    seg_label, reason_label, limit_label, why_pass, why_fail = _TEXTS[key]
    if value is None:
        return False, f"{seg_label.rstrip(' =')} not computed", f"{reason_label}not computed"
    ok = value <= limit if at_most else value >= limit
    shown, lim = _num(value, limit, small=key == "timing"), _num(limit)
    op_ok, op_fail = ("<=", ">") if at_most else (">=", "<")
    segment = seg_label + shown + ("" if ok else f" (needs {op_ok} {lim})")
    reason = f"{reason_label}{shown} {op_ok if ok else op_fail} {limit_label}{lim}: "
    return ok, segment, reason + (why_pass if ok else why_fail)


def _given(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def verdict(
    *,
    p_return: float | None,
    p_sharpe: float | None,
    deflated_sharpe: float | None,
    pbo: float | None,
    oos_return: float,
    beats_always_long: float | None,
    beats_cash: float | None,
    exposure: float,
    thresholds: VerdictThresholds,
) -> Verdict:
    """Skill is shown only when every check passes: timing permutation ``p_return <= alpha``,
    ``deflated_sharpe >= min_deflated_sharpe``, ``pbo <= max_pbo`` (``None``: not computable, said
    but not a fail), ``oos_return > 0`` after costs, ``exposure > 0``. A missing (or NaN)
    ``p_return`` or ``deflated_sharpe`` means not shown. ``p_sharpe`` (permutation p of the
    Sharpe) and ``beats_*`` (fractions of Monte Carlo paths, 0..1) are reported only.
    ``oos_return`` and ``exposure`` (mean fraction of equity held in stocks) are fractions. The line
    lists failing checks first, in the order timing, PBO, deflated Sharpe, return, exposure.
    """
    t, pbo_v = thresholds, _given(pbo)
    no_pbo = (True, "PBO n/a", "overfitting: PBO not computable here; not counted against skill")
    checks = [
        _check("timing", _given(p_return), t.alpha, True),
        no_pbo if pbo_v is None else _check("pbo", pbo_v, t.max_pbo, True),
        _check("dsr", _given(deflated_sharpe), t.min_deflated_sharpe, False),
    ]
    ret = f"OOS return {100 * oos_return:+.2f} %"
    if oos_return > 0:
        checks.append((True, "", f"return: {ret} after costs is positive"))
    else:
        checks.append((False, f"{ret} (needs > 0)", f"return: {ret} after costs is not positive"))
    if exposure > 0:
        checks.append(
            (True, "", f"exposure: {100 * exposure:.0f} % of equity in stocks on average")
        )
    else:
        checks.append((False, "never in the market", "exposure: never in the market: no skill"))
    skill = all(ok for ok, _, _ in checks)
    segments = [seg for ok, seg, _ in checks if not ok] + [
        seg for ok, seg, _ in checks if ok and seg
    ]
    reasons = [reason for _, _, reason in checks]
    ps = _given(p_sharpe)
    note = "(reported, not a condition)"
    reasons.append(
        f"Sharpe permutation: p={_num(ps, small=True)} {note}"
        if ps is not None
        else "Sharpe permutation: not computed"
    )
    for name, value in (("always-long", _given(beats_always_long)), ("cash", _given(beats_cash))):
        if value is None:
            reasons.append(f"benchmark: beating {name} not computed")
            continue
        reasons.append(
            f"benchmark: beats {name} in {100 * value:.0f} % of Monte Carlo paths {note}"
        )
        if name == "always-long":
            segments.append(f"beats always-long in {100 * value:.0f} % of paths")
    return Verdict(
        skill, ("skill shown: " if skill else "skill not shown: ") + ", ".join(segments), reasons
    )
