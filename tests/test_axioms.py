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


def test_check_refuses_a_run_of_another_theory(superposition_run, tmp_path):
    _, run = superposition_run
    other = tmp_path / "other.yaml"
    other.write_text((EXAMPLES / "superposition.yaml").read_text().replace("bias: false", "bias: true"))
    assert main(["check", str(other), "--run", str(run)]) == 1


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


def test_induction_axioms_hold_on_small_data(tmp_path):
    path = str(EXAMPLES / "induction.yaml")
    infer(path, out_dir=tmp_path / "run", n=1024, max_steps=300, cache_dir=tmp_path / "cache", progress=False,
          log=lambda m: None)
    results = {r.name: r for r in check(path, run_dir=tmp_path / "run", limit=256, log=lambda m: None)}
    assert all(r.passed for r in results.values()), [r for r in results.values() if not r.passed]
    copying = results["copying_needs_layer_0_attention"]
    assert copying.network < -0.5 and copying.high < -0.4  # accuracy falls, interval and all
    assert results["theory_predicts_the_loss_change"].theory > 1.0  # the theory predicts a large loss too
