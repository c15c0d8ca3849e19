"""Runs side by side: the runs marked in the jobs list (space), opened with ``c``.

One column per run: what differs in their ``config.yaml`` (dotted keys, only those that
differ), each fold's out-of-sample return against buy and hold (and buy and hold at the
ensemble's exposure where the run measured it), the Monte Carlo against the null policies, and
the verdict. The figures are the engine's (:func:`engine.api.compare_runs`), read once in a
worker thread; a figure a run does not have (a run from before verdicts, a failed one) is ``—``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, ScrollableContainer
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from ploutos_tui.screens.run import state_text
from ploutos_tui.widgets.verdict import DASH, pct

MARK_AT_LEAST_TWO = "Mark at least two runs in the jobs list (space marks a run), then press c."
NULL_LABELS = (("cash", "cash"), ("always_long", "always long"), ("random", "random"))
MAX_VALUE_CHARS = 24  # a config value longer than this wraps in its column
GAP = 4  # columns between the two halves when they fit side by side (margin-left below)


def config_value(value: Any) -> str:
    """A config value as YAML would write it, short: ``0.0003``, ``[32, 32]``, ``true``;
    ``(not set)`` where the run's config lacks the key; ``—`` where its config is unreadable."""
    from engine.api import MISSING

    if value is MISSING:
        return "(not set)"
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(config_value(v) for v in value) + "]"
    return str(value)


def run_header(run_id: str) -> str:
    """A run id in two lines (``20261127-214826`` / ``demo-36cd``) so columns stay narrow."""
    parts = run_id.split("-", 2)
    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
        return f"{parts[0]}-{parts[1]}\n{parts[2]}"
    return run_id


Row = tuple[str, list[str | Text]]
Section = tuple[str, list[Row]]


def results_sections(comparison: Any) -> list[Section]:
    """The runs, their config differences and their out-of-sample returns per fold."""
    runs = comparison.runs

    def each(value: Callable[[Any], str | Text]) -> list[str | Text]:
        return [value(r) for r in runs]

    overview: list[Row] = [
        ("state", each(lambda r: state_text(r.state))),
        ("config file", each(lambda r: r.config_source or DASH)),
        ("algorithm", each(lambda r: r.algorithm or DASH)),
        (
            "units (folds x members)",
            each(lambda r: f"{r.n_folds} x {r.ensemble}" if r.n_folds and r.ensemble else DASH),
        ),
    ]
    diffs = comparison.differences
    config: list[Row] = [(key, [config_value(v) for v in values]) for key, values in diffs]
    if not diffs:
        config.append(("(none: the same config.yaml)", [""] * len(runs)))
    oos: list[Row] = []
    for fold in comparison.fold_indices:
        oos.append((f"fold {fold} ensemble", _fold_cells(runs, fold, "oos_return")))
        oos.append((f"fold {fold} buy and hold", _fold_cells(runs, fold, "buy_and_hold_return")))
        if any(r.folds.get(fold, {}).get("matched_return") is not None for r in runs):
            oos.append(
                (f"fold {fold} B&H at its exposure", _fold_cells(runs, fold, "matched_return"))
            )
            exposure = _fold_cells(runs, fold, "mean_exposure", signed=False)
            oos.append((f"fold {fold} exposure (% held)", exposure))
    if not comparison.fold_indices:
        oos.append(("no fold evaluated", [DASH] * len(runs)))
    if any(r.pooled_return is not None for r in runs):
        oos.append(("all folds ensemble", each(lambda r: pct(r.pooled_return))))
        oos.append(("all folds buy and hold", each(lambda r: pct(r.pooled_buy_and_hold_return))))
    return [
        ("Runs", overview),
        (f"Config differences ({len(diffs)} key{'s' * (len(diffs) != 1)} of config.yaml)", config),
        ("Out of sample: return over the test window (% of capital)", oos),
    ]


def montecarlo_sections(comparison: Any) -> list[Section]:
    """Each scope's share of losing paths and of paths beating each null policy, and the skill."""
    runs = comparison.runs
    rows: list[Row] = []
    scopes: list[tuple[str, Callable[[Any], Any]]] = [("all folds", lambda r: r)]
    scopes += [(f"fold {f}", lambda r, f=f: r.folds.get(f)) for f in comparison.fold_indices]
    for label, scope in scopes:
        rows.append((f"{label} loss probability", [_loss(scope(r)) for r in runs]))
        for key, name in NULL_LABELS:
            rows.append((f"{label} beats {name}", [_beat(scope(r), key) for r in runs]))
    return [
        ("Monte Carlo vs null policies (% of simulated paths)", rows),
        ("Verdict", [("skill", [_skill(r) for r in runs])]),
    ]


def verdict_lines(comparison: Any) -> list[Text]:
    """Each run's verdict line (or why it has none), its error, and configs not compared."""
    lines = []
    for run in comparison.runs:
        line = Text(f"{run.run_id}: ", style="bold")
        line.append(run.verdict_line or f"{DASH} (no verdict: {_why_none(run)})")
        lines.append(line)
        if run.error:
            lines.append(Text(f"  error: {run.error}", style="red"))
    for run_id, problem in comparison.config_errors.items():
        lines.append(Text(f"{run_id}: config not compared ({problem})", style="yellow"))
    return lines


class Layout:
    """Column widths shared by every section's table, so that the sections line up."""

    def __init__(self, comparison: Any, sections: Sequence[Section]) -> None:
        headers = [run_header(r.run_id) for r in comparison.runs]
        rows = [row for _, section in sections for row in section]
        self.headers = headers
        self.label_w = max([8, *(len(label) for label, _ in rows)])
        self.widths = []
        for i, header in enumerate(headers):
            cells = [len(str(cells[i])) for _, cells in rows]
            wide = max([*(len(line) for line in header.splitlines()), *cells])
            self.widths.append(min(MAX_VALUE_CHARS, wide))

    @property
    def width(self) -> int:
        return self.label_w + sum(w + 2 for w in self.widths)  # padding 1 each side

    def table(self, title: str, rows: Sequence[Row], header: bool) -> Table:
        table = Table(
            title=Text(title, style="bold underline"),
            title_justify="left",
            box=None,
            pad_edge=False,
            padding=(0, 1),
            header_style="bold",
            show_header=header,
            show_edge=False,
        )
        table.add_column("", width=self.label_w, no_wrap=True)
        for head, width in zip(self.headers, self.widths, strict=True):
            table.add_column(head, justify="right", width=width, overflow="fold")
        for label, cells in rows:
            table.add_row(label, *(c if isinstance(c, Text) else Text(c) for c in cells))
        return table

    def render(self, sections: Sequence[Section]) -> RenderableType:
        """The sections one under the other; the run ids head the first one."""
        return Group(*(self.table(t, rows, header=i == 0) for i, (t, rows) in enumerate(sections)))


def comparison_parts(comparison: Any) -> tuple[RenderableType, RenderableType, int]:
    """The results (runs, configs, returns) and the Monte Carlo with the skill row, each one
    renderable, and the width of each (their columns are the same)."""
    results, montecarlo = results_sections(comparison), montecarlo_sections(comparison)
    layout = Layout(comparison, [*results, *montecarlo])
    return layout.render(results), layout.render(montecarlo), layout.width


def comparison_renderable(comparison: Any) -> RenderableType:
    """The whole comparison (an ``engine.api.Comparison``) in one column, for a narrow screen
    and for tests; with fewer than two runs the one line saying to mark more."""
    if len(comparison.runs) < 2:
        return Text(MARK_AT_LEAST_TWO)
    left, right, _ = comparison_parts(comparison)
    return Group(left, right, Text(""), *verdict_lines(comparison))


def _fold_cells(runs: Sequence[Any], fold: int, name: str, signed: bool = True) -> list[str]:
    return [pct(r.folds.get(fold, {}).get(name), signed) for r in runs]


def _loss(scope: Any) -> str:
    if scope is None:
        return DASH
    value = scope.get("loss_probability") if isinstance(scope, dict) else scope.loss_probability
    return pct(value, False)


def _beat(scope: Any, policy: str) -> str:
    if scope is None:
        return DASH
    beats = scope.get("beat_probability") if isinstance(scope, dict) else scope.beat_probability
    return pct((beats or {}).get(policy), False)


def _skill(run: Any) -> Text:
    if run.skill is None:
        return Text(DASH, style="dim")
    return Text("shown", style="bold green") if run.skill else Text("not shown", style="yellow")


def _why_none(run: Any) -> str:
    if run.state in ("starting", "running", "stopping"):
        return "still training"
    if run.state == "failed":
        return "the run failed"
    if run.state == "finished" and run.has_results:
        return "judged before verdicts existed"
    return f"run {run.state}"


class CompareScreen(Screen[None]):
    """The runs of ``paths`` (run folders) side by side; escape goes back to the jobs list.

    Where the window is wide enough the results and the Monte Carlo stand next to each other,
    else one under the other; the verdict lines follow.
    """

    DEFAULT_CSS = """
    CompareScreen #compare-head { height: 1; padding: 0 1; background: $boost; }
    CompareScreen #compare-body { height: 1fr; overflow: auto auto; padding: 0 1; }
    CompareScreen #compare-tables { layout: vertical; width: auto; height: auto; }
    CompareScreen #compare-tables.-wide { layout: horizontal; }
    CompareScreen #compare-tables Static { height: auto; }
    CompareScreen #compare-tables.-wide #compare-right { margin-left: 4; }
    CompareScreen #compare-verdicts { height: auto; margin-top: 1; }
    """

    BINDINGS = [Binding("escape", "back", "Back to jobs")]

    def __init__(self, paths: Sequence[Path | str]) -> None:
        super().__init__()
        self.paths = [Path(p) for p in paths]
        self.comparison: Any = None
        self.error = ""
        self._wide_at = 0  # the width the two halves need side by side (0: not known yet)

    def compose(self) -> ComposeResult:
        yield Static("", id="compare-head")
        with ScrollableContainer(id="compare-body"):
            with Container(id="compare-tables"):
                yield Static("", id="compare-left")
                yield Static("", id="compare-right")
            yield Static("", id="compare-verdicts")
        yield Footer()

    def on_mount(self) -> None:
        head = self.query_one("#compare-head", Static)
        self.query_one("#compare-body").focus()
        if len(self.paths) < 2:
            head.update("Compare runs")
            self.query_one("#compare-verdicts", Static).update(Text(MARK_AT_LEAST_TWO))
            return
        head.update(f"Compare {len(self.paths)} runs: reading their folders…")
        self._load()

    @work(thread=True, group="compare", exit_on_error=False)
    def _load(self) -> Any:
        from engine.api import RunFolder, compare_runs

        return compare_runs(RunFolder(p) for p in self.paths)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "compare":
            return
        head = self.query_one("#compare-head", Static)
        if event.state == WorkerState.SUCCESS:
            self.show(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self.error = " ".join(str(event.worker.error).split())
            head.update(Text(f"cannot compare the runs: {self.error}", style="red"))

    def show(self, comparison: Any) -> None:
        self.comparison = comparison
        diffs = len(comparison.differences)
        self.query_one("#compare-head", Static).update(
            f"Compare {len(comparison.runs)} runs: {diffs} config key{'s' * (diffs != 1)} "
            f"differ; {DASH} where a run has no such figure"
        )
        left, right, width = comparison_parts(comparison)
        self._wide_at = 2 * width + GAP
        for name, part in (("#compare-left", left), ("#compare-right", right)):
            widget = self.query_one(name, Static)
            widget.styles.width = width
            widget.update(part)
        self.query_one("#compare-verdicts", Static).update(Group(*verdict_lines(comparison)))
        self._fit()

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        if not self._wide_at:
            return
        room = self.query_one("#compare-body").scrollable_content_region.width or self.size.width
        self.query_one("#compare-tables").set_class(room >= self._wide_at, "-wide")

    def action_back(self) -> None:
        if self.is_current and len(self.app.screen_stack) > 1:
            self.app.pop_screen()
