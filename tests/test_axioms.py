"""Axioms: claims about interventions, checked on the network (torch hooks) and predicted by the
theory run free under the same intervention; counterfactual fidelity."""

import json
import shutil

import numpy as np
import pytest

import yaml

from theorycraft.api import check, infer
from theorycraft.cli import main
from theorycraft.inference._intervene import Intervention, subspace_basis
from theorycraft.spec import load_theory, parse_theory
from theorycraft.spec._axioms import Place, parse_place

from conftest import ROOT

EXAMPLES = ROOT / "examples"


def test_places_parse_like_numpy_indices():
    assert parse_place("blocks.0.attn.hook_z[:, 1]") == Place("blocks.0.attn.hook_z", (None, 1))
    assert parse_place("x[[3, 5]]") == Place("x", ((3, 5),))
    assert parse_place("out[0]").numpy_index == (0,)
    assert str(parse_place("x[[3, 5], :]")) == "x[[3, 5], :]"


def test_interventions_act_on_the_indexed_part_only():
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    source = -values
    zeroed = Intervention("zero", (slice(None), 1)).apply(values)
    assert (zeroed[:, :, 1] == 0).all() and (zeroed[:, :, 0] == values[:, :, 0]).all()
    patched = Intervention("resample", ([0, 2],)).apply(values, source)
    assert (patched[:, [0, 2]] == source[:, [0, 2]]).all() and (patched[:, 1] == values[:, 1]).all()
    mean = values.mean(0)
    assert np.allclose(Intervention("mean", (), mean).apply(values), np.broadcast_to(mean, values.shape))


def test_a_subspace_is_what_the_features_predict_and_keep_and_project_out_split_it():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 2))
    directions = rng.normal(size=(2, 6))
    values = features @ directions + 0.01 * rng.normal(size=(500, 6))
    basis = subspace_basis(features, values)
    assert basis.shape == (2, 6)
    mean = values.mean(0)
    kept = Intervention("keep", (), mean, basis).apply(values)
    removed = Intervention("project_out", (), mean, basis).apply(values)
    assert np.allclose(kept + removed - values, mean, atol=1e-4)  # the two halves of the deviation
    assert np.abs(removed - mean).max() < 0.1  # what the features explain is nearly everything


def test_axioms_survive_a_round_trip_through_yaml():
    theory = load_theory(str(EXAMPLES / "induction.yaml"))
    again = parse_theory(theory.to_yaml(), path="<again>")
    assert again.axioms == theory.axioms and len(theory.axioms) == 3
    assert again.claim() == theory.claim()  # axioms are checked, not part of what the theory predicts with


FALSE = {"resample": "x[[0, 1, 2]]", "invariant": "out", "tolerance": 0.001,
         "doc": "false: features 0-2 are read out"}


@pytest.fixture(scope="module")
def superposition_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sup")
    data = yaml.safe_load((EXAMPLES / "superposition.yaml").read_text())
    data["axioms"]["reads_nothing"] = FALSE
    path = out / "superposition.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    infer(str(path), out_dir=out / "run", n=4000, cache_dir=out / "cache", progress=False, log=lambda m: None)
    return path, out / "run"


def test_superposition_axioms_hold_and_a_false_one_fails_with_a_clear_row(superposition_run, capsys):
    path, run = superposition_run
    status = main(["check", str(path), "--run", str(run), "--limit", "400"])
    printed = capsys.readouterr().out
    assert status == 1  # the false axiom fails the command
    rows = {r["name"]: r for r in json.loads((run / "axioms.json").read_text())["axioms"]}
    assert [n for n, r in rows.items() if not r["passed"]] == ["reads_nothing"]
    false = rows["reads_nothing"]
    assert false["network"] > 0.05 and false["low"] > 0.001  # the interval clears the tolerance too
    assert "reads_nothing" in printed and "FAIL" in printed
    assert "3 of 4 axioms hold" in printed and "failed: reads_nothing" in printed
    # the theory predicts what the network does under the intervention, feature by feature
    assert rows["theory_predicts_the_interference"]["judged"] > 0.99
    assert abs(rows["unrepresented_features_do_not_interfere"]["theory"]) < 0.001


def test_check_refuses_a_run_of_another_theory(superposition_run, tmp_path, capsys):
    _, run = superposition_run
    other = tmp_path / "other.yaml"
    other.write_text((EXAMPLES / "superposition.yaml").read_text().replace("bias: false", "bias: true"))
    assert main(["check", str(other), "--run", str(run)]) == 1
    assert "holds a fit of a different theory" in capsys.readouterr().err
    renamed = tmp_path / "renamed.yaml"  # same claim, other names: the run's names would not match
    renamed.write_text((EXAMPLES / "superposition.yaml").read_text().replace("readout", "read_out"))
    assert main(["check", str(renamed), "--run", str(run)]) == 1
    assert "holds a fit of a different theory" in capsys.readouterr().err


def _with_axioms(path, tmp_path, axioms):
    data = yaml.safe_load(path.read_text())
    data["axioms"] = axioms
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_zero_mean_and_patch_on_the_network_and_the_theory_alike(superposition_run, tmp_path):
    path, run = superposition_run
    axioms = {  # each also predicted by the theory: the same intervention reaches its free computation
        "zeroed": {"zero": "h[[0, 1]]", "predicted_by_theory": "out", "r2": 0.99},
        "averaged": {"mean": "h", "predicted_by_theory": "out", "r2": 0.99},
        "resampled_input": {"resample": "x", "predicted_by_theory": "h", "r2": 0.99},
        "zeroing_moves_h": {"zero": "h[[0, 1]]", "changes": "h", "at_least": 0.2},
    }
    results = {r.name: r for r in check(str(_with_axioms(path, tmp_path, axioms)), run_dir=run, limit=300,
                                        log=lambda m: None)}
    assert all(r.passed for r in results.values()), results
    assert results["averaged"].network > 0.5  # the mean of h moves out a lot, and the theory follows it
    assert 0.2 < results["zeroing_moves_h"].network < 0.8  # two of five coordinates


def test_bad_places_and_tokens_are_clear_errors(superposition_run, tmp_path, capsys):
    path, run = superposition_run
    for axiom, message in [({"zero": "h[7]", "invariant": "out"}, "indexes outside its per-example shape [5]"),
                           ({"zero": "hook_nowhere", "invariant": "out"}, "unknown site 'hook_nowhere'"),
                           ({"input": "token[i]", "invariant": "out"}, "takes vectors")]:
        assert main(["check", str(_with_axioms(path, tmp_path, {"a": axiom})), "--run", str(run)]) == 1
        assert message in capsys.readouterr().err


def test_modadd_axioms_hold_and_removing_the_key_frequencies_breaks_the_network(tmp_path):
    data = yaml.safe_load((EXAMPLES / "modadd_fourier.yaml").read_text())
    shutil.copytree(EXAMPLES / "parts", tmp_path / "parts")  # includes stay under the theory's directory
    data["axioms"]["the_rest_is_small"] = {"keep": "hook_embed", "subspace": "waves", "invariant": "hook_embed",
                                           "tolerance": 0.05}
    path = tmp_path / "modadd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    infer(str(path), out_dir=tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, log=lambda m: None)
    results = {r.name: r for r in check(str(path), run_dir=tmp_path / "run", limit=256, log=lambda m: None)}
    assert all(r.passed for r in results.values()), [r for r in results.values() if not r.passed]
    assert results["key_frequencies_are_needed"].network < -0.5  # accuracy collapses without them
    assert 0 < results["the_rest_is_small"].network < 0.05  # what keeping removes is little, yet not nothing
    assert results["theory_follows_the_ablation"].judged > 0.9


def test_counterfactual_fidelity_separates_a_computation_from_an_autoencoder(superposition_run, tmp_path):
    """Under resampling of h, the theory (out read from h) follows the network; an SAE of out,
    given the clean recording, cannot: the same coverage, a different answer to 'what if'."""
    from theorycraft.api import capture, target_of
    from theorycraft.inference import FitConfig, fit
    from theorycraft.scoring import Lab, counterfactual_fidelity

    path, run = superposition_run
    theory = load_theory(str(path))
    acts = capture(theory, n=4000, cache_dir=run.parent / "cache", progress=False)
    inputs = np.asarray(acts.inputs())
    target = target_of(theory)
    sae = parse_theory(yaml.safe_dump({
        "theory": "sae", "target": "builtin:superposition", "inputs": ["x"],
        "sites": {"x": "hook_input", "h": "hook_hidden", "out": "hook_output"},
        "components": {"embed": {"kind": "linear", "from": "x", "predicts": "h", "bias": False},
                       "code": {"kind": "dictionary", "from": "out", "width": 40, "k": 4, "predicts": "out"}}}))
    scores = {}
    for name, theory_ in (("reference", theory), ("sae", sae)):
        fitted = fit(theory_, acts, FitConfig(progress=False, max_steps=300))
        lab = Lab(fitted, target, inputs[acts.split("test")[:200]], inputs[acts.split("train")[:200]])
        scores[name] = counterfactual_fidelity(lab)
    assert scores["reference"].interventions == ("resample h", "resample out")
    assert scores["reference"].r2 > 0.7 and scores["sae"].r2 < 0.0  # (300 Adam steps: the read-out is not done)


def test_induction_axioms_hold_on_small_data(tmp_path):
    path = str(EXAMPLES / "induction.yaml")
    infer(path, out_dir=tmp_path / "run", n=1024, max_steps=300, cache_dir=tmp_path / "cache", progress=False,
          log=lambda m: None)
    results = {r.name: r for r in check(path, run_dir=tmp_path / "run", limit=256, log=lambda m: None)}
    assert all(r.passed for r in results.values()), [r for r in results.values() if not r.passed]
    copying = results["copying_needs_layer_0_attention"]
    assert copying.network < -0.5 and copying.high < -0.4  # accuracy falls, interval and all
    assert results["theory_predicts_the_loss_change"].theory > 1.0  # the theory predicts a large loss too
