"""Ridge fit: ``theorycraft.infer`` on a captured ``activations:DIR`` target vs numpy and scikit-learn.

    python benchmarks/perf/fit.py [--n 100000] [--rounds 3] [--features 64 512] [--no-gcv] [--quick]

N examples of x (F in {64, 512} features) and y (D = 384), brought as ``activations:DIR`` and
captured into the store once, outside the timings. The theory is one ``linear`` map x -> y, which
the engine solves as exact ridge with the strength chosen on its validation split. Timed, alternated
in rounds in one process:

- ``theorycraft.infer(theory, acts, out_dir=...)``: what ``theorycraft infer`` runs: read every
  shard into RAM (``load_examples``), sufficient statistics in batches, strength selection on the
  validation split, refit on train + validation, the scorecard (R² over all examples), the artifact;
- the same without ``out_dir`` (no artifact), and ``theorycraft.inference.fit`` (which no longer scores)
  (the fit alone: the job the peers do); ``load_examples`` alone, for the breakdown;
- numpy normal equations doing the same job in memory, the engine's algorithm without its
  batches: X'X and X'Y of the same train and validation rows (one pass), one eigendecomposition,
  the same 8 strengths scored on the validation rows from those sums, refit on both;
- scikit-learn ``RidgeCV`` over the same strengths (efficient leave-one-out GCV, its default
  mode), fitted on the same train + validation rows, and the default ``Ridge()`` (alpha = 1, no
  selection) on them.

The peers get their rows in memory, already split (prepared outside the timings): the strongest
version of each. Prints seconds, GFLOP/s (2·N·F·(F+D), the work of one pass) and the median
[min, max] of the paired speed ratios against the engine's paths.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge, RidgeCV

import theorycraft as tc
from theorycraft.inference.engine import ALPHAS, FitConfig, fit, load_examples
from theorycraft.targets import write_recording
from theorycraft.spec import parse_theory

from _rounds import ratio, rounds

D = 384
QUIET = FitConfig(progress=False)


def make_capture(n: int, f: int, root: Path):
    """A recorded ``activations:DIR`` (y a noisy linear map of x), captured into the store."""
    r = np.random.default_rng(f)
    x = r.normal(size=(n, f)).astype(np.float32)
    y = x @ r.normal(size=(f, D)).astype(np.float32) + r.normal(size=(n, D)).astype(np.float32)
    recorded = write_recording(root / f"recorded-{f}", np.zeros((n, 1), np.int32), {"x": x, "y": y})
    theory = parse_theory(f"""
theory: ridge-{f}
target: activations:{recorded}
sites: {{x: x, y: y}}
inputs: [x]
components:
  map: {{kind: linear, from: x, predicts: y}}
""")
    acts = tc.capture(theory, cache_dir=root / "cache", progress=False, batch_size=8192)
    acts.verify()  # checksums once, as the first read would; the timings below are of the fit
    return theory, acts


def engine_variants(theory, acts, out_dir: Path) -> dict:
    quiet = {"progress": False, "log": lambda s: None}
    return {"infer + artifact": lambda: tc.infer(theory, acts, out_dir=out_dir, **quiet),
            "infer": lambda: tc.infer(theory, acts, **quiet),
            "fit only": lambda: fit(theory, acts, QUIET),
            "load_examples": lambda: load_examples(theory, acts)}


def numpy_select(xt, yt, xv, yv, alphas) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge with the strength chosen on the validation rows, refit on train + validation; every
    product is one pass over the rows (the validation error of each strength from X'X and X'Y)."""
    nt, nv = len(xt), len(xv)
    gram, cross, vgram, vcross = xt.T @ xt, xt.T @ yt, xv.T @ xv, xv.T @ yv
    sxt, syt, sxv, syv = xt.sum(0), yt.sum(0), xv.sum(0), yv.sum(0)
    mx, my = sxt / nt, syt / nt
    cxx, cxy = gram - nt * np.outer(mx, mx), cross - nt * np.outer(mx, my)
    scale = np.trace(cxx) / len(cxx)
    evals, evecs = np.linalg.eigh(cxx)
    rotated = evecs.T @ cxy
    errors = []
    for a in alphas:  # Σ||y - xW - b||² over the validation rows, up to the constant Σy²
        w = evecs @ (rotated / (evals + a * scale)[:, None])
        b = my - mx @ w
        errors.append(-2 * np.sum(w * vcross) - 2 * b @ syv + np.sum(w * (vgram @ w)) + 2 * (sxv @ w) @ b + nv * b @ b)
    alpha = alphas[int(np.argmin(errors))]
    n = nt + nv
    mx, my = (sxt + sxv) / n, (syt + syv) / n
    cxx = gram + vgram - n * np.outer(mx, mx)
    cxy = cross + vcross - n * np.outer(mx, my)
    w = np.linalg.solve(cxx + alpha * scale * np.eye(len(cxx)), cxy)
    return w, my - mx @ w, alpha


def peer_variants(theory, acts) -> tuple[dict, Path]:
    data = load_examples(theory, acts)
    train, val = acts.split("train"), acts.split("validation")
    both = np.sort(np.concatenate([train, val]))
    xt, yt, xv, yv = data["x"][train], data["y"][train], data["x"][val], data["y"][val]
    xf, yf = data["x"][both], data["y"][both]
    centred = xf - xf.mean(0)
    absolute = tuple(a * float(np.einsum("ij,ij->", centred, centred)) / xf.shape[1] for a in ALPHAS)
    variants = {"numpy normal eq. + selection": lambda: numpy_select(xt, yt, xv, yv, ALPHAS),
                "sklearn RidgeCV (GCV)": lambda: RidgeCV(alphas=absolute).fit(xf, yf),
                "sklearn Ridge() default": lambda: Ridge().fit(xf, yf)}
    return variants, (xt, yt, xv, yv)


def check_same_answer(theory, acts, split) -> None:
    fitted = fit(theory, acts, QUIET)
    w, b, _ = numpy_select(*split, ALPHAS)
    np.testing.assert_allclose(np.asarray(fitted.params["map"]["weight"]), w, rtol=1e-2, atol=1e-3)


ENGINE = ("infer + artifact", "infer", "fit only")
PEERS = ("numpy normal eq. + selection", "sklearn RidgeCV (GCV)", "sklearn Ridge() default")


def report(f: int, n: int, times: dict) -> None:
    flops = 2 * n * f * (f + D)
    print(f"\nN={n} F={f} D={D}  ({flops / 1e9:.1f} GFLOP per pass)\n")
    print("| variant | s (this run) | GFLOP/s (this run) |\n|---|---:|---:|")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"| {name} | {m:.3f} | {flops / m / 1e9:.1f} |")
    peers = [p for p in PEERS if p in times]
    print("\nspeed ratio (> 1: theorycraft faster)\n")
    print("| theorycraft | " + " | ".join(f"÷ {p}" for p in peers) + " |\n|---|" + "---:|" * len(peers))
    for name in ENGINE:
        print(f"| {name} | " + " | ".join(ratio(times, name, p) for p in peers) + " |")
    print(f"\nartifact write: speed of infer + artifact ÷ speed of infer = {ratio(times, 'infer + artifact', 'infer')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--features", type=int, nargs="+", default=[64, 512], help="the values of F (default 64 512)")
    parser.add_argument("--no-gcv", action="store_true", help="leave out RidgeCV (a minute or more a call)")
    parser.add_argument("--quick", action="store_true", help="N = 40,000 and 2 rounds")
    parser.add_argument("--smoke", action="store_true", help="N = 1,000, F = 16, 1 round, no warm-up: CI's check that it runs")
    args = parser.parse_args()
    n, n_rounds = (1_000, 1) if args.smoke else (40_000, 2) if args.quick else (args.n, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        for f in (16,) if args.smoke else args.features:
            theory, acts = make_capture(n, f, Path(tmp))
            peers, split = peer_variants(theory, acts)
            if args.no_gcv:
                del peers["sklearn RidgeCV (GCV)"]
            check_same_answer(theory, acts, split)
            times = rounds(engine_variants(theory, acts, Path(tmp) / f"run-{f}") | peers, n_rounds=n_rounds,
                           warmup=0 if args.smoke else 1)
            report(f, n, times)
            del peers, split


if __name__ == "__main__":
    main()
