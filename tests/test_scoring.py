"""Scores on cases that can be worked out by hand: code lengths, the precision floor, the
mean-only baseline, the quantization tolerance, latent codes, the prequential code, splicing."""

import math
import zlib

import numpy as np
import pytest

from theorycraft.inference import FitConfig, fit
from theorycraft.scoring import (PRECISION, R2_TOLERANCE, block_edges, coverage, entropy_bits, examples_of, gaussian_bits,
                                 measure, score, spec_bits, splice_scores, subset_bits)
from theorycraft.scoring._codes import FLOAT_BITS
from theorycraft.scoring._size import coarsest_scale

from conftest import captured, recorded_target, theory_for

QUIET = FitConfig(progress=False, max_steps=300)


# --- code lengths ---------------------------------------------------------------------------------

def test_gaussian_code_by_hand():
    # σ² = 4, precision 0.5: ½·log₂(2πe·16) bits per value, plus σ sent as a float
    per_value = 0.5 * math.log2(2 * math.pi * math.e * 4 / 0.25)
    assert gaussian_bits(4.0 * 100, 100, 0.5) == pytest.approx(FLOAT_BITS + 100 * per_value)
    # doubling σ costs exactly one more bit per value
    assert gaussian_bits(16.0 * 100, 100, 0.5) - gaussian_bits(4.0 * 100, 100, 0.5) == pytest.approx(100)
    # the precision floor: residuals at or below the precision cost nothing but σ
    assert gaussian_bits(0.0, 1000, 0.1) == FLOAT_BITS
    assert gaussian_bits(1e-6 * 1000, 1000, 0.1) == FLOAT_BITS


def test_entropy_code_by_hand():
    # no data bits, only the table: value 0 (gamma(1) = 1 bit), count 1000 (19 bits), one entry (1 bit)
    assert entropy_bits(np.zeros(1000, int)) == 1 + 19 + 1
    # one bit per symbol, and the table: values 0, 1 (1 + 3 bits), counts 500, 500 (17 + 17), two entries (3)
    assert entropy_bits(np.array([0, 1] * 500)) == pytest.approx(1000 + 4 + 34 + 3)
    assert entropy_bits(np.arange(1000)) > 1000 * math.log2(1000)  # all distinct: log₂ n each, plus the table


def test_subset_and_spec_codes():
    assert subset_bits(4, np.array([2])) == pytest.approx(math.log2(6) + 3)  # C(4, 2) = 6; gamma(3) = 3 bits
    assert subset_bits(8, np.array([0, 0])) == pytest.approx(2.0)  # gamma(1) = 1 bit per empty row
    text = "theory: t\ntarget: builtin:induction\n"
    assert spec_bits(text) == 8 * len(zlib.compress(text.encode(), 9))


def test_the_coarsest_step_is_found_by_bisection():
    found = coarsest_scale(lambda step: step <= 0.3)
    assert 0.3 * 2 ** -0.006 < found <= 0.3  # 22 octaves in 12 halvings: 0.0054 octaves
    assert coarsest_scale(lambda step: True) == 4.0
    assert coarsest_scale(lambda step: False) is None


def test_prequential_blocks_double():
    edges = block_edges(6400, 7)
    assert edges == [100, 200, 400, 800, 1600, 3200, 6400]


# --- scores of fitted theories --------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scoring")
    directory = recorded_target(tmp)
    return tmp, directory


def _fitted(synthetic, components, sites="x: x, y: y, z: z"):
    tmp, directory = synthetic
    theory = theory_for(directory, components, sites=sites)
    acts = captured(tmp, theory)
    return fit(theory, acts, QUIET), acts


def test_a_perfect_theory_has_r2_one_and_residual_at_the_precision_floor(synthetic):
    fitted, acts = _fitted(synthetic, "table: {kind: lookup, of: a, size: 7, predicts: u}\n", "u: u")
    card = score(fitted, acts)
    assert card.sites["u"].r2_test == pytest.approx(1.0, abs=1e-6)
    assert card.mdl.bits_residual == FLOAT_BITS  # one site: only its σ is sent
    assert card.mdl.bits_total == card.mdl.bits_theory + FLOAT_BITS
    assert card.mdl.compression > 2
    # the step is chosen on validation; on test, rounding may cost a little more than the tolerance
    assert card.coverage - 2 * R2_TOLERANCE <= card.size.coverage_quantized < card.coverage


def test_the_mean_only_theory_has_compression_one_and_its_residual_by_hand(synthetic):
    fitted, acts = _fitted(synthetic, "lin: {kind: linear, from: x, predicts: y}\n", "x: x, y: y")
    baseline = fitted.mean_only()
    card = score(baseline, acts)
    assert card.covered == ("y",) and card.mdl.compression == pytest.approx(1.0)
    assert card.coverage < 0.02  # the mean explains nothing on test
    examples = examples_of(baseline, acts)
    y = acts.site("y")
    sse = float(((y[acts.is_test] - baseline.means["y"]) ** 2).sum())
    train_sd = float(np.sqrt(((y[~acts.is_test] - baseline.means["y"]) ** 2).mean()))
    assert examples.precision["y"] == pytest.approx(PRECISION * train_sd, rel=1e-5)
    expected = gaussian_bits(sse, int(acts.is_test.sum()) * 4, PRECISION * train_sd)
    assert card.mdl.bits_residual == pytest.approx(expected, abs=1)
    # a theory that predicts a site from the input compresses it
    tables, table_acts = _fitted(synthetic, "t: {kind: lookup, of: a, size: 7, predicts: u}\n", "u: u")
    assert score(tables, table_acts).mdl.compression > 1.5
    # a mechanism is given its input site, and pays for it: y from x costs x's bits
    mechanism = score(fitted, acts)
    assert mechanism.inputs == ("x",) and mechanism.size.bits_inputs > mechanism.size.bits_params


@pytest.mark.parametrize("components", [
    "lin: {kind: linear, from: x, predicts: y}\n",
    "waves: {kind: fourier, of: [a, b], modulus: 7, frequencies: [1, 2, 3]}\nread: {kind: linear, from: waves, predicts: z}\n",
    "sae: {kind: dictionary, from: y, width: 12, k: 3, predicts: y}\n",
])
def test_quantization_never_costs_more_than_the_tolerance(synthetic, components):
    fitted, acts = _fitted(synthetic, components)
    examples = examples_of(fitted, acts)
    strict, loose = measure(fitted, examples), measure(fitted, examples, tolerance=0.05)

    def validation_cost(size):  # coverage lost to quantization on validation, where the step is chosen
        return coverage(size.sse["validation"], examples.sst["validation"]) - coverage(
            size.sse_sent["validation"], examples.sst["validation"])
    assert validation_cost(strict) <= R2_TOLERANCE + 1e-9 and validation_cost(loose) <= 0.05 + 1e-9
    assert strict.scale is not None and loose.scale >= strict.scale  # a looser budget: a coarser grid ...
    assert loose.params <= strict.params  # ... and fewer bits
    assert strict.params < FLOAT_BITS * sum(np.size(v) for p in fitted.params.values() for v in p.values())


def test_kept_batches_score_other_parameters_of_the_plan_as_a_fresh_read_does(synthetic):
    from theorycraft.scoring._fidelity import Kept, squared_errors

    fitted, acts = _fitted(synthetic, "waves: {kind: fourier, of: [a, b], modulus: 7, frequencies: [1, 2]}\n"
                                      "read: {kind: linear, from: waves, predicts: z}\n")
    examples = examples_of(fitted, acts)
    other = fitted.replace(params={"read": {k: v * 0.5 for k, v in fitted.params["read"].items()}})
    kept = Kept()
    for model in (fitted, other, fitted):  # the first call reads and keeps, the others take what it kept
        assert squared_errors(model, examples.data, examples.validation, kept=kept) == pytest.approx(
            squared_errors(model, examples.data, examples.validation), rel=1e-6)
    assert kept.batches and kept.held > 0
    assert squared_errors(other, examples.data, examples.validation)["z"] > squared_errors(
        fitted, examples.data, examples.validation)["z"]  # the kept inputs did not hide the parameters
    full = Kept(budget=0)  # nothing fits: every call reads afresh
    squared_errors(fitted, examples.data, examples.validation, kept=full)
    assert not full.batches and full.held == 0


def test_dictionary_latent_codes_are_paid_per_example(synthetic):
    sparse, acts = _fitted(synthetic, "sae: {kind: dictionary, from: y, width: 16, k: 1, predicts: y}\n")
    dense, _ = _fitted(synthetic, "sae: {kind: dictionary, from: y, width: 16, k: 4, predicts: y}\n")
    examples = examples_of(sparse, acts)
    s, d = measure(sparse, examples), measure(dense, examples)
    n_test = len(examples.test)
    assert s.latents["test"] > n_test * math.log2(16)  # at least which latent, per example
    assert d.latents["test"] > s.latents["test"]  # four active latents cost more than one
    halved = measure(sparse, examples_of(sparse, acts, limit=n_test // 2))
    assert halved.latents["test"] < s.latents["test"]  # per example


def test_the_step_search_holds_one_theory_as_sent_not_one_per_step(synthetic, monkeypatch):
    """Each step tried builds the parameters as sent (a copy of every table); the search keeps
    the last one within tolerance and drops the rest, so its memory does not grow with the steps.
    The one it keeps is the theory quantized at the step it reports."""
    import gc
    import weakref

    import jax

    from theorycraft.scoring import _size

    fitted, acts = _fitted(synthetic, "t: {kind: lookup, of: a, size: 7, predicts: u}\n", "u: u")
    examples = examples_of(fitted, acts)
    built, alive, join = [], [], _size.join_tables

    def tracked(fitted_, sent):  # every copy of the parameters the search makes, by weak reference
        params = join(fitted_, sent)
        built.append([weakref.ref(leaf) for leaf in jax.tree_util.tree_leaves(params)])
        return params

    def errors(model, *args, **kwargs):  # while the sixth step is judged: how many copies are still held
        if len(built) == 6 and not alive:
            gc.collect()  # (what only a collection would free is not held by the search)
            alive.append(sum(any(r() is not None for r in refs) for refs in built))
        return squared_errors(model, *args, **kwargs)

    squared_errors = _size.squared_errors
    monkeypatch.setattr(_size, "join_tables", tracked)
    monkeypatch.setattr(_size, "squared_errors", errors)
    size = _size.measure(fitted, examples)
    assert len(built) > 6 and size.scale is not None  # a bisection of several steps ...
    assert alive == [1] or alive == [2]  # ... holding the best step so far and the one being judged
    monkeypatch.undo()
    q, _ = _size._quantize_tree({"params": _size.split_tables(fitted), "means": _size.paid_means(fitted)}, size.scale)
    again = _size.join_tables(fitted, q["params"])
    for name, params in again.items():
        for key, value in params.items():
            np.testing.assert_array_equal(size.quantized.params[name][key], value)


# --- bits measure the claim, not its prose -------------------------------------------------------

WORDED = """\
theory: {theory}
description: {prose}
target: activations:{directory}
sites: {{{x}: {{hook: x, doc: {prose}}}, {z}: z}}
variables: {{{a}: 'token[0]', {b}: 'token[1]', {c}: '{a}{op}{b}'}}
inputs: [{x}]
components:
  {waves}: {{kind: fourier, of: [{a}, {c}], modulus: 7, frequencies: {frequencies}, doc: {prose}}}
  {read}: {{kind: linear, from: [{waves}, {x}], predicts: {z}}}
"""
NAMES = dict(theory="t", prose="short", x="x", z="z", a="a", b="b", c="ab", waves="waves", read="read",
             frequencies="[1, 2]", op="+")


def _bits_spec(synthetic, directory=None, **changes):
    from theorycraft.spec import parse_theory

    tmp, recorded = synthetic
    theory = parse_theory(WORDED.format(directory=directory or recorded, **NAMES | changes), path="worded.yaml")
    fitted = fit(theory, captured(tmp, theory), QUIET)
    return measure(fitted, examples_of(fitted, captured(tmp, theory))).spec


def test_bits_spec_codes_the_claim_not_its_names_prose_or_place(synthetic):
    import shutil

    before = _bits_spec(synthetic)
    # every name changed; 'a' becomes a prefix of another name, which a textual rename would trip on
    renamed = dict(theory="a-much-longer-theory-name", x="inputs_recorded", z="zeta", a="b", b="a_first_token",
                   c="a", waves="cosine_waves_of_both", read="the_read_out")
    assert _bits_spec(synthetic, **renamed) == before
    prose = "'" + "A far longer account of why this theory should hold, " * 8 + "'"
    assert _bits_spec(synthetic, prose=prose) == before
    moved = synthetic[0] / "a" / "much" / "deeper" / "directory" / "with_the_same_activations"
    shutil.copytree(synthetic[1], moved)
    assert _bits_spec(synthetic, directory=moved) == before
    # a real change to the claim changes its bits
    assert _bits_spec(synthetic, frequencies="[1, 2, 3]") > before
    assert _bits_spec(synthetic, op=" - 2 * ") > before  # another expression


def test_prequential_code_rewards_a_theory_that_generalises(synthetic):
    fitted, acts = _fitted(synthetic, "lin: {kind: linear, from: x, predicts: y}\n")
    card = score(fitted, acts, prequential=True)
    assert card.mdl.prequential_compression > 1.5
    mean = score(fitted.mean_only(), acts, prequential=True)
    assert mean.mdl.prequential_compression == pytest.approx(1.0, rel=0.02)  # the mean against itself


# --- splicing on a real target --------------------------------------------------------------------

class Exact:
    """A 'theory' that predicts the recorded activations themselves (or their mean)."""

    def __init__(self, fitted, mean=False):
        self.theory, self.plan, self.means, self.sites = fitted.theory, fitted.plan, fitted.means, fitted.sites
        self.mean = mean

    def predict(self, inputs, sites, free=False):
        return {s: np.broadcast_to(self.means[s].reshape(sites[s].shape[1:]), sites[s].shape) if self.mean
                else sites[s] for s in self.sites}


def test_splicing_the_recorded_site_back_changes_nothing_and_the_mean_recovers_nothing(tmp_path):
    from theorycraft.spec import load_theory
    from theorycraft.store import capture
    from theorycraft.targets import load_target

    from conftest import EXAMPLES
    theory = load_theory(next(p for p in EXAMPLES if p.name == "modadd_fourier.yaml"))
    target = load_target(theory.target)
    acts = capture(target, [s.hook for s in theory.sites.values()], n=1500, cache_dir=tmp_path, progress=False)
    fitted = fit(theory, acts, QUIET)
    examples = examples_of(fitted, acts)
    same = splice_scores(Exact(fitted), target, examples)["mlp"]
    assert same.kl == pytest.approx(0.0, abs=1e-6) and same.top1_agreement == 1.0
    assert same.loss_recovered == pytest.approx(1.0, abs=1e-4)
    mean = splice_scores(Exact(fitted, mean=True), target, examples)["mlp"]
    assert mean.loss_recovered == pytest.approx(0.0, abs=1e-6) and mean.top1_agreement < 0.2
    theory_scores = splice_scores(fitted, target, examples)["mlp"]
    assert theory_scores.top1_agreement > 0.9 and theory_scores.loss_recovered > 0.9
