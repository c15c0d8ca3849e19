"""``LinesWidget``: a widget that draws a list of Rich ``Text`` lines through Textual's line API and
repaints only the lines that changed.

The overview redraws every second; Textual's ``render()`` path turns the whole widget into
``Content`` and strips again on each change, which costs more than everything else the panel
does at 200x50. A subclass returns its lines from :meth:`LinesWidget.build` (each line cut to
the width); :meth:`LinesWidget.update_lines` rebuilds them, compares them with the lines on
screen and marks only the changed ones dirty; :meth:`render_line` turns a line into a ``Strip``
once (Rich's own ``Text.render``) and keeps it until that line changes or the size does.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget


class LinesWidget(Widget):
    """Lines of ``Text`` drawn with the line API; a change repaints only the lines it touches."""

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._lines: list[Text] = []
        self._strips: dict[int, Strip] = {}
        self._built_size: Size | None = None
        # the widget's base style, looked up once per change of the lines rather than once per
        # line (Textual walks every ancestor for it)
        self._base: Style | None = None

    def build(self, width: int, height: int) -> list[Text]:
        """The lines to show at ``width`` x ``height`` (subclasses)."""
        raise NotImplementedError

    def update_lines(self) -> None:
        """What to show changed: rebuild the lines and repaint those that differ."""
        if not self.is_mounted:
            return
        size = self.size
        if self._built_size != size:
            self._built_size = None  # all of it, at the next render_line
            self.refresh()
            return
        self._base = None
        old, new = self._lines, self._fresh_lines()
        kept = {}
        for y in range(max(len(old), len(new))):
            same = y < len(old) and y < len(new) and old[y] == new[y]
            if same and y in self._strips:
                kept[y] = self._strips[y]
            elif not same:
                self.refresh(Region(0, y, size.width, 1))
        self._lines, self._strips = new, kept

    def _fresh_lines(self) -> list[Text]:
        width, height = self.size
        return self.build(width, height)[: max(0, height)] if width > 0 else []

    def _build(self) -> None:
        self._lines = self._fresh_lines()
        self._strips = {}
        self._base = None
        self._built_size = self.size

    def on_resize(self) -> None:
        self._built_size = None  # built again at the next render_line
        self._base = None
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base = None

    def render_line(self, y: int) -> Strip:
        if self._built_size != self.size:
            self._build()
        strip = self._strips.get(y)
        if strip is None:
            width = self.size.width
            base = self._base
            if base is None:
                base = self._base = self.rich_style
            if y < len(self._lines):
                line = self._lines[y]
                segments = list(line.render(self.app.console))
                strip = Strip(Segment.apply_style(segments, base), line.cell_len)
                strip = strip.crop_extend(0, width, base)
            else:
                strip = Strip.blank(width, base)
            self._strips[y] = strip
        return strip
