"""A text histogram of Monte Carlo final returns, drawn with block characters.

The bins come from the engine's statistics (``stats["histogram"] = {edges, counts}``, returns as
fractions). Bars left of the 95% value at risk are red, other losses yellow, gains green; the
zero line and the VaR are marked with a vertical rule and labelled on the axis below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

_BLOCKS = " ▁▂▃▄▅▆▇█"


def _pct(value: float) -> str:
    return f"{value * 100:+.1f}%"


class Histogram(Widget):
    """Final-return histogram. ``update_stats(stats)`` with a Monte Carlo ``stats`` dict."""

    DEFAULT_CSS = """
    Histogram {
        height: 9;
        min-width: 20;
    }
    """

    LOSS_TAIL = Style(color="red")
    LOSS = Style(color="yellow")
    GAIN = Style(color="green")
    MARK = Style(color="bright_black")
    LABEL = Style(dim=True)
    ZERO_LABEL = Style(bold=True)
    VAR_LABEL = Style(color="red", bold=True)

    def __init__(
        self,
        stats: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._edges: list[float] = []
        self._counts: list[float] = []
        self._var: float | None = None
        self.update_stats(stats)

    # ------------------------------------------------------------------ data
    def update_stats(self, stats: Mapping[str, Any] | None) -> None:
        """Show ``stats`` (``histogram.edges`` / ``histogram.counts``, ``var_95``); None clears."""
        edges: list[float] = []
        counts: list[float] = []
        var = None
        if stats:
            hist = stats.get("histogram") or {}
            try:
                edges = [float(e) for e in hist.get("edges") or []]
                counts = [max(0.0, float(c)) for c in hist.get("counts") or []]
            except (TypeError, ValueError):
                edges, counts = [], []
            if len(edges) != len(counts) + 1 or not counts or edges[-1] <= edges[0]:
                edges, counts = [], []
            raw_var = stats.get("var_95")
            var = float(raw_var) if isinstance(raw_var, (int, float)) else None
        if (edges, counts, var) != (self._edges, self._counts, self._var):
            self._edges, self._counts, self._var = edges, counts, var
            self.refresh()

    @property
    def has_data(self) -> bool:
        return bool(self._counts)

    def columns(self, width: int) -> list[float]:
        """The counts resampled to ``width`` columns (bins merged or widened)."""
        n = len(self._counts)
        if not n or width <= 0:
            return []
        out = []
        for col in range(width):
            if width >= n:
                out.append(self._counts[col * n // width])
            else:
                lo, hi = col * n // width, max(col * n // width + 1, (col + 1) * n // width)
                out.append(sum(self._counts[lo:hi]))
        return out

    def column_of(self, value: float, width: int) -> int | None:
        """The column where ``value`` falls, None outside the histogram's range."""
        lo, hi = self._edges[0], self._edges[-1]
        if not (lo <= value <= hi) or width <= 0:
            return None
        return min(width - 1, int((value - lo) / (hi - lo) * width))

    # ------------------------------------------------------------------ drawing
    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        if not self.has_data or width <= 0 or height <= 0:
            return Text("no Monte Carlo histogram yet", style=self.LABEL)
        rows = max(1, height - 2)
        cols = self.columns(width)
        top = max(cols) or 1.0
        levels = [math.ceil(c / top * rows * 8) if c > 0 else 0 for c in cols]
        zero_col = self.column_of(0.0, width)
        var_col = self.column_of(self._var, width) if self._var is not None else None
        lo, hi = self._edges[0], self._edges[-1]

        def style_of(col: int) -> Style:
            mid = lo + (col + 0.5) / width * (hi - lo)
            if self._var is not None and mid < self._var:
                return self.LOSS_TAIL
            return self.LOSS if mid < 0 else self.GAIN

        text = Text(no_wrap=True, overflow="crop", end="")
        for row in range(rows):
            floor = (rows - 1 - row) * 8
            for col, level in enumerate(levels):
                fill = min(8, max(0, level - floor))
                if fill == 0 and col in (zero_col, var_col):
                    text.append("│", self.MARK)
                else:
                    text.append(_BLOCKS[fill], style_of(col))
            text.append("\n")
        if height >= 2:
            axis = ["─"] * width
            for col in (zero_col, var_col):
                if col is not None:
                    axis[col] = "┴"
            text.append("".join(axis), self.MARK)
        if height >= 3:
            text.append("\n")
            text.append_text(self._labels(width, lo, hi, zero_col, var_col))
        return text

    def _labels(
        self, width: int, lo: float, hi: float, zero_col: int | None, var_col: int | None
    ) -> Text:
        cells: list[tuple[str, Style | None]] = [(" ", None)] * width
        taken = [False] * width

        def place(label: str, start: int, style: Style) -> bool:
            start = max(0, min(start, width - len(label)))
            end = start + len(label)
            if start < 0 or end > width or any(taken[max(0, start - 1) : min(width, end + 1)]):
                return False
            for i, ch in enumerate(label):
                cells[start + i] = (ch, style)
                taken[start + i] = True
            return True

        if var_col is not None:
            place("VaR", var_col - 1, self.VAR_LABEL)
        if zero_col is not None:
            place("0", zero_col, self.ZERO_LABEL)
        place(_pct(lo), 0, self.LABEL)
        right = _pct(hi)
        place(right, width - len(right), self.LABEL)
        out = Text(no_wrap=True, overflow="crop", end="")
        for ch, style in cells:
            out.append(ch, style)
        return out
