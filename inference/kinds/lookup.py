"""``lookup``: a learned table, one row per value of the variables in ``of`` (jointly).

Solved exactly where a site is a sum of tables (backfitting); sent as a shared row plus each
row's difference from it, so rows no example reaches cost almost nothing.
"""

from __future__ import annotations

from math import prod
from typing import Optional

import numpy as np
from pydantic import Field

from theorycraft.spec._model import ComponentSpec, Expression, PositiveInt, _list_of

from ._base import Kind, Shapes


class Lookup(ComponentSpec):
    """A learned table: one row per value of the variables in ``of`` (jointly)."""

    of: _list_of(Expression)
    size: Optional[_list_of(PositiveInt)] = Field(None, description="values per variable (default: from the target's vocabulary)")
    width: Optional[PositiveInt] = Field(None, description="output features (default: the predicted site's width)")

    def expressions(self):
        return tuple((("of", k), e) for k, e in enumerate(self.of))


class LookupKind(Kind):
    schema = Lookup
    reads_field = None

    def parameter_shapes(self, spec, fan_in, out):
        sizes = " x ".join(str(s) for s in spec.size) if spec.size else " x ".join("V" for _ in spec.of)
        return {"table": f"[{sizes}, {out}]"}

    def plan_width(self, name, spec, ctx):
        width = super().plan_width(name, spec, ctx)
        sizes = spec.size or tuple(ctx.vocab_size or 0 for _ in spec.of)
        if len(sizes) != len(spec.of) or not all(sizes):
            ctx.problem(name, f"expected one size per key in 'of' ({len(spec.of)}), found "
                              f"{len(sizes) if spec.size else 'none (no vocabulary known)'}", "size" if spec.size else "of")
        ctx.lookup_sizes[name] = tuple(sizes)
        return width

    def input_shapes(self, name, spec, plan):
        return Shapes((prod(plan.lookup_sizes[name]),), plan.widths[name])  # one input: the joint cell

    def expression_inputs(self, name, spec, ctx):
        rows = ctx.rows([e for _, e in spec.expressions()])
        sizes = ctx.plan.lookup_sizes[name]
        cell = np.zeros(len(rows), np.int64)
        for k, size in enumerate(sizes):
            cell = cell * size + np.clip(rows[:, k].astype(np.int64), 0, size - 1)
        return cell[:, None]

    def init(self, key, spec, shapes):
        import jax.numpy as jnp

        return {"table": jnp.zeros((shapes.inputs[0], shapes.out), jnp.float32)}

    def apply(self, params, spec, inputs):
        import jax.numpy as jnp

        index = inputs[0].reshape(-1).astype(jnp.int32)  # the joint cell, from expression_inputs
        return params["table"][index]

    def closed_form(self, spec, plan, predictors):
        return fit_lookup_site

    def send(self, params):
        """A table as its shared row (the column medians: what rows that no example reaches
        hold) plus each row's difference from it, so unreached rows cost ~0 bits."""
        table = np.asarray(params["table"], np.float64)
        base = np.median(table, axis=0, keepdims=True)
        return {"base": base, "rows": table - base}

    def receive(self, sent):
        return {"table": np.asarray(sent["base"], np.float32) + np.asarray(sent["rows"], np.float32)}

    def estimate(self, data, ctx):
        """Shrunk per-cell sums of the residual; the table's unreached rows are nearly free."""
        plan, fixed = ctx.probe()
        cells = np.asarray(fixed["candidate_features/expr"][:, 0], np.int64)[:ctx.max_rows]
        size = int(np.prod(plan.lookup_sizes["candidate_features"]))
        return lookup_gain(cells, size, ctx.residual), (size - len(np.unique(cells))) * ctx.residual.shape[1]


def lookup_gain(cells: np.ndarray, size: int, r: np.ndarray) -> float:
    sums = np.zeros((size, r.shape[1]))
    np.add.at(sums, cells, r)
    counts = np.bincount(cells, minlength=size)
    return float(((sums ** 2).sum(1) / (counts + 1.0)).sum())


# --- the exact solve of a sum of tables -------------------------------------------------------------

SHRINKAGES = (1e-3, 0.1, 1.0, 10.0)  # ridge strengths of a table, in examples per cell
BACKFIT_SWEEPS = 8  # Gauss–Seidel sweeps over the tables of a sum (one is exact for a single table)


def _backfit(cells: list[np.ndarray], sizes: list[int], y: np.ndarray, shrink: float) -> tuple[np.ndarray, list]:
    """Least squares (ridge) for y ≈ mean + Σ table_k[cell_k]: each sweep refits each table as the
    shrunk per-cell mean of what the others leave."""
    from scipy import sparse

    onehots = [sparse.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(size, len(c)))
               for c, size in zip(cells, sizes)]
    counts = [np.asarray(m.sum(1)).reshape(-1, 1) for m in onehots]
    mean = y.mean(0)
    residual = (y - mean).astype(np.float64)
    tables = [np.zeros((size, y.shape[1])) for size in sizes]
    for _ in range(BACKFIT_SWEEPS if len(cells) > 1 else 1):
        for k, (cell, onehot) in enumerate(zip(cells, onehots)):
            residual += tables[k][cell]
            tables[k] = (onehot @ residual) / (counts[k] + shrink)
            residual -= tables[k][cell]
    return mean, tables


def fit_lookup_site(plan, site: str, names: list[str], data, train_idx, val_idx, refit: bool = True):
    """A sum of tables: exact ridge by backfitting (a single table is a shrunk per-cell mean); the
    shrinkage is chosen on validation, then the tables are refit on train + validation."""
    import jax.numpy as jnp

    from .._compile import fixed_inputs, site_rows
    from .._fit import _take

    sizes = [plan.shapes(n).inputs[0] for n in names]

    def read(index):
        batch = _take(data, index)
        fixed = fixed_inputs(plan, batch, site)
        return [np.asarray(fixed[f"{n}/expr"][:, 0], np.int64) for n in names], site_rows(plan, site, batch[site])

    cells, y = read(train_idx)
    vcells, vy = read(val_idx)
    best, best_shrink = np.inf, 1.0
    for shrink in SHRINKAGES:
        mean, tables = _backfit(cells, sizes, y, shrink)
        sse = ((mean + sum(t[c] for t, c in zip(tables, vcells)) - vy) ** 2).sum()
        if sse < best:
            best, best_shrink = sse, shrink
    if refit:
        cells, y = [np.concatenate([c, v]) for c, v in zip(cells, vcells)], np.concatenate([y, vy])
    mean, tables = _backfit(cells, sizes, y, best_shrink)
    tables[0] = tables[0] + mean  # every row reads exactly one cell of the first table
    return {n: {"table": jnp.asarray(t, jnp.float32)} for n, t in zip(names, tables)}, best_shrink


KIND = LookupKind()
