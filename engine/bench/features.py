"""Benchmark of the feature stage: cold build, warm attach, and ``ta`` computing the same indicators.

The numbers answer the seed's lesson 5 (features computed once): how long a cold start takes, how
long every later process needs to attach (memory map), and what ``ta`` costs for the same work in
the same run on the same data. Nothing is extrapolated: ``ta``'s Parabolic SAR is so slow that it is
timed on ``ta_psar_tickers`` tickers only, and the fields say so.

``bench_features(root)`` returns a JSON-ready dict; the CLI prints it (``ploutos bench env --json``).
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.features.cache import CACHE_DIRNAME, load_or_build_features
from engine.features.compute import _ticker_block
from engine.features.schema import FeatureConfig
from engine.system.limits import usable_cpus
from engine.system.procs import pool_context

__all__ = ["BENCH_CONFIG", "bench_features", "make_bench_dataset"]

BENCH_CONFIG = FeatureConfig(session="extended")
"""Every stored bar of the synthetic dataset is used (regular + extended hours), so ``n_bars`` per
ticker are really computed; the default ``regular`` session would keep 7 of 16 bars a day."""


def _bench_tickers(n: int) -> list[str]:
    # SYNA..SYNZ, then SYNAA...: valid, distinct, sorted like the demo's own names.
    names = []
    for i in range(n):
        suffix = ""
        j = i
        while True:
            suffix = chr(ord("A") + j % 26) + suffix
            j = j // 26 - 1
            if j < 0:
                break
        names.append("SYN" + suffix)
    return names


def make_bench_dataset(
    root: str | Path, n_tickers: int = 15, n_bars: int = 50_000, *, seed: int = 7
) -> Path:
    """Write a synthetic dataset of ``n_tickers`` x at least ``n_bars`` hourly bars (plus macro).

    Uses :func:`engine.data.demo.write_demo` (16 bars per trading day with extended hours) from
    2005-01-03 for as many trading days as ``n_bars`` needs (50,000 bars = about 12.4 years).
    Rewriting an existing identical bench dataset is skipped by the caller checking the manifest.
    """
    from engine.data import calendar
    from engine.data.demo import write_demo

    start = pd.Timestamp("2005-01-03")
    # Find the last trading day so that the grid holds >= n_bars bars: ~16 a day, 252 days a year.
    years = n_bars / (16 * 252) + 1
    grid = calendar.bar_grid(start, start + pd.DateOffset(days=int(years * 366) + 30))
    if len(grid) < n_bars:
        raise ValueError(f"calendar grid too short for {n_bars} bars; lower n_bars")
    last_session = grid.sessions.index[grid.session[n_bars - 1]]
    write_demo(
        root,
        tickers=_bench_tickers(n_tickers),
        start=str(start.date()),
        end=str(pd.Timestamp(last_session).date()),
        seed=seed,
    )
    return Path(root)


def _median_time(fn: Callable[[], Any], repeats: int, before: Callable[[], None] | None = None):
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _ta_indicators(frame: pd.DataFrame, cfg: FeatureConfig) -> list[pd.Series]:
    """What the feature stage computes with ``ta``'s own classes (PSAR excluded, timed apart)."""
    import ta

    # RangeIndex Series: ta's PSAR is wrong on a DatetimeIndex under pandas 3 (see indicators.py),
    # and the other classes do not care.
    h, lo, c, v = (pd.Series(frame[k].to_numpy()) for k in ("high", "low", "close", "volume"))
    macd = ta.trend.MACD(c, cfg.macd_slow, cfg.macd_fast, cfg.macd_signal)
    bands = ta.volatility.BollingerBands(c, cfg.bollinger_window, cfg.bollinger_std)
    adx = ta.trend.ADXIndicator(h, lo, c, cfg.adx_window)
    return [
        ta.momentum.RSIIndicator(c, cfg.rsi_window).rsi(),
        macd.macd(),
        macd.macd_signal(),
        macd.macd_diff(),
        bands.bollinger_pband(),
        bands.bollinger_wband(),
        ta.volatility.AverageTrueRange(h, lo, c, cfg.atr_window).average_true_range(),
        adx.adx(),
        adx.adx_pos(),
        adx.adx_neg(),
        ta.volume.OnBalanceVolumeIndicator(c, v).on_balance_volume(),
    ]


def _ta_psar(frame: pd.DataFrame, cfg: FeatureConfig) -> pd.Series:
    import ta

    h, lo, c = (pd.Series(frame[k].to_numpy()) for k in ("high", "low", "close"))
    return ta.trend.PSARIndicator(h, lo, c, cfg.psar_step, cfg.psar_max_step).psar()


def bench_features(
    dataset_root: str | Path,
    *,
    n_tickers: int = 15,
    n_bars: int = 50_000,
    repeats: int = 3,
    ta_psar_tickers: int = 1,
    workers: int | None = None,
) -> dict[str, Any]:
    """Time the feature stage on ``dataset_root`` (created with :func:`make_bench_dataset` if empty).

    Fields (seconds are wall-clock medians over ``repeats`` runs unless named otherwise):

    - ``features_cold_s``: :func:`load_or_build_features` with the cache removed (read Parquet,
      sessions, indicators in ``workers`` processes, assembly, atomic write of the ``.npy`` files),
      all runs in this process: the first (``features_cold_first_s``) also loads the NYSE calendar,
      later ones reuse it as a training process building several feature sets would;
    - ``features_cold_serial_s``: the same with one process (the 1-CPU fallback);
    - ``features_warm_s``: the same call with the cache present (manifest, hashes, key, memory map
      attach);
    - ``verify_hashes_s``: of which hashing every file against the manifest (what refuses a file
      replaced after the build), and ``dataset_parquet_bytes`` it reads;
    - ``ours_indicators_serial_s``: our per-ticker indicators, all tickers, one process;
    - ``ta_reference_without_psar_s``: ``ta``'s classes for the indicators it has (RSI, MACD,
      Bollinger, ATR, ADX, OBV), all tickers, one process, one run;
    - ``ta_psar_s`` over ``ta_psar_tickers_timed`` tickers (``ta`` loops in Python: ~10-50 s per
      50,000 bars), and ``ours_psar_s`` on the same tickers.
    """
    from engine.data.store import Dataset, manifest_path, series_path

    root = Path(dataset_root)
    created = False
    if not manifest_path(root).exists():
        t0 = time.perf_counter()
        make_bench_dataset(root, n_tickers, n_bars)
        created = True
        make_s = time.perf_counter() - t0
    dataset = Dataset(root)
    cfg = BENCH_CONFIG
    cache = root / CACHE_DIRNAME

    def clear() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    # Parallel and serial cold runs alternate, so load from other users of a shared machine
    # affects both alike; the first run (calendar loading included) is reported on its own.
    cold_all: list[float] = []
    serial_all: list[float] = []
    cold_meta: list[dict[str, Any]] = []
    for _ in range(repeats):
        for n_workers, times in ((workers, cold_all), (1, serial_all)):
            clear()
            t0 = time.perf_counter()
            built = load_or_build_features(root, cfg, workers=n_workers)
            times.append(time.perf_counter() - t0)
            if times is cold_all:
                cold_meta.append(built.meta)
    cold_s, serial_s = statistics.median(cold_all), statistics.median(serial_all)
    fs = load_or_build_features(root, cfg, workers=workers)
    # Where the median cold run spent its time (from the meta the build recorded).
    median_meta = cold_meta[cold_all.index(cold_s)] if cold_s in cold_all else cold_meta[-1]
    warm_s, warm_all = _median_time(lambda: load_or_build_features(root, cfg), max(repeats, 5))

    verify_s, _ = _median_time(lambda: dataset.verified_hashes(dataset.tickers), max(repeats, 5))
    parquet_bytes = sum(series_path(root, t).stat().st_size for t in dataset.tickers)
    frames = {t: dataset.bars(t) for t in dataset.tickers}
    arrays = {
        t: tuple(f[k].to_numpy(dtype=np.float64) for k in ("high", "low", "close", "volume"))
        for t, f in frames.items()
    }
    ours_s, _ = _median_time(
        lambda: [_ticker_block(*arrays[t], cfg) for t in arrays], max(1, min(repeats, 3))
    )

    t0 = time.perf_counter()
    for frame in frames.values():
        _ta_indicators(frame, cfg)
    ta_no_psar_s = time.perf_counter() - t0

    from engine.features.indicators import parabolic_sar

    psar_names = list(frames)[: max(0, ta_psar_tickers)]
    t0 = time.perf_counter()
    for t in psar_names:
        _ta_psar(frames[t], cfg)
    ta_psar_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in psar_names:
        h, lo, c, _ = arrays[t]
        parabolic_sar(h, lo, c, cfg.psar_step, cfg.psar_max_step)
    ours_psar_s = time.perf_counter() - t0

    bars = [len(f) for f in frames.values()]
    result: dict[str, Any] = {
        "dataset": str(root),
        "dataset_created": created,
        "tickers": len(frames),
        "bars_per_ticker_min": min(bars),
        "bars_per_ticker_max": max(bars),
        "macro_series": len(dataset.macro_symbols),
        "session": cfg.session,
        "feature_shape": list(fs.features.shape),
        "feature_bytes": int(fs.features.nbytes),
        "usable_cpus": usable_cpus(),
        "workers": workers if workers is not None else min(len(frames), usable_cpus()),
        "start_method": pool_context().get_start_method(),
        "repeats": repeats,
        "features_cold_s": round(cold_s, 4),
        "features_cold_runs_s": [round(x, 4) for x in cold_all],
        # The first run also imports and builds the NYSE calendar (once per process).
        "features_cold_first_s": round(cold_all[0], 4),
        "features_cold_breakdown_s": {
            "read_session_indicators": median_meta.get("tickers_s"),
            "assemble": round(median_meta["build_s"] - median_meta["tickers_s"], 4),
            "manifest_lock_write_attach": round(cold_s - median_meta["total_build_s"], 4),
        },
        "features_cold_serial_s": round(serial_s, 4),
        "features_cold_serial_runs_s": [round(x, 4) for x in serial_all],
        "features_warm_s": round(warm_s, 5),
        "features_warm_runs_s": [round(x, 5) for x in warm_all],
        "verify_hashes_s": round(verify_s, 5),
        "dataset_parquet_bytes": parquet_bytes,
        "ours_indicators_serial_s": round(ours_s, 4),
        "ta_reference_without_psar_s": round(ta_no_psar_s, 4),
        "ta_reference_indicators": "rsi macd(3) bollinger(pband,wband) atr adx(3) obv",
        "ta_psar_s": round(ta_psar_s, 4),
        "ta_psar_tickers_timed": len(psar_names),
        # The whole ta reference, only when its PSAR was timed on every ticker (never extrapolated).
        "ta_reference_s": (
            round(ta_no_psar_s + ta_psar_s, 4) if len(psar_names) == len(frames) else None
        ),
        "ours_psar_s": round(ours_psar_s, 4),
    }
    if created:
        result["dataset_make_s"] = round(make_s, 2)
    return result
