"""Torch threads from a measurement: the calibration file, the plan's choice from it, and a real
``ploutos plan --calibrate`` on the demo config."""

from __future__ import annotations

import json

from engine.cli import main
from engine.train import calibration
from engine.train.plan import MachineInfo, resolve_plan

GiB = 1024**3
SHAPE = {"net_arch": (512, 512, 512), "obs_size": 556}


def machine(cpus: int) -> MachineInfo:
    return MachineInfo(usable_cpus=cpus, host_cpus=cpus, ram_total_bytes=1024 * GiB)


def entry_for(plan, rates: dict[int, float], cpus: int) -> dict:
    """A calibration entry for ``plan``'s unit shape with per-unit rates by torch threads."""
    key = calibration.unit_key(
        usable_cpus=cpus,
        algorithm="ppo",
        net_arch=SHAPE["net_arch"],
        lstm=None,
        obs_size=SHAPE["obs_size"],
        n_envs=plan.n_envs,
        n_steps=plan.n_steps,
        batch_size=plan.batch_size,
    )
    splits = [
        {"torch_threads": t, "units": cpus // (1 + t), "per_unit_fps": r, "aggregate_fps": 0.0}
        for t, r in rates.items()
    ]
    return {"key": key, "measured_at": "2026-12-01T12:00:00+00:00", "splits": splits}


def plan_with(cpus: int, units: int, entries) -> object:
    return resolve_plan(
        "auto", ensemble=units, folds=1, machine=machine(cpus), calibrations=entries, **SHAPE
    )


def test_the_split_with_the_most_timesteps_per_second_wins_for_the_run_planned():
    rule = plan_with(64, 64, [])
    assert "rule of thumb" in rule.reasons["torch_threads"]
    # Per-unit rates measured here: threads help each unit, but not in proportion.
    rates = {1: 100.0, 2: 180.0, 4: 250.0, 8: 300.0}
    entries = [entry_for(rule, rates, 64)]
    many = plan_with(64, 64, entries)
    estimates = {t: min(64, 64 // (1 + t)) * r for t, r in rates.items()}
    best = max(estimates, key=estimates.get)
    assert many.torch_threads == best == 2  # 21 x 180 = 3780 > 32 x 100, 12 x 250
    assert many.parallel_members == 64 // 3
    assert "calibrated here 2026-12-01" in many.reasons["torch_threads"]
    assert many.inputs["calibration"]["torch_threads"] == 2
    # The same calibration, a run of 4 units: cores are plenty, more threads per unit win.
    few = plan_with(64, 4, entries)
    assert few.torch_threads == 8 and few.parallel_members == 4


def test_a_calibration_of_another_shape_or_machine_is_not_used():
    rule = plan_with(64, 64, [])
    entry = entry_for(rule, {1: 100.0, 8: 10_000.0}, 64)
    other_cpus = plan_with(32, 64, [entry])
    assert "not calibrated for this unit shape" in other_cpus.reasons["torch_threads"]
    wrong = dict(entry, key={**entry["key"], "torch": "0.0"})
    assert "rule of thumb" in plan_with(64, 64, [wrong]).reasons["torch_threads"]
    assumed = plan_with(64, 64, None)
    assert "the machine is assumed" in assumed.reasons["torch_threads"]


def test_the_file_keeps_the_newest_entry_per_key_and_a_bad_file_is_ignored(tmp_path):
    path = tmp_path / "c" / "calibration.json"
    a = {"key": {"n": 1}, "best": {"torch_threads": 1}}
    calibration.save(a, path)
    calibration.save({"key": {"n": 2}, "best": {"torch_threads": 4}}, path)
    calibration.save({"key": {"n": 1}, "best": {"torch_threads": 2}}, path)
    entries, note = calibration.load(path)
    assert note == "" and [e["best"]["torch_threads"] for e in entries] == [4, 2]
    path.write_text("{not json")
    entries, note = calibration.load(path)
    assert entries == [] and "is not a calibration" in note and str(path) in note
    calibration.save(a, path)  # a broken file is replaced whole
    assert json.loads(path.read_text()) == {"calibrations": [a]}


def test_candidates_leave_a_core_for_the_env_stepping_thread():
    assert calibration.candidates(2) == (1,)
    assert calibration.candidates(5) == (1, 2, 4)
    assert calibration.candidates(256) == (1, 2, 4, 8, 16)


def test_calibrate_measures_real_units_and_the_next_plan_uses_it(demo_config, capsys):
    from engine.bench.calibrate import calibrate

    config = demo_config()
    entry = calibrate(config, profile="auto", threads=(1, 2))
    assert [s["torch_threads"] for s in entry["splits"]] == [1, 2]
    for split in entry["splits"]:
        assert split["units"] >= 1 and split["per_unit_fps"] > 0 and split["aggregate_fps"] > 0
    assert entry["best"] in entry["splits"]
    capsys.readouterr()
    assert main(["plan", "--config", str(config), "--hardware", "auto", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["device"] == "cpu"  # this machine has no GPU: the test is about CPU units
    assert "calibrated here" in plan["reasons"]["torch_threads"]
    assert plan["torch_threads"] in (1, 2)
    assert plan["inputs"]["calibration"]["torch_threads"] == plan["torch_threads"]


def test_calibrate_refuses_an_assumed_machine_in_one_line(demo_config, capsys):
    args = ["plan", "--config", str(demo_config()), "--calibrate", "--assume", "cpus=8,ram=8G"]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ploutos: error: --calibrate measures this machine; it cannot be combined with --assume"
    ]
