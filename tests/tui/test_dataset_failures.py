"""Dataset workers that fail with what is not a PloutosError (pandas on an absurd date, a full
disk) leave a message on screen; the panel stays up and the next action works."""

from __future__ import annotations

import errno
from pathlib import Path

import pandas as pd
import pytest
from textual.widgets import Static

from ploutos_tui.screens.dataset import DatasetScreen
from tests.tui.panel_harness import assert_alive, make_panel, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def panel(tmp_path, monkeypatch):
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


async def build_aapl_from_the_form(app, pilot):
    """Open the Alpaca form on the dataset screen, build AAPL, wait for the error message."""
    screen = dataset_screen(app)
    await wait_for(pilot, lambda: screen.summary is not None, "the read")
    await pilot.press("a")
    await wait_for(pilot, lambda: app.screen is not screen, "the form")
    app.screen.query_one("#tickers").value = "AAPL"
    await pilot.click("#build")
    await wait_for(pilot, lambda: "error" in text_of(screen, "#dataset-message"), "error")
    return screen


async def test_a_full_disk_during_an_alpaca_build_is_a_message(panel, tmp_path, monkeypatch):
    import engine.data.builder

    def full_disk(root, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(root) / "AAPL.parquet"))

    monkeypatch.setattr(engine.data.builder, "build_alpaca", full_disk)
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await build_aapl_from_the_form(app, pilot)
        await pilot.pause()
        assert_alive(app, "after ENOSPC in the Alpaca build")
        message = text_of(screen, "#dataset-message")
        assert "No space left on device" in message and "AAPL.parquet" in message
        assert "press a again" in message
        assert not screen.building


async def test_a_builder_bug_in_the_progress_report_is_a_message(panel, tmp_path, monkeypatch):
    """A plain bug under the build (here: a progress step without ``done``/``total``) ends as a
    message naming it, not as the panel's exit."""
    import engine.data.builder

    def reports_garbage(root, *args, progress=None, **kwargs):
        progress(object())  # no .done / .total: AttributeError in the screen's callback
        raise AssertionError("not reached")

    monkeypatch.setattr(engine.data.builder, "build_alpaca", reports_garbage)
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await build_aapl_from_the_form(app, pilot)
        await pilot.pause()
        assert_alive(app, "after a failing progress report")
        assert "AttributeError" in text_of(screen, "#dataset-message")
        assert not screen.building
