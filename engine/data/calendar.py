"""The NYSE trading calendar and the hourly bar grid a source such as Alpaca produces.

Alpaca's hourly bars are stamped at bar start and aligned to :00 in UTC. New York's offsets from UTC
are whole hours (-5 h / -4 h), so a bar is :00-aligned in New York too. A bar ``[t, t + 1 h)``
exists for a trading day when it overlaps that day's extended session, 04:00-20:00 New York; it is a
*regular-session* bar when it overlaps the regular session, 09:30-16:00 New York. The 09:00 bar
(09:00-10:00, half pre-market and half regular) therefore counts as regular. On early-close days
(13:00 close: the day after Thanksgiving, Christmas Eve, some July 3rds) the regular session ends at
13:00 and the extended session at 17:00. Holidays have no bars at all.

Holidays, early closes and the exact open/close of every session come from ``exchange_calendars``
(calendar ``XNYS``), whose schedule already accounts for DST: New York wall-clock times are converted
to UTC per day, so the first extended bar is 09:00 UTC in winter and 08:00 UTC in summer.

All timestamps are UTC, microsecond resolution (``datetime64[us, UTC]``), as everywhere in the
engine. A normal day has 16 bars (04:00-19:00 New York starts), 7 of them regular (09:00-15:00);
an early-close day has 13 bars (04:00-16:00), 4 of them regular (09:00-12:00).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from datetime import date, datetime

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from engine.errors import DataError
from engine.timeutil import NEW_YORK

CALENDAR_NAME = "XNYS"

#: Bar classification codes returned by :func:`classify_bars` and stored in :attr:`BarGrid.kind`.
OFF_SESSION: int = 0
EXTENDED: int = 1
REGULAR: int = 2
KIND_NAMES: dict[int, str] = {OFF_SESSION: "off-session", EXTENDED: "extended", REGULAR: "regular"}

HOUR_US: int = 3_600_000_000
"""One hour in microseconds (the bar length)."""

EXTENDED_OPEN_NY = pd.Timedelta(hours=4)
"""Start of the pre-market session, as an offset from New York midnight."""

EXTENDED_AFTER_CLOSE = pd.Timedelta(hours=4)
"""Length of the post-market session after the regular close (16:00 -> 20:00, 13:00 -> 17:00)."""

# The calendar object is built once and grown on demand: building XNYS takes ~0.3 s, which would
# dominate a check of a small dataset if it were repeated per call.
_DEFAULT_FIRST = pd.Timestamp("1990-01-01")
# Asking exchange_calendars for centuries of sessions is slow and meaningless here; timestamps
# outside these bounds are simply treated as off-session.
_BOUND_FIRST = pd.Timestamp("1900-01-01")
_BOUND_LAST = pd.Timestamp("2199-12-31")
_lock = threading.Lock()
_calendar: xcals.ExchangeCalendar | None = None
_bounds: tuple[pd.Timestamp, pd.Timestamp] | None = None  # the dates _calendar was built for

DateLike = str | date | datetime | pd.Timestamp | np.datetime64


def to_session_date(value: DateLike) -> pd.Timestamp:
    """Return ``value`` as a naive midnight ``Timestamp`` (a session label, as exchange_calendars uses).

    A tz-aware timestamp is first converted to New York, so ``2024-03-11 03:00 UTC`` (23:00 on the
    10th in New York) is the 10th. A naive value is read as a New York calendar date.
    """
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        ts = pd.NaT
    if ts is pd.NaT:
        raise DataError(f"date {value!r} is not a date; use YYYY-MM-DD")
    if ts.tzinfo is not None:
        ts = ts.tz_convert(NEW_YORK).tz_localize(None)
    return ts.normalize().as_unit("ns")


def xnys(first: DateLike | None = None, last: DateLike | None = None) -> xcals.ExchangeCalendar:
    """The cached ``XNYS`` calendar, covering at least the session dates ``first``..``last``.

    The cache starts at 1990-01-01 and ends two years after today; a request outside that range
    rebuilds it once, wider (within 1900-2199).
    """
    global _calendar, _bounds
    want_first = max(_BOUND_FIRST, to_session_date(first)) if first is not None else None
    want_last = min(_BOUND_LAST, to_session_date(last)) if last is not None else None
    with _lock:
        # Compare with the dates asked for when building, not with the first/last *session*: a
        # bound on a holiday would otherwise look uncovered and rebuild the calendar every call.
        if _calendar is not None and _bounds is not None:
            lo, hi = _bounds
            if (want_first is None or want_first >= lo) and (want_last is None or want_last <= hi):
                return _calendar
        today = pd.Timestamp.now(tz=NEW_YORK).tz_localize(None).normalize()
        firsts = [_DEFAULT_FIRST] + [x for x in (want_first,) if x is not None]
        lasts = [today + pd.DateOffset(years=2)] + [x for x in (want_last,) if x is not None]
        if _bounds is not None:
            firsts.append(_bounds[0])
            lasts.append(_bounds[1])
        lo, hi = min(firsts), max(lasts)
        with warnings.catch_warnings():
            # exchange_calendars 4.13 reads ``Series.values`` of tz-aware columns while building,
            # which pandas >= 3.1 flags as deprecated; the values it gets are still right (UTC).
            warnings.filterwarnings("ignore", message=r"Series\.values returning an ndarray")
            _calendar = xcals.get_calendar(CALENDAR_NAME, start=lo.date(), end=hi.date())
        _bounds = (lo, hi)
        return _calendar


def sessions(start: DateLike, end: DateLike) -> pd.DataFrame:
    """The trading sessions whose date lies in ``start``..``end`` (both inclusive).

    Returns a frame indexed by the session date (naive midnight, ``datetime64[ns]``), one row per
    trading day, with UTC-microsecond columns:

    - ``ext_open``: 04:00 New York (start of pre-market)
    - ``open``: regular open (normally 09:30 New York)
    - ``close``: regular close (16:00, or 13:00 on early-close days)
    - ``ext_close``: end of post-market (``close`` + 4 h: 20:00, or 17:00 on early-close days)

    and a bool column ``early_close`` (regular session shorter than normal).
    """
    lo, hi = to_session_date(start), to_session_date(end)
    if hi < lo:
        raise DataError(
            f"date range {lo.date()}..{hi.date()} is empty: the end is before the start"
        )
    cal = xnys(lo, hi)
    sched = cal.schedule.loc[lo:hi]
    dates = pd.DatetimeIndex(sched.index)
    # 04:00 New York on each session date: localise the wall-clock time per day, so DST is handled
    # day by day (no session day contains a DST switch: those happen at 02:00 on Sundays).
    ext_open = (dates + EXTENDED_OPEN_NY).tz_localize(NEW_YORK).tz_convert("UTC").as_unit("us")
    open_ = pd.DatetimeIndex(sched["open"]).tz_convert("UTC").as_unit("us")
    close = pd.DatetimeIndex(sched["close"]).tz_convert("UTC").as_unit("us")
    # Post-market ends 4 h after the regular close: 20:00 normally, 17:00 on early closes. Adding
    # 4 h in UTC equals adding it in New York because no DST switch falls between 13:00 and 20:00.
    ext_close = close + EXTENDED_AFTER_CLOSE
    regular_len = close - open_
    early = regular_len < pd.Timedelta(hours=6, minutes=30)
    return pd.DataFrame(
        {
            "ext_open": ext_open,
            "open": open_,
            "close": close,
            "ext_close": ext_close,
            "early_close": np.asarray(early, dtype=bool),
        },
        index=pd.Index(dates, name="session"),
    )


def is_session(dates: DateLike | pd.DatetimeIndex) -> np.ndarray:
    """Whether each date is an NYSE trading day. Returns a bool array shaped like ``dates`` (1-D)."""
    idx = pd.DatetimeIndex(np.atleast_1d(np.asarray(dates, dtype=object)))
    if idx.tz is not None:
        idx = idx.tz_convert(NEW_YORK).tz_localize(None)
    idx = idx.normalize().as_unit("ns")
    if len(idx) == 0:
        return np.zeros(0, dtype=bool)
    sess = sessions(idx.min(), idx.max())
    return np.asarray(sess.index.get_indexer(idx) >= 0)


@dataclass(frozen=True)
class BarGrid:
    """The expected hourly bars between two dates.

    Attributes:
        timestamps: ``(n_bars,)`` bar starts, UTC microseconds, sorted, unique.
        session: ``(n_bars,)`` int64 position of each bar's trading day in ``sessions``.
        kind: ``(n_bars,)`` int8, :data:`REGULAR` or :data:`EXTENDED`.
        regular_fraction: ``(n_bars,)`` float64 in [0, 1], the share of the bar's hour inside the
            regular session (0.5 for the 09:00 bar, 1.0 for 10:00-15:00, 0 for pure extended bars).
        sessions: the :func:`sessions` frame the bars belong to, ``(n_sessions, 5)``.
    """

    timestamps: pd.DatetimeIndex
    session: np.ndarray
    kind: np.ndarray
    regular_fraction: np.ndarray
    sessions: pd.DataFrame

    def __len__(self) -> int:
        return len(self.timestamps)


def as_us_int(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC-microsecond datetimes -> int64 microseconds since the epoch."""
    return np.asarray(pd.DatetimeIndex(values).as_unit("us").asi8, dtype=np.int64)


def bar_grid(start: DateLike, end: DateLike, *, include_extended: bool = True) -> BarGrid:
    """All expected hourly bars of the trading days ``start``..``end`` (dates, both inclusive).

    With ``include_extended=False`` only the regular-session bars are returned (7 a normal day).
    Vectorised: about 1,760 sessions (7 years) take a few milliseconds after the calendar is cached.
    """
    sess = sessions(start, end)
    if include_extended:
        lo, hi = as_us_int(sess["ext_open"]), as_us_int(sess["ext_close"])
    else:
        lo, hi = as_us_int(sess["open"]), as_us_int(sess["close"])
    # Bars overlapping [lo, hi): first start = floor(lo to the hour), last start < hi.
    first = lo - np.mod(lo, HOUR_US)
    stop = hi - np.mod(hi, HOUR_US) + np.where(np.mod(hi, HOUR_US) > 0, HOUR_US, 0)
    counts = ((stop - first) // HOUR_US).astype(np.int64)
    total = int(counts.sum())
    session = np.repeat(np.arange(len(sess), dtype=np.int64), counts)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    ts = first[session] + offsets * HOUR_US
    open_us, close_us = as_us_int(sess["open"])[session], as_us_int(sess["close"])[session]
    overlap = np.clip(np.minimum(ts + HOUR_US, close_us) - np.maximum(ts, open_us), 0, HOUR_US)
    regular_fraction = overlap / HOUR_US
    kind = np.where(overlap > 0, REGULAR, EXTENDED).astype(np.int8)
    index = pd.DatetimeIndex(ts.astype("datetime64[us]")).tz_localize("UTC")
    index.name = "timestamp"
    return BarGrid(
        timestamps=index,
        session=session,
        kind=kind,
        regular_fraction=regular_fraction,
        sessions=sess,
    )


def expected_bars(
    start: DateLike, end: DateLike, *, include_extended: bool = True
) -> pd.DatetimeIndex:
    """Expected hourly bar starts (UTC us) of the trading days ``start``..``end`` (inclusive).

    Shape ``(n_bars,)``; ~16 bars per normal trading day with extended hours, 7 without.
    """
    return bar_grid(start, end, include_extended=include_extended).timestamps


def classify_bars(timestamps: pd.DatetimeIndex | pd.Series | np.ndarray) -> np.ndarray:
    """Classify each hourly bar ``[t, t + 1 h)`` as :data:`REGULAR`, :data:`EXTENDED` or :data:`OFF_SESSION`.

    ``timestamps``: ``(n,)`` bar starts (tz-aware, or naive UTC). A bar is regular when it overlaps
    its day's regular session, extended when it overlaps only 04:00-20:00 New York (17:00 on early
    closes), off-session otherwise (weekends, holidays, night hours). Bars need not be :00-aligned:
    the rule is the overlap. Returns ``(n,)`` int8.
    """
    idx = pd.DatetimeIndex(timestamps)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    idx = idx.tz_convert("UTC").as_unit("us")
    out = np.full(len(idx), OFF_SESSION, dtype=np.int8)
    valid = ~np.asarray(idx.isna())
    if not valid.any():
        return out
    # The extended session lies within one New York calendar day, so a bar that overlaps it starts
    # on that same New York date (a bar starting at 03:30 overlaps 04:00, one at 19:59 ends at
    # 20:59): the New York date of the bar start is the session key.
    ny_dates = idx[valid].tz_convert(NEW_YORK).tz_localize(None).normalize().as_unit("ns")
    lo, hi = ny_dates.min(), ny_dates.max()
    if hi < _BOUND_FIRST or lo > _BOUND_LAST:
        return out
    sess = sessions(max(lo, _BOUND_FIRST), min(hi, _BOUND_LAST))
    pos = sess.index.get_indexer(ny_dates)
    found = pos >= 0
    t = idx[valid].asi8[found]
    p = pos[found]
    ext_open, ext_close = as_us_int(sess["ext_open"])[p], as_us_int(sess["ext_close"])[p]
    open_, close = as_us_int(sess["open"])[p], as_us_int(sess["close"])[p]
    end = t + HOUR_US
    kinds = np.where(
        (t < close) & (end > open_),
        REGULAR,
        np.where((t < ext_close) & (end > ext_open), EXTENDED, OFF_SESSION),
    ).astype(np.int8)
    sub = np.full(int(valid.sum()), OFF_SESSION, dtype=np.int8)
    sub[found] = kinds
    out[valid] = sub
    return out
