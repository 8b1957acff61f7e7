"""The activation store: capture, reuse, checksums, resume, recorded activations, bad data."""

import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

from theorycraft.errors import StoreError, TargetError
from theorycraft.spec import HookPoint
from theorycraft.store import ActivationSet, capture, split_is_test
from theorycraft.targets import TorchTarget, load_target, write_recording

HOOKS = [HookPoint.parse("hidden"), HookPoint.parse("out")]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.hidden = nn.Linear(4, 3)
        self.out = nn.Linear(3, 2)

    def forward(self, tokens):  # [batch, pos] -> [batch, pos, 2]
        return self.out(torch.tanh(self.hidden(self.embed(tokens))))


def tokens(n, seed):
    return np.random.default_rng(seed).integers(0, 10, size=(n or 100, 5)).astype(np.int32)


class Counting(TorchTarget):
    """Counts forward passes, and can fail on a given call to simulate a kill."""

    def __init__(self, module=None, fail_on=None):
        super().__init__("test:tiny", module or Tiny(), tokens)
        self.calls, self.fail_on = 0, fail_on

    def record(self, inputs, rows, hooks):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        return super().record(inputs, rows, hooks)


def test_capture_records_every_site_in_shuffled_order(tmp_path):
    target = Counting()
    acts = capture(target, HOOKS, n=100, cache_dir=tmp_path, batch_size=16, progress=False, shard_rows=32)
    assert acts.n == 100 and acts.sites == {"hidden": (5, 3), "out": (5, 2)}
    assert len(acts.manifest["shards"]) == 4
    direct = target.run(acts.inputs(), HOOKS)
    np.testing.assert_allclose(acts.site("out"), direct[HOOKS[1]], rtol=1e-6)
    assert sorted(map(tuple, acts.inputs())) == sorted(map(tuple, tokens(100, 0)))  # a permutation
    assert not np.array_equal(acts.inputs(), tokens(100, 0))


def test_same_key_is_captured_once(tmp_path):
    target = Counting()
    first = capture(target, HOOKS, n=64, cache_dir=tmp_path, batch_size=16, progress=False)
    calls = target.calls
    again = capture(target, list(reversed(HOOKS)), n=64, cache_dir=tmp_path, batch_size=16, progress=False)
    assert again.directory == first.directory and target.calls == calls
    other = capture(target, HOOKS, n=64, seed=1, cache_dir=tmp_path, progress=False)
    assert other.directory != first.directory


def test_a_flipped_byte_is_caught_with_the_fix(tmp_path):
    acts = capture(Counting(), HOOKS, n=64, cache_dir=tmp_path, progress=False)
    shard = acts.directory / acts.manifest["shards"][0]["dir"] / "out.npy"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01
    shard.write_bytes(bytes(data))
    fresh = ActivationSet(acts.directory)
    with pytest.raises(StoreError, match="checksum mismatch") as info:
        fresh.site("out")
    assert str(shard) in str(info.value) and "capture again" in str(info.value)
    with pytest.raises(StoreError):
        fresh.verify()
    fresh.site("hidden")  # the other site's file is intact and still readable


def test_a_torn_manifest_is_reported(tmp_path):
    acts = capture(Counting(), HOOKS, n=32, cache_dir=tmp_path, progress=False)
    (acts.directory / "manifest.json").write_text('{"sites": ')
    with pytest.raises(StoreError, match="not a readable capture manifest"):
        ActivationSet(acts.directory)


def test_interrupted_capture_resumes_and_matches_a_clean_one(tmp_path):
    interrupted = Counting(fail_on=6)  # dies in the third shard (2 batches per shard)
    with pytest.raises(KeyboardInterrupt):
        capture(interrupted, HOOKS, n=128, cache_dir=tmp_path / "a", batch_size=16, shard_rows=32, progress=False)
    # shards are streamed batch by batch: the third had a batch written when the kill came, and
    # none of it is left, under its name or a temporary one; the first two landed whole
    assert not list((tmp_path / "a").rglob("*.tmp")) and not list((tmp_path / "a").glob("*/shard-00002/*"))
    assert len(list((tmp_path / "a").glob("*/shard-0000[01]/*.npy"))) == 4
    resumed = Counting()
    acts = capture(resumed, HOOKS, n=128, cache_dir=tmp_path / "a", batch_size=16, shard_rows=32, progress=False)
    assert resumed.calls == 4  # only the two unfinished shards were run again
    clean = capture(Counting(), HOOKS, n=128, cache_dir=tmp_path / "b", batch_size=16, shard_rows=32,
                    progress=False)
    for site in ("hidden", "out"):
        np.testing.assert_array_equal(acts.site(site), clean.site(site))


def test_concurrent_captures_of_one_key_agree(tmp_path):
    targets = [Counting(), Counting()]
    results = [None, None]

    def run(k):
        results[k] = capture(targets[k], HOOKS, n=256, cache_dir=tmp_path, batch_size=16, progress=False)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0].directory == results[1].directory
    assert sorted(t.calls for t in targets) == [0, 16]  # one captured, the other reused
    results[0].verify()


def test_nan_activations_name_site_and_example(tmp_path):
    module = Tiny()
    with torch.no_grad():
        module.embed.weight[7] = float("nan")
    with pytest.raises(StoreError, match=r"non-finite activation .* at site 'hidden' of test:tiny, dataset example \d+"):
        capture(Counting(module), HOOKS, n=64, cache_dir=tmp_path, progress=False)


def test_unknown_site_names_the_nearest(tmp_path):
    with pytest.raises(TargetError, match=r"unknown site 'hiden' .*did you mean 'hidden'.*nearest valid sites: hidden"):
        capture(Counting(), [HookPoint.parse("hiden")], n=8, cache_dir=tmp_path, progress=False)


def test_half_precision_halves_the_disk(tmp_path):
    full = capture(Counting(), HOOKS, n=64, cache_dir=tmp_path, progress=False)
    for dtype in ("float16", "bfloat16"):
        half = capture(Counting(), HOOKS, n=64, dtype=dtype, cache_dir=tmp_path, progress=False)
        size = lambda a: sum(p.stat().st_size for p in a.directory.glob("shard-*/*.npy"))
        assert size(half) < 0.6 * size(full)
        np.testing.assert_allclose(half.site("out"), full.site("out"), atol=2e-2)


def test_bring_your_own_activations_round_trip(tmp_path):
    acts = capture(Counting(), HOOKS, n=64, cache_dir=tmp_path / "cache", progress=False)
    own = write_recording(tmp_path / "recorded", acts.inputs(), {site: acts.site(site) for site in acts.sites},
                          target="tiny, elsewhere")
    target = load_target(f"activations:{own}")
    assert target.hooks() == {"hidden": (5, 3), "out": (5, 2)}
    again = capture(target, HOOKS, cache_dir=tmp_path / "cache", progress=False)
    assert again.directory != acts.directory
    # the store shuffles once more; each row still pairs its input with its own activations
    for site in acts.sites:
        by_input = {tuple(x): a for x, a in zip(acts.inputs(), acts.site(site))}
        for x, a in zip(again.inputs(), again.site(site)):
            np.testing.assert_array_equal(by_input[tuple(x)], a)


def test_bad_recorded_directory_says_what_is_wrong(tmp_path):
    with pytest.raises(TargetError, match="manifest.json"):
        load_target(f"activations:{tmp_path}")
    (tmp_path / "manifest.json").write_text(json.dumps({"sites": ["x"]}))
    np.save(tmp_path / "inputs.npy", np.zeros((4, 2), np.int32))
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(TargetError, match=r"expected a float array \[N, D\], \[N, T, D\] or \(an attention pattern\) \[N, H, T, T\] with N = 4 rows"):
        load_target(f"activations:{tmp_path}")


def test_split_is_fixed_and_about_a_fifth():
    a, b = split_is_test(10_000, "data-1"), split_is_test(10_000, "data-1")
    assert np.array_equal(a, b) and 0.18 < a.mean() < 0.22
    assert not np.array_equal(a, split_is_test(10_000, "data-2"))
    assert np.array_equal(split_is_test(500, "data-1"), a[:500])  # a prefix keeps its assignment


def test_three_splits_partition_the_examples():
    from theorycraft.store import split_is_validation

    test, validation = split_is_test(10_000, "data-1"), split_is_validation(10_000, "data-1")
    assert not (test & validation).any() and 0.14 < validation.mean() < 0.18  # a fifth of the non-test
    assert np.array_equal(split_is_validation(500, "data-1"), validation[:500])


def test_batches_stream_the_split(tmp_path):
    acts = capture(Counting(), HOOKS, n=100, cache_dir=tmp_path, batch_size=16, shard_rows=32, progress=False)
    for split in ("train", "validation", "test"):
        seen = np.concatenate([b["index"] for b in acts.batches(["out"], 7, split=split)])
        assert np.array_equal(np.sort(seen), acts.split(split))
    batch = next(acts.batches(["out"], 7))
    np.testing.assert_array_equal(batch["out"], acts.site("out")[batch["index"]])


def test_untrusted_user_module_is_refused():
    with pytest.raises(TargetError, match="--trust-code"):
        load_target("torch:os:getcwd")
