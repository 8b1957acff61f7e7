"""Baselines, each a theory written in the same language as the reference it is compared with,
over the same sites: what a theory must beat to count as an explanation.

- mean only: every site predicted by its training mean (the empty theory);
- memorisation: one table cell per distinct input (the varying token positions of a fixed-length
  input), where the table fits in memory;
- probe: a linear probe on one-hot inputs: one table per input position, summed (token and
  position tables for sites over every position; for a site at positions the format fixes, one
  table per input position and kept position; a linear map of the input site for vector inputs);
- sae: sparse autoencoders (``dictionary``) of each site at several widths and sparsities, their
  per-example codes paid for in bits;
- transcoder: where a suite names a layer's MLP input for a site (the residual stream after that
  layer), a ``dictionary`` from that input to the site (circuit-tracer's and sparsify's
  transcoders) beside a linear skip from the same input (sparsify's skip transcoder: the residual
  connection and the MLP's linear part); the input is a declared input, sent as data and counted
  at R² 0 like every given site, and the codes are paid for as an SAE's are;
- random: the reference with its fixed features drawn at random (Fourier frequencies, the
  constants of attention rules, the offsets its variables read at; a drawn variable whose values
  leave the range the reference's take keeps its text), same size; or, where it has none, its
  fitted parameters shuffled within each tensor (same size, same bits, no structure).

Attention-pattern sites can only be predicted by attention rules, so their baselines are the
mean and the random rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Mapping, Sequence

import numpy as np

from theorycraft.inference.kinds import kind_of
from theorycraft.spec import (Theory, declare_inputs, dump as dump_yaml, evaluate_variables, parse_theory,
                              random_offsets)

MAX_TABLE_PARAMS = 50_000_000  # memorisation tables larger than this are not built


@dataclass(frozen=True)
class Baseline:
    name: str
    family: str  # mean | memorisation | probe | sae | transcoder | random
    theory: Theory
    shuffle: bool = False  # random by shuffling the reference's fitted parameters (no fit)


@dataclass(frozen=True)
class Context:
    """What baselines need to know about the data: per-example site shapes and the inputs."""

    shapes: Mapping[str, tuple[int, ...]]  # coded site -> per-example shape
    inputs: np.ndarray  # [N, T] token ids, or [N, D] vectors
    vocab_size: int | None


def _theory(reference: Theory, name: str, description: str, components: dict, variables: dict | None = None,
            sites: Sequence[str] | None = None, extra_sites: Mapping[str, dict] | None = None) -> Theory:
    sites = list(sites if sites is not None else reference.covered)
    data = {"theory": f"{reference.name}.{name}", "description": description, "target": str(reference.target),
            "sites": {**{s: reference.to_dict()["sites"][s] for s in sites}, **(extra_sites or {})}}
    if variables:
        data["variables"] = variables
    if components:
        data["components"] = components
    return parse_theory(dump_yaml(declare_inputs(data), sort_keys=False), path=f"<baseline {name} of {reference.name}>")


def _is_pattern(ctx: Context, site: str) -> bool:
    return len(ctx.shapes[site]) == 3


def _varying_positions(inputs: np.ndarray) -> list[int]:
    return [k for k in range(inputs.shape[1]) if len(np.unique(inputs[:, k])) > 1]


def mean_only(reference: Theory, ctx: Context) -> list[Baseline]:
    return [Baseline("mean", "mean", _theory(reference, "mean", "every site predicted by its training mean", {}))]


def memorisation(reference: Theory, ctx: Context) -> list[Baseline]:
    sites = [s for s in reference.covered if not _is_pattern(ctx, s) and len(ctx.shapes[s]) == 1]
    if not sites or ctx.inputs.ndim != 2 or not np.issubdtype(ctx.inputs.dtype, np.integer):
        return []
    positions = _varying_positions(ctx.inputs)
    sizes = [int(ctx.inputs[:, k].max()) + 1 for k in positions]
    if any(prod(sizes) * ctx.shapes[s][-1] > MAX_TABLE_PARAMS for s in sites):
        return []
    variables = {f"t{k}": f"token[{k}]" for k in positions}
    components = {f"table_{s}": {"kind": "lookup", "of": list(variables), "size": sizes, "predicts": s} for s in sites}
    return [Baseline("memorise", "memorisation", _theory(reference, "memorise", "one table cell per distinct input",
                                                         components, variables, sites))]


def probe(reference: Theory, ctx: Context) -> list[Baseline]:
    sites = [s for s in reference.covered if not _is_pattern(ctx, s)]
    if not sites:
        return []
    components, variables = {}, {}
    if np.issubdtype(ctx.inputs.dtype, np.integer):
        vocab = ctx.vocab_size or int(ctx.inputs.max()) + 1
        for s in sites:
            kept = reference.sites[s].kept
            if isinstance(kept, list):  # positions the format fixes: each input token, per kept position
                variables["row"] = _row_of(kept)
                for k in _varying_positions(ctx.inputs):
                    variables[f"t{k}"] = f"token[{k}]"
                    components[f"t{k}_{s}"] = {"kind": "lookup", "of": ["row", f"t{k}"],
                                               "size": [_rows_of(kept), vocab], "predicts": s}
            elif len(ctx.shapes[s]) == 2:  # per position: a token table and a position table
                variables.update({"tok": "token[i]", "pos": "i"})
                components[f"token_{s}"] = {"kind": "lookup", "of": "tok", "size": vocab, "predicts": s}
                components[f"position_{s}"] = {"kind": "lookup", "of": "pos", "size": ctx.shapes[s][0], "predicts": s}
            else:
                for k in _varying_positions(ctx.inputs):
                    variables[f"t{k}"] = f"token[{k}]"
                    components[f"t{k}_{s}"] = {"kind": "lookup", "of": f"t{k}", "size": vocab, "predicts": s}
        coded = sites
    else:  # vector inputs: a linear map of the sites the reference reads but does not predict
        inputs = list(reference.inputs)
        coded = [s for s in sites if s not in inputs]
        if not inputs or not coded:
            return []
        components = {f"probe_{s}": {"kind": "linear", "from": inputs, "predicts": s} for s in coded}
        coded = inputs + coded
    return [Baseline("probe", "probe", _theory(reference, "probe", "a linear probe on one-hot inputs",
                                               components, variables, coded))]


def _row_of(kept: list[int]) -> str:
    """The kept position's row as an expression of ``i`` (contiguous positions: from 0)."""
    return f"i - {kept[0]}" if kept == list(range(kept[0], kept[0] + len(kept))) else "i"


def _rows_of(kept: list[int]) -> int:
    return len(kept) if _row_of(kept) != "i" else max(kept) + 1


def saes(reference: Theory, ctx: Context, configs: Sequence[tuple[int, int]]) -> list[Baseline]:
    """One sparse autoencoder per site for each (width multiple, k)."""
    sites = [s for s in reference.covered if not _is_pattern(ctx, s)]
    out = []
    for multiple, k in configs:
        components = {f"sae_{s}": {"kind": "dictionary", "from": s, "width": multiple * ctx.shapes[s][-1], "k": k,
                                   "predicts": s} for s in sites}
        if components:
            name = f"sae-x{multiple}-k{k}"
            out.append(Baseline(name, "sae", _theory(reference, name, f"sparse autoencoders, {multiple}x wide, "
                                                     f"{k} active latents", components, sites=sites)))
    return out


def transcoders(reference: Theory, ctx: Context, configs: Sequence[tuple[int, int]],
                mlp_inputs: Mapping[str, str]) -> list[Baseline]:
    """For each (width multiple, k), one skip transcoder per reference site whose hook
    ``mlp_inputs`` maps to its layer's MLP input hook: a top-k ``dictionary`` from that input (at
    the site's positions) to the site, and a linear skip from the same input. Sites without an
    MLP input are predicted by their mean."""
    sites = [s for s in reference.covered if not _is_pattern(ctx, s) and str(reference.sites[s].hook) in mlp_inputs]
    if not sites:
        return []
    data = reference.to_dict()["sites"]
    extra = {f"{s}_mlp_in": {**{k: v for k, v in data[s].items() if k != "doc"},
                             "hook": mlp_inputs[str(reference.sites[s].hook)]} for s in sites}
    out = []
    for multiple, k in configs:
        components = {}
        for s in sites:
            components[f"skip_{s}"] = {"kind": "linear", "from": f"{s}_mlp_in", "predicts": s}
            components[f"transcoder_{s}"] = {"kind": "dictionary", "from": f"{s}_mlp_in", "predicts": s,
                                             "width": multiple * ctx.shapes[s][-1], "k": k}
        name = f"transcoder-x{multiple}-k{k}"
        theory = _theory(reference, name, f"skip transcoders from each layer's MLP input, {multiple}x wide, {k} "
                         f"active latents", components, extra_sites=extra)
        out.append(Baseline(name, "transcoder", theory))
    return out


def random_same_size(reference: Theory, ctx: Context, seed: int = 0) -> list[Baseline]:
    rng = np.random.default_rng(seed)
    data = reference.to_dict()
    changed = False
    for name, c in data.get("components", {}).items():
        drawn = kind_of(reference.components[name]).randomised(c, rng)
        if drawn is not None:
            data["components"][name], changed = drawn, True
    drawn_any = False
    for name, text in data.get("variables", {}).items():  # a variable read at other positions: shifted too
        drawn = random_offsets(text, rng, positions_only=True)
        if drawn != text:
            data["variables"][name], drawn_any = drawn, True
    if drawn_any:
        data["variables"] = _in_range(reference, data, ctx)
        changed |= data["variables"] != reference.to_dict()["variables"]
    if not changed:
        return [Baseline("shuffled", "random", reference, shuffle=True)]
    theory = _theory(reference, "random", "the reference's structure with its features drawn at random",
                     data["components"], data.get("variables"), list(reference.sites))
    return [Baseline("random", "random", theory)]


def _in_range(reference: Theory, data: dict, ctx: Context, n: int = 256) -> dict:
    """The drawn variables, less those whose values leave the range the reference's take on the
    inputs (``column: i - 11`` drawn as ``i - 4`` is no key of its table): those keep their text."""
    variables = dict(data["variables"])
    if not np.issubdtype(ctx.inputs.dtype, np.integer):
        return variables
    tokens = ctx.inputs[:n]
    original = evaluate_variables(reference.variables, tokens, np)
    while True:
        drawn = _theory(reference, "random", "", data["components"], variables, list(reference.sites))
        values = evaluate_variables(drawn.variables, tokens, np)
        outside = [v for v in variables if variables[v] != reference.to_dict()["variables"][v]
                   and (np.min(values[v]) < np.min(original[v]) or np.max(values[v]) > np.max(original[v]))]
        if not outside:
            return variables
        variables.update({v: reference.to_dict()["variables"][v] for v in outside})


def baselines(reference: Theory, ctx: Context, sae_configs: Sequence[tuple[int, int]],
              mlp_inputs: Mapping[str, str] | None = None) -> list[Baseline]:
    """Every baseline of ``reference``; ``mlp_inputs`` (site hook -> its layer's MLP input hook)
    adds the transcoders, at the SAEs' settings."""
    return (mean_only(reference, ctx) + memorisation(reference, ctx) + probe(reference, ctx)
            + saes(reference, ctx, sae_configs) + transcoders(reference, ctx, sae_configs, mlp_inputs or {})
            + random_same_size(reference, ctx))
