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
