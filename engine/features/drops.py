"""The rows a feature build drops after the warm-up, per ticker and reason, and when it refuses.

:func:`drop_report` is stored in ``meta["rows_dropped"]``; :func:`refuse_drops` raises when the
drops exceed ``features.max_dropped_fraction`` or reach the dataset's last rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import DataError
from engine.features.schema import FeatureConfig

__all__ = ["describe_drops", "drop_report", "refuse_drops"]


def _stamp(us: int) -> str:
    return pd.Timestamp(int(us), unit="us", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")


def drop_report(
    common: np.ndarray,
    start: int,
    keep: np.ndarray,
    shared_ok: np.ndarray,
    names: Sequence[str],
    stale: Sequence[np.ndarray],
    undefined: Sequence[np.ndarray],
    cfg: FeatureConfig,
) -> dict[str, Any]:
    """What the rows after the warm-up lost and why (JSON-ready, stored in ``meta``).

    ``common``: ``int64[n_rows]`` union time axis (UTC us); ``keep``: rows kept (from ``start``);
    the masks are ``bool[n_rows]`` per ticker. A row can be dropped for several tickers/reasons.
    """
    n_rows = len(common)
    dropped = np.ones(n_rows, dtype=bool)
    dropped[keep] = False
    dropped[:start] = False
    after = n_rows - start
    n_dropped = int(dropped.sum())
    tail = int(n_rows - 1 - keep[-1])
    reasons: list[dict[str, Any]] = []
    by_ticker: dict[str, dict[str, int]] = {}

    def add(ticker: str | None, reason: str, mask: np.ndarray) -> int:
        hit = mask & dropped
        n = int(hit.sum())
        if n:
            first = int(np.flatnonzero(hit)[0])
            reasons.append(
                {"ticker": ticker, "reason": reason, "rows": n, "first_utc": _stamp(common[first])}
            )
        return n

    for name, st, und in zip(names, stale, undefined, strict=True):
        by_ticker[name] = {
            "stale": add(name, "stale", st),
            "undefined": add(name, "undefined", und),
        }
    shared_n = add(None, "shared", ~shared_ok)
    return {
        "warmup": start,
        "after_warmup": n_dropped,
        "rows_after_warmup": after,
        "fraction": round(n_dropped / after, 6) if after else 0.0,
        "tail": tail,
        "tail_from_utc": _stamp(common[keep[-1] + 1]) if tail else None,
        "max_stale_bars": cfg.max_stale_bars,
        "by_ticker": by_ticker,
        "shared": shared_n,
        "reasons": reasons,
    }


_REASON_TEXT = {
    "stale": "rows with no bar for more than max_stale_bars={m} rows (a halt, a gap, a delisting)",
    "undefined": "rows with non-finite features (an absurd or overflowing price?)",
    "shared": "rows with undefined calendar/macro features",
}


def describe_drops(drops: Mapping[str, Any]) -> str:
    """One line: the rows dropped after the warm-up, per ticker and reason (``meta["rows_dropped"]``)."""
    if not drops.get("after_warmup"):
        return f"no rows dropped after the warm-up ({drops.get('warmup', 0):,} warm-up rows)"
    parts = []
    for item in drops.get("reasons", []):
        text = _REASON_TEXT[item["reason"]].format(m=drops.get("max_stale_bars"))
        who = f"{item['ticker']}: " if item["ticker"] else ""
        parts.append(f"{who}{item['rows']:,} {text} from {item['first_utc']}")
    return (
        f"{drops['after_warmup']:,} of {drops['rows_after_warmup']:,} rows after the warm-up "
        f"dropped ({100.0 * drops['fraction']:.2f}%): {'; '.join(parts)}"
    )


def refuse_drops(drops: Mapping[str, Any], cfg: FeatureConfig) -> None:
    """Raise a one-line ``DataError`` when the drops exceed what ``cfg`` allows."""
    after = drops["rows_after_warmup"]
    too_many = bool(after) and drops["after_warmup"] / after > cfg.max_dropped_fraction
    if not (too_many or drops["tail"]):
        return
    what = []
    if drops["tail"]:
        what.append(f"the dataset's last {drops['tail']:,} rows (from {drops['tail_from_utc']})")
    if too_many:
        what.append(f"more than features.max_dropped_fraction={cfg.max_dropped_fraction:g}")
    fix = "run `ploutos dataset check` and fix or rebuild the data, or leave the ticker(s) out"
    if too_many and not drops["tail"]:
        fix += ", or raise features.max_dropped_fraction"
    raise DataError(f"features would drop {' and '.join(what)}: {describe_drops(drops)}; {fix}")
