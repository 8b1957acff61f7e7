"""Capture throughput on all-MiniLM-L6-v2 (needs the `minilm` extra).

    python benchmarks/perf/capture.py [--batches 4] [--rounds 3] [--quick]

Batches of 64 x 128 tokens, the outputs of all six layers. Variants, alternated in rounds in one
process:

- the baseline: the forward pass a user would run for speed, transformers' default attention
  (``sdpa``) under ``torch.inference_mode``;
- the same forward with ``eager`` attention, the implementation theorycraft's ``hf:`` adapter
  loads (``theorycraft/targets/_hf.py``), so that capture's cost splits into the attention choice
  and the recording itself;
- capture to memory: the adapter's ``TorchTarget.run`` (eager attention, ``torch.no_grad``,
  forward hooks copying each site into numpy);
- capture to disk: ``theorycraft.store.capture`` through the adapter (shards checksummed and
  fsync'd before the manifest names them), into a fresh cache each time.

Prints tokens/s of each (this run's) and the median [min, max] of the paired throughput ratios
against the sdpa baseline and against the eager forward.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

from theorycraft.spec import HookPoint
from theorycraft.store import capture
from theorycraft.targets._base import TorchTarget
from theorycraft.targets._hf import load_hf_model, minilm_path

from _rounds import ratio, rounds

BATCH, LAYERS = 64, 6


def forward(module, windows: np.ndarray):
    """A plain forward pass over every batch, under ``torch.inference_mode``."""
    @torch.inference_mode()
    def run():
        for b in range(0, len(windows), BATCH):
            ids = torch.from_numpy(windows[b:b + BATCH]).long()
            module(input_ids=ids, attention_mask=torch.ones_like(ids))
    return run


def capture_variants(model: TorchTarget, windows: np.ndarray) -> dict:
    """``model`` is theorycraft's ``hf:minilm`` target (eager attention)."""
    sdpa = transformers.AutoModel.from_pretrained(str(minilm_path()), local_files_only=True,
                                                  attn_implementation="sdpa").eval()
    assert model.module.config._attn_implementation == "eager"
    n = len(windows)
    target = TorchTarget("hf:minilm", model.module, lambda n_, seed: windows, forward=model._forward)
    hooks = [HookPoint.parse(f"encoder.layer.{k}.output") for k in range(LAYERS)]
    target.hooks()  # shapes, once
    out = {h: np.empty((n, windows.shape[1], 384), np.float32) for h in hooks}  # allocated once
    tmp, counter = Path(tempfile.mkdtemp()), iter(range(10 ** 6))

    def to_memory():
        for b in range(0, n, BATCH):
            for h, a in target.run(windows[b:b + BATCH], hooks).items():
                out[h][b:b + BATCH] = a

    def to_disk():  # a fresh cache each time: the store would otherwise reuse the capture
        capture(target, hooks, n=n, cache_dir=tmp / str(next(counter)), batch_size=BATCH, progress=False)

    return {"forward, sdpa (baseline)": forward(sdpa, windows), "forward, eager": forward(model.module, windows),
            "capture to memory": to_memory, "capture to disk": to_disk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 batches, 2 rounds")
    args = parser.parse_args()
    n_batches, n_rounds = (2, 2) if args.quick else (args.batches, args.rounds)
    model = load_hf_model("minilm")
    windows = model.dataset(n_batches * BATCH, 0)  # tokenised once, outside the timings
    times = rounds(capture_variants(model, windows), n_rounds=n_rounds)
    tokens = windows.size
    print(f"\n{n_rounds} rounds of {n_batches} batches of {BATCH} x {windows.shape[1]} tokens; "
          f"torch threads {torch.get_num_threads()}\n")
    print("| variant | tokens/s (this run) | throughput ÷ sdpa forward | throughput ÷ eager forward |")
    print("|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {tokens / statistics.median(t):,.0f} | {ratio(times, name, 'forward, sdpa (baseline)')} "
              f"| {ratio(times, name, 'forward, eager')} |")


if __name__ == "__main__":
    main()
