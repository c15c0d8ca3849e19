"""``ploutos-tui`` in a real terminal: tmux at 80x24 and 200x50, keys by send-keys, screen by
capture-pane. CI installs tmux (.ci/run); without it this test fails rather than skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def screen_text(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_for_text(session: str, *needles: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = screen_text(session)
        if all(n in text for n in needles):
            return text
        time.sleep(0.2)
    raise AssertionError(f"never saw {needles!r} on the screen:\n{text}")


@pytest.fixture
def session(tmp_path):
    assert shutil.which("tmux"), "tmux is required (apt-get install tmux; .ci/run installs it)"
    name = f"ploutos-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_panel_runs_in_tmux_and_answers_keys(session, tmp_path, demo_dataset, size):
    cols, rows = size
    runs = tmp_path / "runs"
    command = (
        f"cd {ROOT} && TERM=xterm-256color {sys.executable} -m ploutos_tui.app "
        f"--runs-dir {runs} --dataset {demo_dataset}; echo PANEL-EXITED-$?; sleep 30"
    )
    env = {**os.environ}
    env.pop("TMUX", None)
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", str(cols), "-y", str(rows), command],
        check=True,
        env=env,
        timeout=30,
    )
    text = wait_for_text(session, "Ploutos — overview", "CPU", "cores")
    assert all(len(line) <= cols for line in text.splitlines())
    assert len(text.splitlines()) == rows
    tmux("send-keys", "-t", session, "h")
    wait_for_text(session, "Ploutos — hardware", "usable")
    tmux("send-keys", "-t", session, "j")
    wait_for_text(session, f"Runs in {runs}", "run id")
    tmux("send-keys", "-t", session, "d")
    wait_for_text(session, "SYNA", "check: clean")
    tmux("send-keys", "-t", session, "?")
    wait_for_text(session, "re-attaches to them")
    tmux("send-keys", "-t", session, "?")  # closes the help again
    deadline = time.monotonic() + 30
    while "re-attaches to them" in screen_text(session):
        assert time.monotonic() < deadline, "the help did not close"
        time.sleep(0.2)
    tmux("send-keys", "-t", session, "q")
    wait_for_text(session, "PANEL-EXITED-0")
