"""The one owner of worker-process start-up: the multiprocessing contexts, the forkserver preload
lists and the parent-death request.

Python has one forkserver per process, and its preload list is fixed when the first forkserver
process starts: whichever context below starts it first decides what it has imported. A feature
build starts it only while other threads run (the panel, whose trainers are separate processes);
``ploutos train`` builds features single-threaded (``fork``) before its trainer starts the
forkserver, so the trainer's workers always get :data:`TRAINER_PRELOAD`.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import threading

# Modules the training workers' forkserver imports once; each unit then forks from it in
# milliseconds instead of importing torch and SB3 (seconds) itself.
TRAINER_PRELOAD: tuple[str, ...] = (
    "torch",
    # torch.optim imports dynamo lazily on the first optimizer: 2.6 s per worker.
    "torch._dynamo",
    "stable_baselines3",
    "sb3_contrib",
    "engine.train.units",
    "engine.train.callback",
    "engine.train.executors.local",
    # the workers attach to the cached features and fit the normalizer (cache imports compute)
    "engine.features.cache",
    "engine.features.normalize",
    "engine.env.vec_env",
    "engine.train.plan",
    "engine.evaluation.evaluate",
    "engine.evaluation.montecarlo",
    # last: it ties the forkserver's life to the trainer's (see that module)
    "engine.system.forkserver_init",
)

# The feature build's pool workers need only the module their jobs live in.
FEATURES_PRELOAD: tuple[str, ...] = ("engine.features.compute",)

_TRAINER_CONTEXT: mp.context.BaseContext | None = None


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (Linux only; no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def trainer_context() -> mp.context.BaseContext:
    """The training workers' context: a forkserver that has :data:`TRAINER_PRELOAD` imported."""
    global _TRAINER_CONTEXT
    if _TRAINER_CONTEXT is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(TRAINER_PRELOAD))
        _TRAINER_CONTEXT = ctx
    return _TRAINER_CONTEXT


def pool_context() -> mp.context.BaseContext:
    """How the feature build's pool workers start.

    ``fork`` when this process runs a single Python thread on Linux: workers then inherit NumPy and
    pandas already imported (milliseconds instead of ~0.7 s of imports each), and with one thread
    no lock can be held by another thread at fork time. Otherwise (a panel's worker thread, a
    multi-threaded trainer) ``forkserver``, which forks from a clean single-threaded server.
    """
    methods = mp.get_all_start_methods()
    if sys.platform == "linux" and "fork" in methods and threading.active_count() == 1:
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(FEATURES_PRELOAD))
        return ctx
    return mp.get_context("spawn")
