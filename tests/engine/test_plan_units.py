"""The plan sizes the units in flight from every (fold, member) unit of the run, not the ensemble.

The folds come from the dataset when it exists, else from an estimate on ``data.start..end`` that
must agree with ``make_folds``; the machine's bounds (CPUs, RAM, VRAM, thread limits) still bind
when they are lower, and a resumed run's executor never holds more slots than it has units left.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from engine.cli import main
from engine.config import WalkForwardConfig
from engine.errors import ConfigError
from engine.system.limits import ThreadLimits
from engine.train.executors.factory import executor_slots
from engine.train.folds import estimate_fold_count, make_folds
from engine.train.plan import HardwarePlan, MachineInfo, format_plan, resolve_plan

ROOT = Path(__file__).resolve().parents[2]
V8 = ROOT / "config" / "training_config_v8.yaml"
GiB = 1024**3


def machine(cpus: int, ram_gib: float, **kw) -> MachineInfo:
    return MachineInfo(usable_cpus=cpus, host_cpus=cpus, ram_total_bytes=int(ram_gib * GiB), **kw)


def plan_cli(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def hourly(start: str, end: str) -> np.ndarray:
    """int64[time] UTC microseconds: one bar every hour from ``start`` 00:00 to ``end`` (excl.),
    so the first bar is on ``start`` and the last one ends at ``end``'s midnight."""
    stamps = pd.date_range(start, end, freq="h", tz="UTC", inclusive="left")
    return stamps.as_unit("us").asi8.astype(np.int64)


# --------------------------------------------------------------------------- the real config


@pytest.mark.parametrize("gpu", ["", ",gpu=24G"])
def test_the_real_config_on_a_rented_server_trains_more_than_its_ensemble_at_once(
    tmp_path, monkeypatch, capsys, gpu
):
    monkeypatch.chdir(tmp_path)  # no ./data/dataset_v8 here: the folds are estimated
    plan = plan_cli(capsys, "--config", str(V8), "--assume", f"cpus=256,ram=1T{gpu}")
    folds = estimate_fold_count(dt.date(2019, 1, 1), None, WalkForwardConfig(train_years=5))
    assert folds >= 5  # 2019-01 .. 2026-12, 5-year windows stepped by 6 months; more later
    assert plan["inputs"]["folds"] == folds and plan["inputs"]["units"] == 5 * folds
    assert plan["device"] == ("cuda" if gpu else "cpu")
    assert plan["parallel_members"] > 5
    assert plan["parallel_members"] == 5 * folds  # the units bind: 256 cores, 1 TB, 24 GB hold them
    why = plan["reasons"]["parallel_members"]
    assert f"the run has {5 * folds} units ({folds} folds x 5 members; folds estimated from " in why
    assert "data.start..end 2019-01-01.." in why and why.endswith("limited by the units")
    if gpu:
        assert "VRAM allows" in why
    else:
        # spare cores still go to torch: 25 units x (1 + 8) threads fit in 256 cores
        assert plan["parallel_members"] * (1 + plan["torch_threads"]) <= 256


def test_the_old_cap_at_the_ensemble_is_kept_for_a_one_fold_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "one_fold.yaml"
    text = V8.read_text()
    assert "  expanding: false\n" in text
    cfg.write_text(text.replace("  expanding: false\n", "  expanding: false\n  max_folds: 1\n"))
    base = ["--config", str(cfg), "--assume", "cpus=256,ram=1T"]
    auto = plan_cli(capsys, *base)
    assert auto["inputs"]["folds"] == 1 and auto["parallel_members"] == 5
    assert "5 units (1 fold x 5 members; folds estimated" in auto["reasons"]["parallel_members"]
    turbo = plan_cli(capsys, *base, "--hardware", "turbo", "--force")
    assert turbo["parallel_members"] == 5
    assert turbo["reasons"]["parallel_members"].startswith(
        "profile 'turbo' sets 20, capped by the run's 5 units (1 fold x 5 members; folds estimated"
    )


def test_a_fixed_value_below_the_units_is_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    plan = plan_cli(
        capsys, "--config", str(V8), "--assume", "cpus=256,ram=1T,gpu=24G", "--hardware", "turbo"
    )
    assert plan["inputs"]["units"] >= 25 and plan["parallel_members"] == 20
    assert plan["reasons"]["parallel_members"] == "profile 'turbo' sets 20"


def test_the_text_plan_names_the_units_in_the_parallel_members_row(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["plan", "--config", str(V8), "--assume", "cpus=256,ram=1T"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the table's wrapping
    match = re.search(
        r"parallel_members (\d+) auto: .*? the run has (\d+) units \((\d+) folds", text
    )
    assert match, text
    assert int(match[1]) == int(match[2]) == 5 * int(match[3]) >= 25
    # the head is as it was (the panel's launch form shows it at 80x24)
    assert text.startswith(
        "Hardware plan: profile 'auto' for ensemble 5, recurrent_ppo, net 512x512x512, obs size "
        "unknown Hardware file:"
    )


# --------------------------------------------------------------------------- folds of a dataset


def test_with_the_dataset_built_the_plan_counts_its_real_folds(tmp_path, monkeypatch, capsys):
    from engine.features.cache import load_or_build_features
    from engine.train.folds import walk_forward_folds
    from engine.train.prepare import plan_for, resolved_config

    data = tmp_path / "demo"
    assert main(["dataset", "demo", "--out", str(data), "--start", "2023-01-01"]) == 0
    cfg_path = tmp_path / "cfg.yaml"
    # data.start says 2015: an estimate would find far more folds than the dataset holds
    cfg_path.write_text(
        f"dataset_path: {data}\ndata: {{source: synthetic-demo, tickers: [SYNA], start: "
        "2015-01-01}\ntraining: {ensemble: 3}\nwalk_forward: {train_years: 0.5, test_months: 2, "
        "step_months: 2, embargo_days: 1}\n"
    )
    cfg = resolved_config(cfg_path)
    fs = load_or_build_features(cfg.dataset_path, cfg.features)
    real = len(walk_forward_folds(fs.timestamps, cfg.walk_forward, str(cfg_path)))
    plan = plan_for(cfg, "auto", 100, machine(256, 1024), source=str(cfg_path))
    assert 1 < real < estimate_fold_count(dt.date(2015, 1, 1), None, cfg.walk_forward)
    assert plan.inputs["folds"] == real and plan.inputs["folds_note"] == ""
    assert plan.parallel_members == 3 * real
    why = plan.reasons["parallel_members"]
    assert f"the run has {3 * real} units ({real} folds x 3 members) -> " in why
    # a caller that has cut the folds already passes their count
    assert plan_for(cfg, "auto", 100, machine(256, 1024), folds=2).parallel_members == 6


def test_a_config_without_data_or_dataset_assumes_one_fold_and_says_so(tmp_path):
    from engine.train.prepare import plan_for, resolved_config

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(f"dataset_path: {tmp_path / 'none'}\ntraining: {{ensemble: 4}}\n")
    plan = plan_for(resolved_config(cfg_path), "auto", 100, machine(256, 1024))
    assert plan.inputs["folds"] is None and plan.parallel_members == 4
    assert "4 units (1 fold x 4 members; no dataset at " in plan.reasons["parallel_members"]
    assert "and no data.start: one fold assumed)" in plan.reasons["parallel_members"]


def test_no_fold_fitting_is_a_warning_and_one_unit(tmp_path):
    from engine.train.prepare import plan_for, resolved_config

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        f"dataset_path: {tmp_path / 'none'}\ndata: {{tickers: [AAPL], start: 2024-01-01, "
        "end: 2025-01-01}\n"
    )
    plan = plan_for(resolved_config(cfg_path), "auto", 100, machine(256, 1024))
    assert plan.inputs["folds"] == 0 and plan.parallel_members == 1
    warned = [w for w in plan.warnings if w.startswith("no walk-forward fold fits the data")]
    assert warned and "(folds estimated from data.start..end 2024-01-01..2025-01-01)" in warned[0]


# --------------------------------------------------------------------------- the estimate


WALK_FORWARDS = [
    # (data start, data end, walk_forward settings)
    ("2019-01-01", "2026-12-01", dict(train_years=5, embargo_days=5, test_months=6, step_months=6)),
    ("2018-01-01", "2024-12-31", dict(train_years=2, test_months=6, step_months=6, max_folds=2)),
    ("2018-01-01", "2024-12-31", dict(train_years=2, test_months=6, step_months=6)),
    (
        "2020-03-15",
        "2024-02-29",
        dict(train_years=1.5, embargo_days=0, test_months=3, step_months=4),
    ),
    ("2016-07-01", "2025-01-01", dict(train_years=3, test_months=6, step_months=6, expanding=True)),
    (
        "2021-01-31",
        "2024-08-31",
        dict(train_years=0.5, embargo_days=10, test_months=1, step_months=1),
    ),
    ("2019-01-01", "2024-07-06", dict(train_years=5, embargo_days=5, test_months=6, step_months=6)),
    ("2019-01-01", "2024-07-05", dict(train_years=5, embargo_days=5, test_months=6, step_months=6)),
]


@pytest.mark.parametrize(("start", "end", "settings"), WALK_FORWARDS)
def test_the_fold_estimate_matches_make_folds_on_an_hourly_axis(start, end, settings):
    wf = WalkForwardConfig(allow_overlapping_tests=True, **settings)
    ts = hourly(start, end)
    try:
        real = len(
            make_folds(
                ts,
                train_years=wf.train_years,
                embargo_days=wf.embargo_days,
                test_months=wf.test_months,
                step_months=wf.step_months,
                expanding=wf.expanding,
                max_folds=wf.max_folds,
            )
        )
    except ConfigError:  # not even one fold fits
        real = 0
    assert estimate_fold_count(dt.date.fromisoformat(start), dt.date.fromisoformat(end), wf) == (
        real
    )


def test_the_boundary_configs_sit_on_both_sides_of_one_fold():
    """The last two cases above differ by a day and by one fold: the estimate is not loose."""
    wf = WalkForwardConfig(train_years=5, embargo_days=5, test_months=6, step_months=6)
    assert estimate_fold_count("2019-01-01", "2024-07-06", wf) == 1
    assert estimate_fold_count("2019-01-01", "2024-07-05", wf) == 0


def test_the_fold_estimate_matches_make_folds_on_random_configs():
    rng = np.random.default_rng(20261201)
    for _ in range(25):
        start = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1500)))
        end = start + dt.timedelta(days=int(rng.integers(200, 3000)))
        test_months = int(rng.integers(1, 9))
        wf = WalkForwardConfig(
            train_years=float(rng.choice([0.5, 1, 1.5, 2, 3, 5])),
            embargo_days=int(rng.integers(0, 20)),
            test_months=test_months,
            step_months=int(rng.integers(test_months, 13)),
            expanding=bool(rng.integers(0, 2)),
            max_folds=None if rng.random() < 0.7 else int(rng.integers(1, 4)),
        )
        ts = hourly(start.isoformat(), end.isoformat())
        try:
            real = len(
                make_folds(
                    ts,
                    train_years=wf.train_years,
                    embargo_days=wf.embargo_days,
                    test_months=wf.test_months,
                    step_months=wf.step_months,
                    expanding=wf.expanding,
                    max_folds=wf.max_folds,
                )
            )
        except ConfigError:
            real = 0
        assert estimate_fold_count(start, end, wf) == real, (start, end, wf)


def test_an_open_ended_data_range_ends_today():
    wf = WalkForwardConfig(train_years=5, embargo_days=5, test_months=6, step_months=6)
    # 2019-01-01 .. 2026-12-01: the last fold trains from 2021-05-26, the fifth from 2019-05-26
    assert estimate_fold_count("2019-01-01", None, wf, today=dt.date(2026, 12, 1)) == 5
    assert estimate_fold_count("2019-01-01", None, wf, today=dt.date(2027, 6, 1)) == 6
    assert estimate_fold_count("2019-01-01", "2026-12-01", wf) == 5


# --------------------------------------------------------------------------- the other bounds


def test_cpus_bind_when_they_allow_fewer_than_the_units():
    plan = resolve_plan("auto", ensemble=5, folds=5, machine=machine(16, 1024))
    assert plan.parallel_members == 8 and plan.torch_threads == 1
    why = plan.reasons["parallel_members"]
    assert why.endswith(
        "the run has 25 units (5 folds x 5 members) -> 8 at once, limited by the CPUs"
    )


def test_ram_binds_when_it_allows_fewer_than_the_units():
    plan = resolve_plan(
        "auto", ensemble=5, folds=5, machine=machine(256, 1024, ram_limit_bytes=8 * GiB)
    )
    assert 1 <= plan.parallel_members < 25
    why = plan.reasons["parallel_members"]
    assert why.endswith("limited by the RAM") and "cgroup limit" in why and "25 units" in why


def test_the_thread_limit_binds_when_it_allows_fewer_than_the_units():
    limits = ThreadLimits(ulimit_u=None, pids_max=200, threads_max=None)
    plan = resolve_plan(
        "auto", ensemble=10, folds=10, machine=machine(256, 1024, thread_limits=limits)
    )
    assert 1 <= plan.parallel_members < 100
    assert plan.reasons["parallel_members"].endswith("limited by the thread limit")
    assert plan.planned_threads <= 200 - 32  # under the limit minus its safety margin


def test_vram_binds_when_it_allows_fewer_than_the_units():
    from engine.train.plan import GpuInfo

    gpu = (GpuInfo(0, "small GPU", 8 * GiB),)
    plan = resolve_plan(
        "auto",
        ensemble=10,
        folds=10,
        net_arch=(512, 512, 512),
        obs_size=2000,
        machine=machine(256, 1024, gpus=gpu, cuda_usable=True),
    )
    assert plan.device == "cuda" and 1 <= plan.parallel_members < 100
    assert plan.reasons["parallel_members"].endswith("limited by the VRAM")


# --------------------------------------------------------------------------- runs and old plans


def test_a_resumed_run_holds_no_more_slots_than_units_left():
    plan = {"parallel_members": 25}
    assert executor_slots(plan) == 25
    assert executor_slots(plan, pending_units=40) == 25
    assert executor_slots(plan, pending_units=7) == 7
    assert executor_slots(plan, pending_units=0) == 1  # still room to evaluate nothing, cleanly


def test_make_executor_is_sized_by_the_pending_units():
    from engine.train.executors.factory import make_executor

    cfg = SimpleNamespace(executor="local", ray_address=None)
    assert make_executor(cfg, {"parallel_members": 25}, "", pending_units=3).max_parallel == 3
    assert make_executor(cfg, {"parallel_members": 25}, "").max_parallel == 25


def test_plans_written_before_folds_were_counted_still_read_and_print():
    fixtures = sorted((ROOT / "tests" / "tui" / "fixtures" / "runs").glob("*/plan.json"))
    assert fixtures
    for path in fixtures:
        data = json.loads(path.read_text())
        assert "folds" not in data.get("inputs", {})
        plan = HardwarePlan.from_dict(data)
        assert plan.parallel_members == data["parallel_members"]
        assert format_plan(plan).startswith("Hardware plan: profile ")
