"""engine.data.check: a clean demo passes, and each defect planted in a copy of it is reported."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.data import demo, store
from engine.data.check import CheckReport, Finding, check_dataset
from engine.errors import DataError

START, END = "2024-11-01", "2024-12-31"
TICKERS = ("SYNA", "SYNB")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("check") / "clean"
    demo.write_demo(out, tickers=TICKERS, start=START, end=END)
    return out


def corrupt(
    clean: Path,
    tmp_path: Path,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    symbol: str = "SYNA",
    kind: store.SeriesKind = "bars",
) -> Path:
    """A copy of ``clean`` with one series changed and its manifest entry updated (checksums match)."""
    out = tmp_path / "copy"
    shutil.copytree(clean, out)
    frame = change(store.read_series(out, symbol, kind).copy())
    manifest = store.load_manifest(out)
    entries = manifest.tickers if kind == "bars" else manifest.macro
    entries[symbol] = store.write_series(out, symbol, frame, kind)
    store.save_manifest(out, manifest)
    assert store.Dataset(out).verify_checksums() == []
    return out


def codes(report: CheckReport, symbol: str = "SYNA", kind: store.SeriesKind = "bars") -> set[str]:
    return report.get(symbol, kind).codes()


def finding(report: CheckReport, code: str, symbol: str = "SYNA", kind="bars") -> Finding:
    return next(f for f in report.get(symbol, kind).findings if f.code == code)


def test_clean_demo_is_ok(clean: Path) -> None:
    report = check_dataset(clean)
    assert report.ok
    assert report.all_findings() == []
    syna = report.get("SYNA")
    assert syna.counts["missing_regular"] == 0 and syna.counts["expected_regular"] > 250
    text = report.format_text()
    assert ": OK (0 errors" in text and "SYNA" in text and "^VIX (macro)" in text
    # Frozen and hashable (it is passed between threads and compared).
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.series = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        syna.counts["rows"] = 0  # type: ignore[index]
    assert hash(report) == hash(check_dataset(clean))


def test_duplicated_timestamps(clean: Path, tmp_path: Path) -> None:
    out = corrupt(clean, tmp_path, lambda b: pd.concat([b, b.iloc[[100, 200]]]).sort_index())
    report = check_dataset(out)
    assert not report.ok
    f = finding(report, "duplicate_timestamps")
    assert f.severity == "error" and f.count == 2 and len(f.examples) == 2
    assert codes(report) == {"duplicate_timestamps"}
    assert report.get("SYNB").ok


def test_unsorted_timestamps(clean: Path, tmp_path: Path) -> None:
    def swap(b: pd.DataFrame) -> pd.DataFrame:
        order = np.arange(len(b))
        order[[50, 51]] = [51, 50]
        return b.iloc[order]

    report = check_dataset(corrupt(clean, tmp_path, swap))
    assert codes(report) == {"unsorted_timestamps"}
    assert finding(report, "unsorted_timestamps").count == 1


def test_nan_and_inf(clean: Path, tmp_path: Path) -> None:
    def spoil(b: pd.DataFrame) -> pd.DataFrame:
        b.iloc[10, b.columns.get_loc("close")] = np.nan
        b.iloc[11, b.columns.get_loc("vwap")] = np.nan
        b.iloc[12, b.columns.get_loc("volume")] = np.inf
        return b

    report = check_dataset(corrupt(clean, tmp_path, spoil))
    nan = finding(report, "nan_values")
    assert nan.severity == "error" and nan.count == 2
    assert "close (1)" in nan.message and "vwap (1)" in nan.message
    assert finding(report, "inf_values").count == 1
    assert not report.ok


def test_ohlc_inconsistencies(clean: Path, tmp_path: Path) -> None:
    def spoil(b: pd.DataFrame) -> pd.DataFrame:
        b.iloc[5, b.columns.get_loc("low")] = b.iloc[5]["high"] + 1  # low > high
        b.iloc[6, b.columns.get_loc("close")] = b.iloc[6]["high"] * 1.01  # close above high
        b.iloc[7, b.columns.get_loc("open")] = b.iloc[7]["low"] * 0.99  # open below low
        return b

    report = check_dataset(corrupt(clean, tmp_path, spoil))
    f = finding(report, "ohlc_inconsistent")
    assert f.severity == "error" and f.count == 3
    assert not report.ok


def test_negative_volume_and_price(clean: Path, tmp_path: Path) -> None:
    def spoil(b: pd.DataFrame) -> pd.DataFrame:
        b.iloc[3, b.columns.get_loc("volume")] = -5
        b.iloc[4, [b.columns.get_loc(c) for c in ("open", "high", "low", "close", "vwap")]] = 0.0
        return b

    report = check_dataset(corrupt(clean, tmp_path, spoil))
    assert finding(report, "negative_volume").count == 1
    assert finding(report, "nonpositive_price").count == 1
    assert not report.ok


def _add_bars(b: pd.DataFrame, stamps: list[str]) -> pd.DataFrame:
    extra = b.iloc[: len(stamps)].copy()
    extra.index = pd.DatetimeIndex(stamps).tz_localize("UTC").as_unit("us").rename("timestamp")
    return pd.concat([b, extra]).sort_index()


def test_bars_on_holidays_weekends_and_at_night(clean: Path, tmp_path: Path) -> None:
    stamps = [
        "2024-11-28 15:00",  # Thanksgiving
        "2024-11-30 15:00",  # Saturday
        "2024-12-02 07:00",  # 02:00 New York on a Monday
        "2024-11-29 22:00",  # 17:00 New York on an early-close day
    ]
    report = check_dataset(corrupt(clean, tmp_path, lambda b: _add_bars(b, stamps)))
    off_day = finding(report, "non_trading_day")
    assert off_day.count == 2 and off_day.examples == ("2024-11-28T15:00Z", "2024-11-30T15:00Z")
    night = finding(report, "outside_session_hours")
    assert night.count == 2 and night.severity == "error"
    assert codes(report) == {"non_trading_day", "outside_session_hours"}


def test_bars_not_on_the_hour(clean: Path, tmp_path: Path) -> None:
    def shift(b: pd.DataFrame) -> pd.DataFrame:
        b.index = b.index + pd.Timedelta(minutes=30)  # Yahoo-style :30 bars
        return b

    report = check_dataset(corrupt(clean, tmp_path, shift))
    f = finding(report, "misaligned")
    assert f.count == report.get("SYNA").rows
    assert f.examples[0].endswith(":30Z")
    # Nothing at :00 where a bar is expected: every expected regular bar is missing too.
    assert finding(report, "missing_regular").severity == "error"


def test_missing_regular_bars_and_tolerance(clean: Path, tmp_path: Path) -> None:
    drop = pd.DatetimeIndex(["2024-12-03 15:00", "2024-12-03 16:00", "2024-12-10 20:00"], tz="UTC")
    out = corrupt(clean, tmp_path, lambda b: b.drop(drop))
    report = check_dataset(out)
    f = finding(report, "missing_regular")
    assert f.severity == "error" and f.count == 3
    assert f.examples == ("2024-12-03T15:00Z", "2024-12-03T16:00Z", "2024-12-10T20:00Z")
    assert report.get("SYNA").counts["missing_regular"] == 3
    assert "FAILED" in report.format_text() and "missing_regular" in report.format_text()
    # Within the allowed share: a warning, and the dataset passes.
    lenient = check_dataset(out, max_missing_regular_pct=5.0)
    assert finding(lenient, "missing_regular").severity == "warning"
    assert lenient.ok
    with pytest.raises(DataError, match="percentage"):
        check_dataset(out, max_missing_regular_pct=150)


def test_missing_extended_bars_are_info(clean: Path, tmp_path: Path) -> None:
    # 04:00-07:00 New York on two days (EST: 09:00-12:00 UTC): thin hours with no trades.
    drop = pd.DatetimeIndex(
        [f"2024-12-{d} {h}:00" for d in ("04", "05") for h in (9, 10, 11, 12)], tz="UTC"
    )
    report = check_dataset(corrupt(clean, tmp_path, lambda b: b.drop(drop)))
    f = finding(report, "missing_extended")
    assert f.severity == "info" and f.count == 8
    assert report.ok
    # A regular-only check ignores extended hours, and says they are there.
    regular_only = check_dataset(clean, include_extended=False)
    assert regular_only.ok
    assert finding(regular_only, "extended_bars_present").severity == "info"
    assert "expected_extended" not in regular_only.get("SYNA").counts


def test_span_edges_are_not_missing(clean: Path, tmp_path: Path) -> None:
    # A series that starts later (a listing) and ends mid-day is not missing the hours outside.
    report = check_dataset(
        corrupt(clean, tmp_path, lambda b: b.loc["2024-11-20 15:00":"2024-12-20 17:00"])
    )
    assert report.ok and report.all_findings() == []


def test_tampered_file_fails_its_checksum(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(clean, out)
    frame = store.read_series(out, "SYNB")
    frame.iloc[0, 0] += 0.01
    frame.to_parquet(out / "SYNB.parquet")  # edited behind the manifest's back
    report = check_dataset(out)
    f = finding(report, "checksum_mismatch", "SYNB")
    assert f.severity == "error" and f.examples == ("SYNB.parquet",)
    assert not report.ok and report.get("SYNA").ok
    assert "SYNB" in " ".join(store.Dataset(out).verify_checksums())
    # A file that is not Parquet any more is reported, not raised.
    (out / "SYNA.parquet").write_bytes(b"not parquet")
    report = check_dataset(out)
    assert codes(report) == {"checksum_mismatch", "unreadable"}


def test_missing_file_and_manifest(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(clean, out)
    (out / "macro" / "_TNX.parquet").unlink()
    report = check_dataset(out)
    assert codes(report, "^TNX", "macro") == {"file_missing"}
    assert not report.ok
    (out / "manifest.json").unlink()
    report = check_dataset(out)
    assert not report.ok and report.series == ()
    assert report.findings[0].code == "manifest_unreadable"
    assert "manifest_unreadable" in report.format_text()


def test_unlisted_files_warn(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(clean, out)
    shutil.copy(out / "SYNA.parquet", out / "OLD.parquet")
    report = check_dataset(out)
    assert report.ok
    assert report.findings[0].code == "unlisted_files"
    assert report.findings[0].examples == ("OLD.parquet",)


def test_macro_defects(clean: Path, tmp_path: Path) -> None:
    def weekend_and_nan(x: pd.DataFrame) -> pd.DataFrame:
        x.iloc[3, x.columns.get_loc("close")] = np.nan
        # Friday 2024-11-15 relabelled as Saturday the 16th (still sorted).
        saturday = pd.Timestamp("2024-11-16", tz="UTC").as_unit("us")
        x.index = x.index.where(np.arange(len(x)) != 10, saturday)
        return x

    report = check_dataset(corrupt(clean, tmp_path, weekend_and_nan, "^VIX", "macro"))
    vix = report.get("^VIX", "macro")
    assert {f.code: f.severity for f in vix.findings} == {
        "nan_values": "warning",
        "weekend_label": "warning",
    }
    assert finding(report, "weekend_label", "^VIX", "macro").examples == ("2024-11-16",)
    assert report.ok


def test_macro_duplicates_and_bad_labels(clean: Path, tmp_path: Path) -> None:
    def spoil(x: pd.DataFrame) -> pd.DataFrame:
        x = pd.concat([x, x.iloc[[5]]]).sort_index()
        x.index = x.index.where(np.arange(len(x)) != 20, x.index[20] + pd.Timedelta(hours=5))
        return x

    report = check_dataset(corrupt(clean, tmp_path, spoil, "SPY", "macro"))
    assert codes(report, "SPY", "macro") == {"duplicate_timestamps", "not_midnight"}
    assert not report.ok


def test_macro_all_nan_is_an_error(clean: Path, tmp_path: Path) -> None:
    def blank(x: pd.DataFrame) -> pd.DataFrame:
        x["close"] = np.nan
        return x

    report = check_dataset(corrupt(clean, tmp_path, blank, "DX-Y.NYB", "macro"))
    assert finding(report, "all_nan", "DX-Y.NYB", "macro").severity == "error"
    assert not report.ok


def test_missing_column(clean: Path, tmp_path: Path) -> None:
    report = check_dataset(corrupt(clean, tmp_path, lambda b: b.drop(columns=["low"])))
    assert codes(report) == {"missing_columns"}
    assert not report.ok


def _regular_rows(b: pd.DataFrame) -> np.ndarray:
    from engine.data import calendar

    return np.flatnonzero(calendar.classify_bars(b.index) == calendar.REGULAR)


def _set_prices(b: pd.DataFrame, row: int, value: float) -> None:
    """Every price of one bar set to ``value``: OHLC stays consistent (low <= open, close <= high)."""
    cols = [b.columns.get_loc(c) for c in ("open", "high", "low", "close", "vwap")]
    b.iloc[row, cols] = value


def test_an_absurd_bar_with_consistent_ohlc_fails_the_check(clean: Path, tmp_path: Path) -> None:
    def spoil(b: pd.DataFrame) -> pd.DataFrame:
        _set_prices(b, int(_regular_rows(b)[150]), 1e308)
        return b

    report = check_dataset(corrupt(clean, tmp_path, spoil))
    assert not report.ok
    assert codes(report) == {"price_out_of_range", "price_spike"}
    out_of_range = finding(report, "price_out_of_range")
    assert out_of_range.severity == "error" and out_of_range.count == 1
    spike = finding(report, "price_spike")
    assert spike.severity == "error" and spike.count == 1
    assert spike.examples == out_of_range.examples  # the same bar, not its neighbour
    assert report.get("SYNB").ok


def test_a_spike_that_reverts_is_an_error_and_a_jump_that_stays_a_warning(
    clean: Path, tmp_path: Path
) -> None:
    def spike(b: pd.DataFrame) -> pd.DataFrame:
        row = int(_regular_rows(b)[200])
        _set_prices(b, row, 3.0 * float(b["close"].iloc[row]))  # within the sane range
        return b

    report = check_dataset(corrupt(clean, tmp_path, spike))
    assert codes(report) == {"price_spike"} and finding(report, "price_spike").count == 1
    assert not report.ok

    def split(b: pd.DataFrame) -> pd.DataFrame:
        at = int(_regular_rows(b)[200])  # a 1:3 split the source did not adjust
        prices = ["open", "high", "low", "close", "vwap"]
        b.iloc[at:, [b.columns.get_loc(c) for c in prices]] /= 3.0
        return b

    report = check_dataset(corrupt(clean, tmp_path / "split", split))
    assert codes(report) == {"price_jump"}
    jump = finding(report, "price_jump")
    assert jump.severity == "warning" and jump.count == 1
    assert report.ok


def test_a_bar_dated_year_3000_is_a_finding_not_a_crash(clean: Path, tmp_path: Path) -> None:
    def move(b: pd.DataFrame) -> pd.DataFrame:
        stamps = b.index.tolist()
        stamps[-1] = pd.Timestamp("3000-01-02 15:00", tz="UTC")
        return b.set_axis(pd.DatetimeIndex(stamps, name="timestamp").as_unit("us"))

    report = check_dataset(corrupt(clean, tmp_path, move))
    f = finding(report, "timestamp_out_of_range")
    assert f.severity == "error" and f.count == 1 and f.examples == ("3000-01-02T15:00Z",)
    assert not report.ok
    assert "timestamp_out_of_range" in report.format_text()

    def macro_move(m: pd.DataFrame) -> pd.DataFrame:
        stamps = m.index.tolist()
        stamps[0] = pd.Timestamp("1800-01-01", tz="UTC")
        return m.set_axis(pd.DatetimeIndex(stamps, name="timestamp").as_unit("us")).sort_index()

    report = check_dataset(corrupt(clean, tmp_path / "m", macro_move, "^VIX", "macro"))
    assert finding(report, "timestamp_out_of_range", "^VIX", "macro").count == 1
