"""Walk-forward folds: a train window, an embargo gap, then an out-of-sample test window, stepped on.

Dates are cut on the calendar (``train_years`` of calendar time, ``test_months`` of calendar
months) and turned into rows of the feature set with ``searchsorted`` on its UTC timestamps, so a
fold means the same span whatever the session or the gaps. Folds are anchored at the end of the
data (the last test window ends with it) and step back while a whole train window fits;
``max_folds`` keeps the most recent ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import ConfigError


@dataclass(frozen=True)
class Fold:
    """One walk-forward step. Rows index the feature set's time axis, ``[start, stop)``."""

    index: int
    train_rows: tuple[int, int]
    test_rows: tuple[int, int]
    train_start: str
    train_end: str
    test_start: str
    test_end: str

    @property
    def name(self) -> str:
        return f"fold_{self.index:02d}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["train_rows"] = list(self.train_rows)
        out["test_rows"] = list(self.test_rows)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fold:
        return cls(
            index=int(data["index"]),
            train_rows=(int(data["train_rows"][0]), int(data["train_rows"][1])),
            test_rows=(int(data["test_rows"][0]), int(data["test_rows"][1])),
            train_start=str(data["train_start"]),
            train_end=str(data["train_end"]),
            test_start=str(data["test_start"]),
            test_end=str(data["test_end"]),
        )


def _months(years: float) -> int:
    return max(1, round(years * 12))


def make_folds(
    timestamps_us: Sequence[int] | np.ndarray,
    *,
    train_years: float,
    embargo_days: int,
    test_months: int,
    step_months: int,
    expanding: bool = False,
    max_folds: int | None = None,
    min_rows: int = 2,
    source: str = "config",
) -> list[Fold]:
    """The folds the data allows. ``timestamps_us``: int64[time] bar starts, UTC microseconds.

    ``source`` names the config file in errors. Raises ``ConfigError`` naming
    ``walk_forward.train_years`` when not even one fold fits.
    """
    ts = np.asarray(timestamps_us, dtype=np.int64)
    if ts.size < 2:
        raise ConfigError(f"{source}: the feature set has {ts.size} rows; build the dataset first")
    first = pd.Timestamp(int(ts[0]), unit="us", tz="UTC").normalize()
    # The data ends where its last bar ends; one hour is the bar length of every dataset here.
    data_end = pd.Timestamp(int(ts[-1]), unit="us", tz="UTC") + pd.Timedelta(hours=1)
    train_len = pd.DateOffset(months=_months(train_years))
    embargo = pd.Timedelta(days=embargo_days)
    test_len = pd.DateOffset(months=test_months)

    def rows(lo: pd.Timestamp, hi: pd.Timestamp) -> tuple[int, int]:
        return (
            int(np.searchsorted(ts, lo.value // 1000, "left")),
            int(np.searchsorted(ts, hi.value // 1000, "left")),
        )

    # Anchored at the end: the last test window ends with the data, so the most recent bars are
    # always tested; earlier folds step back by step_months while their train window fits.
    last_end = data_end.ceil("D")
    spans = []
    k = 0
    while True:
        test_end = last_end - pd.DateOffset(months=step_months * k)
        test_start = test_end - test_len
        train_end = test_start - embargo
        train_start = first if expanding else train_end - train_len
        if train_start < first or (expanding and train_end - train_len < first):
            break
        spans.append((train_start, train_end, test_start, test_end))
        k += 1
    folds: list[Fold] = []
    for train_start, train_end, test_start, test_end in reversed(spans):
        train_rows, test_rows = rows(train_start, train_end), rows(test_start, test_end)
        if train_rows[1] - train_rows[0] >= min_rows and test_rows[1] - test_rows[0] >= min_rows:
            folds.append(
                Fold(
                    index=len(folds),
                    train_rows=train_rows,
                    test_rows=test_rows,
                    train_start=train_start.date().isoformat(),
                    train_end=train_end.date().isoformat(),
                    test_start=test_start.date().isoformat(),
                    test_end=test_end.date().isoformat(),
                )
            )
    if not folds:
        need_start = last_end - test_len - embargo - train_len
        raise ConfigError(
            f"{source}: key 'walk_forward.train_years': a {train_years:g}-year train window + "
            f"{embargo_days} days embargo + {test_months}-month test needs data from "
            f"{need_start.date()} to {last_end.date()}, the features cover {first.date()} to "
            f"{data_end.date()}; lower train_years/test_months or build more data"
        )
    if max_folds is not None and len(folds) > max_folds:
        kept = folds[-max_folds:]
        folds = [
            Fold(i, f.train_rows, f.test_rows, f.train_start, f.train_end, f.test_start, f.test_end)
            for i, f in enumerate(kept)
        ]
    return folds


def estimate_fold_count(
    start: dt.date | str,
    end: dt.date | str | None,
    walk_forward: Any,
    *,
    today: dt.date | None = None,
) -> int:
    """How many folds :func:`walk_forward_folds` will cut from data not downloaded yet.

    ``start`` .. ``end``: the config's ``data.start`` and ``data.end`` (dates, ``end`` exclusive
    as in ``ploutos dataset build``; None means ``today``, default today's UTC date).
    ``walk_forward``: a config's ``walk_forward`` section. The calendar arithmetic is
    :func:`make_folds`'s, with its first bar on ``start`` and its last bar ending on the day
    before ``end``, so its rounded data end is ``end``; ``max_folds`` is honoured. Exact on data
    with bars on those two days and at least ``min_rows`` bars in every window; a ``start`` or
    day before ``end`` without bars (a weekend, a holiday) can make the real count one lower.
    Overlapping test windows are counted, not refused (``walk_forward_folds`` refuses them).
    """
    first = pd.Timestamp(str(start)).tz_localize("UTC").normalize()
    if end is None:
        end = today if today is not None else dt.datetime.now(dt.UTC).date()
    last_end = pd.Timestamp(str(end)).tz_localize("UTC").normalize()
    wf = walk_forward
    train_len = pd.DateOffset(months=_months(wf.train_years))
    embargo = pd.Timedelta(days=wf.embargo_days)
    test_len = pd.DateOffset(months=wf.test_months)
    count = 0
    # make_folds' loop: step back from the end while a whole train window fits after ``first``
    # (an expanding window starts at ``first`` but needs the same minimum length).
    while True:
        test_end = last_end - pd.DateOffset(months=wf.step_months * count)
        train_end = test_end - test_len - embargo
        if train_end - train_len < first:
            break
        count += 1
    return count if wf.max_folds is None else min(count, wf.max_folds)


def walk_forward_folds(timestamps_us: np.ndarray, walk_forward: Any, source: str) -> list[Fold]:
    """The folds of a config's ``walk_forward`` section (``engine.config.WalkForwardConfig``).

    Overlapping test windows (``step_months < test_months``) are refused unless
    ``allow_overlapping_tests`` is set: pooled statistics would count the shared bars twice."""
    wf = walk_forward
    if wf.step_months < wf.test_months and not getattr(wf, "allow_overlapping_tests", False):
        raise ConfigError(
            f"{source}: key 'walk_forward.step_months': {wf.step_months} < test_months "
            f"{wf.test_months}, so test windows overlap and pooled results would count their "
            "shared bars twice; set step_months >= test_months, or "
            "walk_forward.allow_overlapping_tests: true (pooled figures then use each bar once)"
        )
    return make_folds(
        timestamps_us,
        train_years=wf.train_years,
        embargo_days=wf.embargo_days,
        test_months=wf.test_months,
        step_months=wf.step_months,
        expanding=wf.expanding,
        max_folds=wf.max_folds,
        source=source,
    )


def format_folds(folds: Sequence[Fold]) -> str:
    """A table of the folds for ``ploutos folds``."""
    lines = [
        f"{'fold':<8} {'train':<25} {'rows':>14} {'test':<25} {'rows':>14}",
    ]
    for f in folds:
        lines.append(
            f"{f.name:<8} {f.train_start + ' .. ' + f.train_end:<25} "
            f"{f'{f.train_rows[1] - f.train_rows[0]:,}':>14} "
            f"{f.test_start + ' .. ' + f.test_end:<25} "
            f"{f'{f.test_rows[1] - f.test_rows[0]:,}':>14}"
        )
    return "\n".join(lines)
