"""Dataset workers that fail with what is not a PloutosError (pandas on an absurd date, a full
disk) leave a message on screen; the panel stays up and the next action works. A detached build
that fails (a full disk, injected with ``PLOUTOS_BUILD_FAULT``) or whose status file is garbage
is a line on screen too."""

from __future__ import annotations

import errno
from pathlib import Path

import pandas as pd
import pytest
from textual.widgets import Static

from engine.data import builder
from engine.data.sources import alpaca
from engine.runs import jobs
from ploutos_tui.screens.dataset import BuildFormScreen, DatasetScreen
from tests.engine.alpaca_server import KEY_ID, SECRET, FakeAlpaca
from tests.tui.panel_harness import assert_alive, make_panel, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def panel(tmp_path, monkeypatch):
    monkeypatch.setenv(jobs.BUILDS_FILE_ENV, str(tmp_path / "builds.json"))
    monkeypatch.delenv(builder.BUILD_FAULT_ENV, raising=False)
    monkeypatch.setattr(DatasetScreen, "POLL_S", 0.1)
    return make_panel(tmp_path, monkeypatch)


def dataset_screen(app) -> DatasetScreen:
    screen = app.screen
    assert isinstance(screen, DatasetScreen), screen
    return screen


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def notified(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def year_3000_dataset(root: Path) -> Path:
    """A small demo dataset whose first ticker's last bar is dated 3000-01-02 (microseconds fit
    it; nanoseconds, pandas' default unit, do not). Returns that Parquet file."""
    from engine.data.demo import write_demo

    write_demo(root, start="2024-01-01", end="2024-03-31")
    path = sorted(root.glob("*.parquet"))[0]
    frame = pd.read_parquet(path)
    stamps = list(frame.index)
    stamps[-1] = pd.Timestamp("3000-01-02 15:00", tz="UTC")
    frame.index = pd.DatetimeIndex(stamps, name=frame.index.name).as_unit("us")
    frame.to_parquet(path)
    return path


async def test_a_bar_in_year_3000_is_a_message_not_an_exit(panel, tmp_path, monkeypatch):
    path = year_3000_dataset(tmp_path / "dataset")
    import engine.data.check

    real_check = engine.data.check.check_dataset

    def check_in_nanoseconds(root, **kwargs):
        # The check as any reader in nanoseconds sees this file: pandas refuses the bar with
        # OutOfBoundsDatetime (the check itself may cope; the screen must not rely on it).
        pd.read_parquet(path).index.as_unit("ns")
        return real_check(root, **kwargs)

    monkeypatch.setattr(engine.data.check, "check_dataset", check_in_nanoseconds)
    with pytest.raises(pd.errors.OutOfBoundsDatetime):
        check_in_nanoseconds(tmp_path / "dataset")

    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: dataset_screen(app).summary is not None, "the read")
        await pilot.pause()
        assert_alive(app, "after reading a dataset with a bar in year 3000")
        screen = dataset_screen(app)
        verdict = text_of(screen, "#dataset-verdict")
        assert "OutOfBoundsDatetime" in verdict and str(tmp_path / "dataset") in verdict
        assert "press c" in verdict and "\n" not in verdict.strip()
        assert any("OutOfBoundsDatetime" in m for m in notified(app))
        # The panel still works: the original check reads the same folder on c.
        monkeypatch.setattr(engine.data.check, "check_dataset", real_check)
        await pilot.press("c")
        await wait_for(pilot, lambda: "check:" in text_of(screen, "#dataset-verdict"), "re-check")
        assert_alive(app, "after the re-check")


async def test_a_full_disk_while_b_builds_the_demo_is_a_message(panel, tmp_path, monkeypatch):
    import engine.data.demo

    real_write = engine.data.demo.write_demo
    target = tmp_path / "dataset" / "SYNA.parquet"

    def full_disk(out, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(engine.data.demo, "write_demo", full_disk)
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = dataset_screen(app)
        await wait_for(pilot, lambda: screen.summary is not None, "the read")
        await pilot.press("b")
        await wait_for(pilot, lambda: "error" in text_of(screen, "#dataset-message"), "error")
        await pilot.pause()
        assert_alive(app, "after ENOSPC in the demo build")
        message = text_of(screen, "#dataset-message")
        assert "No space left on device" in message and str(target) in message
        assert "press b again" in message and "\n" not in message.strip()
        assert any("No space left on device" in m for m in notified(app))
        assert not screen.building
        # Space is back: b builds.
        monkeypatch.setattr(engine.data.demo, "write_demo", real_write)
        await pilot.press("b")
        await wait_for(pilot, lambda: "ready" in text_of(screen, "#dataset-message"), "build", 60)
        assert (tmp_path / "dataset" / "manifest.json").exists()
        assert_alive(app, "after the rebuild")


def alpaca_config(tmp_path: Path) -> Path:
    """The harness's config folder gets an Alpaca config building AAPL and MSFT (2 chunks each)."""
    import yaml

    cfg = yaml.safe_load((tmp_path / "demo.yaml").read_text())
    cfg["dataset_path"] = str(tmp_path / "alpaca-ds")
    cfg["data"] = {
        "source": "alpaca",
        "tickers": ["AAPL", "MSFT"],
        "start": "2020-06-01",
        "end": "2021-03-01",
        "feed": "iex",
        "adjustment": "all",
        "macro": [],
    }
    path = tmp_path / "alpaca.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return tmp_path / "alpaca-ds"


async def build_from_the_alpaca_config(app, pilot):
    """a, choose alpaca.yaml, Enter: the detached build starts."""
    screen = dataset_screen(app)
    await wait_for(pilot, lambda: screen.summary is not None and screen.configs is not None, "read")
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(app.screen, BuildFormScreen), "the form")
    form = app.screen
    names = [c.name for c in form.configs]
    form.query_one("#build-configs").highlighted = names.index("alpaca.yaml")
    await wait_for(pilot, lambda: form.choice.name == "alpaca.yaml", "the config")
    await pilot.click("#build")
    await wait_for(pilot, lambda: app.screen is screen, "the form to close")
    return screen


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    with FakeAlpaca() as fake:
        monkeypatch.setenv(alpaca.ENV_DATA_URL, fake.url)
        yield fake


async def test_a_full_disk_during_a_detached_build_is_a_line_and_r_resumes(
    panel, tmp_path, monkeypatch, keys
):
    out = alpaca_config(tmp_path)
    monkeypatch.setenv(builder.BUILD_FAULT_ENV, "enospc@2")
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await build_from_the_alpaca_config(app, pilot)
        await wait_for(
            pilot,
            lambda: screen.build is not None and screen.build.state == "failed",
            "failure",
            60,
        )
        await pilot.pause()
        assert_alive(app, "after ENOSPC in the detached build")
        line = text_of(screen, "#dataset-build")
        assert "failed at 1/4 chunks: No space left on device (" in line and "AAPL.parquet" in line
        assert "r resumes" in line and KEY_ID not in line and SECRET not in line
        assert any("No space left on device" in m for m in notified(app))
        # Space is back: r resumes after the stored chunk.
        monkeypatch.delenv(builder.BUILD_FAULT_ENV)
        keys.reset()
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.build.state == "done", "the resumed build", 60)
        assert len(keys.chunk_counts()) == 3  # AAPL's first chunk was not downloaded again
        assert (out / "manifest.json").exists()
        for proc in screen.procs:
            proc.wait(timeout=30)
        assert_alive(app, "after the resume")


@pytest.mark.parametrize(
    "content",
    [
        b"{half a file",
        b'{"state": "running", "done": "x", "total": [], "series": [1, {"ticker": 2}]}',
    ],
)
async def test_a_garbage_status_file_is_a_line_not_an_exit(panel, tmp_path, content):
    path = builder.build_status_path(tmp_path / "dataset")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = dataset_screen(app)
        await wait_for(pilot, lambda: screen.build is not None, "the status")
        await pilot.pause()
        assert_alive(app, "after reading a garbage status file")
        line = text_of(screen, "#dataset-build")
        assert line.startswith(f"build into {tmp_path / 'dataset'}")
        assert "\n" not in line.strip()
        await pilot.press("r", "x", "c")
        await pilot.pause()
        assert_alive(app, "after r, x and c on a garbage status")


async def test_r_and_x_without_a_build_say_so(panel):
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = dataset_screen(app)
        await wait_for(pilot, lambda: screen.configs is not None, "the scan")
        await pilot.press("r")
        assert "nothing to resume (no build)" in text_of(screen, "#dataset-message")
        await pilot.press("x")
        assert "no build is running" in text_of(screen, "#dataset-message")
