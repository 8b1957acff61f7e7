"""A readable outline of a theory: what each component reads, what predicts what, and the
parameter shapes known before any activations are seen (``D(site)`` stands for a site's width)."""

from __future__ import annotations

from math import prod
from typing import Union

from ._theory import Theory

Width = Union[int, str]


def feature_width(theory: Theory, name: str) -> Width:
    """Features a variable, site or component hands to its readers (an int, or a symbol)."""
    if name in theory.variables:
        return 1
    if name in theory.sites:
        return f"D({name})"
    c = theory.components[name]
    if c.kind == "fourier":
        return 2 * len(c.frequencies) * len(c.of)
    if c.kind == "rule":
        return len(c.when)
    if c.kind == "product":
        widths = [feature_width(theory, r) for r in c.of]
        if len(widths) == 1:
            w = widths[0]
            return w * (w + 1) // 2 if isinstance(w, int) else f"{w}({w}+1)/2"
        return prod(widths) if all(isinstance(w, int) for w in widths) else " x ".join(map(str, widths))
    if c.kind == "attention":
        return "T x T"
    if c.kind == "dictionary":  # its width counts latents; it reconstructs its site (or its input)
        return f"D({c.predicts})" if c.predicts else input_width(theory, c)
    return getattr(c, "width", None) or (f"D({c.predicts})" if c.predicts else "?")


def input_width(theory: Theory, component) -> Width:
    widths = [feature_width(theory, r) for r in component.reads()]
    return sum(widths) if all(isinstance(w, int) for w in widths) else " + ".join(map(str, widths))


def parameter_shapes(theory: Theory, name: str) -> dict[str, str]:
    """Named parameter shapes of a component, as text."""
    c = theory.components[name]
    out = feature_width(theory, name)
    if c.kind == "lookup":
        sizes = " x ".join(str(s) for s in c.size) if c.size else " x ".join("V" for _ in c.of)
        outside = " + 1" if c.outside == "row" else ""  # the row shared by keys outside their sizes
        return {"table": f"[{sizes}{outside}, {out}]"}
    if c.kind == "linear":
        fan_in = input_width(theory, c)
        shapes = ({"down": f"[{fan_in}, {c.rank}]", "up": f"[{c.rank}, {out}]"} if c.rank
                  else {"weight": f"[{fan_in}, {out}]"})
        return {**shapes, **({"bias": f"[{out}]"} if c.bias else {})}
    if c.kind == "attention":
        return {"sharpness": "[]", "prior": "[T, T]"}
    if c.kind == "dictionary":
        fan_in = input_width(theory, c)
        return {"encoder": f"[{fan_in}, {c.width}]", "encoder_bias": f"[{c.width}]",
                "decoder": f"[{c.width}, {out}]", "decoder_bias": f"[{out}]"}
    if c.kind == "mlp":
        sizes = [input_width(theory, c), *c.hidden, out]
        return {f"layer{k}": f"[{a}, {b}] + [{b}]" for k, (a, b) in enumerate(zip(sizes, sizes[1:]))}
    return {}  # fourier, rule, product: fixed features, nothing to fit


def outline(theory: Theory) -> str:
    lines = [f"theory {theory.name}  (target {theory.target})"]
    if theory.description:
        lines.append(f"  {theory.description.strip()}")
    lines.append("sites:")
    for name, site in theory.sites.items():
        where = f" at position {site.position}" if site.position is not None else ""
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
