"""A build's status file and its detached process, against the loopback Alpaca server.

``ploutos dataset build --status`` holds the folder's build lock and writes
``<out>/.build/status.json`` (docs/dataset-build.md); ``--detach`` starts it in a session of its
own through ``engine.runs.jobs.launch_detached``. The kill test parks the build with
``PLOUTOS_BUILD_FAULT=pause@N`` (it waits there for a signal), so the SIGKILL provably lands
after chunk N-1 and before chunk N, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from engine.cli import main
from engine.data import builder
from engine.data.sources import alpaca
from engine.errors import PloutosError
from engine.runs import jobs
from tests.engine.alpaca_server import KEY_ID, SECRET, FakeAlpaca

pytestmark = pytest.mark.timeout(120)

RANGE = ["--start", "2019-06-01", "--end", "2021-03-01"]  # 3 calendar-year chunks per ticker
CHUNKS = [
    ("2019-06-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00"),
    ("2020-01-01T00:00:00+00:00", "2021-01-01T00:00:00+00:00"),
    ("2021-01-01T00:00:00+00:00", "2021-03-01T00:00:00+00:00"),
]


@pytest.fixture
def fake():
    with FakeAlpaca(page_size=1000) as server:
        yield server


@pytest.fixture
def env(fake, monkeypatch, tmp_path):
    monkeypatch.setenv(alpaca.ENV_KEY_ID, KEY_ID)
    monkeypatch.setenv(alpaca.ENV_SECRET_KEY, SECRET)
    monkeypatch.setenv(alpaca.ENV_DATA_URL, fake.url)
    monkeypatch.setenv(jobs.BUILDS_FILE_ENV, str(tmp_path / "builds.json"))
    monkeypatch.delenv(builder.BUILD_FAULT_ENV, raising=False)


def build_args(out: Path, *extra: str) -> list[str]:
    return [
        "dataset",
        "build",
        "--tickers",
        "AAPL,MSFT",
        *RANGE,
        "--macro",
        "",
        "--out",
        str(out),
        *extra,
    ]


def no_secrets_under(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY_ID.encode() not in data and SECRET.encode() not in data, path


def wait_status(root: Path, predicate, what: str, timeout: float = 60.0):
    """Poll the status file until ``predicate(status)``; a hang fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        status = builder.read_build_status(root)
        if status is not None and predicate(status):
            return status
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {status}"
        time.sleep(0.05)


def test_status_file_has_the_plan_per_ticker_chunk_counts_and_no_secrets(env, fake, tmp_path):
    out = tmp_path / "ds"
    assert main(build_args(out, "--status")) == 0
    status = builder.read_build_status(out)
    assert status is not None and status.state == "done" and not status.alive
    assert (status.done, status.total) == (6, 6)
    rows = {s["ticker"]: s for s in status.series}
    for sym in ("AAPL", "MSFT"):
        assert rows[sym]["chunks"] == rows[sym]["done"] == 3
        assert rows[sym]["rows"] == len(pd.read_parquet(out / f"{sym}.parquet"))
    assert status.seconds_per_chunk is not None and status.eta_s == 0
    assert status.command[:2] == ["dataset", "build"] and "--status" in status.command
    assert str(out.resolve()) in status.command
    no_secrets_under(out)
    # The dataset itself has no trace of the status folder: the check lists no unknown file.
    from engine.data.check import check_dataset

    assert not [f for f in check_dataset(out).findings if f.code == "unlisted_files"]


def test_eta_is_measured_seconds_per_chunk_times_the_chunks_left(tmp_path):
    clock = {"t": 100.0}
    out = tmp_path / "ds"
    plan = [
        builder.ChunkPlan(
            "bars",
            sym,
            pd.Timestamp(f"{y}-01-01", tz="UTC"),
            pd.Timestamp(f"{y + 1}-01-01", tz="UTC"),
        )
        for sym in ("AAPL", "MSFT")
        for y in (2020, 2021)
    ]
    with builder.BuildStatusFile(out, ["dataset", "build"], clock=lambda: clock["t"]) as status:
        status.planned(plan)
        assert json.loads(status.path.read_text())["eta_s"] is None  # nothing measured yet
        status.started(1)
        clock["t"] += 4.0
        step = plan[0]
        status.progress(builder.BuildProgress("bars", "AAPL", step.start, step.end, 10, 1, 4))
        status.started(2)
        snap = json.loads(status.path.read_text())
        assert snap["seconds_per_chunk"] == 4.0 and snap["eta_s"] == 12.0
        assert snap["current"]["ticker"] == "AAPL" and snap["current"]["index"] == 2
        clock["t"] += 2.0
        status.progress(builder.BuildProgress("bars", "AAPL", plan[1].start, plan[1].end, 10, 2, 4))
        snap = json.loads(status.path.read_text())
        assert snap["seconds_per_chunk"] == 3.0 and snap["eta_s"] == 6.0
        assert builder.read_build_status(out).state == "running"
        assert builder.build_lock_holder(out) == os.getpid()
    assert builder.read_build_status(out).state == "done"
    assert builder.build_lock_holder(out) is None


def test_a_second_build_into_a_folder_being_built_is_refused(env, tmp_path, capsys):
    out = tmp_path / "ds"
    with builder.BuildStatusFile(out, ["dataset", "build"]):
        assert main(build_args(out, "--status")) == 2
        err = capsys.readouterr().err
        assert "already running" in err and f"pid {os.getpid()}" in err and err.count("\n") == 1
        with pytest.raises(PloutosError, match="already running"):
            jobs.start_build_detached(build_args(out)[2:], out)
    assert not (out / "AAPL.parquet").exists()


def test_a_full_disk_is_recorded_as_failed_in_one_line(env, tmp_path, monkeypatch):
    monkeypatch.setenv(builder.BUILD_FAULT_ENV, "enospc@2")
    out = tmp_path / "ds"
    with pytest.raises(OSError, match="No space left"):
        main(build_args(out, "--status"))
    status = builder.read_build_status(out)
    assert status.state == "failed" and status.resumable
    assert status.error.startswith("No space left on device (") and "\n" not in status.error
    assert status.done == 1  # the first chunk is stored, for the resume
    monkeypatch.delenv(builder.BUILD_FAULT_ENV)
    assert main(build_args(out, "--status")) == 0
    assert builder.read_build_status(out).state == "done"


def test_cli_detach_returns_at_once_and_the_build_finishes_alone(env, fake, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(build_args(out, "--detach")) == 0
    printed = capsys.readouterr().out
    assert "started in the background (pid " in printed and "build.log" in printed
    pid = int(printed.split("(pid ", 1)[1].split(")", 1)[0])
    status = wait_status(out, lambda s: s.state == "done", "the detached build")
    os.waitpid(pid, 0)  # our child: reap it
    assert status.total == 6 and set(
        json.loads((tmp_path / "builds.json").read_text())["folders"]
    ) == {str(out.resolve())}
    log = builder.build_log_path(out).read_text()
    assert "[6/6]" in log and f"dataset {out.resolve()}: 2 tickers" in log
    no_secrets_under(out)
    assert jobs.recent_builds() == [out.resolve()]


def test_cli_detach_without_keys_names_both_and_starts_nothing(env, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(alpaca.ENV_KEY_ID)
    monkeypatch.delenv(alpaca.ENV_SECRET_KEY)
    out = tmp_path / "ds"
    assert main(build_args(out, "--detach")) == 2
    err = capsys.readouterr().err
    assert err.startswith("ploutos: error: APCA_API_KEY_ID and APCA_API_SECRET_KEY are not set")
    assert not out.exists()


def test_a_killed_detached_build_is_interrupted_and_resumes_after_its_last_chunk(
    env, fake, tmp_path, monkeypatch
):
    ref = tmp_path / "ref"
    assert main(build_args(ref)) == 0
    fake.reset()
    out = tmp_path / "ds"
    monkeypatch.setenv(builder.BUILD_FAULT_ENV, "pause@4")  # after AAPL's 3 chunks
    proc = jobs.start_build_detached(build_args(out)[2:], out)
    try:
        status = wait_status(out, lambda s: s.paused_before == 4, "the pause before chunk 4")
        assert status.state == "running" and status.pid == proc.pid and status.done == 3
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status = builder.read_build_status(out)
    assert status.state == "interrupted" and status.resumable
    first = set(fake.chunk_counts())
    assert first == {("AAPL", lo, hi) for lo, hi in CHUNKS}
    monkeypatch.delenv(builder.BUILD_FAULT_ENV)
    fake.reset()
    proc = jobs.resume_build(out)
    assert proc.wait(timeout=60) == 0
    assert builder.read_build_status(out).state == "done"
    assert set(fake.chunk_counts()) == {("MSFT", lo, hi) for lo, hi in CHUNKS}  # AAPL not again
    for sym in ("AAPL", "MSFT"):
        assert (out / f"{sym}.parquet").read_bytes() == (ref / f"{sym}.parquet").read_bytes()
    no_secrets_under(out)
    with pytest.raises(PloutosError, match="no build is running"):
        jobs.stop_build(out)


def test_stop_asks_the_build_to_stop_and_it_records_stopped(env, fake, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    monkeypatch.setenv(builder.BUILD_FAULT_ENV, "pause@2")
    proc = jobs.start_build_detached(build_args(out)[2:], out)
    try:
        wait_status(out, lambda s: s.paused_before == 2, "the pause before chunk 2")
        assert jobs.stop_build(out) == proc.pid
        assert proc.wait(timeout=30) == 130  # SIGTERM is the CLI's interrupt: finished chunks kept
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status = builder.read_build_status(out)
    assert status.state == "stopped" and status.resumable and status.done == 1


@pytest.mark.parametrize(
    ("content", "state", "problem"),
    [
        (b"{not json", "unreadable", "not a JSON object"),
        (b"[1, 2]", "unreadable", "not a JSON object"),
        (b'{"state": "exploded"}', "unreadable", "unknown state 'exploded'"),
        (b'{"state": "running", "pid": 1}', "interrupted", None),
        (b'{"state": "starting", "pid": 999999999}', "interrupted", None),
        (b'{"state": "done", "done": "many", "total": true, "series": 3}', "done", None),
    ],
)
def test_a_damaged_status_file_reads_as_a_state_not_an_exception(tmp_path, content, state, problem):
    path = builder.build_status_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    status = builder.read_build_status(tmp_path)
    assert status.state == state and not status.alive
    if problem:
        assert problem in status.problem
    # Fields of the wrong type read as unknown, never as a crash of the reader's caller.
    assert status.done == 0 and status.total is None and status.series == []
    assert status.eta_s is None and status.current is None


def test_out_folder_problem_reads_and_never_creates(tmp_path, demo_dataset):
    problem = builder.out_folder_problem(demo_dataset, "alpaca", feed="iex", adjustment="all")
    assert "holds another dataset" in problem and "'synthetic-demo'" in problem
    assert "\n" not in problem
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert "not empty" in builder.out_folder_problem(
        tmp_path / "full", "alpaca", feed="iex", adjustment="all"
    )
    assert (
        builder.out_folder_problem(tmp_path / "new" / "ds", "alpaca", feed="iex", adjustment="all")
        is None
    )
    assert not (tmp_path / "new").exists()
