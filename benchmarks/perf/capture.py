"""Capture throughput on all-MiniLM-L6-v2 (needs the `minilm` extra).

    python benchmarks/perf/capture.py [--batches 8] [--rounds 3]

Batches of 64 x 128 tokens, the outputs of all six layers. Variants, alternated in rounds in one
process: a plain forward pass; capture to memory (hooks copying into numpy); capture to disk
through the store (shards fsync'd before the manifest names them). Prints tokens/s of each and
the median [min, max] of the paired throughput ratios against the plain forward pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from theorycraft.spec import HookPoint
from theorycraft.store import capture
from theorycraft.targets._base import TorchTarget
from theorycraft.targets._hf import load_hf_model

from _rounds import ratio, rounds

BATCH, LAYERS = 64, 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model = load_hf_model("minilm")
    n = args.batches * BATCH
    windows = model.dataset(n, 0)  # tokenised once, outside the timings
    target = TorchTarget("hf:minilm", model.module, lambda n_, seed: windows, forward=model._forward)
    hooks = [HookPoint.parse(f"encoder.layer.{k}.output") for k in range(LAYERS)]
    target.hooks()  # shapes, once
    tmp = Path(tempfile.mkdtemp())
    counter = iter(range(10 ** 6))

    @torch.no_grad()
    def plain():
        for b in range(0, n, BATCH):
            model.module(input_ids=torch.from_numpy(windows[b:b + BATCH]).long(),
                         attention_mask=torch.ones(BATCH, windows.shape[1], dtype=torch.long))

    out = {h: np.empty((n, windows.shape[1], 384), np.float32) for h in hooks}  # allocated once

    def to_memory():
        for b in range(0, n, BATCH):
            for h, a in target.run(windows[b:b + BATCH], hooks).items():
                out[h][b:b + BATCH] = a

    def to_disk():  # a fresh cache each time: the store would otherwise reuse the capture
        capture(target, hooks, n=n, cache_dir=tmp / str(next(counter)), batch_size=BATCH, progress=False)

    times = rounds({"plain forward": plain, "capture to memory": to_memory, "capture to disk": to_disk},
                   n_rounds=args.rounds)
    tokens = n * windows.shape[1]
    for name, t in times.items():
        print(f"{name:<18} {tokens / statistics.median(t):9.0f} tokens/s")
    print(f"memory / plain throughput: {ratio(times, 'capture to memory', 'plain forward')}")
    print(f"disk / plain throughput:   {ratio(times, 'capture to disk', 'plain forward')}")


if __name__ == "__main__":
    main()
