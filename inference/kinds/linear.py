"""``linear``: an affine map of the features it reads, optionally low-rank or L1-sparse,
optionally followed by a nonlinearity (one layer: ``ReLU(W x + b)``).

Where a site is predicted by plain linear maps of fixed features, it is solved exactly: ridge
from streamed sufficient statistics (reduced-rank ridge for one low-rank map).
"""

from __future__ import annotations

from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field, StrictBool

from theorycraft.spec import ComponentSpec, NonNegativeFloat, PositiveInt, Refs

from ._base import Kind, activation, concat, dense


class Linear(ComponentSpec):
    """An affine map of the features it reads, optionally low-rank or L1-sparse, optionally
    followed by a nonlinearity (a single layer: ``ReLU(W x + b)``)."""

    from_: Refs = Field(alias="from")
    rank: Optional[PositiveInt] = None
    l1: NonNegativeFloat = 0.0
    bias: StrictBool = True
    activation: Optional[Literal["relu", "gelu", "tanh"]] = None
    width: Optional[PositiveInt] = None


class LinearKind(Kind):
    schema = Linear

    def parameter_shapes(self, spec, fan_in, out):
        shapes = ({"down": f"[{fan_in}, {spec.rank}]", "up": f"[{spec.rank}, {out}]"} if spec.rank
                  else {"weight": f"[{fan_in}, {out}]"})
        return {**shapes, **({"bias": f"[{out}]"} if spec.bias else {})}

    def plan_width(self, name, spec, ctx):
        width = super().plan_width(name, spec, ctx)
        fan_in = sum(ctx.widths.get(r, 0) for r in spec.reads())
        if spec.rank and width and fan_in and spec.rank > min(fan_in, width):
            ctx.problem(name, f"expected a rank of at most {min(fan_in, width)} (the smaller of its {fan_in} input "
                              f"features and {width} outputs), found {spec.rank}; leave 'rank' out for a map of "
                              f"full rank", "rank")
        return width

    def param_count(self, name, spec, plan):
        n_in, out = sum(plan.shapes(name).inputs), plan.widths[name]
        return (spec.rank * (n_in + out) if spec.rank else n_in * out) + (out if spec.bias else 0)

    def row_bytes(self, name, spec, plan):
        out = plan.widths[name]
        return 4 * ((spec.rank or 0) + out * (2 if spec.activation else 1)) * plan.rows_per_example(name)

    def solve_bytes(self, name, spec, plan):
        """The exact ridge holds XᵀX (float64) for train, validation and both, and its
        eigendecomposition; and XᵀY for each."""
        if self.closed_form(spec, plan, 1) is None:
            return 0
        n_in, out = sum(plan.shapes(name).inputs), plan.widths[name]
        return 8 * (4 * n_in * n_in + 3 * n_in * out)

    def init(self, key, spec, shapes):
        import jax
        import jax.numpy as jnp

        n_in, out = sum(shapes.inputs), shapes.out
        k1, k2 = jax.random.split(key)
        params = ({"down": dense(k1, n_in, spec.rank), "up": dense(k2, spec.rank, out)} if spec.rank
                  else {"weight": dense(k1, n_in, out) * 0.1})
        if spec.bias:
            params["bias"] = jnp.zeros((out,), jnp.float32)
        return params

    def apply(self, params, spec, inputs):
        x = concat(inputs)
        y = (x @ params["down"]) @ params["up"] if "down" in params else x @ params["weight"]
        y = y + params["bias"] if "bias" in params else y
        return activation(spec.activation)(y) if spec.activation else y

    def penalty(self, params, spec):
        import jax.numpy as jnp

        return spec.l1 * sum(jnp.abs(v).sum() for k, v in params.items() if k != "bias") if spec.l1 else 0.0

    def closed_form(self, spec, plan, predictors):
        """Exact ridge for plain maps of fixed features; a low-rank map only alone on its site."""
        theory = plan.theory
        plain = (not spec.rank or predictors == 1) and not spec.l1 and not spec.activation
        fixed = all(r in plan.fixed or r in theory.variables or r in theory.sites for r in spec.reads())
        return fit_ridge_site if plain and fixed else None

    def estimate(self, data, ctx):
        """Reduced-rank regression of the residual on the sites it reads: the top ``rank``
        eigenvalues of (XᵀR)ᵀ(XᵀX + λ)⁻¹(XᵀR). A variable it reads comes from the probe."""
        reads = _as_list(data["from"])
        if any(u in ctx.variables for u in reads):  # a variable's values come from this candidate's probe
            fixed = ctx.probe()[1]
            x = np.concatenate([fixed[u] if u in ctx.variables else ctx.site_rows(u) for u in reads], 1)
            return mechanism_gain(x[:ctx.max_rows], ctx.residual, data.get("rank"), ctx.ridge), 0
        # recorded sites: whitened once per search (the rows stay), the spectrum once per residual
        key = ("mechanism", tuple(reads))
        if key not in ctx.memo:
            if key not in ctx.shared:
                x = np.concatenate([ctx.site_rows(u) for u in reads], 1)
                ctx.shared[key] = whiten(x[:ctx.max_rows], ctx.ridge)
            ctx.memo[key] = whitened_spectrum(*ctx.shared[key], ctx.residual)
        return float(ctx.memo[key][:data.get("rank")].sum()), 0


def _as_list(value):
    return value if isinstance(value, list) else [value]


def mechanism_gain(x: np.ndarray, r: np.ndarray, rank: int | None, ridge: float = 1e-3) -> float:
    return float(mechanism_spectrum(x, r, ridge)[:rank].sum())


def mechanism_spectrum(x: np.ndarray, r: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """What each direction of a reduced-rank regression of ``r`` on ``x`` explains, largest first
    (a rank-k map buys the first k): the eigenvalues of (XᵀR)ᵀ(XᵀX + λ)⁻¹(XᵀR), X centred."""
    return whitened_spectrum(*whiten(x, ridge), r)


def whiten(x: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """(X centred, in float32; the Cholesky factor L of XᵀX + λ): what every residual's spectrum
    on the same inputs reuses."""
    x = np.asarray(x, np.float32)
    x = x - x.mean(0)
    gram = (x.T @ x).astype(np.float64)
    gram += (ridge * np.trace(gram) / len(gram) + 1e-9) * np.eye(len(gram))
    return x, np.linalg.cholesky(gram)


def whitened_spectrum(x: np.ndarray, factor: np.ndarray, r: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular

    cross = solve_triangular(factor, (x.T @ np.asarray(r, np.float32)).astype(np.float64), lower=True)
    return np.maximum(np.linalg.eigvalsh(cross.T @ cross)[::-1], 0)


# --- the exact solve: ridge from streamed sufficient statistics -----------------------------------

def _design(plan, names: list[str], fixed: Mapping[str, np.ndarray]) -> np.ndarray:
    cols = [np.asarray(fixed[r], np.float32) for n in names for r in plan.theory.components[n].reads()]
    return np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]


def fit_ridge_site(plan, site: str, names: list[str], data, train_idx, val_idx, refit: bool = True,
                   batch_rows: int | None = None):
    """Accumulate train and validation batches (at most ``batch_rows`` rows of the site each, read
    from the memory-mapped shards) into sufficient statistics; solve; split the weights back into
    each component's parameters."""
    import jax.numpy as jnp

    from .. import _distributed, _ridge
    from .._compile import fixed_inputs, site_rows
    from .._stream import ROWS, chunks, rows_per_example, take

    stats = {"train": _ridge.Stats(), "val": _ridge.Stats()}
    per_example = rows_per_example(plan.site_shapes[site])
    for split, index in (("train", train_idx), ("val", val_idx)):
        for rows in chunks(index, per_example, batch_rows or ROWS):
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
    import jax.numpy as jnp

    from .. import _ridge

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


KIND = LinearKind()
