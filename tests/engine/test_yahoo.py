"""The Yahoo layer without a network: yfinance is replaced at its API boundary (``yf.Ticker``).

Frames mimic what yfinance 1.x returns: ``Ticker.history`` (flat columns, index in the exchange's
zone, ``Volume`` int64) and ``yf.download`` (MultiIndex ("Price", "Ticker"), naive daily index,
NaN columns for a failed symbol). The download shapes are produced by running the real
``yf.download`` over a fake ``Ticker``, so they are what that code really builds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import yfinance
import yfinance.multi
from yfinance.exceptions import YFRateLimitError
from yfinance.multi import download as real_download

from engine.data.macro import align_to_ticker
from engine.data.sources import yahoo
from engine.errors import SourceError
from engine.timeutil import utc_now


def history_frame(dates, tz="America/Chicago", closes=None, *, intraday=False, adj=False):
    """What Ticker.history returns: Open High Low Close Volume, index in the exchange's zone."""
    index = pd.DatetimeIndex(dates)
    if tz is not None:
        index = index.tz_localize(tz)
    index = index.as_unit("us").rename("Datetime" if intraday else "Date")
    n = len(index)
    closes = (
        np.linspace(4.0, 4.0 + 0.01 * (n - 1), n) if closes is None else np.asarray(closes, float)
    )
    data = {
        "Open": closes - 0.01,
        "High": closes + 0.02,
        "Low": closes - 0.02,
        "Close": closes,
        "Volume": np.zeros(n, dtype=np.int64),
    }
    if adj:
        data["Adj Close"] = closes * 0.98
    return pd.DataFrame(data, index=index)


class FakeTicker:
    def __init__(self, owner: FakeYahoo, symbol: str):
        self.owner = owner
        self.ticker = symbol
        self._price_history = None

    def history(self, **kwargs):
        self.owner.calls.append((self.ticker, kwargs))
        outcome = self.owner.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, tuple):  # (frame, what yfinance logged)
            outcome, message = outcome
            self._price_history = type("PH", (), {"_last_error": message})()
        return outcome


class FakeYahoo:
    """Scripted outcomes for successive history() calls, with every call recorded."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, dict]] = []

    def Ticker(self, symbol):  # noqa: N802 - yfinance's name
        return FakeTicker(self, symbol)


@pytest.fixture
def fake(monkeypatch):
    """Install a FakeYahoo as yfinance.Ticker; yf.download must not be used at all."""
    box = FakeYahoo()
    monkeypatch.setattr(yfinance, "Ticker", box.Ticker)

    def no_download(*args, **kwargs):
        raise AssertionError("yf.download must not be called")

    monkeypatch.setattr(yfinance, "download", no_download)
    return box


@pytest.fixture
def sleeps():
    return []


def recorded_download(monkeypatch, per_symbol: dict, tickers: str, **kwargs) -> pd.DataFrame:
    """Run the real yf.download over fake tickers: its exact output shapes, no network."""

    class MultiFake:
        def __init__(self, symbol):
            self.ticker = symbol
            self._price_history = None

        def history(self, **kw):
            outcome = per_symbol[self.ticker]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome.copy()

    monkeypatch.setattr(yfinance.multi, "Ticker", MultiFake)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # yfinance's own pandas-3 deprecation warnings
        # the real function even where a test has replaced yfinance.download
        return real_download(tickers, progress=False, threads=False, auto_adjust=True, **kwargs)


def assert_store_schema(frame: pd.DataFrame):
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert (frame.dtypes == np.float64).all()
    assert str(frame.index.dtype) == "datetime64[us, UTC]"
    assert frame.index.name == "timestamp"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique


# ---------------------------------------------------------------- daily macro


def test_tnx_chicago_history_is_stored_by_date_at_utc_midnight(fake, sleeps):
    fake.outcomes.append(history_frame(["2024-01-02", "2024-01-03", "2024-01-04"]))
    out = yahoo.fetch_macro("^TNX", "2024-01-02", "2024-01-05", sleep=sleeps.append)
    assert_store_schema(out)
    assert list(out.index) == list(
        pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"], tz="UTC")
    )
    assert out["close"].to_list() == [4.0, 4.01, 4.02]
    assert out.attrs == {
        "source": "yahoo",
        "symbol": "^TNX",
        "interval": "1d",
        "auto_adjust": True,
        "source_tz": "America/Chicago",
    }
    ((symbol, kwargs),) = fake.calls
    assert symbol == "^TNX"
    # explicit choices, and daily ranges as exchange-local dates (end exclusive, padded one day)
    assert (
        kwargs["auto_adjust"] is True and kwargs["actions"] is False and kwargs["repair"] is False
    )
    assert (
        kwargs["interval"] == "1d"
        and kwargs["start"] == "2024-01-02"
        and kwargs["end"] == "2024-01-06"
    )
    assert sleeps == []


def test_tokyo_labels_keep_their_tokyo_date(fake):
    # 2024-01-05 00:00+09:00 is 2024-01-04 15:00 UTC; the row still describes Jan 5.
    fake.outcomes.append(
        history_frame(["2024-01-04", "2024-01-05"], tz="Asia/Tokyo", closes=[1, 2])
    )
    out = yahoo.fetch_macro("^N225", "2024-01-01")
    assert list(out.index.strftime("%Y-%m-%d %H:%M")) == ["2024-01-04 00:00", "2024-01-05 00:00"]
    assert out.attrs["source_tz"] == "Asia/Tokyo"


def test_naive_daily_index_is_a_date(fake):
    frame = history_frame(["2024-01-02", "2024-01-03"], tz=None).astype({"Volume": float})
    frame.index = frame.index.as_unit("s")
    fake.outcomes.append(frame)
    out = yahoo.fetch_macro("^VIX", "2024-01-01")
    assert_store_schema(out)
    assert list(out.index) == list(pd.DatetimeIndex(["2024-01-02", "2024-01-03"], tz="UTC"))
    assert out.attrs["source_tz"] == "naive"


def test_rows_are_clipped_to_the_half_open_range_and_sorted_deduplicated(fake):
    frame = history_frame(
        ["2024-01-05", "2024-01-02", "2024-01-03", "2024-01-03", "2024-01-08"],
        closes=[5, 2, 3, 3.5, 8],
    )
    fake.outcomes.append(frame)
    out = yahoo.fetch_macro("^TNX", "2024-01-03", "2024-01-08")
    assert list(out.index.day) == [3, 5]
    assert out["close"].to_list() == [3.5, 5.0]  # the later duplicate wins


def test_auto_adjust_false_is_passed_and_recorded_and_adj_close_dropped(fake):
    fake.outcomes.append(
        history_frame(["2024-01-02"], tz="America/New_York", closes=[100], adj=True)
    )
    out = yahoo.fetch_macro("SPY", "2024-01-02", auto_adjust=False)
    assert fake.calls[0][1]["auto_adjust"] is False
    assert out.attrs["auto_adjust"] is False
    assert out["close"].to_list() == [100.0]  # the raw close, not Adj Close
    assert_store_schema(out)


def test_output_aligns_to_alpaca_bars(fake):
    fake.outcomes.append(history_frame(["2024-01-02", "2024-01-03"], closes=[3.9, 4.0]))
    tnx = yahoo.fetch_macro("^TNX", "2024-01-02")
    bars = pd.date_range("2024-01-03 14:00", periods=2, freq="24h", tz="UTC", unit="us")
    assert align_to_ticker(bars, tnx).frame["close"].to_list() == [3.9, 4.0]


# ---------------------------------------------------------------- download-shaped output


def test_multiindex_price_ticker_columns_are_flattened(fake, monkeypatch):
    recorded = recorded_download(
        monkeypatch,
        {"^TNX": history_frame(["2024-01-02", "2024-01-03"])},
        "^TNX",
        start="2024-01-01",
    )
    assert isinstance(recorded.columns, pd.MultiIndex)
    assert list(recorded.columns.names) == ["Price", "Ticker"]
    assert recorded.index.tz is None  # yf.download strips the zone from daily data
    fake.outcomes.append(recorded)
    out = yahoo.fetch_macro("^TNX", "2024-01-01")
    assert_store_schema(out)
    assert out["close"].to_list() == [4.0, 4.01]


def test_multiindex_with_several_tickers_picks_the_symbol_or_says_it_is_missing(monkeypatch):
    recorded = recorded_download(
        monkeypatch,
        {
            "^TNX": history_frame(["2024-01-02"], closes=[4.2]),
            "^VIX": history_frame(["2024-01-02"], closes=[13]),
        },
        "^TNX ^VIX",
        start="2024-01-01",
    )
    out = yahoo.frame_from_yfinance(recorded, "^vix", "1d", auto_adjust=True)
    assert out["close"].to_list() == [13.0]
    by_ticker = recorded.swaplevel(0, 1, axis=1)  # group_by="ticker" order
    assert yahoo.frame_from_yfinance(by_ticker, "^TNX", "1d", auto_adjust=True)[
        "close"
    ].to_list() == [4.2]
    with pytest.raises(
        SourceError, match=r"^\^DXY: yfinance returned columns for .* but not \^DXY$"
    ):
        yahoo.frame_from_yfinance(recorded, "^DXY", "1d", auto_adjust=True)


def test_download_rate_limited_symbol_is_all_nan_and_refused(monkeypatch):
    # yf.download swallows YFRateLimitError: the failed symbol becomes NaN columns.
    recorded = recorded_download(
        monkeypatch,
        {"^TNX": history_frame(["2024-01-02", "2024-01-03"]), "^VIX": YFRateLimitError()},
        "^TNX ^VIX",
        start="2024-01-01",
    )
    assert recorded.xs("^VIX", axis=1, level="Ticker")["Close"].isna().all()
    with pytest.raises(
        SourceError, match=r"^\^VIX: Yahoo returned 2 rows with no prices \(all NaN\)"
    ):
        yahoo.frame_from_yfinance(recorded, "^VIX", "1d", auto_adjust=True)
    # alone, the same failure is an empty frame
    alone = recorded_download(monkeypatch, {"^VIX": YFRateLimitError()}, "^VIX", start="2024-01-01")
    assert alone.empty
    with pytest.raises(SourceError, match=r"^\^VIX: Yahoo returned no 1d rows"):
        yahoo.frame_from_yfinance(alone, "^VIX", "1d", auto_adjust=True)


def test_all_nan_history_is_refused(fake):
    frame = history_frame(["2024-01-02", "2024-01-03"])
    frame[["Open", "High", "Low", "Close"]] = np.nan
    fake.outcomes.append(frame)
    with pytest.raises(SourceError, match=r"^\^TNX: .*no prices \(all NaN\).*retry$"):
        yahoo.fetch_macro("^TNX", "2024-01-01")


def test_one_all_nan_column_is_refused(fake):
    frame = history_frame(["2024-01-02", "2024-01-03"])
    frame["Close"] = np.nan
    fake.outcomes.append(frame)
    with pytest.raises(
        SourceError, match=r"^\^TNX: Yahoo returned no values at all in column\(s\) close"
    ):
        yahoo.fetch_macro("^TNX", "2024-01-01")


def test_empty_frame_names_the_symbol_and_what_yfinance_logged(fake):
    empty = yfinance.utils.empty_df()
    fake.outcomes.append((empty, "possibly delisted; no price data found (1d 2024-01-01 -> None)"))
    with pytest.raises(SourceError) as info:
        yahoo.fetch_macro("^NOPE", "2024-01-01")
    message = str(info.value)
    assert message.startswith("^NOPE: Yahoo returned no 1d rows (yfinance: possibly delisted")
    assert "\n" not in message


def test_missing_columns_are_named(fake):
    fake.outcomes.append(history_frame(["2024-01-02"]).drop(columns=["Volume"]))
    with pytest.raises(SourceError, match=r"^\^TNX: yfinance output lacks volume"):
        yahoo.fetch_macro("^TNX", "2024-01-01")


# ---------------------------------------------------------------- rate limits and failures


def test_rate_limit_is_retried_with_backoff(fake, sleeps):
    fake.outcomes.extend([YFRateLimitError(), YFRateLimitError(), history_frame(["2024-01-02"])])
    out = yahoo.fetch_macro("^TNX", "2024-01-01", sleep=sleeps.append, backoff_s=2.0)
    assert len(out) == 1 and len(fake.calls) == 3
    assert sleeps == [2.0, 4.0]


def test_rate_limit_that_persists_becomes_a_source_error(fake, sleeps):
    fake.outcomes.extend([YFRateLimitError() for _ in range(4)])
    with pytest.raises(
        SourceError, match=r"^\^TNX: Yahoo rate-limited the request \(YFRateLimitError\) 4 times"
    ):
        yahoo.fetch_macro("^TNX", "2024-01-01", sleep=sleeps.append)
    assert sleeps == [5.0, 10.0, 20.0] and len(fake.calls) == 4


def test_other_yfinance_exceptions_become_one_line_source_errors(fake):
    fake.outcomes.append(ConnectionError("connection reset\nby peer"))
    with pytest.raises(
        SourceError, match=r"^SPY: Yahoo request failed \(ConnectionError: connection reset\);"
    ) as info:
        yahoo.fetch_macro("SPY", "2024-01-01")
    assert "\n" not in str(info.value)


def test_client_can_be_injected_instead_of_monkeypatching():
    box = FakeYahoo(history_frame(["2024-01-02"]))
    out = yahoo.fetch_macro("^TNX", "2024-01-01", client=box)
    assert len(out) == 1 and box.calls[0][0] == "^TNX"


# ---------------------------------------------------------------- intraday bars and the 730-day limit


def test_hourly_bars_keep_their_half_past_start_in_utc(fake):
    start = (utc_now() - pd.Timedelta(days=10)).normalize()
    day = (start + pd.Timedelta(days=2)).tz_convert("America/New_York").strftime("%Y-%m-%d")
    stamps = [f"{day} {h}:30" for h in (9, 10, 15)]
    fake.outcomes.append(
        history_frame(stamps, tz="America/New_York", closes=[1, 2, 3], intraday=True)
    )
    out = yahoo.fetch_bars("AAPL", start)
    assert_store_schema(out)
    assert (out.index.minute == 30).all()
    expected = pd.DatetimeIndex(stamps).tz_localize("America/New_York").tz_convert("UTC")
    assert list(out.index) == list(expected)
    kwargs = fake.calls[0][1]
    assert kwargs["interval"] == "1h" and kwargs["prepost"] is False
    assert kwargs["start"] == start.to_pydatetime() and kwargs["start"].tzinfo is not None


def test_naive_intraday_timestamps_are_refused(fake):
    start = utc_now() - pd.Timedelta(days=5)
    fake.outcomes.append(history_frame(["2024-01-02 09:30"], tz=None, intraday=True))
    with pytest.raises(SourceError, match=r"^AAPL: yfinance returned naive 1h timestamps"):
        yahoo.fetch_bars("AAPL", start)


def test_more_than_730_days_of_hourly_bars_fails_before_calling_yfinance(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("yfinance must not be called")

    monkeypatch.setattr(yfinance, "Ticker", must_not_run)
    monkeypatch.setattr(yfinance, "download", must_not_run)
    start = utc_now() - pd.Timedelta(days=800)
    for interval in ("1h", "60m"):
        with pytest.raises(SourceError) as info:
            yahoo.fetch_bars("AAPL", start, interval=interval)
        message = str(info.value)
        assert "730 days" in message and "--source alpaca" in message and "\n" not in message


def test_check_yahoo_range_limits():
    now = pd.Timestamp("2026-02-01 12:00", tz="UTC")
    yahoo.check_yahoo_range("1h", now - pd.Timedelta(days=729), now=now)
    yahoo.check_yahoo_range("1h", now - pd.Timedelta(days=730), now=now)
    with pytest.raises(
        SourceError, match=r"Yahoo serves 1h bars only for the last 730 days.*--source alpaca"
    ):
        yahoo.check_yahoo_range("1h", now - pd.Timedelta(days=731), now=now)
    with pytest.raises(SourceError, match=r"start on or after 2024-02-03"):
        yahoo.check_yahoo_range("60m", "2020-01-01", now=now)
    with pytest.raises(SourceError, match=r"5m bars only for the last 60 days"):
        yahoo.check_yahoo_range("5m", now - pd.Timedelta(days=61), now=now)
    yahoo.check_yahoo_range("1d", "1990-01-01", now=now)  # daily history is not limited
    with pytest.raises(SourceError, match=r"Yahoo interval '4h' is not supported"):
        yahoo.check_yahoo_range("4h", now, now=now)


def test_end_before_start_is_refused_without_a_download(fake):
    with pytest.raises(SourceError, match=r"^\^TNX: end .* is not after start"):
        yahoo.fetch_macro("^TNX", "2024-01-05", "2024-01-02")
    assert fake.calls == []


def test_allow_empty_returns_an_empty_store_frame_for_incremental_updates(fake):
    fake.outcomes.append(yfinance.utils.empty_df())
    out = yahoo.fetch_macro("^TNX", "2024-01-06", "2024-01-08", allow_empty=True)
    assert len(out) == 0
    assert_store_schema(out)
    # rows outside the range clip to nothing: also empty, not an error
    fake.outcomes.append(history_frame(["2024-01-05"]))
    assert len(yahoo.fetch_macro("^TNX", "2024-01-06", allow_empty=True)) == 0
    # all-NaN is still a failure (a rate limit in disguise)
    frame = history_frame(["2024-01-08"])
    frame[["Open", "High", "Low", "Close"]] = np.nan
    fake.outcomes.append(frame)
    with pytest.raises(SourceError, match="all NaN"):
        yahoo.fetch_macro("^TNX", "2024-01-06", allow_empty=True)


def test_a_ticker_named_like_a_field_does_not_confuse_the_levels():
    # Opendoor trades as OPEN: with group_by="ticker" and unnamed levels, level 0 is "OPEN".
    flat = history_frame(["2024-01-02"], tz=None, closes=[2.5])
    by_ticker = pd.concat({"OPEN": flat}, axis=1)
    assert by_ticker.columns.names == [None, None]
    out = yahoo.frame_from_yfinance(by_ticker, "OPEN", "1d", auto_adjust=True)
    assert out["close"].to_list() == [2.5]
    by_price = by_ticker.swaplevel(0, 1, axis=1)
    assert yahoo.frame_from_yfinance(by_price, "OPEN", "1d", auto_adjust=True)[
        "close"
    ].to_list() == [2.5]
