"""One GPU on the hardware screen: utilisation and memory with their history, temperature, power.

:class:`GpuHistory` (two history graphs side by side, as tall as the screen gives them) is what
the hardware screen shows; :class:`GpuCard` (one-line sparklines) is the older, compact form."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from engine.api import GpuReading
from ploutos_tui.widgets.heatmap import BLOCKS, load_style
from ploutos_tui.widgets.history import HistoryGraph

GiB = 1024**3
HOT_C = 83.0  # an RTX 3090 starts to throttle around here


class _FixedScale:
    """One line of bars on a fixed 0..``top`` scale, newest sample on the right.

    Textual's own sparkline scales between the data's min and max, which turns a steady
    94-96 % into full-height swings.
    """

    def __init__(self, data: Sequence[float], width: int, top: float) -> None:
        self.data, self.width, self.top = list(data), max(0, width), top or 1.0

    def text(self) -> Text:
        data, width = self.data, self.width
        if len(data) > width > 0:  # more samples than columns: the max of each bucket
            step = len(data) / width
            data = [
                max(data[int(i * step) : max(int(i * step) + 1, int((i + 1) * step))])
                for i in range(width)
            ]
        out = Text(" " * (width - len(data)), no_wrap=True, end="")
        for value in data:
            pct = max(0.0, min(100.0, 100.0 * value / self.top))
            index = min(len(BLOCKS) - 1, int(pct / 100.0 * len(BLOCKS)))
            out.append(BLOCKS[index], load_style(int(round(pct / 5.0) * 5)))
        return out


class PercentSparkline(Sparkline):
    """A Textual ``Sparkline`` drawn on a fixed 0..100 % scale."""

    def render(self) -> Text:
        return _FixedScale(self.data or (), self.size.width, 100.0).text()


def _gib(value: int) -> str:
    return f"{value / GiB:.1f}"


class GpuCard(Vertical):
    """Utilisation and memory (with sparklines), temperature and power of one GPU."""

    DEFAULT_CSS = """
    GpuCard {
        height: auto;
        margin-bottom: 1;
    }
    GpuCard:last-of-type {
        margin-bottom: 0;
    }
    GpuCard .gpu-title {
        text-style: bold;
        height: 1;
    }
    GpuCard .gpu-row {
        height: 1;
    }
    GpuCard .gpu-label {
        width: 18;
        height: 1;
    }
    GpuCard PercentSparkline {
        width: 1fr;
        height: 1;
    }
    GpuCard .gpu-extra {
        height: 1;
    }
    GpuCard .gpu-extra.-hot {
        color: $error;
    }
    """

    def __init__(
        self,
        gpu: GpuReading,
        util_history: Sequence[float] = (),
        mem_history: Sequence[float] = (),
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.gpu = gpu
        self._history = (tuple(util_history), tuple(mem_history))

    def compose(self) -> ComposeResult:
        yield Static(classes="gpu-title")
        with Horizontal(classes="gpu-row"):
            yield Static(classes="gpu-label gpu-util")
            yield PercentSparkline(classes="gpu-util-history")
        with Horizontal(classes="gpu-row"):
            yield Static(classes="gpu-label gpu-mem")
            yield PercentSparkline(classes="gpu-mem-history")
        yield Static(classes="gpu-extra")

    def on_mount(self) -> None:
        self._apply()

    def show(
        self, gpu: GpuReading, util_history: Sequence[float], mem_history: Sequence[float]
    ) -> None:
        """Show a new reading (before the card is mounted it is kept and shown on mount)."""
        self.gpu = gpu
        self._history = (tuple(util_history), tuple(mem_history))
        if self.is_mounted:
            self._apply()

    def _apply(self) -> None:
        gpu, (util_history, mem_history) = self.gpu, self._history
        self.query_one(".gpu-title", Static).update(Text(f"GPU{gpu.index} {gpu.name}"))
        util = Text("util ")
        util.append(f"{gpu.util_pct:3.0f}%", load_style(int(round(gpu.util_pct / 5) * 5)))
        self.query_one(".gpu-util", Static).update(util)
        mem = Text("mem ")
        mem.append(
            f"{_gib(gpu.mem_used_bytes)}/{_gib(gpu.mem_total_bytes)} GiB",
            load_style(int(round(gpu.mem_pct / 5) * 5)),
        )
        self.query_one(".gpu-mem", Static).update(mem)
        self.query_one(".gpu-util-history", Sparkline).data = list(util_history)
        self.query_one(".gpu-mem-history", Sparkline).data = list(mem_history)
        parts = []
        parts.append("temp ?" if gpu.temp_c is None else f"{gpu.temp_c:.0f} °C")
        if gpu.power_w is None:
            parts.append("power ?")
        elif gpu.power_limit_w:
            parts.append(f"{gpu.power_w:.0f}/{gpu.power_limit_w:.0f} W")
        else:
            parts.append(f"{gpu.power_w:.0f} W")
        extra = self.query_one(".gpu-extra", Static)
        extra.update(Text("  ".join(parts)))
        extra.set_class(gpu.temp_c is not None and gpu.temp_c >= HOT_C, "-hot")


def util_label(gpu: GpuReading, short: bool = False) -> Text:
    """``GPU0 NVIDIA H200  util  95%  78 °C  330/350 W`` (the temperature red when hot; without
    the name when ``short``)."""
    text = Text(f"GPU{gpu.index}" if short else f"GPU{gpu.index} {gpu.name}", style="bold")
    text.append(" util " if short else "  util ")
    text.append(f"{gpu.util_pct:3.0f}%", load_style(int(round(gpu.util_pct / 5) * 5)))
    if gpu.temp_c is None:
        text.append("  temp ?")
    else:
        text.append(f"  {gpu.temp_c:.0f} °C", "bold red" if gpu.temp_c >= HOT_C else "")
    if gpu.power_w is None:
        text.append("  power ?")
    elif gpu.power_limit_w:
        text.append(f"  {gpu.power_w:.0f}/{gpu.power_limit_w:.0f} W")
    else:
        text.append(f"  {gpu.power_w:.0f} W")
    return text


def mem_label(gpu: GpuReading) -> Text:
    """``GPU0 mem 22.1/24.0 GiB  92%``."""
    text = Text(f"GPU{gpu.index} ", style="bold")
    text.append("mem ")
    style = load_style(int(round(gpu.mem_pct / 5) * 5))
    text.append(f"{_gib(gpu.mem_used_bytes)}/{_gib(gpu.mem_total_bytes)} GiB", style)
    text.append(f"  {gpu.mem_pct:.0f}%", style)
    return text


class GpuHistory(Horizontal):
    """One GPU as two history graphs side by side: utilisation (with temperature and power in
    its label) and memory; ``rows`` graph rows each (0: one line, label and sparkline)."""

    DEFAULT_CSS = """
    GpuHistory {
        height: 1;
    }
    GpuHistory > HistoryGraph {
        width: 1fr;
        height: 100%;
    }
    GpuHistory > .gpu-util-graph {
        margin-right: 2;
    }
    """

    def __init__(self, index: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self.rows = 0

    def compose(self) -> ComposeResult:
        yield HistoryGraph(classes="gpu-util-graph")
        yield HistoryGraph(classes="gpu-mem-graph")

    def set_rows(self, rows: int) -> None:
        """Graph rows under each label (0: label and sparkline on one line)."""
        self.rows = rows
        self.styles.height = 1 + rows if rows else 1

    def show(
        self, gpu: GpuReading, util: Sequence[float], mem: Sequence[float], short: bool = False
    ) -> None:
        self.query_one(".gpu-util-graph", HistoryGraph).show(util_label(gpu, short), util)
        self.query_one(".gpu-mem-graph", HistoryGraph).show(mem_label(gpu), mem)
