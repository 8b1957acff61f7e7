"""What the store's writer costs a capture, and what its knobs change (needs the `minilm` extra).

    python benchmarks/perf/capture_writer.py [--batches 2] [--rounds 3] [--only NAME,NAME]

MiniLM, batches of 64 x 128 tokens, the outputs of all six layers (as ``capture.py``). Variants,
alternated in rounds in one process: capture to memory (the adapter's ``TorchTarget.run`` into
numpy), and capture to disk (``theorycraft.store.capture``) as it is, with a deeper writer queue
(8 batches instead of 2), with shards of 2 batches instead of 1, and without fsync (a diagnostic:
what durability costs; not an option the store offers). Each disk variant removes its capture
after it, inside its timing (a few milliseconds, the same for all). Prints the median seconds and
the median [min, max] of the paired ratios against memory and against the store as it is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import theorycraft.store as store
from theorycraft.spec import HookPoint
from theorycraft.targets import TorchTarget, load_hf_model

from _rounds import ratio, rounds

BATCH = 64
OUTPUTS = [HookPoint.parse(f"encoder.layer.{k}.output") for k in range(6)]


def variants(target: TorchTarget, windows: np.ndarray, tmp: Path) -> dict:
    n, counter = len(windows), iter(range(10 ** 6))
    out = {h: np.empty((n, windows.shape[1], 384), np.float32) for h in OUTPUTS}
    real_fsync, real_init = os.fsync, store._durable._Writer.__init__

    def to_memory():
        for b in range(0, n, BATCH):
            for h, a in target.run(windows[b:b + BATCH], OUTPUTS).items():
                out[h][b:b + BATCH] = a

    def to_disk(in_flight=2, fsync=True, shard_rows=None):
        def run():
            store._durable._Writer.__init__ = lambda self, on_done, in_flight_=2: real_init(self, on_done, in_flight)
            os.fsync = real_fsync if fsync else (lambda fd: None)  # the store calls os.fsync
            try:
                folder = tmp / str(next(counter))
                store.capture(target, OUTPUTS, n=n, cache_dir=folder, batch_size=BATCH, progress=False,
                              shard_rows=shard_rows)
            finally:
                store._durable._Writer.__init__, os.fsync = real_init, real_fsync
            shutil.rmtree(folder)
        return run

    return {"memory": to_memory, "disk": to_disk(), "disk, queue of 8": to_disk(in_flight=8),
            "disk, 2-batch shards": to_disk(shard_rows=2 * BATCH), "disk, no fsync": to_disk(fsync=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated variant names (memory and disk are always run)")
    parser.add_argument("--smoke", action="store_true", help="1 batch of 4 windows, 1 round, no warm-up: CI's check that it runs")
    args = parser.parse_args()
    batch = 4 if args.smoke else BATCH
    if args.smoke:
        args.batches, args.rounds = 1, 1
    model = load_hf_model("minilm")
    windows = model.dataset(args.batches * batch, 0)
    target = TorchTarget("hf:minilm", model.module, lambda n_, seed: windows, forward=model._forward)
    target.hooks()
    tmp = Path(tempfile.mkdtemp())
    try:
        runs = variants(target, windows, tmp)
        if args.only:
            keep = {"memory", "disk", *args.only.split(",")}
            runs = {name: run for name, run in runs.items() if name in keep}
        times = rounds(runs, n_rounds=args.rounds, warmup=0 if args.smoke else 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.rounds} rounds of {args.batches} batches of {batch} x {windows.shape[1]} tokens; "
          f"torch threads {torch.get_num_threads()}\n")
    print("| variant | median s | throughput ÷ memory | throughput ÷ disk |")
    print("|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.2f} | {ratio(times, name, 'memory')} | {ratio(times, name, 'disk')} |")


if __name__ == "__main__":
    main()
