"""The default vocabulary's grammar finds what a compiled RASP program computes: from a start that
names only the sites, search reaches free-running coverage 1 on tracr's make_hist() and derives
its histogram count (named by its expression, not by the program); a component found at one site
is offered at the others as its extension; a variable the search accepts is a building block of
the next step's proposals (an aggregate selecting by an accepted count)."""

from pathlib import Path

import numpy as np
import pytest

from theorycraft.api import capture, load_theory, search
from theorycraft.inference.engine import site_shapes
from theorycraft.refine._grammar import propose
from theorycraft.refine._propose import proposals
from theorycraft.refine._search import Judge, explained_sites
from theorycraft.refine._vocabulary import default_vocabulary, parse_vocabulary
from theorycraft.spec import parse_theory

ROOT = Path(__file__).resolve().parents[1]
COUNT = "count(j: j > 0 and token[j] == token[i])"  # BOS (a first token that never varies) left out


@pytest.fixture
def hist_start(monkeypatch):
    monkeypatch.chdir(ROOT)  # the start names its activations relative to the repository
    return load_theory("examples/search_rasp_hist.yaml")


def test_search_finds_the_histogram_of_make_hist(tmp_path, hist_start):
    result = search(hist_start, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", budget_minutes=3,
                    max_steps=300, log=lambda m: None)
    found = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    counts = [name for name, e in found.variables.items() if e.text == COUNT]
    assert counts and any([e.text for e in getattr(c, "of", ())] == counts for c in found.components.values())
    assert result.final.selection.coverage_free >= 0.999  # what the trail records, on validation
    assert result.scorecard.coverage_free >= 0.999  # refitted as infer fits it, free-running, on test


def _judge(start, tmp_path):
    acts = capture(start, cache_dir=tmp_path / "cache", progress=False)
    vocab = parse_vocabulary(default_vocabulary(start, site_shapes(start, acts.sites), acts.inputs()), "d", start)
    assert vocab.grammar.sites == tuple(start.sites) and not vocab.templates.keys() - {
        f"{a}_to_{b}" for a in start.sites for b in start.sites}  # the grammar, and maps between sites
    judge = Judge(start, acts, explained_sites(start, vocab))
    return vocab, judge, np.sort(judge.examples.train)


def test_a_found_component_is_offered_at_other_sites_as_its_extension(tmp_path, hist_start):
    vocab, judge, rows = _judge(hist_start, tmp_path)
    current = judge.assess(hist_start)
    first = next(c for c in proposals(vocab, current, judge, rows) if c.kind == "lookup")
    grown = judge.assess(first.apply(hist_start))
    offered = [c for c in proposals(vocab, grown, judge, rows) if c.name == first.name]
    assert offered and all(c.extends and c.extends != first.site for c in offered)
    assert offered[0].apply(grown.theory).components[first.name].predicted() == tuple(
        s for s in hist_start.sites if s in (first.site, offered[0].extends))


def test_an_accepted_variable_is_a_building_block_of_the_next_proposals(tmp_path, hist_start, monkeypatch):
    vocab, judge, rows = _judge(hist_start, tmp_path)
    monkeypatch.setattr("theorycraft.refine._propose.PER_SITE", 0)
    current = judge.assess(hist_start)
    offered = {c.variables.get(c.label): c for c in proposals(vocab, current, judge, rows)}
    assert COUNT in offered  # the data points at the count first among the grammar's thousands
    grown = judge.assess(offered[COUNT].apply(hist_start))
    name = offered[COUNT].label
    found, _ = propose(np.asarray(judge.data["inputs"][rows]), grown.theory.variables, vocab.grammar, True)
    assert any(f"{name}[j]" in p.expression for p in found)  # selects on the count, at the key


# the vocabulary of a search that can take a map: tables of RASP variables at every site, and a map
MAP_OR_TABLES = """\
vocabulary: map-or-tables
variables: {tok: "token[i]", pos: i, hist: "count(j: j > 0 and token[j] == token[i])"}
components:
""" + "".join(f"""\
  tables_{s}: {{kind: lookup, of: {{each: {{tok_code: tok, pos_code: pos}}}}, size: 7, predicts: {s}}}
  hist_{s}: {{kind: lookup, of: {{each: {{hist_code: hist}}}}, size: 7, predicts: {s}}}
""" for s in ("resid_0", "resid_1", "resid_2")) + """\
  resid_0_to_resid_1: {kind: linear, from: resid_0, predicts: resid_1}
"""


def test_a_map_greedy_search_keeps_is_replaced_by_computed_variables(tmp_path, hist_start):
    """Greedy search takes the map resid_0 -> resid_1 first (the residual stream keeps the embedding:
    it explains most of resid_1 at once) and never lets it go; changing its mind, the search drops
    it and grows what computes resid_1 instead, and keeps that because its free-running validation
    total is lower."""
    (tmp_path / "vocab.yaml").write_text(MAP_OR_TABLES)
    result = search(hist_start, vocabulary=str(tmp_path / "vocab.yaml"), out_dir=tmp_path / "out",
                    cache_dir=tmp_path / "cache", max_steps=300, log=lambda m: None, progress=False)
    *greedy, final = result.trail
    assert "resid_0_to_resid_1" in parse_theory(greedy[-1].theory).components  # what greedy search ends with
    assert final.action.startswith("replace resid_0_to_resid_1 by computed variables")
    found = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    assert not found.inputs and "resid_0_to_resid_1" not in found.components
    assert final.selection.bits_total_free < greedy[-1].selection.bits_total_free  # what decided: validation
    assert final.report.coverage_free >= 0.999
