"""Ridge fit throughput: theorycraft's streamed engine vs numpy normal equations vs scikit-learn.

    python benchmarks/perf/fit.py [--n 200000] [--rounds 3]

N examples, F in {64, 512} features -> D = 384 outputs. The engine reads X and Y from the
activation store (memory-mapped shards) and accumulates X'X with syrk; numpy and scikit-learn
get the arrays in memory. Flops counted as 2·N·F·(F+D). Prints, per F, seconds and GFLOP/s of
each, this machine's float32 GEMM rate, and the median [min, max] of the paired speed ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge

from theorycraft.inference import _ridge
from theorycraft.spec import HookPoint
from theorycraft.store import capture
from theorycraft.targets import load_target

from _rounds import ratio, rounds

D, ALPHA = 384, 1.0


def make_store(n: int, f: int, root: Path):
    r = np.random.default_rng(f)
    recorded = root / f"recorded-{f}"
    recorded.mkdir(parents=True)
    x = r.normal(size=(n, f)).astype(np.float32)
    np.save(recorded / "inputs.npy", np.zeros((n, 1), np.int32))
    np.save(recorded / "x.npy", x)
    np.save(recorded / "y.npy", (x @ r.normal(size=(f, D)).astype(np.float32) + r.normal(size=(n, D)).astype(np.float32)))
    (recorded / "manifest.json").write_text(json.dumps({"sites": ["x", "y"]}))
    acts = capture(load_target(f"activations:{recorded}"), [HookPoint.parse("x"), HookPoint.parse("y")],
                   cache_dir=root / "cache", progress=False, batch_size=8192)
    acts.verify()  # checksums once, as the first read would; timings below are of the fit
    return acts


def engine_fit(acts) -> np.ndarray:
    stats = _ridge.Stats()
    for batch in acts.batches(["x", "y"], batch_size=16384, with_inputs=False):
        stats.add(batch["x"], batch["y"])
    w, b, _ = _ridge.solve(stats, None, alphas=(ALPHA / (np.trace(stats.centred()[0]) / stats.xtx.shape[0]),))
    return w


def numpy_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    mx, my = x.mean(0), y.mean(0)
    xtx = x.T @ x - len(x) * np.outer(mx, mx)
    xty = x.T @ y - len(x) * np.outer(mx, my)
    return np.linalg.solve(xtx + ALPHA * np.eye(len(xtx)), xty)


def gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"float32 GEMM (2048^3): {gemm_gflops():.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        for f in (64, 512):
            acts = make_store(args.n, f, Path(tmp))
            x, y = acts.site("x"), acts.site("y")  # in memory, in the store's order
            flops = 2 * args.n * f * (f + D)
            times = rounds({"engine (streamed)": lambda: engine_fit(acts), "numpy normal eq.": lambda: numpy_fit(x, y),
                            "sklearn Ridge": lambda: Ridge(alpha=ALPHA).fit(x, y)}, n_rounds=args.rounds)
            np.testing.assert_allclose(engine_fit(acts), numpy_fit(x, y), rtol=1e-2, atol=1e-3)
            print(f"\nN={args.n} F={f} D={D}  ({flops / 1e9:.1f} GFLOP)")
            for name, t in times.items():
                m = statistics.median(t)
                print(f"  {name:<18} {m:7.3f} s  {flops / m / 1e9:6.1f} GFLOP/s")
            print(f"  engine rate / numpy rate: {ratio(times, 'engine (streamed)', 'numpy normal eq.')}")
            print(f"  engine speed-up over sklearn Ridge: {ratio(times, 'engine (streamed)', 'sklearn Ridge')}")


if __name__ == "__main__":
    main()
