"""The RASP suite (benchmarks/rasp_suite.py): tracr programs compiled, exported and searched from a
start that names only their sites. Here: its coverage counts a declared input as unexplained, its
true theory's size is what tracr writes, and two programs of the suite run end to end."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from theorycraft.api import capture, load_theory
from theorycraft.refine import Judge
from theorycraft.spec import parse_theory

ROOT = Path(__file__).resolve().parents[1]


def _suite():
    spec = importlib.util.spec_from_file_location("rasp_suite", ROOT / "benchmarks" / "rasp_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rasp_suite"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_declared_input_counts_as_unexplained(tmp_path, monkeypatch):
    """A theory handed resid_0 and mapping it onto the other sites explains those exactly, yet the
    suite's coverage gives resid_0 R² 0: it computes nothing there."""
    monkeypatch.chdir(ROOT)
    start = load_theory("examples/search_rasp_hist.yaml")
    handed = parse_theory(start.to_yaml().rstrip() + """
inputs: [resid_0]
components:
  onto_1: {kind: linear, from: resid_0, predicts: resid_1}
  onto_2: {kind: linear, from: resid_0, predicts: resid_2}
""")
    assert list(handed.inputs) == ["resid_0"]
    acts = capture(start, cache_dir=tmp_path / "cache", progress=False)
    judge = Judge(start, acts, list(start.sites))
    cov, per_site = _suite().free_coverage(judge, judge.assess(handed))
    assert per_site["resid_0"] == 0.0 and per_site["resid_1"] > 0.9 and per_site["resid_2"] > 0.5
    sst = judge.examples.sst["test"]
    weights = {s: sst[s] / sum(sst.values()) for s in sst}
    assert cov == pytest.approx(sum(weights[s] * per_site[s] for s in per_site))
    assert cov < 1 - weights["resid_0"] + 1e-9


def test_pair_balance_is_computed_not_mapped(tmp_path):
    """make_pair_balance(tokens, 0, 1), compiled by tracr (on 150 sequences, to be quick), searched by
    the suite from its sites alone: it computes the shares of 0s and 1s so far that the program
    computes, declares no input and stays within 1.5x the program's parameters. (On these 150
    sequences it keeps two maps, resid_0 -> resid_2 and resid_3 -> resid_4, over the sites its
    tables predict: without them the free-running validation total is higher.)"""
    pytest.importorskip("tracr", reason="tracr (tracr-pypi, in the test extra) is not installed")
    suite = _suite()
    small = dataclasses.replace(suite.PROGRAMS["pair_balance"], examples=150)
    suite.export("pair_balance", tmp_path / "data", small)
    row = suite.run("pair_balance", tmp_path / "data", tmp_path / "out", minutes=3, log=lambda m: None, cpu=True)
    assert row["free"] >= 0.999 and row["own"] and not row["inputs"]
    assert row["params"] <= 1.5 * row["true_params"]
    shares = [v for v in row["variables"].values() if v.startswith("aggregate(")]  # of 0s and of 1s so far
    assert all(any(f"token[j] == {k})" in v for v in shares) for k in (0, 1))


def test_count_derives_the_count_it_was_never_told_of(tmp_path):
    """make_count(tokens, 0), compiled by tracr (150 sequences): the default search derives the
    selector width the program computes, count(j: j > 0 and token[j] == 0), from the grammar, and
    reaches the suite's goal from the sites alone."""
    pytest.importorskip("tracr", reason="tracr (tracr-pypi, in the test extra) is not installed")
    suite = _suite()
    small = dataclasses.replace(suite.PROGRAMS["count"], examples=150)
    suite.export("count", tmp_path / "data", small)
    row = suite.run("count", tmp_path / "data", tmp_path / "out", minutes=3, log=lambda m: None, cpu=True)
    assert row["free"] >= 0.999 and row["own"] and not row["inputs"]
    assert row["params"] <= 1.5 * row["true_params"]
    assert "count(j: j > 0 and token[j] == 0)" in row["variables"].values()
