"""How long a command on a cached MiniLM capture takes to start fitting (needs the `minilm` extra).

    python benchmarks/perf/cached_start.py --before /path/to/older/python [--rounds 5] [--n 64]

Each variant is a fresh process that loads examples/minilm_tokens.yaml and asks the store for its
capture (what `theorycraft infer` does before its first fitting step), timed from the parent
(interpreter start and imports included). The capture is made once, into a temporary store,
before any timing. Variants, alternated in rounds:

- before: ``--before``, a Python whose theorycraft computes the full capture key first (loads the
  model, re-reads the corpus);
- after: this checkout's, which finds the capture through the store's request index.

Both must compute the same capture key (the store's keys did not change), so both open the same
capture. Prints each variant's median and the median [min, max] of the paired ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _rounds import ratio, rounds

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from theorycraft.api import capture
from theorycraft.spec import load_theory
acts = capture(load_theory(sys.argv[1]), n=int(sys.argv[2]), cache_dir=sys.argv[3], progress=False)
print(acts.directory.name)  # the key (an older ActivationSet has no .key)
"""


def start(python: str, n: int, cache: str) -> str:
    done = subprocess.run([python, "-c", SCRIPT, str(ROOT / "examples" / "minilm_tokens.yaml"), str(n), cache],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a Python whose theorycraft is the version to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=64, help="examples in the cached capture")
    parser.add_argument("--smoke", action="store_true", help="this Python as --before, 8 examples, 1 round, no warm-up: CI's check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.before, args.n, args.rounds = args.before or sys.executable, 8, 1
    elif not args.before:
        parser.error("--before is required (a Python whose theorycraft is the version to compare with)")
    with tempfile.TemporaryDirectory() as cache:
        keys = {start(python, args.n, cache) for python in (sys.executable, args.before)}  # captures once
        assert len(keys) == 1, f"the two versions name different captures: {keys}"
        times = rounds({"before": lambda: start(args.before, args.n, cache),
                        "after": lambda: start(sys.executable, args.n, cache)}, n_rounds=args.rounds,
                       warmup=0 if args.smoke else 1)
    for name, seconds in times.items():
        print(f"{name}: median {statistics.median(seconds):.2f}s  (rounds: {', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"speed-up after/before, median [min, max] of {args.rounds} paired rounds: {ratio(times, 'after', 'before')}")


if __name__ == "__main__":
    main()
