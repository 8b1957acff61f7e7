"""The safe expression language: semantics under numpy and JAX, and hostile input."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theorycraft.spec import EvaluationError, ExprError, evaluate, evaluate_variables, pair_env, parse_expr, position_env

TOKENS = np.array([[5, 7, 5, 7, 9], [1, 1, 2, 3, 1]], dtype=np.int32)


def values(text, tokens=TOKENS, xp=np):
    return np.asarray(evaluate(parse_expr(text), position_env(xp.asarray(tokens), xp)))


def test_token_at_relative_position_reads_minus_one_outside():
    assert values("token[i - 1]").tolist() == [[-1, 5, 7, 5, 7], [-1, 1, 1, 2, 3]]
    assert values("token[i + 1]")[:, -1].tolist() == [-1, -1]


def test_absolute_position_broadcasts_over_positions():
    assert values("token[0]").tolist() == [[5] * 5, [1] * 5]


def test_arithmetic_comparisons_and_logic():
    assert values("mod(token[0] + token[1], 4)")[:, 0].tolist() == [0, 2]
    assert values("-7 % 3")[0, 0] == 2  # Python's floor modulo, not C's
    assert values("0 < position <= 2").tolist()[0] == [False, True, True, False, False]
    assert values("token[i] == token[i - 2] and not i == 4").tolist()[0] == [False, False, True, True, False]
    assert values("where(i > 1, token[i], 0)").tolist()[1] == [0, 0, 2, 3, 1]
    assert values("max(token[i], 6) if i < 2 else T").tolist()[0] == [6, 7, 5, 5, 5]


def test_numpy_and_jax_agree():
    for text in ["token[i - 1] == token[i]", "mod(token[0] * 3 + i, 5)", "abs(token[i] - 6) // 2"]:
        assert np.array_equal(values(text, xp=np), values(text, xp=jnp)), text


def test_variables_see_each_other_in_order():
    exprs = {"a": parse_expr("token[0]"), "b": parse_expr("token[1]"), "s": parse_expr("mod(a + b, 113)")}
    out = evaluate_variables(exprs, TOKENS, np)
    assert out["s"][:, 0].tolist() == [12, 2]
    assert out["s"].shape == TOKENS.shape


def test_attention_rule_sees_query_and_key():
    env = pair_env(TOKENS, {}, np)
    previous = np.asarray(evaluate(parse_expr("j == i - 1"), env))
    assert previous.shape == (2, 5, 5)
    assert previous[0].astype(int).tolist()[2] == [0, 1, 0, 0, 0]
    induction = np.asarray(evaluate(parse_expr("token[j - 1] == token[i] and j <= i"), env))
    # query 2 holds 5; the token after the earlier 5 (position 0) is at key 1
    assert np.flatnonzero(induction[0, 2]).tolist() == [1]


def _loops(tokens):
    """RASP's reference semantics, written as plain loops over one sequence at a time."""
    out = {"length": [], "reverse": [], "hist": [], "frac": [], "before": [], "prev2": []}
    for seq in tokens.tolist():
        t = len(seq)
        out["length"].append([t] * t)
        out["reverse"].append([seq[t - q - 1] for q in range(t)])
        out["hist"].append([seq.count(x) for x in seq])
        out["frac"].append([sum(seq[k] == 5 for k in range(q + 1)) / (q + 1) for q in range(t)])
        out["before"].append([sum(seq[:q]) for q in range(t)])
        out["prev2"].append([seq[q - 2] if q >= 2 else -1 for q in range(t)])
    return {k: np.array(v) for k, v in out.items()}


RASP = {"length": "count(j: true)", "reverse": "aggregate(j: j == length - i - 1, token[j])",
        "hist": "count(j: token[j] == token[i])", "frac": "aggregate(j: j <= i, token[j] == 5)",
        "before": "sum(j: token[j] * (j < i))", "previous": "token[i - 1]", "prev2": "previous[i - 1]"}


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_reductions_and_indexed_variables_compute_rasp_programs(xp):
    out = evaluate_variables({k: parse_expr(v) for k, v in RASP.items()}, xp.asarray(TOKENS), xp)
    for name, expected in _loops(TOKENS).items():
        assert np.allclose(np.asarray(out[name]), expected), name


def test_aggregate_with_no_selected_key_is_zero_and_a_rule_sees_variables_at_the_key():
    assert values("aggregate(j: j > i, token[j])").tolist()[0] == [7, 7, 8, 9, 0]  # the last query selects none
    exprs = {"previous": parse_expr("token[i - 1]")}
    env = pair_env(TOKENS, evaluate_variables(exprs, TOKENS, np), np)
    # the induction rule with the previous token read at the key: the same keys as token[j - 1]
    a = np.asarray(evaluate(parse_expr("previous[j] == token[i] and j <= i"), env))
    b = np.asarray(evaluate(parse_expr("token[j - 1] == token[i] and j <= i"), env))
    assert a.any() and np.array_equal(a, b)


@pytest.mark.parametrize("text, message", [
    ("mod(x: 3)", "invalid syntax"),  # only reductions take 'j:'
    ("true[i]", "only 'token' and variables can be indexed"),
    ("count(i: 1)", "count ranges over the key positions j"),
    ("sum(j: count(j: 1))", "cannot be nested"),
])
def test_misused_reductions_and_constants_are_refused(text, message):
    with pytest.raises(ExprError, match=re.escape(message)):
        parse_expr(text)


HOSTILE = [
    "__import__('os').system('touch X')", "().__class__", "().__class__.__bases__[0].__subclasses__()",
    "open('f')", "lambda: 1", "(lambda: 1)()", "[x for x in token]", "eval('1')", "exec('x=1')",
    "__builtins__", "token.__class__", "globals()", "getattr(token, 'x')", "f'{1}'", "(x := 1)",
    "'a' * 3", "token[::2]", "{1: 2}", "token[i](1)", "mod(1, m=2)", "import os",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_expression_is_rejected_and_runs_nothing(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExprError) as info:
        parse_expr(text)
    assert info.value.message
    assert 0 <= info.value.offset <= len(text)
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_accepted_or_rejected_cleanly(text):
    try:
        expr = parse_expr(text)
    except ExprError as exc:
        assert 0 <= exc.offset <= len(text) + 1
        return
    assert expr.text == text


ATOMS = st.sampled_from(["i", "T", "token[i]", "token[i - 1]", "token[0]", "1", "2", "3"])
OPS = st.sampled_from(["+", "-", "*", "%", "==", "<", ">=", "and", "or"])


@settings(max_examples=100, deadline=None)
@given(st.recursive(ATOMS, lambda inner: st.tuples(inner, OPS, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
                    max_leaves=8))
def test_generated_expressions_evaluate_the_same_in_numpy_and_jax(text):
    expr = parse_expr(text)
    a = np.asarray(evaluate(expr, position_env(TOKENS, np)))
    b = np.asarray(evaluate(expr, position_env(jnp.asarray(TOKENS), jnp)))
    assert a.shape == TOKENS.shape
    assert np.array_equal(a.astype(np.int64), b.astype(np.int64)), text


@pytest.mark.parametrize("text, place, as_float", [
    ("token[i] ** 12", "example 0, position 1", "token[i] ** 12.0"),  # 7**12 wraps in JAX's 32-bit integers
    ("i * 1000000 * 1000", "example 0, position 3", "i * 1000000 * 1000.0"),  # a step overflows
    ("count(j: token[j] ** 11 > 0)", "example 0, position 0, key 4", "count(j: token[j] ** 11.0 > 0)"),
])
def test_integer_overflow_is_an_error_not_a_wrapped_value(text, place, as_float):
    with pytest.raises(EvaluationError, match=f"overflows 32-bit integers at {place}"):
        values(text)
    assert np.isfinite(values(as_float)).all()


@pytest.mark.parametrize("text", ["token[i] ** 9", "(token[i] * 100000) % 7", "i * 1000000 * 100"])
def test_integers_numpy_accepts_are_the_integers_jax_computes(text):
    b = np.asarray(evaluate(parse_expr(text), position_env(jnp.asarray(TOKENS), jnp)))
    assert np.array_equal(values(text).astype(np.int64), b.astype(np.int64))
