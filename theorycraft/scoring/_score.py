"""The scorecard of one fitted theory: fidelity per split, size, MDL, splice and counterfactual
fidelity, and coverage on a shifted distribution."""

from __future__ import annotations

import dataclasses

import numpy as np

from theorycraft.errors import FitError
from theorycraft.inference.engine import FitConfig, allsum, count_params, fit, load_examples

from ._axioms import Lab
from ._counterfactual import counterfactual_fidelity
from ._card import Scorecard, ShiftScore, SiteScore, SizeScore
from ._fidelity import (SPLITS, Examples, coverage, examples_of, r2, spreads, squared_errors, summed,
                        unexplained_inputs)
from ._intervals import r2_intervals, rounded
from ._mdl import mdl, prequential as prequential_code
from ._size import measure
from ._splice import splice_scores


COUNTERFACTUAL_EXAMPLES = 256  # held-out examples each standard intervention runs on


def fidelity(fitted, examples: Examples) -> Scorecard:
    """R² of every covered site on each split, and coverage on validation and test, teacher-forced
    and free-running: the scorecard before bits (what ``infer`` prints). The headline coverage is
    over every site the theory names, a declared input counting as unexplained (R² 0; not the
    network's own input, which every theory is given); the figure given its inputs stands beside
    it. Test figures carry 95% bootstrap intervals over the test examples. On several processes
    each scores its own examples, and the squared errors are summed (gathered) across them."""
    data, test = examples.data, examples.own["test"]
    sse = {split: summed(squared_errors(fitted, data, examples.own[split])) for split in ("train", "validation")}
    per_example = {"sse": squared_errors(fitted, data, test, per_example=True)}
    if runs_free_as_forced(fitted):  # the same predictions: not computed twice
        free, per_example["free"] = {"validation": dict(sse["validation"])}, per_example["sse"]
    else:
        free = {"validation": summed(squared_errors(fitted, data, examples.own["validation"], free=True))}
        per_example["free"] = squared_errors(fitted, data, test, free=True, per_example=True)
    unexplained = unexplained_inputs(fitted, data)
    per_example["sst"] = {**spreads(fitted, data, test, per_example=True),
                          **spreads(fitted, data, test, sites=unexplained, per_example=True)}
    per_example = {k: gathered(v, test, examples.index["test"]) for k, v in per_example.items()}
    sse["test"], free["test"] = ({s: float(v.sum()) for s, v in per_example[k].items()} for k in ("sse", "free"))
    sst = {**examples.sst, "test": {s: float(v.sum()) for s, v in per_example["sst"].items()}}
    validation_sst = {**sst["validation"], **summed(spreads(fitted, data, examples.own["validation"], sites=unexplained))}
    intervals = held_out_intervals(per_example, unexplained)
    sites = {s: SiteScore(*(round(r2(sse[split][s], sst[split][s]), 6) for split in SPLITS),
                          *(int(len(examples.index[split])) for split in SPLITS),
                          *(round(r2(free[split][s], sst[split][s]), 6) for split in ("validation", "test")),
                          intervals[s, "sse"], intervals[s, "free"])
             for s in fitted.sites}
    theory = fitted.theory
    return Scorecard(theory.name, str(theory.target), theory.covered, theory.inputs, sites,
                     round(coverage(sse["test"], sst["test"], unexplained), 6),
                     round(coverage(sse["validation"], validation_sst, unexplained), 6),
                     round(coverage(free["test"], sst["test"], unexplained), 6),
                     round(coverage(free["validation"], validation_sst, unexplained), 6),
                     SizeScore(count_params(fitted.params)), fit=fitted.fit_info, unexplained=unexplained,
                     coverage_given=round(coverage(sse["test"], sst["test"]), 6),
                     coverage_free_given=round(coverage(free["test"], sst["test"]), 6),
                     coverage_interval=intervals["coverage", "sse"], coverage_free_interval=intervals["coverage", "free"])


def runs_free_as_forced(fitted) -> bool:
    """Whether free-running predictions are the teacher-forced ones: no covered site's prediction
    reads another site than a declared input (which both modes read recorded; an autoencoder's
    own site is recorded in both too)."""
    theory = fitted.theory
    return set().union(*(theory.site_reads(s) for s in fitted.sites)) <= set(theory.inputs)


def gathered(values: dict[str, np.ndarray], own: np.ndarray, index: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example arrays over this process's examples ``own`` -> over every example of ``index``
    (each process fills its own places; the sum over processes fills them all)."""
    if len(own) == len(index):
        return values
    places = np.searchsorted(index, own) if np.all(np.diff(index) > 0) else \
        np.array([int(np.flatnonzero(index == k)[0]) for k in own], np.int64)
    out = {}
    for s, v in values.items():
        full = np.zeros(len(index))
        full[places] = v
        out[s] = allsum(full)
    return out


def held_out_intervals(per_example: dict, unexplained: tuple[str, ...]) -> dict:
    """95% bootstrap intervals over the test examples of each covered site's R² and of coverage,
    teacher-forced ("sse") and free-running ("free"): {(site or "coverage", way): (low, high)}.
    ``per_example["sst"]`` holds the covered sites and the ``unexplained`` inputs."""
    sst = per_example["sst"]
    covered = list(per_example["sse"])
    n = len(next(iter(sst.values()), ()))
    columns, spreads_, names = [], [], []
    for way in ("sse", "free"):  # one call: both ways resample the same draws of the test examples
        errors = {**per_example[way], **{s: sst[s] for s in unexplained}}  # an input: its SSE is its SST
        columns += [errors[s] for s in covered] + [sum(errors.values(), np.zeros(n))]
        spreads_ += [sst[s] for s in covered] + [sum(sst.values(), np.zeros(n))]
        names += [(name, way) for name in [*covered, "coverage"]]
    bounds = r2_intervals(np.stack(columns, 1), np.stack(spreads_, 1))
    return {name: rounded(b) for name, b in zip(names, bounds)}


def score(fitted, acts, *, target=None, bits: bool = True, prequential: bool = False, refit=None,
          limit: int | None = None, data=None, interventions_over=None, max_memory: int | None = None) -> Scorecard:
    """The fitted theory's scorecard: the one scorer of every fidelity figure.

    Parameters
    ----------
    fitted : FittedTheory
        The theory and its parameters.
    acts : ActivationSet
        The capture it was fitted on (its splits are fixed per capture).
    target : Target or model, optional
        A runnable model: adds splice and counterfactual fidelity. A model object (TransformerLens,
        nnsight, any ``nn.Module``; a ``UserModel`` to say what its output is) runs on ``acts``' inputs.
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
    if target is not None:  # a model object (TransformerLens, nnsight, nn.Module) is run on the capture's inputs
        from theorycraft.targets import as_target
        target = as_target(target, dataset=acts.inputs())
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


def score_shifted(fitted, acts, fitted_on, target=None) -> ShiftScore:
    """Coverage of ``fitted`` on ``acts``, a capture of its sites on a shifted distribution: over
    that capture's test examples whose input is none of those ``fitted_on`` (the capture it was
    fitted on) holds outside its test split, so a theory cannot score by recalling what it was
    fitted on; SST around the theory's own train means, as on every split. With the ``target``,
    the theory is spliced in on those examples too (as ``score`` does in distribution)."""
    seen = {row.tobytes() for row in np.asarray(fitted_on.inputs())[~fitted_on.is_test]}
    inputs = np.asarray(acts.inputs()).astype(np.asarray(fitted_on.inputs()).dtype)
    test = np.array([k for k in acts.split("test") if inputs[k].tobytes() not in seen], dtype=np.int64)
    if not len(test):
        raise FitError(f"no test example of the shifted capture {acts.directory} is new to the fit (every one is an "
                       f"input it was fitted on); capture more examples of the shift (--n)")
    data = load_examples(fitted.theory, acts)
    unexplained = unexplained_inputs(fitted, data)  # counted at R² 0, as in the headline
    sse, sst = squared_errors(fitted, data, test), {**spreads(fitted, data, test),
                                                    **spreads(fitted, data, test, sites=unexplained)}
    splice = splice_scores(fitted, target, Examples(data, {"test": test}, {"test": test}, {}, {})) if target else {}
    return ShiftScore(round(coverage(sse, sst, unexplained), 6),
                      round(coverage(squared_errors(fitted, data, test, free=True), sst, unexplained), 6),
                      int(len(test)), {s: round(r2(sse[s], sst[s]), 6) for s in fitted.sites}, splice)
