"""THE YAML reader: every YAML file Ploutos reads (configs, hardware.yaml, run folders) goes here.

It imports only PyYAML and ``engine.errors``, so the panel can use it before its first frame.
A file that is not UTF-8, a key given twice in one mapping (PyYAML silently keeps the last),
nesting deeper than ``MAX_YAML_DEPTH`` (the composer recurses: a deep file would end in a
``RecursionError``) or aliases expanding past ``MAX_YAML_EXPANDED_NODES`` (a "billion laughs") is
refused as one :class:`~engine.errors.ConfigError` line naming the file and, where known, the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError

# Configs are a few levels deep; anything deeper is a mistake or an attack, refused long before
# the composer's recursion could exhaust Python's stack.
MAX_YAML_DEPTH = 64
# Aliases share one node each, but whatever walks the loaded data (a list field's validation, a
# dump, a repr in a message) walks the expanded tree: a "billion laughs" file of a few lines would
# take hours. Far above any real config.
MAX_YAML_EXPANDED_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlRefused(yaml.YAMLError):
    """A YAML document we refuse to load (duplicate key, too deep, too big); ``line`` is 1-based."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


class StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate mapping keys and documents nested too deep.

    PyYAML keeps the last of two equal keys silently, so a second ``training:`` block would
    replace the first without a word.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._checked: set[int] = set()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlRefused(
                    f"nested more than {MAX_YAML_DEPTH} levels deep; configs need only a few",
                    mark.line + 1,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _check_unique(self, node: yaml.MappingNode) -> None:
        # Once per node, before a merge (``<<: *x``) prepends keys that may legitimately repeat.
        if id(node) in self._checked:
            return
        self._checked.add(id(node))
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first is not None:
                raise YamlRefused(
                    f"duplicate key {key!r} at lines {first} and {line}; keep only one", line
                )
            seen[key] = line

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        self._check_unique(node)
        super().flatten_mapping(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self._check_unique(node)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document has once every alias is expanded, capped just above the limit.

    Iterative post-order over the node graph, memoised per node: linear in the file however much
    the aliases multiply. An alias inside its own anchor (a cycle) is refused.
    """
    cap = MAX_YAML_EXPANDED_NODES + 1
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            sizes[id(node)] = min(cap, total)
            continue
        if id(node) in sizes:
            continue
        if id(node) in entered:  # entered but not finished: it is its own ancestor
            raise YamlRefused(
                "an alias refers to the mapping or list that contains it", node.start_mark.line + 1
            )
        entered.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def parse_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """THE YAML reader: the document's data and its node tree (for line numbers in errors).

    Raises ``yaml.YAMLError`` (``YamlRefused`` for duplicate keys, deep nesting, alias bombs).
    """
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        if _expanded_size(node) > MAX_YAML_EXPANDED_NODES:
            raise YamlRefused(
                f"expands to more than {MAX_YAML_EXPANDED_NODES:,} values through its aliases "
                "(a YAML bomb?)",
                None,
            )
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def read_yaml(path: str | Path, shown: str | Path | None = None) -> tuple[dict[str, Any], Any]:
    """A YAML file's top-level mapping and its node tree (for line numbers in errors).

    ``shown``: how the file is named in messages (default ``path``). Every failure is one
    ``ConfigError`` line naming the file.
    """
    path = Path(path)
    shown = path if shown is None else shown
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: file not found") from None
    except OSError as err:
        raise ConfigError(f"{shown}: cannot read it ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{shown}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save it as UTF-8"
        ) from None
    try:
        raw, node = parse_yaml(text)
    except YamlRefused as err:
        where = f"{shown}:{err.line}" if err.line else str(shown)
        raise ConfigError(f"{where}: {err.message}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}" if mark else str(shown)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    except RecursionError:  # belt and braces: MAX_YAML_DEPTH should stop it first
        raise ConfigError(f"{shown}: nested too deep to read") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: expected a mapping of keys at the top level")
    return raw, node
