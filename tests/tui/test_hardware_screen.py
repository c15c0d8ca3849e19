"""The hardware screen with recorded and fake samplers: layout, warnings, sampling discipline."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.app import App
from textual.widgets import ProgressBar, Static

from engine.system.gpus import GpuProcess, GpuReading
from ploutos_tui.model.runs import RunsWatcher
from ploutos_tui.model.sampling import HardwareSnapshot, RecordedSampler, load_snapshots
from ploutos_tui.screens.hardware import HardwareScreen, process_rows
from ploutos_tui.widgets.gpu import GpuHistory
from ploutos_tui.widgets.heatmap import CoreHeatmap, plan_layout, render_heatmap
from ploutos_tui.widgets.history import HistoryGraph
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
        (card,) = screen.query(GpuHistory)
        util_graph = card.query_one(".gpu-util-graph", HistoryGraph)
        mem_graph = card.query_one(".gpu-mem-graph", HistoryGraph)
        assert "GPU0 util  95%  78 °C  330/350 W" in util_graph.label.plain  # 80 wide: no name
        assert "mem 22.1/24.0 GiB" in mem_graph.label.plain
        util, mem = screen.gpu_history(0)
        assert util == (95.0, 93.0, 97.0, 95.0) and len(mem) == 4
        assert util_graph.history == util and mem_graph.history == mem
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
        assert len(screen.query(GpuHistory)) == 0
        assert not screen.query_one("#hw-threads").has_class("-warning")
        assert "2/2 usable" in screen.query_one("#hw-cpu-graph", HistoryGraph).label.plain
        assert "no running jobs" in text_of(screen.query_one("#hw-jobs", Static))


async def test_threads_near_pids_max_turn_to_warning():
    app = HardwareApp(recorded("threads_near_limit"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show_all_recorded(pilot)
        assert screen.query_one("#hw-threads").has_class("-warning")
        assert screen.query_one("#hw-thread-total").has_class("-warning")
        total = text_of(screen.query_one("#hw-thread-total", Static))
        assert "of 4,096" in total and "cgroup pids.max" in total and "(97%)" in total
        cpu = screen.query_one("#hw-cpu-graph", HistoryGraph).label.plain
        assert "32/64 usable (cpu.max 32)" in cpu  # 80 wide: the short form


async def test_screen_survives_resizing_and_gpus_appearing():
    snaps = load_snapshots(FIXTURES / "hardware_2cores_nogpu.json")[:1] + load_snapshots(
        FIXTURES / "hardware_256cores_3090.json"
    )
    app = HardwareApp(RecordedSampler(snaps))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show_all_recorded(pilot)
        assert len(screen.query(GpuHistory)) == 1
        heatmap = screen.query_one(CoreHeatmap)
        assert heatmap.max_rows == 2
        graph = screen.query_one("#hw-cpu-graph", HistoryGraph)
        short = graph.size.height
        await pilot.resize_terminal(200, 50)
        await pilot.pause()
        assert heatmap.max_rows == 4  # tall: more rows for the cores
        assert graph.size.height > short + 5  # and the graphs grow into the height
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
    table = screen.table
    lines = [line.plain for line in table.build(table.size.width, len(table.rows) + 1)]
    assert lines[0].split()[:3] == ["pid", "unit▲", "CPU"]
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
            line = "    4242  0/0           97%    1.2 GiB         9    1.1 GiB  " + LIVE
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


# --------------------------------------------------------------------------- machines with workers

from dataclasses import replace  # noqa: E402

from ploutos_tui.model.sampling import JobThreads, ProcessReading  # noqa: E402
from ploutos_tui.screens.hardware import (  # noqa: E402
    SORTS,
    TerminateModal,
    signal_worker,
    table_rows,
)
from tests.tui.test_overview import HOST as OV_HOST  # noqa: E402
from tests.tui.test_overview import LIVE_RUN as OV_RUN  # noqa: E402
from tests.tui.test_overview import live_run as overview_live_run  # noqa: E402
from tests.tui.test_overview import watcher_of  # noqa: E402

GiB = 1024**3
OV_TRAINER = 5000
# the overview's live run: units 0/4, 0/5, 1/0, 1/1 and 1/3 run on OV_HOST as these pids
OV_WORKERS = {5104: "0/4", 5105: "0/5", 5110: "1/0", 5111: "1/1", 5113: "1/3"}
HW_HISTORY = 100  # samples replayed: the graphs of a 200-column screen fill up


def _wave(k: int, base: float, swing: float) -> float:
    step = k % 12
    return max(0.0, min(100.0, base + swing * (abs(step - 6) - 3) / 3))


def _gpus(k: int, count: int) -> tuple[GpuReading, ...]:
    out = []
    for i in range(count):
        procs = tuple(
            GpuProcess(pid, int((1.0 + 0.25 * n) * GiB), 20.0)
            for n, pid in enumerate(OV_WORKERS)
            if n % count == i
        )
        util = 0.0 if i == 3 else _wave(k + 3 * i, 80.0, 15.0)
        out.append(
            GpuReading(
                i,
                "NVIDIA H200",
                util,
                int((30 + 10 * i) * GiB),
                141 * GiB,
                55.0 + i,
                350.0,
                700.0,
                procs,
            )
        )
    return tuple(out)


def _processes(k: int, gpus: tuple[GpuReading, ...]) -> tuple[ProcessReading, ...]:
    on_gpu = {p.pid: p.mem_used_bytes for g in gpus for p in g.processes}
    procs = [
        ProcessReading(OV_TRAINER, 1, OV_RUN, 4.0, 610 << 20, 12, None, None, 900),
        ProcessReading(5001, OV_TRAINER, OV_RUN, 0.0, 180 << 20, 1, None, None, 901),
        ProcessReading(5112, 5001, OV_RUN, 0.0, 300 << 20, 3, None, None, 902),  # failed unit
    ]
    for n, (pid, _unit) in enumerate(OV_WORKERS.items()):
        procs.append(
            ProcessReading(
                pid,
                5001,
                OV_RUN,
                _wave(k + n, 60.0 + 8 * n, 20.0),
                (900 + 150 * n) << 20,
                9 + n,
                on_gpu.get(pid),
                None,
                1000 + n,
            )
        )
    return tuple(procs)


def machine_series(name: str, gpus: int, n: int = HW_HISTORY) -> list[HardwareSnapshot]:
    """``n`` snapshots of a recorded machine with moving loads, ``gpus`` H200s (the fourth
    idle) and the overview's live run's trainer, forkserver and five workers as processes."""
    base = load_snapshots(FIXTURES / f"hardware_{name}.json")[-1]
    job = JobThreads(OV_RUN, OV_TRAINER, 8, 76, True, {})
    out = []
    for k in range(n):
        cores = tuple(_wave(k + i, v, 10.0) for i, v in enumerate(base.per_core_pct))
        readings = _gpus(k, gpus)
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
                processes=_processes(k, readings),
            )
        )
    return out


MACHINES = {
    "2cores_0gpu": ("2cores_nogpu", 0),
    "16cores_1gpu": ("16cores", 1),
    "256cores_4gpu": ("256cores_3090", 4),
}
SIZES = {"80x24": (80, 24), "200x50": (200, 50)}


class MachineApp(App[None]):
    TITLE = "Ploutos"

    def __init__(self, sampler, watcher, **kwargs) -> None:
        super().__init__()
        self.sampler = sampler
        self.watcher = watcher
        self.kwargs = kwargs

    def on_mount(self) -> None:
        self.push_screen(
            HardwareScreen(
                self.sampler, 3600.0, watcher=self.watcher, hostname=OV_HOST, **self.kwargs
            )
        )


def machine_app(machine: str, root: Path, **kwargs) -> MachineApp:
    name, gpus = MACHINES[machine]
    return MachineApp(RecordedSampler(machine_series(name, gpus)), watcher_of(root), **kwargs)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("machine", MACHINES)
def test_snapshot_machine_with_workers(snap_compare, tmp_path, machine, size):
    with overview_live_run(tmp_path / "runs"):
        app = machine_app(machine, tmp_path / "runs")
        assert snap_compare(app, terminal_size=SIZES[size], run_before=show_all_recorded)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("machine", MACHINES)
async def test_the_screen_fits_every_machine_and_names_every_worker(tmp_path, machine, size):
    with overview_live_run(tmp_path / "runs"):
        app = machine_app(machine, tmp_path / "runs")
        async with app.run_test(size=SIZES[size]) as pilot:
            screen = await show_all_recorded(pilot)
            text = screen_text(app)
            lines = text.splitlines()
            width, height = SIZES[size]
            assert len(lines) == height and all(len(line) <= width for line in lines)
            assert screen.units == OV_WORKERS
            rows = screen.table.rows
            assert [r.unit for r in rows if r.worker] == list(OV_WORKERS.values())
            assert rows[0].trainer and rows[-1].pid is None  # "+2 other" last
            shown = min(len(rows), screen.table.size.height - 1)
            assert shown >= 3  # even at 80x24 the table keeps rows
            gpus = MACHINES[machine][1]
            assert len(screen.query(GpuHistory)) == gpus
            graph = screen.query_one("#hw-cpu-graph", HistoryGraph)
            if size == "200x50":  # the graphs take the height the rest leaves
                assert graph.size.height >= (4 if gpus == 4 else 8)
                assert "1/3" in text and "GPU mem" in text
            assert lines[-2].startswith("╰")  # the boxes reach down to the footer: no gap


def test_rows_sort_by_each_column_with_the_trainer_first_in_unit_order():
    snap = machine_series("16cores", 1, 3)[-1]
    by_unit = table_rows(snap, OV_WORKERS, 0)
    assert [r.cells[1] for r in by_unit] == [
        "trainer",
        "0/4",
        "0/5",
        "1/0",
        "1/1",
        "1/3",
        "+2 other",
    ]
    names = [name for name, *_ in SORTS]
    cpu = table_rows(snap, OV_WORKERS, names.index("CPU %"))
    named = [r for r in cpu if r.pid is not None]
    assert [r.cpu_pct for r in named] == sorted((r.cpu_pct for r in named), reverse=True)
    assert cpu[-1].pid is None  # the summed row stays last
    pid = table_rows(snap, OV_WORKERS, names.index("pid"))
    assert [r.pid for r in pid[:-1]] == sorted(r.pid for r in pid[:-1])


async def test_s_cycles_the_sort_column_shown_in_the_header_and_the_cursor_follows_its_row(
    tmp_path,
):
    with overview_live_run(tmp_path / "runs"):
        app = machine_app("16cores_1gpu", tmp_path / "runs")
        async with app.run_test(size=(200, 50)) as pilot:
            screen = await show_all_recorded(pilot)
            table = screen.table
            await pilot.press("down", "down")  # on 0/5
            assert table.current.unit == "0/5"
            header = table.build(table.size.width, 2)[0].plain
            assert "unit▲" in header and "sorted by unit (s)" in table.border_subtitle
            seen = []
            for _ in SORTS:
                await pilot.press("s")
                seen.append(SORTS[screen.sort][0])
                header = table.build(table.size.width, 2)[0].plain
                mark = "▼" if SORTS[screen.sort][3] else "▲"
                assert SORTS[screen.sort][0] + mark in header
                assert table.current.unit == "0/5"  # the cursor stays on its process
            assert seen == ["CPU %", "RSS", "GPU mem", "threads", "pid", "unit"]
            await pilot.press("s")  # by CPU %: the busiest worker first, under the cursor too
            order = [r.cpu_pct for r in table.rows if r.pid is not None]
            assert order == sorted(order, reverse=True)


SLEEPER = "import time\nwhile True: time.sleep(1)\n"


def _real_worker_snapshot(trainer: int, worker: int) -> HardwareSnapshot:
    """A snapshot whose live run's trainer is ``trainer`` and whose unit 0/0 runs as ``worker``."""
    from ploutos_tui.model.sampling import read_stat

    base = load_snapshots(FIXTURES / "hardware_16cores.json")[-1]
    st = read_stat(worker)
    assert st is not None
    procs = (
        ProcessReading(trainer, 1, LIVE, 1.0, 100 << 20, 3, None, None, 0),
        ProcessReading(worker, trainer, LIVE, 50.0, 50 << 20, 1, None, None, st.start_ticks),
    )
    return replace(base, jobs=(JobThreads(LIVE, trainer, 2, 4, True, {}),), processes=procs)


class FakeLiveRuns:
    """A runs watcher of one live run whose trainer is this test process and whose unit 0/0 is
    ``worker`` (a real child process)."""

    def __init__(self, worker: int, live: bool = True) -> None:
        self.worker = worker
        self.live = live
        self.job_pid_calls = 0

    def poll_run(self, run_id):
        from types import SimpleNamespace

        member = SimpleNamespace(fold=0, member=0, local_pid=lambda host: self.worker)
        return SimpleNamespace(members=[member])

    def job_pids(self):
        self.job_pid_calls += 1
        return {LIVE: os.getpid()} if self.live else {}


def _sleeper():
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", SLEEPER])


async def _cursor_on_worker(pilot, screen: HardwareScreen) -> None:
    await wait_for(pilot, lambda: screen.samples_shown >= 1 and len(screen.table.rows) == 2)
    await pilot.press("down")
    assert screen.table.current.unit == "0/0"


async def test_t_asks_first_and_only_y_sends_sigterm_to_the_worker():
    import signal as signal_mod

    child = _sleeper()
    try:
        snap = _real_worker_snapshot(os.getpid(), child.pid)
        watcher = FakeLiveRuns(child.pid)
        sent = []

        def kill(pid, sig):
            sent.append((pid, sig))
            os.kill(pid, sig)

        app = MachineApp(RecordedSampler([snap]), watcher, kill=kill)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: hardware_screen(app) is not None)
            screen = hardware_screen(app)
            await _cursor_on_worker(pilot, screen)
            await pilot.press("t")
            await wait_for(pilot, lambda: isinstance(app.screen, TerminateModal))
            text = str(app.screen.query_one("#hw-term", Static).render())
            assert f"SIGTERM to pid {child.pid}" in text and "unit 0/0" in text
            assert "checkpoint" in text and "member_stopped" in text
            assert sent == [] and child.poll() is None  # nothing before the answer
            await pilot.press("y")
            await wait_for(pilot, lambda: not isinstance(app.screen, TerminateModal))
            await wait_for(pilot, lambda: bool(screen.last_signal))
            assert sent == [(child.pid, signal_mod.SIGTERM)]
            assert watcher.job_pid_calls == 1  # the live runs were read again at confirm time
            assert child.wait(10) == -signal_mod.SIGTERM
            assert screen.last_signal.startswith(f"SIGTERM sent to pid {child.pid}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("key", ["n", "escape"])
async def test_cancel_sends_nothing(key):
    child = _sleeper()
    try:
        snap = _real_worker_snapshot(os.getpid(), child.pid)
        sent = []
        app = MachineApp(
            RecordedSampler([snap]), FakeLiveRuns(child.pid), kill=lambda p, s: sent.append(p)
        )
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: hardware_screen(app) is not None)
            screen = hardware_screen(app)
            await _cursor_on_worker(pilot, screen)
            await pilot.press("t")
            await wait_for(pilot, lambda: isinstance(app.screen, TerminateModal))
            await pilot.press(key)
            await wait_for(pilot, lambda: app.screen is screen)
            await pilot.pause()
            assert sent == [] and child.poll() is None and screen.last_signal == ""
    finally:
        child.kill()
        child.wait()


async def test_a_worker_gone_before_the_confirmation_is_one_line_and_nothing_is_sent():
    child = _sleeper()
    snap = _real_worker_snapshot(os.getpid(), child.pid)
    sent = []
    app = MachineApp(
        RecordedSampler([snap]), FakeLiveRuns(child.pid), kill=lambda p, s: sent.append(p)
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: hardware_screen(app) is not None)
        screen = hardware_screen(app)
        await _cursor_on_worker(pilot, screen)
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TerminateModal))
        child.kill()
        child.wait()
        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(screen.last_signal))
        assert sent == []
        assert screen.last_signal == f"pid {child.pid} is gone (unit 0/0 ended): nothing sent"


def test_signal_worker_checks_the_run_the_tree_and_the_process_identity():
    child = _sleeper()
    try:
        snap = _real_worker_snapshot(os.getpid(), child.pid)
        (row,) = [r for r in table_rows(snap, {child.pid: "0/0"}) if r.worker]
        sent = []

        def kill(pid, sig):
            sent.append(pid)

        ok, line = signal_worker(row, {}, kill=kill)  # the run is no longer live
        assert not ok and "no longer live" in line
        ok, line = signal_worker(row, {LIVE: 4_000_000}, kill=kill)  # not that trainer's tree
        assert not ok and "no longer a worker" in line
        reused = replace(row, start_ticks=row.start_ticks + 1)  # the pid is another process now
        ok, line = signal_worker(reused, {LIVE: os.getpid()}, kill=kill)
        assert not ok and "another process" in line
        (trainer,) = [r for r in table_rows(snap, {child.pid: "0/0"}) if r.trainer]
        ok, line = signal_worker(trainer, {LIVE: os.getpid()}, kill=kill)
        assert not ok and "only a unit's worker" in line
        assert sent == []
        ok, line = signal_worker(row, {LIVE: os.getpid()}, kill=kill)
        assert ok and sent == [child.pid]
    finally:
        child.kill()
        child.wait()


async def test_t_on_the_trainer_row_asks_nothing_and_says_why(tmp_path):
    with overview_live_run(tmp_path / "runs"):
        sent = []
        app = machine_app("2cores_0gpu", tmp_path / "runs", kill=lambda p, s: sent.append(p))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await show_all_recorded(pilot)
            assert screen.table.current.trainer
            await pilot.press("t")
            await pilot.pause()
            assert not isinstance(app.screen, TerminateModal) and sent == []
            assert "trainer" in screen.last_signal
