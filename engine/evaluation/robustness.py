"""What a fold's out-of-sample result survives: higher costs, and its returns shuffled against its
features.

- :func:`cost_sensitivity`: the ensemble re-run (the same deterministic pass, every cost level one
  portfolio of one batch) at multiples of the configured costs and on a grid of costs, and the
  break-even cost: where the out-of-sample return crosses zero. The policy may trade differently
  at other costs (its observation holds its own weights), so each level is a real re-run, not the
  same trades re-priced.
- :func:`timing_test`: the timing-skill test. The test window's next-bar moves are cut into
  blocks and shuffled (:func:`engine.evaluation.skill.block_permutations`) against the bars the
  ensemble observes, and the ensemble is re-run on each shuffle, all in one batch. The shuffle
  keeps the window's drift, volatility and short-range dependence and destroys only the link
  between what the agent sees and what happens next (the first block stays in place, so every
  shuffle enters the market the same way), so an ensemble without timing skill earns
  about the same on the shuffles as on the real order: the p-value is the rank of the real
  result among them. Exposure to a rising market does not count as skill (always long earns the
  same on every shuffle, up to rounding: p = 1); never trading gets p = 1 too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.env.portfolio import PortfolioEnvConfig
from engine.errors import ConfigError
from engine.evaluation.evaluate import Policy, run_pass
from engine.evaluation.skill import block_permutations, permutation_pvalue, sharpe_ratio

__all__ = ["COST_GRID_BPS", "TimingTest", "break_even", "cost_sensitivity", "timing_test"]

# Costs per side (commission + slippage, basis points of traded notional) tried for the break-even,
# besides the configured multiples.
COST_GRID_BPS = (
    0,
    0.5,
    1,
    1.5,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    12.5,
    15,
    20,
    25,
    30,
    40,
    50,
    75,
    100,
    150,
    200,
)


def break_even(cost_bps: np.ndarray, returns: np.ndarray) -> tuple[float | None, str]:
    """The cost (bps per side) at which ``returns`` first fall to zero, by linear interpolation
    between the two grid points around the crossing; ``cost_bps`` increasing. None, with a note,
    where there is no crossing inside the grid."""
    if not returns[0] > 0:
        return None, f"no profit even at {cost_bps[0]:g} bps (return {returns[0]:+.2%})"
    below = np.flatnonzero(returns <= 0)
    if below.size == 0:
        return None, f"profitable up to at least {cost_bps[-1]:g} bps"
    j = int(below[0])
    c0, c1, r0, r1 = cost_bps[j - 1], cost_bps[j], returns[j - 1], returns[j]
    value = float(c0 + (c1 - c0) * r0 / (r0 - r1))
    return value, f"return falls to 0 at about {value:.1f} bps per side"


def cost_sensitivity(
    policy: Policy,
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    multipliers: list[float],
    *,
    fill_prices: np.ndarray | None = None,
) -> dict[str, Any]:
    """The out-of-sample return at ``multipliers`` x the configured costs and the break-even cost
    (fields in docs/results.md, ``cost_sensitivity``). One batched pass over all cost levels."""
    base_bps = env_config.cost_rate * 1e4
    table = [round(base_bps * float(m), 9) for m in multipliers]  # 3.0, not 3.0000000000000004
    grid = np.array(sorted(set(table) | set(float(c) for c in COST_GRID_BPS)))
    result = run_pass(
        policy,
        features,
        prices,
        tradable,
        rows,
        env_config,
        n=len(grid),
        fill_prices=fill_prices,
        cost_rates=grid * 1e-4,
    )
    returns = result.equity[:, -1] / result.equity[:, 0] - 1.0
    at = {float(c): float(r) for c, r in zip(grid, returns, strict=True)}
    value, note = break_even(grid, returns)
    return {
        "multipliers": [float(m) for m in multipliers],
        "cost_bps": table,
        "total_return": [at[c] for c in table],
        "break_even_bps": value,
        "break_even_note": note,
        "grid_bps": grid.tolist(),
        "grid_return": returns.tolist(),
    }


@dataclass(frozen=True, eq=False)
class TimingTest:
    """The timing-skill test of one fold: the statistics of the real order (``observed_*``) and
    of each permutation (``null_returns``, ``null_sharpes``: float64[permutations]). Returns are
    total returns net of costs; Sharpe ratios per bar (mean / std of simple returns).
    ``returns: float64[T]`` are the real order's per-bar simple returns, earned from the bars
    ``timestamps: int64[T]`` (the pooled statistics and the deflated Sharpe use them)."""

    observed_return: float
    observed_sharpe: float
    null_returns: np.ndarray
    null_sharpes: np.ndarray
    block_bars: int
    returns: np.ndarray
    timestamps: np.ndarray

    @property
    def p_return(self) -> float:
        return permutation_pvalue(self.observed_return, self.null_returns)

    @property
    def p_sharpe(self) -> float:
        return permutation_pvalue(self.observed_sharpe, self.null_sharpes)

    def to_dict(self) -> dict[str, Any]:
        def plain(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "p_return": self.p_return,
            "p_sharpe": self.p_sharpe,
            "permutations": int(len(self.null_returns)),
            "block_bars": self.block_bars,
            "observed_return": plain(self.observed_return),
            "observed_sharpe": plain(self.observed_sharpe),
            "null_return_median": plain(float(np.median(self.null_returns))),
        }

    def save(self, path: Any) -> None:
        from engine import atomic

        def write(tmp: Any) -> None:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    observed=np.array([self.observed_return, self.observed_sharpe]),
                    null_returns=self.null_returns,
                    null_sharpes=self.null_sharpes,
                    block_bars=np.array([self.block_bars]),
                    returns=self.returns,
                    timestamps=self.timestamps,
                )

        atomic.write_with(path, write)

    @classmethod
    def load(cls, path: Any) -> TimingTest:
        from engine.errors import DataError

        try:
            with np.load(path, allow_pickle=False) as data:
                observed = data["observed"]
                return cls(
                    observed_return=float(observed[0]),
                    observed_sharpe=float(observed[1]),
                    null_returns=np.asarray(data["null_returns"], dtype=np.float64),
                    null_sharpes=np.asarray(data["null_sharpes"], dtype=np.float64),
                    block_bars=int(data["block_bars"][0]),
                    returns=np.asarray(data["returns"], dtype=np.float64),
                    timestamps=np.asarray(data["timestamps"], dtype=np.int64),
                )
        except (KeyError, ValueError, OSError, IndexError) as err:
            raise DataError(f"{path}: not a timing-test result ({err})") from None


def timing_test(
    policy: Policy,
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    permutations: int,
    block_bars: int,
    seed: int,
    *,
    fill_prices: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
) -> TimingTest:
    """Run ``policy`` on the test bars ``rows`` in their real order and on ``permutations``
    block permutations of their next-bar moves (module docstring), as one batch of
    ``permutations + 1`` portfolios. The bars acted on are ``lo = max(start, lookback - 1)`` ..
    ``stop - 2``; permutation ``k`` keeps the first ``block_bars`` of them in place and makes
    each later step ``j`` earn the move of bar ``lo + block_bars + perm_k[j - block_bars]``.
    ``timestamps``: the bars' times (int64[time]), recorded with the real order's returns."""
    start, stop = int(rows[0]), int(rows[1])
    lo = max(start, env_config.lookback - 1)
    acted = stop - 1 - lo
    if acted < 2:
        raise ConfigError(f"test rows [{start}, {stop}) leave fewer than 2 bars to permute")
    rng = np.random.default_rng(seed)
    block = min(block_bars, acted)
    # The first block stays in place: a position is built there the same way on every shuffle,
    # so its entry (which bar's overnight gap is missed, which bars a gradual build-up buys on)
    # does not vary, and holding stock through the drift scores p = 1 instead of a random rank.
    kept = min(block, acted - 2)
    perms = block_permutations(rng, acted - kept, permutations, min(block, acted - kept))
    moves = np.empty((permutations + 1, acted + 1), dtype=np.int64)
    moves[:, :acted] = np.arange(lo, stop - 1)
    moves[1:, kept:acted] = perms + lo + kept
    moves[:, acted] = stop - 1  # only read after the last step, never earned
    result = run_pass(
        policy,
        features,
        prices,
        tradable,
        (lo, stop),
        env_config,
        n=permutations + 1,
        fill_prices=fill_prices,
        price_paths=moves,
    )
    totals = result.equity[:, -1] / result.equity[:, 0] - 1.0
    per_bar = result.simple_returns()
    sharpes = np.array([sharpe_ratio(r) for r in per_bar])
    return TimingTest(
        observed_return=float(totals[0]),
        observed_sharpe=float(sharpes[0]),
        null_returns=totals[1:].copy(),
        null_sharpes=sharpes[1:].copy(),
        block_bars=int(min(block_bars, acted)),
        returns=per_bar[0].copy(),
        timestamps=(
            np.asarray(timestamps[lo : stop - 1], dtype=np.int64)
            if timestamps is not None
            else np.arange(lo, stop - 1, dtype=np.int64)
        ),
    )
