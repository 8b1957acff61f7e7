"""``lookup``: a learned table, one row per value of the variables in ``of`` (jointly).

Solved exactly where a site is a sum of tables (ridge of the one-hot design by conjugate
gradients); sent as a shared row plus each row's difference from it, so rows no example reaches
cost almost nothing. A key outside its size is an error, or reads the ``outside`` row.
"""

from __future__ import annotations

from math import prod
from typing import Callable, Literal, Optional

import numpy as np
from pydantic import Field

from theorycraft.spec import ComponentSpec, Expression, PositiveInt, TheoryError, list_of

from ._base import Kind, Shapes


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
        size = table_rows(plan.lookup_sizes["candidate_features"], data.get("outside", "error"))
        return lookup_gain(cells, size, ctx.residual), (size - len(np.unique(cells))) * ctx.residual.shape[1]


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


# --- the exact solve of a sum of tables -------------------------------------------------------------

SHRINKAGES = (1e-3, 0.1, 1.0, 10.0)  # ridge strengths of a table, in examples per cell
CG_TOLERANCE = 1e-10  # relative residual of the normal equations at which the final table solve stops
SELECTION_TOLERANCE = 1e-6  # enough to compare shrinkages on validation, at a quarter of the iterations
CG_CAP = 2000  # iterations; a solve that reaches the cap says so in the fit log and the scorecard
DIRECT_COLUMNS = 2048  # up to this many reached columns the normal equations are factorised (dense, exact), not iterated


def _normal_equations(cells: list[np.ndarray], sizes: list[int], y: np.ndarray, dense: np.ndarray | None = None):
    """(XᵀX sparse, Xᵀy dense) of the one-hot design of a sum of tables, with an intercept column
    first: X [rows, 1 + Σ sizes] has one 1 per table and row, so XᵀX holds each table's cell counts
    on its diagonal and the co-occurrence counts of two tables' cells off it. ``dense`` features
    (linear maps of fixed features on the same site) are further columns after the cells."""
    from scipy import sparse

    n = len(y)
    offsets = np.cumsum([1, *sizes[:-1]])
    columns = np.stack([np.zeros(n, np.int64)] + [c + o for c, o in zip(cells, offsets)], axis=1)
    rows = np.arange(0, columns.size + 1, columns.shape[1])  # csr row pointers: K + 1 entries a row
    x = sparse.csr_matrix((np.ones(columns.size), columns.reshape(-1), rows), shape=(n, 1 + sum(sizes)))
    y = np.asarray(y, np.float64)
    if dense is None or not dense.shape[1]:
        return (x.T @ x).tocsr(), np.asarray(x.T @ y)
    f = np.asarray(dense, np.float64)  # its blocks by BLAS: a sparse product of dense columns is far slower
    cross = np.asarray(x.T @ f)
    gram = sparse.bmat([[x.T @ x, sparse.csr_matrix(cross)], [sparse.csr_matrix(cross.T), sparse.csr_matrix(f.T @ f)]])
    return gram.tocsr(), np.concatenate([np.asarray(x.T @ y), f.T @ y])


def _conjugate_gradients(matvec: Callable, rhs: np.ndarray, diagonal: np.ndarray, x: np.ndarray,
                         tolerance: float) -> tuple[np.ndarray, int, bool]:
    """Jacobi-preconditioned conjugate gradients for A x = rhs (A symmetric positive definite)
    from a first guess ``x``, every column of rhs at once; stops when each column's residual is
    within ``tolerance`` of its right-hand side, or at CG_CAP iterations. Returns (x, iterations,
    converged)."""
    scale = np.maximum(np.linalg.norm(rhs, axis=0), 1e-300)
    x = x.copy()
    r = rhs - matvec(x)
    z = r / diagonal[:, None]
    p, rz = z.copy(), np.einsum("ij,ij->j", r, z)
    for iteration in range(1, CG_CAP + 1):
        ap = matvec(p)
        pap = np.einsum("ij,ij->j", p, ap)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)  # converged columns stay put
        x += alpha * p
        r -= alpha * ap
        if np.max(np.linalg.norm(r, axis=0) / scale) <= tolerance:
            return x, iteration, True
        z = r / diagonal[:, None]
        rz, previous = np.einsum("ij,ij->j", r, z), rz
        p = z + np.divide(rz, previous, out=np.zeros_like(rz), where=previous > 0) * p
    return x, CG_CAP, False


def _solve_tables(gram, xty: np.ndarray, shrink: float, start: np.ndarray, dense: int = 0,
                  tolerance: float = CG_TOLERANCE) -> tuple[np.ndarray, str]:
    """Exact ridge for y ≈ b + Σ table_k[cell_k] + F w (the intercept b not shrunk, each table
    by ``shrink``, the last ``dense`` columns F by 1e-8 × their own diagonal): the normal equations by
    conjugate gradients from ``start`` (a nearby solution: fewer iterations), over the columns
    some row reads (the others are 0, as ridge sets them). Returns ([b; tables; w], how it went)."""
    reached = np.flatnonzero(gram.diagonal() > 0)
    diagonal = gram.diagonal()
    gram = gram[reached][:, reached]
    is_dense = reached >= len(xty) - dense  # the dense columns come last
    penalty = np.where(reached == 0, 0.0, np.where(is_dense, 1e-8 * diagonal[reached], float(shrink)))

    def matvec(v):
        return gram @ v + penalty[:, None] * v

    solved = _cholesky(gram, penalty, xty[reached]) if len(reached) <= DIRECT_COLUMNS else None
    if solved is not None:
        method = "a Cholesky solve of the one-hot normal equations"
    else:
        solved, iterations, converged = _conjugate_gradients(matvec, xty[reached], gram.diagonal() + penalty,
                                                             start[reached], tolerance)
        method = "conjugate gradients on the one-hot normal equations" + (
            f" ({iterations} iterations)" if converged else f", NOT CONVERGED: stopped at the cap of {CG_CAP} iterations")
    scale = np.maximum(np.linalg.norm(xty, axis=0), 1e-300)
    residual = float(np.max(np.linalg.norm(xty[reached] - matvec(solved), axis=0) / scale))  # recomputed
    w = np.zeros_like(xty)
    w[reached] = solved
    return w, f"{method}, relative residual {residual:.0e}"


def _cholesky(gram, penalty: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """(gram + diag(penalty))⁻¹ rhs by a dense Cholesky factorisation; None where it is not
    numerically positive definite (conjugate gradients then)."""
    import scipy.linalg

    a = gram.toarray()
    a[np.diag_indices_from(a)] += penalty
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, check_finite=False), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        return None


def _split_tables(w: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """[b; tables stacked; dense weights] -> (b, [table_k], dense weights)."""
    end = 1 + sum(sizes)
    return w[0], np.split(w[1:end], np.cumsum(sizes)[:-1]), w[end:]


def fit_lookup_site(plan, site: str, names: list[str], data, train_idx, val_idx, refit: bool = True):
    """A sum of tables (and of plain linear maps of fixed features, read as dense columns):
    exact ridge of the one-hot design (sparse normal equations summed batch by batch from the
    memory-mapped shards, conjugate gradients); the shrinkage is chosen on validation, then the
    tables are refit on train + validation (unless ``refit`` is off). Returns (params, shrinkage,
    how the final solve went)."""
    import jax.numpy as jnp

    from .. import _distributed
    from .._compile import fixed_inputs, site_rows
    from .._stream import RESIDENT_BYTES, ROWS, chunks, rows_per_example, take
    from .linear import _design

    from . import kind_of

    tables = [n for n in names if kind_of(plan.theory.components[n]) is KIND]
    maps = [n for n in names if n not in tables]
    sizes = [plan.shapes(n).inputs[0] for n in tables]
    per_example = rows_per_example(plan.site_shapes[site])

    def read(index):
        batch = take(data, index)
        fixed = fixed_inputs(plan, batch, site)
        dense = _design(plan, maps, fixed) if maps else None
        return [np.asarray(fixed[f"{n}/expr"][:, 0], np.int64) for n in tables], dense, site_rows(plan, site, batch[site])

    def normal_equations(parts):
        gram = xty = None
        for cells, dense, y in parts:
            g, x = _normal_equations(cells, sizes, y, dense)
            gram, xty = (g, x) if gram is None else (gram + g, xty + x)
        return gram, xty

    kept: list = []  # the validation batches, read once while they fit in RESIDENT_BYTES (then None)

    def validation():
        if kept and kept[-1] is None:
            yield from kept[:-1]
            return
        kept.clear()
        size, whole = 0, True
        for rows in chunks(val_idx, per_example, 4 * ROWS):
            part = read(rows)
            size += sum(np.asarray(v).nbytes for v in (*part[0], part[2]) + ((part[1],) if maps else ()))
            whole = whole and size <= RESIDENT_BYTES
            kept[:] = kept + [part] if whole else []
            yield part
        if whole:
            kept.append(None)

    gram, xty = normal_equations(read(rows) for rows in chunks(train_idx, per_example, 4 * ROWS))
    gram, xty = _distributed.allsum_sparse(gram), _distributed.allsum(xty)  # Σ over processes (one: as is)
    n_dense = 0 if not maps else gram.shape[0] - 1 - sum(sizes)

    def predict(w, cells, dense):
        mean, parts, weights = _split_tables(w, sizes)
        out = mean + sum(t[c] for t, c in zip(parts, cells))
        return out + dense @ weights if n_dense else out

    w = np.zeros_like(xty)
    best, best_shrink, best_w = np.inf, SHRINKAGES[-1], w
    for shrink in sorted(SHRINKAGES, reverse=True):  # each solve starts from the last, better conditioned one
        w, _ = _solve_tables(gram, xty, shrink, w, n_dense, SELECTION_TOLERANCE)
        sse = _distributed.allsum(sum(float(((predict(w, c, d) - y) ** 2).sum()) for c, d, y in validation()))
        if sse <= best:  # a tie goes to the weaker shrinkage
            best, best_shrink, best_w = sse, shrink, w
    if refit:
        vgram, vxty = normal_equations(validation())
        if vgram is None:  # no validation rows here (another process may have some)
            vgram, vxty = gram * 0, xty * 0
        vgram, vxty = _distributed.allsum_sparse(vgram), _distributed.allsum(vxty)
        gram, xty = gram + vgram, xty + vxty
    w, method = _solve_tables(gram, xty, best_shrink, best_w, n_dense)
    mean, parts, weights = _split_tables(w, sizes)
    parts[0] = parts[0] + mean  # every row reads exactly one cell of the first table
    params = {n: {"table": jnp.asarray(t, jnp.float32)} for n, t in zip(tables, parts)}
    offset = 0
    for n in maps:
        c = plan.theory.components[n]
        width = sum(plan.widths[r] for r in c.reads())
        params[n] = {"weight": jnp.asarray(weights[offset:offset + width], jnp.float32)}
        if c.bias:  # the intercept is in the first table
            params[n]["bias"] = jnp.zeros((xty.shape[1],), jnp.float32)
        offset += width
    return params, best_shrink, method


def _covers():
    from .linear import fit_ridge_site
    return (fit_ridge_site,)


fit_lookup_site.covers = _covers()  # it also solves a site that mixes tables with plain linear maps


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
