"""Score a fitted theory (e.g. one `theorycraft search` found) against the coverage benchmark's
baselines on the same capture: SAEs of each site it predicts, the one-hot probe and the mean.

    python benchmarks/against_baselines.py runs/search-minilm/fitted --sae 2x16 4x32 --steps 600

Prints one row per theory (params, bits, coverage, compression: the benchmark's definitions) and
writes them to RUN_DIR/baselines.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from theorycraft.benchmarks.baselines import Context, mean_only, probe, saes
from theorycraft.benchmarks.coverage import Row
from theorycraft.inference.engine import FitConfig, FittedTheory, fit, site_shapes
from theorycraft.scoring import score
from theorycraft.api import run_activations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--sae", nargs="*", default=["2x16"], metavar="MxK", help="SAE width multiple x active latents")
    parser.add_argument("--steps", type=int, default=600, help="Adam steps for the SAEs")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per Adam step")
    args = parser.parse_args()
    run = Path(args.run_dir)
    fitted = FittedTheory.load(run)
    acts = run_activations(fitted, run)
    theory = fitted.theory
    ctx = Context(site_shapes(theory, acts.sites), np.asarray(acts.inputs()), acts.vocab_size)
    configs = [tuple(int(v) for v in text.split("x")) for text in args.sae]
    config = FitConfig(max_steps=args.steps, batch_size=args.batch_size, progress=False)
    rows = []
    start = time.time()
    rows.append(Row.of(score(fitted, acts), str(theory.target), theory.name, "found", time.time() - start))
    for baseline in mean_only(theory, ctx) + probe(theory, ctx) + saes(theory, ctx, configs):
        start = time.time()
        card = score(fit(baseline.theory, acts, config), acts)
        rows.append(Row.of(card, str(theory.target), theory.name, baseline.family, time.time() - start))
    print(f"{'theory':<36} {'family':<8} {'params':>12} {'bits':>13} {'coverage':>9} {'compression':>12}")
    for r in rows:
        print(f"{r.theory:<36} {r.family:<8} {r.params:>12,} {r.bits:>13,} {r.coverage:>9.4f} {r.compression:>12.3f}")
    (run / "baselines.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
