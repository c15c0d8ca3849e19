"""The run's ETA: measured unit rates, the plan's parallel slots, greedy scheduling of what is left;
and the worker pid/device a member_started names."""

from __future__ import annotations

import json

import pytest

from engine.runs.view import RunView, schedule_eta_s


def started(n_folds: int, ensemble: int, total: int, parallel: int | None) -> dict:
    plan = {"profile": "laptop"} | ({} if parallel is None else {"parallel_members": parallel})
    return {
        "ts": "2026-01-01T00:00:00.000Z",
        "type": "run_started",
        "run_id": "r",
        "n_folds": n_folds,
        "ensemble": ensemble,
        "total_timesteps": total,
        "plan": plan,
    }


def unit(kind: str, fold: int, member: int, **fields) -> dict:
    ts = "2026-01-01T00:00:01.000Z"
    return {"ts": ts, "type": kind, "fold": fold, "member": member, **fields}


def progress(fold: int, member: int, timesteps: int, fps: float, total: int) -> dict:
    return unit("member_progress", fold, member, timesteps=timesteps, total=total, fps=fps)


def view_of(*events: dict) -> RunView:
    view = RunView()
    for event in events:
        assert view.apply(event), event
    return view


def test_three_slots_three_running_and_seven_pending_by_hand():
    """10 units of 3,000 timesteps, 3 slots. Running: 0/0 at 100/s with 1,000 left (10 s),
    0/1 at 200/s with 1,000 left (5 s), 0/2 at 300/s with 3,000 left (10 s); the typical rate
    is their median, 200/s, so each of the 7 pending units takes 3,000 / 200 = 15 s.
    Slots free at 5, 10, 10: the pending units start at 5, 10, 10, 20, 25, 25, 35 and the last
    ends at 35 + 15 = 50 s. (Remaining over summed fps would say 26,000 / 600 = 43.3 s.)"""
    view = view_of(
        started(1, 10, 3000, parallel=3),
        progress(0, 0, 2000, 100.0, 3000),
        progress(0, 1, 2000, 200.0, 3000),
        progress(0, 2, 0, 300.0, 3000),
    )
    assert view.count("pending") == 7 and view.slots == 3
    assert view.unit_rate() == 200.0
    assert view.eta_s() == pytest.approx(50.0)


def test_the_tail_with_fewer_units_than_slots_counts_the_slowest_unit():
    """4 slots, one unit left running at 10/s with 1,000 to go, another at 1,000/s: the run ends
    when the slow one does (100 s), not when the summed rate would say (2,000 / 1,010 s)."""
    view = view_of(
        started(1, 2, 2000, parallel=4),
        progress(0, 0, 1000, 10.0, 2000),
        progress(0, 1, 1000, 1000.0, 2000),
    )
    assert view.eta_s() == pytest.approx(100.0)


def test_pending_units_only_with_finished_ones_rate():
    """Nothing runs (between folds, say): the finished units' timesteps over their elapsed time
    (median of 1,000 / 10 s and 800 / 4 s after resuming from 200: 100/s and 200/s -> 150/s).
    2 slots, 3 pending units of 1,200 left: 8 s, 8 s, then 8 s more: 16 s."""
    view = view_of(
        started(1, 5, 1200, parallel=2),
        unit("member_finished", 0, 0, timesteps=1000, elapsed_s=10.0, resumed_from=0),
        unit("member_finished", 0, 1, timesteps=1000, elapsed_s=4.0, resumed_from=200),
    )
    assert view.count("running") == 0 and view.count("pending") == 3
    assert view.unit_rate() == pytest.approx(150.0)
    assert view.eta_s() == pytest.approx(16.0)


def test_a_running_unit_without_a_rate_yet_goes_at_the_typical_rate():
    """0/1 just started (no fps yet): it takes the median of the units with one (100/s)."""
    view = view_of(
        started(1, 2, 1000, parallel=2),
        progress(0, 0, 500, 100.0, 1000),
        unit("member_started", 0, 1, timesteps=0, total=1000),
    )
    assert view.eta_s() == pytest.approx(10.0)  # 0/0: 5 s, 0/1: 1,000 / 100


def test_no_measured_rate_means_no_eta_and_the_plan_without_slots_means_one():
    assert view_of(started(1, 3, 1000, parallel=2)).eta_s() is None
    running = view_of(started(1, 3, 1000, parallel=None), unit("member_started", 0, 0))
    assert running.eta_s() is None  # running, but no progress yet
    assert running.to_status()["eta_s"] is None
    one_slot = view_of(started(1, 3, 1000, parallel=None), progress(0, 0, 0, 100.0, 1000))
    assert one_slot.slots == 1
    assert one_slot.eta_s() == pytest.approx(30.0)  # three units of 10 s, one after another


def test_failed_and_stopped_units_are_not_waited_for_and_nothing_left_is_zero():
    view = view_of(
        started(1, 3, 1000, parallel=3),
        unit("member_finished", 0, 0, timesteps=1000, elapsed_s=5.0),
        unit("member_failed", 0, 1, error="boom"),
        unit("member_stopped", 0, 2, timesteps=10),
    )
    assert view.eta_s() == 0.0


def test_schedule_by_hand():
    # 2 slots: running 4 s and 1 s; pending 2 s, 2 s, 2 s at rate 1: 1->3, 3->5, 4->6
    assert schedule_eta_s([(4, 1.0), (1, 1.0)], [2, 2, 2], 2, 1.0) == 6.0
    # more slots than work: the longest unit
    assert schedule_eta_s([], [3, 1], 8, 1.0) == 3.0
    assert schedule_eta_s([], [], 3, 1.0) == 0.0


def test_member_started_keeps_the_worker_pid_and_device_in_the_status():
    view = view_of(
        started(1, 1, 100, parallel=1),
        unit("member_started", 0, 0, pid=4242, node="box", device="cuda:0", total=100),
    )
    m = view.members[(0, 0)]
    assert (m.pid, m.node, m.device) == (4242, "box", "cuda:0")
    row = view.to_status()["per_member"][0]
    assert (row["pid"], row["node"], row["device"]) == (4242, "box", "cuda:0")
    json.dumps(view.to_status(), allow_nan=False)
    # odd kinds read as absent
    assert view.apply(unit("member_started", 0, 0, pid="4242", device=7, node="box"))
    assert (m.pid, m.device) == (None, None)
