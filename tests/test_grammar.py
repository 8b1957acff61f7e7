"""The grammar of RASP's primitives (``refine/_grammar.py``): every variable it proposes is an
expression of the theory language whose values (computed by the grammar in bulk) are the
language's own; it composes with the theory's variables; the data ranks its proposals; and no
program is written into the search's code."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from theorycraft.refine._grammar import is_bos, propose
from theorycraft.spec import evaluate, evaluate_variables, parse_expr, position_env
from theorycraft.spec._vocabulary import Grammar

ROOT = Path(__file__).resolve().parents[1]
# variables of the programs the examples ship (tracr's hist, sort_unique, frac_prevs) and rules
# the attention vocabulary once listed by name
PROGRAM_NAMES = re.compile(r"\b(hist|target_pos|sort|sort_unique|frac_\w*|frac|smaller_share|induction\w*|"
                           r"previous_token|bos_share|is_one)\b")


def tokens(n=40, length=6, vocab=4, seed=0, bos=True):
    x = np.random.default_rng(seed).integers(0, vocab, (n, length))
    if bos:
        x[:, 0] = vocab
    return x


def language_values(x, expression, variables=None):
    held = evaluate_variables(variables or {}, x, np)
    return np.asarray(evaluate(parse_expr(expression), position_env(x, np, held)), np.float64)


@pytest.mark.parametrize("bos", [True, False])
def test_every_proposal_is_an_expression_whose_values_are_the_languages(bos):
    x = tokens(bos=bos)
    found, enumerated = propose(x, {}, Grammar(sites=("s",)), is_bos(x))
    assert is_bos(x) == bos and enumerated >= len(found) > 100
    kinds = {p.kind for p in found}
    assert {"categorical", "numerical", "boolean", "pair"} <= kinds
    for p in found:
        if p.kind == "pair":
            continue
        np.testing.assert_allclose(p.values, language_values(x, p.expression), atol=1e-9, err_msg=p.expression)
    texts = {p.expression for p in found}
    key = "j > 0 and " if bos else ""
    assert f"count(j: {key}token[j] == token[i])" in texts  # a selector width
    assert f"count(j: {key}token[j] < token[i])" in texts
    assert "token[i - 1]" in texts and "token[i] == 1" in texts  # a read back, a rule
    assert f"aggregate(j: {key}j <= i, token[j] == 1)" in texts  # a numerical aggregate of a rule
    assert "token[i] == 1 and token[i - 1] == 0" in texts  # a conjunction of rules
    assert f"aggregate(j: {key}j == {5 + bos} - i, token[j])" in texts  # the query side reflected: reversal
    # a variable and the position ordered together: ties broken by position, either way
    assert f"count(j: {key}token[j] * T + j < token[i] * T + i)" in texts
    assert any(f"{key}token[j] * T - j > token[i] * T - i" in e for e in texts)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", p.name) and len(p.name) <= 64 for p in found)


def test_a_held_variable_composes_and_the_proposals_are_new():
    x = np.stack([np.concatenate([[8], np.random.default_rng(k).permutation(8)[:5]]) for k in range(60)])
    held = {"w": parse_expr("count(j: j > 0 and token[j] < token[i])")}
    found, _ = propose(x, held, Grammar(sites=("s",)), True)
    texts = {p.expression: p for p in found}
    move = "aggregate(j: j > 0 and w[j] == i - 1, token[j])"  # the token whose count is this index
    assert move in texts and texts[move].kind == "categorical"
    assert "aggregate(j: j > 0 and w[j] == 5 - i, token[j])" in texts  # the same, read from the end
    np.testing.assert_allclose(texts[move].values, language_values(x, move, held))
    for p in found:  # values are the language's with the held variable too
        if p.kind != "pair":
            np.testing.assert_allclose(p.values, language_values(x, p.expression, held), atol=1e-9, err_msg=p.expression)
    # nothing categorical that a table of the token, the position or w already says
    assert not any(p.kind == "categorical" and p.expression.startswith("count(j: j > 0 and token[j] > token[i]")
                   for p in found)  # = 4 - w on distinct tokens: the same table


def test_the_budget_bounds_the_enumeration():
    x = tokens()
    found, enumerated = propose(x, {}, Grammar(sites=("s",), generated=50), True)
    assert enumerated == 50 and len(found) < 60


def test_no_program_is_written_into_the_search_code():
    """The search's vocabulary code names no program's variable: what it finds, it derives."""
    for path in (ROOT / "theorycraft" / "refine").glob("*.py"):
        tree = ast.parse(path.read_text())
        words = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        words += [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
        words += [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and not isinstance(n.value, ast.Name)]
        found = sorted({m for w in words for m in PROGRAM_NAMES.findall(w)})
        assert not found, f"{path.name} names {found}"


def test_each_heads_recorded_pattern_proposes_the_select_that_explains_it(tmp_path):
    """A recorded pattern site: head 0 attends evenly to the keys after an earlier copy of the
    query's token (a rule over both sides), head 1 to the same token before the query. The
    grammar's selects, judged against each head, propose those rules and no others first."""
    import json

    from conftest import captured
    from theorycraft.refine._propose import proposals
    from theorycraft.refine._search import Judge, explained_sites
    from theorycraft.refine._vocabulary import default_vocabulary, parse_vocabulary
    from theorycraft.inference._fit import site_shapes
    from theorycraft.spec import parse_theory

    n, t = 300, 8
    x = np.random.default_rng(3).integers(0, 3, (n, t))
    rules = ["token[j - 1] == token[i] and j < i", "token[j] == token[i] and j < i"]
    pattern = np.zeros((n, 2, t, t), np.float32)
    for h, rule in enumerate(rules):
        mask = _pair_values(x, rule)
        mask[:, np.arange(t), np.arange(t)] |= mask.sum(-1) == 0  # nothing selected: the query itself
        pattern[:, h] = mask / mask.sum(-1, keepdims=True)
    d = tmp_path / "attn"
    d.mkdir()
    np.save(d / "inputs.npy", x.astype(np.int32))
    np.save(d / "pattern.npy", pattern)
    (d / "manifest.json").write_text(json.dumps({"sites": ["pattern"]}))
    start = parse_theory(f"theory: p\ntarget: activations:{d}\nsites: {{pattern: pattern}}\n", path="p.yaml")
    acts = captured(tmp_path, start)
    vocab = parse_vocabulary(default_vocabulary(start, site_shapes(start, acts.sites), acts.inputs()), "d", start)
    assert vocab.grammar.patterns == ("pattern",) and not vocab.templates
    judge = Judge(start, acts, explained_sites(start, vocab))
    offered = proposals(vocab, judge.assess(start), judge, np.sort(judge.examples.train))
    for h, rule in enumerate(rules):
        first = next(c for c in offered if c.data["head"] == h)
        np.testing.assert_array_equal(_pair_values(x, str(first.data["rule"])), _pair_values(x, rule))


def _pair_values(x, rule):
    from theorycraft.spec import pair_env

    env = pair_env(x, {}, np)
    return np.asarray(evaluate(parse_expr(rule), env)).astype(bool).copy()


def test_a_variable_one_change_away_is_written_into_the_theory_with_its_readers():
    """The search's last pass rewrites a held variable one comparison or constant away; the name
    follows the change where it spells it, and the variable's readers and component follow the name."""
    from theorycraft.refine._moves import neighbours
    from theorycraft.refine._search import rewritten
    from theorycraft.spec import parse_theory

    near = dict((e, n) for n, e in neighbours("t_eq_1_where_pos_lt_pos", "aggregate(j: j > 0 and j < i, token[j] == 1)"))
    assert near["aggregate(j: j > 0 and j <= i, token[j] == 1)"] == "t_eq_1_where_pos_le_pos"
    assert near["aggregate(j: j > 0 and j < i, token[j] == 2)"] == "t_eq_2_where_pos_lt_pos"
    assert not any(e.startswith("aggregate(j: j >= 0") or "j > 1 and" in e for e in near)  # the BOS guard stays
    theory = parse_theory("""
theory: t
target: activations:/nowhere
sites: {s: s}
variables: {v: 'count(j: token[j] < token[i])', w: 'v + 1'}
components:
  v_code: {kind: lookup, of: v, size: 8, predicts: s}
  w_lin: {kind: linear, from: w, predicts: s}
""", path="t.yaml")
    new = rewritten(theory, "v", "v2", "count(j: token[j] <= token[i])")
    assert str(new.variables["v2"]) == "count(j: token[j] <= token[i])" and str(new.variables["w"]) == "v2 + 1"
    assert set(new.components) == {"v2_code", "w_lin"} and str(new.components["v2_code"].of[0]) == "v2"


def test_causal_selects_read_no_later_position_and_a_found_select_is_aggregated():
    """A causal network's theory: every select has ``j <= i`` and reads no later key. A select
    found elsewhere (as a head's pattern points at it) is aggregated first: where it picks two
    keys, the sum of a code over them (an integer: a table); the values are the language's."""
    x = tokens(bos=False, vocab=5, length=7)
    t = x.shape[1]
    both = "(j == 5 - i) or (j == 6 - i)"
    mask = _pair_values(x, both)
    found, _ = propose(x, {}, Grammar(sites=("s",)), False, causal=True, extra=(("two", both, mask),))
    texts = {p.expression: p for p in found}
    total = f"sum(j: token[j] if j <= i and ({both}) else 0)"
    assert total in texts and texts[total].kind == "categorical"
    ahead = np.triu(np.ones((t, t), bool), 1)
    for p in found:
        if p.kind == "pair":
            continue
        assert "(j:" not in p.expression or "j <= i" in p.expression, p.expression
        np.testing.assert_allclose(p.values, language_values(x, p.expression), atol=1e-9, err_msg=p.expression)
    # the sum reads no later key: changing the tokens after each query leaves it where it was
    later = x.copy()
    for i in range(t):
        changed = later.copy()
        changed[:, i + 1:] = (changed[:, i + 1:] + 1) % 5
        np.testing.assert_array_equal(language_values(changed, total)[:, i], language_values(x, total)[:, i])
    assert ahead.any()


def test_held_variables_are_added_and_subtracted():
    x = tokens(bos=False, vocab=4)
    held = {"s": parse_expr("token[i] + token[i - 1]")}
    found, _ = propose(x, held, Grammar(sites=("s",)), False)
    texts = {p.expression for p in found}
    assert "s - token[i]" in texts or "s + token[i]" in texts
    for p in found:
        if p.expression in ("s - token[i]", "s + token[i]", "s - i", "s + i"):
            np.testing.assert_allclose(p.values, language_values(x, p.expression, held), err_msg=p.expression)


def test_a_head_that_splits_its_weight_points_at_two_selects_joined():
    """A head that puts half its weight on each of two keys the position fixes (j == 7 - i and
    j == 9 - i, at the queries 5-7 a site keeps), the same on every example (its mean predicts
    it: no attention rule gains): the grammar still reads what it points at, the two joined."""
    from theorycraft.refine._propose import excess_mass

    n, t = 40, 10
    x = np.random.default_rng(1).integers(0, 4, (n, t))
    recorded = np.tile(np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None], (n, 1, 1, 1))
    for q in (5, 6, 7):
        recorded[:, 0, q] = 0
        recorded[:, 0, q, [7 - q, 9 - q]] = 0.5
    one, two = _pair_values(x, "j == 7 - i"), _pair_values(x, "j == 9 - i")
    at = [5, 6, 7]
    joined = excess_mass(one | two, recorded)[0, at].sum()
    assert joined > excess_mass(one, recorded)[0, at].sum() > 0
    assert joined > excess_mass(np.ones_like(one), recorded)[0, at].sum()  # every key: no excess
    np.testing.assert_allclose(joined, n * sum(1 - 2 / (q + 1) for q in at))  # all its weight, less an even share


def test_a_held_condition_makes_tables_of_two():
    x = tokens(bos=False, vocab=4)
    held = {"c": parse_expr("token[i] < token[i - 1]")}
    found, _ = propose(x, held, Grammar(sites=("s",)), False)
    pairs = {p.reads for p in found if p.kind == "pair"}
    assert ("c", "token[i]") in pairs or ("token[i]", "c") in pairs


def test_at_kept_positions_what_a_term_says_is_left_out():
    """A site that keeps positions 4-5 (tokens below 4): a count equal to the position there is a
    repeat of the position's table; a token read from elsewhere is not; a term keeps its own table."""
    from theorycraft.refine._grammar import Proposal
    from theorycraft.refine._propose import _at, repeats

    x = tokens(bos=False, vocab=4, length=6)
    found, _ = propose(x, {}, Grammar(sites=("s",)), False, causal=True)
    at = [replace_values(p, _at(p.values, [4, 5])) for p in found]
    out = dict(zip([p.expression for p in found], repeats(at)))
    assert not out["i"] and not out["token[i]"]
    assert out["count(j: j <= i and token[j] < i)"]  # = i + 1 where i > 3: the position's table
    reads = [e for e in out if e.startswith("aggregate(j: j <= i and j == 4 - i, token[j])")]
    assert reads and not out[reads[0]]
    assert isinstance(found[0], Proposal)


def replace_values(p, values):
    from dataclasses import replace

    return replace(p, values=values, codes=None)
