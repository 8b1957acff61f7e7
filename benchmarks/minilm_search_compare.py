"""A MiniLM search's found theory next to token + position tables and SAEs, site by site, on
the capture the search judged on (the issue's comparison for ``examples/search_minilm_all.yaml``).

    nice -n 10 python benchmarks/minilm_search_compare.py RUN --fit tables sae:1x4 sae:2x8
    python benchmarks/minilm_search_compare.py RUN            # the table of what is in RUN/compare/

RUN is a search's output directory (``theorycraft search ... --out RUN``): its ``fitted/`` was
scored when the search ended. Each ``--fit`` fits and scores one rival on RUN's capture and writes
``RUN/compare/NAME.json`` (``--capture KEY`` fits them before the search has ended): ``tables`` is a token table (30,522 x 384) and a position table (128 x
384) at every site (``benchmarks/minilm_50m.py``'s theory: exact ridge), ``sae:MxK`` a top-K sparse
autoencoder M x 384 wide of every site (Adam, ``--steps``). Without ``--fit`` it prints one markdown
table: per site test R² teacher-forced / free-running, then bits and MDL compression (the
scorecard's), for the found theory and every rival written so far.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def theory_text() -> str:
    from theorycraft.benchmarks.minilm_50m import theory_text as tables

    return tables(6)


def summary(card, seconds: float | None = None) -> dict:
    """What the table reads from a scorecard."""
    return {"params": card.size.params, "bits": card.size.bits, "bits_inputs": card.size.bits_inputs or 0,
            "compression": card.mdl.compression if card.mdl else None,
            "coverage": card.coverage, "coverage_free": card.coverage_free, "seconds": seconds,
            "sites": {s: {"r2_test": v.r2_test, "r2_test_free": v.r2_test_free} for s, v in card.sites.items()}}


def fit_rival(run: Path, name: str, steps: int, batch_size: int, capture: str | None = None) -> dict:
    from theorycraft.api import run_activations
    from theorycraft.benchmarks.baselines import Context, saes
    from theorycraft.inference.engine import FitConfig, FittedTheory, fit, site_shapes
    from theorycraft.scoring import score
    from theorycraft.spec import parse_theory

    if capture:
        from theorycraft.api import open_capture

        acts = open_capture(capture, parse_theory(theory_text(), path="<minilm tables>"))
    else:
        acts = run_activations(FittedTheory.load(run / "fitted"), run / "fitted")
    tables = parse_theory(theory_text(), path="<minilm tables>")
    config = FitConfig(progress=False)
    if name == "tables":
        theory = tables
    elif name.startswith("sae:"):
        multiple, k = (int(v) for v in name[4:].split("x"))
        ctx = Context(site_shapes(tables, acts.sites), np.asarray(acts.inputs()), acts.vocab_size)
        theory = saes(tables, ctx, [(multiple, k)])[0].theory
        config = FitConfig(progress=False, max_steps=steps, batch_size=batch_size)
    else:
        raise SystemExit(f"expected --fit tables or sae:MxK, found {name!r}")
    start = time.perf_counter()
    card = score(fit(theory, acts, config), acts)
    return summary(card, time.perf_counter() - start)


def table(run: Path) -> str:
    """One row per theory. A rival reads no recorded site, so its scorecard's compression is over
    all seven; the found theory's (and its coverage) is taken from its trail (the judge's test totals: the sites it
    is given sent as data, in its bits, the sites it does not predict sent at their mean), since
    its scorecard's leaves the given sites out of the baseline but not of its bits."""
    from theorycraft.scoring import Scorecard

    found = summary(Scorecard.load(run / "fitted"))
    trail = json.loads((run / "trail.json").read_text())
    first, last = trail["trail"][0]["test"], trail["trail"][-1]["test"]
    found["compression"] = first["bits_total"] / last["bits_total"]
    found["coverage"], found["coverage_free"] = last["coverage"], last["coverage_free"]  # over all seven, too
    rows = {"found": found}
    for path in sorted((run / "compare").glob("*.json")):
        rows[path.stem] = json.loads(path.read_text())
    from theorycraft.spec import parse_theory

    sites = list(parse_theory(theory_text(), path="<minilm tables>").sites)
    lines = ["| theory | " + " | ".join(sites) + " | coverage (free) | params | bits (of them, given sites) | compression |",
             "|---|" + "---:|" * (len(sites) + 4)]
    for name, r in rows.items():
        cells = [f"{r['sites'][s]['r2_test']:.3f} / {r['sites'][s]['r2_test_free']:.3f}" if s in r["sites"]
                 else "given" for s in sites]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['coverage']:.3f} ({r['coverage_free']:.3f}) | "
                     f"{r['params']:,} | {r['bits']:,} ({r.get('bits_inputs', 0):,}) | {r['compression']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--fit", nargs="*", default=[], metavar="RIVAL", help="tables, or sae:MxK (M x 384 wide, top K)")
    parser.add_argument("--steps", type=int, default=600, help="Adam steps for the SAEs")
    parser.add_argument("--batch-size", type=int, default=16, help="examples (windows) per Adam step")
    parser.add_argument("--capture", help="the capture (key or directory) before the search has written RUN/fitted")
    args = parser.parse_args(argv)
    for name in args.fit:
        result = fit_rival(args.run_dir, name, args.steps, args.batch_size, args.capture)
        (args.run_dir / "compare").mkdir(exist_ok=True)
        (args.run_dir / "compare" / f"{name.replace(':', '-')}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"{name}: coverage {result['coverage']:.4f} (free {result['coverage_free']:.4f}), "
              f"{result['bits']:,} bits, compression {result['compression']:.3f}, {result['seconds']:.0f} s")
    if not args.fit:
        print(table(args.run_dir))


if __name__ == "__main__":
    main()
