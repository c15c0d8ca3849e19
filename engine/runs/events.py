"""The event log of a run folder: its writer, its one reader and the shape every event must have.

Events are written by one process (the trainer); readers tail them by byte offset and only ever
consume complete lines, so a reader that meets a partial last line waits for the rest. Every
reader (``replay``, ``ploutos status``, the panel) goes through the one :class:`EventTail`, so one
rule holds for all: a line is whatever lies before its newline however long it is, up to
``MAX_LINE_BYTES``; a longer line, a line that is not a UTF-8 JSON object, and an event whose known
type lacks its fields are skipped and counted, never fatal. Schema: docs/events.md.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_SCHEMA_VERSION = 1
CHUNK_BYTES = 1 << 20  # one read of the event log
MAX_LINE_BYTES = 16 << 20  # a longer event line is skipped as unreadable (and status.json refused)


def utc_stamp() -> str:
    """Now, as every event and status file writes it (``2026-01-02T03:04:05.678Z``)."""
    return (
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_stamp(stamp: object) -> float | None:
    """Epoch seconds of a timestamp (``2026-01-02T03:04:05.678Z``); None if not one."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


class EventLog:
    """The writer of ``events.jsonl``: one JSON object per line, each written whole.

    Each line goes out in a single ``write`` on an ``O_APPEND`` descriptor, so a reader never sees
    two events interleaved; lifecycle events (everything but progress) are also fsynced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"ts": utc_stamp(), "type": type_, **fields}
        line = json.dumps(event, separators=(",", ":"), allow_nan=False, default=_json_default)
        data = (line + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if type_ != "member_progress":
            os.fsync(self._fd)
        return event

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _unreadable(offset: int, size: int, reason: str) -> dict[str, Any]:
    return {"type": "unreadable", "offset": offset, "bytes": size, "reason": reason}


def parse_event_line(raw: bytes, offset: int = 0) -> dict[str, Any] | None:
    """One line of the log as an event; an ``unreadable`` marker (``offset``, ``bytes``,
    ``reason``) when it is not a UTF-8 JSON object with a string ``type``; None when blank."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _unreadable(offset, len(raw), "not UTF-8")
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested brackets
        return _unreadable(offset, len(raw), "not valid JSON")
    if not isinstance(event, dict):
        return _unreadable(offset, len(raw), "not a JSON object")
    if not isinstance(event.get("type"), str):
        return _unreadable(offset, len(raw), "no string 'type'")
    return event


@dataclass
class EventTail:
    """The one reader of ``events.jsonl``: each ``poll()`` returns the events written since.

    ``offset`` is where the first line not yet returned starts. A line is one line however many
    chunks it spans; a partial last line is kept (and its bytes not read again) until its newline
    comes; a line over ``max_line_bytes`` is dropped unread up to its newline and reported as one
    ``unreadable`` marker, as is any line that is not a JSON object (``skipped`` counts them). A log
    that shrank was replaced: reading starts over and ``restarts`` goes up.
    """

    path: Path
    offset: int = 0
    chunk_bytes: int = CHUNK_BYTES
    max_line_bytes: int = MAX_LINE_BYTES
    bytes_read: int = 0  # by the last poll
    skipped: int = 0  # unreadable lines so far
    restarts: int = 0
    _pos: int = field(default=-1, repr=False)  # the next byte to read (offset + partial line)
    _partial: bytearray = field(default_factory=bytearray, repr=False)
    _dropping: int = field(default=-1, repr=False)  # bytes of an over-long line dropped so far

    def poll(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        """Complete events appended since the last poll, reading at most ``max_bytes`` (None: up
        to the end of the file); what the budget left unread comes with the next poll."""
        self.bytes_read = 0
        if self._pos < 0:
            self._pos = self.offset
        out: list[dict[str, Any]] = []
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            return out
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self._pos:
                self.offset = self._pos = 0
                self._partial.clear()
                self._dropping = -1
                self.restarts += 1
            fh.seek(self._pos)
            while self._pos < size and (max_bytes is None or self.bytes_read < max_bytes):
                want = self.chunk_bytes
                if max_bytes is not None:
                    want = min(want, max_bytes - self.bytes_read)
                block = fh.read(want)
                if not block:
                    break
                self.bytes_read += len(block)
                self._consume(block, out)
        return out

    def _consume(self, block: bytes, out: list[dict[str, Any]]) -> None:
        base = self._pos
        self._pos += len(block)
        start = 0
        while (nl := block.find(b"\n", start)) >= 0:
            piece = block[start:nl]
            if self._dropping >= 0:
                event: dict[str, Any] | None = _unreadable(
                    self.offset,
                    self._dropping + len(piece),
                    f"line longer than {self.max_line_bytes:,} bytes",
                )
                self._dropping = -1
            elif self._partial or len(piece) > self.max_line_bytes:
                self._partial += piece
                line, self._partial = bytes(self._partial), bytearray()
                if len(line) > self.max_line_bytes:
                    reason = f"line longer than {self.max_line_bytes:,} bytes"
                    event = _unreadable(self.offset, len(line), reason)
                else:
                    event = parse_event_line(line, self.offset)
            else:
                event = parse_event_line(piece, self.offset)
            if event is not None:
                if event["type"] == "unreadable":
                    self.skipped += 1
                out.append(event)
            self.offset = base + nl + 1
            start = nl + 1
        rest = block[start:]
        if not rest:
            return
        if self._dropping >= 0:
            self._dropping += len(rest)
            return
        self._partial += rest
        if len(self._partial) > self.max_line_bytes:  # stop holding it: drop on to its newline
            self._dropping = len(self._partial)
            self._partial = bytearray()


def read_events(
    path: Path, offset: int = 0, max_bytes: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Complete events from byte ``offset`` on, and the offset to continue from.

    :class:`EventTail`'s rules: a partial last line is left for the next call; an unreadable line
    is reported as ``{"type": "unreadable", "reason": ...}`` and reading goes on after it.
    """
    tail = EventTail(path, offset)
    events = tail.poll(max_bytes)
    return events, tail.offset


# ---------------------------------------------------------------------- event shapes
# What a reader relies on per known type (docs/events.md): required fields, then optional ones
# (null counts as absent). Kinds: "int" (a count or index, 0 <= n <= MAX_INDEX), "number"
# (finite), "str", "object". Fields not named here are never read, so never checked.
MAX_INDEX = 1_000_000_000_000
_MEMBER = {"fold": "int", "member": "int"}
_RUN = {
    "run_id": "str",
    "config": "str",
    "algorithm": "str",
    "n_folds": "int",
    "ensemble": "int",
    "total_timesteps": "int",
    "plan": "object",
    "threads": "object",
}
_EVENT_FIELDS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "run_started": ({}, _RUN),
    "run_resumed": ({}, _RUN),
    "fold_started": ({"fold": "int"}, {}),
    "member_started": (_MEMBER, {"timesteps": "int", "total": "int", "node": "str"}),
    "member_progress": (
        {**_MEMBER, "timesteps": "int", "total": "int"},
        {
            "fps": "number",
            "mean_reward": "number",
            "time_shares": "object",
            "time_s": "object",
            "sb3": "object",
            "measure_overhead_share": "number",
        },
    ),
    "member_finished": (_MEMBER, {"timesteps": "int"}),
    "member_stopped": (_MEMBER, {"timesteps": "int"}),
    "member_failed": (_MEMBER, {"error": "str"}),
    "fold_evaluated": (
        {"fold": "int", "oos": "object", "buy_and_hold": "object"},
        {"members_used": "int"},
    ),
    "fold_failed": ({"fold": "int"}, {"error": "str"}),
    "montecarlo": ({"stats": "object"}, {"scope": "str", "fold": "int"}),
    "verdict": (
        {"verdict": "object"},
        {"pooled": "object", "overfitting": "object", "seed_dispersion": "object", "fill": "str"},
    ),
    "run_failed": ({}, {"error": "str"}),
}
# run_started creates n_folds x ensemble member rows: a absurd pair must not exhaust memory
MAX_MEMBERS = 100_000


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INDEX
    if kind == "number":
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind == "str":
        return isinstance(value, str)
    return isinstance(value, dict)


def event_problem(event: Any) -> str | None:
    """Why a reader cannot use this event (one line), or None. Unknown types are fine."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return "not a JSON object with a string 'type'"
    kind = event["type"]
    if kind == "unreadable":
        where = event.get("offset")
        at = f" at byte {where}" if isinstance(where, int) else ""
        return f"line{at}: {event.get('reason') or 'unreadable'}"
    if "ts" in event and not isinstance(event["ts"], str):
        return f"{kind}: 'ts' is not a string"
    required, optional = _EVENT_FIELDS.get(kind, ({}, {}))
    for name, want in required.items():
        if name not in event or event[name] is None:
            return f"{kind}: '{name}' missing"
        if not _kind_ok(event[name], want):
            return f"{kind}: '{name}' is not a valid {want}"
    for name, want in optional.items():
        value = event.get(name)
        if value is not None and not _kind_ok(value, want):
            return f"{kind}: '{name}' is not a valid {want}"
    if kind in ("run_started", "run_resumed"):
        n_folds, ensemble = event.get("n_folds") or 0, event.get("ensemble") or 0
        if n_folds * ensemble > MAX_MEMBERS:
            return f"{kind}: {n_folds} folds x {ensemble} members is not a plausible run"
    return None
