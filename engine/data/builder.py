"""Resumable, chunked dataset builds (Alpaca hourly bars, optional daily macro series).

A build downloads each ticker in chunks (calendar years by default). After every finished chunk
the ticker's Parquet file is rewritten atomically with the chunk merged in, and the manifest is
saved with that ticker's ``fetched_until`` set to the chunk's end. A build that is killed resumes,
when run again with the same arguments, after the last finished chunk; a range already covered
downloads nothing. ``update=True`` fetches only what is newer than the stored data.

Coverage of a ticker is the contiguous interval ``[fetched_from, fetched_until)`` that has been
downloaded (bars may be absent inside it: nights, holidays, before a listing).
``fetched_until`` lives in the ticker's manifest entry; ``fetched_from`` in
``manifest.params["fetched_from"]``. A request that starts earlier than the coverage is
downloaded backwards, newest chunk first, so the coverage stays contiguous after every chunk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from engine import atomic
from engine.data.sources import alpaca
from engine.data.store import (
    Manifest,
    SeriesEntry,
    SeriesKind,
    manifest_path,
    normalize_bars,
    open_out_folder,
    parse_symbols,
    read_series,
    save_manifest,
    series_path,
    write_series,
)
from engine.errors import ConfigError, DataError, PloutosError
from engine.timeutil import parse_utc, utc_now

TIMEFRAME = "1h"
SOURCE_ALPACA = "alpaca"

# (symbol, start, end) -> store-schema frame; ``engine.data.sources.yahoo.fetch_macro`` fits.
MacroFetcher = Callable[[str, pd.Timestamp, pd.Timestamp], pd.DataFrame]


@dataclass(frozen=True)
class BuildProgress:
    """One finished download step, passed to the ``progress`` callback.

    ``kind`` is ``"bars"`` (one chunk of one ticker) or ``"macro"`` (one macro series);
    ``start``/``end`` are the step's UTC range (end exclusive); ``rows`` the rows received;
    ``done``/``total`` count steps over the whole build.
    """

    kind: SeriesKind
    ticker: str
    start: pd.Timestamp
    end: pd.Timestamp
    rows: int
    done: int
    total: int

    def __str__(self) -> str:
        span = f"{self.start:%Y-%m-%d %H:%M}..{self.end:%Y-%m-%d %H:%M} UTC"
        what = "bars" if self.kind == "bars" else "rows (macro)"
        return f"[{self.done}/{self.total}] {self.ticker} {span}: {self.rows} {what}"


@dataclass(frozen=True)
class ChunkPlan:
    """One download step of a build, known before it starts (``kind``, ``ticker``, UTC range)."""

    kind: SeriesKind
    ticker: str
    start: pd.Timestamp
    end: pd.Timestamp


class BuildObserver(Protocol):
    """What a build tells besides ``progress``: its plan, once, then each step as it starts."""

    def planned(self, steps: Sequence[ChunkPlan]) -> None: ...

    def started(self, index: int) -> None: ...


def plan_chunks(
    start: pd.Timestamp, end: pd.Timestamp, chunk: str = "1Y"
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Split ``[start, end)`` into consecutive chunks.

    ``chunk`` is ``"<n>Y"`` (calendar years: boundaries on 1 January 00:00 UTC) or a pandas
    timedelta such as ``"365D"`` (fixed lengths from ``start``). Boundaries depend only on
    ``start`` and ``chunk``, so a resumed build (starting at a boundary) re-plans the same chunks.
    """
    start, end = parse_utc(start), parse_utc(end)
    if end <= start:
        return []
    years, step = _parse_chunk(chunk)
    out = []
    lo = start
    while lo < end:
        if years:
            hi = pd.Timestamp(year=lo.year + years, month=1, day=1, tz="UTC").as_unit("us")
        else:
            hi = lo + step
        hi = min(hi, end)
        out.append((lo, hi))
        lo = hi
    return out


def _parse_chunk(chunk: str) -> tuple[int, pd.Timedelta]:
    match = re.fullmatch(r"\s*(\d+)\s*[Yy]\s*", chunk)
    if match:
        years = int(match.group(1))
        if years >= 1:
            return years, pd.Timedelta(0)
    else:
        try:
            step = pd.Timedelta(chunk)
        except ValueError:
            step = pd.Timedelta(0)
        if step >= alpaca.BAR:
            return 0, step
    raise ConfigError(
        f"chunk {chunk!r}: use calendar years like '1Y' or a length of at least 1h like '365D'"
    )


def _floor_hour(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.floor("h")


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None else ts.isoformat()


@dataclass
class _Step:
    kind: SeriesKind
    symbol: str
    start: pd.Timestamp
    end: pd.Timestamp
    # Coverage after this step completes.
    covered_from: pd.Timestamp
    covered_until: pd.Timestamp


def _coverage_steps(
    symbol: str,
    want_from: pd.Timestamp,
    want_until: pd.Timestamp,
    have: tuple[pd.Timestamp, pd.Timestamp] | None,
    chunk: str,
) -> list[_Step]:
    """Chunks that extend coverage ``have`` to include ``[want_from, want_until)``, contiguously."""
    if have is None:
        steps = []
        for lo, hi in plan_chunks(want_from, want_until, chunk):
            steps.append(_Step("bars", symbol, lo, hi, want_from, hi))
        return steps
    have_from, have_until = have
    steps = []
    # Backwards first (newest chunk first), so [covered_from, have_until) never has a hole.
    if want_from < have_from:
        for lo, hi in reversed(plan_chunks(want_from, have_from, chunk)):
            steps.append(_Step("bars", symbol, lo, hi, lo, have_until))
    low = min(want_from, have_from)
    if want_until > have_until:
        for lo, hi in plan_chunks(have_until, want_until, chunk):
            steps.append(_Step("bars", symbol, lo, hi, low, hi))
    return steps


def _stored_coverage(
    manifest: Manifest, symbol: str, kind: SeriesKind
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    entries = manifest.tickers if kind == "bars" else manifest.macro
    entry = entries.get(symbol)
    if entry is None:
        return None
    until = entry.fetched_until
    if until is None:  # written by something that does not track downloads (e.g. an import)
        if entry.last is None:
            return None
        until = pd.Timestamp(entry.last) + (alpaca.BAR if kind == "bars" else pd.Timedelta(days=1))
    froms = manifest.params.get(_from_key(kind), {})
    raw_from = froms.get(symbol) if isinstance(froms, dict) else None
    first = raw_from if raw_from is not None else entry.first
    if first is None:
        return None
    return parse_utc(first), parse_utc(until)


def _from_key(kind: SeriesKind) -> str:
    return "fetched_from" if kind == "bars" else "macro_fetched_from"


def _record_from(manifest: Manifest, kind: SeriesKind, symbol: str, ts: pd.Timestamp) -> None:
    froms = manifest.params.get(_from_key(kind))
    froms = dict(froms) if isinstance(froms, dict) else {}
    froms[symbol] = _iso(ts)
    manifest.params[_from_key(kind)] = froms


def _load_existing(root: Path, manifest: Manifest, symbol: str, kind: SeriesKind) -> pd.DataFrame:
    """The stored series to merge into; a file the manifest does not list is ignored (a build
    killed before its first chunk was recorded) and will be overwritten."""
    entries = manifest.tickers if kind == "bars" else manifest.macro
    if symbol in entries and series_path(root, symbol, kind).exists():
        return read_series(root, symbol, kind)
    return pd.DataFrame()  # no columns: the first download decides them (Alpaca 7, Yahoo 5)


def _merge(old: pd.DataFrame, new: pd.DataFrame, where: str) -> pd.DataFrame:
    """Union of two store-schema frames; on equal timestamps the newer download wins."""
    if old.empty and len(old.columns) == 0:
        return normalize_bars(new, where=where, sort=True)
    if new.empty:
        return old
    both = pd.concat([old, new])
    return normalize_bars(both, where=where, sort=True)


def build_alpaca(
    out: str | Path,
    tickers: Sequence[str] | str | None,
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
    *,
    feed: str = "iex",
    adjustment: str = "raw",
    update: bool = False,
    chunk: str = "1Y",
    base_url: str | None = None,
    progress: Callable[[BuildProgress], None] | None = None,
    client_factory: Callable[[], alpaca.AlpacaBars] | None = None,
    macro_symbols: Sequence[str] | None = None,
    macro_fetcher: MacroFetcher | None = None,
    macro_source: str = "yahoo",
    now: pd.Timestamp | str | None = None,
    observer: BuildObserver | None = None,
) -> Manifest:
    """Download hourly Alpaca bars for ``tickers`` into the dataset folder ``out``; return its manifest.

    ``start``/``end`` are UTC (naive read as UTC); ``end`` is exclusive and defaults to ``now``,
    floored to the hour (and, for SIP, at least 16 minutes back) so every stored bar is complete.
    A folder holding a different dataset (source, timeframe, feed, adjustment) is refused. Without
    ``update`` the stored coverage is extended to ``[start, end)``: a rerun resumes after the last
    finished chunk and a covered range downloads nothing. With ``update`` stored tickers fetch
    only after their coverage (``start`` is then needed only for new tickers; ``tickers=None``
    means the stored ones). ``chunk``: ``"1Y"`` calendar years or e.g. ``"365D"``.
    ``client_factory`` returns an :class:`~engine.data.sources.alpaca.AlpacaBars` (default: keys from
    the environment, ``base_url``). ``macro_fetcher(symbol, start, end)`` returns a store-schema
    frame for each of ``macro_symbols``, stored under ``macro/`` (``macro_source`` names it).
    ``progress`` receives a :class:`BuildProgress` after every finished step; an exception it
    raises stops the build, which a rerun resumes. ``now`` fixes the clock (tests, reproducible
    builds). ``observer`` (e.g. a :class:`BuildStatusFile`) learns the plan and each step's start.
    """
    alpaca.check_feed(feed)
    alpaca.check_adjustment(adjustment)
    _parse_chunk(chunk)
    if client_factory is None and not manifest_path(Path(out)).exists():
        # A fresh folder always has something to fetch: name missing keys before it is created.
        alpaca.credentials_from_env()
    now_ts = utc_now() if now is None else parse_utc(now)
    limit = min(parse_utc(end), now_ts) if end is not None else now_ts
    limit = _floor_hour(alpaca.clamp_end(limit, feed, now_ts))
    identity: dict[str, object] = {
        "source": SOURCE_ALPACA,
        "timeframe": TIMEFRAME,
        "feed": feed,
        "adjustment": adjustment,
    }
    client: list[alpaca.AlpacaBars] = []

    def fetch(symbol: str, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
        if not client:  # created on first use: a build with nothing to fetch needs no keys
            client.append(
                client_factory()
                if client_factory is not None
                else alpaca.make_client(base_url=base_url)
            )
        return client[0].fetch_bars(symbol, lo, hi, feed=feed, adjustment=adjustment, now=now_ts)

    with _removed_if_failed(Path(out)):
        return _build(
            Path(out),
            identity,
            tickers,
            start,
            end,
            limit,
            fetch_bars=fetch,
            update=update,
            chunk=chunk,
            refetch_last=False,
            progress=progress,
            macro_symbols=macro_symbols,
            macro_fetcher=macro_fetcher,
            observer=observer,
            macro_source=macro_source,
        )


def build_yahoo(
    out: str | Path,
    tickers: Sequence[str] | str | None,
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
    *,
    interval: str = "1h",
    update: bool = False,
    chunk: str = "365D",
    progress: Callable[[BuildProgress], None] | None = None,
    fetcher: Callable[[str, pd.Timestamp, pd.Timestamp], pd.DataFrame] | None = None,
    macro_symbols: Sequence[str] | None = None,
    macro_fetcher: MacroFetcher | None = None,
    now: pd.Timestamp | str | None = None,
    observer: BuildObserver | None = None,
) -> Manifest:
    """Yahoo price bars (``interval``, default ``1h``: last 730 days only) into ``out``.

    Same folder rules, chunks, resume and ``update`` as :func:`build_alpaca`; Yahoo's ``1h`` bars
    start at :30 and yfinance's ``auto_adjust=True`` adjusts for splits and dividends, recorded as
    ``adjustment="all"``. Yahoo may hand back a still-forming last row, so ``update`` refetches
    from the last stored row. ``fetcher(symbol, start, end)`` defaults to
    ``engine.data.sources.yahoo.fetch_bars`` (imported lazily); ``macro_fetcher`` to its
    ``fetch_macro`` when ``macro_symbols`` are given.
    """
    _parse_chunk(chunk)
    now_ts = utc_now() if now is None else parse_utc(now)
    limit = min(parse_utc(end), now_ts) if end is not None else now_ts
    from engine.data.sources import yahoo  # imports yfinance (slow) only when it fetches

    if start is not None:
        # Before the folder is opened: a request Yahoo cannot serve creates nothing.
        yahoo.check_yahoo_range(interval, parse_utc(start), now=now_ts)
    if fetcher is None:

        def fetcher(symbol: str, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
            return yahoo.fetch_bars(symbol, lo, hi, interval=interval)

    if macro_symbols and macro_fetcher is None:
        macro_fetcher = yahoo.fetch_macro
    identity: dict[str, object] = {
        "source": "yahoo",
        "timeframe": interval,
        "feed": None,
        "adjustment": "all",
    }
    with _removed_if_failed(Path(out)):
        return _build(
            Path(out),
            identity,
            tickers,
            start,
            end,
            limit,
            fetch_bars=fetcher,
            update=update,
            chunk=chunk,
            refetch_last=True,
            progress=progress,
            macro_symbols=macro_symbols,
            macro_fetcher=macro_fetcher,
            observer=observer,
            macro_source="yahoo",
        )


@contextlib.contextmanager
def _removed_if_failed(root: Path) -> Iterator[None]:
    """Folders created under this block (``root`` and missing parents) are removed again if it
    fails before storing anything in them; a folder holding finished chunks stays (resumable)."""
    created = _missing_folders(root)
    try:
        yield
    except BaseException:
        _remove_empty(created)
        raise


def _missing_folders(root: Path) -> list[Path]:
    """``root`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (root, *root.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove each folder (deepest first) that is empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()  # refuses a folder that is not empty: resumable chunks stay
        except OSError:
            return


def _build(
    root: Path,
    identity: dict[str, object],
    tickers: Sequence[str] | str | None,
    start: pd.Timestamp | str | None,
    end: pd.Timestamp | str | None,
    limit: pd.Timestamp,
    *,
    fetch_bars: Callable[[str, pd.Timestamp, pd.Timestamp], pd.DataFrame],
    update: bool,
    chunk: str,
    refetch_last: bool,
    progress: Callable[[BuildProgress], None] | None,
    macro_symbols: Sequence[str] | None,
    macro_fetcher: MacroFetcher | None,
    macro_source: str,
    observer: BuildObserver | None = None,
) -> Manifest:
    source = str(identity["source"])
    manifest = open_out_folder(root, identity, source)

    start_ts = parse_utc(start) if start is not None else None
    if start_ts is None and isinstance(manifest.params.get("start"), str):
        start_ts = parse_utc(manifest.params["start"])  # an update reuses the first request
    if start_ts is not None and start_ts >= limit and not update:
        raise DataError(
            f"start {start_ts} is not before end {limit} (end is exclusive, at most now): "
            "pass an earlier --start or a later --end"
        )

    if tickers is None or (isinstance(tickers, (list, tuple)) and not tickers):
        if not (update and manifest.tickers):
            raise DataError("no tickers given: pass --tickers AAPL,MSFT,...")
        symbols = list(manifest.tickers)
    else:
        symbols = parse_symbols(tickers)

    macro_list = parse_symbols(macro_symbols) if macro_symbols else []
    if macro_fetcher is not None and not macro_list and update:
        macro_list = list(manifest.macro)
    if macro_list and macro_fetcher is None:
        raise ConfigError(
            f"macro symbols {', '.join(macro_list)} given without a macro source to fetch them"
        )

    steps: list[_Step] = []
    for symbol in symbols:
        have = _stored_coverage(manifest, symbol, "bars")
        if update and have is not None:
            want_from = have[0]  # never backfill in an update
            last = manifest.tickers[symbol].last
            if refetch_last and last is not None:
                have = (have[0], min(have[1], parse_utc(last)))
        elif start_ts is None:
            raise DataError(f"{symbol}: no stored data to update and no start: pass --start")
        else:
            want_from = start_ts
        steps.extend(_coverage_steps(symbol, want_from, limit, have, chunk))
    for symbol in macro_list:
        step = _macro_step(manifest, symbol, start_ts, limit, update)
        if step is not None:
            steps.append(step)

    manifest.params.update(
        {
            "start": _iso(start_ts),
            "end": _iso(parse_utc(end)) if end is not None else None,
            "end_effective": _iso(limit),
            "chunk": chunk,
        }
    )
    if macro_list:
        manifest.macro_source = macro_source
    if observer is not None:
        observer.planned([ChunkPlan(st.kind, st.symbol, st.start, st.end) for st in steps])
    if not steps:
        save_manifest(root, manifest)
        return manifest
    # Not saved before the first chunk on purpose: a fresh folder whose first request fails
    # (wrong keys, a feed the plan lacks) stays empty and is removed, so a corrected rerun is not
    # refused as "a different dataset" and no empty folder is left behind.
    return _execute(root, manifest, steps, fetch_bars, macro_fetcher, progress, observer)


def _execute(
    root: Path,
    manifest: Manifest,
    steps: list[_Step],
    fetch_bars: Callable[[str, pd.Timestamp, pd.Timestamp], pd.DataFrame],
    macro_fetcher: MacroFetcher | None,
    progress: Callable[[BuildProgress], None] | None,
    observer: BuildObserver | None = None,
) -> Manifest:
    frames: dict[tuple[SeriesKind, str], pd.DataFrame] = {}
    for done, step in enumerate(steps, start=1):
        _injected_fault(done, series_path(root, step.symbol, step.kind), observer)
        if observer is not None:
            observer.started(done)
        key = (step.kind, step.symbol)
        if key not in frames:
            frames[key] = _load_existing(root, manifest, step.symbol, step.kind)
        where = f"{step.kind} {step.symbol}"
        fetch = fetch_bars if step.kind == "bars" else macro_fetcher
        assert fetch is not None
        new = normalize_bars(fetch(step.symbol, step.start, step.end), where=where, sort=True)
        merged = _merge(frames[key], new, where)
        frames[key] = merged
        entry: SeriesEntry = write_series(
            root, step.symbol, merged, step.kind, fetched_until=step.covered_until
        )
        if step.kind == "bars":
            manifest.tickers[step.symbol] = entry
        else:
            manifest.macro[step.symbol] = entry
        _record_from(manifest, step.kind, step.symbol, step.covered_from)
        save_manifest(root, manifest)
        if progress is not None:
            progress(
                BuildProgress(
                    kind=step.kind,
                    ticker=step.symbol,
                    start=step.start,
                    end=step.end,
                    rows=len(new),
                    done=done,
                    total=len(steps),
                )
            )
    return manifest


def _macro_step(
    manifest: Manifest,
    symbol: str,
    start: pd.Timestamp | None,
    limit: pd.Timestamp,
    update: bool,
) -> _Step | None:
    """One download for a macro series (daily data is small: a single request, no chunks)."""
    have = _stored_coverage(manifest, symbol, "macro")
    if have is None:
        if start is None:
            raise DataError(f"macro {symbol}: no stored data and no start: pass --start")
        return _Step("macro", symbol, start, limit, start, limit)
    have_from, have_until = have
    entry = manifest.macro[symbol]
    if update:
        # Refetch from the last stored row: a daily value fetched during its own day was partial.
        lo = parse_utc(entry.last) if entry.last is not None else have_until
        lo = min(lo, have_until)
        if limit <= lo:
            return None
        return _Step("macro", symbol, lo, limit, have_from, max(limit, have_until))
    want_from = start if start is not None else have_from
    if want_from >= have_from and limit <= have_until:
        return None
    lo, hi = min(want_from, have_from), max(limit, have_until)
    return _Step("macro", symbol, lo, hi, lo, hi)


# ---------------------------------------------------------------------------------------------
# The build's status file: what a detached build is doing, for the panel (docs/dataset-build.md)
# ---------------------------------------------------------------------------------------------

BUILD_DIR = ".build"  # inside the dataset folder; dot-names are not dataset files
STATUS_NAME = "status.json"
LOG_NAME = "build.log"
LOCK_NAME = "lock"
STATUS_VERSION = 1
# Test hooks, comma-separated: ``pause@N`` parks the build before step N (1-based) until SIGUSR1;
# ``enospc@N`` fails step N as a full disk would; ``exit@N`` ends the process there (a crash).
BUILD_FAULT_ENV = "PLOUTOS_BUILD_FAULT"
PAUSE_POLL_S = 0.05
LIVE_STATES: tuple[str, ...] = ("starting", "running")


def build_status_path(root: str | Path) -> Path:
    return Path(root) / BUILD_DIR / STATUS_NAME


def build_log_path(root: str | Path) -> Path:
    return Path(root) / BUILD_DIR / LOG_NAME


def build_lock_path(root: str | Path) -> Path:
    return Path(root) / BUILD_DIR / LOCK_NAME


def build_lock_holder(root: str | Path) -> int | None:
    """The pid of the build process holding ``root``'s build lock, None when no build holds it.

    A killed build drops the lock with its last file descriptor (a zombie holds none), so a
    stale pid or a reused one never reads as a live build.
    """
    path = build_lock_path(root)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError, UnicodeDecodeError, ValueError):
            text = path.read_text().strip()
            if text.isdigit() and int(text) > 0:
                return int(text)
        return -1  # held, by a process that has not written its pid yet
    finally:
        os.close(fd)
    return None


def _pid_alive(pid: object) -> bool:
    """True for a running process (a zombie, dead but not reaped, is not)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def redact_keys(text: str, env: dict[str, str] | None = None) -> str:
    """``text`` with the values of the Alpaca key variables replaced by ``***``."""
    env = dict(os.environ) if env is None else env
    for name in (alpaca.ENV_KEY_ID, alpaca.ENV_SECRET_KEY):
        secret = (env.get(name) or "").strip()
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def describe_failure(err: BaseException) -> str:
    """One line for ``err`` without the Alpaca keys: a PloutosError's own text, an OSError's
    reason and file (a full disk), else the exception's type and text."""
    if isinstance(err, PloutosError):
        text = str(err)
    elif isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f" ({err.filename})" if err.filename else "")
    else:
        text = f"{type(err).__name__}: {err}"
    return redact_keys(" ".join(text.split()))


def _utc_stamp(seconds: float | None = None) -> str:
    return time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if seconds is None else seconds)
    )


def write_starting_status(root: str | Path, command: Sequence[str], pid: int | None = None) -> None:
    """What a launcher writes before (and right after) starting a detached build: the panel then
    shows this build, not the status of an earlier one, while the process imports its modules."""
    atomic.write_json(
        build_status_path(root),
        {
            "version": STATUS_VERSION,
            "state": "starting",
            "pid": pid,
            "root": str(Path(root).resolve()),
            "command": list(command),
            "started_utc": _utc_stamp(),
            "updated_utc": _utc_stamp(),
            "log": str(build_log_path(root).resolve()),
        },
    )


@dataclass
class _SeriesProgress:
    kind: str
    ticker: str
    chunks: int = 0
    done: int = 0
    rows: int = 0


class BuildStatusFile:
    """Holds ``root``'s build lock and writes ``root/.build/status.json`` atomically: the plan,
    each step as it starts and ends, per-series chunk counts, seconds per chunk and an ETA.

    Use as a context manager around the build; pass it as the builder's ``observer`` and its
    :meth:`progress` as ``progress``. A second build into the same folder is refused.
    """

    def __init__(
        self,
        root: str | Path,
        command: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root)
        self.path = build_status_path(self.root)
        self.command = list(command)
        self.clock = clock
        self.state = "running"
        self.error: str | None = None
        self.paused_before: int | None = None
        self._lock_fd: int | None = None
        self._t0 = clock()
        self._started = _utc_stamp()
        self._finished: str | None = None
        self._plan: list[ChunkPlan] = []
        self._planned = False
        self._series: dict[tuple[str, str], _SeriesProgress] = {}
        self._done = 0
        self._current: int | None = None
        self._step_t0: float | None = None
        self._durations: list[float] = []

    # -- lifetime ----------------------------------------------------------------------------
    def __enter__(self) -> BuildStatusFile:
        lock = build_lock_path(self.root)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = build_lock_holder(self.root)
            raise PloutosError(
                f"{self.root}: a build into this folder is already running (pid {pid}); wait "
                "for it or stop it (x on the panel's Dataset screen, or kill that pid) first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self._write()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._current = None
        self.paused_before = None
        if exc is None:
            self.state = "done"
        elif isinstance(exc, KeyboardInterrupt):
            self.state = "stopped"
            self.error = "stopped; resuming continues after the last finished chunk"
        else:
            self.state = "failed"
            self.error = describe_failure(exc)
        self._finished = _utc_stamp()
        try:
            self._write()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- the builder's observer and progress callback ------------------------------------------
    def planned(self, steps: Sequence[ChunkPlan]) -> None:
        self._plan = list(steps)
        self._planned = True
        self._series = {}
        for step in self._plan:
            key = (step.kind, step.ticker)
            entry = self._series.setdefault(key, _SeriesProgress(step.kind, step.ticker))
            entry.chunks += 1
        self._write()

    def started(self, index: int) -> None:
        self._current = index
        self.paused_before = None
        self._step_t0 = self.clock()
        self._write()

    def paused(self, index: int) -> None:
        self.paused_before = index
        self._write()

    def progress(self, event: BuildProgress) -> None:
        if self._step_t0 is not None:
            self._durations.append(max(0.0, self.clock() - self._step_t0))
            self._step_t0 = None
        self._done = event.done
        entry = self._series.setdefault(
            (event.kind, event.ticker), _SeriesProgress(event.kind, event.ticker, chunks=1)
        )
        entry.done += 1
        entry.rows += event.rows
        self._current = None
        self._write()

    # -- the file ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        total = len(self._plan) if self._planned else None
        per_chunk = sum(self._durations) / len(self._durations) if self._durations else None
        remaining = (total - self._done) if total is not None else None
        eta = per_chunk * remaining if per_chunk is not None and remaining is not None else None
        current = None
        if self._current is not None and 0 < self._current <= len(self._plan):
            step = self._plan[self._current - 1]
            current = {
                "index": self._current,
                "kind": step.kind,
                "ticker": step.ticker,
                "start": step.start.isoformat(),
                "end": step.end.isoformat(),
            }
        return {
            "version": STATUS_VERSION,
            "state": self.state,
            "pid": os.getpid(),
            "root": str(self.root.resolve()),
            "command": self.command,
            "started_utc": self._started,
            "updated_utc": _utc_stamp(),
            "finished_utc": self._finished,
            "done": self._done,
            "total": total,
            "current": current,
            "paused_before": self.paused_before,
            "series": [
                {
                    "kind": s.kind,
                    "ticker": s.ticker,
                    "chunks": s.chunks,
                    "done": s.done,
                    "rows": s.rows,
                }
                for s in self._series.values()
            ],
            "elapsed_s": round(self.clock() - self._t0, 3),
            "seconds_per_chunk": None if per_chunk is None else round(per_chunk, 3),
            "eta_s": None if eta is None else round(eta, 1),
            "error": self.error,
            "log": str(build_log_path(self.root).resolve()),
        }

    def _write(self) -> None:
        atomic.write_json(self.path, self.snapshot())


@dataclass(frozen=True)
class BuildStatus:
    """A dataset folder's build status as a reader sees it.

    ``state``: ``starting``/``running`` (a live process holds the lock), ``done``, ``failed``,
    ``stopped``, ``interrupted`` (the file says running but no process holds the lock: killed,
    or the machine restarted) or ``unreadable`` (``problem`` says why).
    """

    root: Path
    state: str
    pid: int | None
    data: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def alive(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def resumable(self) -> bool:
        return self.state in ("interrupted", "stopped", "failed") and bool(self.command)

    def _int(self, key: str) -> int | None:
        value = self.data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _float(self, key: str) -> float | None:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    @property
    def done(self) -> int:
        return self._int("done") or 0

    @property
    def total(self) -> int | None:
        return self._int("total")

    @property
    def eta_s(self) -> float | None:
        return self._float("eta_s")

    @property
    def seconds_per_chunk(self) -> float | None:
        return self._float("seconds_per_chunk")

    @property
    def paused_before(self) -> int | None:
        return self._int("paused_before")

    @property
    def current(self) -> dict[str, Any] | None:
        value = self.data.get("current")
        return value if isinstance(value, dict) else None

    @property
    def series(self) -> list[dict[str, Any]]:
        value = self.data.get("series")
        return [s for s in value if isinstance(s, dict)] if isinstance(value, list) else []

    @property
    def error(self) -> str | None:
        value = self.data.get("error")
        return value if isinstance(value, str) else self.problem

    @property
    def command(self) -> list[str]:
        value = self.data.get("command")
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return list(value) if ok and value[:2] == ["dataset", "build"] else []


def read_build_status(root: str | Path) -> BuildStatus | None:
    """The build status of the dataset folder ``root``; None when no build wrote one there."""
    root = Path(root)
    path = build_status_path(root)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        return BuildStatus(root, "unreadable", None, problem=f"{path}: {describe_failure(err)}")
    holder = build_lock_holder(root)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        state = "running" if holder is not None else "unreadable"
        return BuildStatus(root, state, holder, problem=f"{path}: not a JSON object")
    state = data.get("state")
    pid = data.get("pid") if isinstance(data.get("pid"), int) else None
    if holder is not None:
        return BuildStatus(root, "running" if state == "starting" else str(state), holder, data)
    if state == "starting":
        state = "starting" if _pid_alive(pid) else "interrupted"
    elif state == "running":
        state = "interrupted"
    elif state not in ("done", "failed", "stopped"):
        return BuildStatus(
            root, "unreadable", pid, data, f"{path}: unknown state {str(state)[:40]!r}"
        )
    return BuildStatus(root, str(state), pid, data)


def _injected_fault(index: int, path: Path, observer: BuildObserver | None) -> None:
    """``$PLOUTOS_BUILD_FAULT`` aimed at step ``index`` (tests: a build provably mid-way)."""
    for item in os.environ.get(BUILD_FAULT_ENV, "").split(","):
        kind, _, target = item.strip().partition("@")
        if target != str(index):
            continue
        if kind == "exit":
            os._exit(3)
        if kind == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        if kind == "pause":
            _park(index, observer)


def _park(index: int, observer: BuildObserver | None) -> None:
    """Report the pause, then wait for SIGUSR1 (a test kills or releases the process)."""
    released = {"flag": False}

    def release(_signum: int, _frame: object) -> None:
        released["flag"] = True

    try:
        previous = signal.signal(signal.SIGUSR1, release)
    except ValueError:  # not the main thread: nothing can release it but the end of the process
        previous = None
    try:
        paused = getattr(observer, "paused", None)
        if paused is not None:
            paused(index)
        while not released["flag"]:
            time.sleep(PAUSE_POLL_S)
    finally:
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)


def out_folder_problem(
    root: str | Path, source: str, *, feed: str | None = None, adjustment: str | None = None
) -> str | None:
    """Why a ``source`` build (alpaca with ``feed``/``adjustment``, or yahoo) cannot go into
    ``root``, in one line; None when it can (missing, empty, or the same dataset to extend).
    Reads only: what :func:`build_alpaca` would refuse, asked before a detached build starts."""
    from engine.data.store import MANIFEST_NAME, load_manifest

    root = Path(root)
    if source == SOURCE_ALPACA:
        identity: dict[str, object] = {"source": source, "feed": feed, "adjustment": adjustment}
    else:
        identity = {"source": source, "feed": None, "adjustment": "all"}
    identity["timeframe"] = TIMEFRAME
    if manifest_path(root).exists():
        try:
            theirs = load_manifest(root).identity()
        except PloutosError as err:
            return describe_failure(err)
        diffs = [f"{k} {theirs.get(k)!r}" for k, v in identity.items() if theirs.get(k) != v]
        if diffs:
            return (
                f"{root} holds another dataset ({', '.join(diffs)}): choose another folder "
                "or remove that one"
            )
        return None
    if root.is_file():
        return f"{root} is a file: choose a folder"
    if root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir()):
        return f"{root} is not empty and has no {MANIFEST_NAME}: choose an empty or new folder"
    return None
