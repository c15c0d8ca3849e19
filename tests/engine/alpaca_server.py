"""A loopback imitation of Alpaca's ``GET /v2/stocks/bars`` for tests (no network).

It serves deterministic hourly bars for the requested range in pages linked by
``next_page_token``, checks the key headers, refuses recent SIP data like Alpaca (403), records
every request, and lets a test inject faults (429 with Retry-After, 5xx, hard failures, a hook
that kills a client process) through :attr:`FakeAlpaca.fault`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KEY_ID = "PKTESTKEYID0123456789"
SECRET = "sEcReT-test-0123456789abcdefghij"
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    n: int  # 1-based arrival number
    symbol: str
    start: str
    end: str
    feed: str
    adjustment: str
    timeframe: str
    limit: int
    page_token: str | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def chunk(self) -> tuple[str, str, str]:
        return (self.symbol, self.start, self.end)


# A fault hook returns None (serve normally) or (status, headers, body).
Fault = Callable[[Seen], "tuple[int, dict[str, str], bytes] | None"]


def trading_hours(start: datetime, end: datetime) -> list[datetime]:
    """Deterministic bar starts in [start, end] (inclusive, like Alpaca): weekdays 09-23 UTC."""
    t = start.replace(minute=0, second=0, microsecond=0)
    if t < start:
        t += HOUR
    out = []
    while t <= end:
        if t.weekday() < 5 and 9 <= t.hour <= 23:
            out.append(t)
        t += HOUR
    return out


def make_bar(symbol: str, t: datetime, feed: str, adjustment: str) -> dict[str, object]:
    """One bar in Alpaca's JSON shape, a pure function of its arguments."""
    digest = hashlib.sha256(f"{symbol}|{t.isoformat()}".encode()).digest()
    base = 50.0 + sum(symbol.encode()) % 100 + (t.toordinal() % 97) * 0.5
    wiggle = digest[0] / 255.0
    factor = {"raw": 1.0, "split": 0.5, "dividend": 0.98, "all": 0.49}[adjustment]
    o = round((base + wiggle) * factor, 4)
    c = round((base + digest[1] / 255.0) * factor, 4)
    volume = 1000 + digest[2] * 10 + (10_000 if feed == "sip" else 0)
    return {
        "t": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "o": o,
        "h": round(max(o, c) + 0.25, 4),
        "l": round(min(o, c) - 0.25, 4),
        "c": c,
        "v": volume,
        "n": 10 + digest[3],
        "vw": round((o + c) / 2, 4),
    }


def _parse_time(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


class FakeAlpaca:
    """The server. Use as a context manager; ``url`` is the SDK's ``url_override``."""

    def __init__(self, page_size: int = 1000, now: Callable[[], datetime] | None = None) -> None:
        self.page_size = page_size
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.seen: list[Seen] = []
        self.fault: Fault | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> FakeAlpaca:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- inspection -----------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.seen.clear()

    def chunk_counts(self) -> Counter[tuple[str, str, str]]:
        """Requests (pages and retries included) per (symbol, start, end) query."""
        with self._lock:
            return Counter(s.chunk for s in self.seen)

    # -- serving --------------------------------------------------------------------------------
    def handle(self, path: str, query: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
        if path != "/v2/stocks/bars":
            return _json(404, {"message": f"not found: {path}"})
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        with self._lock:
            seen = Seen(
                n=len(self.seen) + 1,
                symbol=q.get("symbols", ""),
                start=q.get("start", ""),
                end=q.get("end", ""),
                feed=q.get("feed", ""),
                adjustment=q.get("adjustment", ""),
                timeframe=q.get("timeframe", ""),
                limit=int(q.get("limit") or 10_000),
                page_token=q.get("page_token"),
                headers=headers,
            )
            self.seen.append(seen)
        if self.fault is not None:
            injected = self.fault(seen)
            if injected is not None:
                return injected
        if headers.get("apca-api-key-id") != KEY_ID or headers.get("apca-api-secret-key") != SECRET:
            return _json(401, {"code": 40110000, "message": "request is not authorized"})
        if seen.timeframe != "1Hour" or "," in seen.symbol:
            return _json(422, {"message": "this fake serves one symbol of 1Hour bars"})
        start, end = _parse_time(seen.start), _parse_time(seen.end)
        if seen.feed == "sip" and end > self.now() - timedelta(minutes=15):
            return _json(
                403,
                {
                    "code": 42210000,
                    "message": "subscription does not permit querying recent SIP data",
                },
            )
        if seen.page_token:
            start = max(start, _parse_time(base64.urlsafe_b64decode(seen.page_token).decode()))
        hours = trading_hours(start, end)
        size = min(seen.limit, self.page_size)
        page, rest = hours[:size], hours[size:]
        token = base64.urlsafe_b64encode(rest[0].isoformat().encode()).decode() if rest else None
        bars = [make_bar(seen.symbol, t, seen.feed, seen.adjustment) for t in page]
        body = {"bars": {seen.symbol: bars} if bars else {}, "next_page_token": token}
        return _json(200, body)


def _json(
    status: int, obj: object, headers: dict[str, str] | None = None
) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


def json_fault(
    status: int, obj: object, headers: dict[str, str] | None = None
) -> tuple[int, dict, bytes]:
    """A response for a fault hook to return."""
    return _json(status, obj, headers)


def _make_handler(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, body = fake.handle(parts.path, parts.query, headers)
            try:
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client went away (a test killed it): nothing to answer

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    return Handler
