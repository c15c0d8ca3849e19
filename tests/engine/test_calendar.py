"""engine.data.calendar against known NYSE facts (holidays, early closes, DST) and a slow reference."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from engine.data import calendar
from engine.errors import DataError

NY = "America/New_York"


def utc(*stamps: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(s, tz="UTC") for s in stamps]


def hours_utc(day: str, first: int, last: int) -> list[pd.Timestamp]:
    """Hourly UTC stamps ``first``..``last`` (inclusive) on ``day``; hours may exceed 23."""
    base = pd.Timestamp(day, tz="UTC")
    return [base + pd.Timedelta(hours=h) for h in range(first, last + 1)]


def test_normal_summer_day_has_16_bars_7_regular() -> None:
    grid = calendar.bar_grid("2024-07-08", "2024-07-08")
    # EDT: 04:00 New York = 08:00 UTC; the last bar starts 19:00 New York = 23:00 UTC.
    assert list(grid.timestamps) == hours_utc("2024-07-08", 8, 23)
    regular = grid.timestamps[grid.kind == calendar.REGULAR]
    # 09:00 New York (half pre-market, half regular) counts as regular, through 15:00.
    assert list(regular) == hours_utc("2024-07-08", 13, 19)
    assert grid.regular_fraction[grid.timestamps.get_loc(pd.Timestamp("2024-07-08 13:00Z"))] == 0.5
    assert grid.timestamps.dtype == "datetime64[us, UTC]"


def test_winter_day_is_shifted_one_hour() -> None:
    bars = calendar.expected_bars("2024-01-08", "2024-01-08")
    assert list(bars) == hours_utc("2024-01-08", 9, 24)


def test_early_close_day_after_thanksgiving() -> None:
    sess = calendar.sessions("2024-11-29", "2024-11-29")
    row = sess.iloc[0]
    assert bool(row["early_close"])
    assert row["close"] == pd.Timestamp("2024-11-29 18:00Z")  # 13:00 EST
    assert row["ext_close"] == pd.Timestamp("2024-11-29 22:00Z")  # 17:00 EST
    grid = calendar.bar_grid("2024-11-29", "2024-11-29")
    assert list(grid.timestamps) == hours_utc("2024-11-29", 9, 21)  # 04:00..16:00 New York
    assert list(grid.timestamps[grid.kind == calendar.REGULAR]) == hours_utc("2024-11-29", 14, 17)
    assert not bool(calendar.sessions("2024-11-27", "2024-11-27").iloc[0]["early_close"])


def test_holidays_and_weekends_have_no_bars() -> None:
    assert len(calendar.expected_bars("2024-07-04", "2024-07-04")) == 0  # Independence Day
    assert len(calendar.expected_bars("2024-12-25", "2024-12-25")) == 0  # Christmas
    assert len(calendar.expected_bars("2024-03-09", "2024-03-10")) == 0  # weekend
    assert len(calendar.expected_bars("2025-01-09", "2025-01-09")) == 0  # national day of mourning
    days = pd.DatetimeIndex(["2024-07-03", "2024-07-04", "2024-07-05", "2024-07-06"])
    assert calendar.is_session(days).tolist() == [True, False, True, False]
    # The day before Independence Day closes early too.
    pre = calendar.bar_grid("2024-07-03", "2024-07-03")
    assert len(pre) == 13
    assert pre.timestamps[pre.kind == calendar.REGULAR][-1] == pd.Timestamp("2024-07-03 16:00Z")


def test_dst_start_and_end() -> None:
    # DST started Sunday 2024-03-10: Friday's first bar is 09:00 UTC, Monday's 08:00 UTC.
    assert calendar.expected_bars("2024-03-08", "2024-03-08")[0] == pd.Timestamp(
        "2024-03-08 09:00Z"
    )
    assert calendar.expected_bars("2024-03-11", "2024-03-11")[0] == pd.Timestamp(
        "2024-03-11 08:00Z"
    )
    # DST ended Sunday 2024-11-03.
    assert calendar.expected_bars("2024-11-01", "2024-11-01")[0] == pd.Timestamp(
        "2024-11-01 08:00Z"
    )
    assert calendar.expected_bars("2024-11-04", "2024-11-04")[0] == pd.Timestamp(
        "2024-11-04 09:00Z"
    )
    # Regular open 09:30 New York: the 09:00 bar is 13:00 UTC in summer, 14:00 UTC in winter.
    reg = calendar.bar_grid("2024-03-08", "2024-03-11")
    firsts = reg.timestamps[reg.kind == calendar.REGULAR][[0, 7]]
    assert list(firsts) == utc("2024-03-08 14:00", "2024-03-11 13:00")


def test_year_2024_counts() -> None:
    sess = calendar.sessions("2024-01-01", "2024-12-31")
    assert len(sess) == 252
    assert sess.index[sess["early_close"]].strftime("%m-%d").tolist() == ["07-03", "11-29", "12-24"]
    grid = calendar.bar_grid("2024-01-01", "2024-12-31")
    assert len(grid) == 249 * 16 + 3 * 13
    assert int((grid.kind == calendar.REGULAR).sum()) == 249 * 7 + 3 * 4
    regular_only = calendar.expected_bars("2024-01-01", "2024-12-31", include_extended=False)
    assert regular_only.equals(grid.timestamps[grid.kind == calendar.REGULAR])


def _reference_bars(start: str, end: str) -> pd.DatetimeIndex:
    """Slow, obvious version: per session, New York wall-clock hours 04..19 (..16 on early closes)."""
    out = []
    for day, row in calendar.sessions(start, end).iterrows():
        last = 16 if row["early_close"] else 19
        for hour in range(4, last + 1):
            wall = pd.Timestamp(day) + pd.Timedelta(hours=hour)
            out.append(wall.tz_localize(NY).tz_convert("UTC"))
    return pd.DatetimeIndex(out).as_unit("us")


def test_grid_matches_reference_over_two_years() -> None:
    fast = calendar.expected_bars("2022-01-01", "2023-12-31")
    assert fast.equals(_reference_bars("2022-01-01", "2023-12-31"))
    assert fast.is_monotonic_increasing and fast.is_unique
    assert (fast.asi8 % calendar.HOUR_US == 0).all()


def test_classify_bars() -> None:
    stamps = pd.DatetimeIndex(
        utc(
            "2024-07-08 07:00",  # 03:00 NY: night
            "2024-07-08 07:30",  # 03:30 NY, overlaps 04:00: extended (misaligned, still classified)
            "2024-07-08 08:00",  # 04:00 NY: extended
            "2024-07-08 13:00",  # 09:00 NY: regular (overlaps 09:30)
            "2024-07-08 19:00",  # 15:00 NY: regular
            "2024-07-08 20:00",  # 16:00 NY: extended
            "2024-07-08 23:00",  # 19:00 NY: extended
            "2024-07-09 00:00",  # 20:00 NY: off
            "2024-07-04 15:00",  # holiday
            "2024-07-06 15:00",  # Saturday
            "2024-11-29 18:00",  # 13:00 NY on an early close: extended
            "2024-11-29 22:00",  # 17:00 NY on an early close: off
        )
    )
    R, E, X = calendar.REGULAR, calendar.EXTENDED, calendar.OFF_SESSION
    assert calendar.classify_bars(stamps).tolist() == [X, E, E, R, R, E, E, X, X, X, E, X]
    # Naive stamps are UTC; NaT is off-session; empty input is fine.
    naive = pd.DatetimeIndex(["2024-07-08 13:00", None])
    assert calendar.classify_bars(naive).tolist() == [R, X]
    assert calendar.classify_bars(pd.DatetimeIndex([], tz="UTC")).tolist() == []
    grid = calendar.bar_grid("2024-01-01", "2024-12-31")
    assert np.array_equal(calendar.classify_bars(grid.timestamps), grid.kind)


def test_dates_and_errors() -> None:
    assert calendar.to_session_date(pd.Timestamp("2024-03-11 03:00Z")) == pd.Timestamp("2024-03-10")
    assert calendar.to_session_date("2024-03-11") == pd.Timestamp("2024-03-11")
    with pytest.raises(DataError, match="end is before the start"):
        calendar.sessions("2024-02-01", "2024-01-01")
    assert calendar.xnys() is calendar.xnys("2020-01-01", "2024-12-31")


def test_far_ranges_grow_the_cache() -> None:
    # Outside the default window the calendar is rebuilt wider, once.
    assert len(calendar.sessions("1985-01-02", "1985-01-04")) == 3
    assert calendar.is_session(pd.DatetimeIndex(["2040-12-25"])).tolist() == [False]
    assert calendar.xnys().first_session <= pd.Timestamp("1985-01-02")


def test_fast_for_seven_years() -> None:
    calendar.bar_grid("2018-01-01", "2018-01-31")  # warm the cache
    t0 = time.perf_counter()
    grid = calendar.bar_grid("2018-01-01", "2024-12-31")
    kinds = calendar.classify_bars(grid.timestamps)
    assert time.perf_counter() - t0 < 1.0
    assert len(grid) > 28_000 and (kinds != calendar.OFF_SESSION).all()
