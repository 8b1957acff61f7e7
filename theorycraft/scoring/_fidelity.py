"""Fidelity: the one place where a theory's predictions meet the activations. Every R², coverage
and residual in the project is computed here, on one split at a time.

Splits are fixed per capture (``ActivationSet.split``): *train* examples are fitted, every choice
(ridge strength, early stopping, quantization step, search steps) is made on *validation*, and
*test* is only ever reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from theorycraft.inference.engine import RESIDENT_BYTES, allsum, batches as site_batches, load_examples, own as own_examples, site_rows

PRECISION = 0.01  # residuals are coded to 1% of their site's standard deviation (on the non-test examples)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Examples:
    """A fitted theory's data (memory-mapped), the indices of each split, and per covered site its
    spread around the train mean (per split) and the precision its residuals are coded to."""

    data: Mapping[str, np.ndarray]  # inputs and every site, positions selected: read from the shards where indexed
    index: Mapping[str, np.ndarray]  # split -> example indices
    own: Mapping[str, np.ndarray]  # split -> those of this process's shards (all, on one process)
    sst: Mapping[str, Mapping[str, float]]  # split -> site -> Σ (y − train mean)²
    precision: Mapping[str, float]

    @property
    def train(self) -> np.ndarray:
        return self.index["train"]

    @property
    def validation(self) -> np.ndarray:
        return self.index["validation"]

    @property
    def test(self) -> np.ndarray:
        return self.index["test"]


def examples_of(fitted, acts, data: Mapping[str, np.ndarray] | None = None, limit: int | None = None) -> Examples:
    """``limit`` caps the validation and test examples (the first ones; the store is shuffled once).
    On several processes each reads only its own shards: the spreads are summed across them."""
    data = data if data is not None else load_examples(fitted.theory, acts)
    index = {split: acts.split(split) for split in SPLITS}
    if limit:
        index |= {split: index[split][:limit] for split in ("validation", "test")}
    own = {split: own_examples(acts, rows) for split, rows in index.items()}
    sst = {split: summed(spreads(fitted, data, rows)) for split, rows in own.items()}
    seen = np.flatnonzero(~acts.is_test)
    if not limit and len(index["train"]) + len(index["validation"]) == len(seen):  # seen = train + validation
        seen_sst = {s: sst["train"][s] + sst["validation"][s] for s in sst["train"]}
    else:
        seen_sst = summed(spreads(fitted, data, own_examples(acts, seen)))
    precision = {s: PRECISION * max(np.sqrt(v / values_of(fitted, s, len(seen))), 1e-12) for s, v in seen_sst.items()}
    return Examples(data, index, own, sst, precision)


def summed(values: Mapping[str, float]) -> dict[str, float]:
    """Per-site sums over this process's examples -> over every process's (as is, on one)."""
    totals = allsum(np.array(list(values.values()), np.float64))
    return {s: float(v) for s, v in zip(values, totals)}


def batches(fitted, index: np.ndarray) -> list[np.ndarray]:
    """``index`` in pieces of at most 4 x ``ROWS`` rows over all the theory's sites together, so
    a batch's recorded sites and predictions stay bounded however many sites there are."""
    return site_batches(fitted.plan.site_shapes, index, 4)


def spreads(fitted, data: Mapping[str, np.ndarray], index: np.ndarray, *, sites=None,
            per_example: bool = False) -> dict:
    """Per covered site (or per site of ``sites``), Σ (y − train mean)² over examples ``index``:
    the SST of R²; ``per_example``: each example's sum, an array over ``index``."""
    parts = {s: [] for s in (fitted.sites if sites is None else sites)}
    for rows in batches(fitted, index):
        for s in parts:
            parts[s].append(_per_example((site_rows(fitted.plan, s, data[s][rows]) - fitted.means[s]) ** 2, len(rows)))
    return _totals(parts, per_example)


def _per_example(squares: np.ndarray, n: int) -> np.ndarray:
    """A batch's squares in a site's rows (example-major) -> their sum per example, in float64."""
    return squares.reshape(n, -1).sum(1, dtype=np.float64)


def _totals(parts: Mapping[str, list], per_example: bool) -> dict:
    if per_example:
        return {s: np.concatenate(v) if v else np.zeros(0) for s, v in parts.items()}
    return {s: float(sum(float(a.sum()) for a in v)) for s, v in parts.items()}


@dataclass
class Kept:
    """One split's batches as the models of one plan read them teacher-forced (targets, and what
    each site's predictors are given), kept across calls while they fit in ``budget`` bytes: a
    quantization search scores one theory at a dozen steps, and rules over positions cost more
    to evaluate than the prediction."""

    budget: int = RESIDENT_BYTES
    batches: dict = field(default_factory=dict)  # batch number -> (targets, given)
    held: int = 0  # bytes

    def keep(self, b: int, targets: dict, given: dict) -> None:
        size = sum(np.asarray(v).nbytes for v in targets.values())
        size += sum(np.asarray(v).nbytes for fixed in given.values() for v in fixed.values())
        if self.held + size <= self.budget:
            self.batches[b] = (targets, given)
            self.held += size


def squared_errors(fitted, data: Mapping[str, np.ndarray], index: np.ndarray, *,
                   free: bool = False, kept: Kept | None = None, per_example: bool = False) -> dict:
    """Per covered site, the summed squared error of ``fitted`` over examples ``index`` (a site it
    does not predict is predicted by its training mean), teacher-forced (every site a component
    reads is the recorded one) or ``free`` (the theory's own prediction of it, from the input).
    Batch by batch (``batches``), read from the shards. ``kept`` (teacher-forced, for models of one
    plan over one ``index``): batches read before are taken from it, and new ones kept in it.
    ``per_example``: each example's sum, an array over ``index`` (what intervals resample)."""
    sse = {s: [] for s in fitted.sites}
    for b, rows in enumerate(batches(fitted, index)):
        if not free and kept is not None and b in kept.batches:
            targets, given = kept.batches[b]
        else:
            recorded = {s: data[s][rows] for s in fitted.theory.sites}
            targets = {s: site_rows(fitted.plan, s, recorded[s]) for s in sse}
            given = None if free else fitted.given(data["inputs"][rows], recorded)
            if kept is not None and not free:
                kept.keep(b, targets, given)
        preds = (fitted.predict(data["inputs"][rows], recorded, free=True) if free else
                 fitted.predict_given(given, len(rows)))
        for s in sse:
            sse[s].append(_per_example((site_rows(fitted.plan, s, preds[s]) - targets[s]) ** 2, len(rows)))
    return _totals(sse, per_example)


def unexplained_inputs(fitted, data: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The declared inputs the headline coverage counts as unexplained (R² 0): every recorded
    site the theory is handed, except one that holds exactly the network's input (a vector
    input's hook), which every theory is given and none could explain."""
    return tuple(s for s in fitted.theory.inputs if not is_network_input(fitted, data, s))


def is_network_input(fitted, data: Mapping[str, np.ndarray], s: str) -> bool:
    """Does site ``s`` hold exactly the network's input, on every example?"""
    every = np.arange(len(data["inputs"]))
    return np.shape(data[s]) == np.shape(data["inputs"]) and all(
        np.array_equal(data[s][rows], data["inputs"][rows]) for rows in batches(fitted, every))


def values_of(fitted, s: str, n_examples: int) -> int:
    """How many numbers site ``s`` holds over ``n_examples`` examples."""
    return n_examples * int(np.prod(fitted.plan.site_shapes[s]))


def coverage(sse: Mapping[str, float], sst: Mapping[str, float], unexplained=()) -> float:
    """Variance-weighted mean R² over the sites of ``sse`` = 1 − ΣSSE / ΣSST; each site of
    ``unexplained`` (a declared input) counts too, at R² 0 (its SSE is its SST)."""
    total = sum(sst[s] for s in (*sse, *unexplained))
    missed = sum(sse.values()) + sum(sst[s] for s in unexplained)
    return 1.0 - missed / total if total > 0 else 0.0


def r2(sse: float, sst: float) -> float:
    """1 − SSE/SST, pooled over a site's dimensions, SST around the *train* mean."""
    return 1.0 - sse / sst if sst > 0 else 0.0
