"""Safe YAML loading that remembers where every key and value came from.

PyYAML's composer gives a node tree with source marks; we build plain Python values from it
with the *safe* constructor only, and keep a side table path -> position, so later stages can
say ``file:line:col`` for any value without carrying positions through the data itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import re

import yaml

from ._diagnostics import Diagnostic

Path = tuple  # a key path into the loaded data: ('components', 'waves', 'frequencies', 2)

MAX_NODES = 200_000  # aliases can expand exponentially ("billion laughs"); stop long before that


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    col: int  # 1-based
    quoted: bool = False  # the scalar was written in quotes: its text starts one column later


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of one YAML file was written."""

    path: str
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def value(self, path: Path) -> Position:
        """Position of the value at ``path``, or of its nearest written ancestor."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.values:
                return self.values[path[:cut]]
        return Position(1, 1)

    def key(self, path: Path) -> Position:
        return self.keys.get(path) or self.value(path)

    def diagnostic(self, path: Path, message: str, *, key: bool = False, offset: int | None = None,
                   severity: str = "error") -> Diagnostic:
        """A diagnostic at a key or value; ``offset`` points inside a scalar's text."""
        pos = self.key(path) if key else self.value(path)
        col = pos.col if offset is None else pos.col + int(pos.quoted) + offset
        return Diagnostic(self.path, pos.line, col, severity, message)


def _position(mark, quoted: bool = False) -> Position:
    return Position(mark.line + 1, mark.column + 1, quoted)


_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")


class _Builder:
    def __init__(self, source: SourceMap):
        self.source = source
        self.problems: list[Diagnostic] = []
        self.loader = yaml.SafeLoader("")
        self.count = 0
        self.active: set[int] = set()

    def problem(self, mark, message: str) -> None:
        self.problems.append(Diagnostic(self.source.path, mark.line + 1, mark.column + 1, "error", message))

    def build(self, node: yaml.Node, path: Path):
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge(node.start_mark)
        quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
        self.source.values[path] = _position(node.start_mark, quoted)
        if id(node) in self.active:
            self.problem(node.start_mark, "expected plain data, found an alias that refers to itself")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if node.tag not in _PLAIN_COLLECTIONS:
            self.problem(node.start_mark, f"expected plain YAML data, found tag '{node.tag}' (not allowed)")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            return self.build_mapping(node, path)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode):
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problem(node.start_mark, f"expected plain YAML data, found tag '{node.tag}' "
                                          f"({getattr(exc, 'problem', None) or 'not allowed'})")
            return None

    def build_mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        result: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problem(key_node.start_mark, "expected a key, found a YAML merge key '<<' (write the keys out)")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node.start_mark, "expected a plain key, found a nested mapping or list as a key")
                continue
            key = self.scalar(key_node)
            if not isinstance(key, (str, int, float, bool)):
                key = str(key)
            if key in result:
                first = self.source.keys[path + (key,)]
                self.problem(key_node.start_mark, f"duplicate key '{key}' (first written at line {first.line})")
                continue
            self.source.keys[path + (key,)] = _position(key_node.start_mark)
            result[key] = self.build(value_node, path + (key,))
        return result


class _TooLarge(Exception):
    def __init__(self, mark):
        self.mark = mark


def load_yaml(text: str, path: str) -> tuple[object, SourceMap, list[Diagnostic]]:
    """Parse ``text`` safely. Returns (data, positions, problems); data is None when unreadable."""
    source = SourceMap(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = (exc.problem or "invalid YAML").strip()
        context = f" {exc.context}" if exc.context else ""
        lines = text.splitlines()
        if mark and mark.line < len(lines) and re.search(r"\w\s*\(\s*\w+:\s", lines[mark.line]):
            context += " (an expression with ': ' inside, such as count(j: ...), must be quoted: \"count(j: ...)\")"
        return None, source, [Diagnostic(path, line, col, "error", f"invalid YAML: {problem}{context}")]
    except yaml.YAMLError as exc:  # e.g. a reader error for non-printable characters
        return None, source, [Diagnostic(path, 1, 1, "error", f"invalid YAML: {exc}")]
    if node is None:
        return None, source, []
    builder = _Builder(source)
    try:
        data = builder.build(node, ())
    except _TooLarge as exc:
        return None, source, [Diagnostic(path, exc.mark.line + 1, exc.mark.column + 1, "error",
                                         f"expected at most {MAX_NODES} values, found more (aliases expand too far)")]
    except RecursionError:
        return None, source, [Diagnostic(path, 1, 1, "error", "expected a theory file, found YAML nested too deeply")]
    return data, source, builder.problems
