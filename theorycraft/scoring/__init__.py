"""Scoring: what a fitted theory predicts on held-out examples, what it costs in bits, and
how much it compresses the activations. Definitions: DESIGN.md and the README's "Scores".

    score(fitted, acts) -> the scorecard: fidelity (R², coverage), size (params, bits),
                           mdl (two-part code vs mean only; optionally prequential), splice
"""

from __future__ import annotations

from ._codes import entropy_bits, gaussian_bits, spec_bits, subset_bits
from ._heldout import PRECISION, Examples, coverage, examples_of, squared_errors
from ._mdl import block_edges, mdl, prequential, residual_bits
from ._score import score
from ._size import R2_TOLERANCE, Size, measure
from ._splice import splice_scores

__all__ = ["PRECISION", "R2_TOLERANCE", "Examples", "Size", "block_edges", "coverage", "entropy_bits",
           "examples_of", "gaussian_bits", "mdl", "measure", "prequential", "residual_bits", "score",
           "spec_bits", "splice_scores", "squared_errors", "subset_bits"]
