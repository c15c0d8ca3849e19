"""History graphs on a fixed 0..100 % scale, one to many rows tall, drawn as text.

:func:`graph_lines` turns a series into ``rows`` lines of ``width`` cells (newest sample on the
right, eighth blocks on the top cell of each bar); :class:`HistoryGraph` is one widget that shows
a label and its graph: on one line (label, then a sparkline in the rest of the width) when it is
one row tall, else the label on the first row and the graph below it. A graph redraws only when
what it shows changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from ploutos_tui.widgets.heatmap import load_style
from ploutos_tui.widgets.lines import LinesWidget

# index = eighths of a cell filled (0: empty)
EIGHTHS = " ▁▂▃▄▅▆▇█"


def _fit(data: Sequence[float], width: int) -> list[float]:
    """At most ``width`` samples: with more, the max of each bucket (a spike stays visible)."""
    values = list(data)
    if len(values) <= width:
        return values
    step = len(values) / width
    return [
        max(values[int(i * step) : max(int(i * step) + 1, int((i + 1) * step))])
        for i in range(width)
    ]


def graph_lines(data: Sequence[float], width: int, rows: int = 1, top: float = 100.0) -> list[Text]:
    """``rows`` lines (top line first) of a bar graph of ``data`` on a 0..``top`` scale, right
    aligned in ``width`` cells; each bar coloured by its value's load colour."""
    width, rows = max(0, width), max(1, rows)
    values = _fit(data, width)
    pad = width - len(values)
    top = top or 1.0
    levels = []
    for value in values:
        pct = max(0.0, min(100.0, 100.0 * value / top))
        eighths = int(round(pct / 100.0 * rows * 8))
        if value > 0 and eighths == 0:
            eighths = 1  # busy at all: one eighth, never an empty cell
        levels.append((eighths, load_style(int(round(pct / 5.0) * 5))))
    lines = []
    for row in range(rows - 1, -1, -1):  # the top line first
        line = Text(" " * pad, no_wrap=True, end="")
        run_chars: list[str] = []
        run_style = None
        for eighths, style in levels:
            filled = max(0, min(8, eighths - row * 8))
            char = EIGHTHS[filled]
            if style is not run_style and run_chars:
                line.append("".join(run_chars), run_style)
                run_chars = []
            run_style = style
            run_chars.append(char)
        if run_chars:
            line.append("".join(run_chars), run_style)
        lines.append(line)
    return lines


class HistoryGraph(LinesWidget):
    """A label and its history: one line (label + sparkline) or the label over a taller graph.

    Its height is the CSS height; :meth:`show` sets what it draws.
    """

    DEFAULT_CSS = """
    HistoryGraph {
        height: 1;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.label = Text()
        self.history: tuple[float, ...] = ()

    def show(self, label: Text, history: Sequence[float]) -> None:
        """Draw ``label`` and ``history`` (percent); only the lines that change are repainted."""
        history = tuple(history)
        if label != self.label or history != self.history:
            self.label, self.history = label, history
            self.update_lines()

    def build(self, width: int, height: int) -> list[Text]:
        label = self.label.copy()
        label.no_wrap, label.end = True, ""
        if height <= 1:
            room = width - label.cell_len - 1
            if room >= 4:
                label.append(" ")
                label.append_text(graph_lines(self.history, room, 1)[0])
            label.truncate(width)
            return [label]
        label.truncate(width)
        return [label, *graph_lines(self.history, width, height - 1)]
