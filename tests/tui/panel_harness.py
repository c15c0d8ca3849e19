"""The real control panel, set up for Pilot tests that press keys anywhere in it.

Nothing here launches a trainer or reaches the network: the watcher records stop/resume/launch,
the Alpaca keys are unset (their URL points at a closed port), and ``quit`` is counted instead of
exiting, so a random ``q`` cannot end a test early.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from textual import events
from textual.app import App

from engine.data.sources import alpaca
from engine.runs.folder import RunFolder
from ploutos_tui.app import PloutosApp
from ploutos_tui.model.runs import RunsWatcher
from ploutos_tui.model.sampling import RecordedSampler

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
STOPPED = "20261127-215016-demo-3df3"


class RecordingWatcher(RunsWatcher):
    """Reads the copied fixture runs; stop/resume/launch only record (no trainer starts)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, clock=lambda: 0.0)
        self.calls: list[tuple[str, Any]] = []
        # Set by a test that needs a launch still in progress: launch_run waits for it.
        self.launch_gate: threading.Event | None = None

    def stop(self, run_id: str) -> str:
        self.calls.append(("stop", run_id))
        return "stopping"

    def resume(self, run_id: str) -> RunFolder:
        self.calls.append(("resume", run_id))
        return RunFolder(self.runs_root / run_id)

    def launch_run(self, config_path, profile=None, ensemble=None, algorithm=None) -> RunFolder:
        self.calls.append(("launch", str(config_path)))
        if self.launch_gate is not None:
            assert self.launch_gate.wait(60), "the test never let the launch finish"
        new = self.runs_root / f"20990101-0000{len(self.calls):02d}-demo-beef"
        shutil.copytree(self.runs_root / STOPPED, new)
        return RunFolder(new)


def make_panel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], PloutosApp]:
    """``make(start_screen)``: the real app over copied runs, a recorded sampler and an empty
    dataset folder ``tmp_path / "dataset"``; quitting is counted in ``app.quits`` instead of
    exiting. ``b`` writes a three-month demo dataset (fast)."""
    monkeypatch.chdir(tmp_path)  # the palette's "Save screenshot" writes into the cwd
    monkeypatch.delenv(alpaca.ENV_KEY_ID, raising=False)
    monkeypatch.delenv(alpaca.ENV_SECRET_KEY, raising=False)
    monkeypatch.setenv(alpaca.ENV_DATA_URL, "http://127.0.0.1:9")  # never the real service
    import engine.data.demo

    small_demo = engine.data.demo.write_demo

    def write_small_demo(out, **kwargs):
        return small_demo(out, **{"start": "2024-01-01", "end": "2024-03-31", **kwargs})

    monkeypatch.setattr(engine.data.demo, "write_demo", write_small_demo)
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["dataset_path"] = str(tmp_path / "no-dataset")  # the plan needs no feature build
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(cfg))

    def make(start_screen: str) -> PloutosApp:
        app = PloutosApp(
            config=config,
            runs_root=tmp_path / "runs",
            dataset=tmp_path / "dataset",
            sampler=RecordedSampler.from_json(FIXTURES / "hardware_2cores_nogpu.json"),
            watcher=RecordingWatcher(tmp_path / "runs"),
            interval_s=3600.0,  # one sample and one poll: the keys, not the timers, drive it
            start_screen=start_screen,
        )
        app.quits = 0

        def count_quit() -> None:
            app.quits += 1

        app.action_quit = count_quit  # type: ignore[method-assign]
        return app

    return make


def send_burst(app: App, keys: list[str]) -> None:
    """Queue ``keys`` at once, as a terminal does when keys come faster than they are handled."""
    for key in keys:
        char = key if len(key) == 1 else {"enter": "\r", "space": " ", "tab": "\t"}.get(key)
        if key == "question_mark":
            char = "?"
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)


def assert_alive(app: App, where: str) -> None:
    assert app.is_running and app.return_code is None, f"the panel exited {where}"
    assert app._exception is None, f"the panel died {where}: {app._exception!r}"
    assert app.screen is not None


async def wait_for(pilot, predicate, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert_alive(pilot.app, f"while waiting for {what}")
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


class ScreenApp(App[None]):
    """Shows one screen (``make()``) on its own, for tests of that screen."""

    def __init__(self, make: Callable[[], Any]) -> None:
        super().__init__()
        self.make = make

    def on_mount(self) -> None:
        self.push_screen(self.make())


async def until(pilot, condition: Callable[[], Any], timeout: float = 20.0) -> None:
    """Pause the pilot until ``condition()`` holds; a hang fails after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            await pilot.pause()
            return
        await pilot.pause(0.02)
    raise AssertionError("timed out waiting for the screen")
