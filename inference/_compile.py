"""Theory + the shapes of the captured sites -> a plan: widths, fixed features, and a pure
``predict(params, batch) -> {site: array}``.

Rows: a site kept at one position (``position: -1``) or a vector site has one row per example;
a site over every position has one row per (example, position). Each site's predictors are
evaluated in that site's rows, so variables (``[N, T]``) are read at the same positions.
Pattern sites ``[head, query, key]`` are predicted by attention components, each filling its
head; heads no component claims are predicted by their training mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from theorycraft.spec import Theory, TheoryError, evaluate, evaluate_variables, pair_env, position_env

from . import _memory
from .kinds import Shapes, kind_of


@dataclass(frozen=True)
class Plan:
    theory: Theory
    site_shapes: Mapping[str, tuple[int, ...]]  # per example, after position selection
    widths: Mapping[str, int]  # features each variable / site / component hands on
    fixed: frozenset[str]  # components computed once per batch (no parameters upstream)
    lookup_sizes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # values per key of each table
    frozen: Mapping[str, dict] = field(default_factory=dict)  # parameters held fixed (fitted by an earlier stage)
    costs: Mapping[str, "_memory.Cost"] = field(default_factory=dict)  # each component's size, from its kind

    @property
    def learned(self) -> list[str]:
        return [n for n in self.theory.components if n not in self.fixed]

    def shapes(self, name: str) -> Shapes:
        c = self.theory.components[name]
        return kind_of(c).input_shapes(name, c, self)

    def rows_per_example(self, name: str) -> int:
        """Rows a component is computed in per example: T where it feeds a site over every
        position ([T, D]), else 1 (the most over the sites it feeds; a free-standing one, all)."""
        fed = [s for s in self.theory.sites if name in self.theory.upstream(s)] or list(self.site_shapes)
        return max([self.site_shapes[s][0] for s in fed if len(self.site_shapes[s]) == 2] or [1])


def _site_width(shape: tuple[int, ...]) -> int:
    return shape[-1] if len(shape) else 1


@dataclass
class PlanContext:
    """What a kind's ``plan_width`` sees while ``make_plan`` runs: the widths so far (dependency
    order), the captured shapes, and where to report problems and table sizes."""

    theory: Theory
    site_shapes: Mapping[str, tuple[int, ...]]
    widths: dict[str, int]
    vocab_size: int | None
    lookup_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    problems: list = field(default_factory=list)

    def problem(self, name: str, message: str, *subpath, key: bool = False) -> None:
        self.problems.append(self.theory.diagnostic("components", name, message, *subpath, key=key))


def make_plan(theory: Theory, site_shapes: Mapping[str, tuple[int, ...]], vocab_size: int | None,
              frozen: Mapping[str, dict] | None = None, *, budget: "_memory.Budget | None" = None) -> Plan:
    """Work out every width; report every shape problem at once, with file:line:col. The plan's
    theory is ``theory.expanded()``: one instance per site of a component that predicts several.
    ``frozen`` components (with their parameters) count as fixed: computed once per batch. Every
    component is priced by its kind (``plan.costs``, nothing allocated); with a ``budget``, a fit
    that would need more memory than it allows is refused, naming the components."""
    frozen = dict(frozen or {})
    theory = theory.expanded()
    widths: dict[str, int] = {v: 1 for v in theory.variables}
    widths.update({s: _site_width(shape) for s, shape in site_shapes.items()})
    ctx = PlanContext(theory, site_shapes, widths, vocab_size)
    fixed: set[str] = set()
    for name, c in theory.components.items():  # dependency order
        kind = kind_of(c)
        widths[name] = kind.plan_width(name, c, ctx)
        # fixed: no parameters upstream (a site it reads is data: recorded, or predicted before it)
        if name in frozen or (kind.fixed and all(r in fixed or r in theory.variables or r in theory.sites
                                                 for r in c.reads())):
            fixed.add(name)
        if c.predicts and not kind.pattern and len(site_shapes[c.predicts]) == 3:
            ctx.problem(name, f"site '{c.predicts}' is an attention pattern; expected an attention component "
                              f"to predict it", "predicts")
    for site, shape in site_shapes.items():
        for name in sorted(theory.upstream(site)):
            if kind_of(theory.components[name]).per_position and (len(shape) != 2 or
                                                                   theory.sites[site].position is not None):
                ctx.problem(name, f"'{name}' reads values at every position of a sequence, so it can feed only "
                                  f"sites over every position ([T, D]); site '{site}' has per-example shape "
                                  f"{list(shape)}" + (" (its kept positions)" if len(shape) == 2 else ""), key=True)
    if ctx.problems:
        raise TheoryError(ctx.problems)
    plan = Plan(theory, dict(site_shapes), widths, frozenset(fixed), ctx.lookup_sizes, frozen)
    plan = replace(plan, costs=_memory.costs(plan))
    if budget is not None:
        _memory.refuse_over(plan, budget)
    return plan


# --- rows and fixed inputs --------------------------------------------------------------------

def _at_rows(values: np.ndarray, site_shape: tuple, position: int | list[int] | None) -> np.ndarray:
    """Per-position values [N, T, ...] read in a site's rows: one position, or all (or the kept
    ones) flattened."""
    if isinstance(position, int):
        return values[:, position]
    if position is not None:
        values = values[:, position]  # [N, P, ...]: the kept positions
    if len(site_shape) == 2:  # [T, D]: a row per position
        return values.reshape(-1, *values.shape[2:])
    return values[:, -1]


@dataclass(frozen=True)
class ExpressionContext:
    """How a kind's ``expression_inputs`` evaluates its expressions on one batch, for one site."""

    plan: Plan
    tokens: np.ndarray | None
    variables: Mapping[str, np.ndarray]
    site_shape: tuple[int, ...]
    position: int | list[int] | None

    def rows(self, exprs) -> np.ndarray:
        """Expressions over positions, read in the site's rows: [rows, len(exprs)]."""
        env = position_env(self.tokens, np, self.variables)
        values = np.stack([np.asarray(evaluate(e, env), np.float32) for e in exprs], axis=-1)  # [N, T, k]
        return _at_rows(values, self.site_shape, self.position)

    def pairs(self, expr) -> np.ndarray:
        """An expression over (query i, key j) pairs in the site's rows: [N, T, T] for a site with
        a row per example (a pattern site), [N * T, T] (each query's keys) for one over positions."""
        values = np.asarray(evaluate(expr, pair_env(self.tokens, self.variables, np)), np.float32)
        return values.reshape(-1, values.shape[-1]) if len(self.site_shape) == 2 else values


GIVEN_VARIABLES = "variables/given"  # a batch's key for variables whose values an intervention sets


def fixed_inputs(plan: Plan, batch: Mapping[str, np.ndarray], site: str) -> dict[str, np.ndarray]:
    """Everything a site's predictors read that is not learned, in that site's rows: variables,
    expression values, recorded sites, and fixed component features. Computed once per batch."""
    theory = plan.theory
    spec = theory.sites[site]
    shape = plan.site_shapes[site]
    out: dict[str, np.ndarray] = {}
    tokens = batch.get("inputs")
    token_inputs = tokens is not None and np.issubdtype(np.asarray(tokens).dtype, np.integer)
    variables = (evaluate_variables(theory.variables, tokens, np, batch.get(GIVEN_VARIABLES))
                 if token_inputs and theory.variables else {})
    for name, values in variables.items():
        out[name] = _at_rows(np.asarray(values, np.float32), shape, spec.kept)[:, None]
    # only what this site's prediction depends on, in its rows (another site's components may have
    # other rows), and free-standing components (a search probe's candidate), in this site's rows
    readers = {r for c in theory.components.values() for r in c.reads()}
    upstream = theory.upstream(site)
    computed = {n for n, c in theory.components.items() if n in upstream or (c.predicts is None and n not in readers)}
    todo = list(computed)
    while todo:  # and what those read (a probe's products read the theory's waves)
        for r in theory.components[todo.pop()].reads():
            if r in theory.components and r not in computed:
                computed.add(r)
                todo.append(r)
    read = {r for name in computed for r in theory.components[name].reads()}
    for name in theory.sites:
        if name in batch and name in read:  # a recorded site read by a mechanism (or by an autoencoder of itself)
            out[name] = site_rows(plan, name, batch[name])
        if f"{name}/recorded" in batch and name in read:  # free-running: what an autoencoder of it reads
            out[f"{name}/recorded"] = site_rows(plan, name, batch[f"{name}/recorded"])
    expressions = ExpressionContext(plan, tokens, variables, shape, spec.kept)
    for name, c in theory.components.items():
        if name not in computed:
            continue
        exprs = [e for _, e in c.expressions()]
        if exprs:
            out[f"{name}/expr"] = kind_of(c).expression_inputs(name, c, expressions)
        if name in plan.fixed:
            inputs = ([out[f"{name}/expr"]] if exprs else []) + [read_input(c, r, out) for r in c.reads()]
            # numpy in, for the kinds that compute fixed features in numpy (no compilation per shape)
            out[name] = np.asarray(kind_of(c).apply(plan.frozen.get(name, {}), c, [np.asarray(x) for x in inputs]))
    return out


def read_input(component, name: str, fixed: Mapping[str, np.ndarray]):
    """What ``component`` reads as ``name``. An autoencoder of a site reads the recorded site (its
    codes are sent) in both modes; every other reader of a site reads ``fixed[site]``: the recorded
    one teacher-forced, the theory's prediction free-running."""
    if kind_of(component).may_read_its_site and name == component.predicts and f"{name}/recorded" in fixed:
        return fixed[f"{name}/recorded"]
    return fixed[name]


def site_rows(plan: Plan, site: str, values: np.ndarray) -> np.ndarray:
    """A recorded site as the 2-D target the theory predicts: [rows, width]."""
    values = np.asarray(values, np.float32)
    if len(plan.site_shapes[site]) == 2:  # [N, T, D] -> a row per position
        return values.reshape(-1, values.shape[-1])
    return values.reshape(len(values), -1)


def varying_columns(plan: Plan, site: str) -> np.ndarray | None:
    """The columns of ``site``'s rows that the plan's learned components change; None: all of
    them. On a pattern site each attention component fills its own head, so a head filled by a
    fixed (or kept) component, or by the mean, is a constant of the fit: its error is the same
    at every step, and a fit's loss need not read it."""
    shape = plan.site_shapes[site]
    if len(shape) != 3:
        return None
    heads = sorted({plan.theory.components[n].head or 0 for n in plan.theory.predictors(site) if n not in plan.fixed})
    if len(heads) == shape[0]:
        return None
    per_head = shape[1] * shape[2]
    return (np.asarray(heads, np.int64)[:, None] * per_head + np.arange(per_head)).reshape(-1)


# --- prediction ---------------------------------------------------------------------------------

def component_output(plan: Plan, params, name: str, fixed: Mapping[str, jax.Array], memo: dict):
    if name in fixed:
        return fixed[name]
    if name in memo:
        return memo[name]
    c = plan.theory.components[name]
    # its expressions' values (computed once per batch by fixed_inputs), then what it reads
    inputs = [fixed[f"{name}/expr"]] if c.expressions() else []
    inputs += [read_input(c, r, fixed) if r in plan.theory.sites else component_output(plan, params, r, fixed, memo)
               for r in c.reads()]
    memo[name] = kind_of(c).apply(params.get(name, {}), c, inputs)
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


def init_params(plan: Plan, key: jax.Array, only=None) -> dict:
    """Each learned component's starting parameters; ``only``: just those (each drawn from the
    same key as in the whole set, so a component starts the same either way)."""
    keys = jax.random.split(key, max(len(plan.theory.components), 1))
    return {name: kind_of(c).init(k, c, plan.shapes(name))
            for k, (name, c) in zip(keys, plan.theory.components.items())
            if name not in plan.fixed and (only is None or name in only)}
