"""Streaming from the memory-mapped shards: lazy rows, seeded shuffle windows, and fits and
scores that read the capture batch by batch the same as in one piece."""

from pathlib import Path

import numpy as np
import pytest

from theorycraft.inference import FitConfig, _examples, _stream, fit
from theorycraft.inference.engine import load_examples
from theorycraft.inference._stream import Windows, picked
from theorycraft.scoring import score
from theorycraft.spec import parse_theory
from theorycraft.store import capture
from theorycraft.targets import load_target, write_recording

from conftest import per_position_target, recorded_target, theory_for


def _sharded(tmp_path, theory, shard_rows=64):
    return capture(load_target(theory.target), [s.hook for s in theory.sites.values()], cache_dir=tmp_path / "cache",
                   progress=False, shard_rows=shard_rows)


def test_rows_read_from_shards_are_the_stored_rows(tmp_path):
    d = per_position_target(tmp_path)
    theory = parse_theory(f"theory: p\ntarget: activations:{d}\nsites: {{h: h, h2: {{hook: h, position: 2}}}}\n"
                          "components: {}\n", path="p.yaml")
    acts = _sharded(tmp_path, theory)
    assert len(acts.manifest["shards"]) > 3
    data, whole = load_examples(theory, acts), acts.site("h")
    rows = np.random.default_rng(0).permutation(acts.n)[:150]  # across every shard, out of order
    np.testing.assert_array_equal(data["h"][rows], whole[rows])
    np.testing.assert_array_equal(data["h2"][rows], whole[rows, 2])
    np.testing.assert_array_equal(data["h"][10:200], whole[10:200])
    np.testing.assert_array_equal(data["inputs"][rows], np.asarray(acts.inputs())[rows])
    assert data["h"].shape == whole.shape and data["h"][rows].dtype == np.float32
    held = _stream.resident(data)  # small: every array read into memory, the same values
    assert all(isinstance(v, np.ndarray) for v in held.values())
    for key in data:
        np.testing.assert_array_equal(held[key][rows], data[key][rows])
    assert _stream.resident(data, budget=1024) is data  # too large for the budget: read from the shards


def _epoch(windows, epoch):
    """The positions an epoch's steps visit, in order."""
    out = []
    for k in range(epoch * windows.per_epoch, (epoch + 1) * windows.per_epoch):
        e, w, start = windows.locate(k)
        members = windows.members(e, w)
        out.append(members[picked(windows.order(e, w, len(members)), start, windows.per_step)])
    return np.concatenate(out)


def test_shuffle_windows_visit_every_example_once_an_epoch_and_are_seeded():
    make = lambda seed: Windows(1000, 50, seed, 200, blocks=[(0, 300), (300, 1000)])  # noqa: E731
    windows = make(3)
    assert not windows.resident and windows.window == 200
    first, second = _epoch(windows, 0), _epoch(windows, 1)
    np.testing.assert_array_equal(np.sort(first), np.arange(1000))
    np.testing.assert_array_equal(np.sort(second), np.arange(1000))
    assert not np.array_equal(first, second)  # a new order each epoch
    np.testing.assert_array_equal(_epoch(make(3), 0), first)  # the same for the same seed
    assert not np.array_equal(_epoch(make(4), 0), first)
    assert not np.array_equal(first[:200], np.arange(200))  # not store order


def test_processes_take_equal_slices_of_the_steps_of_one():
    """N processes draw one process's order and each feeds its slice of every step: together,
    the steps of one process; a window's ``share`` is what a process reads of it, no more."""
    windows = Windows(1000, 48, 3, 200, blocks=[(0, 300), (300, 1000)])
    for k in range(3 * windows.per_epoch):
        e, w, start = windows.locate(k)
        members = windows.members(e, w)
        order = windows.order(e, w, len(members))
        one = members[picked(order, start, 48)]
        parts = [members[picked(order, start, 48, p, 3)] for p in range(3)]
        assert all(len(part) == 16 for part in parts)
        np.testing.assert_array_equal(np.concatenate(parts), one)
        for p, part in enumerate(parts):
            assert set(part) <= set(members[order[windows.share(w, p, 3)]])
    e, w, _ = windows.locate(0)
    shares = [windows.share(w, p, 3) for p in range(3)]
    assert sum(map(len, shares)) == 192 and len(np.unique(np.concatenate(shares))) == 192  # 4 steps of 48, split


def test_a_split_that_fits_is_one_permutation_an_epoch():
    windows = Windows(100, 30, 7, 10 ** 6)
    assert windows.resident
    order = np.random.default_rng([7, 0]).permutation(100)
    np.testing.assert_array_equal(_epoch(windows, 0), order[:90])  # 3 steps of 30


def test_fits_and_scores_in_small_batches_equal_one_batch(tmp_path, monkeypatch):
    theory = theory_for(recorded_target(tmp_path), """\
        map: {kind: linear, from: x, predicts: y}
        by_a: {kind: lookup, of: a, size: 7, predicts: z}
        by_b: {kind: lookup, of: b, size: 7, predicts: z}
        """)
    acts = _sharded(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False))
    card = score(fitted, acts, bits=False)
    monkeypatch.setattr(_stream, "ROWS", 64)  # dozens of batches, across shards
    small = fit(theory, acts, FitConfig(progress=False))
    for name, params in fitted.params.items():
        for key, value in params.items():
            np.testing.assert_allclose(small.params[name][key], value, rtol=1e-4, atol=1e-5)
    small_card = score(small, acts, bits=False)
    for site in ("y", "z"):
        assert abs(small_card.sites[site].r2_test - card.sites[site].r2_test) < 1e-5


def test_adam_streams_shuffled_windows_when_the_split_does_not_fit(tmp_path, monkeypatch):
    theory = theory_for(recorded_target(tmp_path), """\
        net: {kind: mlp, from: x, hidden: [8], predicts: y}
        """)
    acts = _sharded(tmp_path, theory)
    config = FitConfig(progress=False, max_steps=120, batch_size=64, eval_every=40)
    resident = fit(theory, acts, config)
    monkeypatch.setattr(_stream, "RESIDENT_BYTES", 4096)  # a window of ~100 examples
    said = []
    streamed = fit(theory, acts, config, log=said.append)
    assert any("streaming" in line for line in said)
    again = fit(theory, acts, config)
    np.testing.assert_array_equal(np.asarray(again.params["net"]["layer0"]["w"]), np.asarray(streamed.params["net"]["layer0"]["w"]))
    r2 = {name: score(f, acts, bits=False).sites["y"].r2_test for name, f in (("resident", resident),
                                                                               ("streamed", streamed))}
    assert r2["streamed"] > 0.03 and abs(r2["streamed"] - r2["resident"]) < 0.02, r2  # as far, in another order


def _resident_kib(path) -> int:
    """This process's resident KiB of the mappings of ``path`` (Linux: /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_a_pass_over_the_shards_leaves_none_of_them_resident(tmp_path):
    """Pages of the memory-mapped shards are dropped from the process once a batch is copied out:
    its resident set grows with the batch, not with how much of the capture it has read."""
    d = write_recording(tmp_path / "wide", np.zeros((512, 1), np.int32),
                        {"h": np.random.default_rng(0).normal(size=(512, 2048)).astype(np.float32)})  # 4 MiB
    theory = parse_theory(f"theory: w\ntarget: activations:{d}\nsites: {{h: h}}\ncomponents: {{}}\n", path="w.yaml")
    acts = _sharded(tmp_path, theory, shard_rows=256)
    data = load_examples(theory, acts)
    files = {Path(array.filename) for _, _, array in data["h"].parts}
    total = sum(data["h"][rows].sum() for rows in _stream.chunks(np.arange(acts.n), 1, 100))
    assert np.isclose(total, acts.site("h").sum(dtype=np.float64), rtol=1e-4)
    assert len(files) == 2 and all(_resident_kib(f) == 0 for f in files)
    probe = np.load(next(iter(files)), mmap_mode="r")  # the measure sees a mapping that was read
    float(np.asarray(probe).sum())
    assert _resident_kib(next(iter(files))) > 1000


def test_a_site_s_batches_read_only_what_it_reads(tmp_path, monkeypatch):
    """A batch (``take``) reads a site when it is looked up: fitting one site of a theory over
    three reads that site and the one its map reads, not all three; the fit is the same."""
    theory = theory_for(recorded_target(tmp_path), """\
        map: {kind: linear, from: x, predicts: y}
        by_a: {kind: lookup, of: a, size: 7, predicts: z}
        """)
    acts = _sharded(tmp_path, theory)
    reads = {}

    class Counted:  # a capture array that counts the rows read of it
        def __init__(self, name, rows):
            self.name, self.rows, self.shape = name, rows, rows.shape

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, index):
            out = self.rows[index]
            reads[self.name] = reads.get(self.name, 0) + len(out)
            return out

    rows = _stream.capture_rows
    monkeypatch.setattr(_examples, "capture_rows", lambda t, a: {k: Counted(k, v) for k, v in rows(t, a).items()})
    fitted = fit(theory, acts, FitConfig(progress=False))
    train, validation = len(acts.split("train")), len(acts.split("validation"))
    # each site is read once for its training mean, and once by the one fit that reads it (y's
    # reads y and x, z's reads z): not by every site's fit
    assert reads["x"] == reads["y"] == reads["z"] == train + (train + validation)
    monkeypatch.undo()
    again = fit(theory, acts, FitConfig(progress=False))
    for name, params in fitted.params.items():
        for key, value in params.items():
            np.testing.assert_array_equal(np.asarray(again.params[name][key]), np.asarray(value))
