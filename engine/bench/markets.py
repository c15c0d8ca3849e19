"""The synthetic market used by the benchmarks and the tests: random arrays of a given shape."""

from __future__ import annotations

import numpy as np

__all__ = ["synthetic_market"]


def synthetic_market(
    n_bars: int = 50_000,
    n_tickers: int = 15,
    n_features: int = 40,
    seed: int = 0,
    vol: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Random arrays, by default of the production shape: ``features: float32[time, ticker,
    feature]`` (standard normal) and ``prices: float64[time, ticker]`` (random walks with
    ``vol`` per-bar log volatility), both read only like shared memory maps."""
    rng = np.random.default_rng(seed)
    # Drawn in float64 and cast: the tests' expected figures were fixed on these numbers.
    features = rng.standard_normal((n_bars, n_tickers, n_features)).astype(np.float32)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (n_bars, n_tickers)), axis=0))
    features.flags.writeable = False
    prices.flags.writeable = False
    return features, prices
