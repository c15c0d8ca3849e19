"""Every GPU in one widget: utilisation, memory, temperature and power, with their history.

One widget draws all GPUs (cards side by side, as many per row as the width holds). With
``graph_rows`` 0 each GPU is one line (``GPU0  95% ▅▆▇ mem 22.1/24.0G ▇▇ 78°C 330/350W``, two
GPUs a line when the width allows); with ``graph_rows`` n each card has a title line, a line of
numbers and n rows of utilisation and memory history side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.geometry import Size

from engine.api import GpuReading
from ploutos_tui.widgets.gpu import HOT_C
from ploutos_tui.widgets.heatmap import load_style
from ploutos_tui.widgets.history import graph_lines
from ploutos_tui.widgets.lines import LinesWidget

GiB = 1024**3
LINE_MIN = 36  # one GPU on one line (its sparklines need more)
CARD_MIN = 46  # a card with graphs


def _style(pct: float):
    return load_style(int(round(max(0.0, min(100.0, pct)) / 5.0) * 5))


def _gib(n: int) -> str:
    return f"{n / GiB:.1f}"


def _temp_power(gpu: GpuReading, short: bool) -> Text:
    out = Text()
    if gpu.temp_c is None:
        out.append("temp ?")
    else:
        out.append(f"{gpu.temp_c:.0f}°C" if short else f"{gpu.temp_c:.0f} °C")
        if gpu.temp_c >= HOT_C:
            out.stylize("bold red")
    out.append(" " if short else "  ")
    if gpu.power_w is None:
        out.append("power ?")
    else:
        limit = f"/{gpu.power_limit_w:.0f}" if gpu.power_limit_w else ""
        out.append(f"{gpu.power_w:.0f}{limit}{'' if short else ' '}W")
    return out


def gpu_line(gpu: GpuReading, util: Sequence[float], mem: Sequence[float], width: int) -> Text:
    """One GPU on one line of ``width`` cells; the sparklines take the room the numbers leave
    (none when that is under 6 cells)."""
    named = width >= 70
    head = Text(f"GPU{gpu.index}" + (f" {gpu.name}" if named else ""), style="bold")
    head.append(" ")
    util_text = Text(f"{gpu.util_pct:3.0f}%", _style(gpu.util_pct))
    mem_text = Text(" mem ")
    if named:
        used = f"{_gib(gpu.mem_used_bytes)}/{_gib(gpu.mem_total_bytes)} GiB"
    else:
        used = f"{gpu.mem_used_bytes / GiB:.0f}/{gpu.mem_total_bytes / GiB:.0f}G"
    mem_text.append(used, _style(gpu.mem_pct))
    tail = Text(" ")
    if named:
        tail.append_text(_temp_power(gpu, short=False))
    else:
        tail.append("temp ?" if gpu.temp_c is None else f"{gpu.temp_c:.0f}°C")
        if gpu.temp_c is not None and gpu.temp_c >= HOT_C:
            tail.stylize("bold red")
        tail.append("" if gpu.power_w is None else f" {gpu.power_w:.0f}W")
    fixed = head.cell_len + util_text.cell_len + mem_text.cell_len + tail.cell_len
    room = width - fixed - 2  # a space before each sparkline
    spark = room // 2 if room >= 6 else 0
    out = Text(no_wrap=True, overflow="crop", end="")
    out.append_text(head)
    out.append_text(util_text)
    if spark:
        out.append(" ")
        out.append_text(graph_lines(util, spark)[0])
    out.append_text(mem_text)
    if spark:
        out.append(" ")
        out.append_text(graph_lines(mem, room - spark)[0])
    out.append_text(tail)
    return out


def gpu_card(
    gpu: GpuReading, util: Sequence[float], mem: Sequence[float], width: int, rows: int
) -> list[Text]:
    """A card of ``2 + rows`` lines: title, numbers, then util and memory history side by side."""
    title = Text(f"GPU{gpu.index} {gpu.name}", style="bold", no_wrap=True, overflow="crop")
    extra = _temp_power(gpu, short=False)
    if title.cell_len + 2 + extra.cell_len <= width:
        title.append(" " * (width - title.cell_len - extra.cell_len))
        title.append_text(extra)
    half = (width - 1) // 2
    numbers = Text("util ")
    numbers.append(f"{gpu.util_pct:3.0f}%", _style(gpu.util_pct))
    numbers.pad_right(max(0, half + 1 - numbers.cell_len))
    numbers.append("mem ")
    numbers.append(
        f"{_gib(gpu.mem_used_bytes)}/{_gib(gpu.mem_total_bytes)} GiB {gpu.mem_pct:.0f}%",
        _style(gpu.mem_pct),
    )
    lines = [title, numbers]
    for left, right in zip(
        graph_lines(util, half, rows), graph_lines(mem, width - half - 1, rows), strict=True
    ):
        line = left.copy()
        line.append(" ")
        line.append_text(right)
        lines.append(line)
    return lines


def strip_layout(gpus: int, width: int, graph_rows: int) -> tuple[int, int]:
    """(GPUs per row, lines per GPU) of ``gpus`` GPUs in ``width`` cells."""
    if not gpus:
        return 1, 1
    if graph_rows > 0:
        return max(1, min(gpus, (width + 1) // (CARD_MIN + 1))), 2 + graph_rows
    return max(1, min(gpus, (width + 2) // (LINE_MIN + 2))), 1


def strip_height(gpus: int, width: int, graph_rows: int) -> int:
    """Lines the strip takes (a blank line between rows of cards; one line without a GPU)."""
    per_row, lines = strip_layout(gpus, width, graph_rows)
    rows = -(-gpus // per_row)
    gaps = (rows - 1) if graph_rows and rows else 0
    return max(1, rows * lines + gaps)


class GpuStrip(LinesWidget):
    """All GPUs as lines or cards; ``graph_rows`` sets how tall each card's history is."""

    DEFAULT_CSS = """
    GpuStrip {
        height: auto;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.gpus: tuple[GpuReading, ...] = ()
        self.histories: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = ()
        self.note = ""
        self._graph_rows = 0

    @property
    def graph_rows(self) -> int:
        return self._graph_rows

    @graph_rows.setter
    def graph_rows(self, rows: int) -> None:
        if rows != self._graph_rows:
            self._graph_rows = max(0, rows)
            self.refresh(layout=True)
            self.update_lines()

    def show(
        self,
        gpus: Sequence[GpuReading],
        util: Mapping[int, Sequence[float]],
        mem: Mapping[int, Sequence[float]],
        note: str = "",
    ) -> None:
        """The GPUs now and each one's util/memory history (percent, by GPU index)."""
        histories = tuple((tuple(util.get(g.index, ())), tuple(mem.get(g.index, ()))) for g in gpus)
        gpus = tuple(gpus)
        if (gpus, histories, note) == (self.gpus, self.histories, self.note):
            return
        count = len(self.gpus)
        self.gpus, self.histories, self.note = gpus, histories, note
        if len(gpus) != count:  # more or fewer lines: lay the screen out again
            self.refresh(layout=True)
        self.update_lines()

    def height_for(self, width: int, graph_rows: int, gpus: int | None = None) -> int:
        """The lines the strip takes at ``width`` with ``graph_rows`` (``gpus``: that many GPUs
        instead of those shown)."""
        return strip_height(len(self.gpus) if gpus is None else gpus, width, graph_rows)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self.height_for(width, self._graph_rows)

    def build(self, width: int, height: int) -> list[Text]:
        gpus, histories, note = self.gpus, self.histories, self.note
        if not gpus:
            out = Text("no GPU", style="bold")
            if note:
                out.append(f": {note}", style="dim")
            out.truncate(width)
            return [out]
        rows = self._graph_rows
        per_row, _lines = strip_layout(len(gpus), width, rows)
        gap = 1 if rows else 2
        cell = (width - gap * (per_row - 1)) // per_row
        out: list[Text] = []
        for start in range(0, len(gpus), per_row):
            if start and rows:
                out.append(Text())  # a blank line between rows of cards
            cards = []
            for gpu, (util, mem) in zip(
                gpus[start : start + per_row], histories[start : start + per_row], strict=True
            ):
                if rows:
                    cards.append(gpu_card(gpu, util, mem, cell, rows))
                else:
                    cards.append([gpu_line(gpu, util, mem, cell)])
            for k in range(len(cards[0])):
                line = Text(no_wrap=True, end="")
                for j, card in enumerate(cards):
                    part = card[k].copy()
                    part.truncate(cell, pad=j < len(cards) - 1)
                    if j:
                        line.append(" " * gap)
                    line.append_text(part)
                line.truncate(width)
                out.append(line)
        return out
