"""The scorecard of one fitted theory: fidelity per split, size, MDL, splice and counterfactual
fidelity, and coverage on a shifted distribution."""

from __future__ import annotations

import dataclasses

import numpy as np

from theorycraft.errors import FitError
from theorycraft.inference.engine import FitConfig, count_params, fit, load_examples

from ._axioms import Lab
from ._counterfactual import counterfactual_fidelity
from ._card import Scorecard, ShiftScore, SiteScore, SizeScore
from ._fidelity import SPLITS, Examples, coverage, examples_of, r2, spreads, squared_errors, summed
from ._mdl import mdl, prequential as prequential_code
from ._size import measure
from ._splice import splice_scores


COUNTERFACTUAL_EXAMPLES = 256  # held-out examples each standard intervention runs on


def fidelity(fitted, examples: Examples) -> Scorecard:
    """R² of every covered site on each split, and coverage on validation and test, teacher-forced
    and free-running: the scorecard before bits (what ``infer`` prints). On several processes each
    scores its own examples, and the squared errors are summed across them."""
    sse = {split: summed(squared_errors(fitted, examples.data, examples.own[split])) for split in SPLITS}
    free = {split: summed(squared_errors(fitted, examples.data, examples.own[split], free=True))
            for split in ("validation", "test")}
    sst = examples.sst
    sites = {s: SiteScore(*(round(r2(sse[split][s], sst[split][s]), 6) for split in SPLITS),
                          *(int(len(examples.index[split])) for split in SPLITS),
                          *(round(r2(free[split][s], sst[split][s]), 6) for split in ("validation", "test")))
             for s in fitted.sites}
    theory = fitted.theory
    return Scorecard(theory.name, str(theory.target), theory.covered, theory.inputs, sites,
                     round(coverage(sse["test"], sst["test"]), 6), round(coverage(sse["validation"], sst["validation"]), 6),
                     round(coverage(free["test"], sst["test"]), 6),
                     round(coverage(free["validation"], sst["validation"]), 6),
                     SizeScore(count_params(fitted.params)), fit=fitted.fit_info)


def score(fitted, acts, *, target=None, bits: bool = True, prequential: bool = False, refit=None,
          limit: int | None = None, data=None, interventions_over=None, max_memory: int | None = None) -> Scorecard:
    """The fitted theory's scorecard: the one scorer of every fidelity figure.

    Parameters
    ----------
    fitted : FittedTheory
        The theory and its parameters.
    acts : ActivationSet
        The capture it was fitted on (its splits are fixed per capture).
    target : Target, optional
        A runnable model: adds splice and counterfactual fidelity.
    bits : bool
        Add size (bits) and MDL.
    prequential : bool
        Add the online code, refitting with ``refit``.
    refit : callable, optional
        ``refit(indices) -> FittedTheory``; default the theory's own fit on those examples.
    limit : int, optional
        Caps the validation and test examples (quick benchmarks).
    data : dict, optional
        The examples already loaded from ``acts`` (saves reading them again).
    interventions_over : dict of str to Site, optional
        Sites whose standard interventions the counterfactual fidelity uses; default the theory's
        own (a benchmark passes its reference's, so every theory of a target faces the same ones).
    max_memory : int, optional
        Bounds the prequential refits.

    Returns
    -------
    Scorecard
        Fidelity on every split, and what ``bits``, ``target`` and ``prequential`` add.
    """
    examples = examples_of(fitted, acts, data, limit)
    card = fidelity(fitted, examples)
    if bits or prequential:  # the online code is a part of the MDL record
        size = measure(fitted, examples)
        card = card.replace(size=size.score(card.size.params, examples),
                            mdl=mdl(fitted, size, measure(fitted.mean_only(), examples), examples))
    if prequential:
        mode = fitted.fit_info.get("mode", "stagewise")  # refit as the theory was fitted
        refit = refit or (lambda index: fit(fitted.theory, acts, FitConfig(progress=False, mode=mode,
                                                                                  max_memory=max_memory), examples=index,
                                            data=examples.data))
        extra = prequential_code(fitted, examples, refit)
        card = card.replace(mdl=dataclasses.replace(card.mdl, **extra))
    if target is not None and hasattr(target, "output"):
        card = card.replace(splice=splice_scores(fitted, target, examples))
    if target is not None and hasattr(target, "intervene") and fitted.theory.site_order()[0]:
        inputs = examples.data["inputs"]
        lab = Lab(fitted, target, inputs[examples.test[:COUNTERFACTUAL_EXAMPLES]],
                  inputs[examples.train[:COUNTERFACTUAL_EXAMPLES]])
        card = card.replace(counterfactual=counterfactual_fidelity(lab, interventions_over))
    return card


def score_shifted(fitted, acts, fitted_on) -> ShiftScore:
    """Coverage of ``fitted`` on ``acts``, a capture of its sites on a shifted distribution: over
    that capture's test examples whose input is none of those ``fitted_on`` (the capture it was
    fitted on) holds outside its test split, so a theory cannot score by recalling what it was
    fitted on; SST around the theory's own train means, as on every split."""
    seen = {row.tobytes() for row in np.asarray(fitted_on.inputs())[~fitted_on.is_test]}
    inputs = np.asarray(acts.inputs()).astype(np.asarray(fitted_on.inputs()).dtype)
    test = np.array([k for k in acts.split("test") if inputs[k].tobytes() not in seen], dtype=np.int64)
    if not len(test):
        raise FitError(f"no test example of the shifted capture {acts.directory} is new to the fit (every one is an "
                       f"input it was fitted on); capture more examples of the shift (--n)")
    data = load_examples(fitted.theory, acts)
    sse, sst = squared_errors(fitted, data, test), spreads(fitted, data, test)
    return ShiftScore(round(coverage(sse, sst), 6), round(coverage(squared_errors(fitted, data, test, free=True), sst), 6),
                      int(len(test)), {s: round(r2(sse[s], sst[s]), 6) for s in fitted.sites})
