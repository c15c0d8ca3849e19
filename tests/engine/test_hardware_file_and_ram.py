"""Which hardware file a plan reads (and says it read), and turbo plans beyond the RAM.

Order: ``--hardware-file``, else ``config/hardware.yaml`` in the working directory, else the
packaged copy. A fixed ``parallel_members`` whose members need more RAM than the machine has is
refused unless forced.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.errors import ConfigError
from engine.train import plan as hardware
from engine.train.plan import (
    FROM_CWD,
    FROM_OPTION,
    FROM_PACKAGE,
    MachineInfo,
    format_plan,
    member_ram_bytes,
    resolve_plan,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ROOT / "config" / "hardware.yaml"
GiB = 1024**3
MINE = "profiles:\n  mine:\n    n_envs: 4\n    n_steps: 64\n    batch_size: 128\n    device: cpu\n"


def machine(cpus: int = 8, ram_gib: float = 64) -> MachineInfo:
    return MachineInfo(usable_cpus=cpus, host_cpus=cpus, ram_total_bytes=int(ram_gib * GiB))


def test_the_working_directorys_hardware_file_is_the_one_used_and_named(tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "hardware.yaml").write_text(MINE)
    monkeypatch.chdir(tmp_path)
    plan = resolve_plan("mine", ensemble=2, machine=machine())
    assert (plan.n_envs, plan.n_steps, plan.batch_size) == (4, 64, 128)
    here = str((tmp_path / "config" / "hardware.yaml").resolve())
    assert (plan.hardware_file, plan.hardware_file_from) == (here, FROM_CWD)
    # Shown relative to the working directory; plan.json keeps the absolute path.
    assert (
        format_plan(plan).splitlines()[1]
        == "Hardware file: config/hardware.yaml (working directory)"
    )
    assert hardware.default_hardware_file() == tmp_path.resolve() / "config" / "hardware.yaml"
    # The packaged profiles are not mixed in: the working directory's file is the whole truth.
    with pytest.raises(ConfigError, match=r"unknown hardware profile 'laptop'; available: mine"):
        resolve_plan("laptop", ensemble=2, machine=machine())


def test_an_explicit_file_beats_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "hardware.yaml").write_text(MINE)
    other = tmp_path / "other.yaml"
    other.write_text(MINE.replace("mine", "theirs"))
    monkeypatch.chdir(tmp_path)
    plan = resolve_plan("theirs", ensemble=2, machine=machine(), hardware_file=other)
    assert (plan.hardware_file, plan.hardware_file_from) == (str(other.resolve()), FROM_OPTION)
    # A missing explicit file is an error, never a silent fall back to another file.
    with pytest.raises(ConfigError, match=r"gone\.yaml: file not found"):
        resolve_plan("mine", ensemble=2, machine=machine(), hardware_file=tmp_path / "gone.yaml")


def test_without_a_local_file_the_packaged_default_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = resolve_plan("laptop", ensemble=2, machine=machine())
    assert (plan.hardware_file, plan.hardware_file_from) == (str(PACKAGED), FROM_PACKAGE)
    assert plan.to_dict()["hardware_file_from"] == FROM_PACKAGE


def test_turbo_beyond_the_ram_is_refused_with_the_numbers_unless_forced():
    small = machine(cpus=64, ram_gib=64)  # no GPU: turbo's 256 x 4096 rollout runs on cpu
    each = member_ram_bytes(256, 4096, hardware.DEFAULT_OBS_SIZE, "ppo", "cpu")
    budget = hardware.RAM_FRACTION * small.ram_bytes - hardware.RAM_RESERVE
    fits = int(budget // each)
    assert 1 <= fits < 20  # the premise: 20 members do not fit, some do
    with pytest.raises(ConfigError) as err:
        resolve_plan("turbo", ensemble=20, machine=small)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"hardware profile 'turbo': 20 parallel units x ~{each / GiB:.1f} GiB each = "
        f"~{20 * each / GiB:.1f} GiB of RAM, more than the ~{budget / GiB:.1f} GiB usable "
        "(0.85 x 64.0 GiB - 1.0 GiB reserve)"
    ), message
    assert f"lower parallel_members to {fits}" in message and "--force" in message

    forced = resolve_plan("turbo", ensemble=20, machine=small, force=True)
    assert forced.parallel_members == 20
    assert any("forced" in w and "20 parallel units" in w for w in forced.warnings)
    # As many members as fit are not refused, nor is auto (it sizes itself to the RAM).
    assert resolve_plan("turbo", ensemble=fits, machine=small).parallel_members == fits
    auto = resolve_plan("auto", ensemble=20, machine=small)
    auto_each = member_ram_bytes(auto.n_envs, auto.n_steps, hardware.DEFAULT_OBS_SIZE, "ppo", "cpu")
    assert auto.parallel_members * auto_each <= budget


def _write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"dataset_path: {tmp_path / 'no-dataset-here'}\n")
    return cfg


def test_plan_cli_names_its_hardware_file_and_refuses_turbo_beyond_ram(
    tmp_path, monkeypatch, capsys
):
    cfg = _write_config(tmp_path)
    hw = tmp_path / "hw.yaml"
    hw.write_text(PACKAGED.read_text())
    monkeypatch.chdir(tmp_path)
    base = ["plan", "--config", str(cfg), "--assume", "cpus=16,ram=16G", "--ensemble", "4"]

    assert main([*base, "--hardware", "laptop", "--hardware-file", str(hw), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["hardware_file"], plan["hardware_file_from"]) == (str(hw.resolve()), FROM_OPTION)
    assert main([*base, "--hardware", "laptop"]) == 0
    assert f"Hardware file: {PACKAGED} ({FROM_PACKAGE})" in capsys.readouterr().out

    assert main([*base, "--hardware", "turbo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ploutos: error: hardware profile 'turbo': 4 parallel units x ")
    assert err.count("\n") == 1 and "--force" in err
    assert main([*base, "--hardware", "turbo", "--force", "--json"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert forced["parallel_members"] == 4 and any("forced" in w for w in forced["warnings"])


def test_train_refuses_turbo_beyond_ram_before_any_run_folder(tmp_path, monkeypatch, capsys):
    """`train` resolves the same plan (same file, same refusal), and `--force` reaches it."""
    from engine import cli
    from engine.train import prepare

    data = tmp_path / "demo"
    assert main(["dataset", "demo", "--out", str(data), "--start", "2023-01-01"]) == 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"dataset_path: {data}\nwalk_forward: {{train_years: 0.5, test_months: 2, "
        "step_months: 2, embargo_days: 1}\n"
    )
    monkeypatch.setattr(hardware, "probe_machine", lambda *a, **k: machine(16, 16))
    monkeypatch.setattr(prepare, "run_training", lambda folder, echo=None: 0)
    monkeypatch.setattr(cli, "_sanitize_threads", lambda: None)  # keep this process's environ
    hw = tmp_path / "hw.yaml"
    hw.write_text(PACKAGED.read_text())
    runs = tmp_path / "runs"
    args = ["train", "--config", str(cfg), "--runs-dir", str(runs), "--hardware", "turbo"]
    args += ["--ensemble", "4", "--hardware-file", str(hw)]
    capsys.readouterr()
    assert main(args) == 2
    assert "hardware profile 'turbo'" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())

    assert main([*args, "--force"]) == 0
    (folder,) = runs.iterdir()
    plan = json.loads((folder / "plan.json").read_text())
    # the run's units are its folds x 4 members: turbo's 20 is capped at them, if fewer
    n_folds = len(json.loads((folder / "folds.json").read_text()))
    assert n_folds > 1 and plan["inputs"]["folds"] == n_folds
    assert plan["hardware_file"] == str(hw.resolve())
    assert plan["parallel_members"] == min(20, 4 * n_folds)
    assert any("forced" in w for w in plan["warnings"])


def test_no_hardware_file_anywhere_says_how_to_give_one(tmp_path, monkeypatch):
    """A wheel install has no repository copy: the error names both places and the option."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hardware, "PACKAGED_HARDWARE_FILE", tmp_path / "site" / "hardware.yaml")
    with pytest.raises(ConfigError) as err:
        resolve_plan("auto", ensemble=2, machine=machine())
    assert str(err.value) == (
        "no hardware file: none at config/hardware.yaml in the working directory and none "
        f"packaged at {tmp_path / 'site' / 'hardware.yaml'}; pass --hardware-file PATH"
    )
