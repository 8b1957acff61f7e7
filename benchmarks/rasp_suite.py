"""The RASP suite: the default search on compiled tracr programs, from a start naming only the sites.

Each program is compiled with tracr (`tracr-pypi`, `dm-haiku`: the `test` extra), run on 300
sequences drawn with a fixed seed and exported in the ``activations:DIR`` format as
``examples/rasp/export.py`` does (plain, and with the residual basis hidden by a fixed random
rotation), into ``--data`` (default ``runs/rasp-suite/data``; regenerated only when missing). A
start ``search_PROGRAM.yaml`` naming only the residual sites is written beside each recording,
and the default search runs on it with a time limit per program. The table gives, on the test
split:

- ``free``: free-running coverage over every site the program writes, a site the theory declares
  as an input counting as unexplained (R² 0 there);
- ``params``: the found theory's parameters against the true theory's (a table of every
  variable tracr writes, at every site that holds it, as ``examples/rasp_*.yaml`` state them);
- the wall and CPU time, the variables found, and whether the search stopped on its own.

    python benchmarks/rasp_suite.py                       # every program, plain and rotated
    python benchmarks/rasp_suite.py count reverse --plain --minutes 3
    python benchmarks/rasp_suite.py --plain --cpu                 # the limit on CPU time (a shared machine)
    python benchmarks/rasp_suite.py --list

One JSON line per program goes to ``--out/results.jsonl`` as it finishes; the table is printed at
the end (``--table`` prints it from that file without searching).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.999  # free-running test coverage the suite asks for
PARAMS_RATIO = 1.5  # found parameters within this factor of the true theory's


@dataclass(frozen=True)
class Program:
    make: Callable  # () -> a RASP SOp (tracr imported inside)
    vocab: int  # tokens 0..vocab-1
    max_seq_len: int
    text: str
    distinct: bool = False  # tokens distinct within a sequence (make_sort_unique)
    examples: int = 300


def _lib():
    from tracr.compiler import lib
    from tracr.rasp import rasp
    return lib, rasp


# (make_length is left out: every recorded sequence has the full length, so it is a constant)
def _reverse():
    lib, rasp = _lib()
    return lib.make_reverse(rasp.tokens)


def _pair_balance():
    lib, rasp = _lib()
    return lib.make_pair_balance(rasp.tokens, 0, 1)


def _sort():
    lib, rasp = _lib()
    return lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)


def _sort_freq():
    lib, _ = _lib()
    return lib.make_sort_freq(max_seq_len=5)


def _count_less_freq():
    lib, _ = _lib()
    return lib.make_count_less_freq(2)


def _count():
    lib, rasp = _lib()
    return lib.make_count(rasp.tokens, 0)


def _unique_frac():
    """Own composition, depth 3: the fraction of the tokens up to here that occur once in the sequence."""
    lib, rasp = _lib()
    once = rasp.numerical(rasp.Map(lambda h: h == 1, lib.make_hist())).named("once")
    return lib.make_frac_prevs(once).named("unique_frac")


def _prev_sum():
    """Own composition, depth 3: token plus the previous token mod 3, then whether it is 0."""
    lib, rasp = _lib()
    prev = lib.shift_by(1, rasp.tokens).named("prev")
    total = rasp.SequenceMap(lambda a, b: (a + b) % 3, rasp.tokens, prev).named("prev_sum")
    return rasp.numerical(rasp.Map(lambda s: s == 0, total)).named("prev_sum_zero")


def _detect():
    lib, rasp = _lib()
    return lib.detect_pattern(rasp.tokens, [0, 1])


PROGRAMS = {
    "reverse": Program(_reverse, 3, 5, "tracr make_reverse(tokens): the sequence reversed (length, opp_idx, aggregate)"),
    "count": Program(_count, 3, 5, "tracr make_count(tokens, 0): how many tokens are 0"),
    "pair_balance": Program(_pair_balance, 3, 6, "tracr make_pair_balance(tokens, 0, 1): share of 0s minus share of 1s so far"),
    "sort": Program(_sort, 4, 5, "tracr make_sort(tokens, tokens, max_seq_len=5, min_key=1): sort, ties by position"),
    "sort_freq": Program(_sort_freq, 3, 5, "tracr make_sort_freq(5): tokens sorted by how often they occur"),
    "count_less_freq": Program(_count_less_freq, 3, 5, "tracr make_count_less_freq(2)"),
    "unique_frac": Program(_unique_frac, 3, 6, "frac_prevs(hist == 1): share of the tokens so far that occur once"),
    "prev_sum": Program(_prev_sum, 3, 6, "(token + previous token) % 3 == 0, the previous token by shift_by(1)"),
    "detect": Program(_detect, 3, 6, "tracr detect_pattern(tokens, [0, 1])"),
}


def _exporter():
    spec = importlib.util.spec_from_file_location("rasp_export", ROOT / "examples" / "rasp" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_inputs(p: Program, seed: int = 1234) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if p.distinct:
        body = np.stack([rng.permutation(p.vocab)[:p.max_seq_len] for _ in range(p.examples)])
    else:
        body = rng.integers(0, p.vocab, size=(p.examples, p.max_seq_len))
    bos = np.full((p.examples, 1), p.vocab)  # tracr's id for BOS: right after the vocabulary
    return np.concatenate([bos, body], axis=1).astype(np.int32)


def export(name: str, data: Path, program: Program | None = None) -> None:
    """Compile ``name`` (or ``program`` under that name) and write ``data/name`` and
    ``data/name_rotated`` (with their start theories), unless they are there already."""
    if all((data / d / "manifest.json").exists() for d in (name, f"{name}_rotated")):
        return
    from tracr.compiler import compiling
    ex, p = _exporter(), program or PROGRAMS[name]
    model = compiling.compile_rasp_to_model(p.make(), vocab=set(range(p.vocab)), max_seq_len=p.max_seq_len,
                                            compiler_bos="BOS", compiler_pad="PAD")
    inputs = sample_inputs(p)
    sites = ex.residual_sites(model, inputs)
    labels = [re.sub(r"_\d+(?=:|_selector_width|$)", "", lab) for lab in model.residual_labels]
    ids = f"token ids: 0..{p.vocab - 1} the vocabulary, {p.vocab} BOS (position 0); max_seq_len {p.max_seq_len}"
    ex.write(data / name, inputs, sites, f"{p.text}; {ids}; residual dimensions: {', '.join(labels)}", p.vocab + 1)
    rot = ex.rotation(len(labels))
    ex.write(data / f"{name}_rotated", inputs, {s: a @ rot for s, a in sites.items()},
             f"{p.text}; {ids}; residual basis hidden by a fixed random rotation", p.vocab + 1)
    (data / name / "labels.json").write_text(json.dumps(labels) + "\n")  # for the true theory's size
    for d in (name, f"{name}_rotated"):
        start_theory(data / d)


def start_theory(directory: Path) -> Path:
    """``search_NAME.yaml`` beside the recording: its sites, no components."""
    manifest = json.loads((directory / "manifest.json").read_text())
    lines = [f"theory: rasp-{directory.name.replace('_', '-')}-search",
             f'description: "the start of a search of {directory.name}: its sites, no components"',
             f"target: activations:{directory.resolve()}", "sites:"]
    lines += [f"  {s.replace('.', '_')}: {{hook: {s}}}" for s in manifest["sites"]]
    path = directory.parent / f"search_{directory.name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def true_params(directory: Path) -> int:
    """The parameters of the program's own theory: at each site, a table (width × values) of every
    categorical variable it holds and a linear map (width) of every numerical one; the constant
    ``one`` is the site's mean."""
    plain = directory.parent / directory.name.removesuffix("_rotated")
    labels = json.loads((plain / "labels.json").read_text())
    manifest = json.loads((plain / "manifest.json").read_text())
    total = 0
    for site in manifest["sites"]:
        x = np.load(plain / f"{site}.npy")
        held = np.abs(x).reshape(-1, x.shape[-1]).max(0) > 1e-6
        variables: dict[str, int] = {}
        for lab, on in zip(labels, held):
            name = lab.split(":")[0]
            if on and name != "one":
                variables[name] = variables.get(name, 0) + 1
        total += x.shape[-1] * sum(variables.values())
    return total


def free_coverage(judge, assessment, split: str = "test") -> tuple[float, dict[str, float]]:
    """Free-running coverage over every explained site, a declared input counting as unexplained."""
    from theorycraft.scoring import coverage, r2, squared_errors

    fitted = assessment.fitted
    sst = judge.examples.sst[split]
    free = squared_errors(fitted, judge.examples.data, judge.examples.index[split], free=True)
    inputs = set(fitted.theory.inputs)
    sse = {s: sst[s] if s in inputs else free.get(s, judge.mean_sse[split][s]) for s in judge.explained}
    return coverage(sse, sst), {s: r2(sse[s], sst[s]) for s in judge.explained}


def run(name: str, data: Path, out: Path, minutes: float, log: Callable[[str], None], greedy: bool = False,
        cpu: bool = False) -> dict:
    from theorycraft.api import capture, load_theory
    from theorycraft.inference.engine import FitConfig, site_shapes
    from theorycraft.refine import Judge, default_vocabulary, explained_sites, parse_vocabulary, search

    start = load_theory(str(data / f"search_{name}.yaml"))
    began, cpu_began = time.time(), time.process_time()
    acts = capture(start, cache_dir=out / "cache", progress=False)
    vocab = parse_vocabulary(default_vocabulary(start, site_shapes(start, acts.sites), acts.inputs()),
                             "<default vocabulary>", start)
    judge = Judge(start, acts, explained_sites(start, vocab), FitConfig(progress=False))
    found = search(start, acts, vocab, judge=judge, budget_seconds=minutes * 60, log=log, progress=False,
                   rethink=not greedy, clock=time.process_time if cpu else time.time)
    seconds, cpu_seconds = time.time() - began, time.process_time() - cpu_began  # wall; CPU time of this process, all threads
    best = found.best
    cov, per_site = free_coverage(judge, best)
    theory = judge.judged(best.theory)
    greedy = [s for s in found.trail if not s.action.startswith("replace ")][-1]  # before it changed its mind
    return {"program": name, "free": cov, "r2_free": per_site, "params": best.params,
            "greedy": {"free": greedy.report.coverage_free, "params": greedy.params},
            "true_params": true_params(data / name), "seconds": seconds, "cpu_seconds": cpu_seconds, "stopped": found.stopped,
            "own": not found.stopped.startswith("time budget"), "inputs": sorted(theory.inputs),
            "variables": {k: str(v) for k, v in theory.variables.items()},
            "components": {k: type(c).__name__ for k, c in theory.components.items()},
            "steps": [s.action for s in found.trail], "theory": theory.to_yaml()}


def _greedy(row: dict) -> str:
    """What greedy growth had found before the search changed its mind (its trail's figure: an input
    site at its training mean), where the run recorded it."""
    g = row.get("greedy")
    return f"{g['free']:.4f}, {g['params']:,}" if g else "—"


def _cpu(row: dict) -> str:
    return f"{row['cpu_seconds']:.0f}" if "cpu_seconds" in row else "—"


def table(rows: list[dict]) -> str:
    out = ["| program | free-running test coverage (inputs unexplained) | params found / true | wall (s) | CPU (s) | "
           "stopped on its own | inputs | greedy alone: coverage, params | variables found |",
           "|---|---:|---:|---:|---:|---|---|---|---|"]
    for r in rows:
        ratio = r["params"] / max(r["true_params"], 1)
        mark = "" if r["free"] >= TARGET and ratio <= PARAMS_RATIO else " ✗"
        variables = "; ".join(f"`{k} = {v}`" for k, v in r["variables"].items()) or "—"
        out.append(f"| {r['program']}{mark} | {r['free']:.4f} | {r['params']:,} / {r['true_params']:,} "
                   f"({ratio:.2f}×) | {r['seconds']:.0f} | {_cpu(r)} | {'yes' if r['own'] else 'no'} | "
                   f"{', '.join(r['inputs']) or '—'} | {_greedy(r)} | {variables} |")
    met = sum(r["free"] >= TARGET and r["params"] / max(r["true_params"], 1) <= PARAMS_RATIO for r in rows)
    out.append(f"\n{met} of {len(rows)} reach coverage ≥ {TARGET} within {PARAMS_RATIO}× the true parameters.")
    return "\n".join(out)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def against(rows: list[dict], before: list[dict]) -> str:
    """Each program's row beside the same program's in another run (``--against``): coverage, the
    parameters against the true theory's, the inputs declared."""
    old = {r["program"]: r for r in before}

    def cell(r: dict | None) -> str:
        if r is None:
            return "— | — | —"
        return (f"{r['free']:.4f} | {r['params'] / max(r['true_params'], 1):.2f}× | "
                f"{', '.join(r['inputs']) or '—'}")

    out = ["| program | before: coverage | params / true | inputs | now: coverage | params / true | inputs "
           "| time (s) | on its own |", "|---|---:|---:|---|---:|---:|---|---:|---|"]
    out += [f"| {r['program']} | {cell(old.get(r['program']))} | {cell(r)} | {r['seconds']:.0f} | "
            f"{'yes' if r['own'] else 'no'} |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("programs", nargs="*", help=f"default: all ({', '.join(PROGRAMS)})")
    parser.add_argument("--minutes", type=float, default=10.0, help="time limit of each search (default 10)")
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "rasp-suite" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "rasp-suite")
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--plain", action="store_true", help="only the plain recordings")
    variant.add_argument("--rotated", action="store_true", help="only the rotated recordings")
    parser.add_argument("--greedy", action="store_true", help="greedy growth alone (the search before it could "
                        "change its mind about maps between sites: the baseline)")
    parser.add_argument("--cpu", action="store_true", help="the time limit counts the search's CPU time (all its "
                        "threads), not wall time: for a machine shared with other work")
    parser.add_argument("--table", action="store_true", help="print the table of --out/results.jsonl and stop")
    parser.add_argument("--against", type=Path, help="with --table: beside the rows of this run's directory")
    parser.add_argument("--list", action="store_true", help="list the programs and stop")
    args = parser.parse_args(argv)
    if args.list:
        for name, p in PROGRAMS.items():
            print(f"{name}: {p.text} (vocabulary {p.vocab}, max_seq_len {p.max_seq_len})")
        return 0
    unknown = [p for p in args.programs if p not in PROGRAMS]
    if unknown:
        parser.error(f"unknown program(s) {', '.join(unknown)}; expected some of: {', '.join(PROGRAMS)}")
    results = args.out / "results.jsonl"
    if args.table:
        rows = _rows(results)
        print(against(rows, _rows(args.against / "results.jsonl")) if args.against else table(rows))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.programs or list(PROGRAMS)
    variants = [""] if args.plain else ["_rotated"] if args.rotated else ["", "_rotated"]
    rows = []
    for suffix in variants:
        for name in names:
            export(name, args.data)
            print(f"--- {name}{suffix}", file=sys.stderr, flush=True)
            row = run(name + suffix, args.data, args.out, args.minutes,
                      log=lambda m: print(m, file=sys.stderr, flush=True), greedy=args.greedy, cpu=args.cpu)
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(table([row]).splitlines()[2], file=sys.stderr, flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
