"""The hardware screen with recorded and fake samplers: layout, warnings, sampling discipline."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.app import App
from textual.widgets import ProgressBar, Sparkline, Static

from ploutos_tui.model.runs import RunsWatcher
from ploutos_tui.model.sampling import HardwareSnapshot, RecordedSampler, load_snapshots
from ploutos_tui.screens.hardware import HardwareScreen, process_rows
from ploutos_tui.widgets.gpu import GpuCard
from ploutos_tui.widgets.heatmap import CoreHeatmap, plan_layout, render_heatmap
from tests.tui.live_run import HOST, LIVE, live_run, workers_snapshot
from tests.tui.test_run_verdict import screen_text

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(name: str) -> RecordedSampler:
    return RecordedSampler.from_json(FIXTURES / f"hardware_{name}.json")


class HardwareApp(App[None]):
    """The smallest app that shows the hardware screen (the real app adds bindings)."""

    TITLE = "Ploutos"

    def __init__(self, sampler, interval_s: float = 3600.0, history: int = 60) -> None:
        super().__init__()
        self.sampler = sampler
        self.interval_s = interval_s
        self.history = history

    def on_mount(self) -> None:
        self.push_screen(HardwareScreen(self.sampler, self.interval_s, self.history))


async def wait_for(pilot, condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the screen"
        await pilot.pause(0.01)


def hardware_screen(app: App) -> HardwareScreen | None:
    screen = app.screen
    return screen if isinstance(screen, HardwareScreen) else None


async def show_all_recorded(pilot) -> HardwareScreen:
    """Show every recorded snapshot once, in order (the interval is long: samples on demand)."""
    app = pilot.app
    await wait_for(pilot, lambda: hardware_screen(app) is not None)
    screen = hardware_screen(app)
    assert screen is not None
    count = len(app.sampler.snapshots)
    for k in range(1, count + 1):
        await wait_for(pilot, lambda k=k: screen.samples_shown >= k)
        if k < count:
            screen.sample_now()
    await pilot.pause()
    return screen


def text_of(widget: Static) -> str:
    return str(widget.render())


# --------------------------------------------------------------------------- the heatmap alone


@pytest.mark.parametrize(
    ("cores", "width", "mode"),
    [
        (2, 76, "bars"),
        (16, 76, "bars"),
        (64, 76, "numbers"),
        (256, 76, "blocks"),
        (256, 196, "blocks"),
        (512, 76, "blocks"),
        (512, 20, "blocks"),
    ],
)
def test_heatmap_fits_its_width(cores, width, mode):
    loads = [(i * 37) % 101 for i in range(cores)]
    assert plan_layout(cores, width, 4)[0] == mode
    console = Console(width=width, color_system=None, file=None)
    lines = render_heatmap(loads, width).plain.split("\n")
    assert all(console.measure(line).maximum <= width for line in lines)
    assert lines[-1].startswith(f"{cores} cores")
    if mode == "bars":
        assert "cpu0" in lines[0] and f"{loads[1]:.0f}%" in lines[0]
    if mode == "numbers":
        assert lines[0].split()[:3] == [str(v) for v in loads[:3]]
    if mode == "blocks":
        assert sum(len(line) for line in lines[:-1]) >= cores


def test_heatmap_uses_more_rows_for_numbers_when_allowed():
    assert plan_layout(256, 196, 4)[0] == "blocks"
    assert plan_layout(256, 196, 11)[0] == "numbers"


async def test_heatmap_redraws_only_when_the_loads_change(monkeypatch):
    class One(App[None]):
        def compose(self):
            yield CoreHeatmap((10.0, 20.0), id="map")

    renders = []
    original = CoreHeatmap.render

    def counting(self):
        renders.append(self.loads)
        return original(self)

    monkeypatch.setattr(CoreHeatmap, "render", counting)
    app = One()
    async with app.run_test(size=(40, 6)) as pilot:
        heatmap = app.query_one(CoreHeatmap)
        await pilot.pause()
        before = len(renders)
        heatmap.loads = [10, 20]  # equal (validated to a tuple of floats): no redraw
        await pilot.pause()
        assert len(renders) == before
        heatmap.loads = (10.0, 90.0)
        await pilot.pause()
        assert len(renders) == before + 1 and renders[-1] == (10.0, 90.0)


# --------------------------------------------------------------------------- pilot tests


async def test_256_cores_are_one_widget_with_the_3090():
    app = HardwareApp(recorded("256cores_3090"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show_all_recorded(pilot)
        heatmaps = screen.query(CoreHeatmap)
        assert len(heatmaps) == 1
        assert len(heatmaps.first().loads) == 256
        assert len(screen.query(ProgressBar)) == 0
        assert len(list(screen.walk_children())) < 60  # not a widget per core
        assert screen.latest is screen.snapshot
        assert screen.latest is not None and len(screen.latest.per_core_pct) == 256
        (card,) = screen.query(GpuCard)
        assert "RTX 3090" in text_of(card.query_one(".gpu-title", Static))
        assert "22.1/24.0 GiB" in text_of(card.query_one(".gpu-mem", Static))
        assert "78 °C  330/350 W" in text_of(card.query_one(".gpu-extra", Static))
        util, mem = screen.gpu_history(0)
        assert util == (95.0, 93.0, 97.0, 95.0) and len(mem) == 4
        assert card.query_one(".gpu-util-history", Sparkline).data == list(util)
        assert not screen.query_one("#hw-no-gpu").display
        jobs = text_of(screen.query_one("#hw-jobs", Static))
        assert "BLAS sanitized ✓" in jobs and "NOT sanitized (OMP_NUM_THREADS=unset" in jobs
        assert not screen.query_one("#hw-threads").has_class("-warning")


async def test_no_gpu_panel_and_no_warning_on_a_small_box():
    app = HardwareApp(recorded("2cores_nogpu"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show_all_recorded(pilot)
        no_gpu = screen.query_one("#hw-no-gpu", Static)
        assert no_gpu.display
        assert text_of(no_gpu).startswith("no GPU: no NVIDIA GPU / driver")
        assert len(screen.query(GpuCard)) == 0
        assert not screen.query_one("#hw-threads").has_class("-warning")
        assert "2 usable of 2" in text_of(screen.query_one("#hw-cpu-text", Static))
        assert "no running jobs" in text_of(screen.query_one("#hw-jobs", Static))


async def test_threads_near_pids_max_turn_to_warning():
    app = HardwareApp(recorded("threads_near_limit"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show_all_recorded(pilot)
        assert screen.query_one("#hw-threads").has_class("-warning")
        assert screen.query_one("#hw-thread-total").has_class("-warning")
        total = text_of(screen.query_one("#hw-thread-total", Static))
        assert "of 4,096" in total and "cgroup pids.max" in total and "(97%)" in total
        cpu = text_of(screen.query_one("#hw-cpu-text", Static))
        assert "32 usable of 64 (cgroup cpu.max 32)" in cpu


async def test_screen_survives_resizing_and_gpus_appearing():
    snaps = load_snapshots(FIXTURES / "hardware_2cores_nogpu.json")[:1] + load_snapshots(
        FIXTURES / "hardware_256cores_3090.json"
    )
    app = HardwareApp(RecordedSampler(snaps))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show_all_recorded(pilot)
        assert len(screen.query(GpuCard)) == 1
        heatmap = screen.query_one(CoreHeatmap)
        assert heatmap.max_rows == 4
        await pilot.resize_terminal(200, 50)
        await pilot.pause()
        assert heatmap.max_rows > 4  # tall: room for numbers
        await pilot.resize_terminal(40, 12)
        await pilot.pause()
        await pilot.resize_terminal(80, 24)
        await pilot.pause()


class SlowSampler:
    """Takes ``delay_s`` per sample and records how many samples ever ran at once."""

    def __init__(self, snapshot: HardwareSnapshot, delay_s: float) -> None:
        self.snapshot = snapshot
        self.delay_s = delay_s
        self.active = 0
        self.max_active = 0
        self.calls = 0
        self.threads: set[int] = set()
        self.in_sample = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> HardwareSnapshot:
        with self._lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.add(threading.get_ident())
        self.in_sample.set()
        time.sleep(self.delay_s)
        with self._lock:
            self.active -= 1
            if self.active == 0:
                self.in_sample.clear()
        return self.snapshot


async def test_samples_never_overlap_and_the_ui_keeps_responding():
    snap = load_snapshots(FIXTURES / "hardware_16cores.json")[0]
    slow = SlowSampler(snap, delay_s=0.3)
    app = HardwareApp(slow, interval_s=0.01)  # far shorter than a sample
    ticks: list[float] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: slow.in_sample.is_set())
        screen = hardware_screen(app)
        assert screen is not None
        app.set_interval(0.02, lambda: ticks.append(time.monotonic()))
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            screen.sample_now()  # asking while a sample runs must not start a second one
            await pilot.pause(0.02)
        await wait_for(pilot, lambda: screen.samples_shown >= 3)
        assert slow.max_active == 1
        # the UI loop kept ticking while samples slept in their thread: a sample on the UI
        # thread would stall it for a whole sample (0.3 s); half of that flaked on a loaded box
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert len(ticks) > 20 and max(gaps) < slow.delay_s
        assert threading.get_ident() not in slow.threads
        assert screen.latest == snap
        # leaving the screen while a sample runs: its result is dropped quietly
        await wait_for(pilot, lambda: slow.in_sample.is_set())
        app.pop_screen()
        await pilot.pause(0.4)
        assert slow.max_active == 1


async def test_a_failing_sampler_shows_the_error_and_keeps_trying():
    good = load_snapshots(FIXTURES / "hardware_2cores_nogpu.json")[0]

    class Flaky:
        calls = 0

        def sample(self) -> HardwareSnapshot:
            self.calls += 1
            if self.calls == 1:
                raise OSError("proc vanished")
            return good

    flaky = Flaky()
    app = HardwareApp(flaky, interval_s=0.01)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: hardware_screen(app) is not None)
        screen = hardware_screen(app)
        await wait_for(pilot, lambda: screen.latest is not None)
        assert flaky.calls >= 2 and screen.last_error == ""
        assert screen.samples_shown >= 2


# --------------------------------------------------------------------------- screenshots


def test_snapshot_2cores_nogpu_80x24(snap_compare):
    app = HardwareApp(recorded("2cores_nogpu"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=show_all_recorded)


def test_snapshot_16cores_80x24(snap_compare):
    app = HardwareApp(recorded("16cores"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=show_all_recorded)


def test_snapshot_256cores_3090_200x50(snap_compare):
    app = HardwareApp(recorded("256cores_3090"))
    assert snap_compare(app, terminal_size=(200, 50), run_before=show_all_recorded)


def test_snapshot_256cores_3090_80x24(snap_compare):
    app = HardwareApp(recorded("256cores_3090"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=show_all_recorded)


def test_snapshot_threads_near_limit_80x24(snap_compare):
    app = HardwareApp(recorded("threads_near_limit"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=show_all_recorded)


# --------------------------------------------------------------------------- training processes


class WorkersApp(App[None]):
    """The hardware screen beside a runs watcher, as the panel has them (``app.watcher``).
    Not a HardwareApp: Textual would run that class's ``on_mount`` too (a second screen)."""

    TITLE = "Ploutos"

    def __init__(self, sampler, watcher) -> None:
        super().__init__()
        self.sampler = sampler
        self.watcher = watcher
        self.interval_s = 3600.0

    def on_mount(self) -> None:
        self.push_screen(HardwareScreen(self.sampler, self.interval_s, hostname=HOST))


def process_table_text(screen: HardwareScreen) -> list[list[str]]:
    """The training processes table as shown: its lines (after the header) split into cells."""
    lines = text_of(screen.query_one("#hw-procs-table", Static)).splitlines()
    assert lines[0].split() == ["pid", "unit", "CPU", "%", "RSS", "threads", "GPU", "mem", "run"]
    rows = []
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows.append(([""] if not line[:8].strip() else []) + cells)  # "+N other": no pid
    return rows


WORKER_ROWS = [
    ["4000", "trainer", "3%", "410 MiB", "6", "—", LIVE],
    ["4242", "0/0", "97%", "1.2 GiB", "9", "1.1 GiB", LIVE],
    ["", "+3 other", "99%", "1.4 GiB", "11", "—", LIVE],
]


def test_process_rows_name_the_units_and_sum_the_rest():
    snap = workers_snapshot()
    assert [list(r) for r in process_rows(snap, {4242: "0/0"})] == WORKER_ROWS
    unnamed = process_rows(snap, {})  # no watcher: the trainer, and the rest summed
    assert [r[1] for r in unnamed] == ["trainer", "+4 other"]
    assert process_rows(load_snapshots(FIXTURES / "hardware_16cores.json")[-1], {}) == []


async def test_the_training_processes_table_names_each_worker_by_its_unit(tmp_path):
    with live_run(tmp_path / "runs"):
        watcher = RunsWatcher(tmp_path / "runs", clock=lambda: 0.0)
        app = WorkersApp(RecordedSampler([workers_snapshot()]), watcher)
        async with app.run_test(size=(200, 50)) as pilot:
            await wait_for(pilot, lambda: hardware_screen(app) is not None)
            screen = hardware_screen(app)
            await wait_for(pilot, lambda: screen.samples_shown >= 1)
            await pilot.pause()
            assert screen.units == {4242: "0/0", 4444: "1/1"}  # 4343 runs on another machine
            assert screen.query_one("#hw-procs").display
            assert process_table_text(screen) == WORKER_ROWS
            line = "    4242  0/0           97%    1.2 GiB        9    1.1 GiB  " + LIVE
            assert line in screen_text(app)


async def test_no_job_processes_no_table():
    app = HardwareApp(recorded("256cores_3090"))  # recorded before process readings
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show_all_recorded(pilot)
        assert not screen.query_one("#hw-procs").display


def test_snapshot_training_processes_200x50(snap_compare, tmp_path):
    with live_run(tmp_path / "runs"):
        watcher = RunsWatcher(tmp_path / "runs", clock=lambda: 0.0)
        app = WorkersApp(RecordedSampler([workers_snapshot()]), watcher)
        assert snap_compare(app, terminal_size=(200, 50), run_before=show_all_recorded)


def test_snapshot_training_processes_80x24(snap_compare, tmp_path):
    with live_run(tmp_path / "runs"):
        watcher = RunsWatcher(tmp_path / "runs", clock=lambda: 0.0)
        app = WorkersApp(RecordedSampler([workers_snapshot()]), watcher)
        assert snap_compare(app, terminal_size=(80, 24), run_before=show_all_recorded)


class CountingWatcher(RunsWatcher):
    def __init__(self, root) -> None:
        super().__init__(root, clock=lambda: 0.0)
        self.polls = 0

    def poll_run(self, run_id):
        self.polls += 1
        return super().poll_run(run_id)


async def test_the_table_follows_the_samples_and_the_events_are_read_when_the_tree_changes(
    tmp_path,
):
    from dataclasses import replace

    from ploutos_tui.model.sampling import ProcessReading

    first = workers_snapshot()
    busier = replace(
        first,
        processes=tuple(replace(p, cpu_pct=50.0) if p.pid == 4242 else p for p in first.processes),
    )
    grown = replace(
        busier,
        processes=(*busier.processes, ProcessReading(4444, 4001, LIVE, 12.0, 1 << 30, 7)),
    )
    with live_run(tmp_path / "runs"):
        watcher = CountingWatcher(tmp_path / "runs")
        app = WorkersApp(RecordedSampler([first, busier, busier, grown]), watcher)
        async with app.run_test(size=(200, 50)) as pilot:
            await wait_for(pilot, lambda: hardware_screen(app) is not None)
            screen = hardware_screen(app)
            screen.UNITS_EVERY_S = 3600.0  # a steady tree: its events are not read again
            await show_all_recorded(pilot)
            rows = process_table_text(screen)
    assert watcher.polls == 2  # the first sample, and the one where 4444 appeared
    assert rows[1][:3] == ["4242", "0/0", "50%"]  # the changed reading, redrawn
    assert rows[2][:5] == ["4444", "1/1", "12%", "1.0 GiB", "7"]
    assert rows[3][1] == "+3 other"
