"""The parsed theory: frozen, comparable, and able to say where each of its parts was written."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Optional

from ._diagnostics import Diagnostic
from ._expr import Expr, renamed
from ._model import Site, TargetRef
from ._yaml import Path, SourceMap, dump as dump_yaml


def walk_reads(start: Iterable[str], reads: Callable[[str], Optional[Iterable[str]]]) -> tuple[set[str], set[str]]:
    """Everything reachable from ``start`` along ``reads`` (None for a name that reads nothing: a
    site or a variable): (the names passed through, the names reached that read nothing)."""
    inner: set[str] = set()
    leaves: set[str] = set()
    stack = list(start)
    while stack:
        name = stack.pop()
        if name in inner or name in leaves:
            continue
        names = reads(name)
        if names is None:
            leaves.add(name)
        else:
            inner.add(name)
            stack.extend(names)
    return inner, leaves


@dataclass(frozen=True)
class Origin:
    """Where one named part (a site, variable or component) was written."""

    source: SourceMap
    path: Path  # e.g. ('components', 'waves')


@dataclass(frozen=True)
class Theory:
    """A validated theory with includes resolved. Two theories are equal when they say the same
    thing, wherever it was written; ``origins`` only serve error messages."""

    name: str
    target: Optional[TargetRef]  # None: left out of the file, for a model given in Python (target=)
    sites: Mapping[str, Site]
    variables: Mapping[str, Expr]  # in dependency order
    components: Mapping[str, object]  # name -> a component kind model, in dependency order
    description: Optional[str] = None
    inputs: tuple[str, ...] = ()  # recorded sites it is given (and pays for), declared with `inputs:`
    axioms: Mapping[str, object] = field(default_factory=dict)  # name -> spec._axioms.Axiom: claims checked on the network
    origins: Mapping[tuple[str, str], Origin] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for name in ("sites", "variables", "components", "axioms", "origins"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def _part_rows(self) -> tuple[list[list[str]], list[list[str]]]:
        """(sites: name, hook, predicted by; components: name, kind, reads, predicts), as text."""
        sites = [[name, str(site.hook) + (f" @ position {site.position}" if site.position is not None else ""),
                  "given (input)" if name in self.inputs else ", ".join(self.predictors(name)) or "its training mean"]
                 for name, site in self.sites.items()]
        components = [[name, c.kind, ", ".join([str(e) for _, e in c.expressions()] + list(c.reads())),
                       ", ".join(c.predicted()) or "-"] for name, c in self.components.items()]
        return sites, components

    def __repr__(self) -> str:
        sites, components = self._part_rows()
        counts = f"{len(sites)} sites, {len(self.variables)} variables, {len(components)} components, {len(self.axioms)} axioms"
        lines = [f"Theory({self.name!r} on {self.target or 'the model given in Python'}: {counts})"]
        lines += [f"  site {r[0]} = {r[1]}  <- {r[2]}" for r in sites]
        lines += [f"  {name} = {expr}" for name, expr in self.variables.items()]
        lines += [f"  {r[0]}: {r[1]} of {r[2] or '-'} -> {r[3]}" for r in components]
        lines += [f"  axiom {name}" for name in self.axioms]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from theorycraft._html import code, esc, table

        sites, components = self._part_rows()
        head = (f"<p><b>Theory</b> {code(self.name)} on {code(self.target or 'the model given in Python')}"
                + (f": {esc(self.description.strip())}" if self.description else "") + "</p>")
        parts = [head, table(["site", "hook", "predicted by"], sites)]
        if self.variables:
            parts.append(table(["variable", "expression"], [[n, e.text] for n, e in self.variables.items()]))
        parts.append(table(["component", "kind", "reads", "predicts"], components))
        if self.axioms:
            parts.append(table(["axiom", "doc"], [[n, getattr(a, "doc", None) or ""] for n, a in self.axioms.items()]))
        return "\n".join(parts)

    def predictors(self, site: str) -> tuple[str, ...]:
        """Components whose outputs add up to the prediction of ``site``."""
        return tuple(name for name, c in self.components.items() if site in c.predicted())

    @property
    def covered(self) -> tuple[str, ...]:
        """The sites the theory answers for, and that coverage and MDL are computed over: every
        site it names but its inputs; a site it does not predict counts at its training mean."""
        return tuple(s for s in self.sites if s not in self.inputs)

    def expanded(self) -> "Theory":
        """The theory as the engine fits it: a component that predicts several sites becomes one
        instance per site, each with its own parameters (its read-out into that site): ``C``
        for the first site, ``C@SITE`` for each other. A component that reads ``C`` reads its
        first instance."""
        if all(len(c.predicted()) <= 1 for c in self.components.values()):
            return self
        components, origins = {}, dict(self.origins)
        for name, c in self.components.items():
            first, *others = c.predicted() or (None,)
            components[name] = c.model_copy(update={"predicts": first})
            for site in others:
                components[f"{name}@{site}"] = c.model_copy(update={"predicts": site})
                if ("components", name) in self.origins:
                    origins[("components", f"{name}@{site}")] = self.origins[("components", name)]
        return Theory(self.name, self.target, self.sites, self.variables, components, self.description,
                      self.inputs, self.axioms, origins)

    def site_reads(self, site: str) -> set[str]:
        """The other sites a site's prediction reads (through its predictors and all they read)."""
        return {r for name in self.upstream(site) for r in self.components[name].reads()
                if r in self.sites and r != site}

    def site_order(self) -> tuple[list[str], list[str]]:
        """(the covered sites in an order where each comes after every site it reads, a cycle of
        sites if there is one: then free-running evaluation is not defined)."""
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(site: str, trail: list[str]) -> list[str]:
            state[site] = 1
            for r in sorted(self.site_reads(site)):
                if r in self.inputs:
                    continue
                if state.get(r) == 1:
                    return trail[trail.index(r):] + [r]
                if r not in state and (loop := visit(r, trail + [r])):
                    return loop
            state[site] = 2
            order.append(site)
            return []

        for site in self.covered:
            if site not in state and (loop := visit(site, [site])):
                return order, loop
        return order, []

    def upstream(self, site: str) -> set[str]:
        """The components a site's prediction depends on: its predictors and all they read."""
        return walk_reads(self.predictors(site),
                          lambda n: self.components[n].reads() if n in self.components else None)[0]

    def diagnostic(self, section: str, name: str, message: str, *subpath, key: bool = False,
                   severity: str = "error") -> Diagnostic:
        """A diagnostic at a part of the theory, e.g. ``('components', 'waves', 'width')``."""
        origin = self.origins.get((section, name))
        if origin is None:
            return Diagnostic("<theory>", 1, 1, severity, message)
        return origin.source.diagnostic(origin.path + tuple(subpath), message, key=key, severity=severity)

    def to_dict(self) -> dict:
        """The canonical plain-data form (includes flattened, defaults left out)."""
        out: dict = {"theory": self.name}
        if self.description:
            out["description"] = self.description
        if self.target is not None:
            out["target"] = str(self.target)
        if self.sites:
            out["sites"] = {n: _site_data(s) for n, s in self.sites.items()}
        if self.variables:
            out["variables"] = {n: e.text for n, e in self.variables.items()}
        if self.inputs:
            out["inputs"] = list(self.inputs)
        if self.components:
            out["components"] = {n: _component_data(c) for n, c in self.components.items()}
        if self.axioms:
            out["axioms"] = {n: a.model_dump(mode="json", by_alias=True, exclude_defaults=True)
                             for n, a in self.axioms.items()}
        return out

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict(), sort_keys=False, width=100, allow_unicode=True)

    def claim(self) -> str:
        """What the theory says, not how it is worded or where it lives: kinds, wiring,
        expressions and hyperparameters as YAML, every name (of sites, variables, components,
        also inside expressions) replaced by its index (``s0``, ``v0``, ``c0``), without the
        theory's name, description, docs or target. Its compressed length is the theory's
        ``bits_spec``.

        A site is coded by its index alone: its hook and position say *which* activations are
        explained, the question that the mean-only baseline over the same sites asks too, not
        how they are explained; and they are spelled in the target's own module paths, so
        coding them would make one claim dearer on a model with longer module names."""
        index = {name: f"{prefix}{k}" for prefix, names in (("s", self.sites), ("v", self.variables),
                                                             ("c", self.components))
                 for k, name in enumerate(names)}
        out: dict = {}
        if self.sites:
            out["sites"] = len(self.sites)
        if self.inputs:
            out["inputs"] = [index[s] for s in self.inputs]
        if self.variables:
            out["variables"] = [renamed(e, index) for e in self.variables.values()]
        if self.components:
            out["components"] = [_component_claim(c, index) for c in self.components.values()]
        return dump_yaml(out, sort_keys=False, width=100, default_flow_style=None)


def _site_data(site: Site):
    data = site.model_dump(mode="json", exclude_defaults=True)
    return data["hook"] if list(data) == ["hook"] else data


def _component_data(component) -> dict:
    data = component.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return {"kind": data.pop("kind"), **data}


def _component_claim(component, index: Mapping[str, str]) -> dict:
    """A component's fields without its doc, its references and expressions renamed by
    ``index``. Generic over kinds: a reference is a field value naming what the component
    reads or predicts; an expression is one the component lists in ``expressions()``."""
    data = component.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude={"doc"})
    refs = set(component.reads()) | set(component.predicted())
    for key, value in data.items():
        if isinstance(value, str) and value in refs:
            data[key] = index[value]
        elif isinstance(value, list) and value and all(isinstance(v, str) and v in refs for v in value):
            data[key] = [index[v] for v in value]
    for path, expr in component.expressions():
        *parents, last = path
        node = data
        for step in parents:
            node = node[step]
        node[last] = renamed(expr, index)
    return {"kind": data.pop("kind"), **data}
