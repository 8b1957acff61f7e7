"""A readable outline of a theory: what each component reads, what predicts what, and the
parameter shapes known before any activations are seen (``D(site)`` stands for a site's width)."""

from __future__ import annotations

from typing import Union

from ._registry import kind_of
from ._theory import Theory

Width = Union[int, str]


def feature_width(theory: Theory, name: str) -> Width:
    """Features a variable, site or component hands to its readers (an int, or a symbol)."""
    if name in theory.variables:
        return 1
    if name in theory.sites:
        return f"D({name})"
    c = theory.components[name]
    return kind_of(c).features(c, lambda r: feature_width(theory, r))


def input_width(theory: Theory, component) -> Width:
    widths = [feature_width(theory, r) for r in component.reads()]
    return sum(widths) if all(isinstance(w, int) for w in widths) else " + ".join(map(str, widths))


def parameter_shapes(theory: Theory, name: str) -> dict[str, str]:
    """Named parameter shapes of a component, as text (none for fixed features)."""
    c = theory.components[name]
    return kind_of(c).parameter_shapes(c, input_width(theory, c), feature_width(theory, name))


def outline(theory: Theory) -> str:
    """The theory as the engine sees it: a component that predicts several sites is listed once
    per site (``NAME@SITE``), with the parameters of each."""
    theory = theory.expanded()
    lines = [f"theory {theory.name}  (target {theory.target})"]
    if theory.description:
        lines.append(f"  {theory.description.strip()}")
    lines.append("sites:")
    for name, site in theory.sites.items():
        where = (f" at position {site.position}" if isinstance(site.position, int) else
                 f" at positions {list(site.position)}" if site.position is not None else "")
        by = ", ".join(theory.predictors(name)) or "nothing (input only)"
        lines.append(f"  {name:<12} {site.hook}{where}   predicted by: {by}")
    if theory.variables:
        lines.append("variables:")
        lines += [f"  {name:<12} = {expr}" for name, expr in theory.variables.items()]
    lines.append("components (in dependency order):")
    for name, c in theory.components.items():
        reads = [str(e) for _, e in c.expressions()] + list(c.reads())
        target = f" -> predicts {c.predicts}" if c.predicts else ""
        lines.append(f"  {name:<12} {c.kind:<10} reads {', '.join(reads)}{target}; "
                     f"{feature_width(theory, name)} features")
        for pname, shape in parameter_shapes(theory, name).items():
            lines.append(f"  {'':<12}   param {pname} {shape}")
    return "\n".join(lines)
