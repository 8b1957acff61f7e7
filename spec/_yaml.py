"""Safe YAML loading that remembers where every key and value came from.

PyYAML's composer gives a node tree with source marks; we build plain Python values from it
with the *safe* constructor only, and keep a side table path -> position, so later stages can
say ``file:line:col`` for any value without carrying positions through the data itself.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field

import yaml

from ._diagnostics import Diagnostic

Path = tuple  # a key path into the loaded data: ('components', 'waves', 'frequencies', 2)

# Limits, checked before anything costs much (spec/README.md, "Limits"): a file is read only if it
# is a regular file of at most MAX_FILE_BYTES; its YAML may nest at most MAX_DEPTH collections
# deep and expand (aliases included) to at most MAX_NODES values.
MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_INTEGER = 10_000_000  # any size, rank, index or count a theory states: larger ones would allocate without bound
MAX_NODES = 100_000  # keys and values; aliases can expand exponentially ("billion laughs"); stop long before that
# libyaml's parser when PyYAML has it (about 7x faster); the pure-Python one words errors better
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FAST_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the same text, many times faster (a search dumps thousands)


def dump(data, **options) -> str:
    """``yaml.safe_dump``, by libyaml where PyYAML has it."""
    return yaml.dump(data, Dumper=_FAST_DUMPER, **options)


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
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problem(node.start_mark, f"expected plain YAML data, found tag '{node.tag}' "
                                          f"({getattr(exc, 'problem', None) or 'not allowed'})")
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
            self.problem(node.start_mark, f"expected an integer of at most {MAX_INTEGER:,} in size, found {node.value}")
            return value  # kept, so that no second error follows from it; the theory is refused anyway
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(node.start_mark, f"expected a finite number, found {node.value}")
            return None
        return value

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


class _TooDeep(Exception):
    def __init__(self, mark):
        self.mark = mark


def read_limited(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """The text of ``path`` if it is a regular UTF-8 file of at most ``limit`` bytes; else a
    ValueError saying what was expected and what was found. A device, pipe or directory is
    refused before it is opened for reading (``/dev/zero`` would never end, a pipe may block)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"cannot read '{path}': expected a regular file, found {_file_type(info.st_mode)}")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the stat and the open
                raise ValueError(f"cannot read '{path}': expected a regular file")
            data = f.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"cannot read '{path}': {exc.strerror or exc}") from None
    if len(data) > limit:
        left = "" if limit == MAX_FILE_BYTES else f" (what is left of the {MAX_FILE_BYTES:,} a theory and its includes may hold)"
        raise ValueError(f"cannot read '{path}': expected a file of at most {limit:,} bytes{left}, "
                         f"found {max(info.st_size, len(data)):,}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot read '{path}': expected UTF-8 text, found the byte 0x{data[exc.start]:02x} "
                         f"at offset {exc.start}") from None


def _file_type(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "a special file"


def _compose(text: str, loader) -> yaml.Node | None:
    """The node tree of ``text``, after one pass over its events (flat, cheap) refused anything
    nested deeper than MAX_DEPTH (composing recurses once per level) or holding more than
    MAX_NODES values (composing them all would take seconds)."""
    depth = values = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep(event.start_mark)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
            continue
        elif not isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            continue
        values += 1  # keys count: each is a node to compose
        if values > MAX_NODES:
            raise _TooLarge(event.start_mark)
    return yaml.compose(text, Loader=loader)


def load_yaml(text: str, path: str) -> tuple[object, SourceMap, list[Diagnostic]]:
    """Parse ``text`` safely. Returns (data, positions, problems); data is None when unreadable."""
    source = SourceMap(path)
    if len(text) > MAX_FILE_BYTES:
        return None, source, [Diagnostic(path, 1, 1, "error", f"expected at most {MAX_FILE_BYTES:,} characters "
                                                              f"of YAML, found {len(text):,}")]
    try:
        try:
            node = _compose(text, _FAST_LOADER)
        except yaml.YAMLError:  # said again by the pure-Python parser, whose messages are clearer
            node = _compose(text, yaml.SafeLoader)
    except _TooDeep as exc:
        return None, source, [Diagnostic(path, exc.mark.line + 1, exc.mark.column + 1, "error",
                                         f"expected YAML nested at most {MAX_DEPTH} levels deep, found deeper "
                                         f"nesting here")]
    except _TooLarge as exc:
        return None, source, [_too_many_values(path, exc.mark, "")]
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
    except _TooLarge as exc:  # only aliases, each one value in the file, get this far
        return None, source, [_too_many_values(path, exc.mark, " (aliases expand too far)")]
    return data, source, builder.problems


def _too_many_values(path: str, mark, why: str) -> Diagnostic:
    return Diagnostic(path, mark.line + 1, mark.column + 1, "error",
                      f"expected at most {MAX_NODES:,} values, found more{why}")
