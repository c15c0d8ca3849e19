"""Alpaca hourly bars through the official alpaca-py SDK, with our own retry policy.

What the SDK does and what we change (alpaca-py 0.44, ``alpaca/common/rest.py``):

* ``StockHistoricalDataClient`` reads no environment variables: keys come from
  ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` here (:func:`credentials_from_env`).
* It follows ``next_page_token`` itself, one ``requests.Session.request`` per page, on the session
  it keeps in ``client._session``. We mount an :class:`~requests.adapters.HTTPAdapter` carrying a
  urllib3 ``Retry`` on that session, so one failed page mid-pagination is retried alone, with
  exponential backoff, jitter, a cap, a maximum number of attempts, and the server's
  ``Retry-After`` honoured (the SDK's own retry sleeps a fixed 3 s, ignores ``Retry-After`` and
  covers only 429/504; we switch it off so the backoff is ours alone).
* The SDK sends no timeout; the adapter adds one, so a stalled connection is retried, not waited
  on forever.
* Errors surface as ``alpaca.common.exceptions.APIError`` whose text is the response body; a body
  may echo request headers, so we build our own one-line :class:`~engine.errors.SourceError` with
  the keys redacted and the original exception suppressed (``from None``).

Output frames are in the store schema (:func:`engine.data.store.normalize_bars`): float64
``open high low close volume vwap trade_count``, UTC microsecond index ``timestamp`` holding bar
START times, sorted and deduplicated.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from engine.data.store import BAR_COLUMNS, INDEX_NAME, OPTIONAL_COLUMNS, normalize_bars
from engine.errors import SourceError
from engine.timeutil import parse_utc, utc_now

log = logging.getLogger(__name__)

ENV_KEY_ID = "APCA_API_KEY_ID"
ENV_SECRET_KEY = "APCA_API_SECRET_KEY"
ENV_DATA_URL = "APCA_API_DATA_URL"

FEEDS: tuple[str, ...] = ("iex", "sip")
ADJUSTMENTS: tuple[str, ...] = ("raw", "split", "dividend", "all")
RETRY_STATUSES: tuple[int, ...] = (429, 500, 502, 503, 504)

BAR_SECONDS = 3600
BAR = pd.Timedelta(seconds=BAR_SECONDS)
# Alpaca refuses SIP data from the last 15 minutes without a paid plan (403); one spare minute
# absorbs clock skew between us and them.
SIP_DELAY = pd.Timedelta(minutes=16)
COLUMNS: tuple[str, ...] = BAR_COLUMNS + OPTIONAL_COLUMNS

_MESSAGE_CHARS = 160  # how much of a server's error message we quote


@dataclass(frozen=True)
class RetryPolicy:
    """How HTTP 429/5xx and connection failures are retried (per page request).

    Retry ``n`` (1-based) waits ``backoff_s * 2**(n-1)`` seconds, stretched by up to ``jitter``
    (a fraction) at random and capped at ``backoff_max_s``; a ``Retry-After`` header (seconds or
    an HTTP date) replaces that wait, capped at ``retry_after_max_s``. ``max_attempts`` counts the
    first try. ``sleep`` is injectable so tests need not wait.
    """

    max_attempts: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    jitter: float = 0.25
    retry_after_max_s: float = 120.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based) when no Retry-After is given."""
        if retry_number < 1:
            return 0.0
        base = self.backoff_s * 2.0 ** (retry_number - 1)
        return float(min(self.backoff_max_s, base * (1.0 + self.jitter * random.random())))


class _PolicyRetry(Retry):
    """urllib3 ``Retry`` whose waits follow a :class:`RetryPolicy`.

    urllib3's own formula skips the wait before the first retry and calls ``time.sleep``
    directly; we want a wait every time (a 5xx storm should not get an immediate second hit) and
    an injectable sleep.
    """

    policy: RetryPolicy = RetryPolicy()

    def new(self, **kw: Any) -> _PolicyRetry:
        # urllib3 rebuilds the object after every attempt from its known fields only.
        fresh = super().new(**kw)
        fresh.policy = self.policy
        return fresh

    def get_backoff_time(self) -> float:
        return self.policy.backoff(len(self.history))

    def sleep(self, response: Any = None) -> None:
        wait: float | None = None
        if response is not None and self.respect_retry_after_header:
            try:
                wait = self.get_retry_after(response)
            except InvalidHeader:
                wait = None  # unparseable header: fall back to our backoff
            if wait:
                # Honour the server, within reason: a huge value would stall a build silently.
                wait = min(wait, self.policy.retry_after_max_s)
        if not wait:
            wait = self.get_backoff_time()
        last = self.history[-1] if self.history else None
        error = getattr(last, "error", None)
        status = getattr(last, "status", None) or (type(error).__name__ if error else "?")
        log.info(
            "alpaca: %s, retry %d/%d in %.2f s",
            status,
            len(self.history),
            self.policy.max_attempts - 1,
            wait,
        )
        if wait > 0:
            self.policy.sleep(wait)


class _TimeoutAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that supplies a timeout when the caller (the SDK) gives none."""

    def __init__(self, timeout: tuple[float, float], **kwargs: Any) -> None:
        self._default_timeout = timeout
        super().__init__(**kwargs)

    def send(self, request: Any, stream: bool = False, timeout: Any = None, **kwargs: Any) -> Any:
        return super().send(
            request,
            stream=stream,
            timeout=self._default_timeout if timeout is None else timeout,
            **kwargs,
        )


def credentials_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Return ``(key_id, secret_key)`` from ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``.

    Missing or empty variables raise one ``SourceError`` line naming every one that is missing
    (so a user with neither set fixes both at once), never a value.
    """
    env = os.environ if env is None else env
    values = {name: (env.get(name) or "").strip() for name in (ENV_KEY_ID, ENV_SECRET_KEY)}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise missing_keys_error(missing)
    return values[ENV_KEY_ID], values[ENV_SECRET_KEY]


def missing_keys_error(missing: Sequence[str]) -> SourceError:
    """The one-line error for unset key variables (``missing``: their names, in order)."""
    verb = "is" if len(missing) == 1 else "are"
    return SourceError(
        f"{' and '.join(missing)} {verb} not set; an Alpaca build needs both {ENV_KEY_ID} (API "
        f"key id) and {ENV_SECRET_KEY} (secret key): export {ENV_KEY_ID}=... "
        f"{ENV_SECRET_KEY}=... (free paper-trading keys work with --feed iex) and rerun"
    )


def resolve_base_url(
    base_url: str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The data API base URL: the argument, else ``APCA_API_DATA_URL``, else None (Alpaca's own).

    Plain ``http://`` is accepted only for loopback hosts, because the keys travel in headers.
    A trailing ``/v2`` is dropped (the SDK appends it).
    """
    env = os.environ if env is None else env
    url = (base_url or env.get(ENV_DATA_URL) or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(
            f"Alpaca data URL {url!r} is not an http(s) URL: set {ENV_DATA_URL} like "
            "https://data.alpaca.markets"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise SourceError(
            f"Alpaca data URL {url!r} is plain http to a remote host, which would send the API "
            "keys unencrypted: use https"
        )
    url = url.rstrip("/")
    if url.endswith("/v2"):
        url = url[: -len("/v2")]
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_feed(feed: str) -> str:
    if feed not in FEEDS:
        raise SourceError(f"feed {feed!r}: use one of {', '.join(FEEDS)}")
    return feed


def check_adjustment(adjustment: str) -> str:
    if adjustment not in ADJUSTMENTS:
        raise SourceError(f"adjustment {adjustment!r}: use one of {', '.join(ADJUSTMENTS)}")
    return adjustment


def clamp_end(end: pd.Timestamp, feed: str, now: pd.Timestamp | None = None) -> pd.Timestamp:
    """``end`` moved back so a query is allowed: for SIP at least 16 minutes before ``now``."""
    end = parse_utc(end)
    if feed == "sip":
        latest = (utc_now() if now is None else parse_utc(now)) - SIP_DELAY
        end = min(end, latest)
    return end


def empty_bars() -> pd.DataFrame:
    """A zero-row frame in the store schema (all columns, UTC microsecond index)."""
    index = pd.DatetimeIndex([], dtype="datetime64[us, UTC]", name=INDEX_NAME)
    return pd.DataFrame({c: np.array([], dtype="float64") for c in COLUMNS}, index=index)


class AlpacaBars:
    """An alpaca-py ``StockHistoricalDataClient`` with our retry policy, fetching one ticker at a time.

    Build it with :func:`make_client`. The keys are kept only to redact them from error text.
    """

    def __init__(
        self,
        sdk: StockHistoricalDataClient,
        *,
        retry: RetryPolicy,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.sdk = sdk
        self.retry = retry
        self._secrets = tuple(s for s in secrets if s)

    def __repr__(self) -> str:  # never show the keys
        return f"AlpacaBars(base_url={self.sdk._base_url!r})"

    def fetch_bars(
        self,
        ticker: str,
        start: pd.Timestamp | str,
        end: pd.Timestamp | str,
        *,
        feed: str = "iex",
        adjustment: str = "raw",
        now: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Hourly bars of ``ticker`` that start at or after ``start`` and have closed by ``end``.

        ``start``/``end`` are UTC (naive values read as UTC); for ``feed="sip"`` ``end`` is first
        clamped to 16 minutes before ``now``. Returns a store-schema frame (maybe empty). Raises
        ``SourceError`` (one line, no secrets) when Alpaca refuses or retries run out.
        """
        check_feed(feed)
        check_adjustment(adjustment)
        start = parse_utc(start)
        end = clamp_end(parse_utc(end), feed, now)
        if end - start < BAR:
            return empty_bars()
        request = StockBarsRequest(
            symbol_or_symbols=ticker,
            timeframe=TimeFrame.Hour,
            start=start.to_pydatetime(),
            # Alpaca's end is inclusive; the bar starting at ``end`` is dropped below.
            end=end.to_pydatetime(),
            adjustment=Adjustment(adjustment),
            feed=DataFeed(feed),
        )
        where = f"{ticker} {_fmt(start)}..{_fmt(end)}"
        try:
            barset = self.sdk.get_stock_bars(request)
        except APIError as err:
            raise self._api_error(err, where) from None
        except requests.RequestException as err:
            raise SourceError(
                f"alpaca: could not fetch {where} after {self.retry.max_attempts} attempts "
                f"({type(err).__name__}); check the network or {ENV_DATA_URL} and rerun "
                "(a build resumes after its last finished chunk)"
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise SourceError(
                f"alpaca: unexpected response for {where} ({type(err).__name__}); "
                "is the data URL an Alpaca market-data endpoint?"
            ) from None
        with warnings.catch_warnings():
            # alpaca-py 0.44 calls ``dropna(inplace=True)``, which pandas 3.1 deprecates; the
            # warning is the SDK's, not actionable by our users.
            warnings.filterwarnings("ignore", message=".*inplace keyword.*")
            df = barset.df
        frame = _barset_frame(df, ticker, where)
        # Keep only bars whose whole hour lies before ``end``: a bar still forming at ``end``
        # would be stored half-filled and never refetched.
        closed = frame.index + BAR <= end
        return frame[(frame.index >= start) & closed]

    def _api_error(self, err: APIError, where: str) -> SourceError:
        status = err.status_code
        attempts = self.retry.max_attempts if status in RETRY_STATUSES else 1
        # Redact before cutting to length, so no fragment of a key survives the cut.
        detail = self._redact(_server_message(self._redact(str(err))))
        if status in (401, 403):
            hint = (
                f"check {ENV_KEY_ID}/{ENV_SECRET_KEY} and that your plan covers this feed "
                "(recent SIP data needs a paid plan)"
            )
        elif status == 429:
            hint = "rate limited; wait a minute and rerun (the build resumes)"
        elif status is not None and status >= 500:
            hint = "Alpaca is failing; rerun later (the build resumes)"
        else:
            hint = "check the ticker and dates"
        text = f"alpaca: HTTP {status} for {where} after {attempts} attempt(s): {hint}"
        if detail:
            text += f" (server said: {detail})"
        return SourceError(text)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def make_client(
    api_key: str | None = None,
    secret_key: str | None = None,
    *,
    base_url: str | None = None,
    retry: RetryPolicy | None = None,
    env: Mapping[str, str] | None = None,
) -> AlpacaBars:
    """An :class:`AlpacaBars` client; keys default to the environment (see module docs).

    ``base_url`` (else ``APCA_API_DATA_URL``) points the SDK elsewhere (a proxy, a test server).
    """
    if api_key is None or secret_key is None:
        source = os.environ if env is None else env
        given = {ENV_KEY_ID: api_key, ENV_SECRET_KEY: secret_key}
        api_key, secret_key = credentials_from_env(
            {name: value or source.get(name) or "" for name, value in given.items()}
        )
    retry = retry or RetryPolicy()
    if retry.max_attempts < 1:
        raise SourceError(f"retry max_attempts {retry.max_attempts}: use 1 or more")
    url = resolve_base_url(base_url, env)
    sdk = StockHistoricalDataClient(api_key, secret_key, url_override=url)
    _install_retry(sdk, retry)
    return AlpacaBars(sdk, retry=retry, secrets=(api_key, secret_key))


def _install_retry(sdk: StockHistoricalDataClient, policy: RetryPolicy) -> None:
    """Mount our retrying adapter on the SDK's session and turn the SDK's own retry off."""
    session = getattr(sdk, "_session", None)
    if not isinstance(session, requests.Session) or not hasattr(sdk, "_retry"):
        raise SourceError(
            "this alpaca-py version keeps its HTTP session elsewhere; install alpaca-py 0.44 "
            "(pip install 'alpaca-py==0.44.*')"
        )
    retry = _PolicyRetry(
        total=policy.max_attempts - 1,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        # Hand the last 429/5xx back to the SDK, which raises an APIError carrying the status.
        raise_on_status=False,
        redirect=0,
    )
    retry.policy = policy
    adapter = _TimeoutAdapter((policy.connect_timeout_s, policy.read_timeout_s), max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # The SDK loops ``while retry >= 0`` and re-raises only when ``retry > 0``: zero means one
    # attempt at its level, so every retry happens (and is counted) in the adapter.
    sdk._retry = 0
    sdk._retry_codes = []


def _barset_frame(df: pd.DataFrame, ticker: str, where: str) -> pd.DataFrame:
    """``BarSet.df`` -> store schema. An empty result has no ``(symbol, timestamp)`` MultiIndex."""
    if df.empty or not isinstance(df.index, pd.MultiIndex):
        return empty_bars()
    if ticker not in df.index.get_level_values(0):
        return empty_bars()
    frame = df.xs(ticker, level=0)
    for col in COLUMNS:  # BarSet.df drops all-null columns (e.g. vwap on some feeds)
        if col not in frame.columns:
            frame = frame.assign(**{col: np.nan})
    return normalize_bars(frame[list(COLUMNS)], where=f"alpaca {where}", sort=True)


def _server_message(body: str) -> str:
    """The ``message`` of an Alpaca JSON error body (else the body), as one short line."""
    text = body
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            text = parsed["message"]
    except ValueError:
        pass
    text = " ".join(text.split())
    return text[:_MESSAGE_CHARS] + ("..." if len(text) > _MESSAGE_CHARS else "")


def _fmt(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%MZ")
