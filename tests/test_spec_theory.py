"""Valid theories: parse, round-trip, immutability, explain and the JSON Schema."""

import json
from dataclasses import FrozenInstanceError

import jsonschema
import pytest
import yaml

from conftest import BROKEN, EXAMPLES, ROOT, relative
from theorycraft.cli import main
from theorycraft.spec import (HookPoint, TargetRef, json_schema, load_theory, outline, parse_theory)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_round_trips_through_canonical_yaml(path, at_root):
    theory = load_theory(relative(path))
    again = parse_theory(theory.to_yaml(), path="canonical.yaml")
    assert again == theory
    assert again.to_yaml() == theory.to_yaml()


def test_includes_are_resolved_and_flattened(at_root):
    theory = load_theory("examples/modadd_fourier.yaml")
    assert set(theory.variables) == {"a", "b"}  # from parts/modadd_inputs.yaml
    assert theory.sites["mlp"].hook == HookPoint(("blocks", "0", "mlp", "hook_post"))
    assert theory.sites["mlp"].position == -1
    assert theory.target == TargetRef("builtin", "modadd-p113")
    assert "include" not in theory.to_dict()
    # the included variable still knows where it was written
    assert theory.diagnostic("variables", "a", "x").path == "examples/parts/modadd_inputs.yaml"


def test_theory_is_frozen(at_root):
    theory = load_theory("examples/modadd_fourier.yaml")
    with pytest.raises(FrozenInstanceError):
        theory.name = "other"
    with pytest.raises(TypeError):
        theory.components["x"] = None
    with pytest.raises(Exception):
        theory.components["waves"].modulus = 7


def test_changed_theory_is_not_equal(at_root):
    theory = load_theory("examples/modadd_fourier.yaml")
    text = theory.to_yaml().replace("- 52", "- 53")
    assert parse_theory(text) != theory


def test_components_come_in_dependency_order():
    theory = parse_theory("theory: t\ntarget: builtin:x\nsites: {s: a.b}\n"
                          "variables: {y: x + 1, x: 'token[0]'}\n"
                          "components:\n  out: {kind: linear, from: [w], predicts: s}\n"
                          "  w: {kind: fourier, of: y, modulus: 7, frequencies: [1]}\n")
    assert list(theory.variables) == ["x", "y"]
    assert list(theory.components) == ["w", "out"]


def test_hook_points_parse_once():
    assert str(HookPoint.parse("encoder.layer.3.output:input")) == "encoder.layer.3.output:input"
    assert HookPoint.parse("encoder.layer.3.output:input").io == "input"
    with pytest.raises(ValueError):
        HookPoint.parse("blocks..0")


def test_explain_names_reads_predictions_and_shapes(at_root, capsys):
    assert main(["explain", "examples/modadd_fourier.yaml"]) == 0
    out = capsys.readouterr().out
    assert "waves        fourier    reads a, b; 20 features" in out
    assert "pairs        product    reads waves; 210 features" in out
    assert "param weight [230, D(mlp)]" in out
    assert "predicted by: neurons" in out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_explain_works_on_every_example(path, at_root, capsys):
    assert main(["explain", relative(path)]) == 0
    assert load_theory(relative(path)).name in capsys.readouterr().out


def test_explain_of_broken_file_exits_1(at_root, capsys):
    assert main(["explain", "tests/data/broken/cycles.yaml"]) == 1


def _schema_validator():
    return jsonschema.Draft202012Validator(json_schema())


def test_schema_command_prints_the_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_schema_accepts_every_example(path):
    errors = list(_schema_validator().iter_errors(yaml.safe_load(path.read_text())))
    assert errors == []


STRUCTURAL = ["unknown_keys", "kinds_and_types", "structure"]


@pytest.mark.parametrize("stem", STRUCTURAL)
def test_schema_rejects_structural_errors(stem):
    path = next(p for p in BROKEN if p.stem == stem)
    data = yaml.safe_load(path.read_text().replace("axioms: []", ""))
    assert list(_schema_validator().iter_errors(data)), stem


def test_outline_is_plain_text(at_root):
    text = outline(load_theory("examples/induction.yaml"))
    assert "previous_token attention  reads j == i - 1 -> predicts l0_pattern" in text


def test_upstream_follows_reads_through_components_to_the_site():
    theory = load_theory(next(p for p in EXAMPLES if p.name == "modadd_fourier.yaml"))
    assert theory.upstream("mlp") == {"waves", "pairs", "neurons"}
    mechanism = load_theory(next(p for p in EXAMPLES if p.name == "superposition.yaml"))
    assert mechanism.upstream("out") == {"readout"} and mechanism.upstream("x") == set()


def test_the_claim_renames_through_the_expression_parser_and_drops_prose():
    def claim(variables, rule, doc=""):
        return parse_theory("theory: t\ntarget: builtin:x\nsites: {s: {hook: a.b, doc: d}}\n"
                            f"variables: {variables}\ncomponents:\n"
                            f"  r: {{kind: rule, when: '{rule}'{doc}}}\n"
                            "  out: {kind: linear, from: r, predicts: s}\n").claim()

    base = claim("{a: 'token[0]', ab: 'a + 1'}", "ab == a")
    assert base == claim("{x: 'token[0]', ax: '(x)+1'}", "ax==x", doc=", doc: a comment")
    assert "v1 == v0" in base and "token[0]" in base and "a.b" not in base
    assert base != claim("{a: 'token[0]', ab: 'a + 1'}", "ab == a + 1")


PARTS = sorted((ROOT / "examples" / "parts").glob("*.yaml"))
VOCABULARIES = sorted((ROOT / "examples" / "vocabularies").glob("*.yaml"))


@pytest.mark.parametrize("path", PARTS + VOCABULARIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_schema_accepts_every_part_and_vocabulary(path):
    assert list(_schema_validator().iter_errors(yaml.safe_load(path.read_text()))) == []


FILES_WITH_A_MISSPELT_KIND = {
    "theory": "theory: t\ntarget: builtin:induction\ncomponents:\n  w: {kind: fourrier, of: [a]}\n",
    "part": "variables: {a: 'token[0]'}\ncomponents:\n  w: {kind: fourrier, of: [a]}\n",
    "vocabulary": "vocabulary: v\ncomponents:\n  w: {kind: fourrier, of: [a], predicts: y}\n",
}


@pytest.mark.parametrize("which", sorted(FILES_WITH_A_MISSPELT_KIND))
def test_a_misspelt_kind_gets_a_specific_message(which):
    errors = list(_schema_validator().iter_errors(yaml.safe_load(FILES_WITH_A_MISSPELT_KIND[which])))
    assert [list(e.absolute_path) for e in errors] == [["components", "w", "kind"]]
    assert errors[0].message.startswith("'fourrier' is not one of ['aggregate'") and "'fourier'" in errors[0].message


@pytest.mark.parametrize("component, message", [
    ("{kind: fourier, of: [a], modulus: 7, frequencys: [1], predicts: y}", "('frequencys' was unexpected)"),
    ("{kind: fourier, of: [a], modulus: 7, frequencies: {each: 1..3}}", "'predicts' is a required property"),
    ("{kind: fourier, of: [a], modulus: 7, frequencies: {each: 'one to 3'}, predicts: y}", "'one to 3'"),
])
def test_a_vocabulary_template_is_checked_against_its_own_kind(component, message):
    text = f"vocabulary: v\ncomponents:\n  w: {component}\n"
    errors = list(_schema_validator().iter_errors(yaml.safe_load(text)))
    assert errors and all("any of the given schemas" not in e.message for e in errors if e.validator != "anyOf")
    assert any(message in str(e.message) or message in str(e.context) for e in errors), [e.message for e in errors]
    good = "vocabulary: v\ncomponents:\n  w: {kind: fourier, of: [a], modulus: 7, frequencies: {each: 1..3}, predicts: y}\n"
    assert list(_schema_validator().iter_errors(yaml.safe_load(good))) == []
