"""The theory scaling curve: test loss against theory size, L(N) = E + A·N^(−α). E is the floor
a vocabulary cannot pass; the curve says what size a target loss needs.

The fit is ``scipy.optimize.least_squares`` (trust-region reflective, bounds E ≥ 0, A ≥ 0 and α in
``ALPHA_RANGE``) in relative error, started from the best of a coarse grid over α with E and A in
closed form. Its standard errors come from the Jacobian at the optimum (s²·(JᵀJ)⁻¹, s² the residual
variance over n − 3 degrees of freedom), and it says so, in ``notes``, when a figure is not a result:
fewer than ``MIN_POINTS`` distinct sizes, sizes spanning less than ``MIN_SPREAD``×, or α at the
edge of its range (the points do not pin it down). A curve with notes is printed as no result."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

ALPHA_RANGE = (0.02, 4.0)  # exponents allowed
MIN_POINTS = 5  # fewer distinct sizes: 3 parameters leave at most one degree of freedom, the errors mean little
DISTINCT = 0.05  # sizes within 5% of each other count as one point
MIN_SPREAD = 4.0  # the sizes must span at least this factor for an exponent to mean anything
_START = np.geomspace(*ALPHA_RANGE, 40)  # coarse grid of starting exponents


@dataclass(frozen=True)
class ScalingCurve:
    floor: float  # E
    scale: float  # A
    exponent: float  # α
    errors: Optional[dict] = None  # standard errors {"floor", "scale", "exponent"}; None: not estimable
    points: int = 0
    notes: tuple[str, ...] = ()  # why a figure is not a result (too few points, α at the edge of its range)

    def loss(self, size: float) -> float:
        return self.floor + self.scale * size ** -self.exponent

    def size_for(self, loss: float) -> float:
        """The size the curve says reaches ``loss`` (infinite at or below the floor)."""
        if loss <= self.floor or self.scale <= 0:
            return math.inf
        return (self.scale / (loss - self.floor)) ** (1 / self.exponent)


def fit_scaling(sizes: Sequence[float], losses: Sequence[float]) -> ScalingCurve:
    """Fit L(N) = E + A·N^(−α) to (size, loss) points by least squares in relative error.

    Parameters
    ----------
    sizes : sequence of float
        Theory sizes N (bits), all > 0.
    losses : sequence of float
        The loss at each size (1 − coverage), all > 0.

    Returns
    -------
    ScalingCurve
        E, A and α with their standard errors, the number of points, and notes saying when the
        fit rests on too few points or α sits at the edge of ``ALPHA_RANGE``.
    """
    from scipy.optimize import least_squares

    n, loss = np.asarray(sizes, np.float64), np.asarray(losses, np.float64)
    if len(n) < 3:
        raise ValueError(f"expected at least 3 (size, loss) points to fit a scaling curve, found {len(n)}")
    weight = 1 / np.maximum(np.abs(loss), 1e-12)  # relative error: small losses count as much as large
    scale_n = float(np.exp(np.log(n).mean()))  # sizes measured from their geometric mean: A well scaled

    def residuals(p):
        return (p[0] + p[1] * (n / scale_n) ** -p[2] - loss) * weight

    start = min((_closed_form(n / scale_n, loss, weight, a) for a in _START), key=lambda p: (residuals(p) ** 2).sum())
    low, high = [0.0, 0.0, ALPHA_RANGE[0]], [np.inf, np.inf, ALPHA_RANGE[1]]
    fit = least_squares(residuals, np.clip(start, low, high), bounds=(low, high), method="trf", x_scale="jac")
    floor, a, alpha = (float(v) for v in fit.x)
    scale = a * scale_n ** alpha  # back to A of N itself
    errors = _errors(fit, len(n), scale_n)
    notes = []
    distinct = distinct_sizes(n)
    if distinct < MIN_POINTS:
        notes.append(f"rests on {distinct} distinct sizes (fewer than {MIN_POINTS}; sizes within {DISTINCT:.0%} of each "
                     f"other count as one, of {len(n)} points): "
                     + ("its errors cannot be estimated" if errors is None else "its errors mean little"))
    if n.max() < MIN_SPREAD * n.min():
        notes.append(f"its sizes span only {n.max() / n.min():.2f}x (less than {MIN_SPREAD:g}x): too narrow a range "
                     f"to extrapolate from")
    edge = next((b for b in ALPHA_RANGE if abs(math.log(alpha / b)) < 0.01), None)
    if edge is not None:
        notes.append(f"α = {alpha:.2f} sits at the edge of its range [{ALPHA_RANGE[0]:g}, {ALPHA_RANGE[1]:g}]: "
                     f"the points do not pin it down, so α, A and the size for a target are not results")
    return ScalingCurve(floor, float(scale), alpha, errors, len(n), tuple(notes))


def distinct_sizes(sizes) -> int:
    """How many of ``sizes`` differ from the next smaller kept one by more than ``DISTINCT``."""
    count, last = 0, None
    for size in np.sort(np.asarray(sizes, np.float64)):
        if last is None or size > last * (1 + DISTINCT):
            count, last = count + 1, size
    return count


def _closed_form(n, loss, weight, alpha) -> np.ndarray:
    """For a fixed α, E ≥ 0 and A ≥ 0 by weighted linear least squares."""
    design = np.stack([np.ones_like(n), n ** -alpha], axis=1) * weight[:, None]
    coef = np.linalg.lstsq(design, loss * weight, rcond=None)[0]
    if coef[0] < 0:  # the floor cannot be negative: refit A alone
        coef = np.array([0.0, float(np.linalg.lstsq(design[:, 1:], loss * weight, rcond=None)[0][0])])
    return np.array([*np.maximum(coef, 0.0), alpha])


def _errors(fit, points: int, scale_n: float) -> Optional[dict]:
    """Standard errors from the Jacobian at the optimum; None with no degree of freedom left or a
    singular Jacobian (a parameter the points do not determine)."""
    dof = points - 3
    if dof <= 0:
        return None
    jac = fit.jac
    s2 = float((fit.fun ** 2).sum()) / dof
    try:
        cov = np.linalg.inv(jac.T @ jac) * s2
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
        return None
    se = np.sqrt(np.diag(cov))
    floor, a, alpha = fit.x
    # A of N = a·scale_n^α: its error by the delta method, through a and α
    grad = np.array([0.0, scale_n ** alpha, a * scale_n ** alpha * math.log(scale_n)])
    scale_se = float(math.sqrt(max(grad @ cov @ grad, 0.0)))
    return {"floor": float(se[0]), "scale": scale_se, "exponent": float(se[2])}
