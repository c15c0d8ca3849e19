"""Features computed once per dataset and configuration, cached on disk, memory-mapped by everyone.

The seed's lesson 5: 256 environments each computing RSI, MACD... for 15 tickers x 50,000 bars kept
the CPUs at 100 % for minutes. Here the main process builds ``float32[time, ticker, feature]`` once,
writes it under ``<dataset>/.features/<key>/`` as raw ``.npy`` files, and every later process
attaches to them with ``np.load(mmap_mode="r")``: no recompute, no copy, read-only pages shared
through the OS page cache.

Per ticker (:func:`compute_ticker_features`), the feature row of bar ``t`` depends only on bars
``<= t`` and on macro values visible at the close of bar ``t`` (:func:`engine.data.macro.align_to_ticker`):

- ``ret_<h>``: log return over ``h`` bars; ``vol_<w>``: std of one-bar log returns over ``w`` bars;
- ``rsi``: RSI / 100; ``macd``, ``macd_signal``, ``macd_diff``: MACD divided by the close (scale-free);
- ``bb_pos``: Bollinger %b (0.5 when the band has zero width), ``bb_width``: band width / middle;
- ``atr``: ATR / close; ``adx``, ``adx_pos``, ``adx_neg``: ADX, +DI, -DI / 100;
- ``obv_flow``: OBV change over the window / volume in it (in [-1, 1]);
  ``volume_z``: z-score of log volume;
- ``psar_dist``: (close - SAR) / close, ``psar_trend``: +1 up trend, -1 down trend;
- ``hour_sin``, ``hour_cos``, ``dow_sin``, ``dow_cos``: bar start in America/New_York, on circles;
- ``<SYMBOL>_level``, ``<SYMBOL>_chg<d>d``: each macro series' last visible close and its log change
  over ``d`` of the series' own days (computed on the daily rows, then aligned: no look-ahead).

Multi-ticker policy (:func:`build_feature_set`). Bars are first restricted to ``cfg.session``
(default: regular-session bars, from ``engine.data.calendar``). The time axis is the **union** of the
remaining bar times of all tickers: the intersection would throw away every hour in which one thin
ticker (IEX feed, extended hours) printed nothing, for all tickers. A ticker without a bar at a row
carries its last bar (features and close) forward for at most ``cfg.max_stale_bars`` rows, marked
``tradable = False`` there so the environment can forbid trading on a stale price (holding it simply
earns nothing that bar). A row where some ticker has no bar for longer (a halt, before a listing,
after a delisting) is dropped for all tickers and counted in ``meta["rows_dropped_gaps"]``. Warm-up:
the first row kept is the first one where every feature of every ticker is defined and every ticker
has at least ``cfg.warmup_bars`` bars of its own, so exponential indicators have forgotten their
start; earlier rows are counted in ``meta["rows_dropped_warmup"]``.

Dropped rows after the warm-up are reported in ``meta["rows_dropped"]`` (per ticker and reason:
``stale`` = no bar for longer than ``max_stale_bars``, ``undefined`` = a non-finite feature, e.g.
from an absurd price; ``shared`` = calendar/macro features undefined). The build refuses (a
``DataError`` naming tickers and reasons) when they exceed ``cfg.max_dropped_fraction`` of the rows
after the warm-up, or when any of the dataset's last rows would be dropped: one bad bar must not
silently move the end of the data (and so every test fold) back by months.

Cache key = sha256 of (the sha256 of every Parquet file read, as hashed on disk and verified
against the manifest; feature config without normalisation; :data:`FEATURE_CODE_VERSION`; tickers).
A file swapped after the build is refused before anything is built or attached, and features are
never cached under the key of bytes they were not computed from. Bump :data:`FEATURE_CODE_VERSION`
whenever a formula changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine import atomic
from engine.errors import ConfigError, DataError
from engine.features import indicators
from engine.system.threads import apply_in_process, usable_cpus
from engine.timeutil import NEW_YORK, to_utc_us, utc_now

__all__ = [
    "CACHE_DIRNAME",
    "FEATURE_CODE_VERSION",
    "FeatureConfig",
    "FeatureSet",
    "NormalizationConfig",
    "Normalizer",
    "align_macro_features",
    "build_feature_set",
    "cache_dir",
    "compute_ticker_features",
    "feature_key",
    "feature_names",
    "describe_drops",
    "fit_normalizer",
    "inputs_checksum",
    "load_or_build_features",
    "macro_daily_features",
    "open_features",
    "parse_feature_config",
    "select_session",
    "ticker_feature_names",
]

FEATURE_CODE_VERSION = 2  # 2: exact rolling mean/std (flat windows exactly 0)
"""Part of the cache key: bump it when any feature formula or the assembly policy changes."""

CACHE_DIRNAME = ".features"
_ARRAYS = ("features", "prices", "timestamps", "tradable")
_META = "meta.json"
CALENDAR_FEATURES: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


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
    cols = _macro_columns(cfg)
    return tuple(f"{sym}_{col}" for sym in symbols for col in cols)


def feature_names(cfg: FeatureConfig, macro_symbols: Sequence[str] = ()) -> tuple[str, ...]:
    """All feature names, the last axis of ``FeatureSet.features``: ticker, calendar, macro."""
    cal = CALENDAR_FEATURES if cfg.calendar else ()
    return ticker_feature_names(cfg) + cal + macro_feature_names(cfg, macro_symbols)


def _macro_columns(cfg: FeatureConfig) -> tuple[str, ...]:
    return ("level", *(f"chg{d}d" for d in cfg.macro_change_days))


# --------------------------------------------------------------------------------------------
# One ticker
# --------------------------------------------------------------------------------------------


def _ticker_block(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, cfg: FeatureConfig
) -> np.ndarray:
    """Indicator features of one ticker: ``float64[n_bars, len(ticker_feature_names(cfg))]``.

    Inputs are ``float64[n_bars]`` in time order. NaN marks a feature's warm-up.
    """
    n = len(close)
    cols: list[np.ndarray] = []
    cols += [indicators.log_returns(close, h) for h in cfg.return_horizons]
    cols += [indicators.rolling_volatility(close, w) for w in cfg.volatility_windows]
    cols.append(indicators.rsi(close, cfg.rsi_window) / 100.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        line, signal, diff = indicators.macd(close, cfg.macd_fast, cfg.macd_slow, cfg.macd_signal)
        cols += [line / close, signal / close, diff / close]
        pband, wband = indicators.bollinger(close, cfg.bollinger_window, cfg.bollinger_std)
        # A flat window has a zero-width band and an undefined %b; the price then sits exactly on
        # the middle band, which is what 0.5 means. NaN here would drop the row for every ticker.
        defined = ~np.isnan(wband)
        cols.append(np.where(np.isnan(pband) & defined, 0.5, pband))
        cols.append(wband / 100.0)
        cols.append(indicators.atr(high, low, close, cfg.atr_window) / close)
        adx, pdi, ndi = indicators.adx(high, low, close, cfg.adx_window)
        cols += [adx / 100.0, pdi / 100.0, ndi / 100.0]
        cols.append(indicators.obv_flow(close, volume, cfg.obv_window))
        cols.append(indicators.volume_zscore(volume, cfg.volume_window))
        sar, up = indicators.parabolic_sar(high, low, close, cfg.psar_step, cfg.psar_max_step)
        cols.append((close - sar) / close)
        cols.append(2.0 * up - 1.0)
    out = np.empty((n, len(cols)), dtype=np.float64)
    for j, col in enumerate(cols):
        out[:, j] = col
    return out


def _calendar_block(timestamps_us: np.ndarray) -> np.ndarray:
    """``float64[n, 4]``: hour-of-day and day-of-week of each bar start in New York, on circles.

    New York time, not UTC, because the session's shape (open, lunch, close) is tied to it across
    DST; a circle so that 23:00 and 00:00 (Sunday and Monday) are neighbours.
    """
    local = pd.DatetimeIndex(timestamps_us.astype("datetime64[us]")).tz_localize("UTC")
    local = local.tz_convert(NEW_YORK)
    hour = local.hour.to_numpy() + local.minute.to_numpy() / 60.0
    dow = local.day_of_week.to_numpy().astype(np.float64)
    h, d = 2.0 * np.pi * hour / 24.0, 2.0 * np.pi * dow / 7.0
    return np.column_stack([np.sin(h), np.cos(h), np.sin(d), np.cos(d)])


def _bars_arrays(bars: pd.DataFrame, where: str) -> tuple[np.ndarray, ...]:
    missing = [c for c in ("high", "low", "close", "volume") if c not in bars.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; bars need high low close volume"
        )
    return tuple(
        np.asarray(bars[c].to_numpy(dtype=np.float64, na_value=np.nan))
        for c in ("high", "low", "close", "volume")
    )


def compute_ticker_features(
    bars: pd.DataFrame, macro_aligned: pd.DataFrame | None, cfg: FeatureConfig | None = None
) -> pd.DataFrame:
    """The feature rows of one ticker: ``float64[n_bars, n_features]``, indexed like ``bars``.

    ``bars``: that ticker's bars in time order (``high low close volume``, UTC index, bar start), as
    they are to be used (pick the session first with :func:`select_session`). ``macro_aligned``:
    columns already aligned to ``bars.index`` without look-ahead, normally the output of
    :func:`align_macro_features` (its columns become features as they are), or None. Row ``t``
    depends only on ``bars`` rows ``<= t`` and on ``macro_aligned`` row ``t``. NaN marks warm-up.
    """
    cfg = parse_feature_config(cfg)
    index = to_utc_us(bars.index)
    high, low, close, volume = _bars_arrays(bars, "bars")
    parts = [_ticker_block(high, low, close, volume, cfg)]
    names = list(ticker_feature_names(cfg))
    if cfg.calendar:
        parts.append(_calendar_block(index.asi8))
        names += CALENDAR_FEATURES
    if macro_aligned is not None and len(macro_aligned.columns):
        if len(macro_aligned) != len(bars) or not to_utc_us(macro_aligned.index).equals(index):
            raise DataError(
                "macro_aligned: index differs from the bars' index; "
                "align with align_macro_features(bars.index, ...) first"
            )
        parts.append(macro_aligned.to_numpy(dtype=np.float64, na_value=np.nan))
        names += [str(c) for c in macro_aligned.columns]
    return pd.DataFrame(np.hstack(parts), index=index, columns=names)


def select_session(
    bars: pd.DataFrame, session: Literal["regular", "extended", "all"]
) -> pd.DataFrame:
    """The bars of ``session`` (see :class:`FeatureConfig`), classified by the NYSE calendar."""
    if session == "all" or bars.empty:
        return bars
    from engine.data.calendar import EXTENDED, REGULAR, classify_bars

    kind = classify_bars(bars.index)
    keep = kind == REGULAR if session == "regular" else (kind == REGULAR) | (kind == EXTENDED)
    return bars[keep]


def _clean_bars(bars: pd.DataFrame, where: str) -> tuple[pd.DataFrame, int]:
    """Sorted, unique, complete bars; returns the frame and how many rows were dropped.

    A row with a missing or non-positive price or a missing volume cannot feed log returns or
    ranges; dropping it is the same as the source not having that bar (the gap policy handles it).
    """
    index = to_utc_us(bars.index)
    frame = bars.set_axis(index)
    if not index.is_monotonic_increasing or index.has_duplicates:
        frame = frame[~frame.index.duplicated(keep="last")].sort_index()
    if len(frame):
        from engine.data.check import FIRST_SANE_TIME, FUTURE_SLACK

        # The session calendar (and pandas' nanosecond arithmetic in it) cannot place a bar
        # dated year 3000; name it instead of failing deep inside with OutOfBoundsDatetime.
        out = (frame.index < FIRST_SANE_TIME) | (frame.index > utc_now() + FUTURE_SLACK)
        if out.any():
            raise DataError(
                f"{where}: {int(out.sum()):,} bar(s) dated before {FIRST_SANE_TIME.date()} or in "
                f"the future (e.g. {frame.index[out][0]}); run `ploutos dataset check` and fix "
                "or remove them"
            )
    high, low, close, volume = _bars_arrays(frame, where)
    ok = (
        np.isfinite(high)
        & np.isfinite(low)
        & np.isfinite(close)
        & np.isfinite(volume)
        & (low > 0)
        & (close > 0)
        & (volume >= 0)
    )
    return (frame if ok.all() else frame[ok]), int(len(bars) - ok.sum())


# --------------------------------------------------------------------------------------------
# Macro
# --------------------------------------------------------------------------------------------


def macro_daily_features(daily: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """Per macro row (its own days): ``level`` (close) and ``chg<d>d`` (log change over ``d`` rows).

    Computed before alignment, on the series' own rows, so a change never mixes in a later day.
    Rows without a positive close are dropped (the previous value then stays visible).
    """
    if "close" not in daily.columns:
        raise DataError("macro series: no 'close' column; rebuild the macro data")
    close = pd.to_numeric(daily["close"], errors="coerce")
    close = close[~close.index.duplicated(keep="last")].sort_index()
    close = close[np.isfinite(close.to_numpy(dtype=np.float64, na_value=np.nan)) & (close > 0)]
    out = pd.DataFrame({"level": close.astype(np.float64)}, index=close.index)
    logc = np.log(close.astype(np.float64))
    for d in cfg.macro_change_days:
        out[f"chg{d}d"] = logc.diff(d)
    return out


def align_macro_features(
    index: pd.DatetimeIndex,
    macro_daily: Mapping[str, pd.DataFrame],
    cfg: FeatureConfig | None = None,
    *,
    macro_interval: str = "1d",
    ticker_bar: str = "1h",
    prepared: bool = False,
) -> pd.DataFrame:
    """Macro features as bars starting at ``index`` may see them at their close.

    ``macro_daily``: ``{symbol: frame with a close column}`` (store schema), or with
    ``prepared=True`` the output of :func:`macro_daily_features` per symbol. Returns
    ``float64[len(index), n_symbols * (1 + len(macro_change_days))]`` indexed by ``index`` (UTC us),
    columns ``<SYMBOL>_level``, ``<SYMBOL>_chg<d>d``; NaN before a series' first visible value.
    """
    from engine.data.macro import align_to_ticker

    cfg = parse_feature_config(cfg)
    index = to_utc_us(index)
    cols = list(_macro_columns(cfg))
    frames = []
    for symbol, daily in macro_daily.items():
        table = daily if prepared else macro_daily_features(daily, cfg)
        aligned = align_to_ticker(
            index, table, macro_interval=macro_interval, ticker_bar=ticker_bar, columns=cols
        ).frame
        frames.append(aligned.set_axis([f"{symbol}_{c}" for c in cols], axis=1))
    if not frames:
        return pd.DataFrame(index=index)
    return pd.concat(frames, axis=1).set_axis(index)


# --------------------------------------------------------------------------------------------
# The feature set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Features of several tickers on one time axis, ready for the environments.

    Attributes:
        features: ``float32[time, ticker, feature]``, raw (not normalised), read-only (a memory map
            when opened from the cache).
        prices: ``float64[time, ticker]`` close of each row's bar, for P&L (a stale ticker keeps
            its last close).
        timestamps: ``int64[time]`` bar start, UTC microseconds since the epoch, increasing.
        tradable: ``bool[time, ticker]``: the ticker has a real bar at that row (False = its last
            bar carried forward, see the module docstring).
        tickers: names along the ticker axis. feature_names: names along the feature axis.
        path: the cache folder the arrays are mapped from, None when built in memory only.
        meta: what built it (key, config, counts of dropped rows, timings).
    """

    features: np.ndarray
    prices: np.ndarray
    timestamps: np.ndarray
    tradable: np.ndarray
    tickers: tuple[str, ...]
    feature_names: tuple[str, ...]
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_time(self) -> int:
        return int(self.features.shape[0])

    @property
    def index(self) -> pd.DatetimeIndex:
        """``timestamps`` as a UTC microsecond ``DatetimeIndex`` (named ``timestamp``)."""
        idx = pd.DatetimeIndex(
            np.asarray(self.timestamps).astype("datetime64[us]"), name="timestamp"
        )
        return idx.tz_localize("UTC")

    def feature_index(self, name: str) -> int:
        try:
            return self.feature_names.index(name)
        except ValueError:
            raise DataError(f"no feature {name!r}; have {', '.join(self.feature_names)}") from None

    def time_slice(self, start: Any = None, end: Any = None) -> slice:
        """Rows whose bar starts in ``[start, end)`` (anything ``pd.Timestamp`` parses; naive = UTC)."""
        lo = 0 if start is None else int(np.searchsorted(self.timestamps, _to_us(start), "left"))
        hi = (
            self.n_time
            if end is None
            else int(np.searchsorted(self.timestamps, _to_us(end), "left"))
        )
        return slice(lo, max(lo, hi))


def _to_us(value: Any) -> int:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.tz_convert("UTC").as_unit("us").value)


def _readonly(*arrays: np.ndarray) -> None:
    for arr in arrays:
        arr.setflags(write=False)


@dataclass
class _TickerBlock:
    """What a worker sends back for one ticker (float32 block: half the bytes of float64)."""

    name: str
    timestamps: np.ndarray  # int64[n] UTC us, bar start, increasing, session bars only
    close: np.ndarray  # float64[n]
    block: np.ndarray  # float32[n, n_ticker_features]
    bars_stored: int
    bars_dropped_invalid: int
    seconds: float
    sha256: str | None = None  # of the Parquet bytes parsed (None: a frame was passed in)


def _ticker_job(
    name: str, source: pd.DataFrame | str, cfg: FeatureConfig, expected_sha256: str | None = None
) -> _TickerBlock:
    """Worker entry point: read (when ``source`` is a dataset root), clean, select, compute.

    Workers read their own Parquet file so the main process neither decodes 15 files serially nor
    pickles the frames to the workers. ``expected_sha256``: refuse a file whose bytes differ.
    """
    started = time.perf_counter()
    sha: str | None = None
    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        from engine.data.store import load_series

        frame, sha = load_series(source, name, "bars", expected_sha256=expected_sha256)
    clean, dropped = _clean_bars(frame, f"ticker {name}")
    clean = select_session(clean, cfg.session)
    high, low, close, volume = _bars_arrays(clean, f"ticker {name}")
    block = _ticker_block(high, low, close, volume, cfg).astype(np.float32)
    return _TickerBlock(
        name=name,
        timestamps=np.asarray(clean.index.asi8, dtype=np.int64),
        close=close,
        block=block,
        bars_stored=len(frame),
        bars_dropped_invalid=dropped,
        seconds=time.perf_counter() - started,
        sha256=sha,
    )


def _init_worker() -> None:
    # Workers only run element-wise NumPy, but a BLAS pool of one thread per host core per worker
    # is how the old code ran out of threads: cap every pool before anything can start one.
    apply_in_process(1)


def _mp_context() -> mp.context.BaseContext:
    """How worker processes start.

    ``fork`` when this process runs a single Python thread on Linux: workers then inherit NumPy and
    pandas already imported (milliseconds instead of ~0.7 s of imports each), and with one thread
    no lock can be held by another thread at fork time. Otherwise (a panel's worker thread, a
    multi-threaded trainer) ``forkserver``, which forks from a clean single-threaded server.
    """
    methods = mp.get_all_start_methods()
    if sys.platform == "linux" and "fork" in methods and threading.active_count() == 1:
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["engine.features.compute"])
        return ctx
    return mp.get_context("spawn")


@contextlib.contextmanager
def _ticker_runner(
    jobs: Sequence[tuple[str, pd.DataFrame | str, str | None]],
    cfg: FeatureConfig,
    workers: int | None,
) -> Iterator[Callable[[], list[_TickerBlock]]]:
    """Start the per-ticker jobs; the yielded function waits for them (results in ``jobs`` order).

    A process pool of ``min(n_tickers, workers or usable CPUs)`` processes, started before the
    caller's own work so the two overlap; with one process the jobs run serially in this process
    when the results are asked for.
    """
    n_workers = min(len(jobs), usable_cpus() if workers is None else max(1, workers))
    if n_workers <= 1:
        yield lambda: [_ticker_job(name, src, cfg, sha) for name, src, sha in jobs]
        return
    context = _mp_context()
    if cfg.session != "all" and context.get_start_method() == "fork":
        # Load the NYSE calendar (~0.5 s) once here: forked workers inherit it instead of each
        # building its own, and later builds in this process reuse it.
        from engine.data.calendar import xnys

        xnys()
    with ProcessPoolExecutor(
        max_workers=n_workers, mp_context=context, initializer=_init_worker
    ) as pool:
        futures = [pool.submit(_ticker_job, name, src, cfg, sha) for name, src, sha in jobs]
        try:
            yield lambda: [f.result() for f in futures]
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def build_feature_set(
    bars: Mapping[str, pd.DataFrame | str],
    macro_daily: Mapping[str, pd.DataFrame] | Callable[[], Mapping[str, pd.DataFrame]] | None,
    cfg: FeatureConfig | Mapping[str, Any] | None = None,
    *,
    macro_interval: str = "1d",
    ticker_bar: str = "1h",
    workers: int | None = None,
    expected_sha256: Mapping[str, str] | None = None,
) -> FeatureSet:
    """Assemble the features of several tickers in memory (no cache): see the module docstring.

    ``bars``: ``{ticker: bars frame}`` (store schema, UTC index at bar start), or ``{ticker:
    dataset root}`` to let the workers read the stored file; the ticker axis keeps this order.
    ``macro_daily``: ``{symbol: daily frame with close}`` of the symbols wanted (or a function
    returning it, called while the workers run); None or empty: no macro features. ``workers``:
    processes for the per-ticker work (default ``min(n_tickers, usable CPUs)``; 1 = serial here).
    ``expected_sha256``: ``{ticker: sha256}`` the stored files read by the workers must have.
    Raises a ``DataError`` when too many rows, or any of the last ones, would be dropped.
    """
    cfg = parse_feature_config(cfg)
    started = time.perf_counter()
    if not bars:
        raise DataError("no tickers to build features for; pass at least one")
    shas = dict(expected_sha256 or {})
    jobs = [(name, src, shas.get(name)) for name, src in bars.items()]
    with _ticker_runner(jobs, cfg, workers) as collect:
        # Work that needs no ticker result runs here while the workers compute.
        macro = dict((macro_daily() if callable(macro_daily) else macro_daily) or {})
        macro_tables = {sym: macro_daily_features(frame, cfg) for sym, frame in macro.items()}
        results = collect()
    tickers_s = time.perf_counter() - started

    common = np.unique(np.concatenate([r.timestamps for r in results]))
    n_rows, n_tickers = len(common), len(results)
    shared_parts: list[np.ndarray] = []
    if cfg.calendar:
        shared_parts.append(_calendar_block(common))
    macro_names: list[str] = []
    if macro_tables:
        aligned = align_macro_features(
            pd.DatetimeIndex(common.astype("datetime64[us]")).tz_localize("UTC"),
            macro_tables,
            cfg,
            macro_interval=macro_interval,
            ticker_bar=ticker_bar,
            prepared=True,
        )
        shared_parts.append(aligned.to_numpy(dtype=np.float64, na_value=np.nan))
        macro_names = [str(c) for c in aligned.columns]
    shared = (
        np.hstack(shared_parts).astype(np.float32)
        if shared_parts
        else np.empty((n_rows, 0), dtype=np.float32)
    )

    rows = np.arange(n_rows)
    shared_ok = np.isfinite(shared).all(axis=1)
    usable = shared_ok.copy()
    stale: list[np.ndarray] = []  # per ticker: no bar for longer than max_stale_bars (or none yet)
    undefined: list[np.ndarray] = []  # per ticker: a fresh bar whose features are not all finite
    sources: list[np.ndarray] = []  # per ticker: its last bar at or before each row (-1: none yet)
    ages: list[np.ndarray] = []  # per ticker: rows since that bar (0 = a real bar at this row)
    earliest = 0
    for r in results:
        if len(r.timestamps) <= cfg.warmup_bars:
            raise DataError(
                f"ticker {r.name}: {len(r.timestamps)} bars in session {cfg.session!r}, not more "
                f"than warmup_bars={cfg.warmup_bars}; use more data or a smaller "
                "features.warmup_bars"
            )
        pos = np.searchsorted(common, r.timestamps)
        last = np.full(n_rows, -1, dtype=np.int64)
        last[pos] = np.arange(len(pos))
        last = np.maximum.accumulate(last)
        seen = last >= 0
        src = np.clip(last, 0, None)
        age = np.where(seen, rows - pos[src], n_rows)
        fresh = seen & (age <= cfg.max_stale_bars)
        defined = np.isfinite(r.block).all(axis=1)[src]
        usable &= fresh & defined
        stale.append(~fresh)
        undefined.append(fresh & ~defined)
        earliest = max(earliest, int(pos[cfg.warmup_bars]))
        sources.append(src)
        ages.append(age)
    keep = np.flatnonzero(usable & (rows >= earliest))
    if len(keep) == 0:
        raise DataError(
            "no row has every feature of every ticker defined; the tickers' histories do not "
            "overlap long enough (check the dataset's date ranges) or the windows are too long"
        )
    start = int(keep[0])
    drops = _drop_report(
        common, start, keep, shared_ok, [r.name for r in results], stale, undefined, cfg
    )
    _refuse_drops(drops, cfg)
    contiguous = len(keep) == keep[-1] - start + 1
    rows_kept = slice(start, start + len(keep)) if contiguous else keep

    names = (
        ticker_feature_names(cfg) + (CALENDAR_FEATURES if cfg.calendar else ()) + tuple(macro_names)
    )
    n_own = len(ticker_feature_names(cfg))
    features = np.empty((len(keep), n_tickers, len(names)), dtype=np.float32)
    prices = np.empty((len(keep), n_tickers), dtype=np.float64)
    tradable = np.empty((len(keep), n_tickers), dtype=bool)
    features[:, :, n_own:] = shared[rows_kept][:, None, :]
    per_ticker: dict[str, dict[str, Any]] = {}
    for k, r in enumerate(results):
        src = sources[k][rows_kept]
        # Without gaps the rows of a ticker are consecutive bars: a slice avoids a gather copy.
        if len(src) and src[-1] - src[0] + 1 == len(src):
            src = slice(int(src[0]), int(src[0]) + len(src))
        features[:, k, :n_own] = r.block[src]
        prices[:, k] = r.close[src]
        tradable[:, k] = ages[k][rows_kept] == 0
        per_ticker[r.name] = {
            "bars_stored": r.bars_stored,
            "bars_dropped_invalid": r.bars_dropped_invalid,
            "bars_in_session": len(r.timestamps),
            "rows_stale": int(len(keep) - np.count_nonzero(tradable[:, k])),
            "rows_dropped_stale": drops["by_ticker"][r.name]["stale"],
            "rows_dropped_undefined": drops["by_ticker"][r.name]["undefined"],
            "sha256": r.sha256,  # of the Parquet bytes the worker parsed (None: a frame)
            "compute_s": round(r.seconds, 4),
        }
    timestamps = np.ascontiguousarray(common[rows_kept], dtype=np.int64)
    _readonly(features, prices, timestamps, tradable)
    meta = {
        "code_version": FEATURE_CODE_VERSION,
        "config": cfg.model_dump(mode="json"),
        "tickers": [r.name for r in results],
        "macro": list(macro_tables),
        "feature_names": list(names),
        "rows_union": n_rows,
        "rows_dropped_warmup": start,
        "rows_dropped_gaps": int(n_rows - start - len(keep)),
        "rows_dropped": drops,
        "rows": len(keep),
        "per_ticker": per_ticker,
        "first_utc": str(pd.Timestamp(int(timestamps[0]), unit="us", tz="UTC")),
        "last_utc": str(pd.Timestamp(int(timestamps[-1]), unit="us", tz="UTC")),
        "tickers_s": round(tickers_s, 4),
        "build_s": round(time.perf_counter() - started, 4),
    }
    return FeatureSet(
        features=features,
        prices=prices,
        timestamps=timestamps,
        tradable=tradable,
        tickers=tuple(r.name for r in results),
        feature_names=names,
        meta=meta,
    )


def _stamp(us: int) -> str:
    return pd.Timestamp(int(us), unit="us", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")


def _drop_report(
    common: np.ndarray,
    start: int,
    keep: np.ndarray,
    shared_ok: np.ndarray,
    names: Sequence[str],
    stale: Sequence[np.ndarray],
    undefined: Sequence[np.ndarray],
    cfg: FeatureConfig,
) -> dict[str, Any]:
    """What the rows after the warm-up lost and why (JSON-ready, stored in ``meta``).

    ``common``: ``int64[n_rows]`` union time axis (UTC us); ``keep``: rows kept (from ``start``);
    the masks are ``bool[n_rows]`` per ticker. A row can be dropped for several tickers/reasons.
    """
    n_rows = len(common)
    dropped = np.ones(n_rows, dtype=bool)
    dropped[keep] = False
    dropped[:start] = False
    after = n_rows - start
    n_dropped = int(dropped.sum())
    tail = int(n_rows - 1 - keep[-1])
    reasons: list[dict[str, Any]] = []
    by_ticker: dict[str, dict[str, int]] = {}

    def add(ticker: str | None, reason: str, mask: np.ndarray) -> int:
        hit = mask & dropped
        n = int(hit.sum())
        if n:
            first = int(np.flatnonzero(hit)[0])
            reasons.append(
                {"ticker": ticker, "reason": reason, "rows": n, "first_utc": _stamp(common[first])}
            )
        return n

    for name, st, und in zip(names, stale, undefined, strict=True):
        by_ticker[name] = {
            "stale": add(name, "stale", st),
            "undefined": add(name, "undefined", und),
        }
    shared_n = add(None, "shared", ~shared_ok)
    return {
        "warmup": start,
        "after_warmup": n_dropped,
        "rows_after_warmup": after,
        "fraction": round(n_dropped / after, 6) if after else 0.0,
        "tail": tail,
        "tail_from_utc": _stamp(common[keep[-1] + 1]) if tail else None,
        "max_stale_bars": cfg.max_stale_bars,
        "by_ticker": by_ticker,
        "shared": shared_n,
        "reasons": reasons,
    }


_REASON_TEXT = {
    "stale": "rows with no bar for more than max_stale_bars={m} rows (a halt, a gap, a delisting)",
    "undefined": "rows with non-finite features (an absurd or overflowing price?)",
    "shared": "rows with undefined calendar/macro features",
}


def describe_drops(drops: Mapping[str, Any]) -> str:
    """One line: the rows dropped after the warm-up, per ticker and reason (``meta["rows_dropped"]``)."""
    if not drops.get("after_warmup"):
        return f"no rows dropped after the warm-up ({drops.get('warmup', 0):,} warm-up rows)"
    parts = []
    for item in drops.get("reasons", []):
        text = _REASON_TEXT[item["reason"]].format(m=drops.get("max_stale_bars"))
        who = f"{item['ticker']}: " if item["ticker"] else ""
        parts.append(f"{who}{item['rows']:,} {text} from {item['first_utc']}")
    return (
        f"{drops['after_warmup']:,} of {drops['rows_after_warmup']:,} rows after the warm-up "
        f"dropped ({100.0 * drops['fraction']:.2f}%): {'; '.join(parts)}"
    )


def _refuse_drops(drops: Mapping[str, Any], cfg: FeatureConfig) -> None:
    """Raise a one-line ``DataError`` when the drops exceed what ``cfg`` allows."""
    after = drops["rows_after_warmup"]
    too_many = bool(after) and drops["after_warmup"] / after > cfg.max_dropped_fraction
    if not (too_many or drops["tail"]):
        return
    what = []
    if drops["tail"]:
        what.append(f"the dataset's last {drops['tail']:,} rows (from {drops['tail_from_utc']})")
    if too_many:
        what.append(f"more than features.max_dropped_fraction={cfg.max_dropped_fraction:g}")
    fix = "run `ploutos dataset check` and fix or rebuild the data, or leave the ticker(s) out"
    if too_many and not drops["tail"]:
        fix += ", or raise features.max_dropped_fraction"
    raise DataError(f"features would drop {' and '.join(what)}: {describe_drops(drops)}; {fix}")


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def inputs_checksum(hashes: Mapping[str, str]) -> str:
    """One digest of ``{"bars:<T>" | "macro:<S>": sha256}``: the files a feature set is built from."""
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{name}:{hashes[name]}\n".encode())
    return digest.hexdigest()


def feature_key(dataset_checksum: str, cfg: FeatureConfig, tickers: Sequence[str]) -> str:
    """The cache key: 24 hex digits of sha256(inputs, config, code version, tickers).

    ``dataset_checksum``: :func:`inputs_checksum` of the files read (verified against the manifest).
    """
    payload = {
        "dataset": dataset_checksum,
        "config": cfg.cache_identity(),
        "code_version": FEATURE_CODE_VERSION,
        "tickers": list(tickers),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cache_dir(dataset_root: str | Path, key: str) -> Path:
    """``<dataset>/.features/<key>``: where one feature set lives."""
    return Path(dataset_root) / CACHE_DIRNAME / key


def open_features(path: str | Path) -> FeatureSet:
    """Attach to a cached feature set: arrays are read-only memory maps, nothing is computed.

    This is what worker processes call with the path the main process hands them.
    """
    path = Path(path)
    meta_path = path / _META
    if not meta_path.exists():
        raise DataError(
            f"{path}: not a feature cache (no {_META}); build it with load_or_build_features"
        )
    meta = _read_meta(meta_path)
    arrays = {}
    for name in _ARRAYS:
        try:
            arrays[name] = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(
                f"{path / (name + '.npy')}: unreadable ({err}); delete {path}"
            ) from None
    shape = arrays["features"].shape
    if (
        arrays["prices"].shape != shape[:2]
        or arrays["tradable"].shape != shape[:2]
        or arrays["timestamps"].shape != shape[:1]
        or shape[1] != len(meta["tickers"])
        or shape[2] != len(meta["feature_names"])
    ):
        raise DataError(f"{path}: arrays and {_META} disagree on shapes; delete {path} to rebuild")
    return FeatureSet(
        features=arrays["features"],
        prices=arrays["prices"],
        timestamps=arrays["timestamps"],
        tradable=arrays["tradable"],
        tickers=tuple(meta["tickers"]),
        feature_names=tuple(meta["feature_names"]),
        path=path,
        meta=meta,
    )


def _read_meta(meta_path: Path) -> dict[str, Any]:
    """``meta.json`` of a cache folder, or a one-line ``DataError`` if it is not what we write."""
    folder = meta_path.parent
    try:
        meta = json.loads(meta_path.read_bytes())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(f"{meta_path}: unreadable ({detail}); delete {folder} to rebuild") from None
    ok = (
        isinstance(meta, dict)
        and isinstance(meta.get("tickers"), list)
        and isinstance(meta.get("feature_names"), list)
        and all(isinstance(x, str) for x in (*meta["tickers"], *meta["feature_names"]))
    )
    if not ok:
        raise DataError(
            f"{meta_path}: not a feature-cache description (tickers, feature_names); "
            f"delete {folder} to rebuild"
        )
    return meta


def _write_cache(fs: FeatureSet, final: Path, meta: dict[str, Any]) -> Path:
    """Write ``fs`` into a temporary folder, then rename it to ``final`` in one step.

    A reader therefore sees either no folder or a complete one. If another process renamed its
    own copy first, ours is discarded and theirs is used (they hold the same bytes).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name in _ARRAYS:
            target = tmp / f"{name}.npy"
            with open(target, "wb") as fh:
                np.save(fh, np.ascontiguousarray(getattr(fs, name)), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
        atomic.write_json(tmp / _META, meta)
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / _META).exists():  # another process won the race: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            raise
        atomic._fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@contextlib.contextmanager
def _build_lock(folder: Path, key: str) -> Iterator[None]:
    """Exclusive per-key lock, so concurrent cold starts build once and the others wait.

    ``flock`` is released by the kernel if the holder dies. Where it is not available the lock is
    skipped: the atomic rename still keeps readers safe, only the work may be duplicated.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{key}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def load_or_build_features(
    dataset_root: str | Path,
    cfg: FeatureConfig | Mapping[str, Any] | None = None,
    tickers: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    rebuild: bool = False,
) -> FeatureSet:
    """The dataset's feature set for ``cfg``: memory-mapped from the cache, built there if missing.

    ``tickers``: a subset (in that order) of the dataset's tickers; default all of them. The cache
    folder is ``<dataset>/.features/<key>/`` (:func:`feature_key`); the returned set's ``path`` is
    what worker processes pass to :func:`open_features`. ``rebuild=True`` recomputes even when the
    cache exists (it replaces the folder atomically for new readers); a damaged cache folder (bad
    ``meta.json``, unreadable arrays) is rebuilt the same way. Every file used is verified against
    the manifest's sha256 first: a replaced or changed file is a ``DataError`` naming it.
    """
    from engine.data.store import Dataset, read_series

    cfg = parse_feature_config(cfg)
    dataset = Dataset(dataset_root)
    names = list(dataset.tickers) if tickers is None else list(dict.fromkeys(tickers))
    unknown = [t for t in names if t not in dataset.manifest.tickers]
    if unknown:
        raise DataError(
            f"{dataset.root}: no ticker(s) {', '.join(unknown)} in the dataset; have "
            f"{', '.join(dataset.tickers)}"
        )
    if not names:
        raise DataError(f"{dataset.root}: the dataset has no tickers; build it first")
    macro = list(dataset.macro_symbols) if cfg.macro is None else list(cfg.macro)
    missing = [m for m in macro if m not in dataset.manifest.macro]
    if missing:
        raise DataError(
            f"{dataset.root}: no macro series {', '.join(missing)} (features.macro); have "
            f"{', '.join(dataset.macro_symbols) or 'none'}"
        )
    # Hash the files as they are now (~0.05 s for 15 x 50k bars) and refuse any that differ from
    # the manifest; the key is built from these hashes, and the workers re-check the bytes they
    # parse against them, so a cache is never keyed on data it was not computed from.
    hashes = dataset.verified_hashes(names, macro)
    checksum = inputs_checksum(hashes)
    key = feature_key(checksum, cfg, names)
    final = cache_dir(dataset.root, key)
    if not rebuild and (final / _META).exists():
        with contextlib.suppress(DataError):  # a damaged cache is stale: rebuilt below
            return open_features(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"{final.parent}: cannot create the feature cache ({err.strerror}); "
            "make the dataset folder writable"
        ) from None
    with _build_lock(final.parent, key):
        if not rebuild and (final / _META).exists():  # built while we waited for the lock
            with contextlib.suppress(DataError):
                return open_features(final)
        started = time.perf_counter()
        fs = build_feature_set(
            {t: str(dataset.root) for t in names},
            lambda: {
                m: read_series(dataset.root, m, "macro", expected_sha256=hashes[f"macro:{m}"])
                for m in macro
            },
            cfg,
            macro_interval=dataset.manifest.macro_interval,
            ticker_bar=dataset.manifest.timeframe,
            workers=workers,
            expected_sha256={t: hashes[f"bars:{t}"] for t in names},
        )
        meta = dict(fs.meta)
        meta.update(
            key=key,
            dataset_checksum=checksum,
            inputs=hashes,
            dataset_root=str(dataset.root),
            created_utc=str(utc_now()),
            total_build_s=round(time.perf_counter() - started, 4),
        )
        if final.exists():
            # Asked to rebuild, or the folder is damaged (no or bad meta.json): move it aside
            # first (readers that mapped it keep their pages).
            old = final.parent / f".old-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        for leftover in final.parent.glob(f".tmp-{key}-*"):
            # A crashed build's temporary folder; we hold the key's lock, so nobody writes it.
            shutil.rmtree(leftover, ignore_errors=True)
        return open_features(_write_cache(fs, final, meta))


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


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
