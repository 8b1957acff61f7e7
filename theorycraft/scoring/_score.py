"""The scorecard: fidelity, size, MDL and splice fidelity of one fitted theory, in one place."""

from __future__ import annotations

import json
from pathlib import Path

from theorycraft.errors import FitError

from ._heldout import examples_of
from ._mdl import mdl, prequential as prequential_code
from ._size import measure
from ._splice import splice_scores


def score(fitted, acts, *, target=None, prequential: bool = False, refit=None, limit: int | None = None,
          data=None) -> dict:
    """The fitted theory's scorecard. ``target`` (a runnable model) adds splice fidelity;
    ``prequential`` adds the online code, refitting with ``refit(indices)`` (default: the
    theory's own fit on those examples). ``limit`` caps the test examples (quick benchmarks)."""
    from theorycraft.inference import FitConfig, fit

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


def run_activations(card: dict, run_dir: Path):
    from theorycraft.store import ActivationSet

    directory = card.get("data", {}).get("directory")
    if not directory:
        raise FitError(f"{run_dir}/scorecard.json does not say which activations it was fitted on; "
                       f"rerun theorycraft infer")
    if not Path(directory, "manifest.json").exists():
        raise FitError(f"the activations {run_dir} was fitted on are gone ({directory}); rerun theorycraft infer")
    return ActivationSet(directory)


def score_run(run_dir, *, prequential: bool = False, splice: bool = True, trust_code: bool = False,
              limit: int | None = None) -> dict:
    """Score the artifact in ``run_dir`` and write the result into its scorecard.json."""
    from theorycraft.api import target_of
    from theorycraft.inference import FittedTheory

    run_dir = Path(run_dir)
    fitted = FittedTheory.load(run_dir)
    acts = run_activations(fitted.scorecard, run_dir)
    target = None
    if splice and fitted.theory.target.scheme in ("builtin", "hf", "torch"):
        target = target_of(fitted.theory, trust_code=trust_code)
    card = score(fitted, acts, target=target, prequential=prequential, limit=limit)
    tmp = run_dir / ".scorecard.tmp.json"
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    tmp.replace(run_dir / "scorecard.json")
    return card
