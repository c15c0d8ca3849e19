"""Alpaca download and resumable build, against a loopback imitation of Alpaca (no network).

The real alpaca-py client talks HTTP to ``tests/engine/alpaca_server.py`` through
``url_override``; retries sleep through an injected function, so nothing here waits for real.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.data import builder
from engine.data.sources import alpaca
from engine.data.store import Dataset, load_manifest, read_series
from engine.errors import DataError, SourceError
from tests.engine.alpaca_server import (
    KEY_ID,
    SECRET,
    FakeAlpaca,
    Seen,
    json_fault,
    make_bar,
    trading_hours,
)

REPO = Path(__file__).resolve().parents[2]
UTC = timezone.utc


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    monkeypatch.delenv(alpaca.ENV_DATA_URL, raising=False)


@pytest.fixture
def fake():
    with FakeAlpaca(page_size=1000) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


def policy(sleeps: list[float], **kw: float) -> alpaca.RetryPolicy:
    return alpaca.RetryPolicy(
        **{"max_attempts": 4, "backoff_s": 0.01, "jitter": 0.25, **kw}, sleep=sleeps.append
    )


@pytest.fixture
def client(fake: FakeAlpaca, keys: None, sleeps: list[float]) -> alpaca.AlpacaBars:
    return alpaca.make_client(base_url=fake.url, retry=policy(sleeps))


def factory(fake: FakeAlpaca, sleeps: list[float]):
    return lambda: alpaca.make_client(base_url=fake.url, retry=policy(sleeps))


def expected(symbol: str, start: str, end: str, feed="iex", adjustment="raw") -> pd.DataFrame:
    """What a correct fetch of [start, end) returns: the fake's bars, last-bar-at-end excluded."""
    lo = datetime.fromisoformat(start).replace(tzinfo=UTC)
    hi = datetime.fromisoformat(end).replace(tzinfo=UTC)
    bars = [make_bar(symbol, t, feed, adjustment) for t in trading_hours(lo, hi) if t < hi]
    frame = pd.DataFrame(
        {
            "open": [b["o"] for b in bars],
            "high": [b["h"] for b in bars],
            "low": [b["l"] for b in bars],
            "close": [b["c"] for b in bars],
            "volume": [b["v"] for b in bars],
            "vwap": [b["vw"] for b in bars],
            "trade_count": [b["n"] for b in bars],
        },
        index=pd.DatetimeIndex([b["t"] for b in bars]).tz_convert("UTC").as_unit("us"),
        dtype="float64",
    )
    frame.index.name = "timestamp"
    return frame


def one_line_without_secrets(text: str) -> None:
    assert "\n" not in text
    assert KEY_ID not in text and SECRET not in text
    assert KEY_ID[:8] not in text and SECRET[:8] not in text


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# fetch: pagination, schema, empty results, retries, errors
# ---------------------------------------------------------------------------------------------


def test_fetch_follows_pages_and_returns_the_store_schema(fake, client):
    fake.page_size = 500
    frame = client.fetch_bars("AAPL", "2020-01-01", "2020-07-01")
    want = expected("AAPL", "2020-01-01", "2020-07-01")
    pd.testing.assert_frame_equal(frame, want)
    assert list(frame.columns) == ["open", "high", "low", "close", "volume", "vwap", "trade_count"]
    assert str(frame.index.dtype) == "datetime64[us, UTC]" and frame.index.name == "timestamp"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    # One query, several pages: the SDK followed next_page_token.
    pages = len(fake.seen)
    assert pages == -(
        -len(trading_hours(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 7, 1, tzinfo=UTC)))
        // 500
    )
    assert pages >= 4 and len(fake.chunk_counts()) == 1
    assert fake.seen[0].page_token is None and all(s.page_token for s in fake.seen[1:])
    first = fake.seen[0]
    assert (first.timeframe, first.feed, first.adjustment) == ("1Hour", "iex", "raw")


def test_feed_and_adjustment_are_sent_explicitly(fake, client):
    frame = client.fetch_bars("AAPL", "2020-01-06", "2020-01-07", feed="iex", adjustment="split")
    assert (fake.seen[0].feed, fake.seen[0].adjustment) == ("iex", "split")
    pd.testing.assert_frame_equal(
        frame, expected("AAPL", "2020-01-06", "2020-01-07", adjustment="split")
    )
    with pytest.raises(SourceError, match="feed 'otc'"):
        client.fetch_bars("AAPL", "2020-01-06", "2020-01-07", feed="otc")
    with pytest.raises(SourceError, match="adjustment 'none'"):
        client.fetch_bars("AAPL", "2020-01-06", "2020-01-07", adjustment="none")


def test_empty_result_is_an_empty_store_frame(fake, client):
    frame = client.fetch_bars("AAPL", "2020-01-04", "2020-01-06")  # a weekend: no bars
    assert frame.empty and len(fake.seen) == 1
    assert list(frame.columns) == list(alpaca.COLUMNS)
    assert str(frame.index.dtype) == "datetime64[us, UTC]"
    assert all(dt == np.float64 for dt in frame.dtypes)


def test_429_with_retry_after_is_retried_for_that_page_only(fake, client, sleeps):
    fake.page_size = 300

    def fault(seen: Seen):
        if seen.n == 2:  # the second page, mid-pagination
            return json_fault(429, {"message": "too many requests"}, {"Retry-After": "1"})
        return None

    fake.fault = fault
    frame = client.fetch_bars("AAPL", "2020-01-01", "2020-03-01")
    pd.testing.assert_frame_equal(frame, expected("AAPL", "2020-01-01", "2020-03-01"))
    assert sleeps == [1]  # the server's Retry-After, not our 0.01 s backoff
    # The retried request is the same page (same token), and the first page was not refetched.
    assert fake.seen[2].page_token == fake.seen[1].page_token is not None
    assert [s.page_token for s in fake.seen].count(None) == 1


def test_5xx_is_retried_with_growing_jittered_backoff(fake, client, sleeps):
    statuses = {1: 502, 2: 503, 3: 500}
    fake.fault = lambda seen: (
        json_fault(statuses[seen.n], {"message": "upstream"}) if seen.n in statuses else None
    )
    frame = client.fetch_bars("AAPL", "2020-01-06", "2020-01-10")
    pd.testing.assert_frame_equal(frame, expected("AAPL", "2020-01-06", "2020-01-10"))
    assert len(fake.seen) == 4 and len(sleeps) == 3
    for i, wait in enumerate(sleeps):
        base = 0.01 * 2**i
        assert base <= wait <= base * 1.25 + 1e-12


def test_backoff_is_capped():
    p = alpaca.RetryPolicy(backoff_s=1.0, backoff_max_s=5.0, jitter=0.5)
    assert all(p.backoff(n) <= 5.0 for n in range(1, 20))
    assert p.backoff(0) == 0.0 and 1.0 <= p.backoff(1) <= 1.5


def test_retry_after_really_sleeps_with_the_default_sleep(fake, keys):
    fake.fault = lambda seen: (
        json_fault(429, {"message": "slow down"}, {"Retry-After": "1"}) if seen.n == 1 else None
    )
    c = alpaca.make_client(base_url=fake.url, retry=alpaca.RetryPolicy(backoff_s=0.01))
    t0 = time.monotonic()
    frame = c.fetch_bars("AAPL", "2020-01-06", "2020-01-07")
    assert time.monotonic() - t0 >= 0.95 and len(frame) == 15 and len(fake.seen) == 2


# 429 and 504 are also the SDK's own retry codes: exactly max_attempts requests and no 3 s
# sleeps prove the SDK's fixed retry is off and ours alone runs.
@pytest.mark.parametrize("status", [429, 503, 504])
def test_exhausted_retries_raise_one_line_without_the_keys(fake, client, sleeps, caplog, status):
    caplog.set_level(logging.DEBUG)
    # A hostile body that echoes the credentials it was sent.
    fake.fault = lambda seen: json_fault(
        status,
        {
            "message": f"down; you sent {seen.headers['apca-api-key-id']} / "
            f"{seen.headers['apca-api-secret-key']}"
        },
    )
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        client.fetch_bars("AAPL", "2020-01-06", "2020-01-10")
    assert time.monotonic() - t0 < 2.0
    text = str(info.value)
    one_line_without_secrets(text)
    assert (
        f"HTTP {status}" in text
        and "AAPL" in text
        and "2020-01-06" in text
        and "2020-01-10" in text
    )
    assert "4 attempt" in text and len(fake.seen) == 4 and len(sleeps) == 3
    assert info.value.__suppress_context__  # the SDK's APIError (raw body) is not chained
    assert KEY_ID not in caplog.text and SECRET not in caplog.text
    assert KEY_ID not in repr(client) and SECRET not in repr(client)


def test_403_is_not_retried_and_does_not_echo_the_key(fake, client, sleeps):
    fake.fault = lambda seen: json_fault(
        403, {"message": f"forbidden for key {KEY_ID} secret {SECRET}"}
    )
    with pytest.raises(SourceError) as info:
        client.fetch_bars("AAPL", "2020-01-06", "2020-01-10")
    text = str(info.value)
    one_line_without_secrets(text)
    assert "HTTP 403" in text and alpaca.ENV_KEY_ID in text
    assert len(fake.seen) == 1 and sleeps == []


def test_connection_refused_is_a_source_error(keys, sleeps):
    with FakeAlpaca() as gone:
        url = gone.url  # the port is closed once the server stops
    c = alpaca.make_client(base_url=url, retry=policy(sleeps, max_attempts=2))
    with pytest.raises(SourceError, match="could not fetch AAPL") as info:
        c.fetch_bars("AAPL", "2020-01-06", "2020-01-10")
    one_line_without_secrets(str(info.value))
    assert len(sleeps) == 1


@pytest.mark.parametrize("missing", [alpaca.ENV_KEY_ID, alpaca.ENV_SECRET_KEY])
def test_missing_key_variable_is_named(monkeypatch, keys, missing):
    monkeypatch.delenv(missing)
    with pytest.raises(SourceError) as info:
        alpaca.make_client(base_url="http://127.0.0.1:9")
    text = str(info.value)
    assert text.startswith(f"{missing} is not set") and "\n" not in text
    other = KEY_ID if missing == alpaca.ENV_SECRET_KEY else SECRET
    assert other not in text


def test_missing_keys_stop_a_build_before_any_request(monkeypatch, fake, tmp_path):
    monkeypatch.delenv(alpaca.ENV_KEY_ID, raising=False)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    with pytest.raises(SourceError, match=f"^{alpaca.ENV_KEY_ID} is not set"):
        builder.build_alpaca(
            tmp_path / "ds", ["AAPL"], "2020-01-06", "2020-01-08", base_url=fake.url
        )
    assert fake.seen == [] and not (tmp_path / "ds" / "manifest.json").exists()


def test_base_url_from_environment_and_plain_http_only_to_loopback(monkeypatch, fake, keys):
    monkeypatch.setenv(alpaca.ENV_DATA_URL, fake.url + "/v2/")
    c = alpaca.make_client()
    assert len(c.fetch_bars("AAPL", "2020-01-06", "2020-01-07")) == 15
    with pytest.raises(SourceError, match="unencrypted"):
        alpaca.resolve_base_url("http://proxy.example.com:8080")
    assert alpaca.resolve_base_url("https://proxy.example.com/") == "https://proxy.example.com"


def test_sip_end_is_clamped_16_minutes_back(fake, client):
    now = pd.Timestamp.now(tz="UTC")
    client.fetch_bars("AAPL", now - pd.Timedelta(days=3), now, feed="sip")
    after = pd.Timestamp.now(tz="UTC")
    sent = pd.Timestamp(fake.seen[0].end)
    assert now - pd.Timedelta(minutes=16) <= sent <= after - pd.Timedelta(minutes=16)
    assert fake.seen[0].feed == "sip"
    # With an explicit clock the clamp is exact.
    fake.reset()
    client.fetch_bars("AAPL", now - pd.Timedelta(days=3), now, feed="sip", now=now)
    assert pd.Timestamp(fake.seen[0].end) == (now - pd.Timedelta(minutes=16)).floor("us")
    # IEX is not clamped (the fake, like Alpaca, refuses only recent SIP).
    fake.reset()
    client.fetch_bars("AAPL", now - pd.Timedelta(days=3), now, feed="iex")
    assert pd.Timestamp(fake.seen[0].end) == now.floor("us")


def test_unclamped_recent_sip_would_be_refused(fake, client):
    """The fake imitates Alpaca's 403, so the clamp above is what keeps SIP queries valid."""
    now = pd.Timestamp.now(tz="UTC")
    with pytest.raises(SourceError, match="HTTP 403.*recent SIP"):
        client.fetch_bars(
            "AAPL",
            now - pd.Timedelta(days=1),
            now + pd.Timedelta(hours=1),
            feed="sip",
            now=now + pd.Timedelta(hours=1),
        )


def test_sip_build_stops_before_the_last_16_minutes(fake, keys, sleeps, tmp_path):
    now = pd.Timestamp("2024-03-05 14:10", tz="UTC")
    fake.now = lambda: now.to_pydatetime()
    manifest = builder.build_alpaca(
        tmp_path / "sip",
        ["AAPL"],
        "2024-03-04",
        None,
        feed="sip",
        now=now,
        client_factory=factory(fake, sleeps),
    )
    # 14:10 - 16 min = 13:54, floored to the hour: bars up to the one starting 12:00.
    until = pd.Timestamp(manifest.tickers["AAPL"].fetched_until)
    assert until == pd.Timestamp("2024-03-05 13:00", tz="UTC")
    assert read_series(tmp_path / "sip", "AAPL").index[-1] == pd.Timestamp(
        "2024-03-05 12:00", tz="UTC"
    )


# ---------------------------------------------------------------------------------------------
# build: chunks, manifest, resume, update, refusal, macro
# ---------------------------------------------------------------------------------------------


def test_plan_chunks_calendar_years_and_fixed_lengths():
    ts = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    assert builder.plan_chunks(ts("2019-06-01"), ts("2021-03-01"), "1Y") == [
        (ts("2019-06-01"), ts("2020-01-01")),
        (ts("2020-01-01"), ts("2021-01-01")),
        (ts("2021-01-01"), ts("2021-03-01")),
    ]
    chunks = builder.plan_chunks(ts("2019-06-01"), ts("2021-03-01"), "365D")
    assert chunks[0] == (ts("2019-06-01"), ts("2019-06-01") + pd.Timedelta(days=365))
    assert chunks[-1][1] == ts("2021-03-01") and len(chunks) == 2
    assert builder.plan_chunks(ts("2020-01-01"), ts("2020-01-01"), "1Y") == []
    from engine.errors import ConfigError

    for bad in ("0Y", "banana", "10min"):
        with pytest.raises(ConfigError, match="chunk"):
            builder.plan_chunks(ts("2020-01-01"), ts("2021-01-01"), bad)


def test_build_writes_chunks_and_records_the_manifest(fake, keys, sleeps, tmp_path):
    events: list[builder.BuildProgress] = []
    out = tmp_path / "ds"
    manifest = builder.build_alpaca(
        out,
        ["AAPL", "MSFT"],
        "2019-11-01",
        "2020-03-01",
        adjustment="split",
        client_factory=factory(fake, sleeps),
        progress=events.append,
    )
    assert (manifest.source, manifest.feed, manifest.adjustment, manifest.timeframe) == (
        "alpaca",
        "iex",
        "split",
        "1h",
    )
    assert manifest.params["start"].startswith("2019-11-01T00:00:00")
    assert manifest.params["end"].startswith("2020-03-01T00:00:00")
    assert sorted(fake.chunk_counts()) == sorted(
        (sym, f"{a}T00:00:00+00:00", f"{b}T00:00:00+00:00")
        for sym in ("AAPL", "MSFT")
        for a, b in (("2019-11-01", "2020-01-01"), ("2020-01-01", "2020-03-01"))
    )
    assert [(e.ticker, e.done, e.total) for e in events] == [
        ("AAPL", 1, 4),
        ("AAPL", 2, 4),
        ("MSFT", 3, 4),
        ("MSFT", 4, 4),
    ]
    assert "AAPL" in str(events[0]) and "[1/4]" in str(events[0])
    ds = Dataset(out)
    assert ds.verify_checksums() == []
    for sym in ("AAPL", "MSFT"):
        want = expected(sym, "2019-11-01", "2020-03-01", adjustment="split")
        pd.testing.assert_frame_equal(ds.bars(sym), want)
        assert pd.Timestamp(manifest.tickers[sym].fetched_until) == pd.Timestamp(
            "2020-03-01", tz="UTC"
        )
    # Nothing secret lands on disk.
    for data in folder_bytes(out).values():
        assert KEY_ID.encode() not in data and SECRET.encode() not in data


def test_a_complete_range_downloads_nothing(fake, keys, sleeps, tmp_path):
    out = tmp_path / "ds"
    kw = dict(client_factory=factory(fake, sleeps), chunk="30D")
    builder.build_alpaca(out, ["AAPL"], "2020-01-01", "2020-03-01", **kw)
    before = read_series(out, "AAPL")
    fake.reset()
    builder.build_alpaca(out, ["AAPL"], "2020-01-01", "2020-03-01", **kw)
    builder.build_alpaca(out, ["AAPL"], "2020-01-15", "2020-02-01", **kw)  # a sub-range
    assert fake.seen == []
    pd.testing.assert_frame_equal(read_series(out, "AAPL"), before)


class Stop(Exception):
    pass


def test_interrupted_build_resumes_without_refetching_finished_chunks(fake, keys, sleeps, tmp_path):
    args = (["AAPL", "MSFT"], "2020-01-01", "2020-05-01")
    kw = dict(client_factory=factory(fake, sleeps), chunk="30D")
    ref = tmp_path / "ref"
    builder.build_alpaca(ref, *args, **kw)
    all_chunks = set(fake.chunk_counts())

    def stop_after_three(event: builder.BuildProgress) -> None:
        if event.done == 3:
            raise Stop

    out = tmp_path / "ds"
    fake.reset()
    with pytest.raises(Stop):
        builder.build_alpaca(out, *args, progress=stop_after_three, **kw)
    first_run = set(fake.chunk_counts())
    assert len(first_run) == 3
    fake.reset()
    builder.build_alpaca(out, *args, **kw)
    second_run = fake.chunk_counts()
    assert not first_run & set(second_run)  # finished chunks were not downloaded again
    assert first_run | set(second_run) == all_chunks
    assert all(n == 1 for n in second_run.values())
    for sym in ("AAPL", "MSFT"):
        assert (out / f"{sym}.parquet").read_bytes() == (ref / f"{sym}.parquet").read_bytes()
    assert load_manifest(out).tickers == load_manifest(ref).tickers


def test_server_failure_mid_build_then_resume(fake, keys, sleeps, tmp_path):
    args = (["AAPL", "MSFT"], "2019-11-01", "2020-03-01")
    kw = dict(client_factory=factory(fake, sleeps))
    ref = tmp_path / "ref"
    builder.build_alpaca(ref, *args, **kw)
    fake.reset()
    # MSFT's second chunk fails for good: everything before it must survive.
    fake.fault = lambda seen: (
        json_fault(500, {"message": "boom"})
        if seen.symbol == "MSFT" and seen.start.startswith("2020-01-01")
        else None
    )
    out = tmp_path / "ds"
    with pytest.raises(SourceError, match="HTTP 500 for MSFT 2020-01-01"):
        builder.build_alpaca(out, *args, **kw)
    m = load_manifest(out)
    assert pd.Timestamp(m.tickers["AAPL"].fetched_until) == pd.Timestamp("2020-03-01", tz="UTC")
    assert pd.Timestamp(m.tickers["MSFT"].fetched_until) == pd.Timestamp("2020-01-01", tz="UTC")
    assert Dataset(out).verify_checksums() == []
    fake.fault = None
    fake.reset()
    builder.build_alpaca(out, *args, **kw)
    assert list(fake.chunk_counts()) == [
        ("MSFT", "2020-01-01T00:00:00+00:00", "2020-03-01T00:00:00+00:00")
    ]
    assert folder_bytes(out).keys() == folder_bytes(ref).keys()
    for sym in ("AAPL", "MSFT"):
        assert (out / f"{sym}.parquet").read_bytes() == (ref / f"{sym}.parquet").read_bytes()


CHILD = textwrap.dedent(
    """
    import sys
    from engine.data import builder
    from engine.data.sources import alpaca

    url, out = sys.argv[1], sys.argv[2]
    policy = alpaca.RetryPolicy(max_attempts=3, backoff_s=0.01)
    builder.build_alpaca(
        out, ["AAPL", "MSFT"], "2020-01-01", "2020-05-01", chunk="30D",
        client_factory=lambda: alpaca.make_client(base_url=url, retry=policy),
    )
    """
)


def test_killed_build_process_resumes_after_its_last_finished_chunk(fake, keys, sleeps, tmp_path):
    fake.page_size = 100  # ~4 pages per 30-day chunk, so the kill lands mid-pagination
    ref = tmp_path / "ref"
    builder.build_alpaca(
        ref,
        ["AAPL", "MSFT"],
        "2020-01-01",
        "2020-05-01",
        chunk="30D",
        client_factory=factory(fake, sleeps),
    )
    kill_at = len(fake.seen) // 2 + 2
    fake.reset()
    state: dict[str, int] = {}

    def kill(seen: Seen):
        if seen.n >= kill_at:
            os.kill(state["pid"], signal.SIGKILL)  # dies waiting for this page
            return json_fault(500, {"message": "gone"})
        return None

    fake.fault = kill
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, fake.url, str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    state["pid"] = proc.pid
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    killed_in = fake.seen[-1].chunk
    m = load_manifest(out)
    done_until = {s: pd.Timestamp(e.fetched_until) for s, e in m.tickers.items()}
    assert done_until  # at least one chunk had finished

    fake.fault = None
    fake.reset()
    builder.build_alpaca(
        out,
        ["AAPL", "MSFT"],
        "2020-01-01",
        "2020-05-01",
        chunk="30D",
        client_factory=factory(fake, sleeps),
    )
    resumed = set(fake.chunk_counts())
    assert killed_in in resumed  # the interrupted chunk is fetched again, whole
    for sym, start, _ in resumed:
        if sym in done_until:
            assert pd.Timestamp(start) >= done_until[sym]
    assert [s.page_token for s in fake.seen].count(None) == len(resumed)  # no chunk twice
    for sym in ("AAPL", "MSFT"):
        assert (out / f"{sym}.parquet").read_bytes() == (ref / f"{sym}.parquet").read_bytes()
    assert load_manifest(out).tickers == load_manifest(ref).tickers


def test_update_fetches_only_newer_bars(fake, keys, sleeps, tmp_path):
    kw = dict(client_factory=factory(fake, sleeps))
    out = tmp_path / "ds"
    builder.build_alpaca(out, ["AAPL"], "2020-11-01", "2020-12-15", **kw)
    fake.reset()
    manifest = builder.build_alpaca(out, None, None, "2021-02-01", update=True, **kw)
    assert sorted(fake.chunk_counts()) == [
        ("AAPL", "2020-12-15T00:00:00+00:00", "2021-01-01T00:00:00+00:00"),
        ("AAPL", "2021-01-01T00:00:00+00:00", "2021-02-01T00:00:00+00:00"),
    ]
    pd.testing.assert_frame_equal(
        read_series(out, "AAPL"), expected("AAPL", "2020-11-01", "2021-02-01")
    )
    assert pd.Timestamp(manifest.tickers["AAPL"].fetched_until) == pd.Timestamp(
        "2021-02-01", tz="UTC"
    )
    fake.reset()
    builder.build_alpaca(out, ["AAPL"], None, "2021-02-01", update=True, **kw)
    assert fake.seen == []  # already up to date


def test_update_default_end_is_now_and_leaves_the_forming_bar_out(fake, keys, sleeps, tmp_path):
    kw = dict(client_factory=factory(fake, sleeps))
    out = tmp_path / "ds"
    builder.build_alpaca(out, ["AAPL"], "2024-03-04", None, now="2024-03-05 14:30", **kw)
    assert read_series(out, "AAPL").index[-1] == pd.Timestamp("2024-03-05 13:00", tz="UTC")
    fake.reset()
    builder.build_alpaca(out, ["AAPL"], None, None, update=True, now="2024-03-05 16:05", **kw)
    assert [s.start for s in fake.seen] == ["2024-03-05T14:00:00+00:00"]
    pd.testing.assert_frame_equal(
        read_series(out, "AAPL"), expected("AAPL", "2024-03-04", "2024-03-05T16:00")
    )


def test_earlier_start_backfills_only_the_missing_chunks(fake, keys, sleeps, tmp_path):
    kw = dict(client_factory=factory(fake, sleeps), chunk="30D")
    out = tmp_path / "ds"
    builder.build_alpaca(out, ["AAPL"], "2020-03-01", "2020-04-01", **kw)
    fake.reset()
    builder.build_alpaca(out, ["AAPL"], "2020-01-01", "2020-04-01", **kw)
    starts = [s.start[:10] for s in fake.seen]
    assert starts == ["2020-01-31", "2020-01-01"]  # newest first, nothing already stored
    pd.testing.assert_frame_equal(
        read_series(out, "AAPL"), expected("AAPL", "2020-01-01", "2020-04-01")
    )
    assert load_manifest(out).params["fetched_from"]["AAPL"].startswith("2020-01-01")


def test_a_folder_holding_another_dataset_is_refused_untouched(fake, keys, sleeps, tmp_path):
    out = tmp_path / "ds"
    kw = dict(client_factory=factory(fake, sleeps))
    builder.build_alpaca(out, ["AAPL"], "2020-01-06", "2020-01-10", **kw)
    before = folder_bytes(out)
    fake.reset()
    with pytest.raises(DataError, match=r"different dataset.*feed='iex' \(asked 'sip'\)"):
        builder.build_alpaca(out, ["AAPL"], "2020-01-06", "2020-01-10", feed="sip", **kw)
    with pytest.raises(DataError, match="adjustment"):
        builder.build_alpaca(out, ["AAPL"], "2020-01-06", "2020-01-10", adjustment="all", **kw)
    assert fake.seen == []
    assert folder_bytes(out) == before


def test_macro_hook_stores_macro_series(fake, keys, sleeps, tmp_path):
    calls: list[tuple[str, pd.Timestamp, pd.Timestamp]] = []

    def fetch_macro(symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        calls.append((symbol, start, end))
        days = pd.date_range(start.normalize(), end, freq="B", inclusive="left", tz="UTC")
        value = 20.0 if symbol == "^VIX" else 1.5
        cols = {c: np.full(len(days), value) for c in ("open", "high", "low", "close", "volume")}
        return pd.DataFrame(cols, index=days)

    out = tmp_path / "ds"
    kw = dict(client_factory=factory(fake, sleeps), macro_fetcher=fetch_macro)
    manifest = builder.build_alpaca(
        out, ["AAPL"], "2020-01-06", "2020-01-20", macro_symbols=["^VIX", "^TNX"], **kw
    )
    assert manifest.macro_source == "yahoo" and set(manifest.macro) == {"^VIX", "^TNX"}
    assert (out / "macro" / "_VIX.parquet").exists()
    ds = Dataset(out)
    assert ds.verify_checksums() == []
    vix = ds.macro("^VIX")
    assert str(vix.index.dtype) == "datetime64[us, UTC]" and len(vix) == 10
    assert [c[0] for c in calls] == ["^VIX", "^TNX"]
    # A rerun over the same range fetches nothing; an update refetches from the last stored day.
    calls.clear()
    builder.build_alpaca(
        out, ["AAPL"], "2020-01-06", "2020-01-20", macro_symbols=["^VIX", "^TNX"], **kw
    )
    assert calls == []
    builder.build_alpaca(out, None, None, "2020-01-27", update=True, **kw)
    assert [(c[0], c[1]) for c in calls] == [
        ("^VIX", pd.Timestamp("2020-01-17", tz="UTC")),
        ("^TNX", pd.Timestamp("2020-01-17", tz="UTC")),
    ]
    assert len(Dataset(out).macro("^VIX")) == 15
    with pytest.raises(Exception, match="macro"):
        builder.build_alpaca(
            out,
            ["AAPL"],
            "2020-01-06",
            "2020-01-20",
            macro_symbols=["^VIX"],
            client_factory=factory(fake, sleeps),
        )


def test_build_yahoo_uses_the_same_resumable_core(tmp_path):
    calls: list[tuple[str, pd.Timestamp, pd.Timestamp]] = []

    def fetch(symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        calls.append((symbol, start, end))
        idx = pd.date_range(
            start.ceil("h") + pd.Timedelta(minutes=30), end, freq="h", inclusive="left", tz="UTC"
        )
        idx = idx[idx < end]
        return pd.DataFrame(
            {c: np.ones(len(idx)) for c in ("open", "high", "low", "close", "volume")}, index=idx
        )

    out = tmp_path / "y"
    m = builder.build_yahoo(
        out, ["SPY"], "2024-01-01", "2024-01-03", fetcher=fetch, now="2024-06-01"
    )
    assert (m.source, m.timeframe, m.feed, m.adjustment) == ("yahoo", "1h", None, "all")
    assert list(read_series(out, "SPY").columns) == ["open", "high", "low", "close", "volume"]
    calls.clear()
    builder.build_yahoo(out, None, None, "2024-01-04", update=True, fetcher=fetch, now="2024-06-01")
    # The last stored row (possibly still forming when fetched) is fetched again.
    assert calls == [
        ("SPY", pd.Timestamp("2024-01-02 23:30", tz="UTC"), pd.Timestamp("2024-01-04", tz="UTC"))
    ]
    assert read_series(out, "SPY").index[-1] == pd.Timestamp("2024-01-03 23:30", tz="UTC")
    with pytest.raises(DataError, match="different dataset"):
        builder.build_alpaca(out, ["SPY"], "2024-01-01", "2024-01-03")
