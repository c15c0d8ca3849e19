"""The overview's runs: every live run with its units, in one widget that fits its size.

Per live run: a headline (state, progress, steps/s of its running units, ETA, elapsed), its units
by state with the time breakdown of the running ones (mean of their last interval), its verdict
(or how many folds are evaluated before it), then one line per unit: state, progress bar,
timesteps, steps/s, ETA, its time split and mean reward, as many as the height holds (two
columns of units when the width allows; the rest counted). Without a live run it lists the most
recent runs. The last line is the newest verdict of any run.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from ploutos_tui.model.runs import MemberRow, RunSnapshot, format_duration
from ploutos_tui.model.runs import format_steps as steps
from ploutos_tui.widgets.lines import LinesWidget
from ploutos_tui.widgets.verdict import verdict_headline

UNIT_COLUMN_MIN = 96  # two columns of units from twice this width
STATE_STYLES = {
    "running": "bold green",
    "starting": "cyan",
    "stopping": "yellow",
    "stopped": "yellow",
    "finished": "blue",
    "failed": "bold red",
    "pending": "dim",
    "interrupted": "bold magenta",
    "unreadable": "bold red",
}
# a unit's order on screen: what needs a look first
UNIT_ORDER = {"failed": 0, "running": 1, "stopped": 2, "pending": 3, "finished": 4}
PHASES = (
    ("env", "env", "env"),
    ("inference", "inference", "inf"),
    ("gradient", "gradient", "grad"),
    ("checkpoint", "checkpoint", "ckpt"),
    ("waiting", "waiting", "wait"),
)


def bar(fraction: float, width: int, style: str) -> Text:
    fraction = max(0.0, min(1.0, fraction))
    filled = int(round(fraction * width))
    out = Text("█" * filled, style=style)
    out.append("░" * (width - filled), style="dim")
    return out


def _fits(line: Text, part: Text | str, width: int) -> bool:
    size = part.cell_len if isinstance(part, Text) else len(part)
    return line.cell_len + size <= width


def _assemble(parts: Sequence[Text | str], width: int) -> Text:
    """The parts in order, each one only while the line still fits ``width``."""
    out = Text(no_wrap=True, overflow="crop", end="")
    for part in parts:
        if _fits(out, part, width):
            out.append(part) if isinstance(part, str) else out.append_text(part)
    return out


def mean_shares(run: RunSnapshot) -> dict[str, float]:
    """The running units' time split (their last interval), averaged; empty without one."""
    sums: dict[str, float] = {}
    count = 0
    for m in run.members:
        if m.state != "running" or not m.time_shares:
            continue
        count += 1
        for key, value in m.time_shares.items():
            if isinstance(value, (int, float)) and 0 <= value <= 1:
                sums[key] = sums.get(key, 0.0) + float(value)
    return {k: v / count for k, v in sums.items()} if count else {}


def run_steps_per_s(run: RunSnapshot) -> float:
    return sum(m.fps for m in run.members if m.state == "running" and m.fps > 0)


def run_headline(run: RunSnapshot, width: int) -> Text:
    style = STATE_STYLES.get(run.state, "")
    mark = Text("● " if run.live else "○ ", style=style)
    parts: list[Text | str] = [mark, Text(run.run_id, style="bold"), " "]
    parts.append(Text(run.state_label, style="bold yellow" if run.stalled_s else style))
    size = max(8, min(30, width // 6))
    progress = Text(" ")
    progress.append_text(bar(run.progress, size, "green" if run.live else "blue"))
    progress.append(f" {100 * run.progress:3.0f}%")
    parts.append(progress)
    if run.live:
        parts.append(f" · ETA {format_duration(run.eta_s)}")
    if run.elapsed_s is not None:
        parts.append(f" · elapsed {format_duration(run.elapsed_s)}")
    if run.algorithm:
        parts.append(f" · {run.algorithm}")
    if run.n_folds and run.ensemble:
        parts.append(f" · {run.n_folds} folds × {run.ensemble} members")
    return _assemble(parts, width)


def units_lines(run: RunSnapshot, width: int) -> list[Text]:
    """The units by state and the running units' time split: one line when both fit ``width``,
    else two."""
    counts: dict[str, int] = {}
    for m in run.members:
        counts[m.state] = counts.get(m.state, 0) + 1
    order = sorted(counts, key=lambda s: UNIT_ORDER.get(s, 9))
    out = Text("units ", style="bold", no_wrap=True, overflow="crop", end="")
    for k, state in enumerate(order):
        if k:
            out.append(" · ")
        out.append(f"{counts[state]} {state}", style=STATE_STYLES.get(state, ""))
    if not order:
        out.append("none yet", style="dim")
    rate = run_steps_per_s(run)
    out.append(f" · {rate:,.0f} steps/s" if rate else " · — steps/s", style="bold")
    shares = mean_shares(run)
    if not shares:
        return [out]
    for short in (False, True):
        label = "time" if short else "time of running units (last interval)"
        text = Text(f"  {label}: ", style="bold")
        pieces = [
            f"{(abbrev if short else name)} {100 * shares[key]:.0f}%"
            for key, name, abbrev in PHASES
            if key in shares
        ]
        text.append(" · ".join(pieces))
        if _fits(out, text, width):
            out.append_text(text)
            return [out]
    alone = Text("time of running units (last interval): ", style="bold")
    if alone.cell_len + 40 > width:
        alone = Text("time (running units): ", style="bold")
    labels = 1 if alone.cell_len + 60 <= width else 2
    alone.append(
        " · ".join(
            f"{(name, abbrev)[labels - 1]} {100 * shares[key]:.0f}%"
            for key, name, abbrev in PHASES
            if key in shares
        )
    )
    return [out, alone]


def verdict_line(run: RunSnapshot) -> Text:
    headline = verdict_headline(run)
    if headline is not None:
        out = Text("verdict: ", style="bold")
        out.append_text(headline)
        out.no_wrap, out.overflow = True, "ellipsis"
        return out
    evaluated = sum(1 for f in run.folds if f.error is None)
    failed = sum(1 for f in run.folds if f.error is not None)
    out = Text("verdict: ", style="bold", no_wrap=True, overflow="ellipsis")
    total = f" of {run.n_folds}" if run.n_folds else ""
    out.append(f"not yet ({evaluated}{total} folds evaluated", style="dim")
    if failed:
        out.append(f", {failed} failed", style="red")
    out.append("; judged once all are)", style="dim")
    return out


def unit_header(width: int) -> Text:
    return Text(_unit_parts(None, width).plain, style="dim", no_wrap=True, overflow="crop")


def _unit_parts(m: MemberRow | None, width: int) -> Text:
    """A unit's line (``m`` None: the column labels), its parts as the width allows."""
    label = "unit" if m is None else f"{m.fold}/{m.member}"
    state = "state" if m is None else m.state
    style = "" if m is None else STATE_STYLES.get(m.state, "")
    head = Text(f"{label:>5} ")
    head.append(f"{state:<9}", style=style)
    fraction = 0.0 if m is None or not m.total else m.timesteps / m.total
    pct = " done" if m is None else f"{100 * fraction:4.0f}%"
    done = "timesteps" if m is None else f"{steps(m.timesteps)}/{steps(m.total)}"
    fps = "steps/s" if m is None else (f"{m.fps:,.0f}" if m.fps and m.state == "running" else "—")
    eta = "ETA" if m is None else (format_duration(m.eta_s) if m.state == "running" else "—")
    split = "env / inf / grad"
    reward = "return/ep"
    if m is not None:
        shares, _ = m.shown_time_shares()
        values = [shares.get(k) for k in ("env", "inference", "gradient")] if shares else []
        split = (
            " / ".join(
                f"{100 * v:.0f}%" if isinstance(v, (int, float)) and 0 <= v <= 1 else "—"
                for v in values
            )
            if values
            else "—"
        )
        reward = "—" if m.mean_reward is None else f"{m.mean_reward:+.4f}"
    tail = [
        Text(f" {pct}"),
        Text(f" {fps:>8}"),
        Text(f" {eta:>7}"),
        Text(f" {done:>13}"),
        Text(f" {split:>16}"),
        Text(f" {reward:>11}"),
    ]
    if m is not None and m.error:
        tail.append(
            Text(f"  {m.error.strip().splitlines()[0] if m.error.strip() else ''}", style="red")
        )
    fixed = head.cell_len
    kept: list[Text] = []
    for part in tail:
        if fixed + sum(p.cell_len for p in kept) + part.cell_len + 8 <= width:
            kept.append(part)
    room = width - fixed - sum(p.cell_len for p in kept)
    size = max(4, min(30, room))
    out = Text(no_wrap=True, overflow="crop", end="")
    out.append_text(head)
    if m is None:
        out.append(f"{'progress':<{size}}")
    else:
        out.append_text(bar(fraction, size, "red" if m.state == "failed" else style or "green"))
    for part in kept:
        out.append_text(part)
    return out


def unit_line(m: MemberRow, width: int) -> Text:
    return _unit_parts(m, width)


def _sorted_units(run: RunSnapshot) -> list[MemberRow]:
    return sorted(run.members, key=lambda m: (UNIT_ORDER.get(m.state, 9), m.fold, m.member))


def _columns(lines: list[Text], width: int, columns: int) -> list[Text]:
    """``lines`` in ``columns`` side by side (filled column by column)."""
    if columns <= 1:
        return lines
    per = -(-len(lines) // columns)
    cell = (width - 3 * (columns - 1)) // columns
    out = []
    for row in range(per):
        line = Text(no_wrap=True, overflow="crop", end="")
        for col in range(columns):
            k = col * per + row
            if k >= len(lines):
                break
            part = lines[k].copy()
            part.truncate(cell, pad=True)
            if col:
                line.append(" │ ", style="dim")
            line.append_text(part)
        out.append(line)
    return out


def newest_judged(runs: Sequence[RunSnapshot]) -> RunSnapshot | None:
    """The judged run whose last event is the newest."""
    judged = [r for r in runs if r.judged]
    return max(judged, key=lambda r: r.updated_at or "", default=None)


RECENT_RUNS = 10  # listed when no run is live


def runs_lines(runs: Sequence[RunSnapshot], width: int, height: int) -> list[Text]:
    """What the runs panel shows in ``width`` x ``height``, one ``Text`` a line (each cut to
    ``width``)."""
    if height <= 0 or width <= 0:
        return []
    out = _lines(runs, width, height)
    for line in out:
        line.no_wrap = True
        line.truncate(width, overflow="ellipsis")
    return out


def runs_needed(runs: Sequence[RunSnapshot], width: int) -> int:
    """Lines the runs panel needs at ``width`` to show everything (every unit)."""
    return len(_lines(runs, width, 10_000, fill=False))


def _lines(runs: Sequence[RunSnapshot], width: int, height: int, fill: bool = True) -> list[Text]:
    live = [r for r in runs if r.live]
    judged = newest_judged(runs)
    footer: list[Text] = []
    if judged is not None and not any(r is judged for r in live) and height >= 3:
        line = Text("latest verdict ", style="bold")
        line.append(f"({judged.run_id}, {judged.state}): ", style="dim")
        line.append_text(verdict_headline(judged) or Text(judged.verdict_short))
        footer.append(line)
    room = height - len(footer)
    out: list[Text] = []
    if not live:
        out.append(Text("no live run · j: the jobs list (n there: a new job)", style="dim"))
        recent = list(runs)[: max(0, min(RECENT_RUNS, room - 2))]
        if recent:
            out.append(Text("recent runs", style="bold"))
        for run in recent:
            line = run_headline(run, width - 16)
            if run.judged:
                line.append(f"  {run.verdict_short}", style="dim")
            out.append(line)
        return out[:room] + footer
    columns = 2 if width >= 2 * UNIT_COLUMN_MIN else 1
    cell = width if columns == 1 else (width - 3) // 2
    blocks = []
    for run in live:
        head = [run_headline(run, width), *units_lines(run, width), verdict_line(run)]
        blocks.append((run, head))
    overhead = sum(len(h) + 1 for _, h in blocks)  # + the unit column labels
    spare = max(0, room - overhead)
    share = spare // len(blocks)
    extra = spare - share * len(blocks)
    for k, (run, head) in enumerate(blocks):
        out.extend(head)
        units = _sorted_units(run)
        rows = share + (extra if k == 0 else 0)
        if not fill:
            rows = -(-len(units) // columns)
        if rows <= 0 or not units:
            continue
        if not fill:  # only counted (runs_needed): the lines' text is never looked at
            out.extend(Text() for _ in range(1 + rows))
            continue
        capacity = rows * columns
        # when they do not all fit, the last row says how many more
        shown = units if len(units) <= capacity else units[: (rows - 1) * columns]
        lines = [unit_line(m, cell) for m in shown]
        labels = unit_header(cell)
        out.append(_columns([labels] * columns, width, columns)[0] if columns > 1 else labels)
        body = _columns(lines, width, columns)
        if len(shown) < len(units):
            rest = units[len(shown) :]
            counts: dict[str, int] = {}
            for m in rest:
                counts[m.state] = counts.get(m.state, 0) + 1
            more = ", ".join(f"{n} {s}" for s, n in counts.items())
            body = body[: rows - 1] + [Text(f"  +{len(rest)} more units ({more})", style="dim")]
        out.extend(body)
    return out[:room] + footer


class RunsPanel(LinesWidget):
    """The live runs (or the recent ones), drawn to the widget's size."""

    DEFAULT_CSS = """
    RunsPanel {
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs: tuple[RunSnapshot, ...] = ()

    def show(self, runs: Sequence[RunSnapshot]) -> None:
        runs = tuple(runs)
        if runs != self.runs:
            self.runs = runs
            self.update_lines()

    def build(self, width: int, height: int) -> list[Text]:
        return runs_lines(self.runs, width, height)
