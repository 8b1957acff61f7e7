"""Every choice the tool makes is made on the validation split; the test split is only reported.
Proof by sabotage: overwrite every test example of a capture with noise (checksums fixed, so the
store reads it) and run the same fit, score and search. The choices must not move; only the
reported test figures may."""

import json
import shutil

import jax
import numpy as np
import pytest

from theorycraft.inference import FitConfig, fit
from theorycraft.refine import Judge, explained_sites, search
from theorycraft.refine._vocabulary import parse_vocabulary
from theorycraft.scoring import score
from theorycraft.store import ActivationSet, file_digest, manifest_digest

from conftest import captured, recorded_target, theory_for
from test_search import VOCABULARY, start_theory

QUIET = FitConfig(progress=False, max_steps=300)


def scrambled_copy(acts: ActivationSet, directory) -> ActivationSet:
    """The capture with every test row of every site replaced by noise, checksums rewritten."""
    shutil.copytree(acts.directory, directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    rng = np.random.default_rng(7)
    for shard in manifest["shards"]:
        start, stop = shard["rows"]
        test = acts.is_test[start:stop]
        for name in shard["digest"]:
            path = directory / shard["dir"] / f"{name}.npy"
            values = np.load(path)
            values[test] = rng.normal(size=values[test].shape).astype(values.dtype) * 10
            np.save(path, values)
            shard["digest"][name] = file_digest(path)
    manifest["sha256"] = manifest_digest(manifest)  # the manifest signs itself; edited on purpose here
    (directory / "manifest.json").write_text(json.dumps(manifest))
    scrambled = ActivationSet(directory)
    assert np.array_equal(scrambled.is_test, acts.is_test)  # the same data identity: the same splits
    return scrambled


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("honest")
    directory = recorded_target(tmp, y_width=24)  # y worth the bits of its input x
    start = start_theory(directory)
    acts = captured(tmp, start)
    return tmp, directory, start, acts, scrambled_copy(acts, tmp / "scrambled")


def test_fit_and_score_choices_do_not_read_test(pair):
    tmp, directory, _, acts, scrambled = pair
    theory = theory_for(directory, """\
        lin: {kind: linear, from: x, predicts: y}
        waves: {kind: fourier, of: [a], modulus: 7, frequencies: [1, 2]}
        net: {kind: mlp, from: waves, hidden: [8], predicts: u}
        """, sites="x: x, y: y, u: u")
    clean, noisy = fit(theory, acts, QUIET), fit(theory, scrambled, QUIET)
    jax.tree_util.tree_map(np.testing.assert_array_equal, clean.params, noisy.params)  # infer: identical fits
    assert clean.fit_info["closed_form"] == noisy.fit_info["closed_form"]  # the same ridge strengths
    assert clean.fit_info["gradient"]["steps"] == noisy.fit_info["gradient"]["steps"]  # the same early stop
    a, b = score(clean, acts), score(noisy, scrambled)
    assert a.size.quantization == b.size.quantization and a.size.bits_params == b.size.bits_params
    assert a.coverage_validation == b.coverage_validation
    assert a.coverage > 0.5 > b.coverage  # only the reported test figure changes


def test_search_choices_do_not_read_test(pair):
    tmp, _, start, acts, scrambled = pair
    vocab = parse_vocabulary(VOCABULARY, "vocab.yaml", start)
    trails = []
    for capture in (acts, scrambled):
        judge = Judge(start, capture, explained_sites(start, vocab), QUIET)
        trails.append(search(start, capture, vocab, judge=judge).trail)
    clean, noisy = trails
    assert [s.action for s in clean] == [s.action for s in noisy] and len(clean) >= 3
    assert [s.theory for s in clean] == [s.theory for s in noisy]
    assert [s.selection for s in clean] == [s.selection for s in noisy]  # validation totals, to the bit
    assert clean[-1].report.coverage > 0.9 > noisy[-1].report.coverage  # the test report tells them apart
