"""The executor contract: what the orchestrator asks of wherever units run, and what comes back.

A unit (:mod:`engine.train.units`) is plain data plus a function; an executor runs units, at most
``max_parallel`` at once, and hands back :class:`Message` s. Units talk to their executor only
through a :data:`Report` and a :data:`ShouldStop` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Literal, NamedTuple, Protocol

# ("member", fold, member) or ("evaluate", fold, -1): names one unit within a run.
UnitKey = tuple[str, int, int]

# What a unit calls to report an event (a dict with a "type"), and to ask whether to stop.
Report = Callable[[dict[str, Any]], None]
ShouldStop = Callable[[], bool]

MessageKind = Literal["event", "result", "error"]


class Message(NamedTuple):
    """One message from a unit: an ``event`` it reported, its ``result``, or its ``error``.

    ``result`` payloads are the unit function's return value, ``error`` payloads carry ``error``
    (one line) and optionally ``traceback``. A NamedTuple: it crosses a multiprocessing queue as
    is and unpacks as ``kind, key, payload``.
    """

    kind: MessageKind
    key: UnitKey
    payload: dict[str, Any]


class UnitTask(Protocol):
    """What an executor needs of a task (``MemberTask`` and ``FoldTask`` in units)."""

    @property
    def kind(self) -> str: ...

    @property
    def key(self) -> UnitKey: ...


class Executor(Protocol):
    """Where units run: the local worker processes or a Ray cluster."""

    max_parallel: int

    def has_room(self) -> bool:
        """Whether one more unit may be submitted now."""
        ...

    def submit(self, task: UnitTask) -> None:
        """Start ``task``; its messages come back through :meth:`poll`."""
        ...

    def poll(self, timeout: float) -> list[Message]:
        """The messages since the last poll, waiting up to ``timeout`` s for the first. A unit that
        died without saying so comes back as an ``error``; a ``result`` or ``error`` ends it."""
        ...

    def running_keys(self) -> Collection[UnitKey]:
        """The keys of the units submitted and not yet ended."""
        ...

    def signal_all(self, signum: int) -> None:
        """SIGTERM: ask every running unit to stop (members checkpoint); SIGKILL: end them now."""
        ...

    def close(self) -> None:
        """Release what the executor holds (a cluster connection); the units have ended."""
        ...
