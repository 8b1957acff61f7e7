"""``linear``: an affine map of the features it reads, optionally low-rank or L1-sparse,
optionally followed by a nonlinearity (one layer: ``ReLU(W x + b)``).

Where a site is predicted by plain linear maps of fixed features, it is solved exactly: the
engine's ridge (streamed sufficient statistics; reduced-rank ridge for one low-rank map).
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field, StrictBool

from theorycraft.spec import ComponentSpec, NonNegativeFloat, PositiveInt, Refs

from ._base import Example, Kind, Shapes, activation, concat, dense


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
        if not exact(spec, plan, 1):
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

    def warm_start(self, params, spec, start):
        """A map that alone predicts its site, reading nothing learned (one the closed form does
        not solve: a nonlinearity, an L1 penalty), starts at the least-squares fit of the site's
        recorded rows before its nonlinearity (ridge; reduced-rank for a low-rank map): a ReLU
        read-out starts with its units live, not wherever a random draw put them."""
        if start.inputs is None or start.target is None or not start.sole:
            return params
        import jax.numpy as jnp

        x = np.asarray(concat([np.asarray(v) for v in start.inputs]), np.float64)
        y = np.asarray(start.target, np.float64)
        if len(x) <= 2 * x.shape[1]:  # too few rows to say much about the map
            return params
        mx, my = (x.mean(0), y.mean(0)) if spec.bias else (np.zeros(x.shape[1]), np.zeros(y.shape[1]))
        xc = x - mx
        gram = xc.T @ xc
        gram += (1e-3 * np.trace(gram) / len(gram) + 1e-9) * np.eye(len(gram))
        w = np.linalg.solve(gram, xc.T @ (y - my))
        if spec.rank:  # the top directions of its fitted values (reduced-rank regression)
            top = np.linalg.svd(xc @ w, full_matrices=False)[2][:spec.rank].T  # [out, rank]
            start_params = {"down": w @ top, "up": top.T}
            w = w @ top @ top.T
        else:
            start_params = {"weight": w}
        if spec.bias:
            start_params["bias"] = my - mx @ w
        return {k: jnp.asarray(v, jnp.float32) for k, v in start_params.items()}

    def apply(self, params, spec, inputs):
        x = concat(inputs)
        y = (x @ params["down"]) @ params["up"] if "down" in params else x @ params["weight"]
        y = y + params["bias"] if "bias" in params else y
        return activation(spec.activation)(y) if spec.activation else y

    def penalty(self, params, spec):
        import jax.numpy as jnp

        return spec.l1 * sum(jnp.abs(v).sum() for k, v in params.items() if k != "bias") if spec.l1 else 0.0

    def closed_form(self, spec, plan, predictors, solvers):
        return solvers.ridge if exact(spec, plan, predictors) else None

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

    def example(self, rng):
        return Example({"from": "x", "rank": 2}, Shapes((4,), 3),
                       [rng.normal(size=(8, 4)).astype(np.float32)])


def exact(spec, plan, predictors: int) -> bool:
    """Solved by ridge: a plain map of fixed features (a low-rank map only alone on its site)."""
    theory = plan.theory
    plain = (not spec.rank or predictors == 1) and not spec.l1 and not spec.activation
    return plain and all(r in plan.fixed or r in theory.variables or r in theory.sites for r in spec.reads())


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


KIND = LinearKind()
