"""Theories that compute: reductions over positions, variables at other positions, one component
predicting several sites, values moved between positions, and free-running evaluation."""


import numpy as np
import pytest

from theorycraft.inference import FitConfig, fit
from theorycraft.scoring import score
from theorycraft.spec import TheoryError, check_theory, parse_theory
from theorycraft.targets import write_recording

from conftest import captured

N, T, V = 600, 6, 5


def _program_target(tmp_path):
    """A residual stream written like a compiled RASP program: r0 holds codes of the token and
    the position; r1 adds a categorical code of the token's histogram count and a numerical
    direction for the fraction of earlier tokens equal to 0; both sites share the codes of r0."""
    r = np.random.default_rng(3)
    tokens = r.integers(0, V, size=(N, T))
    hist = (tokens[:, :, None] == tokens[:, None, :]).sum(-1)
    upto = np.tril(np.ones((T, T), bool))
    frac = ((tokens[:, None, :] == 0) & upto).sum(-1) / upto.sum(-1)
    d = 8
    embed, place, count_code, direction = (r.normal(size=s) for s in ((V, d), (T, d), (T + 1, d), (d,)))
    r0 = embed[tokens] + place[None]
    r1 = r0 + count_code[hist] + frac[..., None] * direction
    return _recording(tmp_path / "program", tokens, r0=r0, r1=r1)


def _recording(out, tokens, **sites):
    """An ``activations:DIR`` recording of ``sites`` over ``tokens``."""
    return write_recording(out, tokens.astype(np.int32), {name: v.astype(np.float32) for name, v in sites.items()},
                           vocab_size=V)


PROGRAM = """\
theory: program
target: activations:{directory}
sites: {{r0: r0, r1: r1}}
variables:
  tok: token[i]
  pos: i
  hist: "count(j: token[j] == token[i])"
  frac: "aggregate(j: j <= i, token[j] == 0)"
components:
  by_token: {{kind: lookup, of: tok, predicts: [r0, r1]}}
  by_position: {{kind: lookup, of: pos, size: {T}, predicts: [r0, r1]}}
  by_count: {{kind: lookup, of: hist, size: {size}, predicts: r1}}
  fraction: {{kind: linear, from: frac, predicts: r1}}
"""


def test_a_program_written_with_reductions_and_shared_codes_is_exact(tmp_path):
    directory = _program_target(tmp_path)
    theory = parse_theory(PROGRAM.format(directory=directory, T=T, size=T + 1), path="program.yaml")
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False))
    card = score(fitted, acts, bits=False)
    assert min(card.sites[s].r2_test for s in ("r0", "r1")) > 0.999
    # one component, two sites: one instance per site, each its own parameters
    assert set(fitted.params) >= {"by_token", "by_token@r1", "by_position", "by_position@r1"}
    assert fitted.params["by_token"]["table"].shape == fitted.params["by_token@r1"]["table"].shape


def test_a_component_predicting_several_sites_is_stated_once():
    base = PROGRAM.format(directory="d", T=T, size=T + 1)
    once = parse_theory(base, path="p.yaml")
    twice = parse_theory(base.replace("predicts: [r0, r1]}", "predicts: r0}").replace(
        "by_count:", "by_token_r1: {kind: lookup, of: tok, predicts: r1}\n  by_count:"), path="p.yaml")
    assert len(once.claim()) < len(twice.claim())
    assert once.predictors("r1") == ("by_token", "by_position", "by_count", "fraction")


def test_predicts_lists_are_checked_item_by_item(tmp_path):
    text = PROGRAM.format(directory="d", T=T, size=T + 1).replace("predicts: [r0, r1]}\n  by_position",
                                                                    "predicts: [r0, r2]}\n  by_position")
    text = text.replace("of: pos, size: 6, predicts: [r0, r1]", "of: pos, size: 6, predicts: [r1, r1]")
    _, diagnostics = check_theory("p.yaml", text)
    messages = [str(d) for d in diagnostics]
    assert any(m.startswith("p.yaml:10:52: error: undefined site 'r2'") for m in messages), messages
    assert any("p.yaml:11:" in m and "a site is named twice in 'predicts'" in m for m in messages), messages


CHAIN = """\
theory: chain
target: activations:{directory}
sites: {{r0: r0, r1: r1}}
variables: {{tok: "token[i]", hist: "count(j: token[j] == token[i])", frac: "aggregate(j: j <= i, token[j] == 0)"}}
components:
  by_token: {{kind: lookup, of: tok, predicts: r0}}
  layer: {{kind: linear, from: r0, predicts: r1}}
  by_count: {{kind: lookup, of: hist, size: 7, predicts: r1}}
  fraction: {{kind: linear, from: frac, predicts: r1}}
"""


def test_a_theory_that_reads_no_recorded_site_is_the_same_free_and_teacher_forced(tmp_path):
    directory = _program_target(tmp_path)
    theory = parse_theory(PROGRAM.format(directory=directory, T=T, size=T + 1), path="program.yaml")
    acts = captured(tmp_path, theory)
    card = score(fit(theory, acts, FitConfig(progress=False)), acts, bits=False)
    assert card.coverage_free == card.coverage and card.coverage_validation_free == card.coverage_validation
    assert all(s.r2_test_free == s.r2_test and s.r2_validation_free == s.r2_validation for s in card.sites.values())


def test_free_running_feeds_each_site_the_theorys_own_prediction(tmp_path):
    """r0 is only partly a table of the token (positions matter too), so r1, read from the
    recorded r0, is exact teacher-forced and worse free-running, where it reads the table."""
    directory = _program_target(tmp_path)
    theory = parse_theory(CHAIN.format(directory=directory), path="chain.yaml")
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False))
    card = score(fitted, acts, bits=False)
    r1 = card.sites["r1"]
    assert r1.r2_test > 0.999 and r1.r2_test_free < r1.r2_test - 0.05
    assert card.sites["r0"].r2_test_free == card.sites["r0"].r2_test
    assert card.coverage_free < card.coverage
    inputs = np.asarray(acts.inputs())[:5]
    free = fitted.predict(inputs, free=True)  # from the input alone
    by_hand = fitted.predict(inputs, {"r0": free["r0"], "r1": free["r1"]})  # teacher-forced on its own r0
    np.testing.assert_allclose(free["r1"], by_hand["r1"], rtol=1e-5, atol=1e-5)
    from theorycraft.errors import FitError
    with pytest.raises(FitError, match="needs the recorded site"):
        fitted.predict(inputs)  # teacher-forced needs the recorded r0


def test_a_declared_input_is_given_and_paid_for(tmp_path):
    directory = _program_target(tmp_path)
    text = CHAIN.format(directory=directory).replace("  by_token: {kind: lookup, of: tok, predicts: r0}\n", "")
    with pytest.raises(TheoryError, match=r"reads site 'r0', which no component predicts; declare it"):
        parse_theory(text, path="chain.yaml")
    theory = parse_theory(text.replace("components:", "inputs: [r0]\ncomponents:"), path="chain.yaml")
    assert theory.inputs == ("r0",) and theory.covered == ("r1",)
    acts = captured(tmp_path, theory)
    card = score(fit(theory, acts, FitConfig(progress=False)), acts)
    assert card.coverage_free_given == card.coverage_given > 0.99  # given, the input is the same in both modes
    assert card.unexplained == ("r0",) and card.coverage_free == card.coverage < card.coverage_given  # r0 at R² 0
    assert card.size.bits_inputs > 1000
    assert card.size.bits == card.size.bits_spec + card.size.bits_params + card.size.bits_latents + card.size.bits_inputs


def _attention_target(tmp_path):
    """One head attends by softmax(3 · [token[j] == token[i]]) over earlier keys and moves a code
    of the key's token into the residual stream, which also holds a code of the position."""
    r = np.random.default_rng(4)
    tokens = r.integers(0, V, size=(N, T))
    same = (tokens[:, :, None] == tokens[:, None, :]).astype(float)
    logits = np.where(np.tril(np.ones((T, T), bool)), 3.0 * same, -np.inf)
    pattern = np.exp(logits - logits.max(-1, keepdims=True))
    pattern /= pattern.sum(-1, keepdims=True)
    code, place = r.normal(size=(V, 8)), r.normal(size=(T, 8))
    resid = np.einsum("nqk,nkd->nqd", pattern, code[tokens]) + place[None]
    return _recording(tmp_path / "attention", tokens, pattern=pattern[:, None], resid=resid)


MOVER = """\
theory: mover
target: activations:{directory}
sites: {{pattern: pattern, resid: resid}}
variables: {{tok: "token[i]", pos: i}}
components:
  same_token: {{kind: attention, rule: "token[j] == token[i]", predicts: pattern}}
  moved: {{kind: aggregate, select: same_token, value: tok, size: {V}}}
  writes: {{kind: linear, from: moved, predicts: resid}}
  by_position: {{kind: lookup, of: pos, size: {T}, predicts: resid}}
"""


@pytest.mark.parametrize("mode", ["stagewise", "joint"])
def test_a_soft_select_moves_values_into_the_residual(tmp_path, mode):
    theory = parse_theory(MOVER.format(directory=_attention_target(tmp_path), V=V, T=T), path="mover.yaml")
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False, mode=mode))
    card = score(fitted, acts, bits=False)
    assert card.sites["pattern"].r2_test > 0.99 and card.sites["resid"].r2_test_free > 0.99
    stages = [stage["sites"] for stage in fitted.fit_info["stages"]]
    if mode == "stagewise":  # the pattern is fitted to its head first; the residual is then exact
        assert stages == [["pattern"], ["resid"]] and "resid" in fitted.fit_info["closed_form"]
    else:
        assert stages == [["pattern", "resid"]] and not fitted.fit_info["closed_form"]


def test_a_fit_of_one_head_reads_only_that_head_and_trains_as_on_the_whole_pattern(tmp_path, monkeypatch):
    """A head kept from an earlier fit is a constant of the next: the loss leaves its columns out
    (``varying_columns``), and the head being fitted learns what it learns with them in."""
    from theorycraft.inference import _examples
    from theorycraft.inference._compile import make_plan, varying_columns

    r = np.random.default_rng(5)
    tokens = r.integers(0, V, size=(N, T))

    def head(rule):
        logits = np.where(np.tril(np.ones((T, T), bool)), 3.0 * rule, -np.inf)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True)
    same = (tokens[:, :, None] == tokens[:, None, :]).astype(float)
    previous = np.broadcast_to(np.eye(T, k=-1), same.shape)
    directory = _recording(tmp_path / "two", tokens, pattern=np.stack([head(same), head(previous)], 1))
    theory = parse_theory(f"""\
theory: two
target: activations:{directory}
sites: {{pattern: pattern}}
components:
  same_token: {{kind: attention, rule: "token[j] == token[i]", head: 0, predicts: pattern}}
  previous: {{kind: attention, rule: "j == i - 1", head: 1, predicts: pattern}}
""", path="two.yaml")
    acts = captured(tmp_path, theory)
    config = FitConfig(progress=False, max_steps=300)
    keep = {"same_token": fit(theory, acts, config).params["same_token"]}
    shapes = {"pattern": (2, T, T)}
    assert varying_columns(make_plan(theory, shapes, V), "pattern") is None  # both heads learned
    np.testing.assert_array_equal(varying_columns(make_plan(theory, shapes, V, keep), "pattern"),
                                  np.arange(T * T, 2 * T * T))  # head 1's columns only
    narrow = fit(theory, acts, config, keep=keep)
    monkeypatch.setattr(_examples, "varying_columns", lambda plan, site: None)  # every head in the loss
    whole = fit(theory, acts, config, keep=keep)
    for name in ("sharpness", "prior"):  # "j == i - 1" is positional: its sharpness starts (and stays) near 0
        np.testing.assert_allclose(narrow.params["previous"][name], whole.params["previous"][name], rtol=1e-4, atol=1e-4)
    assert narrow.fit_info["gradient"]["steps"] == whole.fit_info["gradient"]["steps"]  # the same early stop


def test_an_aggregate_feeds_only_sites_over_every_position(tmp_path):
    text = MOVER.format(directory=_attention_target(tmp_path), V=V, T=T).replace(
        "resid: resid}", "resid: {hook: resid, position: -1}}")
    theory = parse_theory(text, path="mover.yaml")
    with pytest.raises(TheoryError, match=r"mover.yaml:7:3: error: 'moved' reads values at every position"):
        fit(theory, captured(tmp_path, theory), FitConfig(progress=False))


def test_an_autoencoded_site_is_read_recorded_by_its_autoencoder_in_both_modes(tmp_path):
    """A dictionary's codes are sent per example: it encodes the recorded site in both modes, so
    a map of its codes predicts the same free-running as teacher-forced."""
    from conftest import recorded_target, theory_for

    theory = theory_for(recorded_target(tmp_path), """\
        sae: {kind: dictionary, from: x, width: 12, k: 3, predicts: x}
        lin: {kind: linear, from: sae, predicts: y}
        """, sites="x: x, y: y")
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False, max_steps=300))
    card = score(fitted, acts, bits=False)
    assert card.coverage_free == card.coverage and card.sites["y"].r2_test_free == card.sites["y"].r2_test
    inputs, x = np.asarray(acts.inputs())[:4], np.asarray(acts.site("x"))[:4]
    free = fitted.predict(inputs, {"x": x}, free=True)
    np.testing.assert_allclose(free["y"], fitted.predict(inputs, {"x": x, "y": free["y"]})["y"], rtol=1e-5, atol=1e-5)
    from theorycraft.errors import FitError
    with pytest.raises(FitError, match="needs the recorded site"):
        fitted.predict(inputs, free=True)  # the codes come from the recorded x


def test_an_aggregate_value_must_be_over_every_position(tmp_path):
    text = MOVER.format(directory=_attention_target(tmp_path), V=V, T=T).replace(
        "sites: {pattern: pattern, resid: resid}", "sites: {pattern: pattern, resid: resid, last: {hook: resid, position: -1}}\n"
        "inputs: [last]").replace("value: tok, size: 5}", "value: last}").replace("writes: {kind: linear, from: moved",
                                                                                "writes: {kind: linear, from: moved, width: 8")
    theory = parse_theory(text, path="mover.yaml")
    with pytest.raises(TheoryError, match=r"the value is read at every key position, so it must be a site over every "
                                          r"position \(\[T, D\]\); 'last' has per-example shape \[8\]"):
        fit(theory, captured(tmp_path, theory), FitConfig(progress=False))


def test_stagewise_solves_exactly_a_site_whose_predictor_a_later_site_reads(tmp_path):
    """by_token predicts r0 and is read by r1's map: fitted exactly to r0 first, it is fixed data
    for r1, whose sum of tables and maps is then exact too; fitted jointly, it needs Adam."""
    directory = _program_target(tmp_path)
    text = PROGRAM.format(directory=directory, T=T, size=T + 1).replace(
        "  fraction:", "  through: {kind: linear, from: by_token, predicts: r1}\n  fraction:")
    theory = parse_theory(text, path="program.yaml")
    acts = captured(tmp_path, theory)
    stagewise = fit(theory, acts, FitConfig(progress=False))
    assert set(stagewise.fit_info["closed_form"]) == {"r0", "r1"} and stagewise.fit_info["gradient"] is None
    assert score(stagewise, acts, bits=False).coverage_free > 0.999
    joint = fit(theory, acts, FitConfig(progress=False, mode="joint", max_steps=50))
    assert joint.fit_info["gradient"] is not None
