"""The overview (the panel's home): machine strip, alerts, live runs with their units, and the
notifications when a run ends. Recorded hardware snapshots (2, 16 and 256 cores; 0, 1 and 4
GPUs), hand-written run folders: a live run of 18 units this process holds the lock of, and a
finished judged run for the latest verdict. Runs are driven by appending events; each poll is
asked for (``poll_now``), never waited for on the wall clock."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from textual.app import App

from engine.runs.folder import RunFolder
from engine.system.gpus import GpuProcess, GpuReading
from ploutos_tui.app import PloutosApp
from ploutos_tui.model.runs import RunsWatcher, parse_ts
from ploutos_tui.model.sampling import (
    HardwareSnapshot,
    JobThreads,
    RecordedSampler,
    load_snapshots,
)
from ploutos_tui.screens.overview import OverviewScreen, RunTransitions
from ploutos_tui.widgets.alerts import DiskReading, overview_alerts
from ploutos_tui.widgets.core_strip import CoreStrip
from ploutos_tui.widgets.history import graph_lines
from ploutos_tui.widgets.live_runs import runs_lines
from tests.engine.test_view_verdict import judged_run_events, write_run
from tests.tui.test_run_verdict import screen_text

FIXTURES = Path(__file__).parent / "fixtures"
GiB = 1024**3
HOST = "box"
LIVE_RUN = "20261201-100000-demo-ovrv"
TS = "2026-06-01T10:00:00.000Z"  # before the tests run: the lock's mtime keeps it unstalled
NOW = (parse_ts(TS) or 0.0) + 185.0  # the watcher's clock: elapsed 3m05s
TRAINER = 5000
FOLDS, MEMBERS = 3, 6
HISTORY = 100  # samples replayed: the history graphs of a 200-column overview fill up


# --------------------------------------------------------------------------- run folders


def _event(kind: str, **fields) -> dict:
    return {"ts": TS, "type": kind, **fields}


def unit_events(fold: int, member: int, state: str) -> list[dict]:
    """The events of one unit that ends up in ``state``."""
    if state == "pending":
        return []
    pid = 5100 + fold * 10 + member
    out = [
        _event(
            "member_started",
            fold=fold,
            member=member,
            seed=fold * 10 + member,
            timesteps=0,
            total=100_000,
            resumed_from=0,
            device="cuda:0",
            pid=pid,
            node=HOST,
        )
    ]
    done = 20_000 + 7_000 * (fold * MEMBERS + member) % 70_000
    if state in ("running", "failed"):
        out.append(
            _event(
                "member_progress",
                fold=fold,
                member=member,
                timesteps=done,
                total=100_000,
                fps=400.0 + 25 * member,
                mean_reward=0.0004 * (member - 2),
                time_shares={
                    "env": 0.30 + 0.01 * member,
                    "inference": 0.08,
                    "gradient": 0.55 - 0.01 * member,
                    "checkpoint": 0.02,
                    "waiting": 0.05,
                },
                sb3={"policy_loss": -0.01, "value_loss": 0.2, "entropy": 1.1, "n_updates": 8},
            )
        )
    if state == "failed":
        out.append(
            _event(
                "member_failed",
                fold=fold,
                member=member,
                error="CUDA error: out of memory\nTraceback (most recent call last): ...",
            )
        )
    if state == "finished":
        out.append(_event("member_finished", fold=fold, member=member, timesteps=100_000))
    return out


def unit_state(fold: int, member: int, failed: bool) -> str:
    if fold == 0:
        return "finished" if member < 4 else "running"
    if fold == 1:
        if failed and member == 2:
            return "failed"
        return "running" if member < 4 else "pending"
    return "pending"


def live_run_events(failed: bool = True) -> list[dict]:
    plan = {"profile": "box", "parallel_members": 8, "device": "auto"}
    out = [
        _event(
            "run_started",
            run_id=LIVE_RUN,
            config="config/demo.yaml",
            algorithm="ppo",
            n_folds=FOLDS,
            ensemble=MEMBERS,
            total_timesteps=100_000,
            plan=plan,
        )
    ]
    for fold in range(FOLDS):
        for member in range(MEMBERS):
            out.extend(unit_events(fold, member, unit_state(fold, member, failed)))
    return out


def append_events(folder: RunFolder, *events: dict) -> None:
    with open(folder.events_path, "a") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")


@contextlib.contextmanager
def live_run(root: Path, failed: bool = True) -> Iterator[RunFolder]:
    """The live run under ``root``, held live (its lock taken) while the block runs; with a
    finished judged run beside it (the latest verdict)."""
    write_run(root, judged_run_events(skill=False, p_return=0.43))
    folder = RunFolder(root / LIVE_RUN).create()
    folder.config_path.write_text("dataset_path: data/demo\n")
    folder.write_status({"run_id": LIVE_RUN, "state": "running", "pid": os.getpid()})
    folder.events_path.write_text("")
    append_events(folder, *live_run_events(failed))
    with folder.hold_lock():
        yield folder


def watcher_of(root: Path) -> RunsWatcher:
    return RunsWatcher(root, clock=lambda: NOW)


# --------------------------------------------------------------------------- hardware


def _gpu(index: int, util: float, mem_gib: float = 30.0, temp: float = 55.0) -> GpuReading:
    procs = (GpuProcess(5104, int(1.1 * GiB), util),) if index == 0 else ()
    return GpuReading(
        index, "NVIDIA H200", util, int(mem_gib * GiB), 141 * GiB, temp, 350.0, 700.0, procs
    )


def _wave(k: int, base: float, swing: float) -> float:
    """A deterministic history: a triangle wave around ``base``."""
    step = k % 12
    return max(0.0, min(100.0, base + swing * (abs(step - 6) - 3) / 3))


def series(base: HardwareSnapshot, n: int, gpus: int, idle_gpu: int | None = None):
    """``n`` snapshots from ``base``: CPU and GPU loads that move, ``gpus`` H200s (GPU
    ``idle_gpu`` idle), and the live run's trainer as the one job (sanitized)."""
    job = JobThreads(LIVE_RUN, TRAINER, 12, 140, True, {})
    out = []
    for k in range(n):
        cores = tuple(_wave(k + i, v, 10.0) for i, v in enumerate(base.per_core_pct))
        readings = tuple(
            _gpu(i, 0.0 if i == idle_gpu else _wave(k + 3 * i, 80.0, 15.0), 30.0 + 10 * i)
            for i in range(gpus)
        )
        out.append(
            replace(
                base,
                ts=base.ts + k,
                per_core_pct=cores,
                cpu_total_pct=sum(cores) / len(cores),
                mem_used_bytes=int(base.mem_used_bytes * (0.9 + 0.01 * (k % 10))),
                gpus=readings,
                gpu_note=base.gpu_note if not gpus else "",
                jobs=(job,),
            )
        )
    return out


def base(name: str) -> HardwareSnapshot:
    return load_snapshots(FIXTURES / f"hardware_{name}.json")[-1]


MACHINES = {
    "2cores_0gpu": lambda: series(base("2cores_nogpu"), HISTORY, 0),
    "16cores_1gpu": lambda: series(base("16cores"), HISTORY, 1),
    "256cores_4gpu": lambda: series(base("256cores_3090"), HISTORY, 4, idle_gpu=3),
}


class Replay:
    """A recorded sampler that moves on at every sample (no ``recent``: the overview then
    samples itself, as it does when it is the only screen sampling)."""

    def __init__(self, snapshots) -> None:
        self.recorded = RecordedSampler(snapshots)

    @property
    def snapshots(self):
        return self.recorded.snapshots

    def sample(self) -> HardwareSnapshot:
        return self.recorded.sample()


def roomy_disks(paths):
    return tuple(DiskReading(label, Path(path), 500 * GiB, 300 * GiB, 1) for label, path in paths)


class OverviewApp(App[None]):
    TITLE = "Ploutos"

    def __init__(self, sampler, watcher, disk_reader=roomy_disks, **kwargs) -> None:
        super().__init__()
        self.sampler = sampler
        self.watcher = watcher
        self.disk_reader = disk_reader
        self.kwargs = kwargs

    def on_mount(self) -> None:
        self.push_screen(
            OverviewScreen(
                self.sampler,
                self.watcher,
                3600.0,
                disk_paths=(("runs", Path("/runs")), ("dataset", Path("/data/demo"))),
                disk_reader=self.disk_reader,
                hostname=HOST,
                **self.kwargs,
            )
        )


def overview(app: App) -> OverviewScreen | None:
    return app.screen if isinstance(app.screen, OverviewScreen) else None


async def until(pilot, condition, what: str = "the overview", steps: int = 500) -> None:
    for _ in range(steps):  # a bounded wait: a hang fails, a slow box only takes longer
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def poll(pilot, screen: OverviewScreen) -> None:
    """One more poll, drawn."""
    shown = screen.samples_shown
    screen.poll_now()
    await until(pilot, lambda: screen.samples_shown > shown, "a poll")
    await pilot.pause()


async def show_all(pilot) -> OverviewScreen:
    """Every recorded snapshot once (the interval is an hour: polls on demand)."""
    app = pilot.app
    await until(pilot, lambda: overview(app) is not None and overview(app).samples_shown >= 1)
    screen = overview(app)
    for _ in range(len(app.sampler.snapshots) - 1):
        await poll(pilot, screen)
    await pilot.pause()
    return screen


def sampler_of(machine: str) -> Replay:
    return Replay(MACHINES[machine]())


# --------------------------------------------------------------------------- screenshots

SIZES = {"80x24": (80, 24), "200x50": (200, 50)}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("machine", MACHINES)
def test_snapshot_with_a_live_run(snap_compare, tmp_path, machine, size):
    with live_run(tmp_path / "runs"):
        app = OverviewApp(sampler_of(machine), watcher_of(tmp_path / "runs"))
        assert snap_compare(app, terminal_size=SIZES[size], run_before=show_all)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_no_live_run(snap_compare, tmp_path, size):
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(FIXTURES / "runs", root)
    write_run(root, judged_run_events(skill=True, p_return=0.004))
    app = OverviewApp(Replay(series(base("16cores"), 30, 1)), watcher_of(root))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=show_all)


async def test_the_screen_fills_its_size_and_shows_every_unit_when_tall(tmp_path):
    with live_run(tmp_path / "runs"):
        app = OverviewApp(sampler_of("256cores_4gpu"), watcher_of(tmp_path / "runs"))
        async with app.run_test(size=(200, 50)) as pilot:
            await show_all(pilot)
            text = screen_text(app)
            lines = text.splitlines()
            assert len(lines) == 50 and all(len(line) <= 200 for line in lines)
            for unit in (f"{f}/{m}" for f in range(FOLDS) for m in range(MEMBERS)):
                assert f" {unit} " in text  # all 18 units
            assert "more units" not in text
            assert sum(1 for line in lines if line.strip("│ ╭╮╰╯─") == "") <= 3  # no blank box
            for gpu in range(4):
                assert f"GPU{gpu} NVIDIA H200" in text
            await pilot.resize_terminal(80, 24)
            await pilot.pause()
            small = screen_text(app)
            assert all(len(line) <= 80 for line in small.splitlines())
            assert "more units" in small and "ETA" in small and "GPU3" in small
            assert "unit 1/2 failed" in small  # the alerts stay in view


# --------------------------------------------------------------------------- alerts


def alerts_shown(screen: OverviewScreen) -> str:
    return str(screen.query_one("#ov-alerts").render())


def full_disk(paths):
    return tuple(DiskReading(label, Path(path), 500 * GiB, 1 * GiB, 7) for label, path in paths)


THREADS_FIXTURE = "hardware_threads_near_limit.json"  # its job is left out: unsanitized
ALERT_CASES = {
    "failed unit": (
        dict(failed=True),
        lambda: series(base("16cores"), 3, 1),
        roomy_disks,
        "unit 1/2 failed: CUDA error: out of memory",
    ),
    "gpu idle": (
        dict(failed=False),
        lambda: series(base("16cores"), 3, 1, idle_gpu=0),
        roomy_disks,
        "GPU0 idle (0% util) while 6 units train on this host (units on cuda:0)",
    ),
    "threads near the limit": (
        dict(failed=False),
        lambda: [replace(s, jobs=()) for s in load_snapshots(FIXTURES / THREADS_FIXTURE)],
        roomy_disks,
        "cgroup tasks near the limit: 3,974 of 4,096 (97%, cgroup pids.max)",
    ),
    "disk nearly full": (
        dict(failed=False),
        lambda: series(base("16cores"), 3, 1),
        full_disk,
        "disk nearly full under the runs and dataset folders (/runs): 1.0 GiB free of "
        "500.0 GiB (0%)",
    ),
    "unsanitized job": (
        dict(failed=False),
        lambda: load_snapshots(FIXTURES / "hardware_256cores_3090.json"),
        roomy_disks,
        "wf-2024-lstm: BLAS NOT sanitized (OMP_NUM_THREADS=unset MKL_NUM_THREADS=unset +4 more)",
    ),
}


@pytest.mark.parametrize("case", ALERT_CASES)
async def test_an_alert_fires(tmp_path, case):
    run_kwargs, snapshots, disks, expected = ALERT_CASES[case]
    with live_run(tmp_path / "runs", **run_kwargs):
        app = OverviewApp(Replay(snapshots()), watcher_of(tmp_path / "runs"), disk_reader=disks)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await show_all(pilot)
            assert any(expected in alert.text for alert in screen.alerts), screen.alerts
            assert expected in alerts_shown(screen)
            assert screen.query_one("#ov-alerts").has_class("-alerting")
            # only the one looked for (the fixtures are healthy otherwise)
            others = [a.text for a in screen.alerts if expected not in a.text]
            assert others == [], others


async def test_a_healthy_machine_has_no_alerts(tmp_path):
    with live_run(tmp_path / "runs", failed=False):
        app = OverviewApp(sampler_of("16cores_1gpu"), watcher_of(tmp_path / "runs"))
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await show_all(pilot)
            assert screen.alerts == []
            assert alerts_shown(screen) == "✓ no alerts"
            assert not screen.query_one("#ov-alerts").has_class("-alerting")


def test_an_idle_gpu_without_training_units_is_no_alert(tmp_path):
    snap = series(base("16cores"), 1, 1, idle_gpu=0)[0]
    assert overview_alerts(snap, (), (), {0: [0.0, 0.0, 0.0]}, hostname=HOST) == []
    # a GPU busy in any of its last three samples is not idle
    with live_run(tmp_path / "runs", failed=False):
        runs = watcher_of(tmp_path / "runs").poll()
    alerts = overview_alerts(snap, runs, (), {0: [50.0, 0.0, 0.0]}, hostname=HOST)
    assert alerts == []
    alerts = overview_alerts(snap, runs, (), {0: [50.0, 0.0, 0.0, 0.0]}, hostname=HOST)
    assert [a.text[:10] for a in alerts] == ["GPU0 idle "]
    # units training on another machine do not make this one's GPU idle
    assert overview_alerts(snap, runs, (), {0: [0.0] * 3}, hostname="elsewhere") == []


def test_a_disk_with_room_but_under_2_gib_free_alerts():
    small = DiskReading("runs", Path("/r"), 10 * GiB, int(1.5 * GiB))
    roomy = DiskReading("dataset", Path("/d"), 10 * GiB, 5 * GiB)
    alerts = overview_alerts(None, (), (small, roomy))
    assert [a.text.split(" (")[0] for a in alerts] == ["disk nearly full under the runs folder"]


# --------------------------------------------------------------------------- notifications


def notifications(app: App) -> list[tuple[str, str, str]]:
    return [(n.message, n.title, n.severity) for n in app._notifications]


async def test_a_run_that_finishes_or_fails_is_notified_once(tmp_path):
    root = tmp_path / "runs"
    with live_run(root, failed=False) as folder:
        app = OverviewApp(sampler_of("16cores_1gpu"), watcher_of(root))
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await show_all(pilot)
            assert notifications(app) == []  # the judged run ended before the panel looked
            await poll(pilot, screen)
            assert notifications(app) == []
            # the live run fails: its event, then its status (the trainer writes both)
            append_events(
                folder,
                _event("member_failed", fold=1, member=0, error="boom"),
                _event("run_failed", error="RuntimeError: unit 1/0 failed"),
            )
            folder.write_status({"run_id": LIVE_RUN, "state": "failed", "error": "x"})
            await poll(pilot, screen)
            assert notifications(app) == [
                (f"{LIVE_RUN} failed: RuntimeError: unit 1/0 failed", "Run failed", "error")
            ]
            await poll(pilot, screen)
            assert len(notifications(app)) == 1  # not again
            # resumed, then finished
            append_events(folder, _event("run_resumed", run_id=LIVE_RUN, n_folds=FOLDS))
            folder.write_status({"run_id": LIVE_RUN, "state": "running", "pid": os.getpid()})
            await poll(pilot, screen)
            append_events(folder, _event("run_finished"))
            folder.write_status({"run_id": LIVE_RUN, "state": "finished"})
            await poll(pilot, screen)
            assert notifications(app)[1:] == [
                (f"{LIVE_RUN} finished", "Run finished", "information")
            ]
            assert "Runs" in screen.query_one("#ov-runs-box").border_title
            assert screen.notified == notifications(app)


def test_transitions_need_a_live_state_before():
    from ploutos_tui.model.runs import RunSnapshot

    def snap(run_id: str, state: str) -> RunSnapshot:
        return RunSnapshot(run_id, Path(run_id), state, 0.0, None, None, "", "", 0, 0)

    seen = RunTransitions()
    assert seen.update([snap("a", "finished"), snap("b", "running")]) == []
    assert seen.update([snap("a", "finished")]) == []  # b missing for a poll: still known
    ended = seen.update([snap("a", "finished"), snap("b", "interrupted")])
    assert [(t.run.run_id, t.before, t.run.state) for t in ended] == [
        ("b", "running", "interrupted")
    ]
    assert seen.update([snap("b", "interrupted"), snap("c", "starting")]) == []
    assert [t.run.run_id for t in seen.update([snap("c", "stopped")])] == ["c"]


# --------------------------------------------------------------------------- widgets


@pytest.mark.parametrize(
    ("cores", "width", "rows"), [(2, 76, 2), (16, 76, 2), (256, 76, 2), (512, 76, 2), (512, 196, 6)]
)
async def test_the_core_strip_keeps_to_its_rows(cores, width, rows):
    loads = [(i * 37) % 101 for i in range(cores)]

    class One(App[None]):
        def compose(self):
            yield CoreStrip(loads, max_rows=rows)

    app = One()
    async with app.run_test(size=(width, 20)) as pilot:
        await pilot.pause()
        strip = app.query_one(CoreStrip)
        lines = strip.render_text().split("\n")
        assert len(lines) - 1 <= rows and strip.size.height == len(lines)
        assert all(len(line) <= width for line in lines)
        assert lines[-1].startswith(f"{cores} cores")
        if cores == 512 and width == 76:
            assert "(4 a cell)" in lines[-1]


def test_graph_lines_scale_fill_and_right_align():
    lines = graph_lines([0.0, 50.0, 100.0], 5, rows=2)
    assert [line.plain for line in lines] == ["    █", "   ██"]
    assert graph_lines([1.0], 2)[0].plain == " ▁"  # any load shows
    assert graph_lines(list(range(100)), 10)[0].cell_len == 10  # buckets


def test_runs_lines_fit_any_size(tmp_path):
    with live_run(tmp_path / "runs"):
        runs = watcher_of(tmp_path / "runs").poll()
    for width, height in ((40, 5), (76, 9), (196, 30), (10, 2)):
        lines = runs_lines(runs, width, height)
        assert len(lines) <= height and all(line.cell_len <= width for line in lines)
    assert runs_lines(runs, 80, 0) == []


class RecentOnly:
    """A sampler with ``recent`` (as the app's is): the overview reuses fresh samples."""

    def __init__(self, snapshot: HardwareSnapshot) -> None:
        self.snapshot = snapshot
        self.ages: list[float] = []

    def sample(self) -> HardwareSnapshot:  # pragma: no cover - must not be called
        raise AssertionError("the overview sampled instead of asking for a recent sample")

    def recent(self, max_age_s: float) -> HardwareSnapshot:
        self.ages.append(max_age_s)
        return self.snapshot


async def test_the_overview_shares_the_apps_sampler(tmp_path):
    sampler = RecentOnly(series(base("16cores"), 1, 1)[0])
    (tmp_path / "runs").mkdir()
    app = OverviewApp(sampler, watcher_of(tmp_path / "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: overview(app) is not None and overview(app).latest is not None)
    assert sampler.ages and all(age < 3600.0 for age in sampler.ages)


# --------------------------------------------------------------------------- the panel's keys


@pytest.fixture
def panel(tmp_path, monkeypatch):
    from tests.tui.panel_harness import make_panel

    return make_panel(tmp_path, monkeypatch)


async def test_the_panel_starts_on_the_overview_and_v_h_j_d_go_where_they_say(panel):
    from ploutos_tui.screens.dataset import DatasetScreen
    from ploutos_tui.screens.hardware import HardwareScreen
    from ploutos_tui.screens.jobs import JobsScreen
    from ploutos_tui.screens.run import RunScreen

    app = panel("overview")
    assert PloutosApp.__init__.__kwdefaults__["start_screen"] == "overview"
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
        screen = app.screen
        await until(pilot, lambda: screen.latest is not None)
        for key, kind in (
            ("h", HardwareScreen),
            ("v", OverviewScreen),
            ("j", JobsScreen),
            ("v", OverviewScreen),
            ("d", DatasetScreen),
            ("v", OverviewScreen),
        ):
            await pilot.press(key)
            await until(pilot, lambda kind=kind: isinstance(app.screen, kind), f"{key} → {kind}")
        assert app.screen is screen  # the same overview: its history goes on
        await pilot.press("j")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.snapshots)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen), "v from a run")
        await pilot.press("j")  # the jobs list, not the run opened from it
        await until(pilot, lambda: isinstance(app.screen, JobsScreen), "j: the jobs list")
        assert len(app.screen_stack) == 1
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run again")
        await pilot.press("d", "j")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen), "j from the dataset")
        await pilot.press("question_mark")
        await pilot.pause()
        help_text = screen_text(app)
        assert "overview (the home)" in help_text
