"""Capture throughput on all-MiniLM-L6-v2 (needs the `minilm` extra).

    python benchmarks/perf/capture.py [--batches 4] [--rounds 3] [--quick]

Batches of 64 x 128 tokens, the outputs of all six layers. Variants, alternated in rounds in one
process:

- the baseline: the forward pass a user would run for speed, transformers' default attention
  (``sdpa``) under ``torch.inference_mode``;
- the forward as theorycraft's ``hf:`` adapter runs it (``theorycraft/targets/_hf.py``):
  ``TorchTarget.output``, its registered attention (sdpa here, since no pattern is a site),
  ``torch.no_grad``, the output into numpy; capture's cost splits into this and the recording;
- capture to memory: the adapter's ``TorchTarget.run`` (forward hooks copying each site into numpy);
- capture to disk: ``theorycraft.store.capture`` through the adapter (shards checksummed and
  fsync'd before the manifest names them), into a fresh cache each time.

Prints tokens/s of each (this run's), the median [min, max] of the paired throughput ratios
against the sdpa baseline and against the adapter's forward, and how far the layer outputs move
when the patterns are read too (every layer's attention then runs the eager path).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

from theorycraft.spec import HookPoint
from theorycraft.store import capture
from theorycraft.targets import TorchTarget, load_hf_model, minilm_path

from _rounds import ratio, rounds

BATCH, LAYERS = 64, 6
BASELINE, ADAPTER = "forward, sdpa, `inference_mode` (baseline)", "forward as the adapter runs it"
OUTPUTS = [HookPoint.parse(f"encoder.layer.{k}.output") for k in range(LAYERS)]


def forward(module, windows: np.ndarray):
    """A plain forward pass over every batch, under ``torch.inference_mode``."""
    @torch.inference_mode()
    def run():
        for b in range(0, len(windows), BATCH):
            ids = torch.from_numpy(windows[b:b + BATCH]).long()
            module(input_ids=ids, attention_mask=torch.ones_like(ids))
    return run


def capture_variants(target: TorchTarget, windows: np.ndarray, tmp: Path) -> dict:
    """``target`` is theorycraft's ``hf:minilm`` target over ``windows``."""
    sdpa = transformers.AutoModel.from_pretrained(str(minilm_path()), local_files_only=True,
                                                  attn_implementation="sdpa").eval()
    n = len(windows)
    out = {h: np.empty((n, windows.shape[1], 384), np.float32) for h in OUTPUTS}  # allocated once
    counter = iter(range(10 ** 6))

    def adapter():
        for b in range(0, n, BATCH):
            target.output(windows[b:b + BATCH])

    def to_memory():
        for b in range(0, n, BATCH):
            for h, a in target.run(windows[b:b + BATCH], OUTPUTS).items():
                out[h][b:b + BATCH] = a

    def to_disk():  # a fresh cache each time: the store would otherwise reuse the capture
        capture(target, OUTPUTS, n=n, cache_dir=tmp / str(next(counter)), batch_size=BATCH, progress=False)

    return {BASELINE: forward(sdpa, windows), ADAPTER: adapter, "capture to memory": to_memory,
            "capture to disk": to_disk}


def path_difference(target: TorchTarget, windows: np.ndarray) -> float:
    """The largest difference of the layer outputs between the sdpa path (no pattern read) and
    the eager one (every layer's pattern read as well), over one batch."""
    patterns = [HookPoint.parse(f"encoder.layer.{k}.attention.self.hook_pattern") for k in range(LAYERS)]
    fast = target.run(windows[:BATCH], OUTPUTS)
    slow = target.run(windows[:BATCH], OUTPUTS + patterns)
    return max(float(np.abs(fast[h] - slow[h]).max()) for h in OUTPUTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 batches, 2 rounds")
    parser.add_argument("--smoke", action="store_true", help="1 batch of 4 windows, 1 round, no warm-up: CI's check that it runs")
    args = parser.parse_args()
    n_batches, n_rounds = (1, 1) if args.smoke else (2, 2) if args.quick else (args.batches, args.rounds)
    batch = 4 if args.smoke else BATCH
    model = load_hf_model("minilm")
    windows = model.dataset(n_batches * batch, 0)  # tokenised once, outside the timings
    target = TorchTarget("hf:minilm", model.module, lambda n_, seed: windows, forward=model._forward)
    target.hooks()  # shapes, once
    tmp = Path(tempfile.mkdtemp())
    try:
        times = rounds(capture_variants(target, windows, tmp), n_rounds=n_rounds, warmup=0 if args.smoke else 1)
    finally:
        shutil.rmtree(tmp)
    tokens = windows.size
    print(f"\n{n_rounds} rounds of {n_batches} batches of {batch} x {windows.shape[1]} tokens "
          f"({tokens * 384 * 4 * LAYERS / 1e6:.0f} MB "
          f"per capture); torch threads {torch.get_num_threads()}\n")
    print("| variant | tokens/s (this run) | throughput ÷ sdpa forward | throughput ÷ adapter's forward |")
    print("|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {tokens / statistics.median(t):,.0f} | {ratio(times, name, BASELINE)} "
              f"| {ratio(times, name, ADAPTER)} |")
    print(f"\nlayer outputs, sdpa path vs eager path (patterns read): max |difference| "
          f"{path_difference(target, windows):.1e}")


if __name__ == "__main__":
    main()
