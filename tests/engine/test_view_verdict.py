"""The verdict fields of a run (docs/results.md) as ``RunView``, ``ploutos status`` and its
``--json`` show them: kept from the ``fold_evaluated`` and ``verdict`` events, printed in the
status, never broken by a missing or odd-typed field, and absent for runs from before verdicts.

The event logs here are hand-written to the contract (every key the engine writes, values of our
choosing), so the readers are pinned before and independently of the engine that writes them.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.runs.folder import RunFolder
from engine.runs.view import RunView, fold_summary, plain_json, replay, verdict_payload
from tests.engine.event_lines import encode_lines

RUN_ID = "20270101-000000-demo-judg"
T0 = "2027-01-01T00:00:00.000Z"


# ---------------------------------------------------------------------- a judged run, by hand
def mc_stats(loss: float, median: float, mean: float, simulations: int = 200) -> dict[str, Any]:
    """Monte Carlo statistics with every key of ``MonteCarloStats.to_dict``."""
    return {
        "simulations": simulations,
        "loss_probability": loss,
        "mean": mean,
        "median": median,
        "std": 0.03,
        "var_95": median - 0.05,
        "cvar_95": median - 0.07,
        "max_drawdown_median": 0.04,
        "max_drawdown_p95": 0.09,
        "histogram": {"edges": [-0.1, 0.0, 0.1], "counts": [simulations // 2, simulations // 2]},
    }


def metrics(total_return: float, sharpe: float, n_bars: int = 860, **extra: Any) -> dict[str, Any]:
    """FoldMetrics keys (``oos``, ``buy_and_hold``, members)."""
    return {
        "total_return": total_return,
        "sharpe": sharpe,
        "max_drawdown": 0.05,
        "turnover": 12.5,
        "n_bars": n_bars,
        "final_equity": 1.0 + total_return,
        **extra,
    }


def judged_fold(
    fold: int,
    *,
    p_return: float = 0.43,
    fill: str = "next_open",
    oos_return: float = 0.0123,
    break_even_bps: float | None = 5.2,
) -> dict[str, Any]:
    """A ``fold_evaluated`` event with every key of the verdict contract."""
    shift = 0.001 * fold  # folds differ, so a test can tell which one is shown
    return {
        "ts": f"2027-01-01T00:0{fold + 1}:00.000Z",
        "type": "fold_evaluated",
        "fold": fold,
        "members_used": 2,
        "vote": "majority",
        "fill": fill,
        "fill_optimistic": fill == "close",
        "oos": metrics(oos_return, 0.8, mean_exposure=0.45),
        "buy_and_hold": metrics(0.02 + shift, 1.1),
        "buy_and_hold_matched": {**metrics(0.009 + shift, 1.0), "exposure": 0.45},
        "members": [metrics(0.007 + shift, 0.5), metrics(0.013 + shift, 0.9)],
        "cost_sensitivity": {
            "multipliers": [0, 1, 2, 4],
            "cost_bps": [0.0, 3.0, 6.0, 12.0],
            "total_return": [0.03 + shift, oos_return, -0.004, -0.038],
            "break_even_bps": break_even_bps,
            "break_even_note": None if break_even_bps is not None else "loses even at 0 bps",
        },
        "montecarlo": mc_stats(0.38 + shift, 0.011, 0.009),
        "montecarlo_kind": (
            "stationary block bootstrap of the test window's (features, next-bar return) pairs: "
            "the same market path resampled, not other markets"
        ),
        "nulls": {
            "cash": {
                "stats": mc_stats(0.0, 0.0, 0.0),
                "beat_probability": 0.55 + shift,
                "excess_mean": 0.009,
                "excess_median": 0.0044,
            },
            "always_long": {
                "stats": mc_stats(0.30, 0.021, 0.02),
                "beat_probability": 0.45,
                "excess_mean": -0.011,
                "excess_median": -0.016,
            },
            "random": {
                "stats": mc_stats(0.55, -0.012, -0.01),
                "beat_probability": 0.61,
                "excess_mean": 0.019,
                "excess_median": 0.015,
            },
        },
        "timing": {
            "p_return": p_return,
            "p_sharpe": 0.51,
            "permutations": 200,
            "block_bars": 20,
            "observed_return": oos_return,
            "observed_sharpe": 0.8,
            "null_return_median": 0.01,
        },
        "seed_dispersion": {
            "n": 2,
            "mean": 0.01 + shift,
            "std": 0.0042,
            "min": 0.007 + shift,
            "max": 0.013 + shift,
            "ci_low": -0.028,
            "ci_high": 0.048,
        },
        "elapsed_s": 3.5,
        "result_path": f"/runs/{RUN_ID}/results/fold_{fold:02d}.json",
    }


def verdict_event(
    *, skill: bool = False, p_return: float = 0.43, fill: str = "next_open"
) -> dict[str, Any]:
    """A ``verdict`` event with every key of the contract."""
    line = (
        f"skill shown: timing p={p_return}, PBO 0.21, deflated Sharpe 0.97, beats always-long in "
        "71 % of paths"
        if skill
        else f"skill not shown: timing p={p_return} (needs <= 0.05), PBO 0.62 (needs <= 0.5), "
        "deflated Sharpe 0.41 (needs >= 0.95), beats always-long in 45 % of paths"
    )
    return {
        "ts": "2027-01-01T00:09:00.000Z",
        "type": "verdict",
        "verdict": {
            "skill": skill,
            "line": line,
            "reasons": [
                f"timing skill: p={p_return} against the same bars shuffled",
                "overfitting: PBO 0.62 > 0.5",
                "deflated Sharpe: 0.41 < 0.95",
            ],
            "thresholds": {"alpha": 0.05, "min_deflated_sharpe": 0.95, "max_pbo": 0.5},
        },
        "pooled": {
            "oos_return": 0.0251,
            "sharpe": 0.82,
            "mean_exposure": 0.4,
            "buy_and_hold_return": 0.031,
            "nulls": {
                "cash": {
                    "beat_probability": 0.6,
                    "excess_mean": 0.008,
                    "excess_median": 0.0061,
                    "stats": mc_stats(0.0, 0.0, 0.0, 400),
                },
                "always_long": {
                    "beat_probability": 0.4,
                    "excess_mean": -0.012,
                    "excess_median": -0.0093,
                    "stats": mc_stats(0.28, 0.024, 0.022, 400),
                },
                "random": {
                    "beat_probability": 0.7,
                    "excess_mean": 0.021,
                    "excess_median": 0.0187,
                    "stats": mc_stats(0.57, -0.013, -0.011, 400),
                },
            },
            "timing": {"p_return": p_return, "p_sharpe": 0.3, "permutations": 200},
        },
        "overfitting": {
            "pbo": 0.62,
            "pbo_note": None,
            "pbo_splits": 16,
            "n_trials": 12,
            "n_runs": 3,
            "deflated_sharpe": 0.41,
            "sharpe_per_bar": 0.021,
            "sr0": 0.015,
            "reality_check_p": 0.3,
        },
        "seed_dispersion": {
            "n": 4,
            "mean": 0.012,
            "std": 0.011,
            "min": -0.01,
            "max": 0.03,
            "ci_low": -0.005,
            "ci_high": 0.029,
        },
        "fill": fill,
        "fill_optimistic": fill == "close",
    }


def judged_run_events(
    *, skill: bool = False, p_return: float = 0.43, fill: str = "next_open", verdict: bool = True
) -> list[dict[str, Any]]:
    """A whole two-fold, two-member run that ends judged (the verdict just before the end)."""
    events: list[dict[str, Any]] = [
        {
            "ts": T0,
            "type": "run_started",
            "run_id": RUN_ID,
            "config": "config/demo.yaml",
            "algorithm": "ppo",
            "n_folds": 2,
            "ensemble": 2,
            "total_timesteps": 4096,
            "plan": {"profile": "laptop"},
        }
    ]
    for fold in (0, 1):
        for member in (0, 1):
            events.append(
                {
                    "ts": f"2027-01-01T00:0{fold}:30.000Z",
                    "type": "member_finished",
                    "fold": fold,
                    "member": member,
                    "timesteps": 4096,
                }
            )
        events.append(judged_fold(fold, p_return=p_return, fill=fill))
        events.append(
            {
                "ts": f"2027-01-01T00:0{fold + 1}:01.000Z",
                "type": "montecarlo",
                "scope": f"fold_{fold:02d}",
                "fold": fold,
                "stats": mc_stats(0.38 + 0.001 * fold, 0.011, 0.009),
            }
        )
    events.append(
        {
            "ts": "2027-01-01T00:08:00.000Z",
            "type": "montecarlo",
            "scope": "pooled",
            "stats": mc_stats(0.4475, 0.0044, -0.0007, 400),
        }
    )
    if verdict:
        events.append(verdict_event(skill=skill, p_return=p_return, fill=fill))
    events.append({"ts": "2027-01-01T00:09:01.000Z", "type": "run_finished"})
    return events


def write_run(root: Path, events: list[dict[str, Any]], run_id: str = RUN_ID) -> RunFolder:
    """A finished run folder holding ``events`` (no trainer, no lock: what the readers read)."""
    folder = RunFolder(root / run_id).create()
    folder.config_path.write_text("training:\n  algorithm: ppo\n  ensemble: 2\n")
    folder.write_status({"run_id": run_id, "state": "finished"})
    folder.events_path.write_bytes(encode_lines(*events))
    return folder


def status_text(folder: RunFolder, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["status", folder.run_id, "--runs-dir", str(folder.root.parent)]) == 0
    return capsys.readouterr().out.splitlines()


def status_json(folder: RunFolder, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["status", folder.run_id, "--runs-dir", str(folder.root.parent), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------- RunView
def test_the_verdict_event_is_kept_and_reaches_the_status(tmp_path: Path):
    view = replay(write_run(tmp_path, judged_run_events()))
    assert view.skipped_events == 0 and view.state == "finished"
    assert view.verdict is not None
    assert view.verdict["verdict"]["skill"] is False
    assert view.verdict["overfitting"]["n_trials"] == 12
    assert view.fill == "next_open" and view.fill_optimistic is False
    status = view.to_status()
    json.dumps(status, allow_nan=False)  # what the trainer writes to status.json
    assert status["verdict"]["line"].startswith("skill not shown: timing p=0.43")
    assert status["fill"] == "next_open" and status["fill_optimistic"] is False
    assert status["pooled"]["timing"]["p_return"] == 0.43
    assert status["overfitting"]["pbo"] == 0.62
    assert status["seed_dispersion"]["ci_high"] == 0.029
    first = status["fold_results"][0]
    assert first["fold"] == 0 and first["oos_return"] == 0.0123
    assert first["matched_return"] == 0.009 and first["matched_exposure"] == 0.45
    assert first["beat_probability"] == {"cash": 0.55, "always_long": 0.45, "random": 0.61}
    assert first["timing_p_return"] == 0.43 and first["permutations"] == 200
    assert first["break_even_bps"] == 5.2
    assert first["seed_dispersion"]["n"] == 2 and type(first["seed_dispersion"]["n"]) is int
    # the folds' own fields stay on the stored event, whole
    assert view.folds_evaluated[1]["cost_sensitivity"]["multipliers"] == [0, 1, 2, 4]


def test_a_run_without_a_verdict_says_so_with_nulls(tmp_path: Path):
    view = replay(write_run(tmp_path, judged_run_events(verdict=False)))
    status = view.to_status()
    assert view.verdict is None
    assert [status[k] for k in ("verdict", "pooled", "overfitting", "seed_dispersion")] == [
        None
    ] * 4
    assert status["fill"] == "next_open"  # the folds say how orders filled


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "verdict: 'verdict' missing"), ("skill", "verdict: 'verdict' is not a valid object")],
)
def test_a_verdict_event_without_its_object_is_skipped_and_counted(value, reason):
    view = RunView()
    view.apply(verdict_event())
    bad = {**verdict_event(skill=True), "verdict": value}
    assert view.apply(bad) is False
    assert view.skipped_events == 1 and view.skip_reason == reason
    assert view.verdict["verdict"]["skill"] is False  # the earlier verdict stands


def test_odd_typed_objects_of_a_verdict_read_as_absent():
    event = {**verdict_event(), "pooled": [1, 2], "overfitting": "high", "fill": 3}
    event["fill_optimistic"] = "yes"
    payload = verdict_payload(event)
    assert payload["pooled"] is None and payload["overfitting"] is None
    assert payload["fill"] is None and payload["fill_optimistic"] is None
    assert payload["seed_dispersion"]["n"] == 4


def test_a_resumed_run_is_not_judged_until_its_new_verdict():
    view = RunView()
    for event in judged_run_events():
        view.apply(event)
    assert view.verdict is not None
    view.apply({"ts": "2027-01-02T00:00:00.000Z", "type": "run_resumed", "n_folds": 2})
    assert view.verdict is None and view.to_status()["verdict"] is None
    view.apply(verdict_event(skill=True, p_return=0.004))
    assert view.to_status()["verdict"]["skill"] is True


@pytest.mark.parametrize(
    ("fill", "flag", "optimistic"),
    [
        ("close", None, True),
        ("close", False, True),
        ("next_open", False, False),
        (None, None, None),
    ],
)
def test_close_fills_are_optimistic_whatever_the_flag_says(fill, flag, optimistic):
    view = RunView()
    event = judged_fold(0)
    event.pop("fill"), event.pop("fill_optimistic")
    if fill is not None:
        event["fill"] = fill
    if flag is not None:
        event["fill_optimistic"] = flag
    view.apply(event)
    assert view.fill == fill and view.fill_optimistic is optimistic
    assert fold_summary(event)["fill_optimistic"] is optimistic


def test_fold_summary_reads_the_result_file_shape_too():
    result = judged_fold(3)
    result["fold"] = {"index": 3, "train_rows": [0, 10], "test_rows": [10, 20]}
    assert fold_summary(result)["fold"] == 3


def test_fold_summary_of_an_older_fold_is_all_none():
    old = {"type": "fold_evaluated", "fold": 0, "oos": metrics(0.01, 0.5), "buy_and_hold": {}}
    summary = fold_summary(old)
    assert summary["oos_return"] == 0.01
    assert summary["beat_probability"] == {"cash": None, "always_long": None, "random": None}
    nones = {k for k, v in summary.items() if v is None}
    assert nones == set(summary) - {"fold", "oos_return", "sharpe", "beat_probability"}


ODD_VALUES = (None, "0.4", [], {}, [0.1], True, float("nan"), float("inf"), -1, 10**400, {"x": 1})


def _scramble(value: Any, rng: random.Random) -> Any:
    """``value`` with each leaf, and now and then a whole branch, replaced by an odd value."""
    if isinstance(value, dict):
        if rng.random() < 0.1:
            return rng.choice(ODD_VALUES)
        return {k: _scramble(v, rng) if k != "type" else v for k, v in value.items()}
    if isinstance(value, list):
        return [_scramble(v, rng) for v in value]
    return rng.choice(ODD_VALUES) if rng.random() < 0.5 else value


def test_odd_typed_fields_never_break_the_view_or_its_status():
    rng = random.Random(7)
    for _ in range(200):
        view = RunView()
        for event in judged_run_events():
            if event["type"] in ("fold_evaluated", "verdict"):
                event = _scramble(copy.deepcopy(event), rng)
            view.apply(event)
        status = view.to_status()
        json.dumps(status, allow_nan=False)
        for fold in status["fold_results"]:
            for key, value in fold.items():
                if key in ("fill", "break_even_note", "montecarlo_kind"):
                    assert value is None or isinstance(value, str)
                elif key == "beat_probability":
                    assert all(v is None or isinstance(v, float) for v in value.values())
                elif key == "seed_dispersion":
                    assert value is None or all(
                        v is None or type(v) is (int if k == "n" else float)
                        for k, v in value.items()
                    )
                elif key == "fill_optimistic":
                    assert value is None or isinstance(value, bool)
                else:
                    assert value is None or type(value) in (int, float), (key, value)


def test_plain_json_drops_what_json_cannot_hold():
    deep: Any = 0.5
    for _ in range(40):
        deep = [deep]
    data = {"a": float("nan"), "b": [1, float("-inf"), 10**400], 3: "int key", "c": deep}
    out = plain_json(data)
    assert out["a"] is None and out["b"] == [1, None, None] and 3 not in out
    json.dumps(out, allow_nan=False)


# ---------------------------------------------------------------------- ploutos status
def test_status_prints_fills_folds_pooled_overfitting_seeds_and_the_verdict_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    lines = status_text(write_run(tmp_path, judged_run_events()), capsys)
    new = lines[lines.index("  fills: next_open (the open of the bar after the decision)") :]
    assert len(new) == 7
    assert new[1] == (
        "  fold 0 judged: oos +1.23% | buy and hold +2.00% | exposure-matched buy and hold "
        "+0.90% (exposure 45%) | timing p 0.43 (return) | beats cash 55%, always-long 45%, "
        "random 61% of paths | break-even 5.2 bps per side"
    )
    assert new[2].startswith("  fold 1 judged: oos +1.23% | buy and hold +2.10%")
    assert new[3] == (
        "  pooled: oos +2.51% (Sharpe +0.82, exposure 40%) | buy and hold +3.10% | timing p 0.43 "
        "(return), 0.30 (Sharpe), 200 permutations | beats cash 60%, always-long 40%, random "
        "70% of paths"
    )
    assert new[4] == (
        "  overfitting: PBO 0.62 (CSCV, 16 splits), 12 trials in 3 runs | deflated Sharpe 0.41 "
        "(Sharpe +0.0210 vs SR0 +0.0150, per bar) | reality check p 0.30"
    )
    assert new[6] == (
        "  verdict: skill not shown: timing p=0.43 (needs <= 0.05), PBO 0.62 (needs <= 0.5), "
        "deflated Sharpe 0.41 (needs >= 0.95), beats always-long in 45 % of paths"
    )
    assert new[5] == (
        "  seed spread: members' oos return mean +1.20% (95% CI -0.50% to +2.90%), std 1.10%, "
        "min -1.00%, max +3.00%, n 4"
    )
    assert new[6] == lines[-1]  # the verdict comes last


def test_status_labels_close_fills_optimistic_and_small_p_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    events = judged_run_events(skill=True, p_return=0.004, fill="close")
    lines = status_text(write_run(tmp_path, events), capsys)
    assert "  fills: close (optimistic: fills at the close the agent just saw)" in lines
    assert "timing p 0.004 (return)" in lines[-5]
    assert lines[-1].startswith("  verdict: skill shown: timing p=0.004")


def test_status_of_a_run_from_before_verdicts_prints_nothing_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    events = judged_run_events(verdict=False)
    for event in events:  # strip each fold to what runs wrote before verdicts
        if event["type"] == "fold_evaluated":
            for key in list(event):
                if key not in ("ts", "type", "fold", "members_used", "oos", "buy_and_hold"):
                    del event[key]
    lines = status_text(write_run(tmp_path, events), capsys)
    assert not [line for line in lines if "judged" in line or "verdict" in line or "fills" in line]
    assert any("fold 1 out of sample" in line for line in lines)


def test_status_prints_question_marks_for_odd_fields_instead_of_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    events = judged_run_events()
    verdict = events[-2]
    verdict["verdict"] = {"skill": "maybe", "line": 7}
    verdict["pooled"] = {"oos_return": "big", "nulls": [1], "timing": {"p_return": True}}
    verdict["overfitting"] = {"pbo": None, "pbo_note": "fewer than 2 trials", "n_trials": 1.5}
    verdict["seed_dispersion"] = None
    fold_1 = [e for e in events if e["type"] == "fold_evaluated"][1]
    fold_1["cost_sensitivity"] = {
        "break_even_bps": None,
        "break_even_note": "profitable up to at least 200 bps",
    }
    fold_1["timing"] = "fast"
    lines = status_text(write_run(tmp_path, events), capsys)
    assert lines[-1] == "  verdict: ?"
    assert lines[-5].startswith("  fold 1 judged")
    assert lines[-5].endswith("| break-even profitable up to at least 200 bps")
    assert "timing p ? (return)" in lines[-5]
    assert lines[-4].startswith("  pooled: oos ? (Sharpe ?, exposure ?) | buy and hold ?")
    assert "PBO n/a (fewer than 2 trials), ? trials in ? runs" in lines[-3]
    assert lines[-2].startswith("  seed spread: members' oos return mean ? (95% CI ? to ?)")


def test_status_json_carries_the_verdict_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    status = status_json(write_run(tmp_path, judged_run_events(fill="next_vwap")), capsys)
    assert status["fill"] == "next_vwap" and status["fill_optimistic"] is False
    assert status["verdict"]["thresholds"] == {
        "alpha": 0.05,
        "min_deflated_sharpe": 0.95,
        "max_pbo": 0.5,
    }
    assert status["pooled"]["nulls"]["random"]["beat_probability"] == 0.7
    assert status["overfitting"]["n_runs"] == 3
    assert [f["fold"] for f in status["fold_results"]] == [0, 1]
