"""The store's own cost of a durable capture, without a model: a target whose ``record`` hands
back ready arrays (one copy per site and batch), 256 examples x 6 sites x [128, 384] float32
(302 MB, the shape of ``capture.py``'s MiniLM capture), batches of 64, into a fresh cache each
round.

    python benchmarks/perf/capture_store.py [--rounds 5]

Prints the process's CPU seconds (what the writer takes from a forward pass sharing the cores)
and the wall seconds per capture, median [min, max] over the rounds, after one warm-up.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from theorycraft.spec import HookPoint
from theorycraft.store import capture
from theorycraft.targets import Target

N, BATCH, SITES, SHAPE = 256, 64, 6, (128, 384)


class Ready(Target):
    """Activations already computed: capture's cost is the store's alone."""

    name, identity, input_kind, vocab_size = "test:ready", "ready-v1", "tokens", 100

    def __init__(self):
        self.values = np.random.default_rng(0).standard_normal((BATCH, *SHAPE), dtype=np.float32)

    def dataset(self, n, seed, shift=None):
        return np.arange(n * SHAPE[0]).reshape(n, SHAPE[0]) % self.vocab_size

    def hooks(self):
        return {f"layer.{k}": SHAPE for k in range(SITES)}

    def record(self, inputs, rows, hooks):
        return {h: self.values[:len(rows)].copy() for h in hooks}


def once(target: Ready, n: int = N) -> tuple[float, float]:
    cache = Path(tempfile.mkdtemp())
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        capture(target, [HookPoint.parse(h) for h in target.hooks()], n=n, cache_dir=cache, batch_size=BATCH,
                progress=False)
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        shutil.rmtree(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="1 round of 2 batches, no warm-up: CI's check that it runs")
    args = parser.parse_args()
    n, n_rounds = (2 * BATCH, 1) if args.smoke else (N, args.rounds)
    target = Ready()
    if not args.smoke:
        once(target)  # warm-up
    cpu, wall = zip(*(once(target, n) for _ in range(n_rounds)))
    size = n * SITES * int(np.prod(SHAPE)) * 4
    for name, values in (("CPU seconds", cpu), ("wall seconds", wall)):
        print(f"{name} per capture of {size / 1e6:.0f} MB: {statistics.median(values):.2f} "
              f"[{min(values):.2f}, {max(values):.2f}] over {n_rounds} rounds")


if __name__ == "__main__":
    main()
