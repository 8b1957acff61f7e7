"""A kind written outside theorycraft (tests/custom_kind.py: squares of expressions) works end to
end: named in YAML as ``module:attr`` only with trust, registered from Python by name, validated,
fitted, scored and searched with."""

import json
import sys
import textwrap

import numpy as np
import pytest

import theorycraft as tc
from theorycraft.cli import main
from theorycraft.inference.kinds import KINDS, KindCheckError
from theorycraft.targets import write_recording

from custom_kind import Square

REFERENCE = "custom_kind:Square"


@pytest.fixture(autouse=True)
def registry():
    """Each test starts from the built-in kinds and leaves them as it found them."""
    saved = dict(KINDS)
    yield
    KINDS.clear()
    KINDS.update(saved)


def squares_target(tmp_path, n=2000):
    """16 features, each a mix of a² and b² plus noise, of two tokens a, b; token c carries nothing."""
    r = np.random.default_rng(0)
    tokens = r.integers(0, 7, size=(n, 3)).astype(np.int32)
    q = tokens[:, :2].astype(np.float32) ** 2 @ r.normal(size=(2, 16)) + 0.5 * r.normal(size=(n, 16))
    q = q.astype(np.float32)
    return write_recording(tmp_path / "squares", tokens, {"q": q})


def theory_text(directory, kind=REFERENCE):
    return textwrap.dedent(f"""\
        theory: squares
        target: activations:{directory}
        sites: {{q: q}}
        variables: {{a: 'token[0]', b: 'token[1]'}}
        components:
          sq: {{kind: '{kind}', of: [a, b]}}
          read: {{kind: linear, from: sq, predicts: q}}
        """)


def test_a_python_kind_in_yaml_needs_trust_and_runs_no_code_without_it(tmp_path, capsys, monkeypatch):
    path = tmp_path / "squares.yaml"
    path.write_text(theory_text(squares_target(tmp_path)))
    monkeypatch.delitem(sys.modules, "custom_kind")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:6:14: error: component kind '{REFERENCE}' is Python code (module 'custom_kind'); pass " \
           f"--trust-code" in err
    assert "custom_kind" not in sys.modules  # nothing was imported
    assert main(["validate", "--trust-code", str(path)]) == 0
    assert isinstance(KINDS[REFERENCE], sys.modules["custom_kind"].Square)  # imported, a fresh module


def test_a_python_kind_that_is_not_there_is_a_clear_error(tmp_path):
    text = theory_text(squares_target(tmp_path), kind="custom_kind:Cube")
    with pytest.raises(tc.TheoryError, match=r"squares.yaml:6:14: error: module 'custom_kind' has no 'Cube'"):
        tc.parse_theory(text, "squares.yaml", trust_code=True)


def test_a_python_kind_fits_and_scores(tmp_path):
    directory = squares_target(tmp_path)
    theory = tc.parse_theory(theory_text(directory), "squares.yaml", trust_code=True)
    acts = tc.capture(theory, cache_dir=tmp_path / "cache", progress=False)
    fitted, card = tc.infer(theory, acts, out_dir=tmp_path / "run", progress=False, log=lambda m: None)
    assert fitted.fit_info["closed_form"]["q"]["components"] == ["read"]  # fixed features: exact ridge
    assert card.sites["q"].r2_test > 0.99
    card = tc.score(fitted, acts)
    assert card.size.bits > card.size.bits_spec > 0
    with pytest.raises(tc.TheoryError, match="--trust-code"):  # imported with trust before is no trust now
        tc.FittedTheory.load(tmp_path / "run")
    reloaded = tc.FittedTheory.load(tmp_path / "run", trust_code=True)
    np.testing.assert_allclose(reloaded.predict(acts.inputs()[:5])["q"], fitted.predict(acts.inputs()[:5])["q"],
                               rtol=1e-5, atol=1e-5)


def test_a_registered_kind_is_searched_with(tmp_path):
    tc.register_kind("square", Square())
    directory = squares_target(tmp_path)
    start = tc.parse_theory(f"theory: start\ntarget: activations:{directory}\nsites: {{q: q}}\n", "start.yaml")
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text("variables: {a: 'token[0]', b: 'token[1]', c: 'token[2]'}\n"
                     "components:\n  sq: {kind: square, of: {each: {sa: a, sb: b, sc: c}}, predicts: q}\n")
    summary = tc.search(start, vocabulary=str(vocab), out_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                        max_steps=100, log=lambda m: None)
    found = tc.load_theory(str(tmp_path / "out" / "theory.yaml"))
    assert {n for n, c in found.components.items() if c.kind == "square"} == {"sa", "sb"}
    assert summary.final.report.r2["q"] > 0.99


def test_the_schema_covers_registered_kinds():
    tc.register_kind("square", Square())
    from theorycraft.spec import json_schema

    schema = json.dumps(json_schema())
    assert '"const": "square"' in schema and '"const": "fourier"' in schema


def test_a_custom_kind_passes_the_library_s_conformance_checks():
    tc.check_kind(Square())  # as scikit-learn's check_estimator: the checks every built-in kind passes


def test_check_kind_reports_every_check_a_broken_kind_fails():
    import jax.numpy as jnp
    from pydantic import ConfigDict

    from custom_kind import SquareSpec

    class Loose(SquareSpec):
        model_config = ConfigDict(extra="allow", frozen=True)  # unknown keys silently accepted

    class Broken(Square):
        schema, fixed = Loose, False

        def init(self, key, spec, shapes):  # drawn without the key: not deterministic
            return {"w": jnp.asarray(np.random.default_rng().normal(size=(shapes.out + 1,)), jnp.float32)}

        def apply(self, params, spec, inputs):  # a column too many, and NaN
            return jnp.log(-jnp.abs(inputs[0][:, :1] * params["w"]) - 1.0)

    with pytest.raises(KindCheckError) as failed:
        tc.check_kind(Broken())
    message = str(failed.value)
    assert message.startswith("Broken fails ")
    for check in ("init is deterministic", "apply has its shape and is finite", "misuse fails clearly"):
        assert f"\n  {check}: " in message, message
    assert "expected an output of shape (8, 2), found (8, 3)" in message and "refuse an unknown key" in message


def test_check_kind_without_an_example_says_what_to_write():
    class Bare(tc.Kind):
        def apply(self, params, spec, inputs):
            return inputs[0]

    with pytest.raises(AssertionError, match=r"Bare gives no example .*define example\(self, rng\)"):
        tc.check_kind(Bare())
