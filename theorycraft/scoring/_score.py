"""The scorecard: fidelity, size, MDL and splice fidelity of one fitted theory, in one place."""

from __future__ import annotations

from theorycraft.inference import FitConfig, fit

from ._heldout import examples_of
from ._mdl import mdl, prequential as prequential_code
from ._size import measure
from ._splice import splice_scores


def score(fitted, acts, *, target=None, prequential: bool = False, refit=None, limit: int | None = None,
          data=None) -> dict:
    """The fitted theory's scorecard. ``target`` (a runnable model) adds splice fidelity;
    ``prequential`` adds the online code, refitting with ``refit(indices)`` (default: the
    theory's own fit on those examples). ``limit`` caps the test examples (quick benchmarks)."""
    examples = examples_of(fitted, acts, data, limit)
    card = fitted.evaluate(acts, examples.data) if not fitted.scorecard else dict(fitted.scorecard)
    size = measure(fitted, examples)
    baseline = measure(fitted.mean_only(), examples)
    card["size"] = {"params": card.get("size", {}).get("params", 0), **size.as_dict()}
    card["mdl"] = mdl(fitted, size, baseline, examples) | {"n_examples": int(len(examples.test))}
    if prequential:
        config = FitConfig(progress=False)
        refit = refit or (lambda index: fit(fitted.theory, acts, config, examples=index, data=examples.data,
                                            evaluate=False))
        card["mdl"].update(prequential_code(fitted, examples, refit))
    if target is not None and hasattr(target, "output"):
        card["splice"] = splice_scores(fitted, target, examples)
    return card
