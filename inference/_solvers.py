"""The engine's exact solvers of a site, handed to the kinds (``Kind.closed_form`` picks one from
``SOLVERS``), as ``plan_width`` and ``estimate`` are handed their contexts: the kinds say when a
site has an exact solution, the engine solves it.

- ``ridge_site``: plain linear maps of fixed features: ridge from sufficient statistics streamed
  from the memory-mapped shards and summed over processes (reduced-rank ridge for one low-rank
  map), the strength chosen on validation;
- ``tables_site``: a sum of lookup tables (and of such maps): ridge of the one-hot design, its
  sparse normal equations solved by Cholesky or conjugate gradients.

A solver is ``(plan, site, names, data, train_idx, val_idx, refit) -> (params by name, strength,
how the solve went)``.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np

from . import _distributed, _ridge, _stream
from ._compile import fixed_inputs, site_rows
from ._stream import chunks, rows_per_example, take
from .kinds import kind_of


# --- ridge: plain linear maps of fixed features ------------------------------------------------

def _design(plan, names: list[str], fixed: Mapping[str, np.ndarray]) -> np.ndarray:
    cols = [np.asarray(fixed[r], np.float32) for n in names for r in plan.theory.components[n].reads()]
    return np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]


def ridge_site(plan, site: str, names: list[str], data, train_idx, val_idx, refit: bool = True,
                   batch_rows: int | None = None):
    """Accumulate train and validation batches (at most ``batch_rows`` rows of the site each, read
    from the memory-mapped shards) into sufficient statistics; solve; split the weights back into
    each component's parameters."""
    stats = {"train": _ridge.Stats(), "val": _ridge.Stats()}
    per_example = rows_per_example(plan.site_shapes[site])
    for split, index in (("train", train_idx), ("val", val_idx)):
        for rows in chunks(index, per_example, batch_rows or _stream.ROWS):
            batch = take(data, rows)
            fixed = fixed_inputs(plan, batch, site)
            stats[split].add(_design(plan, names, fixed), site_rows(plan, site, batch[site]))
    stats = {split: _distributed.reduce_stats(part) for split, part in stats.items()}  # Σ over processes
    biased = [n for n in names if plan.theory.components[n].bias]
    w, b, alpha = _ridge.solve(stats["train"], stats["val"], intercept=bool(biased), refit=refit)
    rank = plan.theory.components[names[0]].rank
    if rank:
        return ({names[0]: _reduced_rank(w, stats["train"], stats["val"] if refit else None, rank, bool(biased))}, alpha,
                f"a direct solve of the normal equations, projected to rank {rank}")
    params, offset = {}, 0
    for n in names:
        c = plan.theory.components[n]
        width = sum(plan.widths[r] for r in c.reads())
        params[n] = {"weight": jnp.asarray(w[offset:offset + width], jnp.float32)}
        if c.bias:  # one intercept for the site: the first biased predictor holds it
            params[n]["bias"] = jnp.asarray(b if n == biased[0] else np.zeros_like(b), jnp.float32)
        offset += width
    return params, alpha, "a direct solve of the normal equations"


def _reduced_rank(w, train, val, rank: int, intercept: bool) -> dict:
    """Reduced-rank ridge: the full map projected on the top ``rank`` principal directions of its
    fitted values (Izenman 1975), as ``down`` [in, rank] and ``up`` [rank, out]."""
    merged = _ridge.Stats()
    merged += train
    if val is not None:
        merged += val
    cxx = merged.centred(intercept)[0]
    _, vectors = np.linalg.eigh(w.T @ cxx @ w)
    top = vectors[:, ::-1][:, :rank]  # [out, rank]
    mx, my = (merged.sx / merged.n, merged.sy / merged.n) if intercept else (0.0, 0.0)
    params = {"down": jnp.asarray(w @ top, jnp.float32), "up": jnp.asarray(top.T, jnp.float32)}
    if intercept:
        params["bias"] = jnp.asarray(my - mx @ (w @ top @ top.T), jnp.float32)
    return params


# --- tables: a sum of lookup tables (and plain linear maps) --------------------------------------

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


def tables_site(plan, site: str, names: list[str], data, train_idx, val_idx, refit: bool = True):
    """A sum of tables (and of plain linear maps of fixed features, read as dense columns):
    exact ridge of the one-hot design (sparse normal equations summed batch by batch from the
    memory-mapped shards, conjugate gradients); the shrinkage is chosen on validation, then the
    tables are refit on train + validation (unless ``refit`` is off). Returns (params, shrinkage,
    how the final solve went)."""
    tables = [n for n in names if _solver(plan, n, len(names)) is tables_site]
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
        for rows in chunks(val_idx, per_example, 4 * _stream.ROWS):
            part = read(rows)
            size += sum(np.asarray(v).nbytes for v in (*part[0], part[2]) + ((part[1],) if maps else ()))
            whole = whole and size <= _stream.RESIDENT_BYTES
            kept[:] = kept + [part] if whole else []
            yield part
        if whole:
            kept.append(None)

    gram, xty = normal_equations(read(rows) for rows in chunks(train_idx, per_example, 4 * _stream.ROWS))
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


tables_site.covers = (ridge_site,)  # it also solves a site that mixes tables with plain linear maps


def _solver(plan, name: str, predictors: int) -> Callable | None:
    c = plan.theory.components[name]
    return kind_of(c).closed_form(c, plan, predictors, SOLVERS)


class Solvers(NamedTuple):
    """The exact solvers a kind's ``closed_form`` may pick."""

    ridge: Callable
    tables: Callable


SOLVERS = Solvers(ridge=ridge_site, tables=tables_site)
