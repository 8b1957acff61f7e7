"""The search's judge: incremental fits judge as full refits do where the fit is closed-form, its
cache of assessed theories stays within its byte bound, and the bound is a checked argument."""

import pytest

from theorycraft.cli import main
from theorycraft.inference import FitConfig
from theorycraft.refine import Judge, parse_vocabulary, search
from theorycraft.refine._judge import param_bytes
from theorycraft.refine._vocabulary import candidates

from conftest import captured, recorded_target
from test_search import VOCABULARY, Y_WIDTH, start_theory

QUIET = FitConfig(max_steps=300, progress=False)


def judges(tmp_path, start, **kwargs):
    acts = captured(tmp_path, start)
    explained = ["u", "y"]
    return acts, {incremental: Judge(start, acts, explained, QUIET, incremental=incremental, **kwargs)
                  for incremental in (True, False)}


def test_incremental_judge_equals_full_refits_where_closed_form(tmp_path):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH), """\
        by_a: {kind: lookup, of: a, size: 7, predicts: u}
        """)
    acts, judge = judges(tmp_path, start)
    vocab = parse_vocabulary(VOCABULARY, "vocab.yaml", start)
    base = {k: j.assess(start) for k, j in judge.items()}
    offered = candidates(vocab, start, state={})
    assert {c.site for c in offered} >= {"u", "y"}
    for cand in offered:  # tables of u (touch u), a linear map and Fourier waves of y (keep u's table)
        theory = cand.apply(start)
        a, b = judge[True].assess(theory, base[True]), judge[False].assess(theory, base[False])
        assert (a.selection, a.report, a.params) == (b.selection, b.report, b.params), cand.description
        kept = a.fitted.fit_info["kept"]
        assert kept == ([] if cand.site == "u" else ["u"]), cand.description
        assert b.fitted.fit_info["kept"] == []


def test_incremental_search_takes_the_same_steps(tmp_path):
    start = start_theory(recorded_target(tmp_path, noise=0.05, y_width=Y_WIDTH))
    acts, judge = judges(tmp_path, start)
    vocab = parse_vocabulary(VOCABULARY, "vocab.yaml", start)
    trails = {k: search(start, acts, vocab, judge=j, progress=False).trail for k, j in judge.items()}
    steps = {k: [(s.action, s.theory, s.selection, s.report, s.params) for s in t] for k, t in trails.items()}
    assert len(steps[True]) >= 3 and steps[True] == steps[False]  # every figure, to the bit


def test_the_cache_keeps_at_most_its_bytes(tmp_path):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    vocab = parse_vocabulary(VOCABULARY, "vocab.yaml", start)
    theories = [c.apply(start) for c in candidates(vocab, start, state={})]
    acts = captured(tmp_path, start)
    big = Judge(start, acts, ["u", "y"], QUIET)
    sizes = [param_bytes(big.assess(t).fitted.params) for t in theories]
    assert big.evicted == 0 and big.held == sum(sizes)
    bound = sum(sorted(sizes)[-2:])  # room for about two
    small = Judge(start, acts, ["u", "y"], QUIET, cache_bytes=bound)
    for t in theories:
        small.assess(t)
        assert small.held <= bound
    assert small.evicted > 0 and len(small.seen) < len(theories) and "evicted" in small.cache_text()
    again = small.assess(theories[0])  # evicted: fitted again, judged the same
    assert again.selection == big.assess(theories[0]).selection


@pytest.mark.parametrize("bad", ["0", "lots", "-1M"])
def test_judge_cache_size_is_checked(bad, capsys):
    with pytest.raises(SystemExit) as info:
        main(["search", "examples/search_superposition.yaml", f"--judge-cache={bad}"])
    assert info.value.code == 2 and "argument --judge-cache: judge_cache must be a size" in capsys.readouterr().err


def test_a_site_fitted_in_another_theory_keeps_that_fit(tmp_path):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    acts, judge = judges(tmp_path, start)
    vocab = parse_vocabulary(VOCABULARY, "vocab.yaml", start)
    offered = candidates(vocab, start, state={})
    on_u = next(c for c in offered if c.site == "u")
    on_y = next(c for c in offered if c.site == "y")
    base = judge[True].assess(start)
    judge[True].assess(on_y.apply(start), base)  # y's fit, in a theory without u's table
    with_u = judge[True].assess(on_u.apply(start), base)
    both = on_y.apply(on_u.apply(start))
    a = judge[True].assess(both, with_u)  # u kept from the base, y from the earlier theory: nothing refitted
    assert sorted(a.fitted.fit_info["kept"]) == ["u", "y"]
    b = judge[False].assess(both, judge[False].assess(start))
    assert (a.selection, a.report, a.params) == (b.selection, b.report, b.params)  # closed form: as a refit
