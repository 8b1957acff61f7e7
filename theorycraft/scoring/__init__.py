"""Scoring: the one scorer. What a fitted theory predicts on each split, what it costs in bits,
and how much it compresses the activations. Definitions: docs/design.md and docs/scores.md.

    score(fitted, acts) -> Scorecard: fidelity (R² per split; coverage over every named site, a
                           declared input at R² 0, beside the figure given the inputs; 95% bootstrap
                           intervals over test examples), size (params, bits),
                           mdl (two-part code vs mean only; optionally prequential), splice,
                           counterfactual fidelity (the theory under standard interventions)
    score_shifted(fitted, shifted_acts, acts) -> ShiftScore: coverage on a shifted capture (its unseen test examples)
    check_axioms(Lab(fitted, target, ...)) -> [AxiomResult]: the theory's axioms, on the network

Train examples are fitted, validation examples make every choice (the quantization step here),
test examples are only reported on.
"""

from __future__ import annotations

from ._axioms import CHECK_EXAMPLES, COLUMNS as AXIOM_COLUMNS, TRAIN_EXAMPLES, AxiomResult, Lab, check_axioms
from ._card import (CounterfactualScore, MDLScore, Scorecard, ShiftScore, SiteScore, SizeScore, SpliceScore,
                    interval_text, scorecard_html, splice_figure)
from ._intervals import ratio_intervals
from ._counterfactual import counterfactual_fidelity
from ._codes import entropy_bits, gaussian_bits, spec_bits, subset_bits
from ._fidelity import PRECISION, Examples, coverage, examples_of, r2, spreads, squared_errors
from ._mdl import block_edges, mdl, prequential, residual_bits, total_bits
from ._score import fidelity, score, score_shifted
from ._size import R2_TOLERANCE, Size, measure, unclaimed_heads
from ._splice import splice_scores

__all__ = ["AXIOM_COLUMNS", "AxiomResult", "CHECK_EXAMPLES", "TRAIN_EXAMPLES", "CounterfactualScore", "Lab", "MDLScore", "PRECISION", "R2_TOLERANCE", "Examples",
           "Scorecard", "ShiftScore", "SiteScore", "Size", "SizeScore", "SpliceScore", "block_edges",
           "check_axioms", "counterfactual_fidelity", "coverage", "entropy_bits", "examples_of", "fidelity",
           "gaussian_bits", "interval_text", "mdl", "measure", "prequential", "r2", "ratio_intervals", "residual_bits", "score", "score_shifted",
           "scorecard_html", "spec_bits", "splice_figure", "splice_scores", "spreads", "squared_errors", "subset_bits", "total_bits",
           "unclaimed_heads"]
