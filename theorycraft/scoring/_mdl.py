"""Minimum description length: bits(theory) + bits(activations | theory), against the same for
the mean-only theory; and the prequential (online) code of Voita & Titov (2020)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from theorycraft.inference.engine import site_rows, train_means

from ._codes import FLOAT_BITS, gaussian_bits
from ._card import MDLScore
from ._fidelity import Examples, batches, squared_errors, values_of
from ._size import Size

PREQUENTIAL_BLOCKS = 7  # blocks of doubling size: the first holds 1/64 of the training examples


def residual_bits(fitted, sse: Mapping[str, float], n_examples: int, precision: Mapping[str, float]) -> float:
    """The activations given the theory's predictions: each site's residual, Gaussian-coded."""
    return sum(gaussian_bits(sse[s], values_of(fitted, s, n_examples), precision[s]) for s in fitted.sites)


def total_bits(fitted, size: Size, examples: Examples, split: str) -> tuple[float, float]:
    """(theory bits, residual bits) of sending ``split``'s activations with the theory. The
    residual is that of the unquantized theory: rounding its parameters costs at most
    R2_TOLERANCE of coverage by construction, and is kept out so that the code does not depend
    on the search's resolution."""
    n = len(examples.index[split])
    return size.bits(split), residual_bits(fitted, size.sse[split], n, examples.precision)


def mdl(fitted, size: Size, baseline_size: Size, examples: Examples) -> MDLScore:
    """The test activations sent two ways: theory + residual, and mean + residual."""
    theory, residual = total_bits(fitted, size, examples, "test")
    base_theory, base_residual = total_bits(fitted.mean_only(), baseline_size, examples, "test")
    total, base_total = theory + residual, base_theory + base_residual
    return MDLScore(round(theory), round(residual), round(total), round(base_total), round(base_total / total, 6),
                    int(len(examples.test)))


def block_edges(n: int, blocks: int = PREQUENTIAL_BLOCKS) -> list[int]:
    """Ends of blocks that double in size: n/2^(b-1), n/2^(b-2), ..., n."""
    return [max(1, math.ceil(n / 2 ** (blocks - 1 - k))) for k in range(blocks)]


def _mean_code(fitted, data, seen: np.ndarray, block: np.ndarray, precision) -> float:
    """A block sent around the mean of the examples before it."""
    bits, means = 0.0, train_means(fitted.plan, data, seen)
    for s in fitted.sites:
        sse = sum(float(((site_rows(fitted.plan, s, data[s][rows]) - means[s]) ** 2).sum())
                  for rows in batches(fitted, block))
        bits += gaussian_bits(sse, values_of(fitted, s, len(block)), precision[s])
    return bits


def prequential(fitted, examples: Examples, refit, blocks: int = PREQUENTIAL_BLOCKS) -> dict:
    """Send the training examples block by block, each coded by the theory fitted on all blocks
    before it (``refit(indices) -> FittedTheory``); the first block is sent as floats. The mean-only
    code of the same blocks is the baseline. A theory that generalises from little data wins."""
    order, data = np.union1d(examples.train, examples.validation), examples.data  # every non-test example
    edges = block_edges(len(order), blocks)
    first = order[:edges[0]]
    head = sum(FLOAT_BITS * values_of(fitted, s, len(first)) for s in fitted.sites)
    bits, base = head, head
    for start, end in zip(edges, edges[1:]):
        seen, block = order[:start], order[start:end]
        model = refit(seen)
        sse = squared_errors(model, data, block)
        bits += residual_bits(fitted, sse, len(block), examples.precision)
        base += _mean_code(fitted, data, seen, block, examples.precision)
    return {"prequential_bits": round(bits), "prequential_baseline_bits": round(base),
            "prequential_compression": round(base / bits, 6), "prequential_blocks": blocks}  # MDLScore fields
