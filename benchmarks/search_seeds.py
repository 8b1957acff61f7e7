"""A found theory against a hand-written one, over several seeds: the close comparison docs/results.md
quotes, as mean and spread. Each seed is a whole search (its own capture shuffle, split and fits);
the hand theory is judged by the same judge on the same split.

    python benchmarks/search_seeds.py examples/search_modadd.yaml --compare examples/modadd_fourier.yaml \
        --seeds 0 1 2 -- --budget-bits 324000

Everything after ``--`` goes to ``theorycraft search`` as it is.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from theorycraft.cli import main as cli


def spread(values) -> str:
    values = np.asarray(values, float)
    return f"{values.mean():,.4g} ± {(values.max() - values.min()) / 2:,.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start")
    parser.add_argument("--compare", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/search-seeds")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1:]  # after --: for theorycraft search
    rows = []
    for seed in args.seeds:
        out = f"{args.out}/seed-{seed}"
        if cli(["search", args.start, "--compare", args.compare, "--seed", str(seed), "--out", out, *extra]) != 0:
            sys.exit(1)
        trail = json.loads(open(f"{out}/trail.json").read())
        found, ref = trail["trail"][-1]["test"], trail["reference"]["test"]
        rows.append({"seed": seed, "found": found, "reference": ref, "actions": [s["action"] for s in trail["trail"]]})
    print(f"\n{'':<22} {'found':>22} {'reference':>22}")
    for key in ("coverage", "bits_theory", "bits_total"):
        print(f"test {key:<17} {spread([r['found'][key] for r in rows]):>22} {spread([r['reference'][key] for r in rows]):>22}")
    ratio = [r["found"]["coverage"] / r["reference"]["coverage"] for r in rows]
    bits = [r["found"]["bits_theory"] / r["reference"]["bits_theory"] for r in rows]
    print(f"found / reference: coverage {spread(ratio)}, theory bits {spread(bits)}")
    for r in rows:
        print(f"seed {r['seed']}: " + ", ".join(r["actions"][1:]))


if __name__ == "__main__":
    main()
