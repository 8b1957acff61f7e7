"""Theories that compute: reductions over positions, variables at other positions, one component
predicting several sites, values moved between positions, and free-running evaluation."""

import json
import textwrap

import numpy as np
import pytest

from theorycraft.inference import FitConfig, fit
from theorycraft.scoring import score
from theorycraft.spec import TheoryError, check_theory, parse_theory

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
    out = tmp_path / "program"
    out.mkdir()
    np.save(out / "inputs.npy", tokens.astype(np.int32))
    np.save(out / "r0.npy", r0.astype(np.float32))
    np.save(out / "r1.npy", r1.astype(np.float32))
    (out / "manifest.json").write_text(json.dumps({"sites": ["r0", "r1"], "vocab_size": V}))
    return out


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
