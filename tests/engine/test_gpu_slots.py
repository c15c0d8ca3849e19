"""Units spread over every GPU: the plan's VRAM bound sums the GPUs, ``gpu_slots`` deals the
units in flight over them, the local executor gives each worker the least loaded GPU through
``CUDA_VISIBLE_DEVICES``; and the memory estimates read the config's LSTM shape."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.cli import main
from engine.errors import ConfigError
from engine.train.executors.local import GpuSlots
from engine.train.plan import (
    GpuInfo,
    HardwarePlan,
    LstmShape,
    MachineInfo,
    assumed_machine,
    member_ram_bytes,
    member_vram_bytes,
    resolve_plan,
    unit_gpu_environ,
)

GiB = 1024**3
ROOT = Path(__file__).resolve().parents[2]


def gpu_machine(*mems_gib: float, cpus: int = 256) -> MachineInfo:
    gpus = tuple(GpuInfo(i, f"GPU{i}", int(m * GiB)) for i, m in enumerate(mems_gib))
    return MachineInfo(
        usable_cpus=cpus, host_cpus=cpus, ram_total_bytes=1024 * GiB, gpus=gpus, cuda_usable=True
    )


def plan_on(machine: MachineInfo, **kw) -> HardwarePlan:
    args = {"ensemble": 5, "folds": 5, "net_arch": (512, 512, 512), "obs_size": 556}
    return resolve_plan("auto", machine=machine, **{**args, **kw})


# --------------------------------------------------------------------------- the plan


def test_four_gpus_hold_four_times_the_units_of_one_and_share_them_evenly():
    one = plan_on(gpu_machine(8), ensemble=10, folds=10)
    four = plan_on(gpu_machine(8, 8, 8, 8), ensemble=10, folds=10)
    assert one.batch_size == four.batch_size  # the same units, so the comparison is fair
    each = member_vram_bytes(one.batch_size, (512, 512, 512), 556, "ppo")
    per_gpu = int(0.9 * 8 * GiB) // each
    assert one.parallel_members == per_gpu and one.gpu_slots == ((0, per_gpu),)
    assert four.parallel_members == 4 * per_gpu < 100
    assert four.gpu_slots == tuple((i, per_gpu) for i in range(4))
    assert four.reasons["parallel_members"].endswith("limited by the VRAM")
    assert f"VRAM allows {4 * per_gpu} = 4 x (0.9 x 8.0 GiB" in four.reasons["parallel_members"]


def test_units_fewer_than_the_room_are_dealt_round_robin():
    plan = plan_on(gpu_machine(24, 24, 24, 24))  # 25 units, room for more
    assert plan.parallel_members == 25
    assert plan.gpu_slots == ((0, 7), (1, 6), (2, 6), (3, 6))
    assert "25 units over 4 usable GPUs (GPU 0: 7, GPU 1: 6" in plan.reasons["gpu_slots"]
    assert not any("shares GPU" in w for w in plan.warnings)


def test_a_smaller_gpu_gets_only_what_its_memory_holds():
    plan = plan_on(gpu_machine(80, 2), ensemble=10, folds=10)
    small = dict(plan.gpu_slots).get(1, 0)
    each = member_vram_bytes(plan.batch_size, (512, 512, 512), 556, "ppo")
    assert small == int(0.9 * 2 * GiB) // each < dict(plan.gpu_slots)[0]
    assert sum(n for _i, n in plan.gpu_slots) == plan.parallel_members


def test_a_cpu_plan_has_no_gpu_slots_and_plans_round_trip_them():
    cpu = plan_on(MachineInfo(usable_cpus=16, host_cpus=16, ram_total_bytes=64 * GiB))
    assert cpu.device == "cpu" and cpu.gpu_slots == ()
    gpu = plan_on(gpu_machine(24, 24))
    again = HardwarePlan.from_dict(json.loads(gpu.to_json()))
    assert again == gpu and again.gpu_slots == ((0, 13), (1, 12))


def test_the_command_line_plans_several_assumed_gpus(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no dataset here: folds estimated from the config's dates
    v8 = str(ROOT / "config" / "training_config_v8.yaml")
    args = ["plan", "--config", v8, "--assume", "cpus=256,ram=1T,gpu=24G,gpus=4"]
    assert main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["device"] == "cuda" and len(plan["machine"]["gpus"]) == 4
    assert plan["parallel_members"] > 5
    assert sum(n for _i, n in plan["gpu_slots"]) == plan["parallel_members"]
    assert main(args) == 0
    assert "gpu slots" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "says"),
    [("cpus=8,ram=1T,gpus=2", "gpus=N needs gpu=SIZE"), ("cpus=8,ram=1T,gpu=8G,gpus=0", "gpus")],
)
def test_a_bad_gpu_count_is_one_clear_line(spec, says):
    with pytest.raises(ConfigError, match=says):
        assumed_machine(spec)


# --------------------------------------------------------------------------- the workers


def test_each_worker_gets_the_least_loaded_gpu_and_gives_it_back():
    slots = GpuSlots([(0, 2), (1, 1), (3, 1)])
    taken = [slots.take() for _ in range(4)]
    assert taken == [0, 1, 3, 0]
    slots.release(1)
    assert slots.take() == 1  # the freed GPU, not a third unit on GPU 0
    assert slots.take() == 0  # all full (a resumed run may hold more): still the least loaded
    assert GpuSlots([]).take() is None


def test_the_worker_environment_names_one_gpu_the_way_cuda_counts_them():
    plan = {"machine": {"gpus": [{"index": 2}, {"index": 5}]}}
    # No restriction: NVML's index, in NVML's (PCI bus) order.
    assert unit_gpu_environ(plan, 5, {}) == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "5",
    }
    # The user restricted the trainer: the worker gets the user's own entry for that GPU.
    user = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa, GPU-bbbb"}
    assert unit_gpu_environ(plan, 5, user) == {"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}
    with pytest.raises(ConfigError, match="GPU 7 of the plan is not among"):
        unit_gpu_environ(plan, 7, user)


def test_the_local_executor_places_workers_only_on_a_cuda_plan():
    from engine.train.executors.local import LocalExecutor

    machine = {"gpus": [{"index": 0}, {"index": 1}]}
    cuda = LocalExecutor(
        2, plan={"device": "cuda", "gpu_slots": [[0, 1], [1, 1]], "machine": machine}
    )
    assert cuda.worker_environ(cuda.gpus.take())["CUDA_VISIBLE_DEVICES"] in ("0", "1")
    cpu = LocalExecutor(2, plan={"device": "cpu", "gpu_slots": [[0, 1]], "machine": machine})
    assert cpu.gpus.take() is None and cpu.worker_environ(None) == {}


# --------------------------------------------------------------------------- the LSTM shape


def test_the_memory_estimates_read_the_configs_lstm():
    default = LstmShape()
    big = LstmShape(hidden=1024, layers=2)
    shared = LstmShape(critic_lstm=False)
    ram = [member_ram_bytes(64, 512, 556, "recurrent_ppo", "cpu", s) for s in (default, big)]
    assert ram[1] - ram[0] == 2 * 64 * 512 * 4 * 4 * (2 * 1024 - 256)  # 4 states a step, x2 copies
    vram = {
        name: member_vram_bytes(4096, (64, 64), 556, "recurrent_ppo", s)
        for name, s in (("default", default), ("big", big), ("shared", shared))
    }
    assert vram["big"] > vram["default"] > vram["shared"]
    # One LSTM of the default shape is 4 x (556 x 256 + 256 x 256 + 2 x 256) weights.
    assert default.params(556) == 4 * (556 * 256 + 256 * 256 + 512)
    assert big.params(556) == 4 * (556 * 1024 + 1024 * 1024 + 2048) + 4 * (2 * 1024 * 1024 + 2048)


def test_the_config_lstm_reaches_the_plan(tmp_path):
    from engine.train.prepare import plan_for, resolved_config

    text = (ROOT / "config" / "demo.yaml").read_text()
    assert "  algorithm: ppo\n" in text
    config = tmp_path / "lstm.yaml"
    config.write_text(
        text.replace(
            "  algorithm: ppo\n",
            "  algorithm: recurrent_ppo\n  recurrent:\n    lstm_hidden_size: 64\n"
            "    n_lstm_layers: 2\n",
        )
    )
    cfg = resolved_config(config)
    machine = assumed_machine("cpus=4,ram=16G")
    plan = plan_for(cfg, "laptop", 556, machine, folds=1)
    assert plan.inputs["lstm"] == {"hidden": 64, "layers": 2, "critic_lstm": True}
    ppo = plan_for(resolved_config(ROOT / "config" / "demo.yaml"), "laptop", 556, machine, folds=1)
    assert ppo.inputs["lstm"] is None


# --------------------------------------------------------------------------- end to end


@pytest.mark.timeout(600)
def test_a_run_on_two_gpus_starts_each_member_on_its_own_gpu(demo_config, tmp_path):
    """A real demo run whose plan puts one unit on each of two GPUs: every worker reports the
    GPU the executor gave it, and no two members ever trained on one GPU at once. (This machine
    has no CUDA: SB3 falls back to the CPU, which leaves the placement itself to be checked.)"""
    from engine.runs.events import read_events
    from engine.train.prepare import prepare_run, run_training

    folder = prepare_run(demo_config(), profile="laptop", runs_root=tmp_path / "runs")
    plan = json.loads(folder.plan_path.read_text())
    plan.update(
        device="cuda",
        parallel_members=2,
        gpu_slots=[[0, 1], [1, 1]],
        machine={**plan["machine"], "gpus": [{"index": 0}, {"index": 1}]},
    )
    folder.plan_path.write_text(json.dumps(plan))
    env = {k: os.environ.pop(k) for k in ("CUDA_VISIBLE_DEVICES",) if k in os.environ}
    try:
        assert run_training(folder) == 0
    finally:
        os.environ.update(env)
    events = read_events(folder.events_path)[0]
    started = [e for e in events if e["type"] == "member_started"]
    assert len(started) == 4  # 2 folds x 2 members
    assert {e["gpu_env"]["CUDA_DEVICE_ORDER"] for e in started} == {"PCI_BUS_ID"}
    assert {e["gpu_env"]["CUDA_VISIBLE_DEVICES"] for e in started} == {"0", "1"}
    on_gpu: dict[str, int] = {}
    gpu_of: dict[tuple[int, int], str] = {}
    for e in events:
        key = (e.get("fold"), e.get("member"))
        if e["type"] == "member_started":
            gpu = gpu_of[key] = e["gpu_env"]["CUDA_VISIBLE_DEVICES"]
            on_gpu[gpu] = on_gpu.get(gpu, 0) + 1
            assert on_gpu[gpu] == 1, f"two members on GPU {gpu} at once"
        elif e["type"] in ("member_finished", "member_failed", "member_stopped"):
            on_gpu[gpu_of[key]] -= 1
