"""Run the trainer's member units on a Ray cluster (``executor: ray``), no shared filesystem.

- The feature arrays go into Ray's object store once per run; each task gets them zero-copy.
- Each task asks Ray for the CPUs (and GPU fraction) the hardware plan gives one member; Ray
  starts its workers with the sanitized BLAS/OpenMP variables (``runtime_env``).
- Tasks write into a temporary folder on their node and send everything home: progress events
  and checkpoints go to a small actor (:class:`RunSink`) on the launching machine as they
  happen, the finished model files come back as the task's result. The trainer writes them into
  the run folder, so events and artifacts look exactly like a local run's.
- A task whose node dies is retried by Ray (``max_retries``); the retry fetches the last
  checkpoint that reached the sink and continues from it.
- Fold evaluations need every member's model, which live on the launching machine: they run
  there, in the local executor's worker processes.

Ray is optional: without it, ``executor: ray`` is one line saying how to install it.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import tempfile
import time
import zipfile
from collections.abc import Collection
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from engine.errors import PloutosError
from engine.system.threads import apply_in_process, pool_settings
from engine.train.executors.base import Message, UnitKey, UnitTask
from engine.train.executors.local import LocalExecutor
from engine.train.units import MemberTask, train_member

INSTALL_HINT = (
    "executor 'ray' needs the ray package: pip install 'ploutos[ray]' (or pip install ray)"
)


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise PloutosError(INSTALL_HINT) from None
    return ray


def _pack(folder: Path) -> bytes:
    """A folder's files as one zip archive (checkpoints, finished member files)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, path.name)
    return buffer.getvalue()


def unpack(data: bytes, folder: Path) -> None:
    """Write the files of ``_pack`` into ``folder``, each atomically."""
    from engine import atomic

    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            atomic.write_bytes(folder / Path(name).name, archive.read(name))


class RunSink:
    """Ray actor on the launching machine: collects events and checkpoints, answers "stop?"."""

    def __init__(self) -> None:
        self.events: list[tuple[UnitKey, dict[str, Any]]] = []
        self.checkpoints: dict[UnitKey, bytes] = {}
        self.new_checkpoints: set[UnitKey] = set()
        self.stopping = False

    def report(self, key: UnitKey, event: dict[str, Any]) -> None:
        self.events.append((tuple(key), event))

    def checkpoint(self, key: UnitKey, data: bytes, new: bool = True) -> None:
        self.checkpoints[tuple(key)] = data
        if new:
            self.new_checkpoints.add(tuple(key))

    def checkpoint_of(self, key: UnitKey) -> bytes | None:
        return self.checkpoints.get(tuple(key))

    def drain(self) -> tuple[list[Any], dict[UnitKey, bytes]]:
        """Events since the last drain, and the checkpoints that arrived since then."""
        events, self.events = self.events, []
        fresh = {key: self.checkpoints[key] for key in self.new_checkpoints}
        self.new_checkpoints = set()
        return events, fresh

    def stop(self) -> None:
        self.stopping = True

    def should_stop(self) -> bool:
        return self.stopping


def run_member_on_ray(
    task_data: dict[str, Any],
    features: Any,
    prices: Any,
    tradable: Any,
    timestamps: Any,
    opens: Any,
    vwaps: Any,
    meta: dict[str, Any],
    sink: Any,
) -> dict[str, Any]:
    """The body of one Ray task: one member, in a temporary folder of whatever node runs it."""
    import ray

    from engine.features.compute import FeatureSet

    apply_in_process(1)  # belt and braces: the worker was started with the sanitized variables
    task = MemberTask(**task_data)
    key = task.key
    work = Path(tempfile.mkdtemp(prefix="ploutos-member-"))
    try:
        local = replace(
            task, member_dir=str(work / "member"), checkpoint_dir=str(work / "checkpoint")
        )
        previous = ray.get(sink.checkpoint_of.remote(key))
        if previous:
            unpack(previous, Path(local.checkpoint_dir))
        fs = FeatureSet(
            features=features,
            prices=prices,
            timestamps=timestamps,
            tradable=tradable,
            opens=opens,
            vwaps=vwaps,
            tickers=tuple(meta["tickers"]),
            feature_names=tuple(meta["feature_names"]),
        )
        context = ray.get_runtime_context()
        node = f"{os.uname().nodename}/{context.get_node_id()[:8]}"
        state = {"stop": False, "asked": 0.0}

        def report(event: dict[str, Any]) -> None:
            if event.get("type") == "member_started":
                event = {**event, "node": node}
            sink.report.remote(key, event)

        def should_stop() -> bool:
            now = time.monotonic()
            if not state["stop"] and now - state["asked"] >= 1.0:
                state["asked"] = now
                state["stop"] = bool(ray.get(sink.should_stop.remote()))
            return state["stop"]

        def on_checkpoint(folder: Path) -> None:
            ray.get(sink.checkpoint.remote(key, _pack(folder)))

        result = train_member(local, report, should_stop, features=fs, on_checkpoint=on_checkpoint)
        result["node"] = node
        if result["status"] == "finished":
            result["files"] = _pack(Path(local.member_dir))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


class RayExecutor:
    """The :class:`~engine.train.executors.base.Executor` on Ray: members as Ray tasks, fold
    evaluations in a :class:`LocalExecutor` on this machine."""

    MAX_RETRIES = 3

    def __init__(
        self,
        max_parallel: int,
        *,
        plan: dict[str, Any],
        features_path: str,
        address: str | None = None,
    ) -> None:
        from engine.features.cache import open_features

        ray = require_ray()
        self.ray = ray
        self.max_parallel = max(1, int(max_parallel))
        # ray.init installs its own SIGTERM/SIGINT handlers (they raise SystemExit in the middle
        # of whatever runs): keep the trainer's, which checkpoint and stop gracefully.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        if not ray.is_initialized():
            ray.init(
                address=address,
                runtime_env={"env_vars": pool_settings(1)},
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
            )
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        fs = open_features(features_path)
        # Once per run, not once per task: every task gets these refs.
        self.refs = [
            ray.put(a)
            for a in (fs.features, fs.prices, fs.tradable, fs.timestamps, fs.opens, fs.vwaps)
        ]
        self.meta = {"tickers": list(fs.tickers), "feature_names": list(fs.feature_names)}
        # The sink lives on the launching machine's node: losing a worker node must not lose it.
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        self.sink = (
            ray.remote(num_cpus=0)(RunSink)
            .options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
            .remote()
        )
        cpus = 1 + int(plan.get("torch_threads", 1))
        # A share of one GPU per unit: as many units per GPU as the plan put on its busiest one
        # (Ray then gives each task its GPU through CUDA_VISIBLE_DEVICES).
        per_gpu = max((int(n) for _i, n in plan.get("gpu_slots") or ()), default=self.max_parallel)
        gpus = 1.0 / max(1, per_gpu) if plan.get("device") == "cuda" else 0
        self.remote = ray.remote(
            num_cpus=cpus, num_gpus=gpus, max_retries=self.MAX_RETRIES, retry_exceptions=False
        )(run_member_on_ray)
        self.local = LocalExecutor(self.max_parallel, plan=plan)
        self._running: dict[UnitKey, UnitTask] = {}
        self._members: dict[Any, MemberTask] = {}  # object ref -> task

    def has_room(self) -> bool:
        return len(self._running) < self.max_parallel

    def running_keys(self) -> Collection[UnitKey]:
        return tuple(self._running)

    def submit(self, task: UnitTask) -> None:
        if not isinstance(task, MemberTask):
            self.local.submit(task)
            self._running[task.key] = task
            return
        checkpoint = Path(task.checkpoint_dir)
        if (checkpoint / "checkpoint.zip").exists():
            # A resumed run: the sink is new, the last checkpoint is in the run folder.
            self.ray.get(self.sink.checkpoint.remote(task.key, _pack(checkpoint), False))
        ref = self.remote.remote(asdict(task), *self.refs, self.meta, self.sink)
        self._members[ref] = task
        self._running[task.key] = task

    def _write_checkpoints(self, checkpoints: dict[UnitKey, bytes]) -> None:
        for key, data in checkpoints.items():
            task = self._members_by_key().get(tuple(key))
            if task is not None:
                unpack(data, Path(task.checkpoint_dir))

    def _members_by_key(self) -> dict[UnitKey, MemberTask]:
        return {t.key: t for t in self._members.values()}

    def poll(self, timeout: float) -> list[Message]:
        ray = self.ray
        out: list[Message] = []
        local_out = self.local.poll(timeout=0.05) if self.local.running_keys() else []
        for message in local_out:
            out.append(message)
            if message.kind in ("result", "error"):
                self._running.pop(message.key, None)
        refs = list(self._members)
        done: list[Any] = []
        if refs:
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        elif not local_out:
            time.sleep(timeout)
        events, checkpoints = ray.get(self.sink.drain.remote())
        self._write_checkpoints(checkpoints)
        for key, event in events:
            out.append(Message("event", tuple(key), event))
        for ref in done:
            task = self._members.pop(ref)
            self._running.pop(task.key, None)
            try:
                result = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - a task that failed for good
                message = f"{type(err).__name__}: {err}".splitlines()[0][:500]
                out.append(Message("error", task.key, {"error": message}))
                continue
            files = result.pop("files", None)
            if files is not None:
                unpack(files, Path(task.member_dir))
                result["model"] = str(Path(task.member_dir) / "model.zip")
            out.append(Message("result", task.key, result))
        return out

    def signal_all(self, signum: int) -> None:
        self.local.signal_all(signum)
        if signum == signal.SIGKILL:
            for ref in self._members:
                self.ray.cancel(ref, force=True)
        else:
            self.sink.stop.remote()

    def close(self) -> None:
        self.local.close()
        if self.ray.is_initialized():
            self.ray.shutdown()
