"""Search: seconds per step of the bundled searches, incremental judge vs full refits.

    python benchmarks/perf/search.py [--rounds 2] [--only modadd superposition induction]

Each bundled search as docs/search.md runs it (``examples/search_modadd.yaml`` with
``--budget-bits 324000``; ``search_superposition.yaml``; ``search_induction.yaml`` with
``--max-steps 500 --tries 3``), seed 0, its capture and default vocabulary prepared once outside
the timings. Two variants, alternated in rounds in one process after a warm-up:

- ``incremental``: ``Judge(incremental=True)`` (the default): a candidate refits only the sites
  it touches, keeping the current theory's fitted parameters elsewhere, and a quantized tensor's
  bits are looked up by its content where it was priced before;
- ``full``: ``Judge(incremental=False)``: every candidate refitted and re-priced whole (the
  search before issue 14).

Each run builds its own judge (the mean-only fits: not timed) and times ``search`` alone;
seconds per step = that time / accepted steps. Prints each variant's median seconds per step,
the median [min, max] of the paired per-round ratios, and whether both variants accepted the
same steps (the same actions, and validation totals equal to the bit).

``--against DIR`` compares with another version of the code instead (``DIR``: a checkout with its
own ``.venv``, e.g. the commit before issue 14's work): each round runs that version's ``full``
search and this version's default one, each in a fresh process (its own warm-up), alternately.
The ``full`` variant shares every code path but the judge's caches with ``incremental``, so a
speed-up of the fits themselves shows only against the older code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from theorycraft.api import capture, load_theory
from theorycraft.inference.engine import FitConfig, site_shapes
from theorycraft.refine import Judge, default_vocabulary, explained_sites, parse_vocabulary, search

from _rounds import ratio

SEARCHES = {  # name: (start theory, search arguments, fit arguments), as docs/search.md runs them
    "modadd": ("examples/search_modadd.yaml", {"budget_bits": 324_000}, {}),
    "superposition": ("examples/search_superposition.yaml", {}, {}),
    "induction": ("examples/search_induction.yaml", {"tries": 3}, {"max_steps": 500}),
}
VARIANTS = {"incremental": True, "full": False}


def prepare(name: str):
    path, kwargs, fit_kwargs = SEARCHES[name]
    theory = load_theory(path)
    acts = capture(theory, seed=0, progress=False)
    text = default_vocabulary(theory, site_shapes(theory, acts.sites), acts.inputs())
    vocab = parse_vocabulary(text, "<default vocabulary>", theory)
    config = FitConfig(seed=0, progress=False, **fit_kwargs)
    return theory, acts, vocab, config, kwargs


def run_once(prepared, incremental: bool, budget_seconds: float | None = None):
    """(seconds per accepted step, the trail) of one search."""
    theory, acts, vocab, config, kwargs = prepared
    judge = Judge(theory, acts, explained_sites(theory, vocab), config, incremental=incremental)
    start = time.perf_counter()
    found = search(theory, acts, vocab, judge=judge, progress=False, budget_seconds=budget_seconds, **kwargs)
    seconds = time.perf_counter() - start
    return seconds / max(len(found.trail) - 1, 1), found.trail


def worker(name: str, variant: str, warmup_seconds: float) -> None:
    """One timed search in this process (after its warm-up), as a JSON line on stdout."""
    prepared = prepare(name)
    run_once(prepared, VARIANTS[variant], budget_seconds=warmup_seconds)
    per_step, trail = run_once(prepared, VARIANTS[variant])
    print(json.dumps({"per_step": per_step, "steps": [(s.action, round(s.selection.bits_total)) for s in trail]}))


def against(args) -> None:
    """This code's default search vs ``args.against``'s full one, fresh processes, alternating."""
    here = Path(__file__).resolve()
    other = Path(args.against).resolve()
    runs = {"before": (other / ".venv/bin/python", "full", other), "now": (Path(sys.executable), "incremental", here.parents[2])}
    print(f"| search | steps | s/step before ({other.name}, full) | s/step now (incremental) | speed-up (before ÷ now) "
          f"| same steps |\n|---|---:|---:|---:|---:|---|", flush=True)
    for name in args.only:
        times: dict[str, list[float]] = {v: [] for v in runs}
        trails: dict[str, list] = {v: [] for v in runs}
        for _ in range(args.rounds):
            for label, (python, variant, root) in runs.items():
                out = subprocess.run([str(python), str(here), "--worker", name, variant, str(args.warmup_seconds)],
                                     cwd=root, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                times[label].append(result["per_step"])
                trails[label].append(result["steps"])
        same = all(a == b for a, b in zip(trails["before"], trails["now"]))
        same_actions = all([x[0] for x in a] == [x[0] for x in b] for a, b in zip(trails["before"], trails["now"]))
        print(f"| {name} | {len(trails['now'][0]) - 1} | {statistics.median(times['before']):.2f} "
              f"| {statistics.median(times['now']):.2f} | {ratio(times, 'now', 'before')} | "
              f"{'actions and totals' if same else 'actions only' if same_actions else 'no'} |", flush=True)
        for label in runs:
            print(f"  {label}: {trails[label][0]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup-seconds", type=float, default=30.0,
                        help="each variant's warm-up search stops after this long (compiles what the search jits)")
    parser.add_argument("--only", nargs="+", choices=list(SEARCHES), default=list(SEARCHES))
    parser.add_argument("--against", metavar="DIR", help="a checkout (with its .venv) whose full search to compare with")
    parser.add_argument("--smoke", action="store_true",
                        help="superposition only, 1 round, no warm-up, each search stopped after 2 s: CI's check that it runs")
    parser.add_argument("--worker", nargs=3, metavar=("SEARCH", "VARIANT", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1], float(args.worker[2]))
    if args.against:
        return against(args)
    budget = 2.0 if args.smoke else None
    if args.smoke:
        args.only, args.rounds = ["superposition"], 1
    print("| search | steps | s/step incremental | s/step full | speed-up (full ÷ incremental) | same steps |\n"
          "|---|---:|---:|---:|---:|---|", flush=True)
    for name in args.only:
        prepared = prepare(name)
        for incremental in VARIANTS.values() if budget is None else ():  # warm-up: jit compilation out of the timings
            run_once(prepared, incremental, budget_seconds=args.warmup_seconds)
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        trails: dict[str, list] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant, incremental in VARIANTS.items():
                per_step, trail = run_once(prepared, incremental, budget_seconds=budget)
                times[variant].append(per_step)
                trails[variant].append(trail)
        same = all([(s.action, round(s.selection.bits_total)) for s in a] == [(s.action, round(s.selection.bits_total))
                                                                             for s in b]
                   for a, b in zip(trails["incremental"], trails["full"]))
        same_actions = all([s.action for s in a] == [s.action for s in b]
                           for a, b in zip(trails["incremental"], trails["full"]))
        steps = len(trails["incremental"][0]) - 1
        print(f"| {name} | {steps} | {statistics.median(times['incremental']):.2f} | {statistics.median(times['full']):.2f} "
              f"| {ratio(times, 'incremental', 'full')} | "
              f"{'actions and totals' if same else 'actions only' if same_actions else 'no'} |", flush=True)
        for variant in VARIANTS:
            final = trails[variant][0][-1]
            print(f"  {variant}: {[s.action for s in trails[variant][0]]}; final validation total "
                  f"{final.selection.bits_total:,.0f}, test coverage {final.report.coverage:.4f}, "
                  f"theory {final.report.bits_theory:,.0f} bits", flush=True)


if __name__ == "__main__":
    main()
