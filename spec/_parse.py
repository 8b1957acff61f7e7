"""Parse and validate theory files: YAML -> structure -> includes -> names and cycles -> Theory.

Every stage collects problems instead of stopping at the first, and each part is validated on
its own, so one broken component does not hide the problems of the others.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from pydantic import StrictStr, TypeAdapter, ValidationError

from ._diagnostics import Diagnostic, TheoryError, describe, did_you_mean
from ._expr import FUNCTIONS, PAIR_NAMES, REDUCTIONS
from ._axioms import Axiom
from ._model import Doc, Expression, Fragment, Name, SiteEntry, Target, TheoryFile, TheoryName, list_of
from ._references import SECTION_NOUN, Part, check_axioms, check_inputs, check_references, dependency_order
from ._theory import Origin, Theory
from ._validate import pydantic_diagnostic, valid, validate_component
from ._yaml import MAX_FILE_BYTES, Path, SourceMap, load_yaml, read_limited

SECTIONS = {"sites": TypeAdapter(SiteEntry), "variables": TypeAdapter(Expression),
            "components": None}  # components: validated by their kind's schema (validate_component)
_SCALARS = {"theory": TypeAdapter(TheoryName), "target": TypeAdapter(Target), "description": TypeAdapter(Doc),
            "include": TypeAdapter(list_of(StrictStr, min_length=0)), "inputs": TypeAdapter(list_of(Name, min_length=0))}
_NAME = TypeAdapter(Name)
RESERVED_NAMES = PAIR_NAMES | set(FUNCTIONS) | set(REDUCTIONS)
MAX_PARTS = 1_000  # sites, variables, components and axioms of a theory and its includes together
MAX_ERRORS = 100  # then validation stops: suggestions for thousands of misspellings would cost minutes


class _Problems(list):
    """The diagnostics found so far; the error that makes MAX_ERRORS stops validation (_Stop)."""

    errors = 0

    def append(self, diagnostic: Diagnostic) -> None:
        super().append(diagnostic)
        self.errors += diagnostic.severity == "error"
        if self.errors == MAX_ERRORS:
            super().append(Diagnostic(diagnostic.path, diagnostic.line, diagnostic.col, "error",
                                      f"too many errors: stopped after {MAX_ERRORS}; fix these first"))
            raise _Stop

    def __iadd__(self, diagnostics):
        for d in diagnostics:
            self.append(d)
        return self


class _Stop(Exception):
    pass


class _Reader:
    """Reads a theory file and everything it includes, collecting parts and diagnostics."""

    def __init__(self, trust_code: bool = False, include_paths: Sequence[str] = ()):
        self.trust_code = trust_code  # may a 'kind: module:attr' import its module?
        self.roots = [os.path.realpath(p) for p in include_paths]  # + the top file's directory, in read
        self.diagnostics = _Problems()
        self.parts: list[Part] = []
        self.top: dict[str, Any] = {}
        self.root_source: Optional[SourceMap] = None
        self.seen: set[str] = set()
        self.axioms: dict[str, tuple[Axiom, Origin]] = {}
        self.bytes_left = MAX_FILE_BYTES  # of the top file and its includes together
        self.parts_left = MAX_PARTS

    def error(self, source: SourceMap, path: Path, message: str, **kw) -> None:
        self.diagnostics.append(source.diagnostic(path, message, **kw))

    def read(self, display: str, chain: tuple[str, ...] = (), text: Optional[str] = None,
             included_at: Optional[tuple[SourceMap, Path]] = None) -> None:
        real = os.path.realpath(display) if text is None else display
        if real in chain:
            loop = " -> ".join(os.path.basename(p) for p in chain + (real,))
            return self.error(*included_at, f"include cycle: {loop}")
        if real in self.seen:  # a diamond: the same parts, included twice, are one set of parts
            return
        self.seen.add(real)
        root = included_at is None
        if root:  # includes stay inside the top file's directory (and the --include-path ones)
            self.roots.insert(0, os.path.realpath(os.path.dirname(os.path.abspath(display))))
        if text is None:
            try:
                text = read_limited(display, max(self.bytes_left, 0))
            except ValueError as exc:
                if included_at:
                    return self.error(*included_at, str(exc))
                self.diagnostics.append(Diagnostic(display, 1, 1, "error", str(exc)))
                return
        self.bytes_left -= len(text)
        data, source, problems = load_yaml(text, display)
        self.diagnostics += problems
        if root:
            self.root_source = source
        if data is None and not problems:
            what = "a theory" if root else "shared parts"
            return self.error(source, (), f"expected {what} (a mapping of keys), found an empty file")
        if data is None:
            return
        if not isinstance(data, dict):
            return self.error(source, (), f"expected a mapping of keys ({', '.join(_allowed_top(root))}), "
                                          f"found {describe(data)}")
        self.read_top(data, source, root)
        for section in SECTIONS:
            self.read_section(section, data.get(section), source)
        includes = self.top.get(("include", display)) or ()
        for k, entry in enumerate(includes):
            at = (source, ("include", k))
            target, problem = self.include_target(display, entry)
            if problem:
                self.error(*at, problem)
            else:
                self.read(target, chain + (real,), included_at=at)

    def include_target(self, including: str, entry: str) -> tuple[Optional[str], Optional[str]]:
        """The path an include names (relative to the including file), or why it may not be read:
        it is absolute, or it leads (links followed) outside the directories includes may read."""
        if os.path.isabs(entry):
            return None, (f"expected a path relative to this file, found the absolute path '{entry}'; "
                          f"includes read only files under {self.shown_roots()}")
        target = os.path.normpath(os.path.join(os.path.dirname(including), entry))
        real = os.path.realpath(target)
        if not any(os.path.commonpath([real, root]) == root for root in self.roots):
            return None, (f"include '{entry}' leads outside the directories includes may read "
                          f"({self.shown_roots()}, links followed); expected a file under them (name another "
                          f"directory with --include-path DIR)")
        return target, None

    def shown_roots(self) -> str:
        here = os.getcwd()
        return ", ".join(repr(os.path.relpath(r, here) if os.path.commonpath([r, here]) == here else r)
                         for r in self.roots)

    def read_top(self, data: dict, source: SourceMap, root: bool) -> None:
        allowed = _allowed_top(root)
        for key, value in data.items():
            if key in ("theory", "target", "inputs", "axioms") and not root:
                self.error(source, (key,), f"an included file holds shared parts only "
                                           f"({', '.join(allowed)}), found '{key}'", key=True)
            elif key not in allowed:
                self.error(source, (key,), f"unknown key '{key}'{did_you_mean(key, allowed)}; "
                                           f"expected one of: {', '.join(allowed)}", key=True)
            elif key == "axioms":
                self.read_axioms(value, source)
            elif key in _SCALARS:
                value = self.validate(_SCALARS[key], value, source, (key,))
                self.top[(key, source.path)] = value
                if root:
                    self.top[key] = value
        if root and "theory" not in data:  # target: may be left out, for a model given in Python (target=)
            self.error(source, (), "missing required key 'theory' (the theory's name)")

    def read_section(self, section: str, entries: Any, source: SourceMap) -> None:
        if entries is None:
            return
        if not isinstance(entries, dict):
            return self.error(source, (section,), f"expected a mapping of names to {section}, found {describe(entries)}")
        for name, raw in self.within_limit(entries, source, section):
            path = (section, name)
            if not isinstance(name, str) or not valid(_NAME, name):
                self.error(source, path, f"expected a name of letters, digits and '_' that starts with a "
                                         f"letter, found {describe(name)}", key=True)
                continue
            if name in RESERVED_NAMES:
                self.error(source, path, f"'{name}' is a reserved name of the expression language; "
                                         f"choose another name", key=True)
                continue
            if section == "components":
                value, problems = validate_component(raw, source, path, trust_code=self.trust_code)
                self.diagnostics += problems
            else:
                value = self.validate(SECTIONS[section], raw, source, path)
            self.parts.append(Part(section, name, value, Origin(source, path)))

    def read_axioms(self, entries: Any, source: SourceMap) -> None:
        if not isinstance(entries, dict):
            return self.error(source, ("axioms",), f"expected a mapping of names to axioms, found {describe(entries)}")
        for name, raw in self.within_limit(entries, source, "axioms"):
            path = ("axioms", name)
            if not isinstance(name, str) or not valid(_NAME, name):
                self.error(source, path, f"expected a name of letters, digits and '_' that starts with a "
                                         f"letter, found {describe(name)}", key=True)
                continue
            if not isinstance(raw, dict):
                self.error(source, path, f"expected an axiom (a mapping of an intervention and an expectation), "
                                         f"found {describe(raw)}")
                continue
            try:
                value = Axiom.model_validate(raw)
            except ValidationError as exc:
                self.diagnostics += [pydantic_diagnostic(err, raw, source, path, Axiom) for err in exc.errors()]
                continue
            self.axioms[name] = (value, Origin(source, path))

    def within_limit(self, entries: dict, source: SourceMap, section: str) -> list[tuple[Any, Any]]:
        """A section's entries, as many as MAX_PARTS leaves room for; the first past it is reported
        (once), and the rest are not validated: checking costs time per part."""
        items = list(entries.items())
        if len(items) > self.parts_left:
            if self.parts_left >= 0:
                self.error(source, (section, items[self.parts_left][0]), (
                    f"expected at most {MAX_PARTS:,} named parts (sites, variables, components and axioms, "
                    f"includes counted), found more; split the theory or share fewer parts"), key=True)
            items = items[:max(self.parts_left, 0)]
            self.parts_left = -1
        else:
            self.parts_left -= len(items)
        return items

    def validate(self, adapter: TypeAdapter, raw: Any, source: SourceMap, path: Path):
        try:
            return adapter.validate_python(raw)
        except ValidationError as exc:
            for err in exc.errors():
                self.diagnostics.append(pydantic_diagnostic(err, raw, source, path))
            return None


def _allowed_top(root: bool) -> tuple[str, ...]:
    return tuple(TheoryFile.model_fields if root else Fragment.model_fields)


# --- the driver -----------------------------------------------------------------------------------

def check_theory(path: str, text: Optional[str] = None, *, trust_code: bool = False,
                 include_paths: Sequence[str] = ()) -> tuple[Optional[Theory], tuple[Diagnostic, ...]]:
    """Validate a theory file, reporting every problem.

    Parameters
    ----------
    path : str
        The theory file (named in the diagnostics).
    text : str, optional
        The file's text; default read from ``path``.
    trust_code : bool
        Let a ``kind: module:attr`` import its module (it runs that module's code).
    include_paths : sequence of str
        Directories includes may read from, besides the top file's own.

    Returns
    -------
    tuple of (Theory or None, tuple of Diagnostic)
        The Theory (None if any error) and all diagnostics, warnings included, sorted by position.
    """
    reader = _Reader(trust_code, include_paths)
    parts: dict[str, Part] = {}
    try:
        reader.read(path, text=text)
        for part in reader.parts:
            first = parts.get(part.name)
            if first is not None:
                pos = first.origin.source.key(first.origin.path)
                reader.error(part.origin.source, part.origin.path,
                             f"duplicate name '{part.name}': already a {SECTION_NOUN[first.section]} at "
                             f"{first.origin.source.path}:{pos.line}", key=True)
                continue
            parts[part.name] = part
        check_references(parts, reader.diagnostics)
        if reader.root_source is not None and not any(d.severity == "error" for d in reader.diagnostics):
            check_inputs(parts, tuple(reader.top.get("inputs") or ()), reader.root_source, reader.diagnostics)
        check_axioms(parts, reader.axioms, tuple(reader.top.get("inputs") or ()), reader.diagnostics)
    except _Stop:  # MAX_ERRORS found: the rest would mostly repeat them
        pass
    diagnostics = tuple(sorted(set(reader.diagnostics)))
    if any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    groups = {s: {n: p for n, p in parts.items() if p.section == s} for s in SECTIONS}
    variable_order = dependency_order(groups["variables"], lambda p: [n for n, _ in p.value.names])
    component_order = dependency_order(groups["components"], lambda p: list(p.value.reads()))
    theory = Theory(
        name=reader.top["theory"], target=reader.top["target"].relative_to(path) if "target" in reader.top else None, description=reader.top.get("description"),
        sites={n: p.value for n, p in groups["sites"].items()},
        variables={n: groups["variables"][n].value for n in variable_order},
        components={n: groups["components"][n].value for n in component_order},
        inputs=tuple(reader.top.get("inputs") or ()),
        axioms={n: a for n, (a, _) in reader.axioms.items()},
        origins={(p.section, n): p.origin for n, p in parts.items()} | {("axioms", n): o for n, (_, o) in reader.axioms.items()},
    )
    return theory, diagnostics


def declare_inputs(data: dict) -> dict:
    """Theory data (plain, as YAML holds it, includes already flattened) with ``inputs:`` naming
    every site a component reads that none predicts: for theories built by program (baselines,
    search candidates), which are given those sites and pay for them. Components that do not
    validate are left to the parser."""
    predicted, read = set(), []
    for raw in (data.get("components") or {}).values():
        component, problems = validate_component(raw, SourceMap("<data>"), ("components",))
        if component is None:
            continue
        predicted |= set(component.predicted())
        read += [r for r in component.reads() if r in (data.get("sites") or {})]
    inputs = list(dict.fromkeys([*(data.get("inputs") or []), *(r for r in read if r not in predicted)]))
    return {**data, "inputs": inputs} if inputs else data


def load_theory(path: str, *, trust_code: bool = False, include_paths: Sequence[str] = ()) -> Theory:
    """Parse and validate a theory file and its includes.

    Parameters
    ----------
    path : str or Path
        The theory file.
    trust_code : bool
        Let a ``kind: module:attr`` import its module.
    include_paths : sequence of str
        Directories includes may read from, besides the file's own.

    Returns
    -------
    Theory
        The frozen, validated theory.

    Raises
    ------
    TheoryError
        Listing every problem, each at file:line:col.
    """
    theory, diagnostics = check_theory(str(path), trust_code=trust_code, include_paths=include_paths)
    if theory is None:
        raise TheoryError(diagnostics)
    return theory


def parse_theory(text: str, path: str = "<string>", *, trust_code: bool = False,
                 include_paths: Sequence[str] = ()) -> Theory:
    """Like ``load_theory``, from text.

    Parameters
    ----------
    text : str
        The theory's YAML.
    path : str
        The name diagnostics use; includes resolve relative to its directory (the current
        directory for a name like ``<string>``) and stay under it (or ``include_paths``).
    trust_code : bool
        Let a ``kind: module:attr`` import its module.
    include_paths : sequence of str
        Directories includes may read from, besides ``path``'s.

    Returns
    -------
    Theory
        The frozen, validated theory.

    Raises
    ------
    TheoryError
        Listing every problem, each at file:line:col.
    """
    theory, diagnostics = check_theory(path, text=text, trust_code=trust_code, include_paths=include_paths)
    if theory is None:
        raise TheoryError(diagnostics)
    return theory
