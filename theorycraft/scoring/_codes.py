"""Code lengths in bits: the building blocks of every size and MDL number.

Each function is the length of an actual (idealised) code a receiver could decode, so the
numbers add up: a theory's bits + the residual's bits is the length of a message that lets a
receiver rebuild the activations to the stated precision.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

FLOAT_BITS = 32  # a real number sent as a float32 (a step size, a variance, an unquantized value)


def spec_bits(text: str) -> int:
    """A theory's canonical claim (``Theory.claim()``), compressed (zlib, level 9): what it costs
    to state the theory's form."""
    return 8 * len(zlib.compress(text.encode("utf-8"), 9))


def elias_gamma_bits(n: np.ndarray | int) -> np.ndarray | int:
    """Elias gamma code of positive integers: 2⌊log₂ n⌋ + 1 bits; needs no table."""
    return 2 * np.floor(np.log2(np.maximum(n, 1))).astype(np.int64) + 1


def entropy_bits(symbols: np.ndarray) -> float:
    """Integers under a static arithmetic code: n × empirical entropy, plus the table a receiver
    needs (each distinct value, zigzagged, and its count, both Elias-gamma coded)."""
    symbols = np.asarray(symbols).reshape(-1)
    if symbols.size == 0:
        return float(elias_gamma_bits(1))
    values, counts = np.unique(symbols, return_counts=True)
    data = float(-(counts * np.log2(counts / symbols.size)).sum())
    zigzag = np.where(values >= 0, 2 * values, -2 * values - 1) + 1
    table = float(elias_gamma_bits(zigzag).sum() + elias_gamma_bits(counts).sum() + elias_gamma_bits(len(values)))
    return data + table


def gaussian_bits(sse: float, count: int, precision: float) -> float:
    """``count`` residuals with total squared error ``sse``, sent to ``precision`` under a
    zero-mean Gaussian of their own variance (itself sent as a float): per value
    ½·log₂(2πe·σ²/precision²) bits, and never below zero (the precision floor: residuals
    smaller than the precision cost nothing beyond σ)."""
    if count == 0:
        return 0.0
    variance = sse / count
    per_value = 0.5 * math.log2(2 * math.pi * math.e * variance / precision ** 2) if variance > 0 else 0.0
    return FLOAT_BITS + count * max(per_value, 0.0)


def subset_bits(width: int, active: np.ndarray) -> float:
    """Which latents are active in each row: the count (Elias gamma) and the subset among
    ``width`` (log₂ C(width, k) bits), as in MDL-SAEs."""
    active = np.asarray(active, np.int64)
    log_choose = (math.lgamma(width + 1) - np.vectorize(math.lgamma)(active + 1)
                  - np.vectorize(math.lgamma)(width - active + 1)) / math.log(2)
    return float(np.sum(log_choose) + np.sum(elias_gamma_bits(active + 1)))
