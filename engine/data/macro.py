"""Align macro series (daily or intraday) to a ticker's hourly bars without look-ahead.

The old code crashed joining Alpaca's UTC-aware microsecond bars to Yahoo's tz-naive second-resolution
daily series (``TypeError: Cannot compare dtypes datetime64[s] and datetime64[us, UTC]``). Here every
index crosses :func:`engine.timeutil.to_utc_us` first and the join itself runs on int64 microseconds,
so mixed time zones and resolutions (``s``, ``ms``, ``us``, ``ns``) cannot meet in a comparison.

Timing rules (all instants in UTC microseconds)
----------------------------------------------
*Ticker bars* are stamped at bar START: the bar ``[t, t + ticker_bar)``. The decision for a bar is
taken at its close, so a bar may use every macro value whose **visibility time is <= t + ticker_bar**
(the bar END), and nothing later. A naive ticker index is read as wall-clock time in ``naive_tz``.

*Daily macro* rows describe a calendar date D:

- a naive label is just that calendar date (its clock time, if any, is ignored);
- a tz-aware label's date is its date in its OWN time zone: ``^TNX`` from ``yf.Ticker.history`` is
  labelled ``2024-01-02 00:00-06:00`` (America/Chicago) and describes 2024-01-02; a Tokyo label
  ``2024-01-05 00:00+09:00`` describes 2024-01-05 even though it is 2024-01-04 15:00 UTC. The store's
  labels (the date at UTC midnight) are therefore read correctly too.

The value of day D becomes visible at the first ``publish_tz`` midnight after D, i.e. at D+1 00:00
America/New_York by default (04:00 UTC in summer, 05:00 UTC in winter: DST-correct). Consequences:

- every hourly bar that starts and ends within New York day D sees D-1's value (or an earlier one);
  the 19:00-20:00 New York bar on D ends at 00:00 UTC of D+1 in summer, yet still sees only D-1,
  which a UTC-midnight rule would get wrong;
- a bar that ends exactly at New York midnight (the 23:00-24:00 bar of D) is decided at D+1 00:00
  and may use D's value. Its "decision date" is D+1: a row never depends on macro days on or after
  the New York date of its bar END. (US equity bars, extended hours included, end by 20:00 New York,
  so for them this is simply "a bar of day D sees D-1".)

*Intraday macro* rows (``macro_interval="1h"``, ``"30m"``...) are stamped at bar start like the
ticker bars and become visible at their bar END (label + interval). Naive intraday labels are read
in ``macro_naive_tz`` (defaults to ``naive_tz``).

Values are carried forward until the next visible one (an as-of join, backward, exact matches
allowed). NaN macro values are skipped per column, so a missing value carries the previous one
forward instead of blanking the bar. Bars before the first visible value stay NaN and are counted
in ``bars_before_first``: nothing is ever back-filled from the future. Duplicate macro labels keep the
last row (in input order) per label; unsorted labels are sorted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.data.store import numeric_column
from engine.errors import DataError
from engine.timeutil import NEW_YORK, UTC, to_utc_us

__all__ = ["AlignedMacro", "align_to_ticker", "daily_visibility_utc", "parse_interval"]

_DAILY_NAMES = frozenset({"1d", "d", "1day", "daily"})
_INTRADAY = re.compile(r"^(\d+)\s*(m|min|h)$", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class AlignedMacro:
    """The macro columns as each ticker bar may see them at its close.

    ``frame``: indexed exactly by the ticker bars' index normalised to UTC microseconds (order and
    duplicates kept), one float64 column per macro column. ``bars_before_first``: number of bars
    whose END is before the first macro value is visible; their rows are NaN. ``first_visible_utc``:
    when the first macro value (any selected column) becomes visible, or None without any value.
    """

    frame: pd.DataFrame
    bars_before_first: int
    first_visible_utc: pd.Timestamp | None


def parse_interval(text: str, *, what: str) -> pd.Timedelta | None:
    """``"1d"`` -> None (daily, calendar semantics); ``"1h"``/``"60m"``/``"30min"`` -> a Timedelta.

    ``what`` names the argument in the error message.
    """
    key = str(text).strip().lower()
    if key in _DAILY_NAMES:
        return None
    match = _INTRADAY.match(key)
    if match and int(match.group(1)) > 0:
        unit = "h" if match.group(2) == "h" else "min"
        return pd.Timedelta(int(match.group(1)), unit=unit)
    raise DataError(
        f"{what} {text!r} is not supported: use '1d' (daily) or an intraday bar such as '1h' or '30m'"
    )


def _datetime_index(obj: object, what: str) -> pd.DatetimeIndex:
    """The DatetimeIndex behind ``obj`` (a frame, a series or an index), or a DataError."""
    index = obj if isinstance(obj, pd.Index) else getattr(obj, "index", None)
    if not isinstance(index, pd.DatetimeIndex):
        kind = type(index).__name__ if index is not None else type(obj).__name__
        # Refusing here matters: pd.DatetimeIndex(RangeIndex) would silently read 0, 1, 2... as
        # nanoseconds after 1970 and "align" garbage.
        raise DataError(
            f"{what}: expected a DatetimeIndex of timestamps, got {kind}; "
            "parse it with pd.to_datetime(..., utc=True) first"
        )
    if index.hasnans:
        pos = int(np.flatnonzero(index.isna())[0])
        raise DataError(f"{what}: timestamp at position {pos} is missing (NaT); drop that row")
    return index


def _normalise(index: pd.DatetimeIndex, naive_tz: str | None, what: str) -> pd.DatetimeIndex:
    try:
        return to_utc_us(index, naive_tz=naive_tz)
    except Exception as err:  # ambiguous/non-existent wall times, unknown zone names
        raise DataError(
            f"{what}: timestamps cannot be read as UTC ({err}); "
            "pass tz-aware timestamps or the right naive time zone"
        ) from None


def _label_dates(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Calendar date of each daily label, naive at midnight, microseconds.

    Aware labels are read in their own zone (``tz_localize(None)`` keeps the local wall clock): a
    Chicago or Tokyo midnight stays that date instead of slipping to the previous UTC day.
    """
    local = index.tz_localize(None) if index.tz is not None else index
    return pd.DatetimeIndex(local.as_unit("us").normalize(), freq=None)


def daily_visibility_utc(index: pd.DatetimeIndex, publish_tz: str = NEW_YORK) -> pd.DatetimeIndex:
    """When each daily label's value becomes visible: the next ``publish_tz`` midnight, in UTC us.

    Where that midnight does not exist or happens twice (DST rules of some zones; never New York,
    whose clocks change at 02:00) the later instant is taken: being late is safe, early is look-ahead.
    """
    next_midnight = _label_dates(index) + pd.Timedelta(days=1)
    try:
        local = next_midnight.tz_localize(
            publish_tz,
            ambiguous=np.zeros(len(next_midnight), dtype=bool),  # False = standard time = later
            nonexistent="shift_forward",
        )
    except Exception as err:
        raise DataError(
            f"publish_tz {publish_tz!r} is not usable ({err}); use an IANA zone such as {NEW_YORK!r}"
        ) from None
    return to_utc_us(local)


def _macro_frame(
    macro: pd.DataFrame | pd.Series, columns: Sequence[str] | str | None
) -> pd.DataFrame:
    """The selected macro columns as float64, or a DataError naming what is wrong."""
    if isinstance(macro, pd.Series):
        frame = macro.to_frame(name=macro.name if macro.name is not None else "value")
    elif isinstance(macro, pd.DataFrame):
        frame = macro
    else:
        raise DataError(
            f"macro: expected a DataFrame or Series indexed by timestamps, got {type(macro).__name__}"
        )
    if columns is None:
        if "close" in frame.columns:
            selected = ["close"]
        else:
            selected = [
                c
                for c in frame.columns
                if pd.api.types.is_numeric_dtype(frame[c])
                and not pd.api.types.is_bool_dtype(frame[c])
            ]
            if not selected:
                found = ", ".join(map(str, frame.columns)) or "none"
                raise DataError(
                    f"macro: no numeric column to align (found {found}); pass columns=[...]"
                )
    else:
        selected = [columns] if isinstance(columns, str) else list(dict.fromkeys(columns))
        if not selected:
            raise DataError("macro: columns=[] selects nothing; leave it out or name columns")
        missing = [c for c in selected if c not in frame.columns]
        if missing:
            found = ", ".join(map(str, frame.columns)) or "none"
            raise DataError(f"macro: no column(s) {', '.join(map(str, missing))} (found {found})")
    out = {}
    for col in selected:
        out[col] = numeric_column(frame[col], where="macro", column=col, index=frame.index)
    return pd.DataFrame(out, index=frame.index)


def align_to_ticker(
    ticker_bars: pd.DataFrame | pd.DatetimeIndex,
    macro: pd.DataFrame | pd.Series,
    *,
    macro_interval: str = "1d",
    ticker_bar: str = "1h",
    columns: Sequence[str] | str | None = None,
    naive_tz: str | None = UTC,
    macro_naive_tz: str | None = None,
    publish_tz: str = NEW_YORK,
) -> AlignedMacro:
    """Return the macro values each ticker bar may use at its close (see the module docstring).

    ``ticker_bars``: a frame (or its DatetimeIndex) of bars stamped at bar start, any tz and
    resolution; naive stamps are read in ``naive_tz`` (None refuses them). ``macro``: a frame (store
    schema or any numeric columns) or a series. ``macro_interval``: ``"1d"`` (calendar-day labels,
    visible from the next ``publish_tz`` midnight) or an intraday bar length (labels at bar start,
    visible at bar end). ``ticker_bar``: the ticker bar length (decision time = start + this).
    ``columns``: macro columns to align (default ``["close"]`` when present, else all numeric ones).
    ``macro_naive_tz``: zone of naive intraday macro labels (default ``naive_tz``).

    Raises ``DataError`` for unusable input: no numeric column, unknown interval or zone,
    non-datetime or NaT index, naive wall-clock times that DST makes ambiguous.
    """
    macro_step = parse_interval(macro_interval, what="macro_interval")
    bar_length = parse_interval(ticker_bar, what="ticker_bar")
    if bar_length is None:
        bar_length = pd.Timedelta(days=1)

    ticker_index = _normalise(_datetime_index(ticker_bars, "ticker bars"), naive_tz, "ticker bars")
    values = _macro_frame(macro, columns)
    macro_index = _datetime_index(values, "macro")

    if macro_step is None:
        # One row per calendar date: the key is the date, so "2024-01-02 00:00" and "2024-01-02
        # 16:00" (or two sources' labels of the same day) are duplicates of each other.
        keys = _label_dates(macro_index)
        visible = daily_visibility_utc(macro_index, publish_tz)
    else:
        zone = macro_naive_tz if macro_naive_tz is not None else naive_tz
        keys = _normalise(macro_index, zone, "macro")
        visible = keys + macro_step

    # Rows with no value in any selected column carry nothing (yf.download's NaN rows): drop them
    # before de-duplicating so they never hide a real value for the same label.
    has_value = values.notna().any(axis=1).to_numpy()
    keep_last = ~pd.Index(keys[has_value]).duplicated(keep="last")
    vis_us = visible.asi8[has_value][keep_last]
    table = values.to_numpy()[has_value][keep_last]
    order = np.argsort(vis_us, kind="stable")
    vis_us, table = vis_us[order], table[order]

    # Decision time of each bar in int64 microseconds: both sides are UTC us now, so plain integer
    # comparisons replace any datetime comparison (the crash class is gone by construction).
    decide_us = (ticker_index + bar_length).asi8
    out: dict[str, np.ndarray] = {}
    for j, col in enumerate(values.columns):
        present = ~np.isnan(table[:, j])
        col_vis, col_vals = vis_us[present], table[present, j]
        # Same semantics as pd.merge_asof(direction="backward", allow_exact_matches=True) on the
        # visibility time, without requiring the ticker index to be sorted or unique.
        pos = np.searchsorted(col_vis, decide_us, side="right") - 1
        picked = col_vals[np.clip(pos, 0, None)] if len(col_vals) else np.full(len(pos), np.nan)
        out[col] = np.where(pos >= 0, picked, np.nan).astype("float64")

    frame = pd.DataFrame(out, index=ticker_index, columns=list(values.columns))
    if len(vis_us):
        first_us = int(vis_us[0])
        first_visible = pd.Timestamp(first_us, unit="us", tz=UTC).as_unit("us")
        before = int(np.count_nonzero(decide_us < first_us))
    else:
        first_visible = None
        before = len(ticker_index)
    return AlignedMacro(frame=frame, bars_before_first=before, first_visible_utc=first_visible)
