"""``CoreStrip``: the per-core heatmap held to a few rows, for the overview's machine strip.

It draws what :class:`~ploutos_tui.widgets.heatmap.CoreHeatmap` draws (its layout function and
renderer: bars, numbers, blocks), through :class:`~ploutos_tui.widgets.lines.LinesWidget` (only
changed lines are repainted), with one addition: when even one block per core takes more than ``max_rows`` rows (hundreds of
cores in a narrow window), neighbouring cores share a cell that shows their mean load, so 512
cores stay on two rows of an 80-column terminal. The legend counts the real cores (and says how
many share a cell).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.geometry import Size

from ploutos_tui.widgets.heatmap import (
    BLOCKS,
    BUSY_PCT,
    IDLE_PCT,
    _level,
    load_style,
    plan_layout,
    render_heatmap,
)
from ploutos_tui.widgets.lines import LinesWidget


def cores_per_cell(cores: int, width: int, max_rows: int) -> int:
    """How many cores share a cell so that one block per cell fits ``max_rows`` rows."""
    cells = max(1, width) * max(1, max_rows)
    return max(1, -(-cores // cells))


def binned(loads: Sequence[float], group: int) -> list[float]:
    """The mean load of each run of ``group`` consecutive cores."""
    if group <= 1:
        return list(loads)
    return [
        sum(loads[i : i + group]) / len(loads[i : i + group]) for i in range(0, len(loads), group)
    ]


def legend(loads: Sequence[float], width: int, group: int = 1) -> Text:
    """``256 cores (2 a cell)  avg 87%  max 100%  busy ≥80%: 200  idle <10%: 3`` and the colour
    scale (cores at least 80 % busy, and under 10 %)."""
    n = len(loads)
    parts = [f"{n} cores" + (f" ({group} a cell)" if group > 1 else "")]
    parts += [
        f"avg {sum(loads) / n:.0f}%",
        f"max {max(loads):.0f}%",
        f"busy ≥{BUSY_PCT:.0f}%: {sum(1 for v in loads if v >= BUSY_PCT)}",
        f"idle <{IDLE_PCT:.0f}%: {sum(1 for v in loads if v < IDLE_PCT)}",
    ]
    shown = ""
    for part in parts:
        candidate = f"{shown}  {part}" if shown else part
        if len(candidate) > width:
            break
        shown = candidate
    out = Text(shown, style="dim", no_wrap=True, overflow="crop", end="")
    scale = Text("0%", style="dim")
    for k, char in enumerate(BLOCKS):
        scale.append(char, load_style(_level(100.0 * k / (len(BLOCKS) - 1))))
    scale.append("100%", style="dim")
    if out.cell_len + 2 + scale.cell_len <= width:
        out.append(" " * (width - out.cell_len - scale.cell_len))
        out.append_text(scale)
    return out


class CoreStrip(LinesWidget):
    """The core heatmap in at most ``max_rows`` rows whatever the core count (plus its legend)."""

    DEFAULT_CSS = """
    CoreStrip {
        height: auto;
        min-height: 2;
    }
    """

    def __init__(
        self, loads: Sequence[float] = (), *, max_rows: int = 4, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self._loads = tuple(float(v) for v in loads)
        self._max_rows = max(1, max_rows)

    @property
    def loads(self) -> tuple[float, ...]:
        return self._loads

    @loads.setter
    def loads(self, loads: Sequence[float]) -> None:
        loads = tuple(float(v) for v in loads)
        if loads == self._loads:
            return
        count = len(self._loads)
        self._loads = loads
        if len(loads) != count:  # the number of rows may change: lay the screen out again
            self.refresh(layout=True)
        self.update_lines()

    @property
    def max_rows(self) -> int:
        return self._max_rows

    @max_rows.setter
    def max_rows(self, rows: int) -> None:
        rows = max(1, int(rows))
        if rows != self._max_rows:
            self._max_rows = rows
            self.refresh(layout=True)
            self.update_lines()

    def _group(self, width: int) -> int:
        n = len(self._loads)
        if plan_layout(n, width, self._max_rows) != ("blocks", 1, max(1, width)):
            return 1
        return cores_per_cell(n, width, self._max_rows)

    def _rows(self, width: int) -> int:
        if not self._loads:
            return 1
        cells = -(-len(self._loads) // self._group(width))
        _mode, _cell, per_row = plan_layout(cells, width, self._max_rows)
        return -(-cells // per_row)

    def lines_for(self, width: int) -> int:
        """Lines the strip takes at ``width``, its legend included."""
        return self._rows(width) + 1

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self.lines_for(width)

    def build(self, width: int, height: int) -> list[Text]:
        loads = self._loads
        if not loads:
            return [Text("waiting for the first sample…", style="dim")]
        group = self._group(width)
        grid = render_heatmap(binned(loads, group), width, self._max_rows)
        lines = list(grid.split("\n"))[:-1]
        for line in lines:
            line.truncate(width)
        return [*lines, legend(loads, width, group)]

    def render_text(self) -> str:
        """What it shows, as plain text (tests)."""
        return "\n".join(line.plain for line in self.build(*self.size))
