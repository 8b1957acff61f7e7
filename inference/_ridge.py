"""Exact ridge regression from streamed sufficient statistics.

X'X is accumulated with BLAS ``syrk`` (only one triangle: half the flops of a general matrix
product), X'Y with ``gemm``, both in float32 per batch and summed in float64. The ridge strength
is chosen on a validation split from one eigendecomposition of the (centred) train X'X.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas

ALPHAS = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # relative to the mean eigenvalue


@dataclass
class Stats:
    """Running sums over rows: n, Σx, Σy, X'X (upper triangle), X'Y, Σ y² per column."""

    n: int = 0
    sx: np.ndarray | None = None
    sy: np.ndarray | None = None
    xtx: np.ndarray | None = None
    xty: np.ndarray | None = None
    yy: np.ndarray | None = None

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.ascontiguousarray(x, np.float32)
        y = np.ascontiguousarray(y, np.float32)
        if self.xtx is None:
            f, d = x.shape[1], y.shape[1]
            self.sx, self.sy, self.yy = np.zeros(f), np.zeros(d), np.zeros(d)
            self.xtx, self.xty = np.zeros((f, f)), np.zeros((f, d))
        self.n += len(x)
        ones = np.ones(len(x), np.float32)
        self.sx += ones @ x  # BLAS column sums, float32 within a batch, float64 across batches
        self.sy += ones @ y
        self.yy += np.einsum("ij,ij->j", y, y)
        # a C-ordered [n, f] array is a Fortran-ordered [f, n] one: BLAS reads it without a copy
        self.xtx += blas.ssyrk(1.0, x.T)  # upper triangle of X'X
        self.xty += x.T @ y

    def __iadd__(self, other: "Stats") -> "Stats":
        if other.xtx is None:
            return self
        if self.xtx is None:
            self.n, self.sx, self.sy, self.xtx, self.xty, self.yy = (other.n, other.sx.copy(), other.sy.copy(),
                                                                     other.xtx.copy(), other.xty.copy(), other.yy.copy())
            return self
        self.n += other.n
        for name in ("sx", "sy", "xtx", "xty", "yy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def centred(self, intercept: bool = True):
        """(C_xx, C_xy, means) around this set's means (around 0 without an intercept)."""
        xtx = np.triu(self.xtx) + np.triu(self.xtx, 1).T
        if not intercept:
            return xtx, self.xty, np.zeros_like(self.sx), np.zeros_like(self.sy)
        mx, my = self.sx / self.n, self.sy / self.n
        return xtx - self.n * np.outer(mx, mx), self.xty - self.n * np.outer(mx, my), mx, my


def solve(train: Stats, validation: Stats | None = None, alphas=ALPHAS,
          intercept: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge weights and bias (float64), and the chosen strength. With a validation set the
    strength minimises its squared error; the weights are then refit on train + validation."""
    cxx, cxy, mx, my = train.centred(intercept)
    scale = max(np.trace(cxx) / len(cxx), 1e-12)
    alpha = alphas[0]
    if validation is not None and validation.n and len(alphas) > 1:
        evals, evecs = np.linalg.eigh(cxx)
        rotated = evecs.T @ cxy
        vxx, vxy = _raw_moments(validation)
        best = np.inf
        for a in alphas:
            w = evecs @ (rotated / (evals + a * scale)[:, None])
            b = my - mx @ w
            sse = _sse(w, b, vxx, vxy, validation)
            if sse < best:
                best, alpha = sse, a
        merged = Stats()
        merged += train
        merged += validation
        cxx, cxy, mx, my = merged.centred(intercept)
    w = np.linalg.solve(cxx + alpha * scale * np.eye(len(cxx)), cxy) if len(cxx) else np.zeros_like(cxy)
    return w, my - mx @ w, alpha


def _raw_moments(stats: Stats):
    return np.triu(stats.xtx) + np.triu(stats.xtx, 1).T, stats.xty


def _sse(w, b, xtx, xty, stats: Stats) -> float:
    """Σ ||y - xW - b||² from sums alone."""
    return float(stats.yy.sum() - 2 * np.sum(w * xty) - 2 * b @ stats.sy + np.sum(w * (xtx @ w))
                 + 2 * (stats.sx @ w) @ b + stats.n * b @ b)
