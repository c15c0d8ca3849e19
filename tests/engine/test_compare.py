"""Runs side by side (engine.runs.compare): config differences as dotted keys, the figures each
run is compared on, and the measured rate a new run's wall time is projected from.

The values are checked by hand against the recorded fixtures (tests/tui/fixtures/runs) and the
hand-written judged run of :mod:`tests.engine.test_view_verdict`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.api import MISSING, RunFolder, compare_runs, measured_rate
from engine.runs.compare import config_differences, flatten, run_figures
from tests.engine.test_view_verdict import RUN_ID, judged_run_events, write_run

FIXTURES = Path(__file__).parents[1] / "tui" / "fixtures" / "runs"
FINISHED = "20261127-214826-demo-36cd"  # 4 units of 4,096 timesteps in 1.532+1.678+2.137+1.503 s
FAILED = "20261127-214949-demo-92b9"
STOPPED = "20261127-215016-demo-3df3"


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES, root)
    return root


# ---------------------------------------------------------------------- config differences
def test_flatten_gives_dotted_paths_with_lists_and_empty_mappings_as_leaves():
    config = {
        "a": 1,
        "training": {"gamma": 0.99, "net": [32, 32], "extra": {}},
        "x": {"y": {"z": 2}},
    }
    assert flatten(config) == {
        "a": 1,
        "training.gamma": 0.99,
        "training.net": [32, 32],
        "training.extra": {},
        "x.y.z": 2,
    }


def test_only_the_keys_that_differ_are_listed_with_each_value():
    a = {"training": {"learning_rate": 0.0003, "ensemble": 2, "net": [32, 32]}, "seed": 1}
    b = {"training": {"learning_rate": 0.001, "ensemble": 2, "net": [64, 64]}, "seed": 1.0}
    c = {"training": {"learning_rate": 0.0003, "ensemble": 2, "net": [32, 32]}, "new": True}
    assert config_differences([a, b, c]) == [
        ("new", [MISSING, MISSING, True]),
        ("seed", [1, 1.0, MISSING]),  # 1 and 1.0 are different values in a config
        ("training.learning_rate", [0.0003, 0.001, 0.0003]),
        ("training.net", [[32, 32], [64, 64], [32, 32]]),
    ]
    assert config_differences([a, a]) == []
    assert config_differences([]) == []


def test_compare_runs_diffs_the_run_folders_configs_and_names_an_unreadable_one(runs: Path):
    judged = write_run(runs, judged_run_events())
    text = (runs / FINISHED / "config.yaml").read_text()
    judged.config_path.write_text(text.replace("learning_rate: 0.0003", "learning_rate: 0.001"))
    (runs / STOPPED / "config.yaml").write_text("training: [unclosed\n")
    comparison = compare_runs(RunFolder(runs / r) for r in (FINISHED, RUN_ID, STOPPED))
    assert [r.run_id for r in comparison.runs] == [FINISHED, RUN_ID, STOPPED]
    assert comparison.differences == (("training.learning_rate", (0.0003, 0.001, None)),)
    assert list(comparison.config_errors) == [STOPPED]
    assert "config.yaml" in comparison.config_errors[STOPPED]
    assert comparison.fold_indices == [0, 1]


# ---------------------------------------------------------------------- figures
def test_figures_of_a_run_from_before_verdicts(runs: Path):
    fig = run_figures(RunFolder(runs / FINISHED))
    assert (fig.state, fig.config_source, fig.algorithm) == ("finished", "config/demo.yaml", "ppo")
    assert (fig.n_folds, fig.ensemble) == (2, 2)
    assert fig.loss_probability == 0.4475  # the pooled montecarlo event
    assert fig.beat_probability == {"cash": None, "always_long": None, "random": None}
    assert fig.verdict_line is None and fig.skill is None and fig.has_results
    assert sorted(fig.folds) == [0, 1]
    assert fig.folds[0]["oos_return"] == pytest.approx(-0.049868672042274076)
    assert fig.folds[0]["buy_and_hold_return"] == pytest.approx(0.04166769157902528)
    assert fig.folds[0]["loss_probability"] == 0.61  # the fold_00 montecarlo event
    assert fig.folds[1]["loss_probability"] == 0.285
    assert fig.folds[0]["matched_return"] is None


def test_figures_of_a_judged_run(tmp_path: Path):
    fig = run_figures(write_run(tmp_path, judged_run_events(skill=True, p_return=0.01)))
    assert fig.skill is True and fig.verdict_line.startswith("skill shown: timing p=0.01")
    assert fig.beat_probability == {"cash": 0.6, "always_long": 0.4, "random": 0.7}
    assert (fig.pooled_return, fig.pooled_buy_and_hold_return) == (0.0251, 0.031)
    assert fig.loss_probability == 0.4475
    fold1 = fig.folds[1]
    assert fold1["oos_return"] == 0.0123
    assert fold1["buy_and_hold_return"] == pytest.approx(0.021)
    assert fold1["matched_return"] == pytest.approx(0.01) and fold1["matched_exposure"] == 0.45
    assert fold1["beat_probability"]["cash"] == pytest.approx(0.551)
    assert fold1["loss_probability"] == pytest.approx(0.381)


def test_a_failed_run_keeps_its_folds_and_says_why(runs: Path):
    fig = run_figures(RunFolder(runs / FAILED))
    assert fig.state == "failed" and "injected fault" in fig.error
    assert fig.folds[1]["oos_return"] == pytest.approx(-0.018395360101917557)


def test_a_run_without_events_has_no_figures(tmp_path: Path):
    folder = RunFolder(tmp_path / "empty").create()
    folder.config_path.write_text("training: {}\n")
    fig = run_figures(folder)
    assert not fig.has_results and fig.folds == {} and fig.loss_probability is None


# ---------------------------------------------------------------------- measured rates
def test_the_rate_of_the_newest_finished_run_of_the_config_on_this_host(runs: Path):
    rate = measured_rate(runs, "config/demo.yaml", "ppo", host="vm")
    # FAILED and the newer runs are not finished: the finished one is used.
    assert rate is not None and rate.run_id == FINISHED
    assert (rate.units, rate.slots) == (4, 1)
    seconds = 1.532 + 1.678 + 2.137 + 1.503  # its member_finished elapsed_s
    assert rate.rate == pytest.approx(4 * 4096 / seconds)  # 2,391.8 timesteps/s
    # the same 4 units: 6.85 s one at a time; two at a time two rounds of 1.7125 s
    assert rate.projected_wall_s(4, 4096, 1) == pytest.approx(6.85)
    assert rate.projected_wall_s(4, 4096, 2) == pytest.approx(3.425)
    assert rate.projected_wall_s(3, 4096, 2) == pytest.approx(3.425)  # the third waits
    assert rate.projected_wall_s(0, 4096, 2) == 0.0


def test_the_newest_of_two_finished_runs_is_the_one_measured(runs: Path):
    newer = runs / "20261128-000000-demo-aaaa"
    shutil.copytree(runs / FINISHED, newer)
    events = []
    for line in (newer / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "member_finished":
            event["elapsed_s"] = 2.0  # 4 x 4096 / 8 s
        events.append(json.dumps(event))
    (newer / "events.jsonl").write_text("\n".join(events) + "\n")
    rate = measured_rate(runs, "config/demo.yaml", "ppo", host="vm")
    assert rate.run_id == newer.name and rate.rate == pytest.approx(2048.0)


@pytest.mark.parametrize(
    ("config", "algorithm", "host"),
    [
        ("config/demo.yaml", "ppo", "another-machine"),
        ("config/demo.yaml", "recurrent_ppo", "vm"),
        ("config/training_config_v8.yaml", "ppo", "vm"),
    ],
)
def test_no_rate_from_another_host_algorithm_or_config(runs: Path, config, algorithm, host):
    assert measured_rate(runs, config, algorithm, host=host) is None


def test_the_config_path_is_matched_as_a_file_not_as_text(runs: Path, monkeypatch):
    monkeypatch.chdir(runs.parent)
    Path("config").mkdir()
    assert measured_rate(runs, "./config/../config/demo.yaml", "ppo", host="vm").run_id == FINISHED
    assert measured_rate(runs, "config/demo.yaml", "ppo", host="vm") is not None
    assert measured_rate(runs / "none", "config/demo.yaml", "ppo", host="vm") is None
