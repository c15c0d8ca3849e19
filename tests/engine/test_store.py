import json

import numpy as np
import pandas as pd
import pytest

from engine import store
from engine.errors import DataError


def _bars(n=5, start="2024-01-02 14:00", unit="s", tz=None):
    idx = pd.date_range(start, periods=n, freq="h", unit=unit, tz=tz)
    return pd.DataFrame({c: np.arange(1.0, n + 1) for c in store.BAR_COLUMNS}, index=idx)


IDENTITY = {"source": "csv-import", "timeframe": "1h", "feed": None, "adjustment": None}


def test_normalize_makes_any_resolution_and_zone_utc_microseconds():
    for unit, tz in [("s", None), ("ns", "America/New_York"), ("ms", "Asia/Tokyo")]:
        out = store.normalize_bars(_bars(unit=unit, tz=tz), where="x")
        assert str(out.index.dtype) == "datetime64[us, UTC]"
        assert out.index.name == "timestamp"
        assert all(dt == np.float64 for dt in out.dtypes)


def test_normalize_names_the_missing_column_and_the_bad_value():
    frame = _bars().drop(columns=["volume"])
    with pytest.raises(DataError, match=r"f\.csv: missing column\(s\) volume"):
        store.normalize_bars(frame, where="f.csv")
    frame = _bars().astype(object)
    frame.iloc[2, 3] = "n/a"
    with pytest.raises(DataError, match=r"f\.csv: column 'close' has a non-numeric value 'n/a'"):
        store.normalize_bars(frame, where="f.csv")


def test_round_trip_keeps_the_tz_aware_microsecond_index_exactly(tmp_path):
    frame = store.normalize_bars(_bars(tz="UTC"), where="x")
    manifest = store.open_out_folder(tmp_path, IDENTITY, "csv-import")
    manifest.tickers["AAPL"] = store.write_series(tmp_path, "AAPL", frame)
    store.save_manifest(tmp_path, manifest)
    back = store.Dataset(tmp_path).bars("AAPL")
    pd.testing.assert_frame_equal(back, frame)
    assert store.Dataset(tmp_path).verify_checksums() == []


def test_out_folder_holding_another_dataset_is_refused_and_left_untouched(tmp_path):
    manifest = store.open_out_folder(tmp_path, IDENTITY, "csv-import")
    manifest.tickers["AAPL"] = store.write_series(
        tmp_path, "AAPL", store.normalize_bars(_bars(), where="x")
    )
    store.save_manifest(tmp_path, manifest)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    other = dict(IDENTITY, source="alpaca", feed="iex")
    with pytest.raises(DataError, match="holds a different dataset"):
        store.open_out_folder(tmp_path, other, "alpaca")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_non_empty_folder_without_manifest_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and has no manifest.json"):
        store.open_out_folder(tmp_path, IDENTITY, "csv-import")


def test_a_damaged_manifest_is_one_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"source": "x", "tickerz": {}}))
    with pytest.raises(DataError, match=r"manifest\.json: key 'tickerz'"):
        store.load_manifest(tmp_path)


def test_symbols_get_safe_file_names():
    assert store.safe_name("^VIX") == "_VIX"
    assert store.safe_name("DX-Y.NYB") == "DX-Y.NYB"
    assert store.parse_symbols(" aapl, MSFT,aapl ") == ["AAPL", "MSFT"]
    with pytest.raises(DataError):
        store.safe_name("..")
