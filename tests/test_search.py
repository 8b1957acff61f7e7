"""theorycraft search: planted mechanisms are found, planted useless parts are pruned, the written
theory re-infers to the trail's score; vocabularies are checked like theories; estimates are exact
where they claim to be."""

import dataclasses
import json
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest

from theorycraft._metrics import read_metrics
from theorycraft.api import search
from theorycraft.cli import main
from theorycraft.inference import FitConfig, fit
from theorycraft.inference.engine import Stopped, site_shapes
from theorycraft.inference.kinds.linear import mechanism_gain
from theorycraft.inference.kinds.lookup import lookup_gain
from theorycraft.refine import SearchResult, Step
from theorycraft.refine._propose import proposals
from theorycraft.refine._proxy import ridge_gains
from theorycraft.refine._search import Judge, explained_sites
from theorycraft.scoring import Scorecard, score
from theorycraft.refine._vocabulary import candidates, default_vocabulary, parse_vocabulary
from theorycraft.spec import TheoryError, parse_theory

from conftest import captured, per_position_target, r2_test, recorded_target

# u is exactly a table of token[0]; y = x W + 1.5 + noise; the other tokens carry nothing
Y_WIDTH = 24  # y (24 dims) is a linear map of x (6 dims): worth x's bits, which a theory given x pays

VOCABULARY = """\
vocabulary: planted
variables: {a: 'token[0]', b: 'token[1]', c: 'token[2]'}
components:
  tables: {kind: lookup, of: {each: {by_a: a, by_b: b, by_c: c}}, predicts: u}
  x_to_y: {kind: linear, from: x, predicts: y}
  waves: {kind: fourier, of: [b], modulus: 7, frequencies: {each: 1..3}, predicts: y}
"""


def start_theory(directory, components=""):
    return parse_theory(textwrap.dedent(f"""\
        theory: planted
        target: activations:{directory}
        sites: {{x: x, y: y, u: u}}
        variables: {{a: 'token[0]', b: 'token[1]'}}
        """) + (f"components:\n{textwrap.indent(textwrap.dedent(components), '  ')}" if components else ""),
        path="start.yaml")


def run_search(tmp_path, start, vocabulary=VOCABULARY):
    vocab_path = tmp_path / "vocab.yaml"
    vocab_path.write_text(vocabulary)
    return search(start, vocabulary=str(vocab_path), out_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                  max_steps=300, log=lambda m: None)


def test_search_finds_the_planted_mechanisms_and_nothing_else(tmp_path):
    summary = run_search(tmp_path, start_theory(recorded_target(tmp_path, noise=0.05, y_width=Y_WIDTH)))
    found = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    assert set(found.components) == {"by_a", "x_to_y"}
    assert found.components["by_a"].predicts == "u" and found.components["x_to_y"].predicts == "y"
    final = summary.final.report
    assert final.r2["u"] > 0.999 and final.r2["y"] > 0.99
    totals = [s.selection.bits_total for s in summary.trail]  # what the search decides on: validation
    assert totals == sorted(totals, reverse=True) and totals[-1] < 0.7 * totals[0]  # x is paid for
    assert (tmp_path / "out" / "trail.png").stat().st_size > 0
    assert (tmp_path / "out" / "fitted" / "params.safetensors").exists()
    steps = [r for r in read_metrics(tmp_path / "out") if r["event"] == "search"]  # one record a step, as it went
    assert [r["step"] for r in steps] == list(range(len(summary.trail)))
    assert [r["bits_total"] for r in steps] == [s.selection.bits_total for s in summary.trail]


def test_pruning_removes_a_planted_useless_component(tmp_path):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH), """\
        by_a: {kind: lookup, of: a, size: 7, predicts: u}
        by_b: {kind: lookup, of: b, size: 7, predicts: u, doc: "u does not depend on b"}
        """)
    summary = run_search(tmp_path, start)
    actions = [s.action for s in summary.trail]
    assert actions[:2] == ["start", "remove by_b"]
    found = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    assert "by_a" in found.components and "by_b" not in found.components
    assert summary.trail[1].selection.bits_total < summary.trail[0].selection.bits_total


def test_the_written_theory_reinfers_to_the_trails_score(tmp_path):
    directory = recorded_target(tmp_path, y_width=Y_WIDTH)
    summary = run_search(tmp_path, start_theory(directory))
    written = parse_theory((tmp_path / "out" / "theory.yaml").read_text(), path="theory.yaml")
    vocab = parse_vocabulary(VOCABULARY, "vocab.yaml", written)
    acts = captured(tmp_path, written)
    judge = Judge(written, acts, explained_sites(written, vocab), FitConfig(max_steps=300, progress=False))
    again = judge.assess(written)
    for ours, trail in ((again.selection, summary.final.selection), (again.report, summary.final.report)):
        assert ours.bits_total == pytest.approx(trail.bits_total) and ours.coverage == pytest.approx(trail.coverage)


def test_search_command_reports_the_trail(tmp_path, capsys):
    directory = recorded_target(tmp_path, y_width=Y_WIDTH)
    (tmp_path / "start.yaml").write_text(start_theory(directory).to_yaml())
    (tmp_path / "vocab.yaml").write_text(VOCABULARY)
    code = main(["search", str(tmp_path / "start.yaml"), "--vocabulary", str(tmp_path / "vocab.yaml"), "--out",
                 str(tmp_path / "out"), "--max-steps", "300", "--cache", str(tmp_path / "cache")])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("found in ") and "trail.json" in printed
    trail = json.loads((tmp_path / "out" / "trail.json").read_text())
    assert trail["trail"][0]["action"] == "start" and trail["fit"]["max_steps"] == 300
    assert trail["fit"]["restarts"] == 1 and trail["fit"]["patience"] == 5  # every setting that moves a fit
    assert {"validation", "test"} <= set(trail["trail"][-1])  # what chose each step, and what it reports
    assert SearchResult.from_json(trail).trail == tuple(Step.from_json(s) for s in trail["trail"])


@pytest.mark.parametrize("text, where, message", [
    ("vocabulary: v\ncomponent: {}\n", "1:1", "expected 'components:'"),
    ("vocabulary: v\ncomponents:\n  t: {kind: lookup, of: a, predicts: u}\nextra: 1\n", "4:1", "unknown key 'extra'"),
    ("components:\n  t: {kind: lookup, of: a}\n", "2:6", "missing required key 'predicts'"),
    ("components:\n  t: {kind: fourier, of: a, modulus: 7, frequencies: {each: []}, predicts: u}\n", "2:61",
     "expected 'each:' to hold a non-empty list"),
    ("components:\n  t: {kind: fourier, of: a, modulus: 7, frequencies: {each: [1, -2]}, predicts: u}\n", "2:54",
     "expected a number > 0, found -2"),
    ("components:\n  t: {kind: lookup, of: a, predicts: w}\n", "2:38", "expected a site of the start theory"),
    ("components:\n  t: {kind: lookp, of: a, predicts: u}\n", "2:13", "did you mean 'lookup'"),
    ("grammar: {sites: [w]}\n", "1:19", "expected a site of the start theory"),  # a grammar alone is a vocabulary
    ("grammar: {sites: [u], shfts: [1]}\n", "1:23", "unknown key 'shfts' in 'grammar:' (did you mean 'shifts'?)"),
    ("grammar: {sites: [u], generated: 0}\n", "1:34", "grammar 'generated': input should be greater than 0"),
])
def test_vocabulary_errors_name_the_place(tmp_path, text, where, message):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    with pytest.raises(TheoryError) as err:
        parse_vocabulary(text, "v.yaml", start)
    first = str(err.value.diagnostics[0])
    assert first.startswith(f"v.yaml:{where}: error:") and message in first, first


def test_vocabulary_file_errors_exit_1(tmp_path, capsys):
    directory = recorded_target(tmp_path, y_width=Y_WIDTH)
    (tmp_path / "start.yaml").write_text(start_theory(directory).to_yaml())
    (tmp_path / "vocab.yaml").write_text("components:\n  t: {kind: lookup, of: a, predicts: nowhere}\n")
    assert main(["search", str(tmp_path / "start.yaml"), "--vocabulary", str(tmp_path / "vocab.yaml"),
                 "--cache", str(tmp_path / "cache")]) == 1
    assert "vocab.yaml:2:38: error: expected a site of the start theory" in capsys.readouterr().err


def test_default_vocabulary_offers_tables_rules_and_mechanisms(tmp_path):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    acts = captured(tmp_path, start)
    vocab = parse_vocabulary(default_vocabulary(start, site_shapes(start, acts.sites), acts.inputs()), "d", start)
    offered = candidates(vocab, start, state={})
    kinds = {(c.kind, c.site) for c in offered}
    assert ("linear", "y") in kinds and ("linear", "u") in kinds  # from the sites before them
    assert ("lookup", "u") in kinds and ("rule", "u") in kinds
    assert ("fourier", "u") in kinds  # tokens take every value 0..6: numbers mod 7
    assert all(c.apply(start) for c in offered)  # every candidate joins as a valid theory


def test_default_tables_of_previous_tokens_fit_where_there_is_no_previous_token(tmp_path):
    directory = per_position_target(tmp_path)
    start = parse_theory(f"theory: s\ntarget: activations:{directory}\nsites: {{h: h}}\n", path="s.yaml")
    acts = captured(tmp_path, start)
    vocab = parse_vocabulary(default_vocabulary(start, site_shapes(start, acts.sites), acts.inputs()), "d", start)
    judge = Judge(start, acts, explained_sites(start, vocab))
    rows = np.sort(judge.examples.train)
    first = {c.variables.get(c.label) for c in proposals(vocab, judge.assess(start), judge, rows)[:3]}
    assert "token[i - 1]" in first  # h reads the previous token: the data ranks its table among the first
    every = dataclasses.replace(vocab, grammar=vocab.grammar.model_copy(update={"estimated": 10 ** 4}))
    tables = {c.variables.get(c.label): c for c in proposals(every, judge.assess(start), judge, rows) if c.kind == "lookup"}
    for text in ("token[i - 1]", "token[i - 2]"):  # both read -1 at the first positions: the outside row
        assert tables[text].data["outside"] == "row"
        fitted = fit(tables[text].apply(start), acts, FitConfig(progress=False))
        assert r2_test(fitted, acts, "h") > 0


def test_merging_candidates_add_one_frequency_at_a_time(tmp_path):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    vocab = parse_vocabulary(VOCABULARY, "v.yaml", start)
    first = next(c for c in candidates(vocab, start, state={}) if c.kind == "fourier" and c.label == "2")
    grown = first.apply(start)
    assert list(grown.components["waves"].frequencies) == [2]
    assert grown.components["y_readout"].from_ == ("waves",)
    more = [c for c in candidates(vocab, grown, state={}) if c.kind == "fourier"]
    assert sorted(c.label for c in more) == ["1", "3"]
    assert sorted(more[0].apply(grown).components["waves"].frequencies) == [1, 2]


def test_estimates_match_exact_least_squares():
    r = np.random.default_rng(0)
    z = r.normal(size=(3, 200, 4)).astype(np.float32)
    residual = r.normal(size=(200, 5)).astype(np.float32)
    gains = np.asarray(ridge_gains(jnp.asarray(z), jnp.asarray(residual)))
    for k in range(3):
        design = np.c_[z[k], np.ones(200)]
        fitted = design @ np.linalg.lstsq(design, residual, rcond=None)[0]
        centred = residual - residual.mean(0)
        exact = (centred ** 2).sum() - ((residual - fitted) ** 2).sum()
        assert gains[k] == pytest.approx(exact, rel=5e-3)  # ridge: 1e-3 of the mean eigenvalue
    cells = r.integers(0, 6, 200)
    exact = sum((residual[cells == c].sum(0) ** 2).sum() / ((cells == c).sum() + 1) for c in range(6))
    assert lookup_gain(cells, 6, residual) == pytest.approx(exact)
    x = r.normal(size=(200, 3))
    full = mechanism_gain(x, residual.astype(np.float64), None)
    design = np.c_[x, np.ones(200)]
    fitted = design @ np.linalg.lstsq(design, residual, rcond=None)[0]
    assert full == pytest.approx(((fitted - residual.mean(0)) ** 2).sum(), rel=5e-3)
    assert mechanism_gain(x, residual.astype(np.float64), 1) < full


def test_estimates_are_kept_where_a_step_left_the_residual_unchanged_and_priced_at_parameter_bits(tmp_path, monkeypatch):
    from theorycraft.inference.kinds import linear, lookup
    from theorycraft.refine import _proxy
    from theorycraft.refine._proxy import bits_per_param
    from theorycraft.scoring import measure

    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    vocab = parse_vocabulary(VOCABULARY + "  low: {kind: linear, from: x, rank: {each: [1, 2, 4]}, predicts: y}\n",
                             "v.yaml", start)
    judge = Judge(start, captured(tmp_path, start), explained_sites(start, vocab), FitConfig(max_steps=300, progress=False))
    rows = judge.examples.train
    calls = {"whiten": 0, "spectrum": 0, "table": 0}

    def counted(name, real):
        def wrapper(*args):
            calls[name] += 1
            return real(*args)
        return wrapper

    monkeypatch.setattr(linear, "whiten", counted("whiten", linear.whiten))
    monkeypatch.setattr(linear, "whitened_spectrum", counted("spectrum", linear.whitened_spectrum))
    monkeypatch.setattr(lookup, "lookup_gain", counted("table", lookup.lookup_gain))
    described = lambda ranked: [(c.description, round(g, 6)) for c, g in ranked]  # noqa: E731
    current, memo = judge.assess(start), {}
    offered = candidates(vocab, start, state={})
    first = _proxy.rank(offered, current, judge, rows, memo=memo)
    assert described(first) == described(_proxy.rank(offered, current, judge, rows))  # the same without a memo
    # x_to_y and low at ranks 1, 2, 4 share one whitening of x and one spectrum (and so again without the memo)
    assert calls == {"whiten": 1 + 1, "spectrum": 1 + 1, "table": 3 + 3}
    by_a = next(c for c in offered if c.name == "by_a")
    after = judge.assess(by_a.apply(start), current)  # a table at u: y's residual is as it was
    offered = candidates(vocab, after.theory, state={"by_a": "tables"})
    again = _proxy.rank(offered, after, judge, rows, memo=memo)
    assert calls == {"whiten": 2, "spectrum": 2, "table": 6 + 2}  # only u's tables (by_b, by_c) are estimated anew
    assert described(again) == described(_proxy.rank(offered, after, judge, rows))
    assert len(memo) == len(judge.explained) + 1  # the current residuals' entries, and the rows'
    # a new parameter is priced at the parameters' own bits, not at the theory's (which hold x once given)
    mapped = judge.assess(next(c for c in candidates(vocab, start, state={}) if c.name == "x_to_y").apply(start))
    size = measure(mapped.fitted, judge.examples)
    assert "x" in mapped.fitted.theory.inputs and size.inputs["validation"] > 0
    assert bits_per_param(mapped) == pytest.approx(size.params / mapped.params)
    assert mapped.bits_params == pytest.approx(size.params)
    assert mapped.bits_params < mapped.selection.bits_theory - size.inputs["validation"]


def test_estimates_count_parameters_as_the_fit_makes_them(tmp_path):
    import jax

    from theorycraft.inference._compile import init_params, make_plan
    from theorycraft.refine._proxy import _param_count

    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    vocab = parse_vocabulary(VOCABULARY + "  low: {kind: linear, from: x, rank: {each: [2]}, predicts: y}\n"
                             "  net: {kind: mlp, from: x, hidden: [5], predicts: y}\n"
                             "  sae: {kind: dictionary, from: x, width: 12, k: 2, predicts: y}\n", "v.yaml", start)
    acts = captured(tmp_path, start)
    judge = Judge(start, acts, explained_sites(start, vocab), FitConfig(max_steps=300, progress=False))
    theory = start
    for cand in candidates(vocab, start, state={}):  # every kind at once: tables, maps, waves and read-out, mlp, sae
        theory = cand.apply(theory) if cand.name not in theory.components else theory
    plan = make_plan(theory, judge.shapes, acts.vocab_size)
    traced = jax.eval_shape(lambda: init_params(plan, jax.random.PRNGKey(0)))
    assert _param_count(theory, judge) == sum(x.size for x in jax.tree_util.tree_leaves(traced)) > 0


def test_fitted_search_result_scores_like_a_direct_fit(tmp_path):
    directory = recorded_target(tmp_path, y_width=Y_WIDTH)
    run_search(tmp_path, start_theory(directory))
    written = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    acts = captured(tmp_path, written)
    card = score(fit(written, acts, FitConfig(max_steps=300, progress=False)), acts)
    assert card == Scorecard.load(tmp_path / "out" / "fitted").replace(fit=card.fit)  # every score: infer's


def test_named_items_coexist_and_unnamed_choices_replace_each_other(tmp_path):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    vocab = parse_vocabulary(VOCABULARY + "  low: {kind: linear, from: x, rank: {each: [1, 2]}, predicts: y}\n",
                             "v.yaml", start)
    with_a = next(c for c in candidates(vocab, start, state={}) if c.name == "by_a").apply(start)
    by_b = next(c for c in candidates(vocab, with_a, state={"by_a": "tables"}) if c.name == "by_b")
    assert by_b.replaces == () and {"by_a", "by_b"} <= set(by_b.apply(with_a).components)
    with_rank_1 = next(c for c in candidates(vocab, start, state={}) if c.name == "low_1").apply(start)
    rank_2 = next(c for c in candidates(vocab, with_rank_1, state={"low_1": "low"}) if c.name == "low_2")
    assert rank_2.replaces == ("low_1",)
    swapped = rank_2.apply(with_rank_1)
    assert "low_1" not in swapped.components and swapped.components["low_2"].rank == 2


def test_an_interrupted_search_keeps_what_it_found(tmp_path, monkeypatch):
    from theorycraft.refine import _search

    assess = _search.Judge.assess
    calls = {"n": 0}

    def interrupt_later(self, theory, base=None, stop=None):
        calls["n"] += 1
        if calls["n"] > 6:  # after the first additions: as if Ctrl-C were pressed mid-step
            raise KeyboardInterrupt
        return assess(self, theory, base, stop)

    monkeypatch.setattr(_search.Judge, "assess", interrupt_later)
    summary = run_search(tmp_path, start_theory(recorded_target(tmp_path, y_width=Y_WIDTH)))
    assert summary.stopped == "interrupted" and len(summary.trail) >= 2
    found = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    assert found.to_yaml() == summary.trail[-1].theory  # the last accepted step, written out


def test_the_time_budget_stops_the_step_in_flight_and_keeps_the_best_so_far(tmp_path, monkeypatch):
    from theorycraft.api import capture
    from theorycraft.inference import _fit
    from theorycraft.refine import _proxy, write_search
    from theorycraft.refine._search import search as grow

    start = parse_theory(textwrap.dedent(f"""\
        theory: budget
        target: activations:{recorded_target(tmp_path)}
        sites: {{x: x, u: u, z: z}}
        variables: {{a: 'token[0]'}}
        components:
          by_a: {{kind: lookup, of: a, size: 7, predicts: u}}
        """), path="start.yaml")
    vocab = parse_vocabulary("vocabulary: slow\ncomponents:\n  net: {kind: mlp, from: x, hidden: [16], predicts: z}\n",
                             "vocab.yaml", start)
    acts = capture(start, cache_dir=tmp_path / "cache", progress=False)
    config = FitConfig(progress=False, max_steps=10 ** 6, patience=10 ** 6)  # uncut, the mlp's Adam runs for hours
    judge = Judge(start, acts, explained_sites(start, vocab), config)
    # the start judged and JAX's first-use compilations done before the clock starts, so that
    # the budget runs out inside the first step's Adam loop, not before it
    current = judge.assess(start)
    offered = candidates(vocab, start, state={})
    _proxy.rank(offered, current, judge, judge.examples.train)
    fit(offered[0].apply(start), acts, dataclasses.replace(config, max_steps=2), data=judge.data)
    budget = 3.0
    stopped_in_adam = []
    fit_gradient = _fit.fit_gradient

    def watched(*args, **kwargs):
        try:
            return fit_gradient(*args, **kwargs)
        except Stopped:
            stopped_in_adam.append(True)
            raise

    monkeypatch.setattr(_fit, "fit_gradient", watched)
    began = time.perf_counter()
    found = grow(start, acts, vocab, judge=judge, budget_seconds=budget, progress=False)
    took = time.perf_counter() - began
    # stopped inside the fit, at the budget (the slack covers compiling the fit's step, on a busy machine)
    assert took < budget + 8 and stopped_in_adam, f"took {took:.1f} s of a {budget} s budget; {found.stopped}"
    assert "the step in flight was stopped" in found.stopped
    assert [s.action for s in found.trail] == ["start"] and found.best.theory == start  # the best so far
    summary = write_search(found, judge, tmp_path / "out", start_path="start.yaml", target_coverage=0.99,
                           config=dataclasses.replace(config, max_steps=300))
    written = SearchResult.from_json(json.loads((tmp_path / "out" / "trail.json").read_text()))
    assert written.stopped == found.stopped and written.scorecard.coverage == summary.scorecard.coverage
    assert parse_theory((tmp_path / "out" / "theory.yaml").read_text()).to_yaml() == written.final.theory


def test_vocabulary_variable_errors_point_inside_the_expression(tmp_path):
    start = start_theory(recorded_target(tmp_path, y_width=Y_WIDTH))
    with pytest.raises(TheoryError) as err:
        parse_vocabulary("variables: {c: 'token[2] +'}\ncomponents:\n  t: {kind: lookup, of: c, predicts: u}\n",
                         "v.yaml", start)
    assert str(err.value.diagnostics[0]).startswith("v.yaml:1:27: error: invalid expression")  # at the end, where it breaks


def test_bundled_vocabularies_join_their_start_theories(at_root):
    from theorycraft.refine._vocabulary import load_vocabulary
    from theorycraft.spec import load_theory

    start = load_theory("examples/search_superposition.yaml")
    vocab = load_vocabulary("examples/vocabularies/superposition_bottleneck.yaml", start)
    assert vocab.sites == ["h", "out"] and len(candidates(vocab, start, state={})) == 10


def test_a_trail_of_the_start_alone_is_plotted(tmp_path):
    from theorycraft.refine._search import Totals
    from theorycraft.refine._trail import plot_trail

    start = Totals(0.0, 1000.0, 0.0, {"y": 0.0})  # nothing accepted: no theory bits to put on a log axis
    plot_trail((Step("start", "theory: t", start, start, 0, 0.0),), None, tmp_path / "trail.png")
    assert (tmp_path / "trail.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_vocabulary_may_read_the_start_theorys_variables_after_the_search_drops_them(tmp_path):
    # no `variables:` of its own: by_b reads the start's b, which no component of the start uses
    vocabulary = ("components:\n  tables: {kind: lookup, of: {each: {by_a: a, by_b: b}}, predicts: u}\n"
                  "  x_to_y: {kind: linear, from: x, predicts: y}\n")
    summary = run_search(tmp_path, start_theory(recorded_target(tmp_path, noise=0.05, y_width=Y_WIDTH)), vocabulary)
    found = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    assert set(found.components) == {"by_a", "x_to_y"} and len(summary.trail) == 3


def test_pruning_splits_a_table_of_two_keys_where_they_act_apart(tmp_path):
    """h = F[token[i]] + G[token[i - 1]]: a start holding one table of both keys (7 × 7 rows and the
    outside row) is re-expressed as a table of each (7 + 7 + 1 rows each way), which explains h as
    well with fewer parameters, so it codes validation in fewer bits."""
    directory = per_position_target(tmp_path)
    start = parse_theory(textwrap.dedent(f"""\
        theory: s
        target: activations:{directory}
        sites: {{h: h}}
        components:
          both: {{kind: lookup, of: ['token[i]', 'token[i - 1]'], size: [7, 7], outside: row, predicts: h}}
        """), path="s.yaml")
    vocabulary = "vocabulary: v\ncomponents:\n  tok: {kind: lookup, of: 'token[i]', size: 7, predicts: h}\n"
    summary = run_search(tmp_path, start, vocabulary)
    assert summary.trail[1].action == "split both into 2 tables"
    found = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    assert "both" not in found.components and len(found.components) == 2
    assert sorted(str(c.of[0]) for c in found.components.values()) == ["token[i - 1]", "token[i]"]
    assert summary.trail[1].params < summary.trail[0].params / 2
    assert summary.trail[1].report.coverage >= summary.trail[0].report.coverage - 1e-3


def test_a_component_may_be_taken_over_by_anothers_extension():
    """The last pass offers each component removed and another extended to the sites it predicted:
    a joint table kept from early growth, replaced by a table of one variable found later."""
    from theorycraft.refine._search import takeovers

    theory = parse_theory(textwrap.dedent("""\
        theory: t
        target: activations:/nowhere
        sites: {a: a, b: b}
        variables: {c: 'count(j: token[j] == 0)'}
        components:
          joint: {kind: lookup, of: [i, c], size: [6, 7], predicts: b}
          c_code: {kind: lookup, of: c, size: 7, predicts: a}
        """), path="t.yaml")
    offered = dict(takeovers(theory))
    assert set(offered) == {"replace joint by c_code -> b", "replace c_code by joint -> a"}
    taken = offered["replace joint by c_code -> b"]
    assert set(taken.components) == {"c_code"} and list(taken.components["c_code"].predicted()) == ["a", "b"]


def test_a_takeover_that_would_make_a_map_read_its_own_site_is_not_offered():
    from theorycraft.refine._search import takeovers

    theory = parse_theory(textwrap.dedent("""\
        theory: t
        target: activations:/nowhere
        sites: {a: a, b: b}
        components:
          tok: {kind: lookup, of: 'token[i]', size: 7, predicts: a}
          a_to_b: {kind: linear, from: a, predicts: b}
        """), path="t.yaml")
    assert [action for action, _ in takeovers(theory)] == ["replace a_to_b by tok -> b"]
