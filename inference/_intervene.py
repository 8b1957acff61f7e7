"""Interventions: what each one does to a place's values, and the theory run free under one.

One function per intervention (``Intervention.apply``) serves both sides of an axiom: the network,
inside a torch hook, and the theory, on its own free-running values. Resample and patch read the
same place on *source* examples (another held-out example, or a paired one the axiom writes):
the network's values there for the network, the theory's own for the theory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import jax.numpy as jnp
import numpy as np

from theorycraft.errors import FitError
from theorycraft.spec import evaluate, evaluate_variables, position_env, walk_reads

from ._compile import GIVEN_VARIABLES, component_output
from .kinds import kind_of

SOURCED = ("resample", "patch")  # interventions that read the place on source examples
SUBSPACE = ("keep", "project_out")


@dataclass(frozen=True)
class Intervention:
    """``how`` (zero, mean, resample, patch, keep, project_out) at ``index`` (numpy, after the
    example axis). ``mean``: the place's training mean per example; ``basis``: orthonormal rows
    spanning a subspace of the flattened example, or (``per_row``) of the last axis. A ``mean``
    is the training mean per position, here as on every component and variable intervened on."""

    how: str
    index: tuple = ()
    mean: Optional[np.ndarray] = None
    basis: Optional[np.ndarray] = None
    per_row: bool = False

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
            rows = values.reshape(-1, values.shape[-1]) if self.per_row else values.reshape(len(values), -1)
            mean = np.broadcast_to(self.mean, values.shape).reshape(rows.shape)
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


def transformed_inputs(expr, tokens: np.ndarray, variables: Mapping[str, np.ndarray], dtype=None) -> np.ndarray:
    """Each position's new token, an expression over the positions of ``tokens`` [N, T]."""
    env = position_env(np.asarray(tokens), np, variables)
    with np.errstate(all="ignore"):  # non-finite values are the caller's to report
        return np.asarray(evaluate(expr, env)).astype(dtype or np.asarray(tokens).dtype)


def predict_intervened(fitted, inputs: np.ndarray, sites: Mapping[str, np.ndarray], intervention: Intervention, *,
                       site: Optional[str] = None, components: tuple[str, ...] = (), variables: tuple[str, ...] = (),
                       source: Optional[tuple[np.ndarray, Mapping[str, np.ndarray]]] = None) -> dict[str, np.ndarray]:
    """The theory run free (like ``fitted.predict(..., free=True)``) with ``site``, ``components``
    (each with its instances at other sites, ``C@SITE``) or ``variables`` intervened. A site's new
    value is what later sites read; where a component reads one of its predictors directly, that
    predictor follows too (an attention head its head of a pattern, any predictor its value on
    the source examples). ``source``: (inputs, recorded sites) of the source examples (resample,
    patch)."""
    plan = fitted.plan
    theory = plan.theory
    batch = fitted.free_batch(inputs, sites)
    if intervention.how == "mean" and source is None and (components or variables):
        raise FitError("a 'mean' intervention on components or variables needs the training examples its mean is "
                       "taken over: pass source=(train inputs, their recorded sites)")
    reads_source = intervention.how in SOURCED or (intervention.how == "mean" and source is not None)
    source_batch = fitted.run_free(fitted.free_batch(*source), len(source[0])) if reads_source else None
    # what stands in for each intervened component in a site's rows, given its clean value there
    overrides: dict[str, Callable] = {}

    def sourced(name):
        return lambda x, clean: component_output(plan, fitted.params, name, fitted.fixed(source_batch, x), {})

    def train_mean(name):  # its mean over the training examples, per row position (per position of a sequence)
        def value(x, clean):
            out = np.asarray(component_output(plan, fitted.params, name, fitted.fixed(source_batch, x), {}))
            n_train, shape = len(source[0]), np.shape(clean())
            per_position = out.reshape(n_train, -1, out.shape[-1]).mean(0)
            return jnp.asarray(np.broadcast_to(per_position, (len(inputs), *per_position.shape)).reshape(shape))
        return value

    for name in (c for c in theory.components if c.split("@")[0] in components):
        overrides[name] = (sourced(name) if intervention.how in SOURCED else
                           train_mean(name) if intervention.how == "mean" else _by_value(intervention, name))
    if variables:
        batch[GIVEN_VARIABLES] = _variables_under(theory, intervention, variables, inputs,
                                                  source_batch["inputs"] if source_batch is not None else None)
    if site is not None and site in theory.inputs:  # a given input: intervened before anything reads it
        batch[site] = intervention.apply(batch[site], source_batch[site] if source_batch else None)

    def adjust(x, fixed):
        _override(plan, fitted.params, fixed, overrides, x)

    def after(x, prediction):
        if x != site:
            return prediction
        prediction = intervention.apply(prediction, source_batch[x] if source_batch else None)
        overrides.update(_predictors_follow(theory, site, prediction, intervention, sourced))
        return prediction

    batch = fitted.run_free(batch, len(inputs), adjust=adjust if components or site else None, after=after)
    return {s: batch[s] for s in fitted.sites}


def _by_value(intervention: Intervention, name: str) -> Callable:
    if intervention.how == "zero":
        return lambda x, clean: jnp.zeros_like(clean())
    raise FitError(f"'{intervention.how}' cannot act on component '{name}' (only on a site's values)")


def _variables_under(theory, intervention: Intervention, names, tokens, source_tokens) -> dict:
    """Intervened variables' values [N, T]: from the source examples, zero, or their mean per
    position over the training examples (``source_tokens``, for ``mean``)."""
    read = intervention.how in SOURCED or intervention.how == "mean"
    values = evaluate_variables(theory.variables, np.asarray(source_tokens if read else tokens), np)
    if intervention.how == "zero":
        return {v: np.zeros_like(values[v]) for v in names}
    if intervention.how == "mean":
        shape = np.shape(tokens)
        return {v: np.broadcast_to(np.asarray(values[v], np.float32).mean(0), shape) for v in names}
    if intervention.how in SOURCED:
        return {v: values[v] for v in names}
    raise FitError(f"'{intervention.how}' cannot act on variables ({', '.join(names)})")


def _override(plan, params, fixed: dict, overrides: Mapping[str, Callable], site: str) -> None:
    """Intervened components' values in ``site``'s rows (``clean()``: the value they replace);
    fixed components that read them are recomputed (dropped from ``fixed``)."""
    theory = plan.theory
    upstream = theory.upstream(site)
    for name, make in overrides.items():
        if name in upstream:
            fixed[name] = jnp.asarray(make(site, lambda name=name: component_output(plan, params, name, fixed, {})))
    stale = {n for n in plan.fixed if n not in overrides and _reads_any(theory, n, overrides)}
    for name in stale:
        fixed.pop(name, None)


def _reads_any(theory, name: str, names) -> bool:
    inner, _ = walk_reads(theory.components[name].reads(),
                          lambda r: theory.components[r].reads() if r in theory.components else None)
    return bool(inner & set(names))


def _predictors_follow(theory, site: str, value: np.ndarray, intervention: Intervention, sourced) -> dict:
    """Predictors of an intervened site that other components read directly: what they become."""
    readers = {r for c in theory.components.values() for r in c.reads()}
    out = {}
    for name in theory.predictors(site):
        if name not in readers:
            continue
        component = theory.components[name]
        if kind_of(component).pattern:  # an attention head: its head of the new pattern
            head = value[:, component.head or 0]
            out[name] = lambda x, clean, head=head: jnp.asarray(np.asarray(head, np.float32).reshape(np.shape(clean())))
        elif intervention.how in SOURCED and not intervention.index:
            out[name] = sourced(name)
        else:
            raise FitError(f"'{intervention.how}' at site '{site}' cannot reach the theory's component '{name}', "
                           f"which other components read directly; name what stands for it with 'theory:'")
    return out
