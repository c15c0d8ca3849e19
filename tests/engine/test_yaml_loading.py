"""Hostile YAML in training configs and hardware.yaml: one ConfigError line naming the file.

Every YAML file goes through ``engine.config.read_yaml``; these pin what it refuses (a key given
twice, bytes that are not UTF-8, nesting deep enough to exhaust the composer's recursion, alias
bombs, self-referencing aliases) and what it still accepts (merge keys that repeat a key).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import MAX_YAML_DEPTH, load_config, read_yaml
from engine.errors import ConfigError
from engine.train.plan import MachineInfo, load_hardware_profiles, resolve_plan

ROOT = Path(__file__).resolve().parents[2]
GiB = 1024**3


def _bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs": ``width ** levels`` values from a file of ``levels + 2`` lines."""
    lines = ["dataset_path: x", f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines.append(f"data: {{tickers: *l{levels - 1}, start: 2020-01-01}}")
    return "\n".join(lines) + "\n"


CASES = [
    pytest.param(
        b"dataset_path: x\ntraining:\n  ensemble: 3\n  ent_coef: 0.1\n  ensemble: 5\n",
        r"bad\.yaml:5: duplicate key 'ensemble' at lines 3 and 5; keep only one$",
        id="duplicate-nested-key",
    ),
    pytest.param(
        b"dataset_path: x\ntraining: {}\ndataset_path: y\n",
        r"bad\.yaml:3: duplicate key 'dataset_path' at lines 1 and 3",
        id="duplicate-top-level-key",
    ),
    pytest.param(
        b"dataset_path: x\n# caf\xe9 in Latin-1\n",
        r"bad\.yaml:2: not UTF-8 text \(byte 0xe9\); save it as UTF-8$",
        id="latin-1",
    ),
    pytest.param(
        b"\xff\xfed\x00a\x00t\x00",
        r"bad\.yaml:1: not UTF-8 text \(byte 0xff\)",
        id="utf-16",
    ),
    pytest.param(
        b"dataset_path: x\ntraining: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
        rf"bad\.yaml:2: nested more than {MAX_YAML_DEPTH} levels deep",
        id="deep-flow-lists",
    ),
    pytest.param(
        b"dataset_path: x\ntraining: " + b"{a: " * 5_000 + b"1" + b"}" * 5_000 + b"\n",
        rf"bad\.yaml:2: nested more than {MAX_YAML_DEPTH} levels deep",
        id="deep-flow-mappings",
    ),
    pytest.param(
        b"dataset_path: x\nt:\n" + b"".join(b"  " * i + b"- \n" for i in range(1, 3_000)),
        r"bad\.yaml:\d+: nested more than",
        id="deep-block-lists",
    ),
    pytest.param(
        b"dataset_path: x\nloop: &a [1, *a]\n",
        r"bad\.yaml:2: an alias refers to the mapping or list that contains it",
        id="alias-cycle",
    ),
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_hostile_training_configs_are_one_line_naming_the_file(tmp_path, data, expected):
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml: expands to more than 100,000 values"):
        load_config(path)
    # Linear in the file: far below the time walking 9**9 values would take (generous bound).
    assert time.perf_counter() - started < 5.0


def test_merge_keys_and_repeated_anchors_are_still_accepted(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "base: &b {n_envs: 8, n_steps: 256}\n"
        "profiles:\n"
        "  a:\n    <<: *b\n    n_envs: 16\n"
        "  b: {<<: *b}\n"
        "  c: *b\n"
    )
    raw, _node = read_yaml(path)
    assert raw["profiles"]["a"] == {"n_envs": 16, "n_steps": 256}
    assert raw["profiles"]["b"] == raw["profiles"]["c"] == {"n_envs": 8, "n_steps": 256}
    # The same key in two different mappings is no duplicate.
    path.write_text("dataset_path: x\ntraining: {seed: 1}\nmonte_carlo: {seed: 2}\n")
    assert load_config(path).monte_carlo.seed == 2


HARDWARE = (ROOT / "config" / "hardware.yaml").read_bytes()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            HARDWARE.replace(b"    n_steps: 256\n", b"    n_steps: 256\n    n_envs: 64\n", 1),
            r"hardware\.yaml:\d+: duplicate key 'n_envs' at lines \d+ and \d+",
            id="duplicate-key",
        ),
        pytest.param(
            HARDWARE.replace(b"profiles:", b"profiles:  # \xe9t\xe9", 1),
            r"hardware\.yaml:\d+: not UTF-8 text \(byte 0xe9\)",
            id="latin-1",
        ),
        pytest.param(
            HARDWARE + b"deep: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
            r"hardware\.yaml:\d+: nested more than",
            id="deep",
        ),
    ],
)
def test_hostile_hardware_files_are_one_line_naming_the_file(tmp_path, data, expected):
    path = tmp_path / "hardware.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=expected) as err:
        load_hardware_profiles(path)
    assert "\n" not in str(err.value)
    machine = MachineInfo(usable_cpus=2, host_cpus=2, ram_total_bytes=8 * GiB)
    with pytest.raises(ConfigError, match=expected):
        resolve_plan("laptop", ensemble=2, machine=machine, hardware_file=path)


def test_config_check_on_a_duplicate_key_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("dataset_path: x\ntraining:\n  ent_coef: 0.01\n  ent_coef: 0.5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"ploutos: error: {path}:4: duplicate key 'ent_coef' at lines 3 and 4; keep only one\n"
    )
