"""Training curves of one member: small line charts drawn with braille dots, timesteps on x.

:func:`chart_lines` draws several series on one chart (``height`` rows of ``width`` cells; each
cell holds 2 x 4 dots): a title line, the plot with its y axis labelled at the top (max) and the
bottom (min), and an x axis line with the first and last timesteps. Later series are drawn over
earlier ones (the highlighted member last). :class:`CurvesPanel` lays one chart per entry of
:data:`CURVES` out in a grid that fills its width (2 charts a row at 80 columns, 4 at 200) and
draws through :class:`ploutos_tui.widgets.lines.LinesWidget`, so a poll that changes nothing
repaints nothing, and one that moves a curve repaints only the lines that changed.

Why not ``textual-plotext``: it is not a dependency (adding it needs a lock update), and one
chart of it renders through plotext's own canvas to ANSI and back; this widget costs about a
millisecond for the whole grid at 200x50 (``python -m ploutos_tui.widgets.curves``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from ploutos_tui.model.runs import MemberCurves, MemberRow, format_steps
from ploutos_tui.widgets.lines import LinesWidget


@dataclass(frozen=True)
class Curve:
    """One chart: its title, the series it draws (a ``MemberCurves`` name), the unit of its
    values, how a value is written, and what it means (one sentence, for help)."""

    title: str
    key: str
    unit: str
    fmt: str
    meaning: str


CURVES: tuple[Curve, ...] = (
    Curve(
        "reward/ep",
        "mean_reward",
        "log return",
        "+.4f",
        "mean over the last 100 finished training episodes of each episode's summed reward; the "
        "reward is the bar's log return of equity after costs, so +0.01 is about +1 % an episode",
    ),
    Curve(
        "steps/s",
        "fps",
        "env steps/s",
        ",.0f",
        "env steps per second of this member since its process started training (all its env "
        "copies together)",
    ),
    Curve(
        "policy loss",
        "policy_loss",
        "",
        ".3g",
        "PPO's clipped surrogate loss of the last update (unitless; its trend matters, not its "
        "level)",
    ),
    Curve(
        "value loss",
        "value_loss",
        "reward²",
        ".3g",
        "mean squared error of the value head against the returns of the last update",
    ),
    Curve(
        "entropy",
        "entropy",
        "nats",
        ".3g",
        "entropy of the policy's action distribution (SB3 logs it negated as entropy_loss); "
        "falling = the policy grows more certain",
    ),
    Curve(
        "approx KL",
        "approx_kl",
        "nats",
        ".2g",
        "approximate KL divergence between the policy before and after the last update; large "
        "values (> ~0.05) mean big, unstable steps",
    ),
    Curve(
        "clip fraction",
        "clip_fraction",
        "%",
        "%",
        "share of samples whose probability ratio PPO clipped in the last update",
    ),
    Curve(
        "explained var",
        "explained_variance",
        "",
        ".2f",
        "explained variance of the returns by the value head: 1 perfect, 0 no better than their "
        "mean, below 0 worse",
    ),
)

# the dot bit of (dot row 0..3, dot column 0..1) in a braille cell (U+2800 + bits)
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
BRAILLE = 0x2800
HIGHLIGHT = "bold cyan"
OTHERS = "grey50"
AXIS = "grey42"


def value_text(value: float | None, fmt: str) -> str:
    """A value as its chart writes it (``%``: a fraction in percent); ``—`` when unknown."""
    if value is None or not math.isfinite(value):
        return "—"
    if fmt == "%":
        return f"{value * 100:.1f}%"
    return format(value, fmt)


def _span(
    series: Sequence[tuple[Sequence[int], Sequence[float | None], str]],
) -> tuple[float, float] | None:
    values = [v for _, ys, _ in series for v in ys if v is not None and v == v]
    if not values:
        return None
    return min(values), max(values)


def _plot(
    series: Sequence[tuple[Sequence[int], Sequence[float | None], str]],
    x_lo: float,
    x_hi: float,
    y_lo: float,
    y_hi: float,
    cols: int,
    rows: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """Dot bits and the index of the series that drew last, per cell (-1: none).

    Each series is reduced to its dot columns first (the dots between the lowest and highest of
    the values that fall in the column, joined to the column before), so the cost is one pass
    over the points plus one over the columns, however many points there are. A point without
    a value is skipped (the line joins its neighbours). Values are finite (``MemberCurves``
    holds finite numbers or None)."""
    bits = [[0] * cols for _ in range(rows)]
    owner = [[-1] * cols for _ in range(rows)]
    px_w, px_h = cols * 2, rows * 4
    x_scale = (px_w - 1) / (x_hi - x_lo) if x_hi > x_lo else 0.0
    flat = not y_hi > y_lo
    y_scale = 0.0 if flat else (px_h - 1) / (y_hi - y_lo)
    top_py, mid = px_h - 1, px_h // 2

    for index, (xs, ys, _) in enumerate(series):

        def fill(px: int, a: int, b: int, index: int = index) -> None:
            cx, half = px >> 1, px & 1
            for py in range(a, b + 1) if a <= b else range(b, a + 1):
                row = py >> 2
                bits[row][cx] |= _DOTS[py & 3][half]
                owner[row][cx] = index

        if None in ys or len(xs) != len(ys):  # drop the points without a value (rare)
            known = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None]
            steps: Sequence[int] = [x for x, _ in known]
            values: Sequence[float] = [y for _, y in known]
        else:
            steps, values = xs, ys  # type: ignore[assignment]
        if not steps:
            continue
        # the points of each dot column: bisect on the steps (increasing), min / max in C
        edges = [x_lo + (c + 0.5) / x_scale for c in range(px_w)] if x_scale else []
        begin = 0
        cur = last = -1
        for px in range(px_w):
            end = bisect_right(steps, edges[px]) if x_scale else len(steps)
            if end <= begin:
                continue
            chunk = values[begin:end]
            begin = end
            if flat:
                c_lo = c_hi = c_first = c_last = mid
            else:
                c_lo = int((y_hi - max(chunk)) * y_scale + 0.5)
                c_hi = int((y_hi - min(chunk)) * y_scale + 0.5)
                c_first = int((y_hi - chunk[0]) * y_scale + 0.5)
                c_last = int((y_hi - chunk[-1]) * y_scale + 0.5)
                c_lo, c_hi = max(0, c_lo), min(top_py, c_hi)
                c_first = 0 if c_first < 0 else top_py if c_first > top_py else c_first
                c_last = 0 if c_last < 0 else top_py if c_last > top_py else c_last
            if cur >= 0:  # join the column before: across the columns without a point
                start, n = last, px - cur
                for i in range(1, n):
                    step_y = round(last + (c_first - last) * i / n)
                    fill(cur + i, start, step_y)
                    start = step_y
                c_lo, c_hi = min(c_lo, start), max(c_hi, start)
            fill(px, c_lo, c_hi)
            cur, last = px, c_last
            if end >= len(steps):
                break
    return bits, owner


def chart_lines(
    curve: Curve,
    series: Sequence[tuple[Sequence[int], Sequence[float | None], str]],
    x_range: tuple[float, float],
    width: int,
    height: int,
    latest: float | None = None,
) -> list[Text]:
    """``height`` lines of ``width`` cells: the title (with ``latest``, the highlighted
    member's last value, and the unit), the plot, the x axis. ``series``: ``(steps, values,
    style)``, drawn in order (the last on top)."""
    width, height = max(1, width), max(3, height)
    title = Text(curve.title, style="bold", no_wrap=True, end="")
    title.append(f" {value_text(latest, curve.fmt)}")
    if curve.unit and curve.fmt != "%":
        title.append(f" {curve.unit}", style="dim")
    title.truncate(width)
    rows = height - 2
    span = _span(series)
    if span is None:
        blank = [Text(" " * width, end="") for _ in range(rows + 1)]
        blank[rows // 2] = Text("no values yet".center(width)[:width], style="dim", end="")
        return [title, *blank]
    y_lo, y_hi = span
    top, bottom = value_text(y_hi, curve.fmt), value_text(y_lo, curve.fmt)
    label_w = max(len(top), len(bottom))
    cols = max(1, width - label_w - 1)
    x_lo, x_hi = x_range
    bits, owner = _plot(series, x_lo, x_hi, y_lo, y_hi, cols, rows)
    styles = [style for _, _, style in series]
    out = [title]
    for r in range(rows):
        label = top if r == 0 else bottom if r == rows - 1 else ""
        line = Text(label.rjust(label_w), style=AXIS, no_wrap=True, end="")
        line.append("┤" if label else "│", style=AXIS)
        run: list[str] = []
        run_style = ""
        for c in range(cols):
            b = bits[r][c]
            style = styles[owner[r][c]] if b else ""
            if style != run_style and run:
                line.append("".join(run), run_style or None)
                run = []
            run_style = style
            run.append(chr(BRAILLE + b) if b else " ")
        if run:
            line.append("".join(run), run_style or None)
        out.append(line)
    left, right = format_steps(x_lo), format_steps(x_hi)
    axis = " " * (label_w + 1) + left
    room = width - len(axis) - len(right)
    axis += ("timesteps".center(room) if room >= 11 else " " * max(0, room)) + right
    out.append(Text(axis[:width], style=AXIS, no_wrap=True, end=""))
    return out


def grid_shape(width: int, n: int = len(CURVES)) -> tuple[int, int]:
    """Charts per row and chart height (rows of text, title and x axis included) at ``width``."""
    per_row = max(1, min(4, (width + 1) // 38))
    return per_row, 8 if width >= 150 else 7


class CurvesPanel(LinesWidget):
    """Every chart of :data:`CURVES` for one member, the other members of its fold drawn dim
    behind it; a legend line first. :meth:`show` sets what it draws; its height follows its
    width (:func:`grid_shape`)."""

    DEFAULT_CSS = """
    CurvesPanel { height: 15; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.member: MemberRow | None = None
        self.others: tuple[MemberRow, ...] = ()
        self._key: tuple[object, ...] = ()

    def show(self, member: MemberRow | None, others: Sequence[MemberRow] = ()) -> None:
        """Draw ``member``'s curves over those of ``others`` (the rest of its fold)."""
        others = tuple(others)
        key = (member, others)
        if key == self._key:
            return
        self._key = key
        self.member, self.others = member, others
        self.update_lines()

    def on_resize(self) -> None:
        self.styles.height = self.height_for(self.size.width)
        super().on_resize()

    def height_for(self, width: int) -> int:
        per_row, chart_h = grid_shape(width)
        return 1 + math.ceil(len(CURVES) / per_row) * chart_h

    def legend(self) -> Text:
        m = self.member
        if m is None:
            return Text("no member yet", style="dim")
        out = Text(no_wrap=True, end="")
        out.append(f"fold {m.fold} member {m.member}", style=HIGHLIGHT)
        if self.others:
            out.append(f" over fold {m.fold}'s other members", style=OTHERS)
        n = len(m.curves)
        out.append(f" · {n} point{'s' if n != 1 else ''} · ↑/↓: another member", style="dim")
        return out

    def build(self, width: int, height: int) -> list[Text]:
        legend = self.legend()
        legend.truncate(width)
        m = self.member
        if m is None or not len(m.curves):
            why = "no progress events yet" if m is not None else ""
            return [legend, Text(why, style="dim")] if why else [legend]
        per_row, chart_h = grid_shape(width)
        gap = 2
        chart_w = max(10, (width - gap * (per_row - 1)) // per_row)
        x_hi = max([m.total, *(o.total for o in self.others), m.curves.steps[-1], 1])
        drawn = [o for o in self.others if len(o.curves)] + [m]
        lines = [legend]
        for start in range(0, len(CURVES), per_row):
            charts = []
            for curve in CURVES[start : start + per_row]:
                series = [
                    (
                        o.curves.steps,
                        o.curves.values(curve.key),
                        HIGHLIGHT if o is m else OTHERS,
                    )
                    for o in drawn
                ]
                values = m.curves.values(curve.key)
                latest = values[-1] if values else None
                charts.append(chart_lines(curve, series, (0, x_hi), chart_w, chart_h, latest))
            for y in range(chart_h):
                line = Text(no_wrap=True, end="")
                for i, chart in enumerate(charts):
                    if i:
                        line.append(" " * gap)
                    cell = chart[y].copy()
                    cell.pad_right(chart_w - cell.cell_len)
                    line.append_text(cell)
                lines.append(line)
        return lines


def _bench() -> None:  # pragma: no cover - a measurement, run by hand
    """Render cost of the whole grid, one member of a 3-member fold with 513 points each."""
    import time

    def row(member: int) -> MemberRow:
        steps = tuple(range(0, 513 * 500, 500))
        series = {
            c.key: tuple(math.sin(i / 40 + member) + i / 300 for i in range(len(steps)))
            for c in CURVES
        }
        curves = MemberCurves(steps, series)
        return MemberRow(0, member, "running", steps[-1], 300_000, 1.0, 0.0, None, None, None,
                         curves=curves)  # fmt: skip

    rows = [row(i) for i in range(3)]
    panel = CurvesPanel()
    panel.member, panel.others = rows[0], tuple(rows[1:])
    for width in (76, 196):
        n = 50
        started = time.perf_counter()
        for _ in range(n):
            lines = panel.build(width, panel.height_for(width))
        ms = (time.perf_counter() - started) / n * 1000
        print(f"width {width}: {len(lines)} lines, {ms:.2f} ms a build")


if __name__ == "__main__":  # pragma: no cover
    _bench()
