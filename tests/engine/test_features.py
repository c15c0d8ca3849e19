"""engine.features (schema, compute, cache, normalize): configuration, no look-ahead, the missing-bar policy, normalisation, the cache."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.atomic import file_sha256
from engine.data import calendar
from engine.data.macro import daily_visibility_utc
from engine.errors import ConfigError, DataError
from engine.features import cache as feature_cache
from engine.features.cache import feature_key, load_or_build_features, open_features
from engine.features.compute import (
    FEATURE_CODE_VERSION,
    align_macro_features,
    build_feature_set,
    compute_ticker_features,
    select_session,
)
from engine.features.drops import describe_drops
from engine.features.normalize import Normalizer, fit_normalizer
from engine.features.schema import FeatureConfig, feature_names, parse_feature_config
from engine.system.procs import pool_context

HOUR = pd.Timedelta(hours=1)


# ---------------------------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------------------------


def make_bars(index: pd.DatetimeIndex, seed: int) -> pd.DataFrame:
    """OHLCV random walk on ``index`` (bar starts), in the store's schema."""
    rng = np.random.default_rng(seed)
    n = len(index)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, n)))
    volume = np.round(rng.lognormal(9, 0.7, n))
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=pd.DatetimeIndex(index, name="timestamp"),
    )
    return frame


def make_macro(start: str, end: str, seed: int, level: float = 20.0) -> pd.DataFrame:
    """Daily rows labelled at UTC midnight of each NYSE session date (the store's convention)."""
    dates = calendar.sessions(start, end).index.tz_localize("UTC").as_unit("us")
    rng = np.random.default_rng(seed)
    close = level * np.exp(np.cumsum(rng.normal(0, 0.02, len(dates))))
    return pd.DataFrame({"close": close}, index=pd.DatetimeIndex(dates, name="timestamp"))


def regular_index(start: str, end: str) -> pd.DatetimeIndex:
    return calendar.expected_bars(start, end, include_extended=False)


SMALL = FeatureConfig(warmup_bars=60)


@pytest.fixture(scope="module")
def market() -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    index = regular_index("2023-01-03", "2023-08-31")  # ~1,150 regular bars
    bars = {name: make_bars(index, seed) for seed, name in enumerate(("AAA", "BBB", "CCC"))}
    macro = {
        "^VIX": make_macro("2022-12-01", "2023-08-31", 1),
        "^TNX": make_macro("2022-12-01", "2023-08-31", 2, level=3.5),
    }
    return bars, macro


# ---------------------------------------------------------------------------------------------
# configuration and names
# ---------------------------------------------------------------------------------------------


def test_config_rejects_unknown_keys_naming_them() -> None:
    with pytest.raises(ConfigError, match="features.rsi_windw"):
        parse_feature_config({"rsi_windw": 14})
    with pytest.raises(ConfigError, match="macd_fast"):
        parse_feature_config({"macd_fast": 30, "macd_slow": 26})
    with pytest.raises(ConfigError, match="return_horizons"):
        parse_feature_config({"return_horizons": [1, 1]})
    cfg = parse_feature_config({"return_horizons": [1, 5], "macro": [" ^vix "], "session": "all"})
    assert cfg.return_horizons == (1, 5) and cfg.macro == ("^VIX",)
    assert parse_feature_config(None) == FeatureConfig()


def test_cache_key_ignores_normalisation_but_not_windows_tickers_or_data() -> None:
    base = FeatureConfig()
    key = feature_key("abc", base, ["A", "B"])
    assert feature_key("abc", FeatureConfig(normalization={"clip": 3.0}), ["A", "B"]) == key
    assert feature_key("abc", FeatureConfig(rsi_window=10), ["A", "B"]) != key
    assert feature_key("abc", base, ["B", "A"]) != key
    assert feature_key("abd", base, ["A", "B"]) != key


def test_feature_names_are_the_computed_columns(market) -> None:
    bars, macro = market
    frame = bars["AAA"]
    aligned = align_macro_features(frame.index, macro, SMALL)
    out = compute_ticker_features(frame, aligned, SMALL)
    assert tuple(out.columns) == feature_names(SMALL, list(macro))
    assert out.index.equals(frame.index)
    assert "^VIX_chg5d" in out.columns and "psar_trend" in out.columns
    # Each name labels its own column (spot checks of values only that formula can give).
    close = frame["close"].to_numpy()
    np.testing.assert_allclose(out["ret_1"].to_numpy()[1:], np.log(close[1:] / close[:-1]))
    assert out["rsi"].dropna().between(0, 1).all() and out["adx"].dropna().between(0, 1).all()
    assert set(out["psar_trend"].dropna().unique()) == {-1.0, 1.0}
    assert out["obv_flow"].dropna().between(-1, 1).all()
    assert (out["vol_35"].dropna() >= 0).all() and (out["bb_width"].dropna() >= 0).all()


def test_calendar_features_use_new_york_time_across_dst() -> None:
    # 13:00 UTC is 09:00 in New York in summer (EDT) and 08:00 in winter (EST).
    index = pd.DatetimeIndex(["2024-07-01 13:00", "2024-01-02 14:00"], tz="UTC").as_unit("us")
    out = compute_ticker_features(make_bars(index, 0), None, FeatureConfig())
    hours = np.mod(np.arctan2(out["hour_sin"], out["hour_cos"]) * 24 / (2 * np.pi), 24)
    np.testing.assert_allclose(hours, [9.0, 9.0], atol=1e-9)
    days = np.mod(np.round(np.arctan2(out["dow_sin"], out["dow_cos"]) * 7 / (2 * np.pi)), 7)
    np.testing.assert_array_equal(days, [0, 1])  # Monday, Tuesday


def test_select_session_keeps_regular_or_extended_bars() -> None:
    index = calendar.expected_bars("2024-11-25", "2024-11-29")  # Thanksgiving week, early close
    frame = make_bars(index, 3)
    regular = select_session(frame, "regular")
    extended = select_session(frame, "extended")
    assert len(extended) == len(frame)
    # 3 normal days x 7, Thanksgiving closed, the early-close Friday has 4 regular bars.
    assert len(regular) == 3 * 7 + 4
    assert select_session(frame, "all") is frame


# ---------------------------------------------------------------------------------------------
# no look-ahead
# ---------------------------------------------------------------------------------------------


def perturb_after(frame: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    out = frame.copy()
    k = len(frame) - t - 1
    scale = np.exp(rng.normal(0, 0.05, k))
    for col in ("open", "high", "low", "close"):
        out.iloc[t + 1 :, out.columns.get_loc(col)] = frame[col].to_numpy()[t + 1 :] * scale
    out.iloc[t + 1 :, out.columns.get_loc("volume")] = rng.lognormal(9, 1.0, k).round()
    return out


def perturb_invisible_macro(
    macro: dict[str, pd.DataFrame], decision: pd.Timestamp, rng: np.random.Generator
) -> dict[str, pd.DataFrame]:
    """Change every macro value that is not yet visible at ``decision`` (a bar's end)."""
    out = {}
    for sym, frame in macro.items():
        hidden = daily_visibility_utc(frame.index) > decision
        changed = frame.copy()
        changed.loc[hidden, "close"] = changed.loc[hidden, "close"] * np.exp(
            rng.normal(0, 0.3, int(hidden.sum()))
        )
        out[sym] = changed
    return out


def test_ticker_features_at_bar_t_ignore_later_bars_and_invisible_macro(market) -> None:
    bars, macro = market
    frame = bars["AAA"]
    base = compute_ticker_features(frame, align_macro_features(frame.index, macro, SMALL), SMALL)
    rng = np.random.default_rng(0)
    for t in rng.integers(50, len(frame) - 20, size=5):
        changed_bars = perturb_after(frame, t, rng)
        changed_macro = perturb_invisible_macro(macro, frame.index[t] + HOUR, rng)
        aligned = align_macro_features(frame.index, changed_macro, SMALL)
        after = compute_ticker_features(changed_bars, aligned, SMALL)
        for name in base.columns:
            np.testing.assert_array_equal(
                after[name].to_numpy()[: t + 1], base[name].to_numpy()[: t + 1], err_msg=name
            )
        # The perturbation reached the later rows, or the check above would prove nothing.
        assert not np.allclose(
            after["ret_1"].to_numpy()[t + 1 :], base["ret_1"].to_numpy()[t + 1 :]
        )
        assert not np.allclose(
            after["^VIX_level"].to_numpy()[-1], base["^VIX_level"].to_numpy()[-1]
        )


def test_macro_features_at_a_bar_of_day_d_use_day_d_minus_1() -> None:
    index = regular_index("2024-03-04", "2024-03-08")
    macro = {"^VIX": make_macro("2024-02-20", "2024-03-08", 4)}
    aligned = align_macro_features(index, macro, FeatureConfig())
    closes = macro["^VIX"]["close"]
    for ts, row in aligned.iterrows():
        ny_day = ts.tz_convert("America/New_York").normalize().tz_localize(None)
        prev = closes[closes.index.tz_localize(None) < ny_day]
        assert row["^VIX_level"] == prev.iloc[-1]
        assert row["^VIX_chg1d"] == pytest.approx(np.log(prev.iloc[-1] / prev.iloc[-2]), rel=1e-12)


def test_assembled_rows_up_to_t_ignore_everything_after_t() -> None:
    from engine.data.demo import generate_demo

    bars, macro = generate_demo(tickers=("SYNA", "SYNB"), start="2023-01-01", end="2023-06-30")
    # Give one ticker missing bars so the carry-forward and tradable mask are exercised too.
    rng = np.random.default_rng(1)
    syna = bars["SYNA"]
    bars["SYNA"] = syna.drop(syna.index[rng.choice(len(syna), 80, replace=False)])
    cfg = FeatureConfig(warmup_bars=100, session="regular")
    full = build_feature_set(bars, macro, cfg, workers=1)
    for t in rng.choice(np.arange(50, full.n_time - 10), size=3, replace=False):
        cut = int(full.timestamps[t])
        decision = pd.Timestamp(cut, unit="us", tz="UTC") + HOUR
        truncated = {k: f[f.index.asi8 <= cut] for k, f in bars.items()}
        later = build_feature_set(
            truncated, perturb_invisible_macro(macro, decision, rng), cfg, workers=1
        )
        assert later.n_time == t + 1
        np.testing.assert_array_equal(later.timestamps, full.timestamps[: t + 1])
        np.testing.assert_array_equal(later.features, full.features[: t + 1])
        np.testing.assert_array_equal(later.prices, full.prices[: t + 1])
        np.testing.assert_array_equal(later.tradable, full.tradable[: t + 1])


# ---------------------------------------------------------------------------------------------
# multi-ticker policy
# ---------------------------------------------------------------------------------------------


def test_missing_bars_are_carried_at_most_k_rows_and_not_tradable(market) -> None:
    bars, macro = market
    index = bars["AAA"].index
    holes = {400, 600, 601, 602}  # one bar missing, then three in a row (= max_stale_bars)
    gappy = dict(bars)
    gappy["BBB"] = bars["BBB"].drop(index[sorted(holes)])
    fs = build_feature_set(gappy, macro, SMALL, workers=1)
    k = fs.tickers.index("BBB")
    start = int(np.searchsorted(index.asi8, fs.timestamps[0]))
    assert fs.meta["rows_dropped_gaps"] == 0
    for hole in holes:
        row = hole - start
        assert not fs.tradable[row, k] and fs.tradable[row, 0] and fs.tradable[row, 2]
        last_real = max(i for i in range(hole) if i not in holes)
        assert fs.prices[row, k] == bars["BBB"]["close"].iloc[last_real]
        np.testing.assert_array_equal(
            fs.features[row, k, :20], fs.features[last_real - start, k, :20]
        )
    # Calendar and macro features are the row's own, not carried.
    np.testing.assert_array_equal(
        fs.features[400 - start, k, 20:], fs.features[400 - start, 0, 20:]
    )
    assert fs.tradable.sum() == fs.tradable.size - len(holes)
    assert fs.meta["per_ticker"]["BBB"]["rows_stale"] == len(holes)


def test_rows_with_a_longer_gap_are_dropped_for_every_ticker(market) -> None:
    bars, macro = market
    index = bars["AAA"].index
    gappy = dict(bars)
    gappy["CCC"] = bars["CCC"].drop(index[700:706])  # 6 missing > max_stale_bars=3
    fs = build_feature_set(gappy, macro, SMALL, workers=1)
    assert fs.meta["rows_dropped_gaps"] == 3  # rows 703, 704, 705 (700-702 are carried)
    kept = set(fs.timestamps.tolist())
    assert all(int(index.asi8[i]) not in kept for i in (703, 704, 705))
    assert all(int(index.asi8[i]) in kept for i in (700, 701, 702, 706))
    assert np.isfinite(fs.features).all()


def test_warm_up_ends_where_every_ticker_has_enough_bars_and_every_feature(market) -> None:
    bars, macro = market
    late = dict(bars)
    late["CCC"] = bars["CCC"].iloc[200:]  # listed 200 bars later
    fs = build_feature_set(late, macro, SMALL, workers=1)
    first = int(np.searchsorted(bars["AAA"].index.asi8, fs.timestamps[0]))
    assert first == 200 + SMALL.warmup_bars
    assert fs.meta["rows_dropped_warmup"] == first
    assert np.isfinite(fs.features).all() and fs.tradable.all()
    # With no warm-up requirement the first row is where the slowest feature is first defined.
    fs0 = build_feature_set(bars, macro, FeatureConfig(warmup_bars=0), workers=1)
    allf = compute_ticker_features(
        bars["AAA"], align_macro_features(bars["AAA"].index, macro, SMALL), FeatureConfig()
    )
    first_defined = int(np.flatnonzero(allf.notna().all(axis=1).to_numpy())[0])
    assert fs0.timestamps[0] == bars["AAA"].index.asi8[first_defined]


def test_too_little_history_is_a_clear_error(market) -> None:
    bars, macro = market
    short = {"AAA": bars["AAA"].iloc[:40]}
    with pytest.raises(DataError, match="warmup_bars"):
        build_feature_set(short, macro, SMALL, workers=1)


def test_stored_rows_equal_the_single_ticker_features(market) -> None:
    bars, macro = market
    fs = build_feature_set(bars, macro, SMALL, workers=1)
    frame = bars["BBB"]
    one = compute_ticker_features(frame, align_macro_features(frame.index, macro, SMALL), SMALL)
    rows = one.loc[fs.index].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(fs.features[:, fs.tickers.index("BBB"), :], rows)
    assert fs.features.dtype == np.float32 and fs.prices.dtype == np.float64
    assert fs.timestamps.dtype == np.int64 and fs.tradable.dtype == bool
    assert not fs.features.flags.writeable


def test_parallel_build_equals_serial(market) -> None:
    bars, macro = market
    serial = build_feature_set(bars, macro, SMALL, workers=1)
    parallel = build_feature_set(bars, macro, SMALL, workers=2)
    np.testing.assert_array_equal(serial.features, parallel.features)
    np.testing.assert_array_equal(serial.prices, parallel.prices)
    assert serial.feature_names == parallel.feature_names


def test_workers_start_from_a_forkserver_while_other_threads_run(market) -> None:
    # Forking a multi-threaded process can deadlock a child on a lock another thread held; with a
    # second thread alive the pool must use the forkserver, and give the same arrays.
    import threading

    bars, macro = market
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert pool_context().get_start_method() != "fork"
        parallel = build_feature_set(bars, macro, SMALL, workers=2)
    finally:
        stop.set()
        thread.join()
    serial = build_feature_set(bars, macro, SMALL, workers=1)
    np.testing.assert_array_equal(serial.features, parallel.features)


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------


def test_normalizer_statistics_come_from_the_train_rows_only() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=(500, 2, 4)).astype(np.float32)
    for method in ("robust", "zscore"):
        norm = fit_normalizer(x, slice(0, 300), method=method)
        y = x.copy()
        y[300:] = rng.normal(100.0, 50.0, size=(200, 2, 4))  # a wildly different test period
        again = fit_normalizer(y, slice(0, 300), method=method)
        np.testing.assert_array_equal(norm.center, again.center)
        np.testing.assert_array_equal(norm.scale, again.scale)
        np.testing.assert_allclose(norm.center, 2.0, atol=0.6)
        np.testing.assert_allclose(norm.scale, 3.0, rtol=0.2)
        assert norm.train_rows == (0, 300)


def test_normalizer_output_is_float32_clipped_and_handles_constant_features(tmp_path) -> None:
    x = np.zeros((100, 1, 3), dtype=np.float32)
    x[:, 0, 0] = np.arange(100)
    x[:, 0, 1] = 7.0  # constant
    x[10:15, 0, 2] = 1.0  # a rare flag: IQR 0 over the train rows, falls back to the std
    norm = fit_normalizer(x, (0, 80), method="robust", clip=2.0)
    out = norm.apply(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert out.max() == 2.0 and out.min() >= -2.0  # the trend leaves the train range: clipped
    assert (out[:, 0, 1] == 0).all() and norm.scale[0, 1] == 1.0
    assert norm.scale[0, 2] == pytest.approx(np.std(x[:80, 0, 2]), rel=1e-6)
    path = tmp_path / "norm.npz"
    norm.save(path)
    loaded = Normalizer.load(path)
    np.testing.assert_array_equal(loaded.apply(x), out)
    assert loaded.method == "robust" and loaded.train_rows == (0, 80)
    with pytest.raises(DataError, match="train window"):
        fit_normalizer(x, slice(10, 10))
    with pytest.raises(DataError, match="normalizer"):
        norm.apply(np.zeros((5, 2, 3), dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# the cache over a demo dataset
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.data.demo import write_demo

    root = tmp_path_factory.mktemp("demo") / "ds"
    write_demo(root, tickers=("SYNA", "SYNB", "SYNC"), start="2023-01-01", end="2023-09-30")
    return root


def test_demo_dataset_builds_with_every_macro_series(demo_root: Path) -> None:
    fs = load_or_build_features(demo_root, {"warmup_bars": 100}, workers=1)
    assert fs.tickers == ("SYNA", "SYNB", "SYNC")
    assert fs.meta["macro"] == ["^VIX", "^TNX", "DX-Y.NYB", "SPY"]
    assert fs.features.shape == (fs.n_time, 3, len(fs.feature_names))
    assert np.isfinite(fs.features).all() and fs.tradable.all()
    assert np.all(np.diff(fs.timestamps) > 0)
    assert fs.path is not None and fs.path.parent.name == feature_cache.CACHE_DIRNAME
    # Regular-session bars only: 7 a normal day, all in 09:00-15:00 New York.
    hours = fs.index.tz_convert("America/New_York").hour
    assert hours.min() == 9 and hours.max() == 15


def test_second_load_attaches_to_the_cache_without_recomputing(demo_root, monkeypatch) -> None:
    cfg = {"warmup_bars": 100, "macro": ["^VIX"]}
    first = load_or_build_features(demo_root, cfg, tickers=["SYNB", "SYNA"], workers=1)

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although the cache exists")

    monkeypatch.setattr(feature_cache, "build_feature_set", refuse)
    again = load_or_build_features(demo_root, cfg, tickers=["SYNB", "SYNA"])
    assert again.tickers == ("SYNB", "SYNA")
    for name in ("features", "prices", "timestamps", "tradable"):
        arr = getattr(again, name)
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
        np.testing.assert_array_equal(arr, getattr(first, name))
    by_path = open_features(again.path)
    assert by_path.feature_names == again.feature_names
    assert by_path.meta["key"] == again.path.name
    meta = json.loads((again.path / "meta.json").read_text())
    assert meta["dataset_checksum"] and meta["code_version"] == FEATURE_CODE_VERSION


def test_unknown_tickers_and_macro_series_are_clear_errors(demo_root: Path) -> None:
    with pytest.raises(DataError, match="NOPE"):
        load_or_build_features(demo_root, {}, tickers=["NOPE"])
    with pytest.raises(DataError, match=r"\^VXN"):
        load_or_build_features(demo_root, {"macro": ["^VXN"]})
    with pytest.raises(DataError, match="not a feature cache"):
        open_features(demo_root)


def test_an_interrupted_cache_write_leaves_no_folder(demo_root, monkeypatch) -> None:
    cfg = {"warmup_bars": 120, "macro": []}
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(feature_cache.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        load_or_build_features(demo_root, cfg, workers=1)
    monkeypatch.undo()
    cache = demo_root / feature_cache.CACHE_DIRNAME
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
    fs = load_or_build_features(demo_root, cfg, workers=1)
    assert fs.feature_names[-1] == "dow_cos"  # no macro features


def _build_in_child(root: str) -> tuple[str, str, float]:
    fs = load_or_build_features(root, {"warmup_bars": 90}, workers=1)
    return str(fs.path), fs.meta["created_utc"], float(np.asarray(fs.features).sum())


def test_concurrent_cold_starts_build_once_and_agree(demo_root: Path) -> None:
    with mp.get_context("fork").Pool(3) as pool:
        results = pool.map(_build_in_child, [str(demo_root)] * 3)
    assert len(set(results)) == 1  # same folder, same build (created once), same values
    cache = demo_root / feature_cache.CACHE_DIRNAME
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_rebuild_replaces_the_cache_for_new_readers(demo_root: Path) -> None:
    cfg = {"warmup_bars": 110}
    first = load_or_build_features(demo_root, cfg, workers=1)
    second = load_or_build_features(demo_root, cfg, workers=1, rebuild=True)
    assert second.path == first.path
    assert second.meta["created_utc"] != first.meta["created_utc"]
    np.testing.assert_array_equal(first.features, second.features)  # old map still readable


def test_bench_reports_cold_warm_and_ta_timings(tmp_path: Path) -> None:
    from engine.bench.features import bench_features

    out = bench_features(
        tmp_path / "bench", n_tickers=2, n_bars=3000, repeats=1, ta_psar_tickers=1, workers=1
    )
    assert out["tickers"] == 2 and out["bars_per_ticker_min"] >= 3000
    for key in (
        "features_cold_s",
        "features_warm_s",
        "ta_reference_without_psar_s",
        "ta_psar_s",
        "ours_psar_s",
        "ours_indicators_serial_s",
    ):
        assert out[key] > 0, key
    assert out["ta_psar_tickers_timed"] == 1
    json.dumps(out)


# ---------------------------------------------------------------------------------------------
# dropped rows are reported, and too many (or the tail) refused
# ---------------------------------------------------------------------------------------------


def test_an_absurd_bar_is_refused_naming_the_ticker_and_reason(market) -> None:
    bars, macro = market
    bad = dict(bars)
    frame = bars["BBB"].copy()
    row = len(frame) // 2
    frame.iloc[row, [frame.columns.get_loc(c) for c in ("open", "high", "low", "close")]] = 1e308
    bad["BBB"] = frame
    with np.errstate(all="ignore"), pytest.raises(DataError) as err:
        build_feature_set(bad, macro, SMALL, workers=1)
    text = str(err.value)
    assert "\n" not in text and "the dataset's last" in text
    assert "BBB:" in text and "non-finite features" in text and "AAA:" not in text
    assert "max_dropped_fraction" in text and "dataset check" in text
    # Raising the allowed share does not hide a lost tail.
    with np.errstate(all="ignore"), pytest.raises(DataError, match="the dataset's last"):
        build_feature_set(
            bad, macro, FeatureConfig(warmup_bars=60, max_dropped_fraction=1.0), workers=1
        )


def test_a_ticker_ending_early_would_drop_the_tail_and_is_refused(market) -> None:
    bars, macro = market
    short = dict(bars)
    short["CCC"] = bars["CCC"].iloc[:-10]
    with pytest.raises(DataError, match=r"last 7 rows .*CCC: 7 rows with no bar for more than"):
        build_feature_set(short, macro, SMALL, workers=1)  # 3 rows carried (age 1-3), 7 dropped


def test_dropped_rows_are_reported_per_ticker_and_refused_beyond_the_share(market) -> None:
    bars, macro = market
    index = bars["AAA"].index
    gappy = dict(bars)
    gappy["CCC"] = bars["CCC"].drop(index[500:530])  # 30 missing: 27 rows beyond max_stale_bars
    with pytest.raises(DataError, match=r"max_dropped_fraction=0\.01: 27 of") as err:
        build_feature_set(gappy, macro, SMALL, workers=1)
    assert "CCC: 27 rows with no bar" in str(err.value) and "the dataset's last" not in str(
        err.value
    )
    assert f"from {index[503].strftime('%Y-%m-%dT%H:%MZ')}" in str(err.value)
    fs = build_feature_set(
        gappy, macro, SMALL.model_copy(update={"max_dropped_fraction": 0.05}), workers=1
    )
    drops = fs.meta["rows_dropped"]
    assert drops["after_warmup"] == fs.meta["rows_dropped_gaps"] == 27 and drops["tail"] == 0
    assert drops["by_ticker"]["CCC"] == {"stale": 27, "undefined": 0}
    assert drops["by_ticker"]["AAA"] == {"stale": 0, "undefined": 0}
    assert fs.meta["per_ticker"]["CCC"]["rows_dropped_stale"] == 27
    assert drops["rows_after_warmup"] == fs.n_time + 27
    line = describe_drops(drops)
    assert "27 of" in line and "CCC: 27 rows with no bar for more than max_stale_bars=3" in line
    json.dumps(fs.meta)


def test_max_dropped_fraction_is_a_validated_config_key() -> None:
    assert FeatureConfig().max_dropped_fraction == 0.01
    with pytest.raises(ConfigError, match="max_dropped_fraction"):
        parse_feature_config({"max_dropped_fraction": 1.5})


def test_a_bar_dated_year_3000_is_a_clear_error(market) -> None:
    bars, macro = market
    late = dict(bars)
    stamps = bars["AAA"].index.tolist()
    stamps[-1] = pd.Timestamp("3000-01-02 15:00", tz="UTC")
    late["AAA"] = bars["AAA"].set_axis(pd.DatetimeIndex(stamps, name="timestamp").as_unit("us"))
    with pytest.raises(DataError, match=r"ticker AAA: 1 bar\(s\) dated .* in the future"):
        build_feature_set(late, macro, SMALL, workers=1)


# ---------------------------------------------------------------------------------------------
# the cache is keyed on verified file contents; a damaged cache is rebuilt
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(demo_root, out, ignore=shutil.ignore_patterns(feature_cache.CACHE_DIRNAME))
    return out


def test_a_swapped_parquet_is_refused_before_build_and_attach(demo_copy: Path) -> None:
    cfg = {"warmup_bars": 100, "macro": ["^VIX"]}
    good = load_or_build_features(demo_copy, cfg, workers=1)
    expected = np.array(good.features)
    syna, synb = demo_copy / "SYNA.parquet", demo_copy / "SYNB.parquet"
    original = syna.read_bytes()
    syna.write_bytes(synb.read_bytes())  # another ticker's file; the manifest is untouched
    for attempt in ({}, {"rebuild": True}):  # attach to the cache, and build anew
        with pytest.raises(DataError, match=r"SYNA\.parquet") as err:
            load_or_build_features(demo_copy, cfg, workers=1, **attempt)
        assert "sha256" in str(err.value) and "\n" not in str(err.value)
    syna.write_bytes(original)
    again = load_or_build_features(demo_copy, cfg, workers=1)
    assert again.path == good.path
    np.testing.assert_array_equal(again.features, expected)
    meta = json.loads((again.path / "meta.json").read_text())
    assert meta["per_ticker"]["SYNA"]["sha256"] == meta["inputs"]["bars:SYNA"]
    assert meta["inputs"] == {
        "bars:SYNA": store_sha(demo_copy, "SYNA"),
        "bars:SYNB": store_sha(demo_copy, "SYNB"),
        "bars:SYNC": store_sha(demo_copy, "SYNC"),
        "macro:^VIX": store_sha(demo_copy, "^VIX", "macro"),
    }


def store_sha(root: Path, symbol: str, kind: str = "bars") -> str:
    from engine.data import store

    return file_sha256(store.series_path(root, symbol, kind))  # type: ignore[arg-type]


def test_a_file_replaced_after_hashing_is_refused_and_nothing_cached(
    demo_copy, monkeypatch
) -> None:
    from engine.data import store

    real = store.Dataset.verified_hashes

    def hash_then_swap(self, tickers, macro=()):
        hashes = real(self, tickers, macro)
        # The swap lands between the check and the workers' reads.
        (demo_copy / "SYNA.parquet").write_bytes((demo_copy / "SYNC.parquet").read_bytes())
        return hashes

    monkeypatch.setattr(store.Dataset, "verified_hashes", hash_then_swap)
    with pytest.raises(DataError, match=r"SYNA\.parquet: contents do not match the sha256"):
        load_or_build_features(demo_copy, {"warmup_bars": 100, "macro": []}, workers=1)
    cache = demo_copy / feature_cache.CACHE_DIRNAME
    assert not [p for p in cache.iterdir() if not p.name.endswith(".lock")]


@pytest.mark.parametrize(
    "damage", [b"{not json", b"\xff\xfe garbage", b"[1, 2]", b'{"tickers": 3}', b""]
)
def test_a_garbage_meta_json_is_a_stale_cache_that_is_rebuilt(demo_copy, damage) -> None:
    cfg = {"warmup_bars": 100, "macro": []}
    good = load_or_build_features(demo_copy, cfg, workers=1)
    (good.path / "meta.json").write_bytes(damage)
    with pytest.raises(DataError, match=r"meta\.json: .*delete") as err:
        open_features(good.path)  # what a worker attaching to the path sees: one line
    assert "\n" not in str(err.value)
    again = load_or_build_features(demo_copy, cfg, workers=1)
    assert again.path == good.path and again.meta["key"] == good.path.name
    np.testing.assert_array_equal(again.features, good.features)
