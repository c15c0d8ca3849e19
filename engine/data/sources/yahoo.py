"""Yahoo Finance through yfinance: daily macro series (``^VIX``, ``^TNX``...) and Yahoo price bars.

yfinance fails quietly: an unknown symbol, a range Yahoo refuses or a rate limit usually ends as a
logged message and an empty (or all-NaN) frame. This layer turns each of those into a
``SourceError`` that names the symbol and says what to do, and returns frames in the store's schema
(:mod:`engine.data.store`): float64 ``open high low close volume`` indexed by a UTC microsecond
``DatetimeIndex`` named ``timestamp``.

Why ``yf.Ticker(symbol).history()`` and not ``yf.download()``: for one symbol ``download`` only wraps
``Ticker.history`` and adds problems: it catches every exception, ``YFRateLimitError`` included, and
returns an empty or all-NaN frame instead; it returns MultiIndex columns by default; it strips the
time zone from daily data (``ignore_tz``) so the exchange's date is no longer checkable; it starts
threads and a progress bar; and under pandas 3 it warns (``inplace`` deprecations). ``Ticker.history``
re-raises ``YFRateLimitError`` (so it can be retried), returns flat columns and a tz-aware index in
the exchange's zone. The normaliser still accepts ``download``-shaped frames (MultiIndex, naive
index, NaN columns) so recorded or future shapes are handled, not trusted.

Labels:

- daily (and longer) rows are labelled by their date at UTC midnight: yfinance labels ``^TNX``'s
  2024-01-02 as ``2024-01-02 00:00-06:00`` (America/Chicago) and a Tokyo index's as ``00:00+09:00``;
  both are stored as ``2024-01-02 00:00 UTC`` (the date in the label's own zone, never the UTC date
  of the instant, which would move Tokyo rows to the previous day);
- intraday rows keep their bar START instant in UTC. Yahoo's hourly bars for US equities start at
  :30 (09:30, 10:30 ... 15:30, the last one 30 minutes long) while Alpaca's start at :00, so the two
  are not interchangeable bar-for-bar; :func:`engine.data.macro.align_to_ticker` handles either because it
  works from bar ends.

Limits: Yahoo serves ``1h``/``60m`` bars for the last 730 days only (minute bars: 60 days, ``1m``:
30 days). Beyond that yfinance logs and returns nothing, so :func:`check_yahoo_range` refuses such a
request before any download and points to ``--source alpaca``, which serves 5+ years of hourly bars.

yfinance is imported lazily (the CLI starts faster without it) and every call goes through the
module attribute ``yfinance.Ticker``, so tests monkeypatch ``yfinance.Ticker``, or pass ``client=``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from engine.data.store import BAR_COLUMNS, INDEX_NAME, normalize_bars
from engine.errors import DataError, SourceError
from engine.timeutil import parse_utc, to_utc_us, utc_now

__all__ = [
    "DAILY_INTERVALS",
    "INTRADAY_LIMIT_DAYS",
    "check_yahoo_range",
    "fetch_bars",
    "fetch_macro",
    "frame_from_yfinance",
]

log = logging.getLogger(__name__)

# How far back Yahoo serves each intraday interval, in days before now. 1h/60m is the limit that
# matters here (the seed's "Yahoo only has 2 years of hourly bars"); the minute limits are Yahoo's
# own (yfinance's scrapers/history.py uses the same numbers).
INTRADAY_LIMIT_DAYS: dict[str, int] = {
    "1h": 730,
    "60m": 730,
    "90m": 60,
    "30m": 60,
    "15m": 60,
    "5m": 60,
    "2m": 60,
    "1m": 30,
}
DAILY_INTERVALS: frozenset[str] = frozenset({"1d", "5d", "1wk", "1mo", "3mo"})
YAHOO_HOURLY_LIMIT_DAYS = 730

DEFAULT_RETRIES = 3  # extra attempts after a YFRateLimitError
DEFAULT_BACKOFF_S = 5.0  # first wait, doubled each retry: 5 s, 10 s, 20 s

# yfinance column names -> store names; anything else (Dividends, Stock Splits...) is dropped.
_RENAME = {
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "volume": "volume",
}
# Every field name yfinance may put in its price level.
_KNOWN_FIELDS = frozenset(_RENAME) | {"dividends", "stock splits", "capital gains", "repaired?"}

Start = str | date | datetime | pd.Timestamp


def _yfinance(client: ModuleType | Any | None) -> Any:
    """The yfinance module (or the injected stand-in), imported on first use."""
    return client if client is not None else importlib.import_module("yfinance")


def _rate_limit_error() -> type[BaseException]:
    from yfinance.exceptions import YFRateLimitError

    return YFRateLimitError


def _check_interval(interval: str) -> str:
    key = str(interval).strip().lower()
    if key not in DAILY_INTERVALS and key not in INTRADAY_LIMIT_DAYS:
        valid = ", ".join([*sorted(DAILY_INTERVALS), *INTRADAY_LIMIT_DAYS])
        raise SourceError(f"Yahoo interval {interval!r} is not supported; use one of {valid}")
    return key


def _parse_time(value: Start, what: str) -> pd.Timestamp:
    try:
        return parse_utc(value)  # type: ignore[arg-type]  # pd.Timestamp takes str, date, datetime
    except (TypeError, ValueError) as err:
        raise SourceError(
            f"{what} {value!r} is not a date or time ({err}); use YYYY-MM-DD"
        ) from None


def check_yahoo_range(interval: str, start: Start, now: Start | None = None) -> None:
    """Refuse, before any download, an intraday request reaching further back than Yahoo serves.

    ``interval``: a Yahoo interval (``1h``, ``60m``, ``5m``, ``1d``...). ``start``: first bar wanted
    (naive = UTC). ``now``: the reference time (default: the current UTC time). Daily and longer
    intervals are never limited. Raises ``SourceError`` (one line) otherwise.
    """
    key = _check_interval(interval)
    if key in DAILY_INTERVALS:
        return
    start_ts = _parse_time(start, "start")
    now_ts = utc_now() if now is None else _parse_time(now, "now")
    limit = INTRADAY_LIMIT_DAYS[key]
    back = now_ts - start_ts
    if back > pd.Timedelta(days=limit):
        # ceil: the first whole day that is inside the window
        earliest = (now_ts - pd.Timedelta(days=limit)).ceil("D").date()
        scope = (
            "its limit for intraday bars"
            if limit == YAHOO_HOURLY_LIMIT_DAYS
            else f"and intraday bars for {YAHOO_HOURLY_LIMIT_DAYS} days at most"
        )
        raise SourceError(
            f"Yahoo serves {key} bars only for the last {limit} days ({scope}); start "
            f"{start_ts.date()} is {back.days} days back: start on or after {earliest}, "
            "or use --source alpaca for 5+ years of hourly bars"
        )


def _flatten_columns(raw: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Single-level columns for ``symbol`` from a frame that may have yf.download's MultiIndex.

    ``yf.download`` builds ("Price", "Ticker") columns (or ("Ticker", "Price") with
    ``group_by="ticker"``); the price level is found by its names rather than by position.
    """
    if not isinstance(raw.columns, pd.MultiIndex):
        return raw
    if raw.columns.nlevels != 2:
        raise SourceError(
            f"{symbol}: yfinance returned {raw.columns.nlevels}-level columns; expected 1 or 2"
        )
    levels = [raw.columns.get_level_values(i) for i in range(2)]
    # By name first (yf.download names them "Price" and "Ticker"); else the level made only of
    # field names, so a ticker that is itself a field name (OPEN, Opendoor) cannot fool it.
    names = [str(n).lower() for n in raw.columns.names]
    if "price" in names:
        price_level = names.index("price")
    else:
        candidates = [
            i
            for i, values in enumerate(levels)
            if all(str(v).strip().lower() in _KNOWN_FIELDS for v in values)
        ]
        if len(candidates) > 1:  # e.g. the only ticker is OPEN: that level is the ticker level
            candidates = [
                i for i in candidates if {str(v).upper() for v in levels[i]} != {symbol.upper()}
            ]
        if len(candidates) != 1:
            raise SourceError(
                f"{symbol}: cannot tell yfinance's price level from its ticker level in "
                f"columns {list(raw.columns)[:4]}..."
            )
        price_level = candidates[0]
    ticker_level = 1 - price_level
    tickers = list(dict.fromkeys(str(t) for t in levels[ticker_level]))
    if len(tickers) == 1:
        chosen = tickers[0]
    else:
        matches = [t for t in tickers if t.upper() == symbol.upper()]
        if not matches:
            raise SourceError(
                f"{symbol}: yfinance returned columns for {', '.join(tickers)} but not {symbol}"
            )
        chosen = matches[0]
    mask = np.asarray([str(t) == chosen for t in levels[ticker_level]])
    out = raw.loc[:, mask]
    out.columns = out.columns.get_level_values(price_level)
    return out


def _daily_labels(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Each row's date in its own zone (naive: as is), at UTC midnight, microseconds."""
    local = index.tz_localize(None) if index.tz is not None else index
    return local.as_unit("us").normalize().tz_localize("UTC")


def frame_from_yfinance(
    raw: pd.DataFrame | None,
    symbol: str,
    interval: str,
    *,
    auto_adjust: bool,
    start: Start | None = None,
    end: Start | None = None,
    reason: str | None = None,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """Turn what yfinance returned into the store's schema, or raise ``SourceError`` naming ``symbol``.

    Accepts ``Ticker.history`` output (flat columns, tz-aware exchange index) and ``yf.download``
    output (MultiIndex columns, naive daily index, NaN columns for failed symbols). Rows are kept in
    ``[start, end)`` by label (start/end naive = UTC). ``reason`` (what yfinance logged, if known) is
    added to the empty-result message. ``allow_empty=True`` returns an empty store frame instead of
    raising when there are no rows (an ``--update`` over a weekend); all-NaN output still raises.
    The frame's ``attrs`` record source, symbol, interval, auto_adjust and the zone yfinance
    labelled the rows in.
    """
    key = _check_interval(interval)
    daily = key in DAILY_INTERVALS
    attrs = {"source": "yahoo", "symbol": symbol, "interval": key, "auto_adjust": bool(auto_adjust)}
    if raw is None or not isinstance(raw, pd.DataFrame) or raw.empty:
        if allow_empty:
            return _empty_store_frame({**attrs, "source_tz": None})
        why = f" (yfinance: {reason})" if reason else ""
        raise SourceError(
            f"{symbol}: Yahoo returned no {key} rows{why}; check the symbol and the date range "
            "(intraday history is limited), or wait and retry if Yahoo is rate-limiting"
        )
    frame = _flatten_columns(raw, symbol)
    renamed = {
        c: _RENAME[str(c).strip().lower()]
        for c in frame.columns
        if str(c).strip().lower() in _RENAME
    }
    frame = frame.loc[:, list(renamed)].rename(columns=renamed)
    frame = frame.loc[:, ~frame.columns.duplicated(keep="first")]
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, raw.columns)) or "none"
        raise SourceError(
            f"{symbol}: yfinance output lacks {', '.join(missing)} (columns: {found}); "
            "yfinance's format may have changed"
        )
    prices = frame[["open", "high", "low", "close"]].apply(pd.to_numeric, errors="coerce")
    empty_columns = [c for c in prices.columns if prices[c].isna().all()]
    if len(empty_columns) == len(prices.columns):
        # What yf.download leaves for a symbol whose request failed (it swallows YFRateLimitError).
        raise SourceError(
            f"{symbol}: Yahoo returned {len(frame)} rows with no prices (all NaN), which is how "
            "yfinance reports a rate limit or a failed request; wait a few minutes and retry"
        )
    if empty_columns:
        raise SourceError(
            f"{symbol}: Yahoo returned no values at all in column(s) {', '.join(empty_columns)}; "
            "the series is unusable, check the symbol"
        )
    # Rows without any price (Yahoo pads holidays/halts) carry nothing; partial rows are kept so
    # `dataset check` can report them.
    frame = frame.loc[prices.notna().any(axis=1).to_numpy()]

    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        raise SourceError(
            f"{symbol}: yfinance returned a {type(index).__name__} index, not timestamps"
        )
    source_tz = str(index.tz) if index.tz is not None else "naive"
    if daily:
        labels = _daily_labels(index)
    elif index.tz is None:
        # Only yf.download(ignore_tz=True) does this; the wall clock's zone is unknowable here.
        raise SourceError(
            f"{symbol}: yfinance returned naive {key} timestamps, so their time zone is unknown; "
            "fetch through Ticker.history (tz-aware) instead"
        )
    else:
        labels = to_utc_us(index)
    frame = frame.set_axis(labels, axis=0)
    try:
        out = normalize_bars(frame, where=f"yahoo {symbol}", sort=True)
    except DataError as err:
        raise SourceError(str(err)) from None
    if start is not None:
        out = out[out.index >= _parse_time(start, "start")]
    if end is not None:
        out = out[out.index < _parse_time(end, "end")]
    out.attrs = {**attrs, "source_tz": source_tz}
    if out.empty and allow_empty:
        return _empty_store_frame(out.attrs)
    if out.empty:
        raise SourceError(
            f"{symbol}: Yahoo returned {key} rows, but none between {start} and {end}; "
            "check the date range"
        )
    out.index.name = INDEX_NAME
    return out


def _empty_store_frame(attrs: dict[str, object]) -> pd.DataFrame:
    index = pd.DatetimeIndex([], tz="UTC", name=INDEX_NAME).as_unit("us")
    out = pd.DataFrame({c: np.empty(0, dtype="float64") for c in BAR_COLUMNS}, index=index)
    out.attrs = dict(attrs)
    return out


def _last_yfinance_error(ticker: Any) -> str | None:
    """What yfinance logged for the last history() call, if this version keeps it (private API)."""
    history = getattr(ticker, "_price_history", None)
    message = getattr(history, "_last_error", None)
    return str(message) if message else None


def _history(
    symbol: str,
    interval: str,
    start: Start,
    end: Start | None,
    *,
    auto_adjust: bool,
    prepost: bool,
    timeout_s: float,
    retries: int,
    backoff_s: float,
    client: ModuleType | Any | None,
    sleep: Callable[[float], None],
    allow_empty: bool,
) -> pd.DataFrame:
    """Download with ``Ticker.history``, retrying rate limits, and normalise the result."""
    key = _check_interval(interval)
    check_yahoo_range(key, start)  # before importing or calling yfinance at all
    start_ts = _parse_time(start, "start")
    end_ts = _parse_time(end, "end") if end is not None else None
    if end_ts is not None and end_ts <= start_ts:
        raise SourceError(f"{symbol}: end {end_ts} is not after start {start_ts}")

    if key in DAILY_INTERVALS:
        # yfinance reads a YYYY-MM-DD string as midnight in the exchange's zone, which is what a
        # daily range means; the exclusive end becomes the day after end's date (then clipped).
        req_start: object = start_ts.date().isoformat()
        req_end: object = (
            (end_ts.date() + timedelta(days=1)).isoformat() if end_ts is not None else None
        )
    else:
        # Tz-aware datetimes are unambiguous instants; yfinance converts them to the exchange zone.
        req_start = start_ts.to_pydatetime()
        req_end = end_ts.to_pydatetime() if end_ts is not None else None

    yf = _yfinance(client)
    rate_limited = _rate_limit_error()
    waits = [backoff_s * 2**i for i in range(max(0, retries))]
    attempt = 0
    while True:
        ticker = yf.Ticker(symbol)
        try:
            raw = ticker.history(
                start=req_start,
                end=req_end,
                interval=key,
                auto_adjust=auto_adjust,  # explicit: yfinance's default (True) changed before
                actions=False,  # no Dividends / Stock Splits columns
                prepost=prepost,
                repair=False,  # repairs fetch more data at finer intervals: slow, surprising
                keepna=False,
                rounding=False,
                timeout=timeout_s,
            )
            break
        except rate_limited:
            if attempt >= len(waits):
                raise SourceError(
                    f"{symbol}: Yahoo rate-limited the request (YFRateLimitError) "
                    f"{attempt + 1} times; wait a few minutes and retry, with fewer symbols at once"
                ) from None
            log.warning("%s: Yahoo rate limit, retrying in %.0f s", symbol, waits[attempt])
            sleep(waits[attempt])
            attempt += 1
        except SourceError:
            raise
        except Exception as err:
            first_line = (str(err).splitlines() or [""])[0]
            raise SourceError(
                f"{symbol}: Yahoo request failed ({type(err).__name__}: {first_line}); "
                "check the network and the symbol, then retry"
            ) from None
    return frame_from_yfinance(
        raw,
        symbol,
        key,
        auto_adjust=auto_adjust,
        start=start_ts,
        end=end_ts,
        reason=_last_yfinance_error(ticker),
        allow_empty=allow_empty,
    )


def fetch_macro(
    symbol: str,
    start: Start,
    end: Start | None = None,
    interval: str = "1d",
    *,
    auto_adjust: bool = True,
    timeout_s: float = 30.0,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
    client: ModuleType | Any | None = None,
    sleep: Callable[[float], None] = time.sleep,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """Download one macro series (``^VIX``, ``^TNX``, ``DX-Y.NYB``...) in the store's schema.

    ``start``/``end``: the half-open range ``[start, end)`` of labels (dates or times; naive = UTC;
    ``end=None`` = up to now, which may include today's still-changing row). ``interval``: ``1d`` by
    default; daily rows are labelled by their date at UTC midnight. ``auto_adjust`` is passed to
    yfinance explicitly and recorded in ``frame.attrs``. Rate limits are retried ``retries`` times
    after waiting ``backoff_s``, then ``2 * backoff_s``... seconds. ``client``: a yfinance stand-in.
    ``allow_empty``: return an empty frame, not a ``SourceError``, when Yahoo has no rows in the
    range (incremental updates); Yahoo cannot tell that apart from an unknown symbol.
    """
    return _history(
        symbol,
        interval,
        start,
        end,
        auto_adjust=auto_adjust,
        prepost=False,
        timeout_s=timeout_s,
        retries=retries,
        backoff_s=backoff_s,
        client=client,
        sleep=sleep,
        allow_empty=allow_empty,
    )


def fetch_bars(
    symbol: str,
    start: Start,
    end: Start | None = None,
    interval: str = "1h",
    *,
    auto_adjust: bool = True,
    prepost: bool = False,
    timeout_s: float = 30.0,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
    client: ModuleType | Any | None = None,
    sleep: Callable[[float], None] = time.sleep,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """Download Yahoo price bars in the store's schema (index: bar start, UTC us).

    Intraday requests reaching back further than Yahoo serves (730 days for ``1h``) fail before any
    download: use ``--source alpaca`` for long hourly history. Yahoo's hourly bars start at :30 in
    regular hours (09:30 ... 15:30 New York, the last one 30 minutes); ``prepost=True`` adds pre-
    and post-market bars. Other arguments as in :func:`fetch_macro`.
    """
    return _history(
        symbol,
        interval,
        start,
        end,
        auto_adjust=auto_adjust,
        prepost=prepost,
        timeout_s=timeout_s,
        retries=retries,
        backoff_s=backoff_s,
        client=client,
        sleep=sleep,
        allow_empty=allow_empty,
    )
