"""Peak memory of ``score`` (with bits) of the 82 M-parameter token + position theory of
``benchmarks/minilm_50m.py`` on a capture of all seven sites, in a process that only loads the
fitted theory and scores it (fit it first, once, with ``fit``).

    nice -n 10 python benchmarks/perf/score_memory.py fit CAPTURE_DIR RUN_DIR
    nice -n 10 python benchmarks/perf/score_memory.py score CAPTURE_DIR RUN_DIR

CAPTURE_DIR: e.g. ``python benchmarks/minilm_50m.py --n 512 --capture-only``. Prints the score's
coverage, bits and wall time, and the process's peak resident set (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import time
from pathlib import Path


def script():
    """benchmarks/minilm_50m.py: its theory, not a copy of it."""
    path = Path(__file__).parents[1] / "minilm_50m.py"
    spec = importlib.util.spec_from_file_location("minilm_50m", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=("fit", "score"))
    parser.add_argument("capture", nargs="?", type=Path)
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--smoke", action="store_true",
                        help="the embeddings-only theory on 4 windows captured here, fitted and scored in this "
                             "process: CI's check that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke()
    if args.run_dir is None:
        parser.error("give fit|score CAPTURE_DIR RUN_DIR (or --smoke)")
    print(json.dumps(measure(args.what, args.capture, args.run_dir, layers=6)))


def smoke() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        acts = script().capture(0, 4, cache_dir=Path(tmp) / "cache", progress=False)
        for what in ("fit", "score"):
            print(json.dumps(measure(what, acts.directory, Path(tmp) / "run", layers=0)))


def measure(what: str, capture: Path, run_dir: Path, layers: int) -> dict:
    from theorycraft.inference.engine import FitConfig, FittedTheory, fit
    from theorycraft.scoring import score
    from theorycraft.spec import parse_theory
    from theorycraft.store import ActivationSet

    acts = ActivationSet(capture)
    start = time.perf_counter()
    if what == "fit":
        theory = parse_theory(script().theory_text(layers), path="<minilm-50m>")
        fit(theory, acts, FitConfig(progress=False)).save(run_dir)
        out = {}
    else:
        card = score(FittedTheory.load(run_dir), acts, bits=True)
        out = {"coverage": card.coverage, "bits": card.size.bits}
    out |= {"seconds": round(time.perf_counter() - start, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}
    return out


if __name__ == "__main__":
    main()
