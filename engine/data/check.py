"""``dataset check``: validate a dataset folder against its manifest and the NYSE calendar.

One job, many rules: each check is a short function producing findings; they stay together so the
report and its severities are defined in one place.

Every problem becomes a :class:`Finding` with a severity:

- ``error``: the data is wrong or unusable as stored (checksum mismatch, duplicated or unsorted
  timestamps, timestamps before 1900 or in the future, NaN/inf, impossible OHLC, prices outside
  [:data:`PRICE_MIN`, :data:`PRICE_MAX`], a one-bar spike that reverts on the next bar, negative
  volume, bars on holidays or at night, bars not on the hour, regular-session bars missing beyond
  the allowed share). ``CheckReport.ok`` is False.
- ``warning``: suspicious but usable (a vwap outside the bar's range, a large one-bar jump that
  stays (an unadjusted split?), a few macro NaN that the alignment forward-fills, macro rows
  labelled on a weekend, regular bars missing within the allowed share, files the manifest does
  not list).
- ``info``: expected in real data (missing extended-hours bars).

The report is made of frozen dataclasses so it can be passed between threads (the panel runs the
check in a worker) and compared in tests; ``format_text`` renders the compact text the CLI prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import pandas as pd

from engine.atomic import file_sha256
from engine.data import calendar, store
from engine.data.store import SeriesEntry, SeriesKind
from engine.errors import DataError
from engine.timeutil import NEW_YORK, to_utc_us, utc_now

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
MAX_EXAMPLES = 3
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
PRICE_MIN = 1e-4
"""Lowest sane price (sub-penny OTC quotes go down to $0.0001); below it is an error."""
PRICE_MAX = 1e7
"""Highest sane price (the dearest US share, BRK.A, is below $1e6); above it is an error."""
JUMP_SIGMAS = 20.0
"""A one-bar log return of the close is a jump when beyond this many robust standard deviations
(1.4826 x the median absolute deviation of the series' one-bar log returns) ..."""
JUMP_MIN_LOG_RETURN = float(np.log(1.5))
"""... and beyond this absolute floor (a 50 % move), so a very quiet series does not flag
ordinary earnings gaps."""
SPIKE_REVERT_SHARE = 0.5
"""A jump is a spike (an error: a bad print) when the next bar's return undoes at least this
share of it; a jump that stays is only a warning (an unadjusted split, real news)."""
FIRST_SANE_TIME = pd.Timestamp("1900-01-01", tz="UTC")
"""Earliest bar time accepted (the NYSE calendar used here starts there)."""
FUTURE_SLACK = pd.Timedelta(days=2)
"""A bar may start at most this far after the check's own clock (time-zone slack)."""


@dataclass(frozen=True)
class Finding:
    """One problem (or notice) about a dataset or one of its series.

    ``code`` is a stable identifier (``duplicate_timestamps``, ``missing_regular``, ...) for tests
    and tools; ``message`` is the one-line human text; ``count`` how many rows/bars/files are
    concerned; ``examples`` up to three of them (timestamps as ``2024-03-11T08:00Z``, dates as
    ``2024-03-09``, or file names).
    """

    severity: Severity
    code: str
    message: str
    count: int = 0
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeriesReport:
    """What the check found in one series (a ticker's bars or a macro series).

    ``counts`` holds the numbers behind the findings: ``rows`` always; for bars also
    ``expected_regular``, ``missing_regular``, ``expected_extended``, ``missing_extended``.
    """

    symbol: str
    kind: SeriesKind
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    findings: tuple[Finding, ...]
    counts: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # A read-only view, so the frozen report cannot be changed through its counts.
        object.__setattr__(self, "counts", MappingProxyType(dict(self.counts)))

    def of(self, severity: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == severity)

    @property
    def ok(self) -> bool:
        return not self.of("error")

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}


@dataclass(frozen=True)
class CheckReport:
    """The result of :func:`check_dataset`: dataset-level findings plus one report per series."""

    root: Path
    source: str | None
    findings: tuple[Finding, ...]
    series: tuple[SeriesReport, ...]

    @property
    def ok(self) -> bool:
        """True when nothing anywhere is an error (warnings and info allowed)."""
        return all(f.severity != "error" for f in self.findings) and all(s.ok for s in self.series)

    def count(self, severity: Severity) -> int:
        """Number of findings of ``severity`` in the whole report."""
        return sum(f.severity == severity for _, f in self.all_findings())

    def all_findings(self) -> list[tuple[str | None, Finding]]:
        """``(symbol or None for the dataset, finding)`` pairs, dataset-level first."""
        out: list[tuple[str | None, Finding]] = [(None, f) for f in self.findings]
        for s in self.series:
            out.extend((s.symbol, f) for f in s.findings)
        return out

    def get(self, symbol: str, kind: SeriesKind = "bars") -> SeriesReport:
        for s in self.series:
            if s.symbol == symbol and s.kind == kind:
                return s
        raise KeyError(f"no {kind} series {symbol!r} in this report")

    def format_text(self) -> str:
        """A compact per-series report for the terminal, one line per series plus one per finding."""
        n_bars = sum(s.kind == "bars" for s in self.series)
        n_macro = len(self.series) - n_bars
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"{self.root}: {self.source or 'unknown source'}, {n_bars} tickers, "
            f"{n_macro} macro series: {verdict} ({_plural(self.count('error'), 'error')}, "
            f"{_plural(self.count('warning'), 'warning')}, {self.count('info')} info)"
        ]
        lines.extend(_finding_line(f, indent="  ") for f in _ordered(self.findings))
        labels = [s.symbol if s.kind == "bars" else f"{s.symbol} (macro)" for s in self.series]
        width = max((len(x) for x in labels), default=4)
        for s, label in zip(self.series, labels, strict=True):
            ny = s.kind == "bars"
            span = (
                f"{_date(s.first, new_york=ny)}..{_date(s.last, new_york=ny)}"
                if s.first is not None
                else "no rows"
            )
            unit = "bars" if s.kind == "bars" else "days"
            parts = [f"  {label:<{width}} {s.rows:>9,} {unit} {span}"]
            c = s.counts
            if s.kind == "bars" and "expected_regular" in c:
                reg = c["expected_regular"] - c["missing_regular"]
                parts.append(f"regular {reg:,}/{c['expected_regular']:,}")
                if c.get("expected_extended"):
                    ext = c["expected_extended"] - c["missing_extended"]
                    parts.append(f"extended {ext:,}/{c['expected_extended']:,}")
            n_err = len(s.of("error"))
            parts.append("ok" if n_err == 0 else f"{n_err} error{'s' if n_err > 1 else ''}")
            lines.append("  ".join(parts))
            lines.extend(_finding_line(f, indent="      ") for f in _ordered(s.findings))
        return "\n".join(lines)


def _ordered(findings: tuple[Finding, ...]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def _finding_line(f: Finding, *, indent: str) -> str:
    # File findings already name their file in the message; timestamps are worth showing.
    shown = [e for e in f.examples if e not in f.message]
    eg = f" (e.g. {', '.join(shown)})" if shown else ""
    return f"{indent}{f.severity:<8}{f.code}: {f.message}{eg}"


def _date(ts: pd.Timestamp | None, *, new_york: bool = False) -> str:
    """``YYYY-MM-DD``; hourly bars are dated by their New York trading day (the 19:00 New York bar
    starts at 00:00 UTC the next day)."""
    if ts is None or pd.isna(ts):
        return "-"
    return str((ts.tz_convert(NEW_YORK) if new_york else ts).date())


def _fmt_ts(ts: pd.Timestamp) -> str:
    if pd.isna(ts):
        return "NaT"
    if ts.second or ts.microsecond:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return ts.strftime("%Y-%m-%dT%H:%MZ")


def _examples(index: pd.DatetimeIndex, mask: np.ndarray, *, daily: bool = False) -> tuple[str, ...]:
    picked = index[np.flatnonzero(mask)[:MAX_EXAMPLES]]
    if daily:
        return tuple(str(t.date()) for t in picked)
    return tuple(_fmt_ts(t) for t in picked)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _bad_values(
    frame: pd.DataFrame, index: pd.DatetimeIndex, *, daily: bool, nan_severity: Severity
) -> list[Finding]:
    """NaN and +-inf in any column (``frame`` numeric, ``(n_rows, n_cols)``)."""
    out: list[Finding] = []
    values = frame.to_numpy(dtype="float64", na_value=np.nan)
    for code, test, severity, what in (
        ("nan_values", np.isnan, nan_severity, "NaN"),
        ("inf_values", np.isinf, "error", "infinite values"),
    ):
        bad = test(values)
        if bad.any():
            per_col = bad.sum(axis=0)
            cols = ", ".join(
                f"{c} ({int(n):,})" for c, n in zip(frame.columns, per_col, strict=True) if n
            )
            rows = bad.any(axis=1)
            out.append(
                Finding(
                    severity,
                    code,
                    f"{what} in {cols}",
                    int(rows.sum()),
                    _examples(index, rows, daily=daily),
                )
            )
    return out


def _index_findings(
    index: pd.DatetimeIndex, *, daily: bool
) -> tuple[list[Finding], pd.DatetimeIndex]:
    """NaT, duplicated and unsorted timestamps. Returns findings and the sorted unique valid stamps."""
    out: list[Finding] = []
    nat = np.asarray(index.isna())
    if nat.any():
        out.append(
            Finding(
                "error",
                "nat_timestamps",
                f"{_plural(int(nat.sum()), 'row')} without a timestamp",
                int(nat.sum()),
            )
        )
    valid = index[~nat]
    dup = np.asarray(valid.duplicated(keep="first"))
    if dup.any():
        out.append(
            Finding(
                "error",
                "duplicate_timestamps",
                f"{_plural(int(dup.sum()), 'duplicated timestamp')}; keep one row per "
                f"{'date' if daily else 'bar'}",
                int(dup.sum()),
                _examples(valid, dup, daily=daily),
            )
        )
    i64 = valid.asi8
    back = np.r_[False, i64[1:] < i64[:-1]]
    if back.any():
        out.append(
            Finding(
                "error",
                "unsorted_timestamps",
                f"timestamps go backwards {_plural(int(back.sum()), 'time')}; sort the file by time",
                int(back.sum()),
                _examples(valid, back, daily=daily),
            )
        )
    return out, valid.unique().sort_values()


def _time_range_findings(
    stamps: pd.DatetimeIndex, *, daily: bool
) -> tuple[list[Finding], pd.DatetimeIndex]:
    """Timestamps before :data:`FIRST_SANE_TIME` or in the future (year 3000 is a typo, not a
    bar). Returns findings and the stamps within range, which the calendar checks then use: the
    calendar, and pandas' nanosecond arithmetic, cannot represent the others."""
    last_ok = utc_now() + FUTURE_SLACK
    bad = np.asarray((stamps < FIRST_SANE_TIME) | (stamps > last_ok))
    if not bad.any():
        return [], stamps
    finding = Finding(
        "error",
        "timestamp_out_of_range",
        f"{_plural(int(bad.sum()), 'row')} dated before {FIRST_SANE_TIME.date()} or after "
        f"{last_ok.date()} (today + {FUTURE_SLACK.days} days); fix or remove those rows",
        int(bad.sum()),
        _examples(stamps, bad, daily=daily),
    )
    return [finding], stamps[~bad]


def _price_findings(frame: pd.DataFrame, index: pd.DatetimeIndex) -> list[Finding]:
    """Prices beyond a sane range, and one-bar jumps of the close (a spike if it reverts).

    ``frame``: bars ``(n_rows, n_cols)`` with the price columns, ``index`` its UTC timestamps. The
    jump test runs on the rows with a finite positive close, in time order, one row per timestamp.
    """
    out: list[Finding] = []
    prices = frame[list(PRICE_COLUMNS)].to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        absurd = ((prices > PRICE_MAX) | ((prices > 0) & (prices < PRICE_MIN))).any(axis=1)
    if absurd.any():
        out.append(
            Finding(
                "error",
                "price_out_of_range",
                f"{_plural(int(absurd.sum()), 'bar')} with a price outside "
                f"[{PRICE_MIN:g}, {PRICE_MAX:g}]; fix or remove those bars",
                int(absurd.sum()),
                _examples(index, absurd),
            )
        )
    close = pd.Series(prices[:, 3], index=index)
    close = close[~index.isna()]
    close = close[~close.index.duplicated(keep="last")].sort_index()
    close = close[np.isfinite(close.to_numpy()) & (close.to_numpy() > 0)]
    if len(close) < 3:
        return out
    ret = np.diff(np.log(close.to_numpy()))
    sigma = 1.4826 * float(np.median(np.abs(ret - np.median(ret))))
    threshold = max(JUMP_SIGMAS * sigma, JUMP_MIN_LOG_RETURN)
    jump = np.abs(ret) > threshold
    nxt = np.r_[ret[1:], 0.0]
    reverts = (
        jump & (np.sign(nxt) == -np.sign(ret)) & (np.abs(nxt) >= SPIKE_REVERT_SHARE * np.abs(ret))
    )
    # ret[i] is the return into bar i + 1: flag that bar.
    stamps = close.index[1:]
    spike, stays = reverts, jump & ~reverts
    # The bar that reverts a spike is itself a jump; it is the spike's echo, not news.
    stays &= ~np.r_[False, reverts[:-1]]
    if spike.any():
        out.append(
            Finding(
                "error",
                "price_spike",
                f"{_plural(int(spike.sum()), 'bar')} whose close jumps more than "
                f"{100 * np.expm1(threshold):.0f}% and reverts on the next bar (a bad print); "
                "fix or remove those bars",
                int(spike.sum()),
                _examples(stamps, spike),
            )
        )
    if stays.any():
        out.append(
            Finding(
                "warning",
                "price_jump",
                f"{_plural(int(stays.sum()), 'bar')} whose close jumps more than "
                f"{100 * np.expm1(threshold):.0f}% in one bar and stays (an unadjusted split?)",
                int(stays.sum()),
                _examples(stamps, stays),
            )
        )
    return out


def _missing_columns(frame: pd.DataFrame, required: tuple[str, ...]) -> Finding | None:
    missing = [c for c in required if c not in frame.columns]
    if not missing:
        return None
    return Finding(
        "error",
        "missing_columns",
        f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns)) or 'none'}",
        len(missing),
    )


def _ohlc_mask(frame: pd.DataFrame) -> np.ndarray:
    """Rows where low > high, or open/close lie outside [low, high] (NaN compares as fine)."""
    o, h, low, c = (frame[k].to_numpy(dtype="float64", na_value=np.nan) for k in PRICE_COLUMNS)
    with np.errstate(invalid="ignore"):
        return (low > h) | (o < low) | (o > h) | (c < low) | (c > h)


def check_bars(
    frame: pd.DataFrame,
    *,
    max_missing_regular_pct: float = 0.0,
    include_extended: bool = True,
) -> tuple[list[Finding], dict[str, int]]:
    """Check one ticker's hourly bars ``(n_rows, n_cols)``; returns findings and counts."""
    counts: dict[str, int] = {"rows": len(frame)}
    missing = _missing_columns(frame, store.BAR_COLUMNS)
    if missing:
        return [missing], counts
    if len(frame) == 0:
        return [Finding("warning", "empty", "no rows")], counts
    index = to_utc_us(frame.index)
    out, stamps = _index_findings(index, daily=False)
    more, stamps = _time_range_findings(stamps, daily=False)
    out += more
    numeric = frame[[c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]]
    out += _bad_values(numeric, index, daily=False, nan_severity="error")
    out += _price_findings(frame, index)

    bad = _ohlc_mask(frame)
    if bad.any():
        out.append(
            Finding(
                "error",
                "ohlc_inconsistent",
                f"{_plural(int(bad.sum()), 'bar')} with low > high or open/close outside [low, high]",
                int(bad.sum()),
                _examples(index, bad),
            )
        )
    prices = frame[list(PRICE_COLUMNS)].to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        nonpos = (prices <= 0).any(axis=1)
    if nonpos.any():
        out.append(
            Finding(
                "error",
                "nonpositive_price",
                f"{_plural(int(nonpos.sum()), 'bar')} with a price <= 0",
                int(nonpos.sum()),
                _examples(index, nonpos),
            )
        )
    for col in ("volume", "trade_count"):
        if col in frame.columns:
            with np.errstate(invalid="ignore"):
                neg = frame[col].to_numpy(dtype="float64", na_value=np.nan) < 0
            if neg.any():
                out.append(
                    Finding(
                        "error",
                        f"negative_{col}",
                        f"{_plural(int(neg.sum()), 'bar')} with negative {col}",
                        int(neg.sum()),
                        _examples(index, neg),
                    )
                )
    if "vwap" in frame.columns:
        vwap = frame["vwap"].to_numpy(dtype="float64", na_value=np.nan)
        lo = frame["low"].to_numpy(dtype="float64", na_value=np.nan)
        hi = frame["high"].to_numpy(dtype="float64", na_value=np.nan)
        # Sources compute vwap over all trades but OHLC over eligible ones only, so a vwap a hair
        # outside the range happens in real data: a warning, with a relative tolerance of 1e-6.
        tol = 1e-6 * np.abs(hi)
        with np.errstate(invalid="ignore"):
            off = (vwap < lo - tol) | (vwap > hi + tol)
        if off.any():
            out.append(
                Finding(
                    "warning",
                    "vwap_outside_range",
                    f"{_plural(int(off.sum()), 'bar')} with vwap outside [low, high]",
                    int(off.sum()),
                    _examples(index, off),
                )
            )

    if len(stamps) == 0:
        return out, counts
    # Calendar checks, on the valid unique stamps within range.
    i64 = stamps.asi8
    misaligned = np.mod(i64, calendar.HOUR_US) != 0
    if misaligned.any():
        out.append(
            Finding(
                "error",
                "misaligned",
                f"{_plural(int(misaligned.sum()), 'bar')} not starting on the hour (UTC :00); "
                "hourly bars are stamped at :00 (Yahoo's start at :30)",
                int(misaligned.sum()),
                _examples(stamps, misaligned),
            )
        )
    kinds = calendar.classify_bars(stamps)
    off = kinds == calendar.OFF_SESSION
    if off.any():
        ny_dates = stamps[off].tz_convert(NEW_YORK).tz_localize(None).normalize()
        trading_day = calendar.is_session(ny_dates)
        holiday = np.zeros(len(stamps), dtype=bool)
        holiday[np.flatnonzero(off)[~trading_day]] = True
        night = off & ~holiday
        if holiday.any():
            out.append(
                Finding(
                    "error",
                    "non_trading_day",
                    f"{_plural(int(holiday.sum()), 'bar')} on weekends or NYSE holidays "
                    "(a time-zone shift or a wrong calendar?)",
                    int(holiday.sum()),
                    _examples(stamps, holiday),
                )
            )
        if night.any():
            out.append(
                Finding(
                    "error",
                    "outside_session_hours",
                    f"{_plural(int(night.sum()), 'bar')} outside 04:00-20:00 New York "
                    "(17:00 on early closes)",
                    int(night.sum()),
                    _examples(stamps, night),
                )
            )
    n_ext_present = int((kinds == calendar.EXTENDED).sum())
    counts["extended_present"] = n_ext_present
    if not include_extended and n_ext_present:
        out.append(
            Finding(
                "info",
                "extended_bars_present",
                f"{_plural(n_ext_present, 'extended-hours bar')} present (checked as regular-only)",
                n_ext_present,
            )
        )

    # Missing bars, over the span the series covers (first to last bar): a build that starts on a
    # listing date or ends mid-day today is not "missing" the hours outside its span.
    first, last = stamps[0], stamps[-1]
    grid = calendar.bar_grid(first, last, include_extended=include_extended)
    exp = grid.timestamps
    in_span = (exp >= first) & (exp <= last)
    exp_i64 = exp.asi8[in_span]
    exp_kind = grid.kind[in_span]
    present = np.isin(exp_i64, i64)
    exp_stamps = exp[in_span]
    for kind, name in ((calendar.REGULAR, "regular"), (calendar.EXTENDED, "extended")):
        if kind == calendar.EXTENDED and not include_extended:
            continue
        sel = exp_kind == kind
        lost = sel & ~present
        n_exp, n_lost = int(sel.sum()), int(lost.sum())
        counts[f"expected_{name}"] = n_exp
        counts[f"missing_{name}"] = n_lost
        if not n_lost:
            continue
        pct = 100.0 * n_lost / n_exp
        if kind == calendar.REGULAR:
            severity: Severity = "error" if pct > max_missing_regular_pct else "warning"
            detail = f"(allowed {max_missing_regular_pct:g}%)"
        else:
            # Thin pre/post-market hours often have no trade at all (on IEX especially), and a
            # source only emits bars for hours with trades: a real build is never complete here,
            # so this is information, not a defect.
            severity = "info"
            detail = "(normal: quiet pre/post-market hours have no trades)"
        out.append(
            Finding(
                severity,
                f"missing_{name}",
                f"{n_lost:,} of {n_exp:,} {name}-session bars missing ({pct:.2f}%) {detail}",
                n_lost,
                _examples(exp_stamps, lost),
            )
        )
    return out, counts


def check_macro(frame: pd.DataFrame) -> tuple[list[Finding], dict[str, int]]:
    """Check one daily macro series ``(n_days, n_cols)``; returns findings and counts."""
    counts: dict[str, int] = {"rows": len(frame)}
    missing = _missing_columns(frame, ("close",))
    if missing:
        return [missing], counts
    if len(frame) == 0:
        return [Finding("warning", "empty", "no rows")], counts
    index = to_utc_us(frame.index)
    out, stamps = _index_findings(index, daily=True)
    more, stamps = _time_range_findings(stamps, daily=True)
    out += more
    numeric = frame[[c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]]
    close = frame["close"].to_numpy(dtype="float64", na_value=np.nan)
    if np.isnan(close).all():
        # A source that failed (yfinance's rate limit) can leave a column of NaN: unusable.
        out.append(
            Finding(
                "error", "all_nan", "every close is NaN; download this series again", len(frame)
            )
        )
    # Some NaN (a holiday of that market, a missed print) are forward-filled by the alignment.
    out += _bad_values(numeric, index, daily=True, nan_severity="warning")
    i64 = stamps.asi8
    not_midnight = np.mod(i64, 86_400_000_000) != 0
    if not_midnight.any():
        out.append(
            Finding(
                "error",
                "not_midnight",
                f"{_plural(int(not_midnight.sum()), 'row')} not labelled at UTC midnight; "
                "daily rows are labelled by their date at 00:00 UTC",
                int(not_midnight.sum()),
                _examples(stamps, not_midnight),
            )
        )
    weekend = np.asarray(stamps.day_of_week >= 5)
    counts["weekend"] = int(weekend.sum())
    if weekend.any():
        out.append(
            Finding(
                "warning",
                "weekend_label",
                f"{_plural(int(weekend.sum()), 'row')} labelled on a Saturday or Sunday "
                "(a time-zone shift of the dates?)",
                int(weekend.sum()),
                _examples(stamps, weekend, daily=True),
            )
        )
    if all(c in frame.columns for c in PRICE_COLUMNS):
        bad = _ohlc_mask(frame)
        if bad.any():
            # Index quotes from Yahoo occasionally have a close a tick outside high/low; only the
            # close is used downstream, so this is a warning.
            out.append(
                Finding(
                    "warning",
                    "ohlc_inconsistent",
                    f"{_plural(int(bad.sum()), 'row')} with low > high or open/close outside [low, high]",
                    int(bad.sum()),
                    _examples(index, bad, daily=True),
                )
            )
    return out, counts


def _entry_findings(root: Path, symbol: str, entry: SeriesEntry) -> tuple[list[Finding], bool]:
    """Checksum of one file against its manifest entry. Returns findings and whether it exists."""
    path = root / entry.file
    if not path.exists():
        return [
            Finding(
                "error",
                "file_missing",
                f"{entry.file} is listed in the manifest but missing; rebuild the dataset",
                1,
                (entry.file,),
            )
        ], False
    if file_sha256(path) != entry.sha256:
        return [
            Finding(
                "error",
                "checksum_mismatch",
                f"{entry.file} does not match its manifest checksum (changed after the build); "
                "rebuild or re-import it",
                1,
                (entry.file,),
            )
        ], True
    return [], True


def _check_series(
    root: Path,
    symbol: str,
    kind: SeriesKind,
    entry: SeriesEntry,
    *,
    max_missing_regular_pct: float,
    include_extended: bool,
) -> SeriesReport:
    findings, exists = _entry_findings(root, symbol, entry)
    if not exists:
        return SeriesReport(symbol, kind, 0, None, None, tuple(findings), {"rows": 0})
    try:
        frame = store.read_series(root, symbol, kind)
    except (DataError, OSError, ValueError, TypeError) as err:
        findings.append(Finding("error", "unreadable", f"{entry.file}: {err}", 1, (entry.file,)))
        return SeriesReport(symbol, kind, 0, None, None, tuple(findings), {"rows": 0})
    if kind == "bars":
        more, counts = check_bars(
            frame,
            max_missing_regular_pct=max_missing_regular_pct,
            include_extended=include_extended,
        )
    else:
        more, counts = check_macro(frame)
    findings += more
    if len(frame) != entry.rows:
        findings.append(
            Finding(
                "error",
                "row_count_mismatch",
                f"{entry.file} has {len(frame):,} rows, the manifest says {entry.rows:,}",
                abs(len(frame) - entry.rows),
            )
        )
    valid = frame.index[~frame.index.isna()]
    first = valid.min() if len(valid) else None
    last = valid.max() if len(valid) else None
    return SeriesReport(symbol, kind, len(frame), first, last, tuple(findings), counts)


def _unlisted_files(root: Path, manifest: store.Manifest) -> list[Finding]:
    listed = {e.file for e in (*manifest.tickers.values(), *manifest.macro.values())}
    found = sorted(
        str(p.relative_to(root))
        for folder in (root, root / store.MACRO_DIR)
        if folder.is_dir()
        for p in folder.glob("*.parquet")
    )
    extra = [f for f in found if f not in listed]
    if not extra:
        return []
    return [
        Finding(
            "warning",
            "unlisted_files",
            f"{_plural(len(extra), 'Parquet file')} not in the manifest (ignored by training)",
            len(extra),
            tuple(extra[:MAX_EXAMPLES]),
        )
    ]


def check_dataset(
    root: str | Path,
    *,
    max_missing_regular_pct: float = 0.0,
    include_extended: bool = True,
) -> CheckReport:
    """Check a dataset folder: manifest, checksums, every series' values and the calendar.

    ``max_missing_regular_pct``: share (0-100, percent of the expected regular-session bars within
    a series' span) that may be missing before it is an error; missing regular bars within it are a
    warning. ``include_extended``: the dataset is meant to hold extended hours (04:00-20:00 New
    York); with False, only regular-session completeness is checked and extended bars found are
    reported as info. Never raises for bad data: everything becomes a finding.
    """
    if not 0.0 <= max_missing_regular_pct <= 100.0:
        raise DataError(
            f"max_missing_regular_pct={max_missing_regular_pct}: use a percentage between 0 and 100"
        )
    root = Path(root)
    try:
        manifest = store.load_manifest(root)
    except DataError as err:
        return CheckReport(root, None, (Finding("error", "manifest_unreadable", str(err), 1),), ())
    findings = _unlisted_files(root, manifest)
    if not manifest.tickers:
        findings.append(Finding("warning", "no_tickers", "the manifest lists no tickers"))
    series = [
        _check_series(
            root,
            sym,
            kind,
            entry,
            max_missing_regular_pct=max_missing_regular_pct,
            include_extended=include_extended,
        )
        for kind, entries in (("bars", manifest.tickers), ("macro", manifest.macro))
        for sym, entry in entries.items()
    ]
    return CheckReport(root, manifest.source, tuple(findings), tuple(series))
