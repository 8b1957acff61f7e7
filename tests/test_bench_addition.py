"""The benchmark's builtin:addition rows (issue 28): declared with the hand theory, a slot for the
found one, a probe per kept position, SAEs and skip transcoders; a transcoder (the ``dictionary``
kind from a layer's MLP input to the layer's output) fits and is scored like every theory, its
inputs and codes paid for in bits."""

import numpy as np
import pytest

from theorycraft.api import capture
from theorycraft.benchmarks.baselines import Context, baselines
from theorycraft.benchmarks.coverage import EXAMPLES, RIVALS
from theorycraft.benchmarks.suites import SUITES
from theorycraft.inference.engine import FitConfig, fit, site_shapes
from theorycraft.scoring import Lab, counterfactual_fidelity, score
from theorycraft.spec import dump, load_theory, parse_theory
from theorycraft.targets import load_target

SUITE = next(s for s in SUITES if s.target == "builtin:addition")


@pytest.fixture(scope="module")
def reference():
    return load_theory(EXAMPLES / SUITE.references[0])


@pytest.fixture(scope="module")
def acts(reference, tmp_path_factory):
    hooks = sorted({str(s.hook) for s in reference.sites.values()} | {h for _, h in SUITE.mlp_inputs})
    return capture(load_target("builtin:addition"), hooks, n=240, cache_dir=tmp_path_factory.mktemp("cache"))


def test_the_addition_rows_are_declared(reference, acts):
    assert reference.name == "addition-columns" and "transcoder" in RIVALS
    assert SUITE.found and all(name.endswith(".yaml") for name in SUITE.found)
    # every site the hand theory covers has its layer's MLP input, captured by the suite
    assert {str(reference.sites[s].hook) for s in reference.covered} == {site for site, _ in SUITE.mlp_inputs}
    ctx = Context(site_shapes(reference, acts.sites), np.asarray(acts.inputs()), acts.vocab_size)
    made = baselines(reference, ctx, SUITE.sae, dict(SUITE.mlp_inputs))
    assert {b.family for b in made} == {"mean", "probe", "sae", "transcoder", "random"}
    assert [b.name for b in made if b.family == "transcoder"] == [f"transcoder-x{m}-k{k}" for m, k in SUITE.sae]
    # the probe reads every varying input token, per kept position (not one position table sized 6 for i = 11-16)
    probe = next(b.theory for b in made if b.family == "probe")
    assert probe.variables["row"].text == "i - 11" and "t12" in probe.variables and "t5" not in probe.variables
    # the random control keeps 'column' a key of its 6-row tables
    random = next(b for b in made if b.family == "random")
    assert random.shuffle or random.theory.variables["column"].text == "i - 11"


def test_a_transcoder_fits_and_is_scored_alike(reference, acts):
    ctx = Context(site_shapes(reference, acts.sites), np.asarray(acts.inputs()), acts.vocab_size)
    (transcoder,) = [b.theory for b in baselines(reference, ctx, ((2, 4),), dict(SUITE.mlp_inputs))
                     if b.family == "transcoder"]
    assert set(transcoder.inputs) == {"resid0_mlp_in", "resid1_mlp_in"}
    assert transcoder.sites["resid1_mlp_in"].kept == reference.sites["resid1"].kept
    fitted = fit(transcoder, acts, FitConfig(max_steps=60, batch_size=64, progress=False, refit_on_validation=False))
    card = score(fitted, acts)
    assert set(card.unexplained) == {"resid0_mlp_in", "resid1_mlp_in"}
    # given its MLP inputs it predicts each layer's output; the inputs count at R² 0 in the headline
    assert min(card.sites[s].r2_test for s in ("resid0", "resid1")) > 0.5
    assert card.coverage < card.coverage_given
    # bits as an SAE's: parameters, the codes of its active latents, and the inputs it is handed
    assert card.size.bits_latents > 0 and card.size.bits_inputs > 0
    assert card.size.bits >= card.size.bits_params + card.size.bits_latents + card.size.bits_inputs


def test_an_intervention_on_kept_positions_reaches_the_theory(reference, acts):
    """Resampling a site of kept positions (or interchanging its last one) intervenes on the
    theory's site too: a theory whose layer 1 reads its layer 0 follows, one that reads only the
    tokens cannot (before, a hook place never resolved to such a site and no theory moved)."""
    chained = load_theory(EXAMPLES / SUITE.references[0]).to_dict()
    chained["components"] = {"by_written": {**chained["components"]["by_written"], "predicts": "resid0"},
                             "by_digits": {**chained["components"]["by_digits"], "predicts": "resid0"},
                             "carried": {"kind": "linear", "from": "resid0", "predicts": "resid1"}}
    tokens_only = {**chained, "components": {**chained["components"],
                                             "carried": {**chained["components"]["by_digits"], "predicts": "resid1"}}}
    config = FitConfig(max_steps=10, progress=False, refit_on_validation=False)
    target, inputs = load_target("builtin:addition"), np.asarray(acts.inputs())
    over = {s: reference.sites[s] for s in reference.covered}
    follows, stays = (counterfactual_fidelity(Lab(fit(parse_theory(dump(data)), acts, config), target, inputs[-64:],
                                                  inputs[:64]), over) for data in (chained, tokens_only))
    assert follows.interventions == stays.interventions and len(follows.interventions) == 4
    assert follows.r2 > stays.r2 + 0.1
    assert follows.kl < stays.kl
