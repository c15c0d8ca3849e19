import pandas as pd
import pytest

from engine.cli import main
from engine.data import csvio, store
from engine.errors import DataError

CSV_NY_NAIVE = """Date,Open,High,Low,Close,Adj Close,Volume
2024-03-08 15:00:00,10,11,9,10.5,10.5,100
2024-03-11 09:00:00,10.5,12,10,11,11,200
"""


def test_naive_timestamps_need_an_explicit_zone(tmp_path):
    src = tmp_path / "AAPL.csv"
    src.write_text(CSV_NY_NAIVE)
    with pytest.raises(DataError, match=r"AAPL\.csv: timestamps have no time zone; pass --tz"):
        csvio.read_bars_csv(src)


def test_naive_new_york_times_cross_dst_into_the_right_utc_hours(tmp_path):
    src = tmp_path / "AAPL_1h.csv"
    src.write_text(CSV_NY_NAIVE)
    (item,) = csvio.read_bars_csv(src, tz="America/New_York")
    assert item.symbol == "AAPL"
    # EST (UTC-5) before the 2024-03-10 switch, EDT (UTC-4) after it
    assert list(item.frame.index.strftime("%Y-%m-%d %H:%M")) == [
        "2024-03-08 20:00",
        "2024-03-11 13:00",
    ]


def test_mixed_offsets_and_a_symbol_column_split_into_tickers(tmp_path):
    src = tmp_path / "bars.csv"
    src.write_text(
        "symbol,timestamp,o,h,l,c,v,vw,n\n"
        "MSFT,2024-03-08T15:00:00-05:00,1,2,0.5,1.5,10,1.2,3\n"
        "AAPL,2024-03-11T09:00:00-04:00,1,2,0.5,1.5,10,1.2,3\n"
        "MSFT,2024-03-11T09:00:00-04:00,1,2,0.5,1.5,10,1.2,3\n"
    )
    items = {i.symbol: i.frame for i in csvio.read_bars_csv(src)}
    assert sorted(items) == ["AAPL", "MSFT"]
    assert list(items["MSFT"].columns) == [
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trade_count",
    ]
    assert items["MSFT"].index[0] == pd.Timestamp("2024-03-08 20:00", tz="UTC")


def test_export_then_import_round_trips_exactly(tmp_path):
    src = tmp_path / "AAPL.csv"
    src.write_text(CSV_NY_NAIVE)
    csvio.import_csv([src], tmp_path / "ds", tz="America/New_York")
    csvio.export_csv(tmp_path / "ds", tmp_path / "exported")
    csvio.import_csv([tmp_path / "exported" / "AAPL.csv"], tmp_path / "ds2")
    a = store.Dataset(tmp_path / "ds").bars("AAPL")
    b = store.Dataset(tmp_path / "ds2").bars("AAPL")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Date,Open,High,Low,Close\n2024-01-02T14:00Z,1,2,0,1\n", r"missing column\(s\) volume"),
        (
            "Date,Open,High,Low,Close,Volume\n2024-01-02T14:00Z,1,2,zero,1,5\n",
            r"column 'low' has a non-numeric value 'zero'",
        ),
        ("Open,High,Low,Close,Volume\n1,2,0,1,5\n", r"no time column"),
        (
            "Date,Open,High,Low,Close,Volume\nyesterday,1,2,0,1,5\n",
            r"column 'timestamp' has an unusable value",
        ),
        ("", r"not a readable CSV"),
    ],
)
def test_bad_csv_is_one_line_naming_file_and_column_and_nothing_is_written(
    tmp_path, capsys, text, expected
):
    good = tmp_path / "GOOD.csv"
    good.write_text(CSV_NY_NAIVE)
    out = tmp_path / "ds"
    assert (
        main(["dataset", "import", str(good), "--out", str(out), "--tz", "America/New_York"]) == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "BAD.csv"
    bad.write_text(text)
    capsys.readouterr()
    code = main(["dataset", "import", str(good), str(bad), "--out", str(out), "--tz", "UTC"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ploutos: error: ") and err.count("\n") == 1
    assert "BAD.csv" in err
    assert pd.Series([err]).str.contains(expected, regex=True).all(), err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
