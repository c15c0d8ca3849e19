"""The feature arrays of a dataset: per-ticker indicators, calendar and macro columns on one time axis.

:func:`build_feature_set` assembles them in memory (the per-ticker work in a process pool);
:mod:`engine.features.cache` stores them once and memory-maps them for every later process.

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

The cache key (:mod:`engine.features.cache`) includes :data:`FEATURE_CODE_VERSION`: bump it
whenever a formula changes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from engine.errors import DataError
from engine.features import indicators
from engine.features.drops import drop_report, refuse_drops
from engine.features.schema import (
    CALENDAR_FEATURES,
    FeatureConfig,
    macro_columns,
    parse_feature_config,
    ticker_feature_names,
)
from engine.system.limits import usable_cpus
from engine.system.procs import pool_context
from engine.system.threads import apply_in_process
from engine.timeutil import NEW_YORK, to_utc_us, utc_now

__all__ = [
    "FEATURE_CODE_VERSION",
    "FeatureSet",
    "align_macro_features",
    "build_feature_set",
    "compute_ticker_features",
    "macro_daily_features",
    "select_session",
]

FEATURE_CODE_VERSION = 3  # 2: exact rolling mean/std (flat windows exactly 0); 3: opens, vwaps
"""Part of the cache key: bump it when any feature formula or the assembly policy changes."""


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


def _optional_column(bars: pd.DataFrame, name: str) -> np.ndarray:
    """A price column the features do not need (``open``, ``vwap``) as float64, NaN where it is
    missing or not positive (such a bar cannot be filled at)."""
    if name not in bars.columns:
        return np.full(len(bars), np.nan)
    values = np.asarray(bars[name].to_numpy(dtype=np.float64, na_value=np.nan))
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


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
    cols = list(macro_columns(cfg))
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
        opens, vwaps: ``float64[time, ticker]`` open and volume-weighted average price of each
            row's bar, where orders decided at the previous close fill (``env.fill``); NaN where
            the bar has none (a dataset without vwap has it all NaN). On a stale row they are the
            carried bar's, and that row is not tradable anyway.
        tickers: names along the ticker axis. feature_names: names along the feature axis.
        path: the cache folder the arrays are mapped from, None when built in memory only.
        meta: what built it (key, config, counts of dropped rows, timings).
    """

    features: np.ndarray
    prices: np.ndarray
    timestamps: np.ndarray
    tradable: np.ndarray
    opens: np.ndarray
    vwaps: np.ndarray
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

    def fill_prices(self, fill: str) -> np.ndarray | None:
        """The prices orders fill at under ``env.fill``: ``opens`` for ``next_open``, ``vwaps``
        for ``next_vwap``, None for ``close`` (the env then fills at ``prices``). A ticker with
        no fill price at all (no vwap in its bars) is refused: it could never be traded."""
        if fill == "close":
            return None
        values = self.opens if fill == "next_open" else self.vwaps
        missing = [t for k, t in enumerate(self.tickers) if not np.isfinite(values[:, k]).any()]
        if missing:
            column = "open" if fill == "next_open" else "vwap"
            raise DataError(
                f"env.fill {fill}: ticker(s) {', '.join(missing)} have no {column} in the "
                "dataset; rebuild it from a source that has it (Alpaca bars carry vwap) or set "
                "env.fill: next_open"
            )
        return values

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
    open: np.ndarray  # float64[n], NaN where the bar has none
    vwap: np.ndarray  # float64[n], NaN where the bar has none (all NaN: no vwap column)
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
        open=_optional_column(clean, "open"),
        vwap=_optional_column(clean, "vwap"),
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
    context = pool_context()
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
    drops = drop_report(
        common, start, keep, shared_ok, [r.name for r in results], stale, undefined, cfg
    )
    refuse_drops(drops, cfg)
    contiguous = len(keep) == keep[-1] - start + 1
    rows_kept = slice(start, start + len(keep)) if contiguous else keep

    names = (
        ticker_feature_names(cfg) + (CALENDAR_FEATURES if cfg.calendar else ()) + tuple(macro_names)
    )
    n_own = len(ticker_feature_names(cfg))
    features = np.empty((len(keep), n_tickers, len(names)), dtype=np.float32)
    prices = np.empty((len(keep), n_tickers), dtype=np.float64)
    opens = np.empty((len(keep), n_tickers), dtype=np.float64)
    vwaps = np.empty((len(keep), n_tickers), dtype=np.float64)
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
        opens[:, k] = r.open[src]
        vwaps[:, k] = r.vwap[src]
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
    _readonly(features, prices, timestamps, tradable, opens, vwaps)
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
        opens=opens,
        vwaps=vwaps,
        tickers=tuple(r.name for r in results),
        feature_names=names,
        meta=meta,
    )
