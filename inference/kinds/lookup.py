"""``lookup``: a learned table, one row per value of the variables in ``of`` (jointly).

Solved exactly where a site is a sum of tables (the engine's ridge of the one-hot design); sent as a shared row plus each row's difference from it, so rows no example reaches
cost almost nothing. A key outside its size is an error, or reads the ``outside`` row.
"""

from __future__ import annotations

from math import prod
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from theorycraft.spec import ComponentSpec, Expression, PositiveInt, TheoryError, list_of

from ._base import Example, Kind, Shapes


class Lookup(ComponentSpec):
    """A learned table: one row per value of the variables in ``of`` (jointly). A key that is not
    an integer from 0 to its size - 1 (``token[i - 1]`` reads -1 at the first position) is an
    error when the theory is fitted, unless ``outside: row`` gives the table one more row, shared
    by every row of data with a key outside its size."""

    of: list_of(Expression)
    size: Optional[list_of(PositiveInt)] = Field(None, description="values per variable (default: from the target's vocabulary)")
    width: Optional[PositiveInt] = Field(None, description="output features (default: the predicted site's width)")
    outside: Literal["error", "row"] = Field("error", description="a key outside its size: an error, or one "
                                                                   "extra row shared by all such keys")

    def expressions(self):
        return tuple((("of", k), e) for k, e in enumerate(self.of))


class LookupKind(Kind):
    schema = Lookup
    reads_field = None

    def parameter_shapes(self, spec, fan_in, out):
        sizes = " x ".join(str(s) for s in spec.size) if spec.size else " x ".join("V" for _ in spec.of)
        outside = " + 1" if spec.outside == "row" else ""  # the row shared by keys outside their sizes
        return {"table": f"[{sizes}{outside}, {out}]"}

    def plan_width(self, name, spec, ctx):
        width = super().plan_width(name, spec, ctx)
        sizes = spec.size or tuple(ctx.vocab_size or 0 for _ in spec.of)
        if len(sizes) != len(spec.of) or not all(sizes):
            ctx.problem(name, f"expected one size per key in 'of' ({len(spec.of)}), found "
                              f"{len(sizes) if spec.size else 'none (no vocabulary known)'}", "size" if spec.size else "of")
        ctx.lookup_sizes[name] = tuple(sizes)
        return width

    def param_count(self, name, spec, plan):
        return plan.shapes(name).inputs[0] * plan.widths[name]  # a row per joint key (and the outside row)

    def row_bytes(self, name, spec, plan):
        return 4 * (len(spec.of) + 1 + plan.widths[name]) * plan.rows_per_example(name)  # keys, cell, its row

    def solve_bytes(self, name, spec, plan):
        """Conjugate gradients hold about eight float64 arrays of the table's size (the solution,
        residual, preconditioned residual, direction, its product, Xᵀy, the start and the best)."""
        return 8 * 8 * self.param_count(name, spec, plan)

    def input_shapes(self, name, spec, plan):
        """One input, the joint cell: a row per joint value of the keys, and the outside row."""
        return Shapes((table_rows(plan.lookup_sizes[name], spec.outside),), plan.widths[name])

    def expression_inputs(self, name, spec, ctx):
        keys = ctx.rows([e for _, e in spec.expressions()])
        return lookup_cells(ctx.plan.theory, name, keys, ctx.plan.lookup_sizes[name])[:, None]

    def init(self, key, spec, shapes):
        import jax.numpy as jnp

        return {"table": jnp.zeros((shapes.inputs[0], shapes.out), jnp.float32)}

    def apply(self, params, spec, inputs):
        import jax.numpy as jnp

        index = inputs[0].reshape(-1).astype(jnp.int32)  # the joint cell, from expression_inputs
        return params["table"][index]

    def closed_form(self, spec, plan, predictors, solvers):
        return solvers.tables

    def send(self, params):
        """A table as its shared row (the column medians: what rows that no example reaches
        hold) plus each row's difference from it, so unreached rows cost ~0 bits."""
        table = np.asarray(params["table"], np.float64)
        base = np.median(table, axis=0, keepdims=True)
        return {"base": base, "rows": table - base}

    def receive(self, sent):
        return {"table": np.asarray(sent["base"], np.float32) + np.asarray(sent["rows"], np.float32)}

    def parts(self, data):
        """A table of several keys as a table of each (their rows summed): where the keys act
        additively, as many rows as the keys take in all instead of their product."""
        keys = data["of"] if isinstance(data["of"], list) else [data["of"]]
        if len(keys) < 2:
            return []
        sizes = data.get("size") or [None] * len(keys)
        return [{**{k: v for k, v in data.items() if k not in ("of", "size")}, "of": key,
                 **({"size": size} if size else {})} for key, size in zip(keys, sizes)]

    def estimate(self, data, ctx):
        """Shrunk per-cell sums of the residual; the table's unreached rows are nearly free."""
        plan, fixed = ctx.probe()
        cells = np.asarray(fixed["candidate_features/expr"][:, 0], np.int64)[:ctx.max_rows]
        size = table_rows(plan.lookup_sizes["candidate_features"], data.get("outside", "error"))
        return lookup_gain(cells, size, ctx.residual), (size - len(np.unique(cells))) * ctx.residual.shape[1]

    def example(self, rng):
        return Example({"of": "a", "size": 7}, Shapes((7,), 3),
                       [rng.integers(0, 7, (8, 1))])


def table_rows(sizes: tuple[int, ...], outside: str) -> int:
    """A row per joint value of the keys, and the row shared by keys outside their sizes."""
    return prod(sizes) + (outside == "row")


def lookup_gain(cells: np.ndarray, size: int, r: np.ndarray) -> float:
    """Σ over reached cells of ‖Σ r‖² / (count + 1): the per-cell sums as one sparse product over
    the reached cells only (a 30,522-row table is mostly unreached)."""
    from scipy import sparse

    reached, cell, counts = np.unique(cells, return_inverse=True, return_counts=True)
    onehot = sparse.csr_matrix((np.ones(len(cell)), (cell.reshape(-1), np.arange(len(cell)))),
                               shape=(len(reached), len(cell)))
    sums = onehot @ np.asarray(r, np.float64)
    return float(((sums ** 2).sum(1) / (counts + 1.0)).sum())


# --- gradient fitting -----------------------------------------------------------------------------


def lookup_cells(theory, name: str, keys: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
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


def _outside_key(theory, name: str, k: int, size: int, bad: np.ndarray, rows: int):
    """The error for key ``k`` of a lookup, whose values ``bad`` (of ``rows``) are outside its size."""
    found = np.unique(bad)
    shown = ", ".join(f"{v:g}" for v in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    hint = " (token[k] reads -1 where k is outside the sequence)" if -1 in found else ""
    return theory.diagnostic("components", name, (
        f"lookup '{name}': key '{theory.components[name].of[k]}' must be an integer from 0 to {size - 1} "
        f"(its size), found {shown} in {len(bad)} of {rows} rows{hint}; give the lookup 'outside: row' "
        f"for one extra row shared by every key outside its size, or a larger 'size'"), "of", k)


KIND = LookupKind()
