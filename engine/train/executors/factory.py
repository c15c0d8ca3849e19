"""``make_executor``: the executor a run's config asks for; Ray is imported only when asked for.

Its own module (not ``base``, which the implementations import, nor the package ``__init__``, which
stays import-free) so that no module imports one that imports it back.
"""

from __future__ import annotations

from typing import Any

from engine.config import PloutosConfig
from engine.train.executors.base import Executor
from engine.train.executors.local import LocalExecutor


def executor_slots(plan: dict[str, Any], pending_units: int | None = None) -> int:
    """Units the executor runs at once: the plan's ``parallel_members`` (sized before the run
    from all of its (fold, member) units), at most ``pending_units`` when given, and at least 1.

    ``pending_units``: what is left to run, members to train plus folds to evaluate (both are
    executor units); a resumed run has fewer than the plan was sized for.
    """
    slots = int(plan["parallel_members"])
    if pending_units is not None:
        slots = min(slots, pending_units)
    return max(1, slots)


def make_executor(
    cfg: PloutosConfig,
    plan: dict[str, Any],
    features_path: str,
    pending_units: int | None = None,
) -> Executor:
    """The executor the config asks for, sized by the plan (see :func:`executor_slots`)."""
    slots = executor_slots(plan, pending_units)
    if cfg.executor == "ray":
        from engine.train.executors.ray import RayExecutor

        return RayExecutor(
            slots,
            plan=plan,
            features_path=features_path,
            address=cfg.ray_address,
        )
    return LocalExecutor(slots, plan=plan)
