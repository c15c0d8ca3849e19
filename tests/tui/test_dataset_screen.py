"""The dataset screen: manifest and check, the Alpaca keys, the build form over the configs of
``config/``, and a build from a chosen config against the loopback Alpaca server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from textual.app import App
from textual.widgets import DataTable, Footer, Input, ProgressBar, Static

from engine.data import builder
from engine.data.builder import BuildStatus
from engine.data.sources import alpaca
from engine.runs import jobs
from ploutos_tui.model.builds import KEY_NAMES, ConfigChoice
from ploutos_tui.screens.dataset import (
    BuildFormScreen,
    DatasetScreen,
    DatasetSummary,
    summarize_dataset,
)
from tests.engine.alpaca_server import KEY_ID, SECRET, FakeAlpaca

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


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
        await pilot.pause(0.05)


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No remembered builds of this machine's user, no fault hook, the panel polling fast."""
    monkeypatch.setenv(jobs.BUILDS_FILE_ENV, str(tmp_path / "builds.json"))
    monkeypatch.delenv(builder.BUILD_FAULT_ENV, raising=False)
    monkeypatch.setattr(DatasetScreen, "POLL_S", 0.1)


@pytest.fixture
def small_demo(monkeypatch):
    import engine.data.demo

    real = engine.data.demo.write_demo
    monkeypatch.setattr(
        engine.data.demo,
        "write_demo",
        lambda out, **kw: real(out, **{"start": "2024-01-01", "end": "2024-03-31", **kw}),
    )


def configs_dir(tmp_path: Path, **alpaca_data) -> Path:
    """``config/`` with the demo config and an Alpaca one, each on its own folder under tmp."""
    folder = tmp_path / "config"
    folder.mkdir()
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    demo["dataset_path"] = str(tmp_path / "data" / "demo")
    (folder / "demo.yaml").write_text(yaml.safe_dump(demo))
    v8 = yaml.safe_load((REPO / "config" / "training_config_v8.yaml").read_text())
    v8["dataset_path"] = str(tmp_path / "data" / "v8")
    v8["data"].update(
        {"tickers": ["AAPL", "MSFT"], "start": "2019-06-01", "end": "2021-03-01", "macro": []}
    )
    v8["data"].update(alpaca_data)
    (folder / "training_config_v8.yaml").write_text(yaml.safe_dump(v8))
    (folder / "hardware.yaml").write_text((REPO / "config" / "hardware.yaml").read_text())
    return folder


def test_summary_lists_every_series_with_its_gaps(demo_dataset):
    summary = summarize_dataset(demo_dataset)
    assert summary.exists and summary.error is None
    symbols = [row[0] for row in summary.rows]
    assert symbols[:5] == ["SYNA", "SYNB", "SYNC", "SYND", "SYNE"]
    assert "^VIX" in symbols
    assert summary.verdict.startswith("check: clean")
    assert "source synthetic-demo" in summary.header


async def test_screen_shows_the_manifest_and_the_check(demo_dataset, isolated):
    screen = DatasetScreen(demo_dataset)
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: screen.summary is not None)
        table = screen.query_one("#dataset-table", DataTable)
        assert table.row_count == 9
        assert "check: clean" in text_of(screen, "#dataset-verdict")


async def test_b_builds_the_demo_dataset_into_an_empty_folder(tmp_path, isolated, small_demo):
    root = tmp_path / "demo"
    screen = DatasetScreen(root)
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: screen.summary is not None)
        assert not screen.summary.exists
        await pilot.press("b")
        await wait_until(pilot, lambda: screen.summary is not None and screen.summary.exists)
        assert (root / "manifest.json").exists()
        assert "demo dataset ready" in text_of(screen, "#dataset-message")


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        ({KEY_NAMES[0]: KEY_ID, KEY_NAMES[1]: SECRET}, ["APCA_API_KEY_ID set", "SECRET_KEY set"]),
        ({KEY_NAMES[0]: KEY_ID}, ["APCA_API_KEY_ID set", "APCA_API_SECRET_KEY NOT SET"]),
        ({KEY_NAMES[1]: "   "}, ["APCA_API_KEY_ID NOT SET", "APCA_API_SECRET_KEY NOT SET"]),
    ],
)
async def test_the_screen_says_which_key_is_set_never_its_value(tmp_path, isolated, env, shown):
    screen = DatasetScreen(tmp_path / "ds", env=env, config_dir=tmp_path)
    async with OneScreen(screen).run_test(size=(200, 30)) as pilot:
        await wait_until(pilot, lambda: screen.summary is not None)
        line = text_of(screen, "#dataset-keys")
        for part in shown:
            assert part in line
        assert KEY_ID not in line and SECRET not in line
        if "NOT SET" in line:  # names both variables and what to do
            assert "needs both APCA_API_KEY_ID and APCA_API_SECRET_KEY" in line
            assert "restart the panel" in line


def test_the_panel_spells_the_key_names_as_the_engine_does():
    import engine.api

    assert KEY_NAMES == (engine.api.ALPACA_ENV_KEY_ID, engine.api.ALPACA_ENV_SECRET_KEY)


async def open_form(pilot, screen) -> BuildFormScreen:
    await wait_until(pilot, lambda: screen.summary is not None and screen.configs is not None)
    await pilot.press("a")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, BuildFormScreen))
    await pilot.pause()
    return pilot.app.screen


def field(form, name: str) -> str:
    return form.query_one(f"#{name}", Input).value


async def test_the_form_lists_the_configs_and_fills_in_the_chosen_one(tmp_path, isolated):
    cfg = configs_dir(tmp_path)
    # Opened on the demo config's folder: the demo config is chosen, its own folder the target.
    screen = DatasetScreen(tmp_path / "data" / "demo", config_dir=cfg, env={})
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot, screen)
        assert [c.name for c in form.configs] == ["demo.yaml", "training_config_v8.yaml"]
        assert form.choice.name == "demo.yaml" and field(form, "out").endswith("data/demo")
        assert "synthetic demo data (no download, no keys)" in text_of(form, "#build-config-note")
        assert form.query(Footer)  # the form shows its own keys
        await pilot.press("down")
        assert form.choice.name == "training_config_v8.yaml"
        assert field(form, "out") == str(tmp_path / "data" / "v8")
        assert field(form, "tickers") == "AAPL,MSFT" and field(form, "start") == "2019-06-01"
        assert (field(form, "feed"), field(form, "adjustment"), field(form, "macro")) == (
            "iex",
            "all",
            "",
        )
        assert "APCA_API_KEY_ID NOT SET" in text_of(form, "#build-keys")
        await pilot.press("escape")
        await wait_until(pilot, lambda: pilot.app.screen is screen)


async def test_enter_in_a_field_submits_and_missing_keys_are_one_line_in_the_form(
    tmp_path, isolated
):
    cfg = configs_dir(tmp_path)
    screen = DatasetScreen(tmp_path / "data" / "v8", config_dir=cfg, env={})
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot, screen)
        assert form.choice.name == "training_config_v8.yaml"
        form.query_one("#tickers", Input).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: "not set" in text_of(form, "#build-problem"))
        problem = text_of(form, "#build-problem")
        assert problem.startswith("APCA_API_KEY_ID and APCA_API_SECRET_KEY are not set")
        assert "\n" not in problem.strip()
        assert pilot.app.screen is form and not (tmp_path / "data" / "v8").exists()
        # A bad date names its field.
        form.query_one("#start", Input).value = "2019-13-01"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "start:" in text_of(form, "#build-problem"))
        assert "YYYY-MM-DD" in text_of(form, "#build-problem")


async def test_a_folder_holding_another_dataset_is_refused_naming_the_out_field(
    tmp_path, isolated, demo_dataset
):
    cfg = configs_dir(tmp_path)
    env = {KEY_NAMES[0]: KEY_ID, KEY_NAMES[1]: SECRET}
    screen = DatasetScreen(tmp_path / "data" / "v8", config_dir=cfg, env=env)
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot, screen)
        form.query_one("#out", Input).value = str(demo_dataset)
        await pilot.click("#build")
        await wait_until(pilot, lambda: "another dataset" in text_of(form, "#build-problem"))
        problem = text_of(form, "#build-problem")
        assert "source 'synthetic-demo'" in problem and "type another folder in 'out'" in problem
        assert KEY_ID not in problem and SECRET not in problem


async def test_the_demo_config_writes_the_demo_into_its_folder(tmp_path, isolated, small_demo):
    cfg = configs_dir(tmp_path)
    screen = DatasetScreen(tmp_path / "data" / "demo", config_dir=cfg, env={})
    async with OneScreen(screen).run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot, screen)
        assert form.choice.name == "demo.yaml"
        await pilot.press("enter")  # on the list: choose it, the cursor goes to the folder
        assert form.focused is form.query_one("#out", Input)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "demo dataset ready" in text_of(screen, "#dataset-message"))
        assert (tmp_path / "data" / "demo" / "manifest.json").exists()


async def test_a_build_from_a_chosen_config_against_the_loopback_alpaca_server(
    tmp_path, isolated, monkeypatch
):
    """a, choose the Alpaca config, enter, enter: a detached `ploutos dataset build` downloads
    from the loopback server; the screen shows per-ticker chunks, then the new dataset."""
    cfg = configs_dir(tmp_path)
    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    out = tmp_path / "data" / "v8"
    with FakeAlpaca(page_size=1000) as fake:
        monkeypatch.setenv(alpaca.ENV_DATA_URL, fake.url)
        screen = DatasetScreen(tmp_path / "data" / "demo", config_dir=cfg)
        async with OneScreen(screen).run_test(size=(120, 36)) as pilot:
            form = await open_form(pilot, screen)
            assert "APCA_API_KEY_ID set, APCA_API_SECRET_KEY set" in text_of(form, "#build-keys")
            await pilot.press("down", "enter")  # the Alpaca config; the cursor goes to `out`
            assert form.choice.name == "training_config_v8.yaml"
            await pilot.press("enter")
            await wait_until(pilot, lambda: pilot.app.screen is screen)
            await wait_until(
                pilot, lambda: screen.build is not None and screen.build.state == "done"
            )
            await wait_until(pilot, lambda: screen.summary.exists and screen.summary.root == out)
            assert screen.root == out
            assert "done, 6/6 chunks" in text_of(screen, "#dataset-build")
            builds = screen.query_one("#dataset-build-table", DataTable)
            rows = [builds.get_row_at(i) for i in range(builds.row_count)]
            assert [(r[0], r[2], r[4]) for r in rows] == [
                ("AAPL", "3/3", "done"),
                ("MSFT", "3/3", "done"),
            ]
            bar = screen.query_one("#dataset-progress", ProgressBar)
            assert bar.total == 6 and bar.progress == 6
            assert screen.query_one("#dataset-table", DataTable).row_count == 2
            assert len(fake.chunk_counts()) == 6
            for proc in screen.procs:
                assert proc.wait(timeout=30) == 0
    for path in out.rglob("*"):
        if path.is_file():
            assert (
                SECRET.encode() not in path.read_bytes()
                and KEY_ID.encode() not in path.read_bytes()
            )


# ---------------------------------------------------------------------------------------------
# snapshots: a build in progress, and the form, at 80x24 and 200x50
# ---------------------------------------------------------------------------------------------

RECORDED = DatasetSummary(
    root=Path("data/dataset_v8"),
    exists=True,
    header="data/dataset_v8  source alpaca, feed iex, adjustment all, 1h bars, macro 1d from "
    "yahoo, updated 2026-11-27 12:00 UTC",
    rows=(
        ("AAPL", "bars", "27,002", "2019-01-02", "2026-11-26", "41 (0.3 %)", "ok"),
        ("MSFT", "bars", "27,002", "2019-01-02", "2026-11-26", "41 (0.3 %)", "ok"),
        ("NVDA", "bars", "11,340", "2019-01-02", "2022-05-31", "12 (0.1 %)", "ok"),
    ),
    verdict="check: clean (1 warnings, 5 notes)",
)
TICKERS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "XOM", "JNJ")
SERIES = [
    {"kind": "bars", "ticker": t, "chunks": 8, "done": d, "rows": 3_400 * d}
    for t, d in zip(TICKERS, (8, 8, 3, 0, 0, 0, 0, 0, 0, 0), strict=True)
] + [{"kind": "macro", "ticker": "^VIX", "chunks": 1, "done": 0, "rows": 0}]
LIVE = BuildStatus(
    root=Path("data/dataset_v8"),
    state="running",
    pid=48213,
    data={
        "state": "running",
        "done": 19,
        "total": 81,
        "current": {
            "index": 20,
            "kind": "bars",
            "ticker": "NVDA",
            "start": "2022-01-01T00:00:00+00:00",
            "end": "2023-01-01T00:00:00+00:00",
        },
        "series": SERIES,
        "seconds_per_chunk": 4.2,
        "eta_s": 260.4,
        "command": ["dataset", "build"],
    },
)
CONFIGS = [
    ConfigChoice(
        Path("config/demo.yaml"),
        "synthetic-demo",
        "data/demo",
        ("SYNA", "SYNB", "SYNC", "SYND", "SYNE"),
        "2018-01-01",
        "2024-12-31",
        macro=("^VIX", "^TNX", "DX-Y.NYB", "SPY"),
    ),
    ConfigChoice(
        Path("config/training_config_v8.yaml"),
        "alpaca",
        "data/dataset_v8",
        TICKERS,
        "2019-01-01",
        macro=("^VIX", "^TNX", "DX-Y.NYB", "SPY"),
    ),
]
KEYS_SET = {KEY_NAMES[0]: "x" * 20, KEY_NAMES[1]: "y" * 30}


def recorded_screen(env) -> DatasetScreen:
    return DatasetScreen(
        Path("data/dataset_v8"),
        summarize=lambda root: RECORDED,
        read_configs=lambda: CONFIGS,
        read_status=lambda root: LIVE,
        recent=list,
        env=env,
    )


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_snapshot_dataset_screen_with_a_build_running(snap_compare, size):
    app = OneScreen(recorded_screen(KEYS_SET))

    async def loaded(pilot):
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.summary is not None and screen.build is not None)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=loaded)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_snapshot_build_form_on_the_alpaca_config_without_a_secret(snap_compare, size):
    app = OneScreen(recorded_screen({KEY_NAMES[0]: "x" * 20}))

    async def form_open(pilot):
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.summary is not None and screen.configs is not None)
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, BuildFormScreen))
        form = pilot.app.screen
        # Opened on data/dataset_v8: the config building it is the one chosen.
        await wait_until(pilot, lambda: form.choice is CONFIGS[1])
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=form_open)
