"""Exact ridge regression from streamed sufficient statistics.

Per batch, X'X is ``x.T @ x``, which numpy hands to BLAS ``syrk`` (it sees one buffer and its
transpose, and computes one triangle: half the flops), and X'Y is one ``gemm``; both read the
memory-mapped batch in place, with no copy. Sums run in float32 within a batch and float64
across batches. The ridge strength is chosen on a validation split from one eigendecomposition
of the centred train X'X.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHAS = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # relative to the mean eigenvalue


@dataclass
class Stats:
    """Running sums over rows: n, Σx, Σy, X'X and X'Y (no Σy²: the strengths are compared by
    validation error up to that constant, which saves a pass over Y)."""

    n: int = 0
    sx: np.ndarray | None = None
    sy: np.ndarray | None = None
    xtx: np.ndarray | None = None
    xty: np.ndarray | None = None

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.ascontiguousarray(x, np.float32)
        y = np.ascontiguousarray(y, np.float32)
        if self.xtx is None:
            f, d = x.shape[1], y.shape[1]
            self.sx, self.sy = np.zeros(f), np.zeros(d)
            self.xtx, self.xty = np.zeros((f, f)), np.zeros((f, d))
        self.n += len(x)
        self.xtx += x.T @ x  # syrk
        self.xty += x.T @ y
        self.sx += x.sum(0)
        self.sy += y.sum(0)

    def __iadd__(self, other: "Stats") -> "Stats":
        if other.xtx is None:
            return self
        if self.xtx is None:
            self.n, self.sx, self.sy, self.xtx, self.xty = (
                other.n, other.sx.copy(), other.sy.copy(), other.xtx.copy(), other.xty.copy())
            return self
        self.n += other.n
        for name in ("sx", "sy", "xtx", "xty"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def centred(self, intercept: bool = True):
        """(C_xx, C_xy, means) around this set's means (around 0 without an intercept)."""
        xtx = self.xtx
        if not intercept:
            return xtx, self.xty, np.zeros_like(self.sx), np.zeros_like(self.sy)
        mx, my = self.sx / self.n, self.sy / self.n
        return xtx - self.n * np.outer(mx, mx), self.xty - self.n * np.outer(mx, my), mx, my


def solve(train: Stats, validation: Stats | None = None, alphas=ALPHAS, intercept: bool = True,
          refit: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge weights and bias (float64), and the chosen strength. With a validation set the
    strength minimises its squared error; the weights are then refit on train + validation
    (unless ``refit`` is off)."""
    cxx, cxy, mx, my = train.centred(intercept)
    scale = max(np.trace(cxx) / len(cxx), 1e-12)
    alpha = alphas[0]
    if validation is not None and validation.n and len(alphas) > 1:
        evals, evecs = np.linalg.eigh(cxx)
        rotated = evecs.T @ cxy
        vxx, vxy = validation.xtx, validation.xty
        best = np.inf
        for a in alphas:
            w = evecs @ (rotated / (evals + a * scale)[:, None])
            b = my - mx @ w
            sse = _sse(w, b, vxx, vxy, validation)
            if sse < best:
                best, alpha = sse, a
        if refit:
            merged = Stats()
            merged += train
            merged += validation
            cxx, cxy, mx, my = merged.centred(intercept)
    w = np.linalg.solve(cxx + alpha * scale * np.eye(len(cxx)), cxy) if len(cxx) else np.zeros_like(cxy)
    return w, my - mx @ w, alpha


def _sse(w, b, xtx, xty, stats: Stats) -> float:
    """Σ ||y - xW - b||² from sums alone, less the constant Σ||y||²."""
    return float(-2 * np.sum(w * xty) - 2 * b @ stats.sy + np.sum(w * (xtx @ w))
                 + 2 * (stats.sx @ w) @ b + stats.n * b @ b)
