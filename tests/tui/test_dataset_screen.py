"""The dataset screen: manifest and check of a real dataset, demo and Alpaca builds from keys."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.widgets import DataTable, ProgressBar, Static

from engine.data.sources import alpaca
from ploutos_tui.screens.dataset import DatasetScreen, DatasetSummary, summarize_dataset
from tests.engine.alpaca_server import KEY_ID, SECRET, FakeAlpaca


class OneScreen(App[None]):
    def __init__(self, screen) -> None:
        super().__init__()
        self._screen = screen

    def on_mount(self) -> None:
        self.push_screen(self._screen)


async def wait_until(pilot, predicate, timeout=60.0):
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await pilot.pause(0.1)


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def test_summary_lists_every_series_with_its_gaps(demo_dataset):
    summary = summarize_dataset(demo_dataset)
    assert summary.exists and summary.error is None
    symbols = [row[0] for row in summary.rows]
    assert symbols[:5] == ["SYNA", "SYNB", "SYNC", "SYND", "SYNE"]
    assert "^VIX" in symbols
    assert summary.verdict.startswith("check: clean")
    assert "source synthetic-demo" in summary.header


async def test_screen_shows_the_manifest_and_the_check(demo_dataset):
    screen = DatasetScreen(demo_dataset)
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: screen.summary is not None)
        table = screen.query_one("#dataset-table", DataTable)
        assert table.row_count == 9
        assert "check: clean" in text_of(screen, "#dataset-verdict")


async def test_b_builds_the_demo_dataset_into_an_empty_folder(tmp_path):
    root = tmp_path / "demo"
    screen = DatasetScreen(root)
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: screen.summary is not None)
        assert not screen.summary.exists
        await pilot.press("b")
        await wait_until(pilot, lambda: screen.summary is not None and screen.summary.exists)
        assert (root / "manifest.json").exists()
        assert "demo dataset ready" in text_of(screen, "#dataset-message")


async def test_a_builds_from_alpaca_with_a_progress_bar(tmp_path, monkeypatch):
    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    root = tmp_path / "alpaca"
    with FakeAlpaca(page_size=500) as fake:
        monkeypatch.setenv(alpaca.ENV_DATA_URL, fake.url)
        screen = DatasetScreen(root)
        async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: screen.summary is not None)
            await pilot.press("a")
            await pilot.pause()
            form = pilot.app.screen
            form.query_one("#tickers").value = "AAPL,MSFT"
            form.query_one("#start").value = "2026-09-01"
            await pilot.click("#build")
            await wait_until(
                pilot, lambda: "Alpaca build done" in text_of(screen, "#dataset-message")
            )
            bar = screen.query_one("#dataset-progress", ProgressBar)
            assert bar.total and bar.progress == bar.total
            assert screen.query_one("#dataset-table", DataTable).row_count == 2
            assert SECRET not in text_of(screen, "#dataset-message")


async def test_a_missing_key_is_one_line_in_the_screen(tmp_path, monkeypatch):
    monkeypatch.delenv(alpaca.ENV_KEY_ID, raising=False)
    monkeypatch.delenv(alpaca.ENV_SECRET_KEY, raising=False)
    screen = DatasetScreen(tmp_path / "x")
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: screen.summary is not None)
        await pilot.press("a")
        await pilot.pause()
        pilot.app.screen.query_one("#tickers").value = "AAPL"
        await pilot.click("#build")
        await wait_until(pilot, lambda: "error" in text_of(screen, "#dataset-message"))
        message = text_of(screen, "#dataset-message")
        assert "APCA_API_KEY_ID" in message and "\n" not in message.strip()
    assert not (tmp_path / "x" / "manifest.json").exists()


RECORDED = DatasetSummary(
    root=Path("data/demo"),
    exists=True,
    header="data/demo  source synthetic-demo, 1h bars, macro 1d from synthetic-demo, "
    "updated 2026-11-27 12:00 UTC",
    rows=(
        ("SYNA", "bars", "28,131", "2018-01-02", "2025-01-01", "0 (0.0 %)", "ok"),
        ("SYNB", "bars", "28,131", "2018-01-02", "2025-01-01", "0 (0.0 %)", "ok"),
        (
            "AAPL",
            "bars",
            "27,002",
            "2019-01-02",
            "2026-11-26",
            "41 (0.3 %)",
            "41 regular bars missing",
        ),
        ("^VIX", "macro", "1,764", "2018-01-02", "2024-12-31", "-", "ok"),
    ),
    verdict="check: clean (1 warnings, 5 notes)",
)


def test_dataset_screen_snapshot(snap_compare):
    app = OneScreen(DatasetScreen(Path("data/demo"), summarize=lambda root: RECORDED))

    async def loaded(pilot):
        await wait_until(pilot, lambda: pilot.app.screen.summary is not None)

    assert snap_compare(app, terminal_size=(80, 24), run_before=loaded)
