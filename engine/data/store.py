"""The dataset store: one Parquet file per ticker, macro series under ``macro/``, one ``manifest.json``.

Layout of a dataset folder::

    <root>/manifest.json          what is here: source, feed, adjustment, per-series rows/range/sha256
    <root>/<TICKER>.parquet       hourly bars, index ``timestamp`` (UTC, us, bar start)
    <root>/macro/<SYMBOL>.parquet macro series (daily by default), same columns

Bars frames: float64 ``open high low close volume`` plus ``vwap trade_count`` when the source has
them, indexed by a UTC microsecond ``DatetimeIndex`` named ``timestamp``. Daily macro rows are
labelled by their date at UTC midnight (the label's calendar date is the trading day it describes).
Every file is written atomically, and the manifest is rewritten after each file it describes, so
an interrupted build leaves only complete files that the manifest knows about.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import __version__, atomic
from engine.atomic import file_sha256
from engine.errors import DataError
from engine.timeutil import to_utc_us, utc_now

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MACRO_DIR = "macro"
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: tuple[str, ...] = ("vwap", "trade_count")
INDEX_NAME = "timestamp"

SeriesKind = Literal["bars", "macro"]


class SeriesEntry(BaseModel):
    """What the manifest knows about one stored series."""

    model_config = ConfigDict(extra="forbid")

    file: str
    rows: int
    first: datetime | None
    last: datetime | None
    sha256: str
    columns: list[str]
    # End (exclusive, UTC) of the last fully downloaded chunk: a resumed or ``--update`` build
    # starts here instead of downloading again.
    fetched_until: datetime | None = None


class Manifest(BaseModel):
    """``manifest.json``: the description of a dataset folder."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    builder_version: str = __version__
    source: str
    timeframe: str = "1h"
    feed: str | None = None
    adjustment: str | None = None
    macro_source: str | None = None
    macro_interval: str = "1d"
    created_utc: datetime = Field(default_factory=lambda: utc_now().to_pydatetime())
    updated_utc: datetime = Field(default_factory=lambda: utc_now().to_pydatetime())
    tickers: dict[str, SeriesEntry] = Field(default_factory=dict)
    macro: dict[str, SeriesEntry] = Field(default_factory=dict)
    params: dict[str, object] = Field(default_factory=dict)

    def identity(self) -> dict[str, object]:
        """The fields that make two builds the same dataset (an ``--out`` folder must match them)."""
        return {
            "source": self.source,
            "timeframe": self.timeframe,
            "feed": self.feed,
            "adjustment": self.adjustment,
        }


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(symbol: str) -> str:
    """File stem for a symbol: ``^VIX`` -> ``_VIX``, ``DX-Y.NYB`` stays, ``BRK/B`` -> ``BRK_B``."""
    if not symbol or symbol in {".", ".."}:
        raise DataError(f"invalid symbol {symbol!r}: use a ticker such as AAPL or ^VIX")
    return _SAFE.sub("_", symbol)


def series_path(root: str | Path, symbol: str, kind: SeriesKind = "bars") -> Path:
    root = Path(root)
    name = safe_name(symbol) + ".parquet"
    return root / MACRO_DIR / name if kind == "macro" else root / name


def normalize_bars(
    frame: pd.DataFrame, *, where: str, naive_tz: str | None = "UTC", sort: bool = False
) -> pd.DataFrame:
    """Return ``frame`` in the store's schema, or raise a ``DataError`` naming ``where`` and the column.

    ``frame`` must be indexed by timestamps (any tz, any resolution; naive ones are read in
    ``naive_tz``) and have the bar columns. Values are coerced to float64; a non-numeric value is an
    error naming the column and the first bad row. Duplicated or unsorted timestamps are kept as they
    are unless ``sort=True`` (``dataset check`` reports them); NaN is kept (check reports it too).
    """
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; "
            f"bars need {', '.join(BAR_COLUMNS)} (found {', '.join(map(str, frame.columns)) or 'none'})"
        )
    try:
        index = to_utc_us(frame.index, naive_tz=naive_tz)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{where}: timestamps are unusable ({err}); pass --tz for naive ones"
        ) from None
    cols = list(BAR_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in frame.columns]
    out = pd.DataFrame(index=index)
    for col in cols:
        out[col] = numeric_column(frame[col], where=where, column=col, index=index)
    out.index.name = INDEX_NAME
    if sort:
        out = out[~out.index.duplicated(keep="last")].sort_index()
    return out


def numeric_column(values: pd.Series, *, where: str, column: str, index: pd.Index) -> np.ndarray:
    """``values`` as float64 (missing stays NaN); a non-numeric value is a ``DataError`` naming
    ``where``, the column and the row's timestamp."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna().to_numpy() & values.notna().to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: column {column!r} has a non-numeric value {values.iloc[pos]!r} "
            f"at {index[pos]}; fix or remove that row"
        )
    return numeric.to_numpy(dtype="float64", na_value=np.nan)


def write_series(
    root: str | Path,
    symbol: str,
    frame: pd.DataFrame,
    kind: SeriesKind = "bars",
    fetched_until: datetime | pd.Timestamp | None = None,
) -> SeriesEntry:
    """Atomically write one series (already normalised) and return its manifest entry."""
    path = series_path(root, symbol, kind)
    atomic.write_parquet(path, frame)
    first = frame.index[0].to_pydatetime() if len(frame) else None
    last = frame.index[-1].to_pydatetime() if len(frame) else None
    until = pd.Timestamp(fetched_until).to_pydatetime() if fetched_until is not None else None
    return SeriesEntry(
        file=str(path.relative_to(root)),
        rows=len(frame),
        first=first,
        last=last,
        sha256=file_sha256(path),
        columns=list(frame.columns),
        fetched_until=until,
    )


def checksum_mismatch(path: str | Path, root: str | Path) -> DataError:
    """The one-line error for a file whose bytes differ from its manifest's sha256."""
    return DataError(
        f"{path}: contents do not match the sha256 in {manifest_path(root)} (the file was "
        f"replaced or changed after the build); restore it or rebuild the dataset, then run "
        f"`ploutos dataset check {root}`"
    )


def load_series(
    root: str | Path,
    symbol: str,
    kind: SeriesKind = "bars",
    *,
    expected_sha256: str | None = None,
) -> tuple[pd.DataFrame, str]:
    """One stored series and the sha256 of the exact bytes it was parsed from.

    The file is read once into memory, hashed, checked against ``expected_sha256`` (when given) and
    parsed from those same bytes, so a caller that keys a cache on the digest keys it on what it
    actually used, even if the file is replaced meanwhile. An unreadable, truncated or non-Parquet
    file is a one-line ``DataError`` naming it.
    """
    path = series_path(root, symbol, kind)
    if not path.exists():
        raise DataError(f"{path}: not found; rebuild the dataset or check the symbol {symbol!r}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err}); check the file") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise checksum_mismatch(path, root)
    return _parse_parquet(data, path), digest


_RESOURCE_FAILURE = re.compile(
    r"Resource temporarily unavailable|Cannot allocate memory|Failed to launch worker thread|"
    r"failed to allocate|out of memory",
    re.IGNORECASE,
)


def _parse_parquet(data: bytes, path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    # pyarrow reports garbage as ArrowInvalid (a ValueError), unsupported encodings as
    # ArrowNotImplementedError, and truncated pages as OSError; any of them means the same here.
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        if _RESOURCE_FAILURE.search(detail):
            # The machine, not the file: pyarrow could not start a reader thread or allocate
            # (a small `ulimit -v`, the thread limit). Calling the file damaged would send the
            # user off to rebuild a good dataset.
            raise MemoryError(f"{path}: pyarrow could not read it: {detail}") from err
        raise DataError(
            f"{path}: not a readable Parquet file ({detail}); rebuild the dataset or run "
            "`ploutos dataset check` on it"
        ) from None
    try:
        frame.index = to_utc_us(frame.index)
    except (TypeError, ValueError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(
            f"{path}: the index is not usable bar timestamps ({detail}); rebuild the dataset"
        ) from None
    frame.index.name = INDEX_NAME
    return frame


def read_series(
    root: str | Path,
    symbol: str,
    kind: SeriesKind = "bars",
    *,
    expected_sha256: str | None = None,
) -> pd.DataFrame:
    """One stored series (see :func:`load_series`, which also returns the digest)."""
    return load_series(root, symbol, kind, expected_sha256=expected_sha256)[0]


def manifest_path(root: str | Path) -> Path:
    return Path(root) / MANIFEST_NAME


def load_manifest(root: str | Path) -> Manifest:
    path = manifest_path(root)
    if not path.exists():
        raise DataError(
            f"{path}: no manifest; build a dataset there first "
            "(ploutos dataset demo|build|import --out ...)"
        )
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise DataError(f"{path}: key {key!r}: {first['msg']}; rebuild the dataset") from None
    if manifest.format_version > FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {manifest.format_version} is newer than this Ploutos "
            f"understands ({FORMAT_VERSION}); upgrade Ploutos"
        )
    return manifest


def save_manifest(root: str | Path, manifest: Manifest) -> None:
    manifest.updated_utc = utc_now().to_pydatetime()
    atomic.write_text(manifest_path(root), manifest.model_dump_json(indent=2) + "\n")


def open_out_folder(root: str | Path, identity: dict[str, object], source: str) -> Manifest:
    """Return the manifest to extend in ``root``, refusing a folder that holds something else.

    An empty or missing folder gets a fresh manifest. A folder with a manifest of the same identity
    (source, timeframe, feed, adjustment) is resumed/updated. Anything else is an error, so a build
    never mixes two datasets or overwrites files it does not own.
    """
    root = Path(root)
    if manifest_path(root).exists():
        manifest = load_manifest(root)
        theirs = manifest.identity()
        diffs = [
            f"{k}={theirs[k]!r} (asked {v!r})" for k, v in identity.items() if theirs.get(k) != v
        ]
        if diffs:
            raise DataError(
                f"{root}: holds a different dataset ({'; '.join(diffs)}); "
                "choose another --out folder or remove this one"
            )
        return manifest
    if root.exists() and any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise DataError(
            f"{root}: folder is not empty and has no {MANIFEST_NAME}; "
            "choose an empty or new --out folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    return Manifest(source=source, **{k: v for k, v in identity.items() if k != "source"})


class Dataset:
    """A dataset folder opened for reading."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = load_manifest(self.root)

    @property
    def tickers(self) -> list[str]:
        return list(self.manifest.tickers)

    @property
    def macro_symbols(self) -> list[str]:
        return list(self.manifest.macro)

    def bars(self, symbol: str, *, verify: bool = True) -> pd.DataFrame:
        """One ticker's bars; ``verify``: refuse a file that differs from its manifest sha256."""
        if symbol not in self.manifest.tickers:
            raise DataError(
                f"{manifest_path(self.root)}: no ticker {symbol!r}; have {self.tickers}"
            )
        sha = self.manifest.tickers[symbol].sha256 if verify else None
        return read_series(self.root, symbol, "bars", expected_sha256=sha)

    def macro(self, symbol: str, *, verify: bool = True) -> pd.DataFrame:
        """One macro series; ``verify``: refuse a file that differs from its manifest sha256."""
        if symbol not in self.manifest.macro:
            raise DataError(
                f"{manifest_path(self.root)}: no macro series {symbol!r}; have {self.macro_symbols}"
            )
        sha = self.manifest.macro[symbol].sha256 if verify else None
        return read_series(self.root, symbol, "macro", expected_sha256=sha)

    def verified_hashes(self, tickers: Iterable[str], macro: Iterable[str] = ()) -> dict[str, str]:
        """``{"bars:<T>" | "macro:<S>": sha256}`` of the files as they are on disk now.

        Raises one ``DataError`` naming every file that is missing or differs from the manifest,
        so nothing is built on (or attached to features of) a swapped or damaged file. Hashing is
        cheap next to parsing: 15 tickers x 50,000 bars (~49 MB) take ~0.05 s.
        """
        out: dict[str, str] = {}
        bad: list[str] = []
        for kind, symbols, entries in (
            ("bars", tickers, self.manifest.tickers),
            ("macro", macro, self.manifest.macro),
        ):
            for symbol in symbols:
                entry = entries[symbol]
                path = self.root / entry.file
                try:
                    digest = file_sha256(path)
                except FileNotFoundError:
                    bad.append(f"{entry.file} (missing)")
                    continue
                except OSError as err:
                    bad.append(f"{entry.file} ({err.strerror or err})")
                    continue
                if digest != entry.sha256:
                    bad.append(entry.file)
                out[f"{kind}:{symbol}"] = digest
        if bad:
            raise DataError(
                f"{self.root}: file(s) not as {manifest_path(self.root)} records them (sha256 "
                f"differs or file missing: replaced or changed after the build): {', '.join(bad)}; "
                f"restore them or rebuild the dataset, then run `ploutos dataset check {self.root}`"
            )
        return out

    def checksum(self) -> str:
        """One digest of all series as the manifest records them (not re-hashed: the feature cache
        keys on :meth:`verified_hashes` of the files it reads instead)."""
        digest = hashlib.sha256()
        for kind, entries in (("bars", self.manifest.tickers), ("macro", self.manifest.macro)):
            for symbol in sorted(entries):
                digest.update(f"{kind}:{symbol}:{entries[symbol].sha256}\n".encode())
        return digest.hexdigest()

    def verify_checksums(self) -> list[str]:
        """Problems found comparing files on disk to the manifest (empty when all match)."""
        problems = []
        for entries in (self.manifest.tickers, self.manifest.macro):
            for symbol, entry in entries.items():
                path = self.root / entry.file
                if not path.exists():
                    problems.append(f"{symbol}: {entry.file} is missing")
                elif file_sha256(path) != entry.sha256:
                    problems.append(f"{symbol}: {entry.file} does not match its manifest checksum")
        return problems


def parse_symbols(text: str | Iterable[str]) -> list[str]:
    """``"AAPL, msft"`` -> ``["AAPL", "MSFT"]`` (order kept, duplicates dropped)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        sym = item.strip().upper()
        if sym and sym not in out:
            out.append(sym)
    if not out:
        raise DataError("no tickers given: pass --tickers AAPL,MSFT,...")
    return out
