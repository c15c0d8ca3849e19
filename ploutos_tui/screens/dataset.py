"""The dataset screen: what the manifest says, what `ploutos dataset check` finds, and builds.

Reading, checking and building all run in worker threads; the screen only draws their results.
A build started here runs inside the panel (quitting stops it; a rerun resumes after the last
finished chunk, as `ploutos dataset build` does).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState

from ploutos_tui.screens.modal import PanelModal


@dataclass(frozen=True)
class DatasetSummary:
    """The manifest and check report of one dataset folder, ready to draw."""

    root: Path
    exists: bool
    header: str
    rows: tuple[tuple[str, ...], ...]
    verdict: str
    error: str | None = None


def summarize_dataset(root: Path, check: bool = True) -> DatasetSummary:
    """Manifest + check of ``root`` (blocking: call it from a worker thread)."""
    from engine.api import Dataset, manifest_path
    from engine.errors import PloutosError

    if not manifest_path(root).exists():
        return DatasetSummary(
            root, False, f"{root}: no dataset yet (press b for the demo dataset)", (), ""
        )
    try:
        manifest = Dataset(root).manifest
        report = None
        if check:
            from engine.api import check_dataset

            report = check_dataset(root)
    except PloutosError as err:
        return DatasetSummary(root, True, str(root), (), "", error=str(err))
    m = manifest
    header = (
        f"{root}  source {m.source}"
        + (f", feed {m.feed}" if m.feed else "")
        + (f", adjustment {m.adjustment}" if m.adjustment else "")
        + f", {m.timeframe} bars, macro {m.macro_interval} from {m.macro_source or '-'}"
        + f", updated {m.updated_utc:%Y-%m-%d %H:%M} UTC"
    )
    checked = {(s.symbol, s.kind): s for s in report.series} if report else {}
    rows = []
    for kind, entries in (("bars", m.tickers), ("macro", m.macro)):
        for symbol, entry in entries.items():
            s = checked.get((symbol, kind))
            gaps = "-"
            problems = "-"
            if s is not None:
                expected = s.counts.get("expected_regular")
                missing = s.counts.get("missing_regular")
                if expected:
                    gaps = f"{missing:,} ({100 * missing / expected:.1f} %)"
                bad = [f for f in s.findings if f.severity in ("error", "warning")]
                problems = "; ".join(f.message for f in bad)[:80] if bad else "ok"
            rows.append(
                (
                    symbol,
                    kind,
                    f"{entry.rows:,}",
                    f"{entry.first:%Y-%m-%d}" if entry.first else "-",
                    f"{entry.last:%Y-%m-%d}" if entry.last else "-",
                    gaps,
                    problems,
                )
            )
    if report is None:
        verdict = "not checked"
    elif report.ok:
        verdict = f"check: clean ({report.count('warning')} warnings, {report.count('info')} notes)"
    else:
        verdict = f"check: {report.count('error')} errors (see `ploutos dataset check {root}`)"
    return DatasetSummary(root, True, header, tuple(rows), verdict)


def failure_line(action: str, err: BaseException, then: str) -> str:
    """One line for an error a dataset worker did not expect (not a PloutosError): what failed,
    why (``OSError``: its message and file, e.g. a full disk), and ``then``, what to do next.

    The Alpaca keys of the environment never appear in it, whatever the exception says.
    """
    if isinstance(err, OSError) and err.strerror:
        why = err.strerror + (f" ({err.filename})" if err.filename else "")
    else:
        why = f"{type(err).__name__}: {err}"
    text = " ".join(f"error: {action} failed: {why}; {then}".split())
    from engine.api import ALPACA_ENV_KEY_ID, ALPACA_ENV_SECRET_KEY

    for name in (ALPACA_ENV_KEY_ID, ALPACA_ENV_SECRET_KEY):
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class AlpacaBuildScreen(PanelModal[dict[str, str] | None]):
    """Tickers, start date and feed for an Alpaca build (keys come from the environment)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    AlpacaBuildScreen { align: center middle; }
    #alpaca-form { width: 72; height: auto; border: round $accent; padding: 1 2; }
    #alpaca-form Input { margin-bottom: 1; }
    """

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def compose(self) -> ComposeResult:
        with Vertical(id="alpaca-form"):
            yield Label(
                f"Build or update {self.out} from Alpaca (keys: APCA_API_KEY_ID / ..._SECRET_KEY)"
            )
            yield Input(
                placeholder="AAPL,MSFT,NVDA (empty: update the stored tickers)", id="tickers"
            )
            yield Input(value="2019-01-01", placeholder="start (YYYY-MM-DD)", id="start")
            yield Input(value="iex", placeholder="feed: iex or sip", id="feed")
            with Horizontal():
                yield Button("Build", variant="primary", id="build")
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed, "#build")
    def _build(self) -> None:
        self.dismiss(
            {
                "tickers": self.query_one("#tickers", Input).value.strip(),
                "start": self.query_one("#start", Input).value.strip(),
                "feed": self.query_one("#feed", Input).value.strip() or "iex",
            }
        )

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class DatasetScreen(Screen[None]):
    """Manifest, check results and build actions for the config's dataset folder."""

    BINDINGS = [
        Binding("b", "build_demo", "Build demo dataset"),
        Binding("a", "build_alpaca", "Build/update from Alpaca"),
        Binding("c", "refresh", "Re-check"),
    ]
    DEFAULT_CSS = """
    #dataset-header { height: auto; padding: 0 1; }
    #dataset-verdict { height: auto; padding: 0 1; color: $text-muted; }
    #dataset-progress { height: auto; padding: 0 1; }
    #dataset-message { height: auto; padding: 0 1; }
    #dataset-table { height: 1fr; }
    """

    def __init__(
        self, root: Path, summarize: Callable[[Path], DatasetSummary] | None = None
    ) -> None:
        super().__init__()
        self.root = Path(root)
        # Injectable so snapshot tests can draw a recorded summary.
        self.summarize = summarize or summarize_dataset
        self.summary: DatasetSummary | None = None
        self.building = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("reading ...", id="dataset-header")
        yield Static("", id="dataset-verdict")
        yield ProgressBar(total=None, show_eta=False, id="dataset-progress")
        yield Static("", id="dataset-message")
        table: DataTable[str] = DataTable(id="dataset-table", cursor_type="row")
        table.add_columns("symbol", "kind", "rows", "first", "last", "missing regular", "check")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#dataset-progress").display = False
        self.action_refresh()

    def action_refresh(self) -> None:
        self.query_one("#dataset-verdict", Static).update("checking ...")
        self._load()

    @work(thread=True, exclusive=True, group="dataset-read", exit_on_error=False)
    def _load(self) -> None:
        try:
            summary = self.summarize(self.root)
        except Exception as err:  # a file pandas or the check cannot take: say so, stay up
            summary = self._unreadable(err)
        self.app.call_from_thread(self._show, summary)

    def _unreadable(self, err: BaseException) -> DatasetSummary:
        return DatasetSummary(
            self.root,
            True,
            str(self.root),
            (),
            "",
            error=failure_line(
                f"reading {self.root}", err, "fix or rebuild the dataset, then press c"
            ),
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The last line of defence: a worker that raised anyway (even while reporting) ends as
        a message on screen, never as the panel's exit."""
        if event.state != WorkerState.ERROR or event.worker.error is None:
            return
        err = event.worker.error
        if event.worker.group == "dataset-read":
            self._show(self._unreadable(err))
        elif event.worker.group == "dataset-build":
            self._build_done(failure_line(f"the build into {self.root}", err, "try again"))

    def _show(self, summary: DatasetSummary) -> None:
        self.summary = summary
        if summary.error and summary.error.startswith("error:"):
            self.notify(summary.error, severity="error", timeout=10)
        self.query_one("#dataset-header", Static).update(summary.header)
        self.query_one("#dataset-verdict", Static).update(summary.error or summary.verdict)
        table = self.query_one("#dataset-table", DataTable)
        table.clear()
        for row in summary.rows:
            table.add_row(*row)

    def _message(self, text: str) -> None:
        self.query_one("#dataset-message", Static).update(text)

    def action_build_demo(self) -> None:
        if self.building:
            return
        self.building = True
        self._message(f"writing the demo dataset into {self.root} ...")
        self._build_demo()

    @work(thread=True, exclusive=True, group="dataset-build", exit_on_error=False)
    def _build_demo(self) -> None:
        from engine.api import write_demo
        from engine.errors import PloutosError

        try:
            manifest = write_demo(self.root)
            text = (
                f"demo dataset ready: {len(manifest.tickers)} tickers, {len(manifest.macro)} macro"
            )
        except PloutosError as err:
            text = f"error: {err}"
        except Exception as err:  # e.g. a full disk: a message, not the panel's exit
            text = failure_line(
                f"writing the demo dataset into {self.root}", err, "fix it, then press b again"
            )
        self.app.call_from_thread(self._build_done, text)

    def _build_done(self, text: str) -> None:
        self.building = False
        self.query_one("#dataset-progress").display = False
        self._message(text)
        if text.startswith("error:"):
            self.notify(text, severity="error", timeout=10)
        self.action_refresh()

    def action_build_alpaca(self) -> None:
        if self.building:
            return

        def start(form: dict[str, str] | None) -> None:
            if form is None:
                return
            self.building = True
            bar = self.query_one("#dataset-progress", ProgressBar)
            bar.update(total=None, progress=0)
            bar.display = True
            self._message("downloading from Alpaca ... (quitting stops it; a rerun resumes)")
            self._build_alpaca(form)

        self.app.push_screen(AlpacaBuildScreen(self.root), start)

    @work(thread=True, exclusive=True, group="dataset-build", exit_on_error=False)
    def _build_alpaca(self, form: dict[str, Any]) -> None:
        from engine.api import build_alpaca, parse_symbols
        from engine.errors import PloutosError

        def progress(step: Any) -> None:
            self.app.call_from_thread(self._progress, step.done, step.total, str(step))

        try:
            tickers = parse_symbols(form["tickers"]) if form["tickers"] else None
            manifest = build_alpaca(
                self.root,
                tickers,
                form["start"] or None,
                feed=form["feed"],
                adjustment="all",
                update=tickers is None,
                progress=progress,
            )
            text = f"Alpaca build done: {len(manifest.tickers)} tickers"
        except PloutosError as err:
            text = f"error: {err}"
        except Exception as err:  # e.g. a full disk: a message, not the panel's exit
            text = failure_line(
                f"the Alpaca build into {self.root}",
                err,
                "fix it, then press a again (the build resumes)",
            )
        self.app.call_from_thread(self._build_done, text)

    def _progress(self, done: int, total: int, text: str) -> None:
        self.query_one("#dataset-progress", ProgressBar).update(total=total, progress=done)
        self._message(text)
