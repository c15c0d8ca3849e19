"""``CoreHeatmap``: the load of every core in one widget, from 2 cores to 512.

One widget draws all cells (a widget per core costs Textual far more CPU at 256 cores). The
layout follows the widget's width, picking the most detailed form that fits in ``max_rows``
rows:

* bars: ``cpu0 ▇▇▇▇▇░░░  62%`` per core (a few cores),
* numbers: `` 62`` on a coloured background per core (dozens),
* blocks: one ``▁▂▃▄▅▆▇█`` character per core, coloured, with or without a gap (hundreds).

The last line is a legend: core count, average, busy and idle cores, and the colour scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

BLOCKS = "▁▂▃▄▅▆▇█"
BUSY_PCT = 80.0
IDLE_PCT = 10.0

# load (0..100) -> colour, interpolated: dark green when idle, green, yellow, red when saturated
_SCALE: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (38, 70, 45)),
    (25.0, (46, 184, 77)),
    (60.0, (235, 200, 40)),
    (85.0, (240, 120, 40)),
    (100.0, (230, 40, 40)),
)


@lru_cache(maxsize=128)
def _rgb(level: int) -> tuple[int, int, int]:
    pct = max(0.0, min(100.0, float(level)))
    for (lo, lo_rgb), (hi, hi_rgb) in zip(_SCALE, _SCALE[1:], strict=False):
        if pct <= hi:
            f = (pct - lo) / (hi - lo)
            return tuple(round(a + (b - a) * f) for a, b in zip(lo_rgb, hi_rgb, strict=True))
    return _SCALE[-1][1]


def _level(pct: float) -> int:
    """Loads are quantised to steps of 5 % so that the colours (and spans) stay few."""
    return int(round(max(0.0, min(100.0, pct)) / 5.0) * 5)


@lru_cache(maxsize=64)
def load_style(level: int) -> Style:
    """Foreground colour for a load level (0..100)."""
    return Style(color=Color.from_rgb(*_rgb(level)))


@lru_cache(maxsize=64)
def cell_style(level: int) -> Style:
    """Coloured background with a readable foreground, for cells that show a number."""
    r, g, b = _rgb(level)
    dark_text = (0.299 * r + 0.587 * g + 0.114 * b) > 110
    fg = Color.from_rgb(0, 0, 0) if dark_text else Color.from_rgb(230, 230, 230)
    return Style(color=fg, bgcolor=Color.from_rgb(r, g, b))


def block_char(pct: float) -> str:
    return BLOCKS[min(len(BLOCKS) - 1, int(max(0.0, pct) / 100.0 * len(BLOCKS)))]


BAR_MIN_WIDTH = 16  # "cpu12 ▇▇▇░░ 62%"+gap
NUMBER_WIDTH = 4  # " 62" + gap


def plan_layout(cores: int, width: int, max_rows: int) -> tuple[str, int, int]:
    """(mode, cell width, cells per row) for ``cores`` cells in ``width`` columns."""
    width = max(1, width)
    if cores <= 0:
        return "blocks", 1, width
    label = len(f"cpu{cores - 1}")
    bar_min = max(BAR_MIN_WIDTH, label + 11)
    candidates = [("bars", bar_min), ("numbers", NUMBER_WIDTH), ("blocks", 2), ("blocks", 1)]
    for mode, cell in candidates:
        per_row = min(cores, width // cell)
        if per_row < 1:
            continue
        rows = -(-cores // per_row)
        if rows <= max_rows:
            if mode == "bars":
                cell = width // per_row  # spread the bars over the width
            return mode, cell, per_row
    return "blocks", 1, width


class CoreHeatmap(Widget):
    """All cores as one grid of coloured cells, laid out to the widget's width."""

    DEFAULT_CSS = """
    CoreHeatmap {
        height: auto;
        min-height: 2;
    }
    """

    loads: reactive[tuple[float, ...]] = reactive(())
    """Per-core load in percent; setting an equal tuple does not redraw."""
    max_rows: reactive[int] = reactive(4, layout=True)
    """Rows the cells may take before a more compact form is used (blocks may take more)."""

    def __init__(
        self,
        loads: Sequence[float] = (),
        *,
        max_rows: int = 4,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.set_reactive(CoreHeatmap.max_rows, max(1, max_rows))
        self.set_reactive(CoreHeatmap.loads, tuple(float(v) for v in loads))

    def validate_max_rows(self, max_rows: int) -> int:
        return max(1, int(max_rows))

    def validate_loads(self, loads: Sequence[float]) -> tuple[float, ...]:
        return tuple(float(v) for v in loads)

    def watch_loads(self, old: tuple[float, ...], new: tuple[float, ...]) -> None:
        if len(old) != len(new):  # the number of rows may change: lay the screen out again
            self.refresh(layout=True)

    def _rows(self, width: int) -> int:
        if not self.loads:
            return 1
        _mode, _cell, per_row = plan_layout(len(self.loads), width, self.max_rows)
        return -(-len(self.loads) // per_row)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self._rows(width) + 1  # + the legend

    def render(self) -> Text:
        return render_heatmap(self.loads, self.size.width, self.max_rows)


def _legend(loads: Sequence[float], width: int) -> Text:
    n = len(loads)
    avg = sum(loads) / n
    busy = sum(1 for v in loads if v >= BUSY_PCT)
    idle = sum(1 for v in loads if v < IDLE_PCT)
    parts = [
        f"{n} cores",
        f"avg {avg:.0f}%",
        f"max {max(loads):.0f}%",
        f"busy ≥{BUSY_PCT:.0f}%: {busy}",
        f"idle <{IDLE_PCT:.0f}%: {idle}",
    ]
    legend = Text()
    for part in parts:
        candidate = f"{legend.plain}  {part}" if legend.plain else part
        if len(candidate) > width:
            break
        legend = Text(candidate, style="dim")
    scale = Text("0%", style="dim")
    for k, char in enumerate(BLOCKS):
        scale.append(char, load_style(_level(100.0 * k / (len(BLOCKS) - 1))))
    scale.append("100%", style="dim")
    if legend.cell_len + 2 + scale.cell_len <= width:
        legend.append(" " * (width - legend.cell_len - scale.cell_len))
        legend.append_text(scale)
    return legend


def render_heatmap(loads: Sequence[float], width: int, max_rows: int = 4) -> Text:
    """The grid as Rich ``Text`` (rows separated by newlines, legend last)."""
    if not loads:
        return Text("waiting for the first sample…", style="dim")
    mode, cell, per_row = plan_layout(len(loads), width, max_rows)
    out = Text(no_wrap=True, overflow="crop", end="")
    label_width = len(f"cpu{len(loads) - 1}")
    for start in range(0, len(loads), per_row):
        if start:
            out.append("\n")
        for i in range(start, min(start + per_row, len(loads))):
            pct = loads[i]
            level = _level(pct)
            if mode == "bars":
                bar_width = max(1, cell - label_width - 7)
                filled = round(bar_width * max(0.0, min(100.0, pct)) / 100.0)
                out.append(f"{f'cpu{i}':<{label_width}} ", "dim")
                out.append("█" * filled, load_style(level))
                out.append("░" * (bar_width - filled), "dim")
                out.append(f"{pct:4.0f}%")
                out.append(" " * (cell - label_width - bar_width - 6))
            elif mode == "numbers":
                out.append(f"{min(pct, 100.0):3.0f}", cell_style(level))
                out.append(" ")
            else:
                out.append(block_char(pct), load_style(level))
                if cell == 2:
                    out.append(" ")
    out.append("\n")
    out.append_text(_legend(loads, width))
    return out
