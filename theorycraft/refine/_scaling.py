"""The theory scaling curve: test loss against theory size, L(N) = E + A·N^(−α). E is the floor
a vocabulary cannot pass; the curve says what size a target loss needs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHAS = np.geomspace(0.02, 4.0, 400)  # exponents tried; for each, (E, A) is a linear least squares


@dataclass(frozen=True)
class ScalingCurve:
    floor: float  # E
    scale: float  # A
    exponent: float  # α

    def loss(self, size: float) -> float:
        return self.floor + self.scale * size ** -self.exponent

    def size_for(self, loss: float) -> float:
        """The size the curve says reaches ``loss`` (infinite at or below the floor)."""
        if loss <= self.floor or self.scale <= 0:
            return math.inf
        return (self.scale / (loss - self.floor)) ** (1 / self.exponent)


def fit_scaling(sizes: Sequence[float], losses: Sequence[float]) -> ScalingCurve:
    """Least squares in relative error over α (a grid) and, for each α, E ≥ 0 and A ≥ 0 in closed form."""
    n, loss = np.asarray(sizes, np.float64), np.asarray(losses, np.float64)
    if len(n) < 3:
        raise ValueError(f"expected at least 3 (size, loss) points to fit a scaling curve, found {len(n)}")
    weight = 1 / np.maximum(np.abs(loss), 1e-12)  # relative error: small losses count as much as large
    best = None
    for alpha in ALPHAS:
        design = np.stack([np.ones_like(n), n ** -alpha], axis=1) * weight[:, None]
        coef = np.linalg.lstsq(design, loss * weight, rcond=None)[0]
        if coef[0] < 0:  # the floor cannot be negative: refit A alone
            coef = np.array([0.0, max(float(np.linalg.lstsq(design[:, 1:], loss * weight, rcond=None)[0][0]), 0.0)])
        coef = np.maximum(coef, 0.0)
        error = float(((design @ coef - loss * weight) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, ScalingCurve(float(coef[0]), float(coef[1]), float(alpha)))
    return best[1]
