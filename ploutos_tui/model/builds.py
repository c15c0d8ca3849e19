"""Dataset builds for the panel: the configs to build from, the Alpaca keys, the build requests
and the detached builds found on disk (docs/dataset-build.md).

Everything here that reads files or imports the engine blocks: call it from a worker thread.
The screen only draws what these functions return.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The variables themselves live in engine.api (ALPACA_ENV_KEY_ID / ALPACA_ENV_SECRET_KEY); their
# names are spelled here too so that the panel can show the keys line without importing the
# Alpaca SDK (seconds) before its first frame. tests/tui/test_dataset_build_flow.py checks both.
KEY_NAMES: tuple[str, str] = ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY")
FEEDS = ("iex", "sip")
ADJUSTMENTS = ("raw", "split", "dividend", "all")
BUILDABLE = ("alpaca", "yahoo", "synthetic-demo")


@dataclass(frozen=True)
class ConfigChoice:
    """One training config as the build form offers it (``error``: why it cannot be used)."""

    path: Path
    source: str = ""
    dataset_path: str = ""
    tickers: tuple[str, ...] = ()
    start: str = ""
    end: str = ""
    feed: str = "iex"
    adjustment: str = "all"
    macro: tuple[str, ...] = ()
    error: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        if self.error:
            return f"{self.name}: {self.error}"
        span = f"from {self.start}" + (f" to {self.end}" if self.end else "")
        what = {
            "alpaca": f"Alpaca {self.feed}, adjustment {self.adjustment}",
            "yahoo": "Yahoo hourly (last 730 days)",
            "synthetic-demo": "synthetic demo data (no download, no keys)",
        }.get(self.source, f"source {self.source}")
        macro = f", macro {','.join(self.macro)}" if self.macro else ", no macro"
        return f"{self.name}: {what}, {len(self.tickers)} tickers {span}{macro}"


def read_config_choice(path: Path) -> ConfigChoice:
    """The config at ``path`` validated by the engine; a bad one is a choice with its error."""
    from engine.api import load_config
    from engine.errors import PloutosError

    try:
        cfg = load_config(path)
    except PloutosError as err:
        return ConfigChoice(path, error=" ".join(str(err).split()))
    except (OSError, ValueError) as err:  # unreadable file, odd YAML the loader let through
        return ConfigChoice(path, error=f"{type(err).__name__}: {err}")
    data = cfg.data
    return ConfigChoice(
        path=path,
        source=data.source,
        dataset_path=str(cfg.dataset_path),
        tickers=tuple(data.tickers),
        start=str(data.start),
        end=str(data.end) if data.end else "",
        feed=data.feed,
        adjustment=data.adjustment,
        macro=tuple(data.macro),
    )


def list_configs(config_dir: Path, also: Iterable[Path] = ()) -> list[ConfigChoice]:
    """Every ``*.yaml`` of ``config_dir`` that is a training config (a hardware profile file is
    not), plus ``also`` (the panel's own config), sorted by name."""
    paths: dict[str, Path] = {}
    for path in [*sorted(Path(config_dir).glob("*.yaml")), *also]:
        path = Path(path)
        if path.is_file():
            paths.setdefault(str(path.resolve()), path)
    out = []
    for path in paths.values():
        choice = read_config_choice(path)
        if choice.error and _not_a_training_config(path):
            continue
        out.append(choice)
    return sorted(out, key=lambda c: c.name)


def _not_a_training_config(path: Path) -> bool:
    """True for a YAML file without the keys of a training config (e.g. hardware.yaml)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return not (isinstance(raw, dict) and ("dataset_path" in raw or "data" in raw))


def key_state(env: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Whether each Alpaca key variable is set (non-blank). Never the values."""
    env = os.environ if env is None else env
    return {name: bool((env.get(name) or "").strip()) for name in KEY_NAMES}


def missing_keys(env: Mapping[str, str] | None = None) -> list[str]:
    return [name for name, ok in key_state(env).items() if not ok]


def keys_line(env: Mapping[str, str] | None = None) -> str:
    """``Alpaca keys: APCA_API_KEY_ID set, APCA_API_SECRET_KEY not set (...)``."""
    state = key_state(env)
    parts = ", ".join(f"{name} {'set' if ok else 'NOT SET'}" for name, ok in state.items())
    missing = [n for n, ok in state.items() if not ok]
    if not missing:
        return f"Alpaca keys: {parts}"
    return f"Alpaca keys: {parts}: {keys_hint(missing)}"


def keys_hint(missing: list[str]) -> str:
    both = " and ".join(KEY_NAMES)
    return (
        f"an Alpaca build needs both {both}; export {' and '.join(missing)} in the shell, "
        "then restart the panel"
    )


@dataclass(frozen=True)
class BuildRequest:
    """What the form asks for: a detached ``dataset build`` (``args``) or the demo writer."""

    kind: str  # "build" (alpaca/yahoo, detached) or "demo" (in the panel, seconds)
    out: Path
    args: tuple[str, ...] = ()
    source: str = ""


def _date(field: str, text: str, required: bool) -> str | None:
    """None when ``text`` is a YYYY-MM-DD date (or empty and not ``required``), else the error."""
    if not text:
        return f"{field}: type a date like 2019-01-01" if required else None
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return f"{field}: {text!r} is not a date: type YYYY-MM-DD, e.g. 2019-01-01"
    return None


def _symbols(text: str) -> list[str]:
    out: list[str] = []
    for item in text.replace(" ", ",").split(","):
        sym = item.strip().upper()
        if sym and sym not in out:
            out.append(sym)
    return out


def validate_request(
    choice: ConfigChoice | None, fields: Mapping[str, str], env: Mapping[str, str] | None = None
) -> BuildRequest | str:
    """The request the form's ``fields`` make for ``choice``, or one line saying what to fix.

    Reads the ``out`` folder (a manifest of another dataset, a build already running), so call
    it from a worker thread.
    """
    if choice is None:
        return "choose a config in the list first (up/down, then enter)"
    if choice.error:
        return f"{choice.name} cannot be used: {choice.error}"
    if choice.source not in BUILDABLE:
        return (
            f"{choice.name}: source {choice.source} is imported from CSV files: run "
            "`ploutos dataset import`; the panel builds from alpaca, yahoo or the demo"
        )
    out_text = fields.get("out", "").strip()
    if not out_text:
        return "out: type the dataset folder to build into, e.g. data/dataset_v8"
    out = Path(out_text).expanduser()
    if choice.source == "synthetic-demo":
        return BuildRequest("demo", out, source=choice.source)
    tickers = _symbols(fields.get("tickers", ""))
    if not tickers:
        return "tickers: type at least one symbol, e.g. AAPL,MSFT"
    start, end = fields.get("start", "").strip(), fields.get("end", "").strip()
    problem = _date("start", start, True) or _date("end", end, False)
    if problem:
        return problem
    if end and end <= start:
        return f"end {end} is not after start {start}: type a later end or leave it empty"
    feed = fields.get("feed", "").strip().lower() or "iex"
    adjustment = fields.get("adjustment", "").strip().lower() or "all"
    if choice.source == "alpaca":
        if feed not in FEEDS:
            return f"feed: {feed!r} is not an Alpaca feed: type iex (free keys) or sip (paid plan)"
        if adjustment not in ADJUSTMENTS:
            return f"adjustment: {adjustment!r}: type one of {', '.join(ADJUSTMENTS)}"
        missing = missing_keys(env)
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            return f"{' and '.join(missing)} {verb} not set: {keys_hint(missing)}"
    from engine.api import out_folder_problem, read_build_status

    status = read_build_status(out)
    if status is not None and status.alive:
        return f"{out}: a build into this folder is running (pid {status.pid}): wait or stop it (x)"
    problem = out_folder_problem(out, choice.source, feed=feed, adjustment=adjustment)
    if problem:
        return problem.replace("choose another folder", "type another folder in 'out'")
    macro = _symbols(fields.get("macro", ""))
    args = [
        "--out",
        str(out.resolve()),
        "--config",
        str(choice.path.resolve()),
        "--source",
        choice.source,
        "--tickers",
        ",".join(tickers),
        "--start",
        start,
        "--macro",
        ",".join(macro),
    ]
    if end:
        args += ["--end", end]
    if choice.source == "alpaca":
        args += ["--feed", feed, "--adjustment", adjustment]
    return BuildRequest("build", out, tuple(args), choice.source)


def find_build(folders: Iterable[Path], read: Any = None) -> Any | None:
    """The build to show among ``folders`` (the screen's, the configs', the remembered ones): the
    first live one, else the first interrupted one, else the first with any status.
    ``read(folder)`` defaults to ``engine.api.read_build_status``."""
    if read is None:
        from engine.api import read_build_status as read

    found = []
    seen: set[str] = set()
    for folder in folders:
        key = str(Path(folder).expanduser().resolve())
        if key in seen:
            continue
        seen.add(key)
        status = read(Path(folder))
        if status is not None:
            found.append(status)
    for wanted in (lambda s: s.alive, lambda s: s.state == "interrupted", lambda s: True):
        for status in found:
            if wanted(status):
                return status
    return None


def duration(seconds: float | None) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``; ``"-"`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def build_line(status: Any) -> str:
    """One line for a build status: state, chunks, the chunk downloading, speed, ETA."""
    root = status.root
    total = status.total
    if total is not None:
        chunks = f"{status.done}/{total} chunks"
    else:
        chunks = "planning" if status.alive else f"{status.done} chunks"
    state = status.state
    if state in ("starting", "running"):
        head = f"build into {root}: {'starting' if state == 'starting' else 'running'}"
        head += f" (pid {status.pid})" if status.pid and status.pid > 0 else ""
        now = status.current
        where = ""
        if now:
            where = f", now {now.get('ticker')} {str(now.get('start', ''))[:10]}..{str(now.get('end', ''))[:10]}"
        if status.paused_before:
            where += f", paused before chunk {status.paused_before} (test hook)"
        speed = status.seconds_per_chunk
        rate = f", {speed:.1f} s/chunk" if speed is not None else ""
        return f"{head}, {chunks}{where}{rate}, ETA {duration(status.eta_s)}"
    if state == "done":
        return f"build into {root}: done, {chunks} this run"
    if state == "interrupted":
        return f"build into {root}: interrupted at {chunks} (the process is gone): r resumes after the last finished chunk"
    if state == "stopped":
        return f"build into {root}: stopped at {chunks}: r resumes after the last finished chunk"
    if state == "failed":
        return f"build into {root}: failed at {chunks}: {status.error}; fix it, then r resumes"
    return f"build into {root}: {status.error or state}"
