"""The README's two set-up commands are the contract with users and with CI: keep them honest."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_readme_opens_with_exactly_two_one_line_setup_commands():
    commands = _readme_commands()
    assert len(commands) >= 2
    first, second = commands[:2]
    assert "\n" not in first and "\n" not in second
    assert "ploutos" in first and "demo" in first
    assert "pytest" in second


def test_ci_runs_the_readme_test_command_verbatim():
    second = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert second in ci.splitlines()
