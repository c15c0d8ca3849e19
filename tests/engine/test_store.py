import json

import numpy as np
import pandas as pd
import pytest

from engine.data import store
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


def _two_tickers(root):
    manifest = store.open_out_folder(root, IDENTITY, "csv-import")
    for sym, scale in (("AAA", 1.0), ("BBB", 7.0)):
        frame = store.normalize_bars(_bars(n=20, tz="UTC") * scale, where="x")
        manifest.tickers[sym] = store.write_series(root, sym, frame)
    store.save_manifest(root, manifest)
    return manifest


def test_a_file_swapped_for_another_tickers_is_refused_by_name(tmp_path):
    _two_tickers(tmp_path)
    (tmp_path / "AAA.parquet").write_bytes((tmp_path / "BBB.parquet").read_bytes())
    ds = store.Dataset(tmp_path)
    with pytest.raises(DataError, match=r"AAA\.parquet: contents do not match the sha256") as err:
        ds.bars("AAA")
    assert "\n" not in str(err.value) and "rebuild" in str(err.value)
    pd.testing.assert_frame_equal(ds.bars("AAA", verify=False), ds.bars("BBB"))
    with pytest.raises(DataError, match=r"AAA\.parquet") as err:
        ds.verified_hashes(["AAA", "BBB"])
    assert "BBB.parquet" not in str(err.value) and "dataset check" in str(err.value)
    (tmp_path / "BBB.parquet").unlink()
    with pytest.raises(DataError, match=r"AAA\.parquet, BBB\.parquet \(missing\)"):
        ds.verified_hashes(["AAA", "BBB"])


def test_verified_hashes_are_the_hashes_of_the_files_read(tmp_path):
    manifest = _two_tickers(tmp_path)
    hashes = store.Dataset(tmp_path).verified_hashes(["BBB", "AAA"])
    assert hashes == {
        "bars:AAA": manifest.tickers["AAA"].sha256,
        "bars:BBB": manifest.tickers["BBB"].sha256,
    }
    frame, digest = store.load_series(tmp_path, "AAA")
    assert digest == hashes["bars:AAA"] and len(frame) == 20


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_garbage_or_truncated_parquet_is_a_one_line_error_naming_the_file(tmp_path, damage):
    _two_tickers(tmp_path)
    path = tmp_path / "AAA.parquet"
    data = path.read_bytes()
    path.write_bytes(
        {
            "garbage": b"not parquet at all\n" * 50,
            "truncated": data[: len(data) // 2],
            "empty": b"",
        }[damage]
    )
    with pytest.raises(DataError, match=r"AAA\.parquet: not a readable Parquet file") as err:
        store.read_series(tmp_path, "AAA")
    assert "\n" not in str(err.value)


def test_a_reader_thread_that_cannot_start_is_a_memory_error_not_a_damaged_file(
    tmp_path, monkeypatch
):
    import pyarrow as pa

    _two_tickers(tmp_path)

    def no_threads(*_args, **_kwargs):
        raise pa.ArrowException(
            "Unknown error: Failed to launch worker thread: Resource temporarily unavailable"
        )

    monkeypatch.setattr(pd, "read_parquet", no_threads)
    # A good file under a small `ulimit -v`: telling the user to rebuild it would be wrong.
    with pytest.raises(MemoryError, match=r"AAA\.parquet: pyarrow could not read it"):
        store.read_series(tmp_path, "AAA")
