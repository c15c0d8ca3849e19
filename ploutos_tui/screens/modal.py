"""A modal screen that closes once, and only itself.

Textual's ``Screen.dismiss`` pops whatever screen is on top of the current mode's stack. Keys
arrive faster than they are handled: Enter on a button and Escape in one burst dismiss a form
twice, and the second pop takes the screen under it (or raises ``ScreenStackError`` when that
screen is the last one). A worker that finishes while the user looks at another mode would pop
that mode's screen. :class:`PanelModal` makes dismissing idempotent and, when the screen is not
on top, postpones the dismissal until it is shown again.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from textual import events, on
from textual.await_complete import AwaitComplete
from textual.screen import ModalScreen

ResultT = TypeVar("ResultT")


class PanelModal(ModalScreen[ResultT], Generic[ResultT]):
    """A modal screen whose :meth:`dismiss` pops this screen at most once, never another one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._panel_dismissed = False
        self._panel_deferred: tuple[ResultT | None] | None = None

    @property
    def dismissed(self) -> bool:
        """True once the screen has been dismissed (it may still be on its way out)."""
        return self._panel_dismissed

    def dismiss(self, result: ResultT | None = None) -> AwaitComplete:
        if self._panel_dismissed:
            return AwaitComplete.nothing()
        if not self.is_active:
            # Another screen covers this one (or another mode is shown): popping now would pop
            # that screen instead. Close when this one is back on top.
            self._panel_deferred = (result,)
            return AwaitComplete.nothing()
        self._panel_dismissed = True
        self._panel_deferred = None
        return super().dismiss(result)

    @on(events.ScreenResume)
    def _dismiss_deferred(self) -> None:
        if self._panel_deferred is not None and not self._panel_dismissed:
            # After the refresh: Textual is still making this screen current right now.
            self.call_after_refresh(self._dismiss_if_deferred)

    def _dismiss_if_deferred(self) -> None:
        if self._panel_deferred is not None:
            (result,) = self._panel_deferred
            self.dismiss(result)
