"""The local executor: each unit in its own worker process on this machine (a crash in one member
cannot take the others down), forked from the trainer's forkserver (``procs.trainer_context``),
which has torch and stable-baselines3 already imported.

On a cuda plan with ``gpu_slots`` each worker gets one GPU (:class:`GpuSlots`: the least loaded
of the plan's GPUs) through ``CUDA_VISIBLE_DEVICES``, set in the worker before CUDA starts.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import signal
import traceback
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.system.limits import memory_hint
from engine.system.procs import die_with_parent, trainer_context
from engine.train.executors.base import Message, UnitKey, UnitTask
from engine.train.plan import unit_gpu_environ
from engine.train.units import UNITS, FoldTask, MemberTask, UnitStopped, task_from_dict


def _worker_main(
    kind: str, task_data: dict[str, Any], out: Any, environ: dict[str, str] | None = None
) -> None:
    die_with_parent()
    # Before anything touches CUDA (the forkserver imported torch but never started CUDA).
    os.environ.update(environ or {})
    # The parent is the forkserver, which exits when the trainer dies: a changed parent means
    # the trainer is gone.
    parent_pid = os.getppid()
    stop = {"flag": False, "abandon": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True
        # An evaluation keeps nothing: it ends at once, not at its next check (a Monte Carlo can
        # take minutes), so it cannot outlive a killed trainer and write a result nobody records.
        if stop["abandon"]:
            stop["abandon"] = False
            raise UnitStopped(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    task = task_from_dict(kind, task_data)
    key = task.key

    def should_stop() -> bool:
        # A parent that died without a signal reaching us (PDEATHSIG is Linux only) also stops us.
        return stop["flag"] or os.getppid() != parent_pid

    def report(event: dict[str, Any]) -> None:
        try:
            out.put(Message("event", key, event))
        except (OSError, ValueError):
            stop["flag"] = True

    try:
        stop["abandon"] = kind == "evaluate"
        try:
            result = UNITS[kind](task, report, should_stop)
        finally:
            stop["abandon"] = False
        out.put(Message("result", key, result))
    except UnitStopped:
        out.put(Message("result", key, {"status": "stopped"}))
    except BaseException as err:  # noqa: BLE001 - every failure must reach the trainer
        message = f"{type(err).__name__}: {err}".splitlines()[0][:500] + memory_hint(err)
        out.put(Message("error", key, {"error": message, "traceback": traceback.format_exc()}))
    finally:
        out.close()
        out.join_thread()


@dataclass
class _Running:
    """One submitted unit and its worker process; ``finished`` once its result or error came."""

    task: MemberTask | FoldTask
    process: Any
    finished: bool = False
    gpu: int | None = None


class GpuSlots:
    """Which GPU the next worker gets: of the plan's ``gpu_slots`` ``(index, units)``, the one
    whose share is least used (GPUs below their share first; ties to the lower index)."""

    def __init__(self, slots: Sequence[Sequence[int]]) -> None:
        self.share = {int(i): int(n) for i, n in slots}
        self.running = dict.fromkeys(self.share, 0)

    def take(self) -> int | None:
        """The GPU for one more worker, counted as running there; None without GPU slots."""
        if not self.share:
            return None
        free = [i for i in self.share if self.running[i] < self.share[i]] or list(self.share)
        gpu = min(free, key=lambda i: (self.running[i] / max(1, self.share[i]), i))
        self.running[gpu] += 1
        return gpu

    def release(self, gpu: int | None) -> None:
        if gpu is not None and self.running.get(gpu, 0) > 0:
            self.running[gpu] -= 1


class LocalExecutor:
    """Runs units in worker processes on this machine, at most ``max_parallel`` at once.

    ``plan``: the run's hardware plan (a dict); its ``gpu_slots`` place the workers on GPUs.
    """

    def __init__(self, max_parallel: int, plan: dict[str, Any] | None = None) -> None:
        self.max_parallel = max(1, int(max_parallel))
        self.ctx = trainer_context()
        self.queue = self.ctx.Queue()
        self._running: dict[UnitKey, _Running] = {}
        self.plan = dict(plan or {})
        on_gpu = self.plan.get("device") == "cuda"
        self.gpus = GpuSlots(self.plan.get("gpu_slots") or () if on_gpu else ())

    def worker_environ(self, gpu: int | None) -> dict[str, str]:
        """What a worker on ``gpu`` adds to its environment (nothing on cpu)."""
        return {} if gpu is None else unit_gpu_environ(self.plan, gpu)

    def has_room(self) -> bool:
        return len(self._running) < self.max_parallel

    def running_keys(self) -> Collection[UnitKey]:
        return tuple(self._running)

    def submit(self, task: UnitTask) -> None:
        if not isinstance(task, (MemberTask, FoldTask)):
            raise TypeError(f"not a unit task: {task!r}")
        data = {k: v for k, v in asdict(task).items()}
        gpu = self.gpus.take()
        process = self.ctx.Process(
            target=_worker_main,
            args=(task.kind, data, self.queue, self.worker_environ(gpu)),
            name=f"ploutos-{task.kind}-{task.key[1]}-{task.key[2]}",
            daemon=False,
        )
        try:
            process.start()
        except (EOFError, ConnectionError) as err:
            self.gpus.release(gpu)
            # The forkserver died: with an address-space limit that is the preload of torch
            # running out of memory (its traceback went to our stderr, the pipe says only EOF).
            hint = memory_hint(MemoryError())
            if hint:
                raise MemoryError(
                    f"cannot allocate memory for the worker processes: their forkserver, which "
                    f"loads torch and stable-baselines3, died{hint}"
                ) from err
            raise RuntimeError(
                "the worker processes' forkserver died; its traceback is in the trainer's output"
            ) from err
        except BaseException:
            self.gpus.release(gpu)
            raise
        self._running[task.key] = _Running(task, process, gpu=gpu)

    def poll(self, timeout: float) -> list[Message]:
        """Messages from workers; a worker that died without saying so becomes an ``error`` with
        its exit code."""
        out: list[Message] = []
        try:
            out.append(self.queue.get(timeout=timeout))
            while True:
                out.append(self.queue.get_nowait())
        except queue_mod.Empty:
            pass
        for kind, key, _payload in out:
            if kind in ("result", "error") and key in self._running:
                self._running[key].finished = True
        for key, run in list(self._running.items()):
            if run.process.is_alive():
                continue
            run.process.join()
            if not run.finished:
                # Give the queue's feeder a moment: a result may still be in flight.
                try:
                    while True:
                        msg = self.queue.get(timeout=0.5)
                        out.append(msg)
                        if msg.kind in ("result", "error") and msg.key in self._running:
                            self._running[msg.key].finished = True
                except queue_mod.Empty:
                    pass
            if not run.finished:
                code = run.process.exitcode
                error = {"error": f"worker process exited with code {code}"}
                out.append(Message("error", key, error))
            self.gpus.release(run.gpu)
            del self._running[key]
        return out

    def close(self) -> None:
        """Nothing to release: worker processes end with their unit."""

    def signal_all(self, signum: int) -> None:
        for run in self._running.values():
            if run.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.process.pid, signum)
