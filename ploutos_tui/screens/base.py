"""The loop every live screen runs: fetch in a worker thread, draw on the UI thread, then schedule
the next fetch.

The next fetch is scheduled only once the previous result has been drawn (``set_timer`` after
the refresh), so a slow fetch (a hung NVML call, a huge process tree, a big event log) delays the
next one instead of piling up behind it, and never more than one fetch runs per screen.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar, Generic, TypeVar

from textual import events, on, work
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer

T = TypeVar("T")


class PollingScreen(Screen[None], Generic[T]):
    """A screen that shows what :meth:`fetch` returns, every ``interval_s`` seconds.

    Subclasses implement :meth:`fetch` (worker thread: no widgets), :meth:`draw` and
    :meth:`draw_error` (UI thread), and call :meth:`poll_now` once mounted. With
    ``PAUSE_WHEN_COVERED`` a screen covered by another one stops polling until it is shown again.
    """

    PAUSE_WHEN_COVERED: ClassVar[bool] = True

    class Fetched(Message):
        """A fetch finished in the worker thread (``error`` set when it raised)."""

        def __init__(self, result: object = None, error: BaseException | None = None) -> None:
            super().__init__()
            self.result = result
            self.error = error

    def __init__(
        self,
        interval_s: float = 1.0,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.interval_s = interval_s
        self._in_flight = False
        self._again = False  # poll_now() during a fetch: fetch once more right after it
        self._paused = False
        self._timer: Timer | None = None

    # ------------------------------------------------------------------ for subclasses
    def fetch(self) -> T:
        """Read what the screen shows (a worker thread: no widget access here)."""
        raise NotImplementedError

    def draw(self, result: T) -> None:
        """Show a fetched result (the UI thread)."""
        raise NotImplementedError

    def draw_error(self, error: BaseException) -> None:
        """Show that a fetch raised (the UI thread); the next fetch is scheduled as usual."""
        raise NotImplementedError

    @property
    def polling(self) -> bool:
        """Whether a fetch is running now."""
        return self._in_flight

    # ------------------------------------------------------------------ the loop
    def poll_now(self) -> None:
        """Fetch now; if a fetch is running, fetch again as soon as it has been drawn (what it
        reads may predate the caller's change). The schedule goes on from there."""
        if not self.is_attached:
            return
        if self._in_flight:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._in_flight = True
        self._fetch_in_thread()

    @work(thread=True, group="poll", exit_on_error=False)
    def _fetch_in_thread(self) -> None:
        try:
            message = self.Fetched(self.fetch())
        except Exception as err:  # a failing source must not take the panel down
            message = self.Fetched(None, err)
        with contextlib.suppress(RuntimeError):  # the app's loop is gone (shutting down)
            self.post_message(message)

    @on(Fetched)
    def _fetched(self, message: Fetched) -> None:
        message.stop()
        self._in_flight = False
        if message.error is not None:
            self.draw_error(message.error)
        else:
            self.draw(message.result)  # type: ignore[arg-type]
        if self._again:
            self._again = False
            self.poll_now()
        else:
            self.call_after_refresh(self._schedule_next)

    def _schedule_next(self) -> None:
        if self._in_flight or not self.is_attached:
            return
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.interval_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.PAUSE_WHEN_COVERED and not self.is_current:
            self._paused = True  # another screen covers this one: poll again when it is back
            return
        self.poll_now()

    @on(events.ScreenResume)
    def _resume_polling(self) -> None:
        if self._paused:
            self._paused = False
            self.poll_now()
