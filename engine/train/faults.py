"""Test hooks: faults and pauses injected into units through ``$PLOUTOS_FAULT`` (docs/events.md).

``raise@F/M`` (or ``exit@F/M``) makes member M of fold F fail at its first environment step, the
way a bug (or a segfault) would; ``pause@F/M:STEPS`` parks it, checkpointed, once it has STEPS
timesteps, and ``pause-eval@F`` parks fold F's evaluation before it writes anything, so a test
can stop or kill the run while that unit is provably still at work instead of racing it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from engine.train.executors.base import Report, ShouldStop

log = logging.getLogger("ploutos.trainer")

FAULT_ENV = "PLOUTOS_FAULT"  # comma-separated faults
PAUSE_POLL_S = 0.05


def fault(kinds: tuple[str, ...], where: str) -> tuple[str, str] | None:
    """The first ``(kind, argument)`` of ``$PLOUTOS_FAULT`` aimed at ``where`` ("F/M" or "F")."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        kind, _, target = item.strip().partition("@")
        target, _, argument = target.partition(":")
        if kind in kinds and target == where:
            return kind, argument
    return None


def inject_fault(fold: int, member: int) -> None:
    found = fault(("raise", "exit"), f"{fold}/{member}")
    if found is None:
        return
    if found[0] == "exit":
        os._exit(3)
    raise RuntimeError(f"injected fault ({FAULT_ENV}={found[0]}@{fold}/{member})")


def pause_steps(fold: int, member: int) -> int | None:
    """Timesteps after which ``pause@F/M:STEPS`` parks this member; None without that fault."""
    found = fault(("pause",), f"{fold}/{member}")
    return int(found[1] or 0) if found is not None else None


def park(report: Report, should_stop: ShouldStop, event: dict[str, Any]) -> None:
    """Report ``event`` (with this process's ``pid``), then wait until the unit is told to stop
    (stop, or its trainer died) or this process gets SIGUSR1 (the unit goes on)."""
    released = {"flag": False}

    def release(_signum: int, _frame: Any) -> None:
        released["flag"] = True

    try:
        previous = signal.signal(signal.SIGUSR1, release)
    except ValueError:  # not the main thread (a Ray task): only stop releases it
        previous = None
    try:
        report({**event, "pid": os.getpid()})
        log.info("%s: parked by %s until stopped", event["type"], FAULT_ENV)
        while not should_stop() and not released["flag"]:
            time.sleep(PAUSE_POLL_S)
    finally:
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)
