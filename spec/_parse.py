"""Parse and validate theory files: YAML -> structure -> includes -> names and cycles -> Theory.

Every stage collects problems instead of stopping at the first, and each part is validated on
its own, so one broken component does not hide the problems of the others.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from pydantic import StrictStr, TypeAdapter, ValidationError

from ._diagnostics import Diagnostic, TheoryError, describe, did_you_mean
from ._expr import FUNCTIONS, PAIR_NAMES, POSITION_NAMES, REDUCTIONS, Expr
from ._axioms import OUTPUT, Axiom
from ._model import Doc, Expression, Fragment, Name, Site, SiteEntry, Target, TheoryFile, TheoryName, _list_of
from ._theory import Origin, Theory, walk_reads
from ._yaml import MAX_FILE_BYTES, Path, SourceMap, load_yaml, read_limited

SECTIONS = {"sites": TypeAdapter(SiteEntry), "variables": TypeAdapter(Expression),
            "components": None}  # components: validated by their kind's schema (validate_component)
SECTION_NOUN = {"sites": "site", "variables": "variable", "components": "component"}
_SCALARS = {"theory": TypeAdapter(TheoryName), "target": TypeAdapter(Target), "description": TypeAdapter(Doc),
            "include": TypeAdapter(_list_of(StrictStr, min_length=0)), "inputs": TypeAdapter(_list_of(Name, min_length=0))}
_NAME = TypeAdapter(Name)
RESERVED_NAMES = PAIR_NAMES | set(FUNCTIONS) | set(REDUCTIONS)
MAX_PARTS = 1_000  # sites, variables, components and axioms of a theory and its includes together
_PLAIN = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
          "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
          "bool_parsing": "true or false", "string_type": "text", "dict_type": "a mapping",
          "model_type": "a mapping", "model_attributes_type": "a mapping", "tuple_type": "a list",
          "list_type": "a list", "string_pattern_mismatch":
          "a name of letters, digits and '_' that starts with a letter"}


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


@dataclass(frozen=True)
class _Part:
    section: str
    name: str
    value: Any  # the validated model or expression
    origin: Origin


class _Reader:
    """Reads a theory file and everything it includes, collecting parts and diagnostics."""

    def __init__(self, trust_code: bool = False, include_paths: Sequence[str] = ()):
        self.trust_code = trust_code  # may a 'kind: module:attr' import its module?
        self.roots = [os.path.realpath(p) for p in include_paths]  # + the top file's directory, in read
        self.diagnostics = _Problems()
        self.parts: list[_Part] = []
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
            if not isinstance(name, str) or not _valid(_NAME, name):
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
            self.parts.append(_Part(section, name, value, Origin(source, path)))

    def read_axioms(self, entries: Any, source: SourceMap) -> None:
        if not isinstance(entries, dict):
            return self.error(source, ("axioms",), f"expected a mapping of names to axioms, found {describe(entries)}")
        for name, raw in self.within_limit(entries, source, "axioms"):
            path = ("axioms", name)
            if not isinstance(name, str) or not _valid(_NAME, name):
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
                self.diagnostics += [_pydantic_diagnostic(err, raw, source, path, Axiom) for err in exc.errors()]
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
                self.diagnostics.append(_pydantic_diagnostic(err, raw, source, path))
            return None


def _allowed_top(root: bool) -> tuple[str, ...]:
    return tuple(TheoryFile.model_fields if root else Fragment.model_fields)


def _valid(adapter: TypeAdapter, value: Any) -> bool:
    try:
        adapter.validate_python(value)
        return True
    except ValidationError:
        return False


def _field_names(model) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _kinds():
    """The one registry of component kinds (imported late: the kinds' schemas import spec)."""
    from theorycraft.inference import kinds
    return kinds


def validate_component(raw: Any, source: SourceMap, path: Path, *, trust_code: bool = False):
    """(the component, or None; diagnostics): its ``kind`` looked up in the registry (a
    ``module:attr`` kind imported only with ``trust_code``), then its keys by that kind's schema."""
    kinds = _kinds()
    if not isinstance(raw, dict):
        return None, [source.diagnostic(tuple(path), f"expected a component (a mapping with a 'kind'), "
                                                     f"found {describe(raw)}")]
    names = sorted(k for k in kinds.KINDS if not kinds.is_reference(k))
    if "kind" not in raw:
        return None, [source.diagnostic(tuple(path), f"missing required key 'kind'; expected one of: {', '.join(names)}")]
    name = raw["kind"]
    if not isinstance(name, str) or (name not in kinds.KINDS and not kinds.is_reference(name)):
        return None, [source.diagnostic(tuple(path) + ("kind",), f"unknown component kind {describe(name)}"
                                        f"{did_you_mean(name, names)}; expected one of: {', '.join(names)}")]
    try:
        model = kinds.resolve(name, trust_code=trust_code).schema
    except kinds.KindError as exc:
        return None, [source.diagnostic(tuple(path) + ("kind",), str(exc))]
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        return None, [_pydantic_diagnostic(err, raw, source, path, model) for err in exc.errors()]


def _pydantic_diagnostic(err: dict, raw: Any, source: SourceMap, path: Path, model=None) -> Diagnostic:
    """One pydantic error, as a positioned message that says what was expected and found."""
    loc, error, found = list(err["loc"]), err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if path[0] == "sites":
        model = Site
    where = tuple(path) + tuple(loc)
    noun = {Site: "a site", Axiom: "an axiom"}.get(model) or (f"a {raw.get('kind')} component" if model else "")
    if error == "extra_forbidden":
        allowed = _field_names(model) if model else []
        return source.diagnostic(where, f"unknown key '{loc[-1]}' in {noun}{did_you_mean(loc[-1], allowed)}; "
                                        f"expected one of: {', '.join(sorted(allowed))}", key=True)
    if error == "missing":
        return source.diagnostic(where[:-1], f"missing required key '{loc[-1]}' in {noun}")
    if error in ("expression", "hook", "target", "place", "axiom"):
        return source.diagnostic(where, ctx["message"], offset=ctx.get("offset", 0))
    if error == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx["expected"])
        return source.diagnostic(where, f"expected one of {ctx['expected']}, found {describe(found)}"
                                        f"{did_you_mean(found, choices)}")
    if error in ("greater_than", "greater_than_equal"):
        bound = f"> {ctx['gt']}" if "gt" in ctx else f">= {ctx['ge']}"
        return source.diagnostic(where, f"expected a number {bound}, found {describe(found)}")
    if error == "too_short":
        return source.diagnostic(where, f"expected at least {ctx['min_length']} item, found none")
    if error == "string_pattern_mismatch" and where == ("theory",):
        return source.diagnostic(where, f"expected a theory name of letters, digits, '_', '-' and '.' "
                                        f"that starts with a letter, found {describe(found)}")
    expected = _PLAIN.get(error, err["msg"].replace("Input should be", "").strip())
    return source.diagnostic(where, f"expected {expected}, found {describe(found)}")


# --- names, references and cycles ---------------------------------------------------------------

def _check_references(parts: dict[str, _Part], diagnostics: list[Diagnostic]) -> None:
    by_section = {s: {n: p for n, p in parts.items() if p.section == s} for s in SECTIONS}
    variables, components, sites = by_section["variables"], by_section["components"], by_section["sites"]

    def error(part: _Part, subpath: tuple, message: str, offset: int | None = None, key: bool = False,
              severity: str = "error"):
        diagnostics.append(part.origin.source.diagnostic(part.origin.path + subpath, message, key=key,
                                                          offset=offset, severity=severity))

    def check_expr(part: _Part, subpath: tuple, expr: Expr, builtins: frozenset) -> None:
        if "j" in builtins:  # a rule over (query, key) pairs already ranges over the keys
            for function, offset in expr.reductions:
                error(part, subpath, f"{function}(j: ...) is not allowed here: this expression is already "
                                     f"over key positions j (use it in a variable instead)", offset)
        for name, offset in expr.names:
            if name in builtins or name in variables:
                continue
            if name == "j":
                message = ("'j' (the key position) exists only in attention rules and inside "
                           "count(j: ...), sum(j: ...) and aggregate(j: ...)")
            elif name in parts:
                message = (f"'{name}' is a {SECTION_NOUN[parts[name].section]}; expressions read "
                           f"variables and {', '.join(sorted(POSITION_NAMES))}")
            else:
                message = f"undefined variable '{name}'{did_you_mean(name, [*variables, *builtins])}"
            error(part, subpath, message, offset)

    for part in variables.values():
        if part.value is not None:
            check_expr(part, (), part.value, POSITION_NAMES)
    readers: dict[str, list[str]] = {}
    for name, part in components.items():
        comp = part.value
        if comp is None:
            continue
        kind = _kinds().kind_of(comp)
        for subpath, expr in comp.expressions():
            check_expr(part, subpath, expr, frozenset(kind.expression_names()))
        for path, ref in _read_paths(comp):
            readers.setdefault(ref, []).append(name)
            if ref not in parts:
                error(part, path, f"undefined name '{ref}': expected a component, site or variable"
                                        f"{did_you_mean(ref, parts)}")
        several = len(comp.predicted()) > 1
        for k, site in enumerate(comp.predicted()):
            if site not in sites:
                error(part, ("predicts", k) if several else ("predicts",),
                      f"undefined site '{site}'{did_you_mean(site, sites)}"
                      f"; expected one of: {', '.join(sites) or '(no sites declared)'}")
        if several and len(set(comp.predicted())) < len(comp.predicted()):
            error(part, ("predicts",), "a site is named twice in 'predicts'; name each site once")
        for subpath, message in kind.problems(comp):
            error(part, subpath, message, key=not subpath)

    _check_cycles(variables, lambda p: [n for n, _ in p.value.names if n in variables], "variables", error)
    _check_cycles(components, lambda p: [r for r in p.value.reads() if r in components], "components", error)
    for name, part in components.items():
        comp = part.value
        if comp is None or _kinds().kind_of(comp).may_read_its_site:
            continue
        for site in sorted(set(comp.predicted()) & _upstream_sites(name, components)):
            error(part, ("predicts",), f"'{name}' predicts site '{site}' from that same site; only a "
                                       f"dictionary (an autoencoder whose codes are paid for) may")
    if any(d.severity == "error" for d in diagnostics):
        return  # unused-part warnings would mostly echo the errors above
    predicted = {s for p in components.values() for s in p.value.predicted()}
    for name, part in sites.items():
        if name not in predicted and name not in readers:
            error(part, (), f"site '{name}' is neither predicted nor read by any component", severity="warning")
    for name, part in components.items():
        if part.value.predicts is None and name not in readers:
            error(part, (), f"component '{name}' predicts no site and no component reads it", severity="warning")


def _read_paths(component) -> list[tuple[tuple, str]]:
    """(key path, name) of everything a component reads, for messages that point at it."""
    field = _kinds().kind_of(component).reads_field or "from"
    paths = component.read_paths() or tuple((field, k) for k in range(len(component.reads())))
    return list(zip(paths, component.reads()))


def _check_inputs(parts: dict[str, _Part], inputs: tuple[str, ...], root: SourceMap,
                  diagnostics: list[Diagnostic]) -> None:
    """Every recorded site a theory reads is either predicted by it or declared in ``inputs:``
    (given to it, and paid for in bits), so that it can run free from the input alone; the
    sites it predicts form no cycle."""
    sites = [n for n, p in parts.items() if p.section == "sites"]  # in file order: a cycle is reported the same way each time
    components = {n: p for n, p in parts.items() if p.section == "components"}
    predicted = {s for p in components.values() for s in p.value.predicted()}
    for k, name in enumerate(inputs):
        if name in inputs[:k]:
            diagnostics.append(root.diagnostic(("inputs", k), f"site '{name}' is already an input; name each once"))
        elif name not in sites:
            diagnostics.append(root.diagnostic(("inputs", k), f"undefined site '{name}'{did_you_mean(name, sites)}; "
                                                              f"inputs name recorded sites the theory is given"))
        elif name in predicted:
            diagnostics.append(root.diagnostic(("inputs", k), f"site '{name}' is predicted by the theory, so it is not "
                                                              f"an input; remove it from 'inputs'"))
    for name, part in components.items():
        comp = part.value
        for path, ref in _read_paths(comp):
            if ref in sites and ref not in predicted and ref not in inputs:
                diagnostics.append(part.origin.source.diagnostic(part.origin.path + path, (
                    f"'{name}' reads site '{ref}', which no component predicts; declare it as an input "
                    f"(inputs: [{ref}]: its recorded values are given to the theory and paid for in bits) "
                    f"or predict it")))
    if any(d.severity == "error" for d in diagnostics):
        return
    theory = Theory(name="t", target=None, sites={n: parts[n].value for n in sites}, variables={},
                    components={n: p.value for n, p in components.items()}, inputs=inputs)
    _, loop = theory.site_order()
    if loop:
        first = next(n for n in components if loop[0] in components[n].value.predicted())
        part = components[first]
        diagnostics.append(part.origin.source.diagnostic(part.origin.path, (
            f"cycle through sites: {' -> '.join(loop)} (each is predicted from the next); a theory must be "
            f"able to run from the input alone, so its sites cannot feed each other in a loop"), key=True))


def _check_axioms(parts: dict[str, _Part], axioms: dict, inputs: tuple[str, ...], diagnostics: list[Diagnostic]) -> None:
    """What an axiom names exists: its expressions read variables and positions; ``subspace`` is a
    component; ``theory`` names sites or components; only ``output`` or a site the theory
    predicts can be ``predicted_by_theory``; the output is observed, never intervened on."""
    sites = {n for n, p in parts.items() if p.section == "sites"}
    components = {n for n, p in parts.items() if p.section == "components"}
    variables = {n for n, p in parts.items() if p.section == "variables"}

    def error(origin, subpath, message, offset=None):
        diagnostics.append(origin.source.diagnostic(origin.path + subpath, message, offset=offset))

    for name, (axiom, origin) in axioms.items():
        for key in ("input", "from"):
            expr = getattr(axiom, "from_" if key == "from" else key)
            for ref, offset in (expr.names if expr is not None else ()):
                if ref not in POSITION_NAMES and ref not in variables:
                    error(origin, (key,), f"undefined variable '{ref}'{did_you_mean(ref, [*variables, *POSITION_NAMES])}",
                          offset)
        if axiom.place is not None and axiom.place.name == OUTPUT:
            error(origin, (axiom.intervention,), "the output is observed, not intervened on; name a site or hook")
        if axiom.subspace is not None and axiom.subspace not in components:
            error(origin, ("subspace",), f"undefined component '{axiom.subspace}'{did_you_mean(axiom.subspace, components)}; "
                                         f"a subspace is the span of a component's features")
        for k, ref in enumerate(axiom.theory):
            if ref not in sites and ref not in components and ref not in variables:
                error(origin, ("theory", k) if len(axiom.theory) > 1 else ("theory",),
                      f"undefined name '{ref}'{did_you_mean(ref, [*sites, *components, *variables])}; expected the "
                      f"sites, components or variables that stand for '{axiom.place}' in the theory")
        if sum(ref in sites for ref in axiom.theory) > 1:
            error(origin, ("theory",), "at most one site stands for a place in the theory (components and "
                                       "variables may be several)")
        if axiom.theory and axiom.intervention == "input":
            error(origin, ("theory",), "an input intervention acts on the theory's input itself; remove 'theory'")
        observed = axiom.observed.name
        predicted = sorted(sites - set(inputs))
        if axiom.expectation == "predicted_by_theory" and observed != OUTPUT and observed not in predicted:
            what = "is given to the theory (an input)" if observed in sites else "is not a site of the theory"
            error(origin, ("predicted_by_theory",), f"'{observed}' {what}; it predicts only its sites "
                                                    f"({', '.join(predicted)}) and the output")


def _upstream_sites(name: str, components: dict[str, _Part]) -> set[str]:
    """The sites and variables a component reads, directly or through other components."""
    return walk_reads([name], lambda n: components[n].value.reads()
                      if n in components and components[n].value is not None else None)[1]


def _check_cycles(parts: dict[str, _Part], edges, section: str, error) -> None:
    """Report each cycle once, at its first member in file order. Depth-first with a stack of its
    own: a chain of a thousand variables is not a thousand Python frames."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start, part in parts.items():
        if start in state or part.value is None:
            continue
        state[start], trail, stack = 1, [start], [iter(edges(part))]
        while stack:
            nxt = next(stack[-1], _END)
            if nxt is _END:
                state[trail.pop()] = 2
                stack.pop()
            elif parts[nxt].value is None:
                continue
            elif state.get(nxt) == 1:
                loop = trail[trail.index(nxt):] + [nxt]
                error(parts[nxt], (), f"cycle in {section}: {' -> '.join(loop)}", key=True)
            elif nxt not in state:
                state[nxt] = 1
                trail.append(nxt)
                stack.append(iter(edges(parts[nxt])))


def _dependency_order(parts: dict[str, _Part], edges) -> list[str]:
    """Each part after everything it reads (depth-first, post-order, with a stack of its own)."""
    order: list[str] = []
    done: set[str] = set()
    for start in parts:
        if start in done:
            continue
        done.add(start)
        stack = [(start, iter(edges(parts[start])))]
        while stack:
            name, following = stack[-1]
            nxt = next(following, _END)
            if nxt is _END:
                order.append(name)
                stack.pop()
            elif nxt in parts and nxt not in done:
                done.add(nxt)
                stack.append((nxt, iter(edges(parts[nxt]))))
    return order


_END = object()


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
    parts: dict[str, _Part] = {}
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
        _check_references(parts, reader.diagnostics)
        if reader.root_source is not None and not any(d.severity == "error" for d in reader.diagnostics):
            _check_inputs(parts, tuple(reader.top.get("inputs") or ()), reader.root_source, reader.diagnostics)
        _check_axioms(parts, reader.axioms, tuple(reader.top.get("inputs") or ()), reader.diagnostics)
    except _Stop:  # MAX_ERRORS found: the rest would mostly repeat them
        pass
    diagnostics = tuple(sorted(set(reader.diagnostics)))
    if any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    groups = {s: {n: p for n, p in parts.items() if p.section == s} for s in SECTIONS}
    variable_order = _dependency_order(groups["variables"], lambda p: [n for n, _ in p.value.names])
    component_order = _dependency_order(groups["components"], lambda p: list(p.value.reads()))
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
