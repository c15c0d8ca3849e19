"""``ploutos-tui``: the keyboard-driven control panel.

For now it opens on a status screen; the hardware, jobs, run and dataset screens come with the
trainer.
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static

from engine import __version__


class PloutosApp(App[None]):
    TITLE = "Ploutos"
    SUB_TITLE = f"v{__version__}"
    BINDINGS = [("q", "quit", "Quit (jobs keep running)")]

    def compose(self) -> ComposeResult:
        from engine.threads import thread_limits, usable_cpus

        limits = thread_limits()
        yield Header()
        yield Static(
            f"Usable CPUs: {usable_cpus()}    thread limit: {limits.tightest or 'none'}\n\n"
            "Build the demo dataset with `ploutos dataset demo --out data/demo/`.",
            id="status",
        )
        yield Footer()


def main() -> None:
    PloutosApp().run()
