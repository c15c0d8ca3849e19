"""The one place that decides BLAS/OpenMP thread settings, for new processes and inside this one.

Hundreds of workers that each start a BLAS pool of one thread per host core is how the old code
reached 32,768 threads (``OpenBLAS blas_thread_init: pthread_create failed``). Every launcher (CLI,
``start_training.sh``, the control panel, worker processes) takes its environment from
``sanitized_env``; a process that is already running caps its own pools with ``apply_in_process``;
a process that starts workers which copy its environment (spawn, forkserver) sets it around their
start with ``pool_environ``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = [
    "THREAD_VARS",
    "apply_in_process",
    "pool_environ",
    "pool_settings",
    "sanitized_env",
    "shell_exports",
]

THREAD_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
)


def pool_settings(threads: int = 1) -> dict[str, str]:
    """The variables that cap every BLAS/OpenMP pool at ``threads``."""
    return {name: str(threads) for name in THREAD_VARS}


def sanitized_env(base: dict[str, str] | None = None, threads: int = 1) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with every BLAS/OpenMP pool capped at ``threads``."""
    return {**(os.environ if base is None else base), **pool_settings(threads)}


@contextlib.contextmanager
def pool_environ(threads: int = 1) -> Iterator[None]:
    """``os.environ`` with every BLAS/OpenMP pool capped at ``threads`` inside the block, each
    variable restored after (removed where it was not set): processes started in the block
    (spawned workers, a forkserver and the workers it forks) copy the caps."""
    settings = pool_settings(threads)
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def apply_in_process(threads: int = 1) -> None:
    """Cap the pools of the current process (a worker that was not started with ``sanitized_env``).

    The variables cover libraries not loaded yet (and this process's children); they do nothing to
    a library already loaded, so loaded BLAS/OpenMP pools are limited live through threadpoolctl
    and torch is told directly.
    """
    os.environ.update(pool_settings(threads))
    if "numpy" in sys.modules or "torch" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def shell_exports(threads: int = 1) -> str:
    """``export OMP_NUM_THREADS=1`` lines, for ``eval "$(ploutos threads --shell)"``."""
    return "\n".join(f"export {name}={value}" for name, value in pool_settings(threads).items())
