"""Scoring: the one scorer. What a fitted theory predicts on each split, what it costs in bits,
and how much it compresses the activations. Definitions: DESIGN.md and the README's "Scores".

    score(fitted, acts) -> Scorecard: fidelity (R² per split, coverage), size (params, bits),
                           mdl (two-part code vs mean only; optionally prequential), splice,
                           counterfactual fidelity (the theory under standard interventions)
    check_axioms(Lab(fitted, target, ...)) -> [AxiomResult]: the theory's axioms, on the network

Train examples are fitted, validation examples make every choice (the quantization step here),
test examples are only reported on.
"""

from __future__ import annotations

from ._axioms import AxiomResult, Lab, check_axioms, counterfactual_fidelity
from ._card import CounterfactualScore, MDLScore, Scorecard, SiteScore, SizeScore, SpliceScore
from ._codes import entropy_bits, gaussian_bits, spec_bits, subset_bits
from ._fidelity import PRECISION, Examples, coverage, examples_of, r2, spreads, squared_errors
from ._mdl import block_edges, mdl, prequential, residual_bits, total_bits
from ._score import fidelity, score
from ._size import R2_TOLERANCE, Size, measure
from ._splice import splice_scores

__all__ = ["AxiomResult", "CounterfactualScore", "Lab", "check_axioms", "counterfactual_fidelity", "MDLScore", "PRECISION", "R2_TOLERANCE", "Examples", "Scorecard", "SiteScore", "Size", "SizeScore",
           "SpliceScore", "block_edges", "coverage", "entropy_bits", "examples_of", "fidelity", "gaussian_bits", "mdl",
           "measure", "prequential", "r2", "residual_bits", "score", "spec_bits", "splice_scores", "spreads", "squared_errors",
           "subset_bits", "total_bits"]
