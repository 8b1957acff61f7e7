"""One owner per store and per registry: the Store object owns reuse and the request index, one
table names the target schemes, and ``write_recording`` writes what the recording reader reads."""

import re
from pathlib import Path

import numpy as np
import pytest

from theorycraft.configs import CaptureConfig
from theorycraft.spec import SCHEMES, parse_theory, schemes_text
from theorycraft.store import ActivationSet, Request, Store
from theorycraft.targets import TargetError, load_target, write_recording
from theorycraft.targets._load import ADAPTERS

PACKAGES = ("theorycraft", "spec", "inference")


def _sources():
    root = Path(__file__).resolve().parents[1]
    for package in PACKAGES:
        yield from sorted((root / package).rglob("*.py"))


def test_a_recording_written_is_read_back_row_for_row(tmp_path):
    r = np.random.default_rng(0)
    tokens = r.integers(0, 5, size=(40, 3))
    hidden, pattern = r.normal(size=(40, 3, 4)).astype(np.float32), r.random(size=(40, 2, 3, 3)).astype(np.float32)
    d = write_recording(tmp_path / "rec", tokens, {"blocks.0.hook": hidden, "attn:output": pattern},
                        target="a model elsewhere", vocab_size=9)
    target = load_target(f"activations:{d}")
    assert target.hooks() == {"blocks.0.hook": (3, 4), "attn:output": (2, 3, 3)} and target.vocab_size == 9
    rows = np.array([7, 0, 39])
    got = target.record(tokens[rows], rows, ["blocks.0.hook", "attn:output"])
    np.testing.assert_array_equal(got["blocks.0.hook"], hidden[rows])
    np.testing.assert_array_equal(got["attn:output"], pattern[rows])
    np.testing.assert_array_equal(target.dataset(None, 0), tokens)
    before = target.identity
    write_recording(d, tokens, {"blocks.0.hook": hidden})  # rewritten with one site: the other's file goes
    again = load_target(f"activations:{d}")
    assert set(again.hooks()) == {"blocks.0.hook"} and not (d / "attn@output.npy").exists()
    assert again.identity != before


def test_a_bad_recording_is_written_as_given_and_refused_when_read(tmp_path):
    d = write_recording(tmp_path / "rec", np.zeros((4, 2), np.int32), {"x": np.zeros((3, 2), np.float32)})
    with pytest.raises(TargetError, match=r"x.npy: expected a float array .* with N = 4 rows"):
        load_target(f"activations:{d}")


def test_the_store_reuses_what_its_index_knows_and_says_so(tmp_path):
    d = write_recording(tmp_path / "rec", np.arange(60).reshape(30, 2) % 7, {"h": np.ones((30, 2), np.float32)})
    store, target = Store(tmp_path / "cache"), load_target(f"activations:{d}")
    asked = Request({"target": f"activations:{d}"}, ("h",), 20, 0, "float32", None)
    assert store.reuse(asked, print) is None  # nothing held yet
    acts = store.capture(target, ["h"], CaptureConfig(n=20), request=asked, progress=False)
    assert isinstance(acts, ActivationSet) and acts.n == 20
    assert store.reuse(asked, print).key == acts.key  # the request's entry in the index
    said = []
    unsized = Request(asked.source, ("h",), None, 0, "float32", None)
    assert store.reuse(unsized, said.append).key == acts.key and "as --n was not given" in said[0]
    bigger = Request(asked.source, ("h",), 25, 0, "float32", None)
    said.clear()
    assert store.reuse(bigger, said.append) is None and "capturing 25 examples anew" in said[0]
    assert [h.key for h in store.held()] == [acts.key] and store.find(acts.key[:6]).key == acts.key
    assert store.remove(acts.key).key == acts.key
    assert store.reuse(asked, print) is None and store.held() == []  # its index entry went with it


def test_one_table_of_target_schemes():
    assert set(ADAPTERS) == set(SCHEMES)
    assert schemes_text() == "builtin:NAME, hf:PATH, activations:DIR or torch:module:factory"
    assert [s.name for s in SCHEMES.values() if s.runs_code] == ["torch"]
    with pytest.raises(Exception, match="SCHEME one of builtin, hf, activations, torch"):
        parse_theory("theory: t\ntarget: nope:x\nsites: {}\ncomponents: {}\n", path="t.yaml")
    # nowhere else is the list of schemes written out
    listed = re.compile(r"""["'](builtin|hf|activations|torch)["']\s*,\s*["'](builtin|hf|activations|torch)["']""")
    elsewhere = [f"{path}:{n}" for path in _sources() for n, line in enumerate(path.read_text().splitlines(), 1)
                 if listed.search(line)]
    assert not elsewhere, elsewhere


def test_store_modules_are_small():
    root = Path(__file__).resolve().parents[1] / "theorycraft" / "store"
    sizes = {p.name: len(p.read_text().splitlines()) for p in root.glob("*.py")}
    assert set(sizes) >= {"_durable.py", "_capture.py", "_reading.py", "_index.py"}
    assert all(lines < 400 for lines in sizes.values()), sizes
