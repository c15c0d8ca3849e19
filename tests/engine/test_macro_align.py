"""align_to_ticker: any zones and resolutions on both sides, and no look-ahead.

The property tests compute the expected value of every bar independently (plain ``datetime`` and
``zoneinfo``, a brute-force scan over the macro days) and compare it with the vectorised result.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data.macro import AlignedMacro, align_to_ticker
from engine.errors import DataError
from engine.timeutil import to_utc_us

NY = ZoneInfo("America/New_York")
UTC_TZ = timezone.utc
HOUR = timedelta(hours=1)

ZONES = [
    "UTC",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Asia/Tokyo",
    "Australia/Sydney",
]
# Zones without DST: naive wall-clock stamps in them are never ambiguous, so "no exception" holds.
NAIVE_SAFE_ZONES = ["UTC", "Asia/Tokyo"]
UNITS = ["s", "ms", "us", "ns"]
# US DST transitions (spring forward / fall back) the generated ranges straddle.
DST_ANCHORS = [
    datetime(2021, 3, 14, 7, tzinfo=UTC_TZ),
    datetime(2021, 11, 7, 6, tzinfo=UTC_TZ),
    datetime(2023, 3, 12, 7, tzinfo=UTC_TZ),
    datetime(2023, 11, 5, 6, tzinfo=UTC_TZ),
    datetime(2024, 3, 10, 7, tzinfo=UTC_TZ),
    datetime(2024, 11, 3, 6, tzinfo=UTC_TZ),
]

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- independent reference helpers


def visible_from(day: date) -> datetime:
    """Reference rule: day D is visible from D+1 00:00 New York (zoneinfo does the DST)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=NY).astimezone(UTC_TZ)


def ny_date(instant: datetime) -> date:
    return instant.astimezone(NY).date()


def latest_values(rows: list[tuple[date, float]]) -> dict[date, float]:
    """Last non-NaN value per day, in input order (the documented duplicate rule)."""
    out: dict[date, float] = {}
    for day, value in rows:
        if not math.isnan(value):
            out[day] = value
    return out


def reference_daily(
    ends: list[datetime], by_day: dict[date, float]
) -> list[tuple[float, date | None]]:
    """For each bar end: the value of the latest day visible by then, and that day."""
    result = []
    for end in ends:
        seen = [d for d in by_day if visible_from(d) <= end]
        if seen:
            day = max(seen)
            result.append((by_day[day], day))
        else:
            result.append((math.nan, None))
    return result


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def as_index(
    instants: list[datetime], zone: str | None, unit: str, naive_zone: str
) -> pd.DatetimeIndex:
    """UTC instants rendered in ``zone`` (None: naive wall clock of ``naive_zone``) at ``unit``."""
    idx = pd.DatetimeIndex(pd.to_datetime(instants, utc=True))
    idx = idx.tz_convert(naive_zone).tz_localize(None) if zone is None else idx.tz_convert(zone)
    return idx.as_unit(unit)


# ---------------------------------------------------------------- strategies


@st.composite
def ticker_case(draw):
    anchor = draw(st.sampled_from(DST_ANCHORS))
    start = anchor + timedelta(
        hours=draw(st.integers(-96, 48)), minutes=draw(st.sampled_from([0, 30]))
    )
    gaps = draw(st.lists(st.integers(1, 7), min_size=0, max_size=120))
    starts = [start]
    for gap in gaps:
        starts.append(starts[-1] + gap * HOUR)
    if draw(st.booleans()):
        starts = draw(st.permutations(starts))
    zone = draw(st.sampled_from([*ZONES, None]))
    naive_tz = draw(st.sampled_from(NAIVE_SAFE_ZONES))
    unit = draw(st.sampled_from(UNITS))
    return starts, as_index(starts, zone, unit, naive_tz), naive_tz


@st.composite
def daily_macro_case(draw, around: datetime):
    first = around.date() + timedelta(days=draw(st.integers(-10, 4)))
    offsets = draw(st.lists(st.integers(0, 16), min_size=0, max_size=14))
    values = st.one_of(st.integers(-1000, 1000).map(float), st.just(math.nan))
    rows = [(first + timedelta(days=o), draw(values)) for o in offsets]  # duplicates allowed
    if draw(st.booleans()):
        rows = draw(st.permutations(rows))
    zone = draw(st.sampled_from([*ZONES, None]))
    clock = time(draw(st.sampled_from([0, 0, 9, 16, 23])))
    unit = draw(st.sampled_from(UNITS))
    stamps = [datetime.combine(day, clock) for day, _ in rows]
    index = pd.DatetimeIndex(stamps)
    if zone is not None:
        # Like yfinance: the label is a wall-clock time of that day in the exchange's zone.
        index = index.tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
    frame = pd.DataFrame({"close": [v for _, v in rows]}, index=index.as_unit(unit))
    return rows, frame


# ---------------------------------------------------------------- properties


@PROPERTY
@given(data=st.data())
def test_any_zones_and_resolutions_align_without_look_ahead(data):
    starts, ticker_index, naive_tz = data.draw(ticker_case())
    rows, macro = data.draw(daily_macro_case(min(starts)))
    bars = pd.DataFrame({"close": np.arange(len(ticker_index), dtype=float)}, index=ticker_index)

    result = align_to_ticker(bars, macro, naive_tz=naive_tz)

    # (a) shape, index and dtypes
    assert isinstance(result, AlignedMacro)
    expected_index = to_utc_us(ticker_index, naive_tz=naive_tz)
    assert str(result.frame.index.dtype) == "datetime64[us, UTC]"
    assert result.frame.index.equals(expected_index)
    assert list(result.frame.columns) == ["close"]
    assert result.frame["close"].dtype == np.float64

    # (b) every row equals the brute-force reference
    ends = [s + HOUR for s in starts]
    by_day = latest_values(rows)
    expected = reference_daily(ends, by_day)
    got = result.frame["close"].to_list()
    for i, ((value, day), end) in enumerate(zip(expected, ends, strict=True)):
        assert same(got[i], value), (starts[i], got[i], value)
        if day is not None:
            # the day used is strictly before the New York date of the decision (bar end)...
            assert day < ny_date(end)
            # ...and before the bar's own New York date whenever the bar ends before midnight
            if ny_date(starts[i]) == ny_date(end - timedelta(microseconds=1)) and (
                end.astimezone(NY).time() != time(0)
            ):
                assert day < ny_date(starts[i])

    # (c) bars before the first visible value: counted, NaN, never back-filled
    if by_day:
        first_vis = min(visible_from(d) for d in by_day)
        assert result.first_visible_utc == pd.Timestamp(first_vis)
        before = [i for i, end in enumerate(ends) if end < first_vis]
        assert result.bars_before_first == len(before)
        assert all(math.isnan(got[i]) for i in before)
        # carry-forward: after the last visibility every bar holds the last day's value
        last_day = max(by_day)
        for i, end in enumerate(ends):
            if end >= visible_from(last_day):
                assert got[i] == by_day[last_day]
    else:
        assert result.first_visible_utc is None
        assert result.bars_before_first == len(ends)
        assert all(math.isnan(v) for v in got)


@PROPERTY
@given(data=st.data())
def test_changing_days_on_or_after_a_bars_new_york_date_never_changes_it(data):
    starts, ticker_index, naive_tz = data.draw(ticker_case())
    rows, macro = data.draw(daily_macro_case(min(starts)))
    # A cutoff on the New York date of some bar's decision, so bars sit on both sides of it.
    pivot = data.draw(st.sampled_from(starts)) + HOUR
    cutoff = ny_date(pivot) + timedelta(days=data.draw(st.sampled_from([0, 0, 1, -1])))

    days = [day for day, _ in rows]
    changed = macro.copy()
    bump = np.array([1e6 + i if d >= cutoff else 0.0 for i, d in enumerate(days)])
    changed["close"] = np.where(
        bump > 0, np.nan_to_num(macro["close"].to_numpy()) + bump, macro["close"]
    )

    before = align_to_ticker(ticker_index, macro, naive_tz=naive_tz).frame["close"].to_list()
    after = align_to_ticker(ticker_index, changed, naive_tz=naive_tz).frame["close"].to_list()
    for i, start in enumerate(starts):
        end = start + HOUR
        if ny_date(end) <= cutoff:
            assert same(before[i], after[i]), (start, cutoff)
        # The brief's wording: a bar lying within New York day S never sees days >= S.
        if (
            ny_date(start) <= cutoff
            and ny_date(start) == ny_date(end)
            and end.astimezone(NY).time() != time(0)
        ):
            assert same(before[i], after[i]), (start, cutoff)


@PROPERTY
@given(data=st.data())
def test_hourly_macro_is_visible_at_its_bar_end(data):
    starts, ticker_index, naive_tz = data.draw(ticker_case())
    origin = min(starts) + timedelta(hours=data.draw(st.integers(-30, 30)))
    offsets = data.draw(st.lists(st.integers(0, 200), min_size=1, max_size=40))
    values = [
        float(v)
        for v in data.draw(
            st.lists(st.integers(-99, 99), min_size=len(offsets), max_size=len(offsets))
        )
    ]
    labels = [origin + o * HOUR for o in offsets]
    zone = data.draw(st.sampled_from([*ZONES, None]))
    macro_naive = data.draw(st.sampled_from(NAIVE_SAFE_ZONES))
    unit = data.draw(st.sampled_from(UNITS))
    macro = pd.Series(values, index=as_index(labels, zone, unit, macro_naive), name="vix")

    result = align_to_ticker(
        ticker_index, macro, macro_interval="1h", naive_tz=naive_tz, macro_naive_tz=macro_naive
    )

    by_label: dict[datetime, float] = {}
    for label, value in zip(labels, values, strict=True):
        by_label[label] = value
    got = result.frame["vix"].to_list()
    for i, start in enumerate(starts):
        end = start + HOUR
        seen = [lab for lab in by_label if lab + HOUR <= end]
        expected = by_label[max(seen)] if seen else math.nan
        assert same(got[i], expected), (start, got[i], expected)
    first_vis = min(by_label) + HOUR
    assert result.first_visible_utc == pd.Timestamp(first_vis)
    assert result.bars_before_first == sum(1 for s in starts if s + HOUR < first_vis)


# ---------------------------------------------------------------- the seed's concrete cases


def _alpaca_bars(start: str, periods: int) -> pd.DataFrame:
    """Alpaca-like: UTC-aware microsecond index stamped at bar start."""
    idx = pd.date_range(start, periods=periods, freq="h", tz="UTC", unit="us", name="timestamp")
    return pd.DataFrame({"close": np.linspace(100, 101, periods)}, index=idx)


def test_the_seed_crash_alpaca_utc_us_against_yahoo_naive_seconds():
    bars = _alpaca_bars("2024-01-02 09:00", 60)
    yahoo = pd.Series(
        [4.0, 4.1, 4.2],
        index=pd.DatetimeIndex(["2024-01-01", "2024-01-02", "2024-01-03"]).as_unit("s"),
        name="close",
    )
    assert str(yahoo.index.dtype) == "datetime64[s]"
    # What the old code did, crashing with the seed's exact message:
    with pytest.raises(
        TypeError, match=r"Cannot compare dtypes datetime64\[s\] and datetime64\[us, UTC\]"
    ):
        yahoo.reindex(bars.index, method="ffill")

    result = align_to_ticker(bars, yahoo)
    frame = result.frame
    assert frame.index.equals(bars.index) and str(frame.index.dtype) == "datetime64[us, UTC]"
    # 2024-01-01 becomes visible at 2024-01-02 00:00 EST = 05:00 UTC: all of Jan 2 sees it
    assert frame.loc["2024-01-02 09:00+00:00", "close"] == 4.0
    assert frame.loc["2024-01-03 03:00+00:00", "close"] == 4.0  # 22:00-23:00 New York, Jan 2
    # the bar ending at 2024-01-03 05:00 UTC (midnight New York) is decided on Jan 3: sees Jan 2
    assert frame.loc["2024-01-03 04:00+00:00", "close"] == 4.1
    assert frame.loc["2024-01-03 20:00+00:00", "close"] == 4.1
    assert result.bars_before_first == 0
    assert result.first_visible_utc == pd.Timestamp("2024-01-02 05:00", tz="UTC")


@pytest.mark.parametrize("unit", ["s", "us", "ns"])
def test_tnx_labelled_at_chicago_midnight_keeps_its_chicago_date(unit):
    # yf.Ticker("^TNX").history(): daily rows at 00:00 America/Chicago (06:00 UTC in winter)
    labels = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"]).tz_localize(
        "America/Chicago"
    )
    tnx = pd.DataFrame(
        {"open": [3.9, 4.0, 4.0], "close": [3.95, 3.91, 3.99], "volume": [0, 0, 0]},
        index=labels.as_unit(unit),
    )
    bars = _alpaca_bars("2024-01-02 12:00", 72)
    frame = align_to_ticker(bars, tnx).frame
    assert list(frame.columns) == ["close"]
    # Jan 2 (Chicago date) is visible from Jan 3 00:00 New York = 05:00 UTC, not at 06:00 UTC
    # (Chicago midnight) and not before.
    assert math.isnan(frame.loc["2024-01-03 03:00+00:00", "close"])
    assert frame.loc["2024-01-03 04:00+00:00", "close"] == 3.95
    assert frame.loc["2024-01-03 15:00+00:00", "close"] == 3.95
    assert frame.loc["2024-01-04 15:00+00:00", "close"] == 3.91
    assert frame.loc["2024-01-05 11:00+00:00", "close"] == 3.99
    both = align_to_ticker(bars, tnx, columns=["open", "close"]).frame
    assert list(both.columns) == ["open", "close"] and (both.dtypes == np.float64).all()


def test_tokyo_midnight_label_is_the_tokyo_date_not_the_previous_utc_day():
    # 2024-01-05 00:00+09:00 is 2024-01-04 15:00 UTC: its date is still Jan 5.
    nikkei = pd.Series(
        [33000.0, 33300.0],
        index=pd.DatetimeIndex(["2024-01-04", "2024-01-05"]).tz_localize("Asia/Tokyo"),
        name="close",
    )
    bars = _alpaca_bars("2024-01-05 00:00", 48)
    result = align_to_ticker(bars, nikkei)
    assert (
        result.frame.loc["2024-01-05 15:00+00:00", "close"] == 33000.0
    )  # Jan 5 New York: sees Jan 4
    assert result.frame.loc["2024-01-06 04:00+00:00", "close"] == 33300.0  # decided Jan 6 00:00 NY
    assert result.first_visible_utc == pd.Timestamp("2024-01-05 05:00", tz="UTC")
    assert result.bars_before_first == 4  # bars ending 01:00..04:00 UTC on Jan 5


@pytest.mark.parametrize(
    ("day", "prev_day"),
    [("2024-03-10", "2024-03-09"), ("2024-11-03", "2024-11-02")],
    ids=["spring-forward", "fall-back"],
)
def test_the_1900_new_york_bar_on_a_dst_change_day_sees_the_previous_day(day, prev_day):
    bar_start = pd.Timestamp(f"{day} 19:00", tz="America/New_York")
    bars = pd.DatetimeIndex([bar_start]).tz_convert("UTC").as_unit("us")
    daily = pd.Series(
        [1.0, 2.0, 3.0],
        index=pd.DatetimeIndex(
            [prev_day, day, str((pd.Timestamp(day) + pd.Timedelta(days=1)).date())]
        ),
        name="close",
    )
    result = align_to_ticker(bars, daily)
    # In March the bar ends at 00:00 UTC of the next day: a UTC-midnight rule would leak day D.
    assert result.frame["close"].iloc[0] == 1.0
    end = bar_start + pd.Timedelta(hours=1)
    assert end.tz_convert("UTC") < pd.Timestamp(f"{day}", tz="America/New_York") + pd.Timedelta(
        days=1
    )
    # one hour after New York midnight, day D is visible
    later = pd.DatetimeIndex([pd.Timestamp(day, tz="America/New_York") + pd.Timedelta(days=1)])
    assert align_to_ticker(later, daily).frame["close"].iloc[0] == 2.0


def test_bar_ending_at_new_york_midnight_is_decided_the_next_day():
    # [23:00, 24:00) New York on Jan 2: decision at Jan 3 00:00, when Jan 2's value is published.
    bar = pd.DatetimeIndex([pd.Timestamp("2024-01-02 23:00", tz="America/New_York")])
    daily = pd.Series(
        [1.0, 2.0], index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"]), name="close"
    )
    assert align_to_ticker(bar, daily).frame["close"].iloc[0] == 2.0
    assert align_to_ticker(bar - pd.Timedelta(hours=1), daily).frame["close"].iloc[0] == 1.0


def test_weekend_gap_carries_fridays_value_into_monday():
    daily = pd.Series(
        [10.0, 11.0, 12.0],
        index=pd.DatetimeIndex(["2024-01-04", "2024-01-05", "2024-01-08"]),
        name="close",
    )
    bars = pd.date_range("2024-01-08 09:00", periods=8, freq="h", tz="America/New_York")
    assert (align_to_ticker(bars, daily).frame["close"] == 11.0).all()


def test_hourly_macro_bar_is_usable_by_the_ticker_bar_closing_with_it():
    macro = pd.Series(
        [1.0, 2.0], index=pd.date_range("2024-01-02 14:00", periods=2, freq="h", tz="UTC"), name="x"
    )
    bars = pd.date_range("2024-01-02 13:00", periods=3, freq="h", tz="UTC")
    out = align_to_ticker(bars, macro, macro_interval="1h").frame["x"].to_list()
    assert math.isnan(out[0]) and out[1:] == [1.0, 2.0]


def test_store_schema_utc_midnight_labels_are_their_utc_date():
    idx = pd.DatetimeIndex(["2024-01-02", "2024-01-03"], tz="UTC", name="timestamp").as_unit("us")
    macro = pd.DataFrame(
        {c: [1.0, 2.0] for c in ("open", "high", "low", "close", "volume")}, index=idx
    )
    bars = pd.DatetimeIndex(["2024-01-03 14:00", "2024-01-04 14:00"], tz="UTC")
    assert align_to_ticker(bars, macro).frame["close"].to_list() == [1.0, 2.0]


def test_duplicates_keep_the_last_row_and_unsorted_labels_are_sorted():
    idx = pd.DatetimeIndex(["2024-01-03", "2024-01-02", "2024-01-03 16:00", "2024-01-02"])
    macro = pd.Series([30.0, 20.0, 31.0, 21.0], index=idx, name="close")
    bars = pd.DatetimeIndex(["2024-01-03 15:00", "2024-01-04 15:00"], tz="UTC")
    assert align_to_ticker(bars, macro).frame["close"].to_list() == [21.0, 31.0]


def test_nan_values_carry_the_previous_value_forward():
    macro = pd.Series(
        [1.0, np.nan, 3.0], index=pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"])
    )
    bars = pd.DatetimeIndex(["2024-01-03 15:00", "2024-01-04 15:00", "2024-01-05 15:00"], tz="UTC")
    result = align_to_ticker(bars, macro)
    assert list(result.frame.columns) == ["value"]
    assert result.frame["value"].to_list() == [1.0, 1.0, 3.0]


def test_output_keeps_the_ticker_order_and_duplicates():
    bars = pd.DatetimeIndex(
        ["2024-01-04 15:00", "2024-01-03 15:00", "2024-01-04 15:00"], tz="UTC"
    ).as_unit("ns")
    macro = pd.Series(
        [1.0, 2.0], index=pd.DatetimeIndex(["2024-01-02", "2024-01-03"]), name="close"
    )
    frame = align_to_ticker(bars, macro).frame
    assert frame.index.equals(to_utc_us(bars)) and frame["close"].to_list() == [2.0, 1.0, 2.0]


def test_naive_ticker_index_is_read_in_naive_tz():
    bars = pd.DatetimeIndex(["2024-01-03 08:00"])  # 08:00 Tokyo = Jan 2 23:00 UTC = 18:00 NY Jan 2
    macro = pd.Series(
        [1.0, 2.0], index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"]), name="close"
    )
    result = align_to_ticker(bars, macro, naive_tz="Asia/Tokyo")
    assert result.frame.index[0] == pd.Timestamp("2024-01-02 23:00", tz="UTC")
    assert result.frame["close"].iloc[0] == 1.0


def test_default_columns_are_all_numeric_ones_without_close():
    macro = pd.DataFrame(
        {"dgs10": [4, 5], "label": ["a", "b"], "flag": [True, False], "vix": [13.5, 14.0]},
        index=pd.DatetimeIndex(["2024-01-02", "2024-01-03"]),
    )
    frame = align_to_ticker(pd.DatetimeIndex(["2024-01-04 15:00"], tz="UTC"), macro).frame
    assert list(frame.columns) == ["dgs10", "vix"]
    assert (frame.dtypes == np.float64).all() and frame.iloc[0].to_list() == [5.0, 14.0]


def test_empty_inputs():
    macro = pd.Series([1.0], index=pd.DatetimeIndex(["2024-01-02"]), name="close")
    empty_bars = align_to_ticker(pd.DatetimeIndex([]), macro)
    assert len(empty_bars.frame) == 0 and str(empty_bars.frame.index.dtype) == "datetime64[us, UTC]"
    assert empty_bars.bars_before_first == 0
    no_macro = align_to_ticker(
        pd.DatetimeIndex(["2024-01-04 15:00"], tz="UTC"),
        pd.Series([], index=pd.DatetimeIndex([]), name="close", dtype=float),
    )
    assert no_macro.bars_before_first == 1 and no_macro.first_visible_utc is None
    assert math.isnan(no_macro.frame["close"].iloc[0])


def test_aligned_macro_is_frozen():
    result = align_to_ticker(
        pd.DatetimeIndex(["2024-01-04 15:00"], tz="UTC"),
        pd.Series([1.0], index=pd.DatetimeIndex(["2024-01-02"]), name="close"),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.bars_before_first = 3  # type: ignore[misc]


BARS = pd.DatetimeIndex(["2024-01-04 15:00"], tz="UTC")
DAILY = pd.Series([1.0], index=pd.DatetimeIndex(["2024-01-02"]), name="close")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"macro": pd.DataFrame({"name": ["a"]}, index=pd.DatetimeIndex(["2024-01-02"]))},
            r"macro: no numeric column to align \(found name\)",
        ),
        ({"macro_interval": "1wk"}, r"macro_interval '1wk' is not supported"),
        ({"ticker_bar": "tick"}, r"ticker_bar 'tick' is not supported"),
        ({"columns": ["close", "vix"]}, r"macro: no column\(s\) vix \(found close\)"),
        (
            {"macro": pd.Series([1.0], index=pd.RangeIndex(1))},
            r"macro: expected a DatetimeIndex.*RangeIndex",
        ),
        ({"ticker_bars": pd.DataFrame({"x": [1]})}, r"ticker bars: expected a DatetimeIndex"),
        (
            {"ticker_bars": pd.DatetimeIndex(["2024-01-04", None])},
            r"ticker bars: timestamp at position 1 is missing",
        ),
        (
            {"ticker_bars": pd.DatetimeIndex(["2024-01-04 15:00"]), "naive_tz": None},
            r"ticker bars: timestamps cannot be read",
        ),
        (  # 01:00 on the fall-back night happens twice in New York
            {"ticker_bars": pd.DatetimeIndex(["2024-11-03 01:00"]), "naive_tz": "America/New_York"},
            r"ticker bars: timestamps cannot be read as UTC",
        ),
        ({"publish_tz": "Mars/Olympus"}, r"publish_tz 'Mars/Olympus' is not usable"),
        (
            {
                "macro": pd.Series(
                    ["4.1", "n/a"],
                    index=pd.DatetimeIndex(["2024-01-02", "2024-01-03"]),
                    name="close",
                )
            },
            r"macro: column 'close' has a non-numeric value 'n/a'",
        ),
    ],
)
def test_unusable_input_is_one_clear_data_error(kwargs, message):
    args = {"ticker_bars": BARS, "macro": DAILY, **kwargs}
    with pytest.raises(DataError, match=message) as info:
        align_to_ticker(args.pop("ticker_bars"), args.pop("macro"), **args)
    assert "\n" not in str(info.value)
