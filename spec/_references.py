"""A theory's parts checked together, once each file is read: every name an expression or a
component reads is defined (and of the right section), declared inputs and axioms' places name
real sites, nothing depends on itself; then the order variables and components are computed in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _registry as kinds
from ._axioms import OUTPUT
from ._diagnostics import Diagnostic, did_you_mean
from ._expr import POSITION_NAMES, Expr
from ._theory import Origin, Theory, walk_reads
from ._yaml import SourceMap

SECTION_NOUN = {"sites": "site", "variables": "variable", "components": "component"}


@dataclass(frozen=True)
class Part:
    """A named site, variable or component of a theory, validated, and where it was written."""

    section: str
    name: str
    value: Any  # the validated model or expression
    origin: Origin


def check_references(parts: dict[str, Part], diagnostics: list[Diagnostic]) -> None:
    by_section = {s: {n: p for n, p in parts.items() if p.section == s} for s in SECTION_NOUN}
    variables, components, sites = by_section["variables"], by_section["components"], by_section["sites"]

    def error(part: Part, subpath: tuple, message: str, offset: int | None = None, key: bool = False,
              severity: str = "error"):
        diagnostics.append(part.origin.source.diagnostic(part.origin.path + subpath, message, key=key,
                                                          offset=offset, severity=severity))

    def check_expr(part: Part, subpath: tuple, expr: Expr, builtins: frozenset) -> None:
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
        kind = kinds.kind_of(comp)
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
        if comp is None or kinds.kind_of(comp).may_read_its_site:
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
    field = kinds.kind_of(component).reads_field or "from"
    paths = component.read_paths() or tuple((field, k) for k in range(len(component.reads())))
    return list(zip(paths, component.reads()))


def check_inputs(parts: dict[str, Part], inputs: tuple[str, ...], root: SourceMap,
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


def check_axioms(parts: dict[str, Part], axioms: dict, inputs: tuple[str, ...], diagnostics: list[Diagnostic]) -> None:
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
        for key, place in ((axiom.intervention, axiom.place), (axiom.expectation, axiom.observed)):
            if place is not None and place.name != OUTPUT and names_a_site(place.name) and place.name not in sites:
                error(origin, (key,), f"undefined site '{place.name}'{did_you_mean(place.name, sites)}; expected one "
                                      f"of the theory's sites ({', '.join(sorted(sites)) or 'none'}), a hook path "
                                      f"('blocks.0.attn.hook_z', 'hook_input') or 'output'")
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


def names_a_site(name: str) -> bool:
    """A place written as a plain word is a site's name; a hook is a module path (with a '.' or
    ':') or a top-level ``hook_*`` point (``hook_input``)."""
    return not any(c in name for c in ".:") and not name.startswith("hook_")


def _upstream_sites(name: str, components: dict[str, Part]) -> set[str]:
    """The sites and variables a component reads, directly or through other components."""
    return walk_reads([name], lambda n: components[n].value.reads()
                      if n in components and components[n].value is not None else None)[1]


def _check_cycles(parts: dict[str, Part], edges, section: str, error) -> None:
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


def dependency_order(parts: dict[str, Part], edges) -> list[str]:
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
