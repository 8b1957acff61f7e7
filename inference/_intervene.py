"""Interventions: what each one does to a place's values, and the theory run free under one.

One function per intervention (``Intervention.apply``) serves both sides of an axiom: the network,
inside a torch hook, and the theory, on its own free-running values. Resample and patch read the
same place on *source* examples (another held-out example, or a paired one the axiom writes):
the network's values there for the network, the theory's own for the theory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import jax.numpy as jnp
import numpy as np

from theorycraft.errors import FitError
from theorycraft.spec import evaluate, evaluate_variables, position_env

from ._compile import GIVEN_VARIABLES, component_output, fixed_inputs, predict_site
from .kinds import kind_of

SOURCED = ("resample", "patch")  # interventions that read the place on source examples
SUBSPACE = ("keep", "project_out")


@dataclass(frozen=True)
class Intervention:
    """``how`` (zero, mean, resample, patch, keep, project_out) at ``index`` (numpy, after the
    example axis). ``mean``: the place's training mean per example; ``basis``: orthonormal rows
    spanning a subspace, over the flattened example or over the last axis (per row)."""

    how: str
    index: tuple = ()
    mean: Optional[np.ndarray] = None
    basis: Optional[np.ndarray] = None

    def apply(self, values: np.ndarray, source: Optional[np.ndarray] = None) -> np.ndarray:
        """``values`` [N, ...] intervened; ``source`` [N, ...]: the same place on the source examples."""
        values = np.array(values, np.float32)  # a copy
        at = (slice(None), *self.index)
        if self.how == "zero":
            values[at] = 0.0
        elif self.how == "mean":
            values[at] = np.broadcast_to(self.mean, values.shape)[at]
        elif self.how in SOURCED:
            values[at] = np.asarray(source, np.float32)[at]
        else:  # a subspace: kept (mean + its part of the deviation) or projected out
            n = len(values)
            flat = self.basis.shape[1] != values.shape[-1] or values.ndim == 2
            rows = values.reshape(n, -1) if flat else values.reshape(-1, values.shape[-1])
            mean = np.broadcast_to(self.mean, values.shape)
            mean = mean.reshape(rows.shape)
            inside = (rows - mean) @ self.basis.T @ self.basis
            rows = mean + inside if self.how == "keep" else rows - inside
            values = rows.reshape(values.shape)
        return values


def subspace_basis(features: np.ndarray, values: np.ndarray, energy: float = 1e-4) -> np.ndarray:
    """Orthonormal rows spanning what ``features`` [R, F] predict of ``values`` [R, D] by least
    squares: the directions of ``values`` a component's features account for (singular directions
    of the fitted prediction holding more than ``energy`` of its power)."""
    x = features - features.mean(0)
    y = values - values.mean(0)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    _, s, vt = np.linalg.svd(x @ coef, full_matrices=False)
    keep = s ** 2 > energy * float((s ** 2).sum())
    return vt[keep].astype(np.float32)


def transformed_inputs(expr, tokens: np.ndarray, variables: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each position's new token, an expression over the positions of ``tokens`` [N, T]."""
    env = position_env(np.asarray(tokens), np, variables)
    return np.asarray(evaluate(expr, env)).astype(np.asarray(tokens).dtype)


def _rows_like(values: np.ndarray, like) -> jnp.ndarray:
    return jnp.asarray(np.asarray(values, np.float32).reshape(np.shape(like)))


def predict_intervened(fitted, inputs: np.ndarray, sites: Mapping[str, np.ndarray], intervention: Intervention, *,
                       site: Optional[str] = None, components: tuple[str, ...] = (), variables: tuple[str, ...] = (),
                       source: Optional[tuple[np.ndarray, Mapping[str, np.ndarray]]] = None) -> dict[str, np.ndarray]:
    """The theory run free (like ``fitted.predict(..., free=True)``) with ``site``, ``components``
    or ``variables`` intervened. A site's new value is what later sites read; where a component reads one of its
    predictors directly, that predictor follows too (an attention head its head of a pattern,
    any predictor its value on the source examples). ``source``: (inputs, recorded sites) of the
    source examples (resample, patch)."""
    plan = fitted.plan
    theory = plan.theory
    readers = {r for c in theory.components.values() for r in c.reads()}
    n = len(inputs)
    batch = fitted.free_batch(inputs, sites)
    source_batch = None
    if intervention.how in SOURCED:
        source_batch = fitted.free_batch(*source)
        for s in theory.site_order()[0]:
            source_batch[s] = fitted._predict_site(source_batch, s, len(source[0]))
    # what stands in for each intervened component, given the clean value in a site's rows
    overrides: dict[str, callable] = {}

    def sourced(name):
        return lambda x, clean: component_output(plan, fitted.params, name,
                                                 {k: jnp.asarray(v) for k, v in fixed_inputs(plan, source_batch, x).items()}, {})

    def by_value(name):
        if intervention.how == "zero":
            return lambda x, clean: jnp.zeros_like(clean)
        if intervention.how == "mean":
            return lambda x, clean: jnp.broadcast_to(clean.mean(0), clean.shape)
        raise FitError(f"'{intervention.how}' cannot act on component '{name}' (only on a site's values)")

    for name in components:
        overrides[name] = sourced(name) if intervention.how in SOURCED else by_value(name)
    if variables:
        batch[GIVEN_VARIABLES] = _variables_under(theory, intervention, variables, inputs,
                                                  source_batch["inputs"] if source_batch else None)
    if site is not None and site in batch and site not in theory.site_order()[0]:  # a given input
        batch[site] = intervention.apply(batch[site], source_batch[site] if source_batch else None)
    for x in theory.site_order()[0]:
        fixed = {k: jnp.asarray(v) for k, v in fixed_inputs(plan, batch, x).items()}
        if overrides:
            _override(plan, fitted.params, fixed, overrides, x)
        shape = plan.site_shapes[x]
        rows = n * (shape[0] if len(shape) == 2 else 1)
        pred = np.asarray(predict_site(plan, fitted.params, x, fixed, jnp.asarray(fitted.means[x]), rows)).reshape(n, *shape)
        if x == site:
            pred = intervention.apply(pred, source_batch[x] if source_batch else None)
            overrides.update(_predictors_follow(theory, site, pred, intervention, readers, sourced))
        batch[x] = pred
    return {s: batch[s] for s in fitted.sites}


def _variables_under(theory, intervention: Intervention, names, tokens, source_tokens) -> dict:
    """Intervened variables' values [N, T]: from the source examples, zero, or their mean per position."""
    values = evaluate_variables(theory.variables, np.asarray(source_tokens if intervention.how in SOURCED else tokens), np)
    if intervention.how == "zero":
        return {v: np.zeros_like(values[v]) for v in names}
    if intervention.how == "mean":
        return {v: np.broadcast_to(np.asarray(values[v], np.float32).mean(0), np.shape(values[v])) for v in names}
    if intervention.how in SOURCED:
        return {v: values[v] for v in names}
    raise FitError(f"'{intervention.how}' cannot act on variables ({', '.join(names)})")


def _override(plan, params, fixed: dict, overrides: Mapping[str, callable], site: str) -> None:
    """Intervened components' values in ``site``'s rows; fixed components that read them are
    recomputed (dropped from ``fixed``)."""
    theory = plan.theory
    upstream = theory.upstream(site)
    for name, make in overrides.items():
        if name in upstream:
            clean = component_output(plan, params, name, fixed, {})
            fixed[name] = jnp.asarray(make(site, clean))
    stale = {n for n in plan.fixed if n not in overrides and _reads_any(theory, n, overrides)}
    for name in stale:
        fixed.pop(name, None)


def _reads_any(theory, name: str, names) -> bool:
    from theorycraft.spec._theory import walk_reads

    inner, _ = walk_reads(theory.components[name].reads(),
                          lambda r: theory.components[r].reads() if r in theory.components else None)
    return bool(inner & set(names))


def _predictors_follow(theory, site: str, value: np.ndarray, intervention: Intervention, readers, sourced) -> dict:
    """Predictors of an intervened site that other components read directly: what they become."""
    out = {}
    for name in theory.predictors(site):
        if name not in readers:
            continue
        component = theory.components[name]
        if kind_of(component).pattern:  # an attention head: its head of the new pattern
            head = value[:, component.head or 0]
            out[name] = lambda x, clean, head=head: _rows_like(head, clean)
        elif intervention.how in SOURCED and not intervention.index:
            out[name] = sourced(name)
        else:
            raise FitError(f"'{intervention.how}' at site '{site}' cannot reach the theory's component '{name}', "
                           f"which other components read directly; name what stands for it with 'theory:'")
    return out
