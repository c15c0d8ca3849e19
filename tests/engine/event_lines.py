"""Hand-written event logs for the run-folder tests: encoded lines, a run start, member events."""

from __future__ import annotations

import json
from typing import Any

STARTED = {
    "ts": "2026-01-01T00:00:00.000Z",
    "type": "run_started",
    "run_id": "r",
    "n_folds": 1,
    "ensemble": 2,
    "total_timesteps": 100,
    "plan": {"profile": "laptop"},
}


def encode_lines(*events: dict[str, Any] | bytes) -> bytes:
    """One JSON line per event; ``bytes`` are written as they are (for broken lines)."""
    return b"".join((e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n" for e in events)


def member_event(kind: str, member: int, **fields: Any) -> dict[str, Any]:
    return {"ts": "2026-01-01T00:00:01.000Z", "type": kind, "fold": 0, "member": member, **fields}
