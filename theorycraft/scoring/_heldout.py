"""The examples a score is computed on, and the squared errors of a theory on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from theorycraft.inference._compile import site_rows
from theorycraft.inference._fit import load_examples

PRECISION = 0.01  # residuals are coded to 1% of their site's standard deviation (on train)


@dataclass(frozen=True)
class Examples:
    """A fitted theory's data in memory: every example, the test split, and per coded site its
    spread around the train mean and the precision its residuals are coded to."""

    data: Mapping[str, np.ndarray]  # inputs and every site of the theory, positions selected
    test: np.ndarray  # indices of the test examples: every reported number is on these
    train: np.ndarray
    sst: Mapping[str, float]  # test values around the train mean
    precision: Mapping[str, float]


def examples_of(fitted, acts, data: Mapping[str, np.ndarray] | None = None, limit: int | None = None) -> Examples:
    """``limit`` caps the number of test examples (the first ones; the store is shuffled once)."""
    data = data if data is not None else load_examples(fitted.theory, acts)
    test, train = np.flatnonzero(acts.is_test), np.flatnonzero(~acts.is_test)
    test = test[:limit] if limit else test
    sst, precision = {}, {}
    for s in fitted.sites:
        sst[s] = float(((site_rows(fitted.plan, s, data[s][test]) - fitted.means[s]) ** 2).sum())
        spread = float(np.mean((site_rows(fitted.plan, s, data[s][train]) - fitted.means[s]) ** 2))
        precision[s] = PRECISION * max(np.sqrt(spread), 1e-12)
    return Examples(data, test, train, sst, precision)


def squared_errors(fitted, data: Mapping[str, np.ndarray], index: np.ndarray,
                   batch_size: int = 2048) -> dict[str, float]:
    """Per coded site, the summed squared error of ``fitted`` over examples ``index``."""
    sse = {s: 0.0 for s in fitted.sites}
    for start in range(0, len(index), batch_size):
        rows = index[start:start + batch_size]
        preds = fitted.predict(data["inputs"][rows], {s: data[s][rows] for s in fitted.theory.sites})
        for s in sse:
            sse[s] += float(((site_rows(fitted.plan, s, preds[s]) - site_rows(fitted.plan, s, data[s][rows])) ** 2).sum())
    return sse


def values_of(fitted, s: str, n_examples: int) -> int:
    """How many numbers site ``s`` holds over ``n_examples`` examples."""
    return n_examples * int(np.prod(fitted.plan.site_shapes[s]))


def coverage(sse: Mapping[str, float], sst: Mapping[str, float]) -> float:
    """Variance-weighted mean R² over sites = 1 − ΣSSE / ΣSST."""
    total = sum(sst[s] for s in sse)
    return 1.0 - sum(sse.values()) / total if total > 0 else 0.0
