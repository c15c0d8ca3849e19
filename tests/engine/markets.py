"""Small generated markets for environment, evaluation and Monte Carlo tests."""

from __future__ import annotations

import numpy as np


def random_market(n_bars=400, n_tickers=3, n_features=4, seed=0, vol=0.01):
    """Random-walk prices float64[time, ticker] and random features float32[time, ticker,
    feature], both read only like shared memory maps."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_bars, n_tickers, n_features)).astype(np.float32)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (n_bars, n_tickers)), axis=0))
    features.flags.writeable = False
    prices.flags.writeable = False
    return features, prices
