"""Bootstrap intervals over held-out examples: every held-out figure is a ratio of sums over
examples (R² = 1 − ΣSSE/ΣSST, coverage the same over sites, a mean is Σ value / n), so an interval
resamples the examples' own sums (their squared errors, losses, agreements): no refit and no new
prediction, a matrix product per batch of resamples."""

from __future__ import annotations

from typing import Optional

import numpy as np

BOOTSTRAP = 1000  # resamples of the held-out examples for each interval
LEVEL = 0.95
SMALL_TEST = 200  # fewer test examples than this: every interval is wide, and the scorecard says so
_CHUNK = 2 ** 22  # resample weights held at once (draws × examples)
SEED = 0  # intervals are deterministic for a scorecard


def ratio_intervals(numerators: np.ndarray, denominators: Optional[np.ndarray] = None, *,
                    seed: int = SEED, draws: int = BOOTSTRAP) -> np.ndarray:
    """95% percentile bootstrap intervals of Σ numerator / Σ denominator for each column.

    Parameters
    ----------
    numerators : array [n, k]
        Per example (row), the summed numerator of each of k figures.
    denominators : array [n, k], optional
        The same for their denominators; None: each figure is a mean (Σ / n).
    seed, draws : int
        The resamples: ``draws`` draws of n examples with replacement, from ``seed``.

    Returns
    -------
    array [k, 2]
        (low, high) per figure; NaN where there are no examples or a denominator sums to 0.
    """
    num = np.asarray(numerators, np.float64)
    num = num[:, None] if num.ndim == 1 else num
    n, k = num.shape
    if n == 0:
        return np.full((k, 2), np.nan)
    den = np.ones_like(num) if denominators is None else np.asarray(denominators, np.float64).reshape(n, k)
    rng = np.random.default_rng(seed)
    ratios = []
    step = max(1, _CHUNK // n)
    for start in range(0, draws, step):
        # n draws with replacement per resample, counted: multinomial weights (numpy's multinomial
        # draws a binomial per example: 3x the time); one resample's counts at a time stay in cache
        picks = rng.integers(0, n, size=(min(step, draws - start), n), dtype=np.int32)
        weights = np.empty(picks.shape)
        for j, row in enumerate(picks):
            weights[j] = np.bincount(row, minlength=n)
        top, bottom = weights @ num, weights @ den
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan))
    ratios = np.concatenate(ratios)
    tail = 100 * (1 - LEVEL) / 2
    with np.errstate(invalid="ignore"):
        out = np.nanpercentile(ratios, [tail, 100 - tail], axis=0).T if np.isfinite(ratios).any() else np.full((k, 2), np.nan)
    return np.asarray(out, np.float64).reshape(k, 2)


def r2_intervals(sse: np.ndarray, sst: np.ndarray, **kw) -> np.ndarray:
    """Intervals of 1 − ΣSSE/ΣSST per column ([n, k] each): (low, high) per figure."""
    ratio = ratio_intervals(sse, sst, **kw)
    return 1.0 - ratio[:, ::-1]


def rounded(interval) -> Optional[tuple[float, float]]:
    """An interval as a scorecard holds it: two floats to 6 decimals, or None where not defined."""
    low, high = (float(v) for v in interval)
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return round(low, 6), round(high, 6)
