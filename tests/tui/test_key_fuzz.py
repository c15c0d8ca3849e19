"""A panel never dies of a key press: seeded random key sequences on every screen of the real app.

Each step presses one key through Pilot, or a burst of keys queued at once (a fast typist: the
next key arrives before the previous one is handled), then checks that the app still runs, has
not recorded an exception, and still answers (``pilot.pause()`` returns only once the message
queue is idle). Half the keys are the footer keys of the screen shown at that moment, the others
come from one fixed pool: every binding of every screen, the command palette, escape, enter,
tab, arrows, page keys and unbound letters. The sequence is a function of the seed and of the
screens the keys themselves open, so a failure names the seed and step that replay it.

The panel is the one of :mod:`tests.tui.panel_harness`: no trainer, no network, ``q`` counted.
"""

from __future__ import annotations

import random
import threading

import pytest
from textual.app import App
from textual.binding import Binding

from ploutos_tui.app import HelpScreen, PloutosApp
from ploutos_tui.screens.dataset import AlpacaBuildScreen, DatasetScreen
from ploutos_tui.screens.hardware import HardwareScreen
from ploutos_tui.screens.jobs import JobsScreen, LaunchScreen
from ploutos_tui.screens.run import LogScreen, RunScreen
from tests.tui.panel_harness import assert_alive, make_panel, send_burst, wait_for

# Keys pressed besides the screens' own bindings (Textual key names): the palette, focus and
# cursor keys, letters that are bound nowhere or only on another screen.
EXTRA_KEYS = (
    "ctrl+p",
    "escape",
    "enter",
    "tab",
    "shift+tab",
    "up",
    "down",
    "pageup",
    "pagedown",
    "home",
    "end",
    "space",
    "backspace",
    "e",
    "k",
    "w",
    "x",
    "1",
)


def binding_keys(*owners: type) -> set[str]:
    """Every key of the ``BINDINGS`` of ``owners`` ("escape,q" is two keys)."""
    keys: set[str] = set()
    for owner in owners:
        for binding in owner.BINDINGS:
            spec = binding.key if isinstance(binding, Binding) else binding[0]
            keys.update(k.strip() for k in spec.split(","))
    return keys


# Every key bound anywhere in the panel, pressed on every screen (a key bound on another screen
# must do nothing harmful here either).
SCREENS = (
    PloutosApp,
    HelpScreen,
    HardwareScreen,
    JobsScreen,
    LaunchScreen,
    RunScreen,
    LogScreen,
    DatasetScreen,
    AlpacaBuildScreen,
)
POOL = tuple(sorted(binding_keys(*SCREENS) | set(EXTRA_KEYS)))


@pytest.fixture
def panel(tmp_path, monkeypatch):
    return make_panel(tmp_path, monkeypatch)


def footer_keys(app: App) -> set[str]:
    """The keys the footer shows now (the bindings of the screen on top and of the app)."""
    return {key for key, active in app.active_bindings.items() if active.binding.show}


def pick(rng: random.Random, footer: list[str]) -> str:
    """A footer key of the screen shown (half the time), else any key of the pool."""
    return rng.choice(footer if footer and rng.random() < 0.5 else POOL)


async def fuzz(pilot, seed: int, steps: int, visited: set[str]) -> list[str]:
    """Press ``steps`` random single keys or bursts; return every key sent, in order. The names
    of the screens shown after each step are added to ``visited``."""
    app = pilot.app
    rng = random.Random(seed)
    sent: list[str] = []
    for step in range(steps):
        footer = sorted(footer_keys(app))
        unpooled = set(footer) - set(POOL)
        assert not unpooled, f"footer keys missing from POOL: {sorted(unpooled)}"

        if rng.random() < 0.6:
            burst = [pick(rng, footer) for _ in range(rng.randint(2, 5))]
            send_burst(app, burst)
        else:
            burst = [pick(rng, footer)]
            await pilot.press(*burst)
        sent.extend(burst)
        await pilot.pause()
        assert_alive(app, f"(seed {seed}, step {step}, last keys {sent[-8:]})")
        visited.add(type(app.screen).__name__)
    return sent


def palette_options(app: App) -> list[str]:
    """The prompts the open command palette lists now (empty when none is open)."""
    from textual.command import CommandList

    try:
        options = app.screen.query_one(CommandList).options
    except Exception:  # noqa: BLE001 - no palette open (yet)
        return []
    return [str(option.prompt) for option in options]


# (start screen, seed): every screen ("run" opens a run from the jobs list first). With these
# seeds, the keys open every screen and modal of the panel (the palette, the launch and Alpaca
# forms, the log and help included) at least once per case but one (jobs-1 opens no palette).
STEPS = 50
CASES = [("hardware", 4), ("jobs", 1), ("dataset", 4), ("run", 4)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("start", "seed"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
async def test_random_keys_never_kill_the_panel(panel, start: str, seed: int) -> None:
    app = panel("jobs" if start == "run" else start)
    async with app.run_test(size=(120, 40)) as pilot:
        if start == "run":
            await wait_for(
                pilot, lambda: app.screen.query("#jobs") and app.screen.snapshots, "runs"
            )
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        await pilot.pause()
        visited: set[str] = set()
        await fuzz(pilot, seed, steps=STEPS, visited=visited)
        # Still answering: a key still changes the screen after the storm.
        await pilot.press("escape", "escape", "escape", "h")
        await wait_for(pilot, lambda: app.current_mode == "hardware", "the hardware screen")
        assert_alive(app, "after the storm")


@pytest.mark.timeout(60)
async def test_palette_enter_enter_within_a_second_keeps_the_panel(panel) -> None:
    """The reported sequence: ctrl+p, enter, enter faster than the palette closes."""
    app = panel("hardware")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for burst in (["ctrl+p", "enter", "enter"], ["ctrl+p", "enter", "enter", "enter"]):
            send_burst(app, burst)
            await pilot.pause(0.3)
            assert_alive(app, f"after {burst}")
            await pilot.press("escape", "escape")
        await pilot.press("ctrl+p", *"show jobs")
        await wait_for(pilot, lambda: "Show jobs" in str(palette_options(app)), "the command")
        send_burst(app, ["enter", "enter", "enter"])
        await wait_for(pilot, lambda: app.current_mode == "jobs", "the jobs screen")
        assert_alive(app, "after a palette mode switch")
        assert len(app.screen_stack) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "keys", [["ctrl+p", "pageup"], ["ctrl+p", "pagedown"], ["escape", "ctrl+p", "home", "r"]]
)
async def test_page_keys_as_the_palette_opens_keep_the_panel(panel, keys: list[str]) -> None:
    """ctrl+p and a page key (and a letter) in one burst: the palette's list is not laid out
    yet when the key, or the search the letter starts, reaches it."""
    app = panel("hardware")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        send_burst(app, keys)
        await pilot.pause(0.3)
        assert_alive(app, f"after {keys}")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(app.screen_stack) == 1, "the palette to close")


@pytest.mark.timeout(60)
async def test_a_form_popped_from_under_its_escape_leaves_the_dataset_screen(panel) -> None:
    """The Alpaca form is popped by someone else (a stray second dismiss of a palette above it
    did that) before the escape queued for it runs: that escape must not pop the dataset
    screen, the mode's last one."""
    app = panel("dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: getattr(app.screen, "summary", None) is not None, "read")
        dataset = app.screen
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, AlpacaBuildScreen), "the form")
        form = app.screen
        app.pop_screen()
        form.action_cancel()  # what its queued escape binding runs
        form.dismiss({"tickers": "", "start": "", "feed": "iex"})  # or its queued Build press
        await pilot.pause(0.3)
        assert_alive(app, "after the form's late escape")
        assert app.screen is dataset and not dataset.building


def launch_finished(app: App) -> bool:
    return not any(w.group == "launch" and not w.is_finished for w in app.workers)


@pytest.mark.timeout(60)
async def test_a_launch_that_finishes_while_another_mode_shows_closes_its_own_form(panel):
    """Launch, switch to the hardware screen while the run is being prepared, let it finish:
    the form closes when the jobs screen is back, and the hardware screen is not popped."""
    app = panel("jobs")
    gate = threading.Event()
    app.watcher.launch_gate = gate
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), "the jobs screen")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen), "the form")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: app.watcher.calls, "the launch to start")
        app.switch_mode("hardware")  # what the palette's "Show hardware" runs (h types here)
        await wait_for(pilot, lambda: app.current_mode == "hardware", "the hardware screen")
        gate.set()
        await wait_for(pilot, lambda: launch_finished(app), "the launch to finish")
        await pilot.pause(0.3)
        assert_alive(app, "after a launch finished under another mode")
        assert isinstance(app.screen, HardwareScreen)
        await pilot.press("j")
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), "the form to close")
        await wait_for(pilot, lambda: "20990101-000001-demo-beef" in app.screen._keys, "new run")
        assert_alive(app, "back on the jobs screen")
