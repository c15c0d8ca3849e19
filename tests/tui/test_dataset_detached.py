"""A build started from the panel is a process of its own: it keeps running after the panel
quits, the next panel re-attaches to it, and after a SIGKILL the next panel offers ``r``, which
resumes after the last finished chunk.

Real components: the panel (Pilot), ``ploutos dataset build`` as a detached subprocess, alpaca-py
against the loopback server. The build is parked with ``PLOUTOS_BUILD_FAULT=pause@N`` (it waits
for SIGUSR1 before chunk N), so the panel quits and the kill land at a known chunk, not after a
guessed delay; the waits are bounded only to catch hangs.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from engine.cli import main
from engine.data import builder
from engine.data.sources import alpaca
from engine.runs import jobs
from ploutos_tui.screens.dataset import BuildFormScreen, DatasetScreen
from tests.engine.alpaca_server import KEY_ID, SECRET, FakeAlpaca
from tests.tui.panel_harness import assert_alive, make_panel, wait_for

pytestmark = pytest.mark.timeout(180)

TICKERS = ["AAPL", "MSFT"]
START, END = "2020-06-01", "2021-03-01"  # two calendar-year chunks per ticker: 4 in all


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    with FakeAlpaca() as server:
        monkeypatch.setenv(alpaca.ENV_DATA_URL, server.url)
        yield server


@pytest.fixture
def panel(tmp_path, monkeypatch, fake):
    monkeypatch.setenv(jobs.BUILDS_FILE_ENV, str(tmp_path / "builds.json"))
    monkeypatch.setattr(DatasetScreen, "POLL_S", 0.1)
    make = make_panel(tmp_path, monkeypatch)
    # make_panel unsets the keys and points Alpaca at a closed port: this file needs both.
    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    monkeypatch.setenv(alpaca.ENV_DATA_URL, fake.url)
    cfg = yaml.safe_load((tmp_path / "demo.yaml").read_text())
    cfg["dataset_path"] = str(tmp_path / "alpaca-ds")
    cfg["data"] = {"source": "alpaca", "tickers": TICKERS, "start": START, "end": END, "macro": []}
    (tmp_path / "alpaca.yaml").write_text(yaml.safe_dump(cfg))
    return make


def screen_of(app) -> DatasetScreen:
    assert isinstance(app.screen, DatasetScreen), app.screen
    return app.screen


def line_of(screen) -> str:
    return str(screen.query_one("#dataset-build").render())


async def start_build(app, pilot) -> tuple[DatasetScreen, object]:
    screen = screen_of(app)
    await wait_for(pilot, lambda: screen.configs is not None, "the configs")
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(app.screen, BuildFormScreen), "the form")
    form = app.screen
    form.query_one("#build-configs").highlighted = [c.name for c in form.configs].index(
        "alpaca.yaml"
    )
    await wait_for(pilot, lambda: form.choice.name == "alpaca.yaml", "the Alpaca config")
    form.query_one("#out").focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen is screen and screen.procs, "the launch")
    return screen, screen.procs[0]


def parked_at(n: int):
    return lambda screen: screen.build is not None and screen.build.paused_before == n


async def test_a_build_keeps_running_after_the_panel_quits_and_the_next_panel_reattaches(
    panel, tmp_path, monkeypatch, fake
):
    out = tmp_path / "alpaca-ds"
    monkeypatch.setenv(builder.BUILD_FAULT_ENV, "pause@2")
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen, proc = await start_build(app, pilot)
        await wait_for(pilot, lambda: parked_at(2)(screen), "chunk 1 done, parked before 2", 60)
        assert "running (pid" in line_of(screen) and "1/4 chunks" in line_of(screen)
    # The panel is gone; the build is not.
    try:
        assert proc.poll() is None
        status = builder.read_build_status(out)
        assert status.state == "running" and status.pid == proc.pid
        monkeypatch.delenv(builder.BUILD_FAULT_ENV)
        app = panel("dataset")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = screen_of(app)
            await wait_for(pilot, lambda: parked_at(2)(screen), "the re-attached build")
            assert screen.build_root == out.resolve() or screen.build_root == out
            assert f"running (pid {proc.pid})" in line_of(screen)
            os.kill(proc.pid, signal.SIGUSR1)  # let it go on
            await wait_for(pilot, lambda: screen.build.state == "done", "the build's end", 60)
            assert "done, 4/4 chunks" in line_of(screen)
            assert any("done" in str(n.message) for n in app._notifications)
            assert_alive(app, "after the re-attached build ended")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(fake.chunk_counts()) == 4  # every chunk once: quitting the panel refetched none


async def test_a_killed_build_is_offered_for_resume_and_r_continues_after_its_last_chunk(
    panel, tmp_path, monkeypatch, fake
):
    ref = tmp_path / "ref"
    argv = ["dataset", "build", "--tickers", ",".join(TICKERS), "--start", START, "--end", END]
    assert main([*argv, "--adjustment", "all", "--macro", "", "--out", str(ref)]) == 0
    fake.reset()
    out = tmp_path / "alpaca-ds"
    monkeypatch.setenv(builder.BUILD_FAULT_ENV, "pause@3")
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen, proc = await start_build(app, pilot)
        try:
            await wait_for(pilot, lambda: parked_at(3)(screen), "parked before chunk 3", 60)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
    first = set(fake.chunk_counts())
    assert {sym for sym, _, _ in first} == {"AAPL"} and len(first) == 2
    monkeypatch.delenv(builder.BUILD_FAULT_ENV)
    fake.reset()
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = screen_of(app)
        await wait_for(
            pilot, lambda: screen.build is not None and screen.build.state == "interrupted", "it"
        )
        assert "interrupted at 2/4 chunks" in line_of(screen) and "r resumes" in line_of(screen)
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.build.state == "done", "the resumed build", 60)
        for p in screen.procs:
            assert p.wait(timeout=30) == 0
        assert_alive(app, "after the resume")
    assert {sym for sym, _, _ in fake.chunk_counts()} == {"MSFT"}  # AAPL's chunks not again
    for sym in TICKERS:
        assert (out / f"{sym}.parquet").read_bytes() == (ref / f"{sym}.parquet").read_bytes()
    for path in Path(out).rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()
