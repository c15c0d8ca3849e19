"""Run preparation: the config with its overrides, the one config -> features -> observation
size -> plan path, the run folder created only once everything checks out, then the trainer.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engine import atomic
from engine.config import PloutosConfig, load_config
from engine.errors import PloutosError
from engine.runs.folder import RunFolder

if TYPE_CHECKING:
    from engine.train.plan import HardwarePlan

log = logging.getLogger("ploutos.trainer")


def resolved_config(
    config_path: str | Path,
    *,
    ensemble: int | None = None,
    algorithm: str | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
) -> PloutosConfig:
    """The config file with command-line overrides applied and validated like the file itself."""
    cfg = load_config(config_path)
    training = cfg.training.model_dump(mode="json")
    if ensemble is not None:
        training["ensemble"] = ensemble
    if algorithm is not None:
        training["algorithm"] = algorithm
    data = cfg.model_dump(mode="json")
    data["training"] = training
    if executor is not None:
        data["executor"] = executor
    if ray_address is not None:
        data["ray_address"] = ray_address
    try:
        return PloutosConfig.model_validate(data)
    except Exception as err:  # pydantic ValidationError: name the flag
        raise PloutosError(f"{config_path}: command-line override rejected: {err}") from None


def plan_for(
    cfg: PloutosConfig,
    profile: str | None,
    obs_size: int | None,
    machine: Any = None,
    *,
    hardware_file: str | Path | None = None,
    force: bool = False,
    folds: int | None = None,
    source: str = "config",
    before_build: Callable[[], None] | None = None,
    overrides: Mapping[str, int | str | None] | None = None,
) -> HardwarePlan:
    """The hardware plan of a config (the one resolver, with this config's sizes); ``machine``
    defaults to this one, probed; ``hardware_file`` and ``force`` as in ``resolve_plan``.

    The plan sizes the units in flight from the run's ``folds x ensemble`` units. ``folds``: the
    run's fold count when the caller has cut them; None counts them here, as ``prepare_run``
    cuts them (``walk_forward_folds`` on the features' timestamps) when the dataset exists, else
    estimated from ``data.start``..``data.end`` (:func:`engine.train.folds.estimate_fold_count`),
    else not known (one fold assumed, said so). Overlapping test windows are counted here and
    refused by ``prepare_run``; a config where no fold fits plans 0 units with a warning.
    ``source`` names the config file in messages; ``before_build`` runs before the features
    are loaded to count the folds (built there on first use), as in ``dataset_observation_size``.
    ``overrides``: hardware settings replacing the profile's (as ``resolve_plan``). On this
    machine (``machine`` None) the calibration file is read for the torch threads
    (:mod:`engine.train.calibration`).
    """
    from engine.train import calibration
    from engine.train.plan import LstmShape, resolve_plan

    calibrations, calibration_note = calibration.load() if machine is None else (None, "")
    note = ""
    if folds is None:
        folds, note = _count_folds(cfg, source, before_build)
    return resolve_plan(
        profile or cfg.hardware_profile,
        ensemble=cfg.training.ensemble,
        algorithm=cfg.training.algorithm,
        net_arch=tuple(cfg.training.net_arch),
        obs_size=obs_size,
        machine=machine,
        hardware_file=hardware_file,
        force=force,
        folds=folds,
        folds_note=note,
        lstm=LstmShape.from_config(cfg.training.recurrent),
        overrides=overrides,
        calibrations=calibrations,
        calibration_note=calibration_note,
    )


def _count_folds(
    cfg: PloutosConfig, source: str, before_build: Callable[[], None] | None = None
) -> tuple[int | None, str]:
    """``plan_for``'s fold count and how it was found (see there); ``(None, why)`` if unknown."""
    from engine.data.store import manifest_path
    from engine.errors import ConfigError
    from engine.train.folds import estimate_fold_count, walk_forward_folds

    # Overlap is prepare_run's refusal; the plan still counts what the windows give.
    wf = cfg.walk_forward.model_copy(update={"allow_overlapping_tests": True})
    if manifest_path(cfg.dataset_path).exists():
        from engine.features.cache import load_or_build_features

        if before_build is not None:
            before_build()
        fs = load_or_build_features(cfg.dataset_path, cfg.features)
        try:
            return len(walk_forward_folds(fs.timestamps, wf, source)), ""
        except ConfigError:  # not even one fold fits the data
            return 0, f"the dataset at {cfg.dataset_path} has room for no fold"
    if cfg.data is None:
        return None, f"no dataset at {cfg.dataset_path} and no data.start: one fold assumed"
    end = cfg.data.end
    if end is None:
        import datetime as dt

        end = dt.datetime.now(dt.UTC).date()
    count = estimate_fold_count(cfg.data.start, end, wf)
    return count, f"folds estimated from data.start..end {cfg.data.start}..{end}" + (
        "" if cfg.data.end is not None else ", end = today"
    )


def observation_size(cfg: PloutosConfig, features_shape: tuple[int, ...]) -> int:
    """The policy's input size: the lookback window of every feature, the weights, the cash."""
    _t, n_tickers, n_features = features_shape
    return cfg.env.lookback * n_tickers * n_features + n_tickers + 1


def dataset_observation_size(
    cfg: PloutosConfig, before_build: Callable[[], None] | None = None
) -> int | None:
    """The observation size of ``cfg`` on its dataset's features (built on first use, then read
    from the cache); None while the dataset does not exist yet. ``before_build`` runs just before
    the features are loaded (a panel readies its subprocess helpers there)."""
    from engine.data.store import manifest_path
    from engine.features.cache import load_or_build_features

    if not manifest_path(cfg.dataset_path).exists():
        return None
    if before_build is not None:
        before_build()
    fs = load_or_build_features(cfg.dataset_path, cfg.features)
    return observation_size(cfg, fs.features.shape)


def prepare_run(
    config_path: str | Path,
    *,
    profile: str | None = None,
    ensemble: int | None = None,
    algorithm: str | None = None,
    run_dir: str | Path | None = None,
    runs_root: str | Path | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    hardware_file: str | Path | None = None,
    force: bool = False,
) -> RunFolder:
    """Validate everything, then create the run folder; nothing is trained yet.

    Every check that can fail (config, dataset, folds, plan, thread limits) runs before the folder
    exists, so a refused run leaves nothing behind.
    """
    from engine.evaluation.trials import config_hash
    from engine.features.cache import load_or_build_features
    from engine.runs.events import utc_stamp
    from engine.runs.folder import default_runs_root, new_run_id
    from engine.system.limits import machine_threads, thread_limits
    from engine.train.folds import walk_forward_folds
    from engine.train.plan import check_thread_limits

    cfg = resolved_config(
        config_path,
        ensemble=ensemble,
        algorithm=algorithm,
        executor=executor,
        ray_address=ray_address,
    )
    if cfg.executor == "ray":
        from engine.train.executors.ray import require_ray

        require_ray()
    fs = load_or_build_features(cfg.dataset_path, cfg.features)
    folds = walk_forward_folds(fs.timestamps, cfg.walk_forward, str(config_path))
    plan = plan_for(
        cfg,
        profile,
        observation_size(cfg, fs.features.shape),
        hardware_file=hardware_file,
        force=force,
        folds=len(folds),
    )
    check_thread_limits(plan, thread_limits(), machine_threads())
    root = (
        Path(run_dir)
        if run_dir
        else Path(runs_root or default_runs_root()) / new_run_id(str(config_path))
    )
    folder = RunFolder(root).create()
    atomic.write_text(
        folder.config_path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    )
    atomic.write_json(folder.plan_path, plan.to_dict())
    atomic.write_json(folder.folds_path, [f.to_dict() for f in folds])
    atomic.write_json(
        folder.meta_path,
        {
            "run_id": folder.run_id,
            "config_source": str(config_path),
            "features_path": str(fs.path),
            "features_shape": list(fs.features.shape),
            # what the trial registry groups runs by, and what the trials were trained as
            "dataset_checksum": fs.meta.get("dataset_checksum"),
            "feature_key": fs.meta.get("key"),
            "config_hash": config_hash(cfg.model_dump(mode="json")),
            "created": utc_stamp(),
            "host": socket.gethostname(),
        },
    )
    folder.write_status({"run_id": folder.run_id, "state": "starting"})
    return folder


def run_training(folder: RunFolder, echo: Callable[[str], None] | None = None) -> int:
    """Run or continue the run in ``folder`` in this process (its workers are child processes).

    A run with no ``run_started`` event yet starts; any other continues: finished members and
    folds are kept, interrupted members continue from their last checkpoint.
    """
    from engine.runs.events import read_events
    from engine.train.orchestrator import Trainer

    _setup_file_log(folder)
    events, _ = read_events(folder.events_path)
    started = any(e.get("type") == "run_started" for e in events)
    return Trainer(folder, echo=echo).run(resumed=started)


def _setup_file_log(folder: RunFolder) -> None:
    folder.logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
