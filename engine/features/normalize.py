"""Per ticker-feature scaling fitted on a train window only (:func:`fit_normalizer`), saved with
each model (:class:`Normalizer`).

The cached features are raw; normalisation is fitted per fold on its train rows, so the test
period never leaks into the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from engine import atomic
from engine.errors import ConfigError, DataError

__all__ = ["Normalizer", "fit_normalizer"]


@dataclass(frozen=True, eq=False)
class Normalizer:
    """Per ticker-feature affine scaling fitted on a train window: ``(x - center) / scale``, clipped.

    ``center``, ``scale``: ``float32[ticker, feature]``; ``clip``: bound of the output in units of
    ``scale``; ``method``: ``robust`` or ``zscore``; ``train_rows``: the ``(start, stop)`` rows fitted.
    """

    center: np.ndarray
    scale: np.ndarray
    clip: float
    method: str
    train_rows: tuple[int, int]

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Normalised copy of ``features`` (``[time, ticker, feature]``, any window): ``float32``.

        Works in float32 in place on the new array, so a 100 MB memory map costs one 100 MB
        allocation and no float64 temporaries.
        """
        if features.shape[1:] != self.center.shape:
            raise DataError(
                f"features {features.shape} do not match the normalizer's [ticker, feature] "
                f"{self.center.shape}; fit it on the same feature set"
            )
        out = np.subtract(features, self.center, dtype=np.float32)
        np.divide(out, self.scale, out=out)
        np.clip(out, -self.clip, self.clip, out=out)
        return out

    def save(self, path: str | Path) -> None:
        """Atomically write the normalizer (``.npz``) next to a model."""

        def writer(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    center=self.center,
                    scale=self.scale,
                    clip=np.float64(self.clip),
                    method=np.array(self.method),
                    train_rows=np.array(self.train_rows, dtype=np.int64),
                )

        atomic.write_with(path, writer)

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                center=data["center"].astype(np.float32),
                scale=data["scale"].astype(np.float32),
                clip=float(data["clip"]),
                method=str(data["method"]),
                train_rows=(int(data["train_rows"][0]), int(data["train_rows"][1])),
            )


def fit_normalizer(
    features: np.ndarray,
    train_slice: slice | tuple[int, int],
    method: Literal["robust", "zscore"] = "robust",
    clip: float = 5.0,
) -> Normalizer:
    """Fit per ticker-feature center/scale on ``features[train_slice]`` only.

    ``features``: ``[time, ticker, feature]``; ``train_slice``: rows of the train window (a
    ``slice`` with step 1, or ``(start, stop)``). Rows outside it are never read, so the test
    period cannot leak into the statistics. A feature constant over the window gets scale 1.
    """
    if isinstance(train_slice, tuple):
        train_slice = slice(*train_slice)
    start, stop, step = train_slice.indices(features.shape[0])
    if step != 1 or stop <= start:
        raise DataError(
            f"train window rows {start}:{stop}:{step} are empty or strided; pass a slice start:stop"
        )
    if method not in ("robust", "zscore"):
        raise ConfigError(f"features.normalization.method {method!r}: use 'robust' or 'zscore'")
    if not (isinstance(clip, int | float) and clip > 0 and math.isfinite(clip)):
        raise ConfigError(f"features.normalization.clip {clip!r}: use a positive number")
    n_tickers, n_features = features.shape[1:]
    center = np.zeros((n_tickers, n_features), dtype=np.float64)
    scale = np.ones((n_tickers, n_features), dtype=np.float64)
    # One ticker at a time: a float64 copy of the whole window of 15 tickers would be ~10x larger.
    for k in range(n_tickers):
        train = np.asarray(features[start:stop, k, :], dtype=np.float64)
        if method == "robust":
            q25, mid, q75 = np.percentile(train, [25.0, 50.0, 75.0], axis=0)
            spread = (q75 - q25) / 1.349
            # A mostly-constant feature (a rare flag) has IQR 0: fall back to its std, then to 1.
            spread = np.where(spread > 1e-12, spread, train.std(axis=0))
        else:
            mid, spread = train.mean(axis=0), train.std(axis=0)
        center[k] = np.where(np.isfinite(mid), mid, 0.0)
        scale[k] = np.where(np.isfinite(spread) & (spread > 1e-12), spread, 1.0)
    return Normalizer(
        center=center.astype(np.float32),
        scale=scale.astype(np.float32),
        clip=float(clip),
        method=method,
        train_rows=(start, stop),
    )
