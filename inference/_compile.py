"""Theory + the shapes of the captured sites -> a plan: widths, fixed features, and a pure
``predict(params, batch) -> {site: array}``.

Rows: a site kept at one position (``position: -1``) or a vector site has one row per example;
a site over every position has one row per (example, position). Each site's predictors are
evaluated in that site's rows, so variables (``[N, T]``) are read at the same positions.
Pattern sites ``[head, query, key]`` are predicted by attention components, each filling its
head; heads no component claims are predicted by their training mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from theorycraft.spec import (Theory, TheoryError, evaluate, evaluate_variables, feature_width, pair_env,
                              position_env)

from ._kinds import KINDS, Shapes


@dataclass(frozen=True)
class Plan:
    theory: Theory
    site_shapes: Mapping[str, tuple[int, ...]]  # per example, after position selection
    widths: Mapping[str, int]  # features each variable / site / component hands on
    fixed: frozenset[str]  # components computed once per batch (no parameters upstream)
    lookup_sizes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def learned(self) -> list[str]:
        return [n for n in self.theory.components if n not in self.fixed]

    def table_rows(self, name: str) -> int:
        """Rows of a lookup table: one per joint value of its keys, and its ``outside`` row."""
        return prod(self.lookup_sizes[name]) + (self.theory.components[name].outside == "row")

    def shapes(self, name: str) -> Shapes:
        c = self.theory.components[name]
        if c.kind == "lookup":
            return Shapes((self.table_rows(name),), self.widths[name])
        return Shapes(tuple(self.widths[r] for r in c.reads()), self.widths[name])


def _site_width(shape: tuple[int, ...]) -> int:
    return shape[-1] if len(shape) else 1


def make_plan(theory: Theory, site_shapes: Mapping[str, tuple[int, ...]], vocab_size: int | None) -> Plan:
    """Work out every width; report every shape problem at once, with file:line:col."""
    problems = []
    widths: dict[str, int] = {v: 1 for v in theory.variables}
    widths.update({s: _site_width(shape) for s, shape in site_shapes.items()})
    lookup_sizes: dict[str, tuple[int, ...]] = {}
    fixed: set[str] = set()
    for name, c in theory.components.items():  # dependency order
        target = theory.sites.get(c.predicts) if c.predicts else None
        target_width = widths.get(c.predicts) if c.predicts else None
        if c.kind == "attention":
            shape = site_shapes[c.predicts]
            if len(shape) != 3 or shape[1] != shape[2]:
                problems.append(theory.diagnostic("components", name, f"an attention component predicts a pattern "
                                f"site [head, query, key]; '{c.predicts}' has per-example shape {list(shape)}", "predicts"))
                continue
            if (c.head or 0) >= shape[0]:
                problems.append(theory.diagnostic("components", name, f"expected a head below {shape[0]} "
                                                  f"(the site's head count), found {c.head}", "head"))
            widths[name] = shape[1] * shape[2]
            continue
        if c.kind in ("fourier", "rule", "product"):
            widths[name] = int(feature_width(theory, name)) if c.kind != "product" else _product_width(c, widths)
        elif c.kind == "dictionary":  # its width counts latents; it reconstructs its site (or its input)
            widths[name] = target_width or sum(widths[r] for r in c.reads())
            if not c.k:
                problems.append(theory.diagnostic("components", name, "expected 'k' (active latents per example): "
                                                  "the engine fits top-k dictionaries; an L1 penalty on codes is "
                                                  "not fitted yet", key=True))
        else:
            declared = getattr(c, "width", None)
            if declared and target_width and declared != target_width:
                problems.append(theory.diagnostic("components", name, f"width {declared} cannot predict site "
                                f"'{c.predicts}' of width {target_width}; expected width {target_width} "
                                f"(or leave width out)", "width"))
            widths[name] = declared or target_width or 0
            if not widths[name]:
                problems.append(theory.diagnostic("components", name, "cannot tell this component's output "
                                                  "width: give 'width:' or 'predicts:'", key=True))
        if c.kind == "lookup":
            sizes = c.size or tuple(vocab_size or 0 for _ in c.of)
            if len(sizes) != len(c.of) or not all(sizes):
                problems.append(theory.diagnostic("components", name, f"expected one size per key in 'of' "
                                f"({len(c.of)}), found {len(sizes) if c.size else 'none (no vocabulary known)'}", "size" if c.size else "of"))
            lookup_sizes[name] = tuple(sizes)
        if KINDS[c.kind].fixed and all(r in fixed or r in theory.variables for r in c.reads()):
            fixed.add(name)
        if target is not None and len(site_shapes[c.predicts]) == 3:
            problems.append(theory.diagnostic("components", name, f"site '{c.predicts}' is an attention pattern; "
                                              f"expected an attention component to predict it", "predicts"))
    if problems:
        raise TheoryError(problems)
    return Plan(theory, dict(site_shapes), widths, frozenset(fixed), lookup_sizes)


def _product_width(c, widths) -> int:
    ws = [widths[r] for r in c.of]
    return ws[0] * (ws[0] + 1) // 2 if len(ws) == 1 else prod(ws)


# --- rows and fixed inputs --------------------------------------------------------------------

def _at_rows(values: np.ndarray, site_shape: tuple, position: int | None) -> np.ndarray:
    """Per-position values [N, T, ...] read in a site's rows: one position, or all flattened."""
    if position is not None:
        return values[:, position]
    if len(site_shape) == 2:  # [T, D]: a row per position
        return values.reshape(-1, *values.shape[2:])
    return values[:, -1]


def fixed_inputs(plan: Plan, batch: Mapping[str, np.ndarray], site: str) -> dict[str, np.ndarray]:
    """Everything a site's predictors read that is not learned, in that site's rows: variables,
    expression values, recorded sites, and fixed component features. Computed once per batch."""
    theory = plan.theory
    spec = theory.sites[site]
    shape = plan.site_shapes[site]
    out: dict[str, np.ndarray] = {}
    tokens = batch.get("inputs")
    token_inputs = tokens is not None and np.issubdtype(np.asarray(tokens).dtype, np.integer)
    variables = evaluate_variables(theory.variables, tokens, np) if token_inputs and theory.variables else {}
    for name, values in variables.items():
        out[name] = _at_rows(np.asarray(values, np.float32), shape, spec.position)[:, None]
    for name in theory.sites:
        if name in batch:  # a recorded site read by a mechanism (or by an autoencoder of itself)
            out[name] = site_rows(plan, name, batch[name])
    env = None
    for name, c in theory.components.items():
        exprs = [e for _, e in c.expressions()]
        if c.kind == "attention":
            values = evaluate(c.rule, pair_env(tokens, variables, np))  # [N, T, T]
            out[f"{name}/expr"] = np.asarray(values, np.float32)
        elif exprs:
            if env is None:
                env = {**position_env(tokens, np), **variables}
            values = np.stack([np.asarray(evaluate(e, env), np.float32) for e in exprs], axis=-1)  # [N, T, k]
            rows = _at_rows(values, shape, spec.position)
            if c.kind == "lookup":
                rows = lookup_cells(theory, name, rows, plan.lookup_sizes[name])[:, None]
            out[f"{name}/expr"] = rows
        if name in plan.fixed:
            inputs = [out[f"{name}/expr"]] if exprs else [out[r] for r in c.reads()]
            out[name] = np.asarray(KINDS[c.kind].apply({}, c, [jnp.asarray(x) for x in inputs]))
    return out


def lookup_cells(theory: Theory, name: str, keys: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Each row's joint cell of a lookup's keys ([rows, k] -> [rows]). A key that is not an integer
    below its size is an error naming the component, or (``outside: row``) reads the last row."""
    inside = (keys >= 0) & (keys < np.asarray(sizes)) & (keys == np.floor(keys))
    if not inside.all() and theory.components[name].outside != "row":
        raise TheoryError([_outside_key(theory, name, k, sizes[k], keys[~inside[:, k], k], len(keys))
                           for k in np.flatnonzero(~inside.all(axis=0))])
    cell = np.zeros(len(keys), np.int64)
    for k, size in enumerate(sizes):
        cell = cell * size + np.where(inside[:, k], keys[:, k], 0).astype(np.int64)
    return np.where(inside.all(axis=1), cell, prod(sizes))


def _outside_key(theory: Theory, name: str, k: int, size: int, bad: np.ndarray, rows: int):
    """The error for key ``k`` of a lookup, whose values ``bad`` (of ``rows``) are outside its size."""
    found = np.unique(bad)
    shown = ", ".join(f"{v:g}" for v in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    hint = " (token[k] reads -1 where k is outside the sequence)" if -1 in found else ""
    return theory.diagnostic("components", name, (
        f"lookup '{name}': key '{theory.components[name].of[k]}' must be an integer from 0 to {size - 1} "
        f"(its size), found {shown} in {len(bad)} of {rows} rows{hint}; give the lookup 'outside: row' "
        f"for one extra row shared by every key outside its size, or a larger 'size'"), "of", k)


def site_rows(plan: Plan, site: str, values: np.ndarray) -> np.ndarray:
    """A recorded site as the 2-D target the theory predicts: [rows, width]."""
    values = np.asarray(values, np.float32)
    if len(plan.site_shapes[site]) == 2:  # [N, T, D] -> a row per position
        return values.reshape(-1, values.shape[-1])
    return values.reshape(len(values), -1)


# --- prediction ---------------------------------------------------------------------------------

def component_output(plan: Plan, params, name: str, fixed: Mapping[str, jax.Array], memo: dict):
    if name in fixed:
        return fixed[name]
    if name in memo:
        return memo[name]
    c = plan.theory.components[name]
    if c.kind in ("lookup", "attention"):
        inputs = [fixed[f"{name}/expr"]]
    else:
        inputs = [component_output(plan, params, r, fixed, memo) for r in c.reads()]
    memo[name] = KINDS[c.kind].apply(params.get(name, {}), c, inputs)
    return memo[name]


def predict_site(plan: Plan, params, site: str, fixed: Mapping[str, jax.Array], site_mean, rows: int) -> jax.Array:
    """Sum of the site's predictors ([rows, width]); pattern sites get one head per attention."""
    memo: dict = {}
    names = plan.theory.predictors(site)
    shape = plan.site_shapes[site]
    if len(shape) == 3:  # [head, query, key]
        heads = [jnp.broadcast_to(site_mean.reshape(shape)[h], shape[1:]) for h in range(shape[0])]
        for name in names:
            pattern = component_output(plan, params, name, fixed, memo)
            heads[plan.theory.components[name].head or 0] = pattern.reshape(-1, *shape[1:])
        heads = [jnp.broadcast_to(h, (rows, *shape[1:])) for h in heads]
        return jnp.stack(heads, axis=1).reshape(heads[0].shape[0], -1)
    total = 0.0
    for name in names:
        total = total + component_output(plan, params, name, fixed, memo)
    if not names:
        return jnp.broadcast_to(site_mean, (rows, site_mean.shape[-1]))
    return total


def init_params(plan: Plan, key: jax.Array) -> dict:
    keys = jax.random.split(key, max(len(plan.theory.components), 1))
    return {name: KINDS[c.kind].init(k, c, plan.shapes(name))
            for k, (name, c) in zip(keys, plan.theory.components.items()) if name not in plan.fixed}
