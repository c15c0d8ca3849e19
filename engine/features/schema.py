"""The ``features:`` section of a training config (pydantic models) and the feature names it implies.

Pydantic only, no NumPy or pandas: :mod:`engine.config` and the control panel read configurations
through these models without loading the computation (:mod:`engine.features.compute`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ConfigError

__all__ = [
    "CALENDAR_FEATURES",
    "FeatureConfig",
    "NormalizationConfig",
    "feature_names",
    "macro_columns",
    "macro_feature_names",
    "parse_feature_config",
    "ticker_feature_names",
]

CALENDAR_FEATURES: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")


class NormalizationConfig(BaseModel):
    """How :func:`fit_normalizer` scales features (fitted on a train window only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["robust", "zscore"] = "robust"
    """``robust``: median and IQR / 1.349 (equals the std for Gaussian data, ignores fat tails);
    ``zscore``: mean and standard deviation."""
    clip: float = Field(default=5.0, gt=0)
    """Normalised values are clipped to ``[-clip, clip]``."""


class FeatureConfig(BaseModel):
    """The ``features:`` section of a training YAML. Windows and horizons are in bars."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session: Literal["regular", "extended", "all"] = "regular"
    """Bars used: ``regular`` (bars overlapping 09:30-16:00 New York, 7 a day), ``extended``
    (04:00-20:00 too), ``all`` (every stored bar, off-session prints included)."""
    return_horizons: tuple[int, ...] = (1, 3, 7, 35)
    volatility_windows: tuple[int, ...] = (7, 35)
    rsi_window: int = Field(default=14, ge=2)
    macd_fast: int = Field(default=12, ge=1)
    macd_slow: int = Field(default=26, ge=2)
    macd_signal: int = Field(default=9, ge=1)
    bollinger_window: int = Field(default=20, ge=2)
    bollinger_std: float = Field(default=2.0, gt=0)
    atr_window: int = Field(default=14, ge=1)
    adx_window: int = Field(default=14, ge=2)
    obv_window: int = Field(default=35, ge=1)
    volume_window: int = Field(default=35, ge=2)
    psar_step: float = Field(default=0.02, gt=0, le=1)
    psar_max_step: float = Field(default=0.2, gt=0, le=1)
    calendar: bool = True
    """Hour-of-day and day-of-week (America/New_York) on sin/cos circles."""
    macro: tuple[str, ...] | None = None
    """Macro series to use; ``None`` = every macro series of the dataset, ``[]`` = none."""
    macro_change_days: tuple[int, ...] = (1, 5)
    warmup_bars: int = Field(default=250, ge=0)
    """Each ticker's first ``warmup_bars`` bars are not used (EWM indicators still remember their
    start there); rows where some feature is undefined are dropped anyway."""
    max_stale_bars: int = Field(default=3, ge=0)
    """A ticker missing a bar carries its last bar forward for at most this many rows."""
    max_dropped_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    """Largest share (0-1) of the rows after the warm-up that gaps or undefined features may drop
    before the build refuses; dropping any of the dataset's last rows is always refused."""
    normalization: NormalizationConfig = NormalizationConfig()

    @field_validator("return_horizons", "volatility_windows", "macro_change_days")
    @classmethod
    def _positive_unique(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 1 for v in values):
            raise ValueError("every value must be >= 1 (bars or days)")
        if len(set(values)) != len(values):
            raise ValueError("values must be unique")
        return tuple(values)

    @field_validator("volatility_windows")
    @classmethod
    def _vol_windows(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 2 for v in values):
            raise ValueError("volatility windows need at least 2 returns")
        return values

    @field_validator("macro")
    @classmethod
    def _symbols(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if values is None:
            return None
        out = tuple(dict.fromkeys(v.strip().upper() for v in values if v.strip()))
        return out

    @model_validator(mode="after")
    def _consistent(self) -> FeatureConfig:
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast ({self.macd_fast}) must be < macd_slow ({self.macd_slow})")
        if self.psar_step > self.psar_max_step:
            raise ValueError(
                f"psar_step ({self.psar_step}) must be <= psar_max_step ({self.psar_max_step})"
            )
        return self

    def cache_identity(self) -> dict[str, Any]:
        """The fields that change the cached arrays (normalisation is applied later, not cached)."""
        return self.model_dump(mode="json", exclude={"normalization"})


def parse_feature_config(
    raw: FeatureConfig | Mapping[str, Any] | None, where: str = "features"
) -> FeatureConfig:
    """``FeatureConfig`` from the YAML's ``features:`` mapping, or a one-line ``ConfigError``."""
    if isinstance(raw, FeatureConfig):
        return raw
    try:
        return FeatureConfig.model_validate(dict(raw or {}))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join([where, *(str(p) for p in first["loc"])])
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"unknown key {key!r}; remove it or check its spelling") from None
        raise ConfigError(f"key {key!r}: {first['msg']}") from None


def ticker_feature_names(cfg: FeatureConfig) -> tuple[str, ...]:
    """Names of the indicator features computed from one ticker's own bars, in column order."""
    names = [f"ret_{h}" for h in cfg.return_horizons]
    names += [f"vol_{w}" for w in cfg.volatility_windows]
    names += ["rsi", "macd", "macd_signal", "macd_diff", "bb_pos", "bb_width", "atr"]
    names += ["adx", "adx_pos", "adx_neg", "obv_flow", "volume_z", "psar_dist", "psar_trend"]
    return tuple(names)


def macro_feature_names(cfg: FeatureConfig, symbols: Sequence[str]) -> tuple[str, ...]:
    """``<SYMBOL>_level`` and ``<SYMBOL>_chg<d>d`` per macro symbol, in column order."""
    cols = macro_columns(cfg)
    return tuple(f"{sym}_{col}" for sym in symbols for col in cols)


def feature_names(cfg: FeatureConfig, macro_symbols: Sequence[str] = ()) -> tuple[str, ...]:
    """All feature names, the last axis of ``FeatureSet.features``: ticker, calendar, macro."""
    cal = CALENDAR_FEATURES if cfg.calendar else ()
    return ticker_feature_names(cfg) + cal + macro_feature_names(cfg, macro_symbols)


def macro_columns(cfg: FeatureConfig) -> tuple[str, ...]:
    """The columns computed per macro series: ``level`` and ``chg<d>d`` per change horizon."""
    return ("level", *(f"chg{d}d" for d in cfg.macro_change_days))
