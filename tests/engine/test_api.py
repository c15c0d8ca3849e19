"""engine.api, the panel's one door: every name it lists resolves, lazily, to the engine's own."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import engine.api as api

ROOT = Path(__file__).resolve().parents[2]


def _type_checking_imports() -> dict[str, tuple[str, str]]:
    """name -> (module, name there) of the ``if TYPE_CHECKING:`` block of engine/api.py."""
    tree = ast.parse(Path(api.__file__).read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    found = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module, ast.dump(node)
        for alias in node.names:
            found[alias.asname or alias.name] = (node.module, alias.name)
    return found


def test_all_lists_exactly_the_lazy_names_and_the_type_checking_block_agrees():
    assert len(api.__all__) == len(set(api.__all__))
    assert set(api.__all__) == {"__version__", *api._LAZY}
    assert _type_checking_imports() == api._LAZY


@pytest.mark.parametrize("name", sorted(api._LAZY))
def test_every_name_resolves_to_the_engines_own(name: str):
    module, attr = api._LAZY[name]
    assert getattr(api, name) is getattr(importlib.import_module(module), attr)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        api.no_such_name  # noqa: B018


def test_a_patched_engine_name_is_seen_through_the_door(monkeypatch: pytest.MonkeyPatch):
    import engine.data.demo

    def fake(*args, **kwargs):
        return None

    monkeypatch.setattr(engine.data.demo, "write_demo", fake)
    assert api.write_demo is fake


def test_the_door_and_the_panel_import_nothing_heavy():
    """The panel's first frame must not wait for pandas, torch or SB3 (seconds of imports)."""
    code = (
        "import sys, engine.api, ploutos_tui.app, ploutos_tui.model.runs, "
        "ploutos_tui.model.sampling, ploutos_tui.screens.hardware, ploutos_tui.screens.jobs, "
        "ploutos_tui.screens.run, ploutos_tui.screens.dataset\n"
        "print(sorted(m for m in ('pandas', 'torch', 'stable_baselines3', 'pyarrow') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
