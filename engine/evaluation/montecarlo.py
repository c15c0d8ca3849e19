"""Monte Carlo of a trained ensemble on its test window, and of the null policies on the same plan.

What it is, and is not: a block bootstrap of *this* test window's bars, i.e. of one market path
resampled (about the same bars in another order, for another length, at other costs). It says
how much the result depends on which stretches of the window came up and on costs; it does not
simulate other markets, and an ensemble that holds little stock scores well on loss probability
simply by not being exposed. That is why every plan is also run for the null policies
(:data:`engine.evaluation.evaluate.NULL_POLICIES`: cash, always long, random) and the ensemble is
compared with each one path by path (:class:`PolicyComparison`). (Recomputing the features on
resampled prices, to simulate paths the market did not take, would cost a full feature build per
path; it is not done.)

Each simulation replays the test window reshuffled by a stationary bootstrap
(:func:`stationary_bootstrap_paths`: blocks of consecutive bars with geometric lengths, so that
short-range dependence survives), for a random number of steps, with its costs scaled by a random
factor. A bar index picks a whole bar: the features of every ticker at that bar and the real
next-bar returns ``price[b + 1] / price[b]``, so cross-ticker structure stays intact.

:func:`run_monte_carlo` steps all ``mc.simulations`` portfolios as one
:class:`engine.env.portfolio.PortfolioBatch` (``index_paths``, per-portfolio cost rates) and asks the
ensemble for all their actions in one batched call per member per step.
:func:`engine.bench.montecarlo.run_monte_carlo_naive` is the per-simulation loop it replaces (one
gym env, one ``model.predict`` per member per step), kept as the benchmark's baseline and as a
check: for the same seed both draw the same plan (:func:`simulation_setup`) and give the same
results.

The plan, for a test window ``rows = (start, stop)`` (bars ``start .. stop - 1``): the bars acted
on are ``lo = max(start, lookback - 1)`` .. ``hi - 1`` with ``hi = stop - 1`` (the next-bar return
of each stays inside the window), ``window_steps = hi - lo``. From ``numpy.random.default_rng(seed)``,
in this order: lengths ``L_i`` uniform integers in ``[ceil(min_length_fraction * window_steps),
window_steps]``; cost multipliers uniform in ``[1 - cost_jitter, 1 + cost_jitter)``; paths of
``max(L) + 1`` bars. Ruin is disabled. Simulation ``i`` reports ``V_{L_i} / V_0 - 1``, with
``V_{L_i}`` net of the exit costs (its holdings sold at its own cost rate), and its largest
drawdown over steps ``0 .. L_i``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import atomic
from engine.config import MonteCarloConfig
from engine.env.portfolio import PortfolioBatch, PortfolioEnvConfig
from engine.errors import ConfigError, DataError

if TYPE_CHECKING:
    from engine.evaluation.evaluate import Policy

# torch, SB3 and engine.evaluation.evaluate are imported where simulations run: the results and their
# statistics (what the trainer pools at the end of a run) need NumPy only.

__all__ = [
    "MONTECARLO_KIND",
    "MonteCarloPlan",
    "MonteCarloResult",
    "MonteCarloStats",
    "PolicyComparison",
    "compare_policies",
    "plan_monte_carlo",
    "run_monte_carlo",
    "simulation_setup",
    "stationary_bootstrap_paths",
]


MONTECARLO_KIND = (
    "block bootstrap of this test window's bars (features with their next-bar returns): the same "
    "market path resampled at random lengths and costs, not other markets"
)


def stationary_bootstrap_paths(
    rng: np.random.Generator,
    lo: int,
    hi: int,
    n_paths: int,
    length: int,
    mean_block: float,
) -> np.ndarray:
    """Politis-Romano stationary bootstrap of bar indices, ``int64[n_paths, length]``.

    Every index lies in ``[lo, hi - 1]``: the bars of a window ``[lo, hi]`` that have a next bar
    inside it. A path starts at a uniform random bar; each next index is, with probability
    ``1 / mean_block``, a fresh uniform bar (a new block) and otherwise the bar after the previous
    one, wrapping from ``hi - 1`` back to ``lo``. Block lengths are geometric with mean
    ``mean_block`` (>= 1); each column is uniform over the window. Draws, in this order: fresh
    bars ``[n_paths, length]``, then block-start uniforms ``[n_paths, length]``.
    """
    span = hi - lo
    if span < 1:
        raise ConfigError(f"bootstrap window [{lo}, {hi}] needs at least 2 bars")
    if mean_block < 1:
        raise ConfigError(f"mean_block must be >= 1 bar, got {mean_block}")
    if n_paths < 1 or length < 1:
        raise ConfigError(f"need n_paths >= 1 and length >= 1, got {n_paths}, {length}")
    fresh = rng.integers(lo, hi, size=(n_paths, length), dtype=np.int64)
    new_block = rng.random((n_paths, length)) < 1.0 / mean_block
    new_block[:, 0] = True
    # Position where the current block started, carried forward along each path.
    columns = np.arange(length, dtype=np.int64)
    block_start = np.maximum.accumulate(np.where(new_block, columns, 0), axis=1)
    first_bar = np.take_along_axis(fresh, block_start, axis=1)
    return lo + (first_bar - lo + (columns - block_start)) % span


@dataclass(frozen=True, eq=False)
class MonteCarloPlan:
    """What the simulations will run: ``lengths: int64[n]`` steps, ``cost_multipliers:
    float64[n]``, ``paths: int64[n, max(lengths) + 1]`` bar indices."""

    lengths: np.ndarray
    cost_multipliers: np.ndarray
    paths: np.ndarray


def _window(
    features: np.ndarray, rows: tuple[int, int], env_config: PortfolioEnvConfig
) -> tuple[int, int, int]:
    start, stop = int(rows[0]), int(rows[1])
    lo = max(start, env_config.lookback - 1)
    hi = stop - 1
    if stop > features.shape[0] or hi - lo < 1:
        raise ConfigError(
            f"test rows [{start}, {stop}) leave no step with lookback {env_config.lookback} "
            f"inside the data ({features.shape[0]} bars)"
        )
    return start, lo, hi


def plan_monte_carlo(
    lo: int, hi: int, mc: MonteCarloConfig, seed: int | None = None
) -> MonteCarloPlan:
    """The plan of ``mc.simulations`` simulations over acted bars ``[lo, hi - 1]`` (module
    docstring); ``seed`` overrides ``mc.seed``. Same seed, same plan."""
    rng = np.random.default_rng(mc.seed if seed is None else seed)
    window_steps = hi - lo
    # The tiny slack keeps 0.5 * 900 = 450.00000000000006 from rounding up to 451.
    shortest = max(1, math.ceil(mc.min_length_fraction * window_steps - 1e-9))
    shortest = min(shortest, window_steps)
    lengths = rng.integers(shortest, window_steps + 1, size=mc.simulations, dtype=np.int64)
    jitter = mc.cost_jitter
    multipliers = rng.uniform(1.0 - jitter, 1.0 + jitter, size=mc.simulations)
    paths = stationary_bootstrap_paths(
        rng, lo, hi, mc.simulations, int(lengths.max()) + 1, mc.mean_block_bars
    )
    return MonteCarloPlan(lengths=lengths, cost_multipliers=multipliers, paths=paths)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonteCarloStats:
    """Summary of the simulations' final returns (fractions: -0.1 is a 10 % loss) and maximum
    drawdowns (positive fractions). ``var_95`` is the 5th percentile of final returns (linear
    interpolation), ``cvar_95`` the mean of the returns at or below it; ``std`` has ddof 0.
    ``histogram``: ``{"edges": [bins + 1 floats], "counts": [bins ints]}`` of final returns."""

    simulations: int
    loss_probability: float
    mean: float
    median: float
    std: float
    var_95: float
    cvar_95: float
    max_drawdown_median: float
    max_drawdown_p95: float
    histogram: dict[str, list[Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: plain floats, ints and lists."""
        out: dict[str, Any] = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name != "histogram"
        }
        out["histogram"] = {
            "edges": list(self.histogram["edges"]),
            "counts": list(self.histogram["counts"]),
        }
        return out


_ARRAYS = ("final_returns", "max_drawdowns", "lengths", "cost_multipliers")


@dataclass(frozen=True, eq=False)
class MonteCarloResult:
    """Per simulation: ``final_returns: float64[n]`` (``V_L / V_0 - 1``), ``max_drawdowns:
    float64[n]`` (positive fractions), ``lengths: int64[n]`` (steps) and ``cost_multipliers:
    float64[n]``."""

    final_returns: np.ndarray
    max_drawdowns: np.ndarray
    lengths: np.ndarray
    cost_multipliers: np.ndarray

    def __post_init__(self) -> None:
        dtypes = (np.float64, np.float64, np.int64, np.float64)
        arrays = [
            np.asarray(getattr(self, n), dtype=d) for n, d in zip(_ARRAYS, dtypes, strict=True)
        ]
        if any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
            raise ValueError(f"MonteCarloResult arrays must be 1-D of one length: {_ARRAYS}")
        for name, array in zip(_ARRAYS, arrays, strict=True):
            object.__setattr__(self, name, array)

    @property
    def simulations(self) -> int:
        return len(self.final_returns)

    def stats(self, bins: int = 40) -> MonteCarloStats:
        """Summary statistics, with a ``bins``-bin histogram of final returns."""
        r, dd = self.final_returns, self.max_drawdowns
        if len(r) == 0:
            raise ValueError("no simulations to summarise")
        var_95 = float(np.percentile(r, 5))
        counts, edges = np.histogram(r, bins=bins)
        return MonteCarloStats(
            simulations=len(r),
            loss_probability=float(np.mean(r < 0)),
            mean=float(np.mean(r)),
            median=float(np.median(r)),
            std=float(np.std(r)),
            var_95=var_95,
            cvar_95=float(np.mean(r[r <= var_95])),
            max_drawdown_median=float(np.median(dd)),
            max_drawdown_p95=float(np.percentile(dd, 95)),
            histogram={"edges": edges.tolist(), "counts": counts.tolist()},
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` atomically (a reader sees the old file or the new one)."""

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                np.savez(fh, **{name: getattr(self, name) for name in _ARRAYS})

        atomic.write_with(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MonteCarloResult:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(**{name: data[name] for name in _ARRAYS})
        except (KeyError, ValueError, OSError) as err:
            raise DataError(f"{path}: not a Monte Carlo result ({err})") from None

    @classmethod
    def concat(cls, results: Sequence[MonteCarloResult]) -> MonteCarloResult:
        """Pool simulations (e.g. of every fold) into one result, in the given order."""
        if not results:
            raise ValueError("nothing to concatenate")
        return cls(
            **{name: np.concatenate([getattr(r, name) for r in results]) for name in _ARRAYS}
        )


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _mc_env_config(
    env_config: PortfolioEnvConfig, rows: tuple[int, int], stop: int
) -> PortfolioEnvConfig:
    return replace(env_config, window_start=int(rows[0]), window_end=stop, ruin_fraction=0.0)


def simulation_setup(
    features: np.ndarray,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    mc: MonteCarloConfig,
    seed: int | None = None,
) -> tuple[MonteCarloPlan, PortfolioEnvConfig]:
    """The plan of the simulations on the test bars ``rows`` (module docstring) and the env
    config they run with (the test window, ruin disabled). Any runner of the same plan, e.g. the
    naive reference in :mod:`engine.bench.montecarlo`, starts here."""
    _, lo, hi = _window(features, rows, env_config)
    return plan_monte_carlo(lo, hi, mc, seed), _mc_env_config(env_config, rows, hi + 1)


def run_monte_carlo(
    policy: Policy,
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    mc: MonteCarloConfig,
    seed: int | None = None,
    *,
    fill_prices: np.ndarray | None = None,
) -> MonteCarloResult:
    """All ``mc.simulations`` simulations of ``policy`` on the test bars ``rows = (start,
    stop)`` as one batch (plan in the module docstring; ``seed`` overrides ``mc.seed``).

    Every simulation is stepped ``max(L)`` times (one ``policy.act`` for all of them per step);
    each one's result is read at its own step ``L_i``, later steps are ignored.
    """
    plan, config = simulation_setup(features, rows, env_config, mc, seed)
    n = mc.simulations
    batch = PortfolioBatch(
        features,
        prices,
        config,
        n,
        index_paths=plan.paths,
        tradable=tradable,
        fill_prices=fill_prices,
    )
    batch.set_cost_multipliers(plan.cost_multipliers)
    rates = config.cost_rate * plan.cost_multipliers
    batch.reset_rows(np.arange(n, dtype=np.int64), None)
    policy.reset(n)

    v0 = config.initial_equity
    lengths = plan.lengths
    peak = np.full(n, v0)
    drawdown = np.empty(n)
    max_dd = np.zeros(n)
    final = np.full(n, v0)
    active = np.ones(n, dtype=bool)
    episode_start = np.ones(n, dtype=bool)
    for k in range(int(lengths.max())):
        actions = policy.act(batch.observe(), episode_start)
        batch.step(np.asarray(actions, dtype=np.int64))
        equity = batch.equity
        np.maximum(peak, equity, out=peak)
        np.divide(equity, peak, out=drawdown)
        np.subtract(1.0, drawdown, out=drawdown)
        np.greater(lengths, k, out=active)
        np.maximum(max_dd, drawdown, out=max_dd, where=active)
        ending = lengths == k + 1
        if ending.any():  # sold at this close, at each simulation's own cost rate
            held = equity[ending] - batch.cash[ending]
            final[ending] = equity[ending] - rates[ending] * held
        if k == 0:
            episode_start[:] = False
    return MonteCarloResult(
        final_returns=final / v0 - 1.0,
        max_drawdowns=max_dd,
        lengths=lengths,
        cost_multipliers=plan.cost_multipliers,
    )


@dataclass(frozen=True, eq=False)
class PolicyComparison:
    """The ensemble's simulations and each null policy's on the very same plan (same paths,
    lengths and costs, simulation by simulation)."""

    ensemble: MonteCarloResult
    nulls: dict[str, MonteCarloResult]

    def summary(self, bins: int = 40) -> dict[str, Any]:
        """``{"montecarlo": ensemble stats, "nulls": {name: {"stats", "beat_probability",
        "excess_mean", "excess_median"}}}``: JSON-safe. ``beat_probability`` is the fraction
        of paths where the ensemble's final return is strictly above the null's; the excess is
        ensemble minus null, path by path."""
        mine = self.ensemble.final_returns
        nulls = {}
        for name, result in self.nulls.items():
            excess = mine - result.final_returns
            nulls[name] = {
                "stats": result.stats(bins).to_dict(),
                "beat_probability": float(np.mean(excess > 0)),
                "excess_mean": float(np.mean(excess)),
                "excess_median": float(np.median(excess)),
            }
        return {"montecarlo": self.ensemble.stats(bins).to_dict(), "nulls": nulls}

    def save(self, path: str | os.PathLike[str]) -> None:
        """One ``.npz``, written atomically: the ensemble's arrays under their own names (so
        :meth:`MonteCarloResult.load` still reads it) and each null's as ``<name>__<array>``."""
        arrays = {name: getattr(self.ensemble, name) for name in _ARRAYS}
        for null, result in self.nulls.items():
            arrays.update({f"{null}__{name}": getattr(result, name) for name in _ARRAYS})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic.write_with(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PolicyComparison:
        ensemble = MonteCarloResult.load(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                names = sorted({k.split("__", 1)[0] for k in data.files if "__" in k})
                nulls = {
                    n: MonteCarloResult(**{a: data[f"{n}__{a}"] for a in _ARRAYS}) for n in names
                }
        except (KeyError, ValueError, OSError) as err:
            raise DataError(f"{path}: not a Monte Carlo comparison ({err})") from None
        return cls(ensemble=ensemble, nulls=nulls)

    @classmethod
    def concat(cls, parts: Sequence[PolicyComparison]) -> PolicyComparison:
        """Pool folds; only the nulls every part has are kept."""
        if not parts:
            raise ValueError("nothing to concatenate")
        common = set(parts[0].nulls).intersection(*(p.nulls for p in parts[1:]))
        return cls(
            ensemble=MonteCarloResult.concat([p.ensemble for p in parts]),
            nulls={n: MonteCarloResult.concat([p.nulls[n] for p in parts]) for n in sorted(common)},
        )


def compare_policies(
    policy: Policy,
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    mc: MonteCarloConfig,
    seed: int | None = None,
    *,
    fill_prices: np.ndarray | None = None,
    nulls: Sequence[str] | None = None,
) -> PolicyComparison:
    """:func:`run_monte_carlo` of ``policy`` and of each null policy (all of
    :data:`engine.evaluation.evaluate.NULL_POLICIES` by default) on the same plan. The random
    null draws its actions from ``seed`` (or ``mc.seed``) + 1."""
    from engine.evaluation.evaluate import NULL_POLICIES, null_policy

    seed = mc.seed if seed is None else seed
    run = {"fill_prices": fill_prices}
    ensemble = run_monte_carlo(
        policy, features, prices, tradable, rows, env_config, mc, seed, **run
    )
    results = {}
    for name in NULL_POLICIES if nulls is None else nulls:
        null = null_policy(name, prices.shape[1], seed + 1)
        results[name] = run_monte_carlo(
            null, features, prices, tradable, rows, env_config, mc, seed, **run
        )
    return PolicyComparison(ensemble=ensemble, nulls=results)
