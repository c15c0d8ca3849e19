"""``make_executor``: the executor a run's config asks for; Ray is imported only when asked for.

Its own module (not ``base``, which the implementations import, nor the package ``__init__``, which
stays import-free) so that no module imports one that imports it back.
"""

from __future__ import annotations

from typing import Any

from engine.config import PloutosConfig
from engine.train.executors.base import Executor
from engine.train.executors.local import LocalExecutor


def make_executor(cfg: PloutosConfig, plan: dict[str, Any], features_path: str) -> Executor:
    """The executor the config asks for, sized by the plan."""
    if cfg.executor == "ray":
        from engine.train.executors.ray import RayExecutor

        return RayExecutor(
            int(plan["parallel_members"]),
            plan=plan,
            features_path=features_path,
            address=cfg.ray_address,
        )
    return LocalExecutor(int(plan["parallel_members"]))
