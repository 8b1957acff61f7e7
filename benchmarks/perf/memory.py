"""Peak memory of ``theorycraft infer`` on MiniLM captures of several sizes: it should grow with
the theory's parameters, not with the number of windows.

    nice -n 10 python benchmarks/perf/memory.py CAPTURE_DIR [CAPTURE_DIR ...] \
        [--theory examples/minilm_tokens.yaml] [--python /other/venv/bin/python]

Each capture (a directory of the activation store holding ``encoder.layer.0.output`` of
``hf:minilm``, e.g. from ``theorycraft capture hf:minilm --sites embeddings encoder.layer.0.output
... --n 1024 --dtype float16``; beyond the default corpus's 2,518 windows, the standard library's
source that ``benchmarks/minilm_50m.py --n 4096 --capture-only`` captures, with every site) is
fitted and scored by ``theorycraft.infer`` in a fresh Python process, whose peak resident set
(``ru_maxrss``) is reported, next to a process that only imports theorycraft and opens the
capture (what the interpreter costs before any fit; JAX and torch are imported later, lazily).
``--python`` runs the processes under another interpreter (another checkout's venv), to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys
import theorycraft as tc
from theorycraft.store import ActivationSet
acts = ActivationSet(sys.argv[1])
if sys.argv[3] == "fit":
    card = tc.infer(sys.argv[2], acts, progress=False, log=lambda s: None).scorecard
    coverage = card.coverage
else:
    tc.load_theory(sys.argv[2])
    coverage = None
print(json.dumps({"n": acts.n, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "coverage": coverage}))
"""


def measure(python: str, capture: Path, theory: str, what: str) -> dict:
    # from another directory: `python -c` puts the working directory first on sys.path, and this
    # checkout's package must not shadow the one ``python`` has installed
    out = subprocess.run([python, "-c", CHILD, str(capture), str(Path(theory).resolve()), what], capture_output=True,
                         text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"{capture}: the child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captures", nargs="*", type=Path)
    parser.add_argument("--theory", default="examples/minilm_tokens.yaml")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--smoke", action="store_true", help="a capture of 8 windows made here: CI's check that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke(args)
    if not args.captures:
        parser.error("give at least one CAPTURE_DIR (or --smoke)")
    report(args)


def smoke(args) -> None:
    import theorycraft as tc

    with tempfile.TemporaryDirectory() as cache:
        acts = tc.capture(tc.load_theory(args.theory), n=8, cache_dir=cache, progress=False)
        args.captures = [acts.directory]
        report(args)


def report(args) -> None:
    print("| windows | peak RSS of infer | peak RSS, imports + capture opened | test coverage |")
    print("|---:|---:|---:|---:|")
    for capture in args.captures:
        base = measure(args.python, capture, args.theory, "open")
        fit = measure(args.python, capture, args.theory, "fit")
        print(f"| {fit['n']:,} | {fit['peak'] / 2**30:.2f} GiB | {base['peak'] / 2**30:.2f} GiB | "
              f"{fit['coverage']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
