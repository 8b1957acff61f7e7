"""Baselines, each a theory written in the same language as the reference it is compared with,
over the same sites: what a theory must beat to count as an explanation.

- mean only: every site predicted by its training mean (the empty theory);
- memorisation: one table cell per distinct input (the varying token positions of a fixed-length
  input), where the table fits in memory;
- probe: a linear probe on one-hot inputs: one table per input position, summed (token and
  position tables for per-position sites; a linear map of the input site for vector inputs);
- sae: sparse autoencoders (``dictionary``) of each site at several widths and sparsities, their
  per-example codes paid for in bits;
- random: the reference with its fixed features drawn at random (Fourier frequencies, the
  constants of attention rules), same size; or, where it has none, its fitted parameters
  shuffled within each tensor (same size, same bits, no structure).

Attention-pattern sites can only be predicted by attention rules, so their baselines are the
mean and the random rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Mapping, Sequence

import numpy as np

from theorycraft.inference.kinds import kind_of
from theorycraft.spec import Theory, declare_inputs, dump as dump_yaml, parse_theory, random_offsets

MAX_TABLE_PARAMS = 50_000_000  # memorisation tables larger than this are not built


@dataclass(frozen=True)
class Baseline:
    name: str
    family: str  # mean | memorisation | probe | sae | random
    theory: Theory
    shuffle: bool = False  # random by shuffling the reference's fitted parameters (no fit)


@dataclass(frozen=True)
class Context:
    """What baselines need to know about the data: per-example site shapes and the inputs."""

    shapes: Mapping[str, tuple[int, ...]]  # coded site -> per-example shape
    inputs: np.ndarray  # [N, T] token ids, or [N, D] vectors
    vocab_size: int | None


def _theory(reference: Theory, name: str, description: str, components: dict, variables: dict | None = None,
            sites: Sequence[str] | None = None) -> Theory:
    sites = list(sites if sites is not None else reference.covered)
    data = {"theory": f"{reference.name}.{name}", "description": description, "target": str(reference.target),
            "sites": {s: reference.to_dict()["sites"][s] for s in sites}}
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
            if len(ctx.shapes[s]) == 2:  # per position: a token table and a position table
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


def random_same_size(reference: Theory, ctx: Context, seed: int = 0) -> list[Baseline]:
    rng = np.random.default_rng(seed)
    data = reference.to_dict()
    changed = False
    for name, c in data.get("components", {}).items():
        drawn = kind_of(reference.components[name]).randomised(c, rng)
        if drawn is not None:
            data["components"][name], changed = drawn, True
    for name, text in data.get("variables", {}).items():  # a variable read at other positions: shifted too
        drawn = random_offsets(text, rng, positions_only=True)
        if drawn != text:
            data["variables"][name], changed = drawn, True
    if not changed:
        return [Baseline("shuffled", "random", reference, shuffle=True)]
    theory = _theory(reference, "random", "the reference's structure with its features drawn at random",
                     data["components"], data.get("variables"), list(reference.sites))
    return [Baseline("random", "random", theory)]


def baselines(reference: Theory, ctx: Context, sae_configs: Sequence[tuple[int, int]]) -> list[Baseline]:
    return (mean_only(reference, ctx) + memorisation(reference, ctx) + probe(reference, ctx)
            + saes(reference, ctx, sae_configs) + random_same_size(reference, ctx))
