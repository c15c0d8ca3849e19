"""CSV import and export, so datasets built elsewhere (the old ``dataset_v8`` CSV folders) still load.

Import accepts the common spellings of OHLCV columns and of the time column, tz-aware timestamps
(any offset, mixed DST offsets included) or naive ones with an explicit time zone. Every CSV is read
and validated before anything is written, so a bad file leaves the output folder untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine import atomic
from engine.data import store
from engine.errors import DataError

# Lower-cased, non-alphanumerics removed -> our column name.
_ALIASES: dict[str, str] = {
    **dict.fromkeys(["timestamp", "time", "date", "datetime", "t", "ts", "index"], "timestamp"),
    **dict.fromkeys(["open", "o", "openprice"], "open"),
    **dict.fromkeys(["high", "h", "highprice"], "high"),
    **dict.fromkeys(["low", "l", "lowprice"], "low"),
    **dict.fromkeys(["close", "c", "closeprice", "last"], "close"),
    **dict.fromkeys(["volume", "v", "vol"], "volume"),
    **dict.fromkeys(["vwap", "vw"], "vwap"),
    **dict.fromkeys(["tradecount", "n", "trades", "numtrades"], "trade_count"),
    **dict.fromkeys(["symbol", "ticker"], "symbol"),
}
IMPORT_SOURCE = "csv-import"


def _canonical(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _symbol_from_filename(path: Path) -> str:
    # "AAPL.csv", "AAPL_1h.csv", "aapl-hourly.csv" -> "AAPL"
    stem = re.split(r"[_\-\s]", path.stem, maxsplit=1)[0]
    return stem.upper()


@dataclass(frozen=True)
class ImportedSeries:
    symbol: str
    path: Path
    frame: pd.DataFrame


def read_bars_csv(
    path: str | Path, *, tz: str | None = None, symbol: str | None = None
) -> list[ImportedSeries]:
    """Read one OHLCV CSV into store-schema frames (one per symbol when it has a symbol column).

    ``tz`` names the zone of naive timestamps (``America/New_York`` for the old Yahoo exports);
    tz-aware timestamps are converted to UTC whatever ``tz`` says. Rows are sorted and exact duplicate
    timestamps keep the last row, as a re-download would.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable CSV ({first_line})") from None
    renamed: dict[str, str] = {}
    for col in raw.columns:
        target = _ALIASES.get(_canonical(col))
        if target and target not in renamed.values():
            renamed[col] = target
    raw = raw.rename(columns=renamed)
    if "timestamp" not in raw.columns:
        if _canonical(raw.columns[0]).startswith("unnamed"):
            raw = raw.rename(columns={raw.columns[0]: "timestamp"})
        else:
            raise DataError(
                f"{path}: no time column; name it timestamp, time, date or datetime "
                f"(found {', '.join(map(str, raw.columns))})"
            )
    times = _parse_times(raw["timestamp"], path=path, tz=tz)
    frame = raw.drop(columns=["timestamp"]).set_index(times)
    groups: list[tuple[str, pd.DataFrame]]
    if "symbol" in frame.columns and symbol is None:
        groups = [
            (str(s).upper(), g.drop(columns=["symbol"]))
            for s, g in frame.groupby("symbol", sort=True)
        ]
    else:
        frame = frame.drop(columns=["symbol"], errors="ignore")
        groups = [(symbol.upper() if symbol else _symbol_from_filename(path), frame)]
    out = []
    for sym, group in groups:
        bars = store.normalize_bars(group, where=str(path), sort=True)
        if bars.empty:
            raise DataError(f"{path}: no rows for {sym}")
        out.append(ImportedSeries(sym, path, bars))
    return out


def _parse_times(values: pd.Series, *, path: Path, tz: str | None) -> pd.DatetimeIndex:
    text = values.astype(str)
    aware = text.str.contains(r"(?:[+-]\d\d:?\d\d|Z|UTC)$", regex=True)
    if aware.any() and not aware.all():
        raise DataError(
            f"{path}: column 'timestamp' mixes naive and tz-aware values; make them uniform"
        )
    try:
        if aware.all():
            parsed = pd.to_datetime(text, utc=True, format="ISO8601")
        else:
            if tz is None:
                raise DataError(
                    f"{path}: timestamps have no time zone; pass --tz (e.g. --tz UTC or --tz America/New_York)"
                )
            parsed = pd.to_datetime(text, format="ISO8601").dt.tz_localize(
                tz, ambiguous="raise", nonexistent="raise"
            )
    except DataError:
        raise
    except Exception as err:  # pandas raises several types for unparsable or DST-ambiguous values
        raise DataError(
            f"{path}: column 'timestamp' has an unusable value ({str(err).splitlines()[0]})"
        ) from None
    return pd.DatetimeIndex(parsed)


def import_csv(
    files: Sequence[str | Path],
    out: str | Path,
    *,
    tz: str | None = None,
    symbol: str | None = None,
    timeframe: str = "1h",
) -> store.Manifest:
    """Import CSV files into the dataset folder ``out`` (created, or extended if it is a CSV import).

    All files are parsed and validated first; only then is anything written.
    """
    if symbol and len(files) > 1:
        raise DataError("--symbol names the ticker of a single file; drop it for several files")
    series: dict[str, ImportedSeries] = {}
    for file in files:
        for item in read_bars_csv(file, tz=tz, symbol=symbol):
            if item.symbol in series:
                raise DataError(
                    f"{item.path}: ticker {item.symbol} also comes from {series[item.symbol].path}"
                )
            series[item.symbol] = item
    identity = {"source": IMPORT_SOURCE, "timeframe": timeframe, "feed": None, "adjustment": None}
    manifest = store.open_out_folder(out, identity, IMPORT_SOURCE)
    imported = [str(f) for f in manifest.params.get("imported_files") or []]  # type: ignore[union-attr]
    for sym, item in series.items():
        manifest.tickers[sym] = store.write_series(out, sym, item.frame)
        if str(item.path) not in imported:
            imported.append(str(item.path))
        manifest.params["imported_files"] = imported
        store.save_manifest(out, manifest)
    return manifest


def export_csv(root: str | Path, out: str | Path) -> list[Path]:
    """Write every series of dataset ``root`` as CSV under ``out`` (ISO-8601 UTC timestamps).

    Every file is read (and checked against the manifest's sha256) before anything is written, so
    a damaged or replaced file is one ``DataError`` naming it and leaves ``out`` untouched.
    """
    dataset = store.Dataset(root)
    out = Path(out)
    frames: list[tuple[Path, pd.DataFrame]] = []
    for kind, symbols in (("bars", dataset.tickers), ("macro", dataset.macro_symbols)):
        for sym in symbols:
            frame = dataset.bars(sym) if kind == "bars" else dataset.macro(sym)
            target = out / ("macro" if kind == "macro" else "") / f"{store.safe_name(sym)}.csv"
            frames.append((target, frame))
    for target, frame in frames:
        atomic.write_text(target, frame.to_csv(date_format="%Y-%m-%dT%H:%M:%S.%f+00:00"))
    return [target for target, _ in frames]
