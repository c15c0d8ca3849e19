"""engine.data.demo: the synthetic dataset is in the store's format, plausible, clean and deterministic."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.data import calendar, demo, store
from engine.data.check import check_dataset
from engine.errors import ConfigError, DataError

# Ten weeks around the autumn DST switch, Thanksgiving (holiday + early close), Christmas Eve
# (early close) and Christmas (holiday): every calendar case in a short range.
START, END = "2024-10-21", "2024-12-31"
TICKERS = ("SYNA", "SYNB", "SYNC")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "ds"
    demo.write_demo(out, tickers=TICKERS, start=START, end=END)
    return out


def test_manifest_and_layout(demo_dir: Path) -> None:
    m = store.load_manifest(demo_dir)
    assert (m.source, m.macro_source, m.macro_interval, m.timeframe) == (
        "synthetic-demo",
        "synthetic-demo",
        "1d",
        "1h",
    )
    assert m.feed is None and m.adjustment is None
    assert list(m.tickers) == list(TICKERS)
    assert list(m.macro) == ["^VIX", "^TNX", "DX-Y.NYB", "SPY"]
    assert m.params["seed"] == 7 and m.params["start"] == START and m.params["end"] == END
    assert m.params["tickers"] == list(TICKERS)
    assert (demo_dir / "SYNA.parquet").is_file()
    assert (demo_dir / "macro" / "_VIX.parquet").is_file()
    assert store.Dataset(demo_dir).verify_checksums() == []
    # Nothing else in the folder: no temporary files left behind.
    names = sorted(p.name for p in demo_dir.rglob("*") if p.is_file())
    assert names == sorted(
        ["manifest.json", *(f"{t}.parquet" for t in TICKERS)]
        + ["_VIX.parquet", "_TNX.parquet", "DX-Y.NYB.parquet", "SPY.parquet"]
    )


def test_bars_schema_and_calendar(demo_dir: Path) -> None:
    ds = store.Dataset(demo_dir)
    expected = calendar.expected_bars(START, END)
    for name in TICKERS:
        bars = ds.bars(name)
        assert list(bars.columns) == [
            "open",
            "high",
            "low",
            "close",
            "volume",
            "vwap",
            "trade_count",
        ]
        assert (bars.dtypes == "float64").all()
        assert str(bars.index.dtype) == "datetime64[us, UTC]"
        assert bars.index.name == "timestamp"
        assert bars.index.equals(expected)


def test_bars_are_consistent(demo_dir: Path) -> None:
    ds = store.Dataset(demo_dir)
    for name in TICKERS:
        b = ds.bars(name)
        assert np.isfinite(b.to_numpy()).all()
        assert (b.low <= b.open).all() and (b.open <= b.high).all()
        assert (b.low <= b.close).all() and (b.close <= b.high).all()
        assert (b.low <= b.vwap).all() and (b.vwap <= b.high).all()
        assert (b.low > 0).all()
        assert (b.volume >= 1).all() and (b.trade_count >= 1).all()
        assert (b.volume == b.volume.round()).all()


def test_extended_hours_are_thin_and_the_day_is_u_shaped(demo_dir: Path) -> None:
    b = store.Dataset(demo_dir).bars("SYNA")
    kind = calendar.classify_bars(b.index)
    regular = b.volume[kind == calendar.REGULAR].mean()
    extended = b.volume[kind == calendar.EXTENDED].mean()
    assert extended < 0.2 * regular
    hour = pd.Index(b.index.tz_convert("America/New_York").hour)
    by_hour = b.volume.groupby(hour).mean()
    assert by_hour[15] > by_hour[12] and by_hour[9] > by_hour[12]


def test_macro_series(demo_dir: Path) -> None:
    ds = store.Dataset(demo_dir)
    days = calendar.sessions(START, END).index.tz_localize("UTC").as_unit("us")
    for sym in ds.macro_symbols:
        x = ds.macro(sym)
        assert list(x.columns) == ["open", "high", "low", "close", "volume"]
        assert x.index.equals(days), sym  # UTC midnight of each trading date
        assert np.isfinite(x.to_numpy()).all()
        assert (x.low <= x[["open", "close"]].min(axis=1)).all()
        assert (x.high >= x[["open", "close"]].max(axis=1)).all()
    assert ds.macro("^VIX").close.between(9, 90).all()
    assert ds.macro("^TNX").close.between(0.3, 8).all()
    assert (ds.macro("SPY").volume > 0).all()
    assert (ds.macro("^VIX").volume == 0).all()


def test_demo_passes_the_check(demo_dir: Path) -> None:
    report = check_dataset(demo_dir)
    assert report.ok, report.format_text()
    assert report.count("error") == report.count("warning") == report.count("info") == 0


def test_same_seed_same_bytes(demo_dir: Path, tmp_path: Path) -> None:
    again = demo.write_demo(tmp_path / "again", tickers=TICKERS, start=START, end=END)
    first = store.load_manifest(demo_dir)
    assert {k: e.sha256 for k, e in again.tickers.items()} == {
        k: e.sha256 for k, e in first.tickers.items()
    }
    assert {k: e.sha256 for k, e in again.macro.items()} == {
        k: e.sha256 for k, e in first.macro.items()
    }
    for rel in ("SYNB.parquet", "macro/SPY.parquet"):
        assert (tmp_path / "again" / rel).read_bytes() == (demo_dir / rel).read_bytes()


def test_other_seed_other_data(demo_dir: Path, tmp_path: Path) -> None:
    other = demo.write_demo(tmp_path / "o", tickers=("SYNA",), start=START, end=END, seed=8)
    assert other.tickers["SYNA"].sha256 != store.load_manifest(demo_dir).tickers["SYNA"].sha256


def test_a_ticker_does_not_depend_on_the_others(demo_dir: Path) -> None:
    bars, daily = demo.generate_demo(tickers=("SYNB",), start=START, end=END, macro=("^VIX",))
    pd.testing.assert_frame_equal(bars["SYNB"], store.Dataset(demo_dir).bars("SYNB"))
    pd.testing.assert_frame_equal(daily["^VIX"], store.Dataset(demo_dir).macro("^VIX"))


def test_rewrite_same_demo_in_place(tmp_path: Path) -> None:
    out = tmp_path / "d"
    a = demo.write_demo(out, tickers=("SYNA",), start="2024-12-02", end="2024-12-06", macro=())
    b = demo.write_demo(out, tickers=("SYNA",), start="2024-12-02", end="2024-12-06", macro=())
    assert a.tickers["SYNA"].sha256 == b.tickers["SYNA"].sha256
    assert b.macro == {}


def test_refuses_other_folders(tmp_path: Path) -> None:
    out = tmp_path / "d"
    demo.write_demo(out, tickers=("SYNA",), start="2024-12-02", end="2024-12-06", macro=())
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(DataError, match="seed"):
        demo.write_demo(out, tickers=("SYNA",), start="2024-12-02", end="2024-12-06", seed=1)
    assert sorted(p.name for p in out.rglob("*")) == before

    foreign = tmp_path / "alpaca"
    store.save_manifest(foreign, store.Manifest(source="alpaca", feed="iex", adjustment="all"))
    with pytest.raises(DataError, match="different dataset"):
        demo.write_demo(foreign, start="2024-12-02", end="2024-12-06")

    cluttered = tmp_path / "cluttered"
    cluttered.mkdir()
    (cluttered / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        demo.write_demo(cluttered, start="2024-12-02", end="2024-12-06")
    assert [p.name for p in cluttered.iterdir()] == ["notes.txt"]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no NYSE trading day"):
        demo.write_demo(tmp_path / "x", start="2024-12-25", end="2024-12-25")
    with pytest.raises(DataError, match="end is before the start"):
        demo.write_demo(tmp_path / "y", start="2024-12-31", end="2024-12-01")
    with pytest.raises(DataError, match="no tickers"):
        demo.write_demo(tmp_path / "z", tickers=())
    with pytest.raises(DataError, match="not a date"):
        demo.write_demo(tmp_path / "w", start="someday")
    with pytest.raises(ConfigError, match="seed"):
        demo.write_demo(tmp_path / "v", seed=-1)
    assert not any(tmp_path.iterdir())  # nothing was created for refused arguments


def test_interrupted_write_leaves_complete_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store.write_series
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> store.SeriesEntry:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third file
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "write_series", flaky)
    out = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        demo.write_demo(out, start="2024-12-02", end="2024-12-06")
    m = store.load_manifest(out)
    assert list(m.tickers) == ["SYNA", "SYNB"]
    assert store.Dataset(out).verify_checksums() == []
    assert sorted(p.name for p in out.iterdir()) == [
        "SYNA.parquet",
        "SYNB.parquet",
        "manifest.json",
    ]
    # Running it again completes the same demo.
    monkeypatch.setattr(store, "write_series", real)
    m = demo.write_demo(out, start="2024-12-02", end="2024-12-06")
    assert len(m.tickers) == 5 and len(m.macro) == 4


def test_default_demo_is_quick_and_plausible(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    m = demo.write_demo(tmp_path / "full")
    elapsed = time.perf_counter() - t0
    assert elapsed < 15.0, f"default demo took {elapsed:.1f} s"
    assert sum(e.rows for e in m.tickers.values()) > 5 * 28_000
    ds = store.Dataset(tmp_path / "full")
    closes = pd.DataFrame({t: ds.bars(t).close for t in ds.tickers})
    ny_day = closes.index.tz_convert("America/New_York").normalize()
    daily = np.log(closes.groupby(ny_day).last()).diff().dropna()
    vol = daily.std() * np.sqrt(252)
    assert vol.between(0.10, 0.60).all(), vol
    corr = daily.corr().to_numpy()[np.triu_indices(len(ds.tickers), 1)]
    assert (corr > 0.1).all() and (corr < 0.9).all()
    # Fat tails (regimes, GARCH, Student-t noise).
    assert (daily.kurt() > 0.5).all()
    # The VIX-like series follows realised market volatility.
    spy = np.log(ds.macro("SPY").close).diff()
    realised = spy.rolling(21).std() * np.sqrt(252) * 100
    both = pd.concat([realised, ds.macro("^VIX").close], axis=1).dropna()
    assert both.corr().iloc[0, 1] > 0.5
    assert check_dataset(tmp_path / "full").ok
