"""``ploutos``: the engine's command line. The control panel launches these same commands.

One job, argument parsing and dispatch: each sub-command is a small function that imports the
room it drives lazily, so ``ploutos --help`` stays fast; its length is the number of commands.

Errors the user can fix print as one line (``ploutos: error: ...``) with exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from engine import __version__
from engine.errors import PloutosError
from engine.system.limits import memory_hint

DEFAULT_DEMO_DIR = Path("data/demo")
BUILD_DESCRIPTION = """\
Download hourly bars (and optional daily macro series) into a dataset folder.

Resumable: each finished chunk (a calendar year of one ticker) is saved, so rerunning the same
command after an interruption continues after the last one; a range already covered downloads
nothing. A folder holding a different dataset is refused.

Alpaca (the default source) needs both API keys in the environment:
  export APCA_API_KEY_ID=...       # your Alpaca API key id
  export APCA_API_SECRET_KEY=...   # your Alpaca secret key
Free keys work with the default --feed iex. APCA_API_DATA_URL (optional) points at another
data API base URL. Key values never appear in messages.

Example: ploutos dataset build --config config/training_config_v8.yaml
"""


def _dataset_demo(args: argparse.Namespace) -> int:
    from engine.data.demo import write_demo

    kwargs = {}
    if args.tickers:
        from engine.data.store import parse_symbols

        kwargs["tickers"] = tuple(parse_symbols(args.tickers))
    for key in ("start", "end", "seed"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    manifest = write_demo(args.out, **kwargs)
    rows = sum(e.rows for e in manifest.tickers.values())
    print(
        f"demo dataset written to {args.out}: {len(manifest.tickers)} tickers, "
        f"{rows} hourly bars, {len(manifest.macro)} macro series"
    )
    return 0


def _dataset_check(args: argparse.Namespace) -> int:
    from engine.data.check import check_dataset

    report = check_dataset(args.dir, max_missing_regular_pct=args.max_missing_pct)
    print(report.format_text())
    return 0 if report.ok else 1


def _dataset_build(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.data.store import parse_symbols
    from engine.timeutil import parse_utc

    cfg = load_config(args.config) if args.config else None
    cfg_data = cfg.data if cfg else None
    tickers = (
        parse_symbols(args.tickers) if args.tickers else (cfg_data.tickers if cfg_data else None)
    )
    if not tickers and not args.update:
        raise PloutosError(
            "no tickers: pass --tickers AAPL,MSFT,... or --config with a data.tickers list"
        )
    start = args.start or (str(cfg_data.start) if cfg_data else None)
    if start is None and not args.update:
        raise PloutosError("no start date: pass --start 2019-01-01 or --config with data.start")
    end = args.end or (str(cfg_data.end) if cfg_data and cfg_data.end else None)
    if args.macro is not None:  # given: an empty value stores no macro series
        macro = parse_symbols(args.macro) if args.macro.strip() else []
    else:
        macro = cfg_data.macro if cfg_data else []
    out = args.out or (cfg.dataset_path if cfg else None)
    if out is None:
        raise PloutosError("no output folder: pass --out data/dataset_v8/")
    stored = None
    if args.update:
        from engine.data.store import load_manifest

        stored = load_manifest(out)  # an update of nothing is an error naming the folder
    source = args.source or (stored.source if stored else None)
    source = source or (cfg_data.source if cfg_data else "alpaca")
    feed = args.feed or (stored.feed if stored else None) or (cfg_data.feed if cfg_data else "iex")
    adjustment = (
        args.adjustment
        or (stored.adjustment if stored else None)
        or (cfg_data.adjustment if cfg_data else "raw")
    )
    # --update alone: tickers and start come from the dataset's manifest
    start_ts = parse_utc(start) if start else None
    end_ts = parse_utc(end) if end else None
    if args.detach:
        return _dataset_build_detached(args, Path(out), source)
    with _build_status(args, Path(out)) as status:
        return _run_build(
            args, out, source, tickers, start_ts, end_ts, macro, feed, adjustment, status
        )


def _run_build(
    args, out, source, tickers, start_ts, end_ts, macro, feed, adjustment, status
) -> int:
    """The build itself; ``status`` (``--status``) is the builder's observer or None."""
    from engine.data.sources import yahoo

    progress = _print_progress
    if status is not None:

        def progress(event: object) -> None:
            status.progress(event)
            _print_progress(event)

    if source == "yahoo":
        from engine.data.builder import build_yahoo

        manifest = build_yahoo(
            out,
            tickers,
            start_ts,
            end_ts,
            interval=args.timeframe,
            update=args.update,
            macro_symbols=macro,
            progress=progress,
            observer=status,
        )
    elif source == "alpaca":
        from engine.data.builder import build_alpaca

        manifest = build_alpaca(
            out,
            tickers,
            start_ts,
            end_ts,
            feed=feed,
            adjustment=adjustment,
            update=args.update,
            macro_symbols=macro,
            macro_fetcher=yahoo.fetch_macro if macro else None,
            progress=progress,
            observer=status,
        )
    else:
        raise PloutosError(
            f"--source {source}: use alpaca or yahoo (CSV files go through `dataset import`)"
        )
    rows = sum(e.rows for e in manifest.tickers.values())
    print(
        f"dataset {out}: {len(manifest.tickers)} tickers, {rows} bars, {len(manifest.macro)} macro series"
    )
    return 0


def _print_progress(event: object) -> None:
    print(f"  {event}", file=sys.stderr, flush=True)


def _build_command(args: argparse.Namespace, out: Path) -> list[str]:
    """The ``dataset build`` arguments given (absolute folders), to run again detached or on
    resume: a resumed build rereads the config, like rerunning the same command."""
    command = ["dataset", "build", "--out", str(out.resolve())]
    if args.config:
        command += ["--config", str(Path(args.config).resolve())]
    for flag in ("source", "tickers", "start", "end", "feed", "adjustment", "macro"):
        value = getattr(args, flag)
        if value is not None:
            command += [f"--{flag}", str(value)]
    if args.update:
        command.append("--update")
    return command + ["--status"]


@contextlib.contextmanager
def _build_status(args: argparse.Namespace, out: Path):
    """With ``--status``: the build's lock and status file, and SIGTERM stopping it like ^C
    (recorded as stopped). Without: nothing."""
    if not args.status:
        yield None
        return
    import signal

    from engine.data.builder import BuildStatusFile

    def terminate(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with BuildStatusFile(out, _build_command(args, out)) as status:
            yield status
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dataset_build_detached(args: argparse.Namespace, out: Path, source: str) -> int:
    from engine.runs.jobs import start_build_detached

    if source == "alpaca":
        from engine.data.sources.alpaca import credentials_from_env

        credentials_from_env()  # names every missing key now, not in a log nobody reads
    command = _build_command(args, out)
    proc = start_build_detached(command[2:], out)
    from engine.data.builder import build_log_path, build_status_path

    print(
        f"build into {out} started in the background (pid {proc.pid}); log "
        f"{build_log_path(out)}, progress {build_status_path(out)}; after a kill the same "
        "command (or r on the panel's Dataset screen) resumes after the last finished chunk"
    )
    return 0


def _dataset_import(args: argparse.Namespace) -> int:
    from engine.data.csvio import import_csv

    manifest = import_csv(args.files, args.out, tz=args.tz, symbol=args.symbol)
    print(
        f"imported {len(args.files)} file(s) into {args.out}: tickers {', '.join(manifest.tickers)}"
    )
    return 0


def _dataset_export(args: argparse.Namespace) -> int:
    from engine.data.csvio import export_csv

    written = export_csv(args.dir, args.out)
    print(f"wrote {len(written)} CSV file(s) under {args.out}")
    return 0


def _dataset_info(args: argparse.Namespace) -> int:
    from engine.data.store import load_manifest

    manifest = load_manifest(args.dir)
    print(manifest.model_dump_json(indent=2))
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from engine.config import load_config

    cfg = load_config(args.file)
    print(f"{args.file}: valid")
    if args.json:
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def _threads(args: argparse.Namespace) -> int:
    from engine.system import limits as machine
    from engine.system import threads

    if args.shell:
        print(threads.shell_exports(args.n))
        return 0
    limits = machine.thread_limits()
    print(
        json.dumps(
            {
                "usable_cpus": machine.usable_cpus(),
                "ulimit_u": limits.ulimit_u,
                "pids_max": limits.pids_max,
                "threads_max": limits.threads_max,
                "tightest_thread_limit": limits.tightest,
                "sanitized": threads.pool_settings(args.n),
            },
            indent=2,
        )
    )
    return 0


def _features_build(args: argparse.Namespace) -> int:
    import time

    from engine.config import load_config
    from engine.features.cache import load_or_build_features
    from engine.features.drops import describe_drops

    cfg = load_config(args.config)
    started = time.perf_counter()
    fs = load_or_build_features(cfg.dataset_path, cfg.features, rebuild=args.rebuild)
    elapsed = time.perf_counter() - started
    t, n, f = fs.features.shape
    print(
        f"features for {cfg.dataset_path}: {t} bars x {n} tickers x {f} features (float32), "
        f"{elapsed:.2f} s, cached at {fs.path}"
    )
    if isinstance(fs.meta.get("rows_dropped"), dict):
        print(f"  {describe_drops(fs.meta['rows_dropped'])}")
    return 0


def _bench_env(args: argparse.Namespace) -> int:
    """Features (ours cold/warm vs ta) and env throughput over the real memory-mapped features."""
    from engine.bench.env import bench_env_steps
    from engine.bench.features import bench_features
    from engine.features.cache import load_or_build_features

    result: dict[str, object] = {"dataset": str(args.dir)}
    psar_tickers = 10**6 if args.ta_psar_all else 1
    result.update(bench_features(args.dir, repeats=args.repeats, ta_psar_tickers=psar_tickers))
    fs = load_or_build_features(args.dir)
    result["env_arrays"] = {
        "features_shape": list(fs.features.shape),
        "memory_mapped": type(fs.features).__name__ == "memmap",
    }
    result.update(bench_env_steps(fs.features, fs.prices, seconds=args.seconds))
    print(json.dumps(result, indent=2 if not args.json else None, default=str))
    return 0


# ------------------------------------------------------------------------------ training
def _sanitize_threads() -> None:
    """Cap every BLAS/OpenMP pool before numpy or torch load (the trainer's workers inherit it).

    ``start_training.sh`` already exports the same variables; running ``ploutos train`` directly
    gets them here. If the libraries were loaded already (called in-process), limit them live.
    """
    from engine.system.threads import apply_in_process

    apply_in_process(1)


def _echo(line: str) -> None:
    """Console progress that survives a terminal that went away (EIO/EPIPE after SSH closes)."""
    with contextlib.suppress(OSError):
        print(line, flush=True)


def _plan(args: argparse.Namespace) -> int:
    from engine.train.plan import format_plan
    from engine.train.prepare import dataset_observation_size, plan_for, resolved_config

    cfg = resolved_config(args.config, ensemble=args.ensemble)
    obs_size = args.obs_size
    if obs_size is None:
        obs_size = dataset_observation_size(cfg)
    machine = None
    if args.calibrate:
        if args.assume:
            from engine.errors import ConfigError

            raise ConfigError(
                "--calibrate measures this machine; it cannot be combined with --assume"
            )
        from engine.bench.calibrate import calibrate, format_calibration

        _echo("Calibrating torch threads: training real units at each split (a minute or two)")
        entry = calibrate(
            args.config,
            profile=args.hardware,
            hardware_file=args.hardware_file,
            obs_size=obs_size,
        )
        if not args.json:
            print(format_calibration(entry) + "\n")
    if args.assume:
        from engine.train.plan import assumed_machine

        machine = assumed_machine(args.assume)
    plan = plan_for(
        cfg,
        args.hardware,
        obs_size,
        machine,
        hardware_file=args.hardware_file,
        force=args.force,
        source=str(args.config),
    )
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(format_plan(plan))
    return 0


def _folds(args: argparse.Namespace) -> int:
    from engine.features.cache import load_or_build_features
    from engine.train.folds import format_folds, walk_forward_folds
    from engine.train.prepare import resolved_config

    cfg = resolved_config(args.config)
    fs = load_or_build_features(cfg.dataset_path, cfg.features)
    folds = walk_forward_folds(fs.timestamps, cfg.walk_forward, str(args.config))
    if args.json:
        print(json.dumps([f.to_dict() for f in folds], indent=2))
    else:
        print(format_folds(folds))
    return 0


def _detach(folder) -> int:
    from engine.runs.jobs import start_detached

    proc = start_detached(folder)
    print(f"{folder.root}  (trainer pid {proc.pid}, log {folder.log_path})")
    return 0


def _train(args: argparse.Namespace) -> int:
    _sanitize_threads()
    from engine.train.prepare import prepare_run, run_training

    folder = prepare_run(
        args.config,
        profile=args.hardware,
        ensemble=args.ensemble,
        algorithm=args.algorithm,
        run_dir=args.run_dir,
        runs_root=args.runs_dir,
        executor=args.executor,
        ray_address=args.ray_address,
        hardware_file=args.hardware_file,
        force=args.force,
    )
    if args.detach:
        return _detach(folder)
    _echo(f"run folder: {folder.root}")
    return run_training(folder, echo=_echo)


def _resume(args: argparse.Namespace) -> int:
    _sanitize_threads()
    from engine.runs.folder import resolve_run
    from engine.train.prepare import run_training

    folder = resolve_run(args.run, args.runs_dir)
    state = folder.state()
    if state == "finished":
        print(f"{folder.run_id}: already finished; nothing to do")
        return 0
    if folder.trainer_alive():
        raise PloutosError(f"{folder.run_id}: a trainer is running it already")
    if args.detach:
        return _detach(folder)
    return run_training(folder, echo=_echo)


def _stop(args: argparse.Namespace) -> int:
    from engine.runs.folder import resolve_run
    from engine.runs.jobs import stop_run

    folder = resolve_run(args.run, args.runs_dir)
    state = stop_run(folder, wait_s=args.wait)
    print(f"{folder.run_id}: {state}")
    return 0


def _pipe_safe(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``ploutos status RUN | head``: when the reader goes away, stop printing without a
    traceback and exit 141 like a command killed by SIGPIPE."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            code = func(args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            import os

            # the interpreter flushes stdout once more at exit: let that go to /dev/null quietly
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            return 141

    return wrapped


def _number(value: object, spec: str) -> str:
    """``value`` formatted with ``spec``; ``?`` when an event left it out or it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?"
    try:
        return format(value, spec)
    except ValueError:  # a float where a count belongs
        return "?"


@_pipe_safe
def _runs(args: argparse.Namespace) -> int:
    from engine.runs.folder import list_runs

    rows = []
    for folder in list_runs(args.runs_dir):
        status, problem = folder.read_status_checked()
        found = folder.run_state(status=status, problem=problem)
        progress = status.get("progress")
        config = status.get("config")
        rows.append(
            {
                "run_id": folder.run_id,
                "state": found.state,
                "stalled_s": found.stalled_s,
                "reason": found.reason,
                "progress": progress if _number(progress, ".0%") != "?" else None,
                "config": config if isinstance(config, str) else "",
                "updated_at": status.get("updated_at"),
                "heartbeat": status.get("heartbeat"),
                "path": str(folder.root),
                "label": found.label,
            }
        )
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "label"} for r in rows], indent=2))
        return 0
    if not rows:
        print("no runs yet (`ploutos train --config config/demo.yaml`)")
        return 0
    print(f"{'run':<44} {'state':<24} {'progress':>8}  config")
    for r in rows:
        progress = _number(r["progress"], ".0%") if r["progress"] is not None else "-"
        config = r["reason"] or r["config"]
        print(f"{r['run_id']:<44} {r['label']:<24} {progress:>8}  {config}")
    return 0


@_pipe_safe
def _status(args: argparse.Namespace) -> int:
    from engine.runs.folder import resolve_run
    from engine.runs.view import replay

    folder = resolve_run(args.run, args.runs_dir)
    view = replay(folder)
    status = view.to_status()
    found = folder.run_state()
    status.update(state=found.state, stalled_s=found.stalled_s, reason=found.reason)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    eta = status["eta_s"]
    label = found.label + (f" ({found.reason})" if found.reason else "")
    print(
        f"{folder.run_id}: {label}, {status['progress']:.0%} of "
        f"{status['timesteps']['total']:,} timesteps" + (f", ETA {eta:.0f} s" if eta else "")
    )
    for (fold, member), m in sorted(view.members.items()):
        reward = f"{m.mean_reward:+.4f}" if m.mean_reward is not None else "-"
        line = (
            f"  fold {fold} member {member}: {m.state:<9} {m.timesteps:>10,}/{m.total:,} "
            f"{m.fps:>8.0f} fps  reward {reward}"
        )
        print(line + (f"  {m.error}" if m.error else ""))
    for fold, ev in sorted(view.folds_evaluated.items()):
        oos, bh = ev["oos"], ev["buy_and_hold"]
        print(
            f"  fold {fold} out of sample: return {_number(oos.get('total_return'), '+.2%')} "
            f"sharpe {_number(oos.get('sharpe'), '+.2f')} max dd "
            f"{_number(oos.get('max_drawdown'), '.2%')} | buy and hold "
            f"{_number(bh.get('total_return'), '+.2%')}"
        )
    for scope, ev in sorted(view.montecarlo.items()):
        st = ev["stats"]
        print(
            f"  Monte Carlo {scope}: {_number(st.get('simulations'), 'd')} sims, loss probability "
            f"{_number(st.get('loss_probability'), '.1%')}, median "
            f"{_number(st.get('median'), '+.2%')}, VaR95 {_number(st.get('var_95'), '+.2%')}, "
            f"CVaR95 {_number(st.get('cvar_95'), '+.2%')}, max dd median "
            f"{_number(st.get('max_drawdown_median'), '.2%')}"
        )
    if view.skipped_events:
        print(
            f"  {view.skipped_events} event line(s) of {folder.events_path.name} skipped as "
            f"unreadable (first: {view.skip_reason})"
        )
    if status.get("error"):
        print(f"  error: {status['error']}")
    for line in _verdict_lines(view):
        print(line)
    return 0


_FILL_LABELS = {
    "next_open": "next_open (the open of the bar after the decision)",
    "next_vwap": "next_vwap (the volume-weighted price of the bar after the decision)",
    "close": "close (optimistic: fills at the close the agent just saw)",
}
# fold_evaluated keys that only a judged fold has (docs/results.md): older runs print nothing new
_JUDGED_FOLD_KEYS = ("fill", "buy_and_hold_matched", "cost_sensitivity", "nulls", "timing")


def _p(value: object) -> str:
    """A p-value or probability: two decimals, one significant digit below 0.01; ``?`` if none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return "?"
    return f"{value:.1g}" if 0 < value < 0.01 else f"{value:.2f}"


def _count(value: object) -> str:
    """A count (trials, runs, splits, permutations); ``?`` unless a whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?"
    if not abs(value) < float("inf"):  # NaN and inf
        return "?"
    return str(int(value)) if value >= 0 and value == int(value) else "?"


def _counted(value: object, noun: str) -> str:
    """``1 run``, ``3 runs``, ``? runs``."""
    n = _count(value)
    return f"{n} {noun}" + ("" if n == "1" else "s")


def _beats(beat: dict[str, float | None]) -> str:
    return "beats " + ", ".join(
        f"{name.replace('_', '-')} {_number(beat.get(name), '.0%')}"
        for name in ("cash", "always_long", "random")
    )


def _verdict_lines(view) -> list[str]:
    """The verdict part of ``ploutos status``: fills, one line per judged fold, pooled figures,
    overfitting, seed spread and the verdict line last (docs/results.md); none for older runs."""
    from engine.runs.view import NULL_POLICIES, dig, fold_summary, number

    lines = []
    if view.fill is not None:
        label = _FILL_LABELS.get(view.fill, view.fill)
        if view.fill_optimistic and view.fill != "close":
            label += " (optimistic)"
        lines.append(f"  fills: {label}")
    for fold, event in sorted(view.folds_evaluated.items()):
        if not any(key in event for key in _JUDGED_FOLD_KEYS):
            continue
        f = fold_summary(event)
        bps, note = f["break_even_bps"], f["break_even_note"]
        even = f"{bps:.1f} bps per side" if bps is not None else (note or "?")
        lines.append(
            f"  fold {fold} judged: oos {_number(f['oos_return'], '+.2%')} | buy and hold "
            f"{_number(f['buy_and_hold_return'], '+.2%')} | exposure-matched buy and hold "
            f"{_number(f['matched_return'], '+.2%')} (exposure "
            f"{_number(f['matched_exposure'], '.0%')}) | timing p {_p(f['timing_p_return'])} "
            f"(return) | {_beats(f['beat_probability'])} of paths | break-even {even}"
        )
    if view.verdict is None:
        return lines
    pooled, over = view.verdict["pooled"], view.verdict["overfitting"]
    beat = {name: number(dig(pooled, "nulls", name, "beat_probability")) for name in NULL_POLICIES}
    lines.append(
        f"  pooled: oos {_number(number(dig(pooled, 'oos_return')), '+.2%')} (Sharpe "
        f"{_number(number(dig(pooled, 'sharpe')), '+.2f')}, exposure "
        f"{_number(number(dig(pooled, 'mean_exposure')), '.0%')}) | buy and hold "
        f"{_number(number(dig(pooled, 'buy_and_hold_return')), '+.2%')} | timing p "
        f"{_p(number(dig(pooled, 'timing', 'p_return')))} (return), "
        f"{_p(number(dig(pooled, 'timing', 'p_sharpe')))} (Sharpe), "
        f"{_count(number(dig(pooled, 'timing', 'permutations')))} permutations | "
        f"{_beats(beat)} of paths"
    )
    pbo, note = number(dig(over, "pbo")), dig(over, "pbo_note")
    pbo_text = (
        f"PBO {_p(pbo)} (CSCV, {_count(number(dig(over, 'pbo_splits')))} splits)"
        if pbo is not None
        else "PBO n/a" + (f" ({note})" if isinstance(note, str) and note else "")
    )
    lines.append(
        f"  overfitting: {pbo_text}, {_counted(dig(over, 'n_trials'), 'trial')} in "
        f"{_counted(dig(over, 'n_runs'), 'run')} | deflated Sharpe "
        f"{_p(number(dig(over, 'deflated_sharpe')))} (Sharpe "
        f"{_number(number(dig(over, 'sharpe_per_bar')), '+.4f')} vs SR0 "
        f"{_number(number(dig(over, 'sr0')), '+.4f')}, per bar) | reality check p "
        f"{_p(number(dig(over, 'reality_check_p')))}"
    )
    seeds = view.verdict["seed_dispersion"]
    lines.append(
        f"  seed spread: members' oos return mean "
        f"{_number(number(dig(seeds, 'mean')), '+.2%')} (95% CI "
        f"{_number(number(dig(seeds, 'ci_low')), '+.2%')} to "
        f"{_number(number(dig(seeds, 'ci_high')), '+.2%')}), std "
        f"{_number(number(dig(seeds, 'std')), '.2%')}, min "
        f"{_number(number(dig(seeds, 'min')), '+.2%')}, max "
        f"{_number(number(dig(seeds, 'max')), '+.2%')}, n "
        f"{_count(number(dig(seeds, 'n')))}"
    )
    verdict = view.verdict["verdict"]
    line = dig(verdict, "line")
    if not isinstance(line, str) or not line:
        skill = dig(verdict, "skill")
        line = (
            "?" if not isinstance(skill, bool) else ("skill shown" if skill else "skill not shown")
        )
    lines.append(f"  verdict: {line}")
    return lines


def _bench_train(args: argparse.Namespace) -> int:
    from engine.bench.train import bench_train

    result = bench_train(n_envs=args.n_envs, repeats=args.repeats)
    print(json.dumps(result, indent=None if args.json else 2, default=str))
    return 0


def _bench_tui(args: argparse.Namespace) -> int:
    """The panel lives in ploutos_tui, which the engine never imports: run its bench module."""
    import subprocess

    cmd = [sys.executable, "-m", "ploutos_tui.bench", "--seconds", str(args.seconds)]
    cmd += ["--children", str(args.children), "--units", str(args.units)]
    cmd += ["--repeat", str(args.repeat)] + (["--screens", args.screens] if args.screens else [])
    cmd += ["--json"] if args.json else []
    return subprocess.run(cmd, check=False).returncode


def _bench_executor(args: argparse.Namespace) -> int:
    from engine.bench.executor import bench_executor

    result = bench_executor(args.config, nodes=args.nodes)
    print(json.dumps(result, indent=None if args.json else 2, default=str))
    return 0


def _bench_montecarlo(args: argparse.Namespace) -> int:
    from engine.bench.montecarlo import bench_montecarlo

    result = bench_montecarlo(simulations=args.simulations, naive_simulations=args.naive)
    print(json.dumps(result, indent=None if args.json else 2, default=str))
    return 0


def _bench_walkforward(args: argparse.Namespace) -> int:
    from engine.bench.walkforward import DEFAULT_CONFIG, bench_walkforward, format_walkforward

    result = bench_walkforward(
        args.config or DEFAULT_CONFIG,
        assume=args.assume,
        timesteps_per_unit=args.timesteps,
        obs_size=args.obs_size,
        profile=args.hardware,
        policy_repeats=args.policy_repeats,
    )
    print(json.dumps(result, default=str) if args.json else format_walkforward(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ploutos", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ploutos {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    dataset = sub.add_parser("dataset", help="build, import, export and check datasets")
    dsub = dataset.add_subparsers(dest="dataset_command", required=True)

    demo = dsub.add_parser("demo", help="write the embedded synthetic demo dataset (no network)")
    demo.add_argument("--out", type=Path, default=DEFAULT_DEMO_DIR)
    demo.add_argument("--tickers", help="comma-separated synthetic ticker names")
    demo.add_argument("--start")
    demo.add_argument("--end")
    demo.add_argument("--seed", type=int)
    demo.set_defaults(func=_dataset_demo)

    build = dsub.add_parser(
        "build",
        help="download hourly bars (Alpaca) and macro series (Yahoo)",
        description=BUILD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "--source",
        choices=["alpaca", "yahoo"],
        help="where the bars come from: alpaca (needs both keys, see above) or yahoo (hourly "
        "bars only for the last 730 days); default: the folder's, the config's, else alpaca",
    )
    build.add_argument(
        "--tickers", help="comma-separated symbols, e.g. AAPL,MSFT; default: the config's"
    )
    build.add_argument(
        "--start", help="first date, e.g. 2019-01-01 (UTC); default: the config's data.start"
    )
    build.add_argument(
        "--end", help="end date (exclusive, UTC); default: the config's data.end, else now"
    )
    build.add_argument(
        "--timeframe", default="1h", choices=["1h"], help="bar size (only 1h, the default)"
    )
    build.add_argument(
        "--out",
        type=Path,
        help="dataset folder to create or resume, e.g. data/dataset_v8; default: the config's "
        "dataset_path",
    )
    build.add_argument(
        "--feed",
        choices=["iex", "sip"],
        help="Alpaca feed: iex (default; free keys) or sip (all US exchanges, needs a plan that "
        "includes it; the build ends 16 minutes before now)",
    )
    build.add_argument(
        "--adjustment",
        choices=["raw", "split", "dividend", "all"],
        help="Alpaca price adjustment for splits/dividends; default: the folder's, the config's "
        "(all), else raw",
    )
    build.add_argument(
        "--macro",
        help="comma-separated daily Yahoo symbols stored under macro/, e.g. ^VIX,^TNX,DX-Y.NYB,SPY;"
        " default: the config's data.macro",
    )
    build.add_argument(
        "--update",
        action="store_true",
        help="only fetch bars after the last stored one; without --tickers the folder's "
        "manifest gives tickers, start, feed and adjustment",
    )
    build.add_argument(
        "--config",
        type=Path,
        help="take defaults from a training config's data: section and its dataset_path",
    )
    build.add_argument(
        "--detach",
        action="store_true",
        help="run in the background (own session; survives the shell and SSH): output to "
        "<out>/.build/build.log, progress to <out>/.build/status.json (docs/dataset-build.md)",
    )
    build.add_argument(
        "--status",
        action="store_true",
        help="write progress (per ticker and chunk, ETA) to <out>/.build/status.json and hold "
        "the folder's build lock; --detach sets it",
    )
    build.set_defaults(func=_dataset_build)

    imp = dsub.add_parser("import", help="import OHLCV CSV files into a dataset folder")
    imp.add_argument("files", nargs="+", type=Path)
    imp.add_argument("--out", type=Path, required=True)
    imp.add_argument("--tz", help="time zone of naive timestamps, e.g. UTC or America/New_York")
    imp.add_argument("--symbol", help="ticker of a single file (default: from the file name)")
    imp.set_defaults(func=_dataset_import)

    exp = dsub.add_parser("export", help="export a dataset as CSV files")
    exp.add_argument("dir", type=Path)
    exp.add_argument(
        "--csv", action="store_true", required=True, help="CSV (the only export format)"
    )
    exp.add_argument("--out", type=Path, required=True)
    exp.set_defaults(func=_dataset_export)

    check = dsub.add_parser("check", help="validate a dataset against the NYSE calendar")
    check.add_argument("dir", type=Path)
    check.add_argument(
        "--max-missing-pct",
        type=float,
        default=0.0,
        help="tolerated missing regular-session bars (%%)",
    )
    check.set_defaults(func=_dataset_check)

    info = dsub.add_parser("info", help="print a dataset's manifest")
    info.add_argument("dir", type=Path)
    info.set_defaults(func=_dataset_info)

    config = sub.add_parser("config", help="validate configuration files")
    csub = config.add_subparsers(dest="config_command", required=True)
    ccheck = csub.add_parser("check", help="validate a training config YAML")
    ccheck.add_argument("file", type=Path)
    ccheck.add_argument("--json", action="store_true", help="print the resolved config")
    ccheck.set_defaults(func=_config_check)

    feats = sub.add_parser("features", help="precompute the shared feature arrays once")
    fsub = feats.add_subparsers(dest="features_command", required=True)
    fbuild = fsub.add_parser("build", help="compute (or attach to) the cached features of a config")
    fbuild.add_argument("--config", type=Path, required=True)
    fbuild.add_argument("--rebuild", action="store_true", help="ignore the cache and recompute")
    fbuild.set_defaults(func=_features_build)

    bench = sub.add_parser(
        "bench", help="benchmarks that print JSON, comparisons measured side by side"
    )
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    benv = bsub.add_parser("env", help="feature precompute (vs ta) and environment steps/s")
    benv.add_argument(
        "--dir",
        type=Path,
        default=Path("data/bench"),
        help="15 x 50,000-bar dataset (made if absent)",
    )
    benv.add_argument("--json", action="store_true", help="one-line JSON (default: indented)")
    benv.add_argument("--repeats", type=int, default=3)
    benv.add_argument("--seconds", type=float, default=0.5, help="time per throughput measurement")
    benv.add_argument(
        "--ta-psar-all",
        action="store_true",
        help="time ta's slow PSAR on every ticker (~7 s each) so ta_reference_s covers all indicators",
    )
    benv.set_defaults(func=_bench_env)
    btrain = bsub.add_parser(
        "train", help="PPO timesteps/s: our batched env vs SubprocVecEnv of single envs"
    )
    btrain.add_argument("--json", action="store_true")
    btrain.add_argument("--n-envs", type=int, default=16)
    btrain.add_argument("--repeats", type=int, default=3)
    btrain.set_defaults(func=_bench_train)
    bmc = bsub.add_parser(
        "montecarlo", help="Monte Carlo: batched simulations vs one predict loop per simulation"
    )
    bmc.add_argument("--json", action="store_true")
    bmc.add_argument("--simulations", type=int, default=1000)
    bmc.add_argument("--naive", type=int, default=20, help="simulations in the naive loop")
    bmc.set_defaults(func=_bench_montecarlo)
    bexe = bsub.add_parser(
        "executor", help="the demo walk-forward on the local executor vs a loopback Ray cluster"
    )
    bexe.add_argument("--json", action="store_true")
    bexe.add_argument("--config", type=Path, default=Path("config/demo.yaml"))
    bexe.add_argument("--nodes", type=int, default=2, help="Ray worker nodes")
    bexe.set_defaults(func=_bench_executor)
    bwf = bsub.add_parser(
        "walkforward",
        help="units of the config trained here: timesteps/s per unit and in aggregate, gradient "
        "GFLOP/s vs a matmul peak, and the real run's projected wall time",
    )
    bwf.add_argument("--json", action="store_true", help="the full JSON (default: a summary)")
    bwf.add_argument(
        "--config", type=Path, help="training YAML (default: config/training_config_v8.yaml)"
    )
    bwf.add_argument(
        "--assume",
        metavar="cpus=N,ram=SIZE[,gpu=SIZE[,gpus=N]]",
        help="also project the wall time on that machine (arithmetic, labelled so)",
    )
    bwf.add_argument(
        "--timesteps",
        type=int,
        help="timesteps each unit trains (default: the real run's updates per episode, at least "
        "2 rollouts)",
    )
    bwf.add_argument(
        "--obs-size", type=int, help="observation size to bench instead of the config's"
    )
    bwf.add_argument(
        "--policy-repeats",
        type=int,
        default=1,
        help="RecurrentPPO units alone with sb3-contrib's stock LSTM policy and with ours, "
        "interleaved, this many of each (medians reported; default 1)",
    )
    bwf.add_argument("--hardware", help="hardware profile; default: the config's")
    bwf.set_defaults(func=_bench_walkforward)
    btui = bsub.add_parser(
        "tui", help="the control panel's own CPU and first-frame time beside 256 busy processes"
    )
    btui.add_argument("--json", action="store_true")
    btui.add_argument("--seconds", type=float, default=20.0)
    btui.add_argument("--children", type=int, default=256)
    btui.add_argument("--units", type=int, default=30, help="running units reporting progress")
    btui.add_argument("--repeat", type=int, default=1, help="rounds of the screens (medians)")
    btui.add_argument(
        "--screens", help="screens measured in turn, comma-separated (default: overview,hardware)"
    )
    btui.set_defaults(func=_bench_tui)

    def training_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, required=True, help="training YAML")
        p.add_argument(
            "--hardware", help="hardware profile (in the hardware file); default: the config's"
        )
        p.add_argument(
            "--hardware-file",
            type=Path,
            help="hardware profiles YAML; default: ./config/hardware.yaml in the working "
            "directory, else the packaged one (the plan names the file it read)",
        )
        p.add_argument(
            "--ensemble", type=int, help="members per fold (overrides training.ensemble)"
        )
        p.add_argument(
            "--force",
            action="store_true",
            help="accept a plan whose parallel members need more RAM than the machine has",
        )

    plan = sub.add_parser("plan", help="the resolved hardware plan and the reason for each number")
    training_args(plan)
    plan.add_argument("--json", action="store_true")
    plan.add_argument(
        "--assume",
        metavar="cpus=N,ram=SIZE[,gpu=SIZE[,gpus=N]]",
        help="plan for another machine, e.g. cpus=256,ram=1T,gpu=24G (a RunPod RTX 3090 server); "
        "gpus=N for N such GPUs",
    )
    plan.add_argument(
        "--obs-size", type=int, help="observation size when the dataset is not built here"
    )
    plan.add_argument(
        "--calibrate",
        action="store_true",
        help="first measure, by training real units of the config at 1, 2, 4, 8, 16 torch "
        "threads each, which split of the cores trains the most timesteps/s here; saved for "
        "later plans of the same unit shape on this machine",
    )
    plan.set_defaults(func=_plan)
    folds = sub.add_parser("folds", help="the walk-forward folds of a config")
    folds.add_argument("--config", type=Path, required=True)
    folds.add_argument("--json", action="store_true")
    folds.set_defaults(func=_folds)

    runs_dir = {
        "type": Path,
        "default": None,
        "help": "runs folder (default $PLOUTOS_RUNS_DIR or ./runs)",
    }
    train = sub.add_parser("train", help="walk-forward ensemble training with Monte Carlo")
    training_args(train)
    train.add_argument("--algorithm", choices=["ppo", "recurrent_ppo"])
    train.add_argument(
        "--run-dir", type=Path, help="run folder (default: a new one under --runs-dir)"
    )
    train.add_argument("--runs-dir", **runs_dir)
    train.add_argument("--detach", action="store_true", help="run in the background (own session)")
    train.add_argument(
        "--executor", choices=["local", "ray"], help="where members train (default: the config's)"
    )
    train.add_argument(
        "--ray-address",
        help="an existing Ray cluster (ray start --head ...); default: start Ray here",
    )
    train.set_defaults(func=_train)
    resume = sub.add_parser("resume", help="continue a stopped, failed or killed run")
    resume.add_argument("run", help="run id or folder")
    resume.add_argument("--runs-dir", **runs_dir)
    resume.add_argument("--detach", action="store_true")
    resume.set_defaults(func=_resume)
    stop = sub.add_parser("stop", help="stop a run gracefully (members checkpoint first)")
    stop.add_argument("run")
    stop.add_argument("--runs-dir", **runs_dir)
    stop.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it to stop")
    stop.set_defaults(func=_stop)
    runs = sub.add_parser("runs", help="list runs and their state")
    runs.add_argument("--runs-dir", **runs_dir)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_runs)
    status = sub.add_parser("status", help="one run: members, folds, Monte Carlo")
    status.add_argument("run")
    status.add_argument("--runs-dir", **runs_dir)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    thr = sub.add_parser(
        "threads", help="usable CPUs, thread limits and the sanitized BLAS settings"
    )
    thr.add_argument("--shell", action="store_true", help="print export lines for a shell script")
    thr.add_argument("-n", type=int, default=1, help="threads per BLAS/OpenMP pool (default 1)")
    thr.set_defaults(func=_threads)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PloutosError as err:
        if args.debug:
            raise
        print(f"ploutos: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(
            "ploutos: interrupted; finished files are kept, rerun the command to resume",
            file=sys.stderr,
        )
        return 130
    except (MemoryError, ImportError, OSError, SystemError) as err:
        # Under a small `ulimit -v`, importing pyarrow or torch fails to map its libraries: say so
        # in one line instead of a traceback. Anything else of these kinds is a bug: re-raise.
        hint = "" if args.debug else memory_hint(err)
        if not hint:
            raise
        print(f"ploutos: error: out of memory{hint}", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        # A C library left half-loaded by the failed allocation (pyarrow's jemalloc) can crash
        # the interpreter's teardown; nothing is left to clean up, so leave without it.
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
