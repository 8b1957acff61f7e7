"""The default vocabulary finds what a compiled RASP program computes: from a start that names only
the sites, search reaches free-running coverage 1 on tracr's make_hist() and names its histogram
count; a component found at one site is offered at the others as its extension, and a variable
built on a found count (sort on target_pos) once it is found."""

from pathlib import Path

import pytest

from theorycraft.api import capture, load_theory, search
from theorycraft.inference.engine import site_shapes
from theorycraft.refine._vocabulary import candidates, default_vocabulary, parse_vocabulary
from theorycraft.spec import parse_theory

ROOT = Path(__file__).resolve().parents[1]
HIST = "count(j: j > 0 and token[j] == token[i])"  # BOS (a first token that never varies) left out


@pytest.fixture
def hist_start(monkeypatch):
    monkeypatch.chdir(ROOT)  # the start names its activations relative to the repository
    return load_theory("examples/search_rasp_hist.yaml")


def test_search_finds_the_histogram_of_make_hist(tmp_path, hist_start):
    result = search(hist_start, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", budget_minutes=1.5,
                    max_steps=300, log=lambda m: None)
    found = parse_theory((tmp_path / "out" / "theory.yaml").read_text())
    assert found.variables["hist"].text == HIST and [e.text for e in found.components["hist_code"].of] == ["hist"]
    assert result.final.selection.coverage_free >= 0.999  # what the trail records, on validation
    assert result.scorecard.coverage_free >= 0.999  # refitted as infer fits it, free-running, on test


def test_a_found_component_is_offered_at_other_sites_as_its_extension(tmp_path, hist_start):
    acts = capture(hist_start, cache_dir=tmp_path / "cache", progress=False)
    text = default_vocabulary(hist_start, site_shapes(hist_start, acts.sites), acts.inputs())
    vocab = parse_vocabulary(text, "d", hist_start)
    first = next(c for c in candidates(vocab, hist_start, state={}) if c.name == "hist_code" and c.site == "resid_1")
    grown = first.apply(hist_start)
    offered = [c for c in candidates(vocab, grown, state={}) if c.name == "hist_code"]
    assert [(c.description, c.data["predicts"]) for c in offered] == [
        ("hist_code -> resid_0", ["resid_0", "resid_1"]), ("hist_code -> resid_2", ["resid_1", "resid_2"])]
    assert offered[1].apply(grown).components["hist_code"].predicted() == ("resid_1", "resid_2")


def test_a_variable_built_on_a_count_is_offered_once_the_count_is_found(tmp_path, hist_start):
    acts = capture(hist_start, cache_dir=tmp_path / "cache", progress=False)
    vocab = parse_vocabulary(default_vocabulary(hist_start, site_shapes(hist_start, acts.sites), acts.inputs()),
                             "d", hist_start)
    assert vocab.variables["sort"] == "aggregate(j: j > 0 and target_pos[j] == i - 1, token[j])"
    assert not any(c.name == "sort_code" for c in candidates(vocab, hist_start, state={}))
    width = next(c for c in candidates(vocab, hist_start, state={}) if c.name == "target_pos_code")
    grown = width.apply(hist_start)
    assert {c.site for c in candidates(vocab, grown, state={}) if c.name == "sort_code"} == set(hist_start.sites)
