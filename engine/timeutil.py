"""Time normalisation: everything inside the engine is UTC with microsecond resolution.

pandas infers resolutions (``s``, ``ms``, ``us``, ``ns``) and sources disagree on time zones; joining
two such indexes is what crashed the old code (``Cannot compare dtypes datetime64[s] and
datetime64[us, UTC]``). Every index crosses this module before any join.
"""

from __future__ import annotations

import pandas as pd

NEW_YORK = "America/New_York"
UTC = "UTC"


def to_utc_us(index: pd.Index | pd.Series, naive_tz: str | None = UTC) -> pd.DatetimeIndex:
    """Return ``index`` as a tz-aware UTC ``DatetimeIndex`` in microseconds.

    Naive timestamps are read as wall-clock times in ``naive_tz`` (UTC by default). DST-ambiguous
    or non-existent wall-clock times raise, because guessing would silently shift bars by an hour.
    Pass ``naive_tz=None`` to refuse naive input outright.
    """
    idx = pd.DatetimeIndex(index)
    if idx.tz is None:
        if naive_tz is None:
            raise ValueError("timestamps have no time zone; say which one they are in")
        idx = idx.tz_localize(naive_tz, ambiguous="raise", nonexistent="raise")
    # freq is dropped: it is metadata that survives some paths and not others (Parquet round trips)
    return pd.DatetimeIndex(idx.tz_convert(UTC).as_unit("us"), freq=None)


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz=UTC).as_unit("us")


def parse_utc(value: str | pd.Timestamp, naive_tz: str = UTC) -> pd.Timestamp:
    """Parse a user-given date or datetime; a naive value is read in ``naive_tz``."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(naive_tz)
    return ts.tz_convert(UTC).as_unit("us")
