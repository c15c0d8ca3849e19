"""The verdict section of the Run screen: how orders filled, the ensemble against null policies on
the same Monte Carlo paths, timing skill, overfitting, cost sensitivity, seed spread, the verdict.

Everything comes from a :class:`ploutos_tui.model.runs.RunSnapshot`'s judged fields (their meaning
and units: docs/results.md). Runs from before verdicts have none of them and an event may hold any
JSON, so every value is read defensively: a missing, null, non-finite or odd-typed value shows as
an em dash and never raises. Numbers carry their unit: ``%`` (a fraction shown in percent), ``pp``
(a difference of returns, percentage points), ``bps`` (basis points per side), ``bars``; p-values
and probabilities without a unit are labelled ``p`` or named (PBO, deflated Sharpe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.api import dig, number
from ploutos_tui.model.runs import FoldRow, RunSnapshot, p_text

DASH = "—"
POLICIES = (("cash", "cash"), ("always_long", "always long"), ("random", "random"))
FILL_TEXT = {
    "next_open": "next_open (at the open of the bar after the decision)",
    "next_vwap": "next_vwap (at the volume-weighted price of the bar after the decision)",
    "close": "close (optimistic: fills at the close the agent just saw)",
}
MAX_LIST = 12  # reasons, cost multipliers: more than this is not a real verdict, cut it

# One line per statistic of this section, for the Run screen's help (``?``).
GLOSSARY: tuple[tuple[str, str], ...] = (
    (
        "fills",
        "where orders fill: next_open / next_vwap = the bar after the decision (its open / "
        "volume-weighted price); close = the close the agent just saw, impossible live "
        "(optimistic)",
    ),
    (
        "return %",
        "out-of-sample return of the test window after trading costs, positions sold at the end",
    ),
    (
        "B&H @ x%",
        "buy and hold of the same basket held at the ensemble's mean exposure x % (rest in cash): "
        "what being that much in the market earns without timing",
    ),
    (
        "Monte Carlo paths",
        "a block bootstrap of the test window's (features, next-bar return) pairs: the same market "
        "resampled, not other markets; random lengths and cost jitter",
    ),
    (
        "null policies",
        "cash (never trades), always long (buys every ticker every bar until fully invested), "
        "random (uniform actions): each run on the very same paths as the ensemble",
    ),
    ("loss prob %", "share of paths that end below the starting equity"),
    ("median / mean %", "median / mean final return over the paths"),
    ("ens. beats %", "share of paths on which the ensemble ends above that policy"),
    ("excess pp", "median / mean over paths of ensemble minus policy return, percentage points"),
    (
        "timing p",
        "permutation test: the next-bar returns are shuffled in blocks against the features and "
        "the ensemble re-run; p = share of shuffles doing at least as well (small p = timing "
        "skill)",
    ),
    ("perms, block", "number of permutations; length of the shuffled blocks in bars"),
    (
        "observed / null median %",
        "the ensemble's out-of-sample return; the median return over the shuffles (no timing)",
    ),
    ("trials, runs", "N: the members of every run on this dataset, each one trial of a strategy"),
    (
        "PBO",
        "probability of backtest overfitting (CSCV, Bailey et al. 2015): how often the in-sample "
        "best trial ends in the bottom half out of sample; above 0.5 the selection is overfit",
    ),
    (
        "deflated Sharpe",
        "probability that the true Sharpe beats SR0, the best Sharpe luck gives over N trials "
        "(every member of every run on this dataset) (Bailey & Lopez de Prado 2014)",
    ),
    ("Sharpe /bar", "the ensemble's Sharpe ratio per bar (not annualised): mean / std of returns"),
    ("SR0 /bar", "expected largest per-bar Sharpe of N skill-less trials"),
    ("reality check p", "Hansen's SPA p-value that no trial beats the benchmark"),
    ("paths", "what the Monte Carlo simulations resample, as the engine names it"),
    (
        "costs 0x..4x",
        "out-of-sample return with 0, 1, 2, 4 times the configured bps per side; break-even = "
        "the cost per side at which the return reaches zero",
    ),
    (
        "seed spread",
        "the members' out-of-sample returns (one per training seed): mean, 95 % t-interval of the "
        "mean, std, min..max",
    ),
    (
        "verdict",
        "skill is shown only when timing p <= alpha, deflated Sharpe >= its minimum, PBO <= its "
        "maximum (when computable), return > 0 after costs and exposure > 0",
    ),
)


# ------------------------------------------------------------------------ reading and formatting
# number: a finite float or None; get: value[path[0]][path[1]]... or None (the engine's readers)
get = dig


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def items(value: Any, limit: int = MAX_LIST) -> list[Any]:
    """The first ``limit`` items of a JSON array (a tuple once frozen); [] for anything else."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        return []
    return list(value[:limit])


def pct(value: Any, signed: bool = True) -> str:
    """A fraction in percent: ``+1.23%`` (``45.0%`` unsigned)."""
    v = number(value)
    if v is None:
        return DASH
    return f"{v * 100:+.2f}%" if signed else f"{v * 100:.1f}%"


def pp(value: Any) -> str:
    """A difference of two returns (fractions) in percentage points: ``+0.44 pp``."""
    v = number(value)
    return DASH if v is None else f"{v * 100:+.2f} pp"


def bps(value: Any) -> str:
    v = number(value)
    return DASH if v is None else f"{v:.3g} bps"


def count(value: Any, unit: str = "") -> str:
    v = number(value)
    if v is None or v < 0 or v != int(v):
        return DASH
    return f"{int(v):,}{unit}"


def counted(value: Any, noun: str) -> str:
    """``1 run``, ``3 runs``, ``— runs``."""
    n = count(value)
    return f"{n} {noun}" + ("" if n == "1" else "s")


def ratio(value: Any, digits: int = 2) -> str:
    """A unitless probability (PBO, deflated Sharpe), two decimals."""
    v = number(value)
    return DASH if v is None else f"{v:.{digits}f}"


def short(value: Any) -> str:
    """A threshold or multiplier as written in a config: ``0.05``, ``0.5``, ``2``."""
    v = number(value)
    return DASH if v is None else f"{v:g}"


def _table(title: str, *columns: str) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=None,
        header_style="bold",
        pad_edge=False,
        collapse_padding=True,
        padding=(0, 1),
    )
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    return table


def _cells(*values: str) -> list[Text]:
    return [Text(v) for v in values]


def fold_of_scope(snap: RunSnapshot, scope: str | None) -> FoldRow | None:
    """The fold a Monte Carlo scope names (``fold_03`` -> fold 3), None for pooled or unknown."""
    if not isinstance(scope, str) or not scope.startswith("fold_"):
        return None
    digits = scope[len("fold_") :]
    if not digits.isdigit() or len(digits) > 9:
        return None
    wanted = int(digits)
    return next((f for f in snap.folds if f.fold == wanted), None)


# ------------------------------------------------------------------------ the parts
def verdict_headline(snap: RunSnapshot) -> Text | None:
    """The verdict line, green when skill is shown; None before the run is judged."""
    skill = snap.verdict.get("skill")
    if not isinstance(skill, bool):
        return None
    line = text(snap.verdict.get("line")) or ("skill shown" if skill else "skill not shown")
    return Text(line, style="bold green" if skill else "bold yellow", overflow="fold")


def verdict_lines(snap: RunSnapshot) -> list[RenderableType]:
    """The verdict line (with its reasons and thresholds), or why there is none yet."""
    verdict = snap.verdict
    headline = verdict_headline(snap)
    if headline is None:
        if any(f.judged for f in snap.folds):
            why = "not judged yet: the verdict comes once every fold is evaluated"
        else:
            why = "no verdict: this run has not been judged (runs from before verdicts never are)"
        return [Text(why, style="dim")]
    out: list[RenderableType] = [headline]
    for reason in items(verdict.get("reasons")):
        if isinstance(reason, str):
            out.append(Text(f"  · {reason}", style="dim", overflow="fold"))
    limits = verdict.get("thresholds")
    needs = [
        f"timing p <= {short(get(limits, 'alpha'))}",
        f"deflated Sharpe >= {short(get(limits, 'min_deflated_sharpe'))}",
        f"PBO <= {short(get(limits, 'max_pbo'))}",
    ]
    out.append(Text("  needs " + ", ".join(needs) + ", return > 0 and exposure > 0", style="dim"))
    return out


def fills_line(snap: RunSnapshot) -> Text | None:
    fill = snap.fill or next((f.fill for f in reversed(snap.folds) if f.fill), None)
    if fill is None:
        return None
    optimistic = snap.fill_optimistic or fill == "close"
    label = FILL_TEXT.get(fill, fill) + (" (optimistic)" if optimistic and fill != "close" else "")
    return Text.assemble(("fills: ", "bold"), (label, "bold yellow" if optimistic else ""))


def nulls_table(snap: RunSnapshot, scope: str | None) -> RenderableType | None:
    """The ensemble and each null policy on the same paths of one scope (pooled or a fold)."""
    fold = fold_of_scope(snap, scope)
    if fold is not None:
        nulls, ensemble = fold.nulls, snap.montecarlo.get(scope) or fold.montecarlo
        kind = fold.montecarlo_kind
        where = f"fold {fold.fold}"
    elif scope in (None, "pooled"):
        nulls, ensemble = get(snap.pooled, "nulls"), snap.montecarlo.get("pooled")
        kind = next((f.montecarlo_kind for f in snap.folds if f.montecarlo_kind), None)
        where = "pooled"
    else:
        return None
    if not isinstance(nulls, Mapping) or not nulls:
        return Text(f"no null-policy comparison for {where}", style="dim")
    table = _table(
        f"Null policies on the same Monte Carlo paths ({where})",
        "policy",
        "loss prob",
        "median",
        "mean",
        "ens. beats",
        "excess med.",
        "excess mean",
    )
    table.add_row(
        *_cells(
            "ensemble",
            pct(get(ensemble, "loss_probability"), signed=False),
            pct(get(ensemble, "median")),
            pct(get(ensemble, "mean")),
            DASH,
            DASH,
            DASH,
        ),
        style="bold",
    )
    for key, name in POLICIES:
        row = nulls.get(key)
        table.add_row(
            *_cells(
                name,
                pct(get(row, "stats", "loss_probability"), signed=False),
                pct(get(row, "stats", "median")),
                pct(get(row, "stats", "mean")),
                pct(get(row, "beat_probability"), signed=False),
                pp(get(row, "excess_median")),
                pp(get(row, "excess_mean")),
            )
        )
    if text(kind):
        return Group(table, Text(f"paths: {kind}", style="dim", overflow="fold"))
    return table


def timing_table(snap: RunSnapshot) -> Table | None:
    pooled = get(snap.pooled, "timing")
    if isinstance(pooled, Mapping) and pooled and "observed_return" not in pooled:
        pooled = {**pooled, "observed_return": snap.pooled.get("oos_return")}
    rows = [("pooled", pooled)]
    rows += [(f"fold {f.fold}", f.timing) for f in snap.folds if f.timing]
    if not any(isinstance(t, Mapping) and t for _, t in rows):
        return None
    table = _table(
        "Timing skill (returns permuted against features)",
        "scope",
        "p return",
        "p Sharpe",
        "perms",
        "block",
        "observed",
        "null median",
    )
    for name, timing in rows:
        if not isinstance(timing, Mapping) or not timing:
            continue
        table.add_row(
            *_cells(
                name,
                p_text(number(timing.get("p_return"))),
                p_text(number(timing.get("p_sharpe"))),
                count(timing.get("permutations")),
                count(timing.get("block_bars"), " bars"),
                pct(timing.get("observed_return")),
                pct(timing.get("null_return_median")),
            )
        )
    return table


def overfitting_lines(snap: RunSnapshot) -> list[Text]:
    over = snap.overfitting
    if not over:
        return []
    trials = f"{counted(over.get('n_trials'), 'trial')} in {counted(over.get('n_runs'), 'run')}"
    pbo = number(over.get("pbo"))
    if pbo is None:
        note = text(over.get("pbo_note"))
        pbo_text = "PBO n/a" + (f": {note}" if note else "")
    else:
        pbo_text = (
            f"PBO {ratio(pbo)} (probability; CSCV over {count(over.get('pbo_splits'))} splits)"
        )
    return [
        Text.assemble(("Overfitting ", "bold"), f"({trials} on this dataset)"),
        Text(f"  {pbo_text}", overflow="fold"),
        Text(
            f"  deflated Sharpe {ratio(over.get('deflated_sharpe'))} (probability; Sharpe "
            f"{ratio(over.get('sharpe_per_bar'), 4)} /bar vs SR0 {ratio(over.get('sr0'), 4)} /bar)",
            overflow="fold",
        ),
        Text(f"  reality check p {p_text(number(over.get('reality_check_p')))}"),
    ]


def costs_table(snap: RunSnapshot) -> Table | None:
    folds = [f for f in snap.folds if f.cost_sensitivity]
    if not folds:
        return None
    first = folds[0].cost_sensitivity
    levels = items(first.get("cost_bps"))
    heads = []
    for i, m in enumerate(items(first.get("multipliers"))):
        level = bps(levels[i]) if i < len(levels) else DASH
        mult = number(m)
        heads.append(f"{mult:g}x {level}" if mult is not None else DASH)
    table = _table(
        "Cost sensitivity (bps per side)",
        "fold",
        *heads,
        "break-even",
    )
    for f in folds:
        returns = items(f.cost_sensitivity.get("total_return"))
        cells = [pct(returns[i]) if i < len(returns) else DASH for i in range(len(heads))]
        even = number(f.cost_sensitivity.get("break_even_bps"))
        note = text(f.cost_sensitivity.get("break_even_note"))
        even_text = f"{even:.1f} bps/side" if even is not None else (note or DASH)
        table.add_row(*_cells(f"fold {f.fold}", *cells, even_text))
    return table


def seeds_table(snap: RunSnapshot) -> Table | None:
    rows = [("pooled", snap.seed_dispersion)]
    rows += [(f"fold {f.fold}", f.seed_dispersion) for f in snap.folds if f.seed_dispersion]
    if not any(s for _, s in rows):
        return None
    table = _table(
        "Seed spread of the members' returns", "scope", "n", "mean", "95% CI", "std", "min..max"
    )
    for name, seeds in rows:
        if not seeds:
            continue
        ci = f"{pct(seeds.get('ci_low'))}..{pct(seeds.get('ci_high'))}"
        std = number(seeds.get("std"))
        table.add_row(
            *_cells(
                name,
                count(seeds.get("n")),
                pct(seeds.get("mean")),
                ci,
                DASH if std is None else f"{std * 100:.2f}%",
                f"{pct(seeds.get('min'))}..{pct(seeds.get('max'))}",
            )
        )
    return table


def verdict_renderable(snap: RunSnapshot, scope: str | None) -> Group:
    """The whole section for one snapshot; ``scope`` picks the null-policy table (``pooled``,
    ``fold_00``, ...; None: pooled). Never raises on odd field values."""
    parts: list[RenderableType] = list(verdict_lines(snap))
    fills = fills_line(snap)
    if fills is not None:
        parts.append(fills)
    blocks: list[RenderableType | None] = [
        nulls_table(snap, scope) if (snap.judged or any(f.nulls for f in snap.folds)) else None,
        timing_table(snap),
        Group(*overfitting_lines(snap)) if snap.overfitting else None,
        costs_table(snap),
        seeds_table(snap),
    ]
    for block in blocks:
        if block is not None:
            parts.extend((Text(""), block))
    return Group(*parts)


class VerdictPanel(Static):
    """The verdict section; :meth:`show` draws a snapshot (UI thread). ``failed`` keeps why the
    last snapshot could not be drawn (None when it was)."""

    DEFAULT_CSS = """
    VerdictPanel { height: auto; }
    """

    failed: str | None = None

    def show(self, snap: RunSnapshot, scope: str | None) -> None:
        try:
            renderable: RenderableType = verdict_renderable(snap, scope)
            self.failed = None
        except Exception as err:  # a bug here must not end the panel: say it, keep running
            self.failed = f"{type(err).__name__}: {err}"
            renderable = Text(f"cannot show the verdict: {self.failed}", style="red")
        self.update(renderable)
