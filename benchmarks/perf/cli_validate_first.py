"""How long `theorycraft infer BAD.yaml` takes to report an invalid theory, against `theorycraft
validate BAD.yaml` and, optionally, another installation's `infer` (e.g. one from before theory
files were validated ahead of torch and jax).

    python benchmarks/perf/cli_validate_first.py [--other /path/to/other/venv/bin/theorycraft] [--rounds 5]

Each variant is a fresh process (what a user waits for), alternated in rounds after a warm-up;
prints each one's median [min, max] seconds and the median [min, max] of the paired ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import ratio, rounds  # noqa: E402

BAD = "theory: x\ntarget: builtin:modadd-p113\ncomponents:\n  a: {kind: fourrier}\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--other", help="another theorycraft executable to compare infer with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="1 round, no warm-up: CI's check that it runs")
    args = parser.parse_args()
    n_rounds, warmup = (1, 0) if args.smoke else (args.rounds, 1)
    ours = shutil.which("theorycraft", path=str(Path(sys.executable).parent)) or "theorycraft"
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text(BAD)

        def run(exe: str, command: str):
            return lambda: subprocess.run([exe, command, str(bad)], capture_output=True, check=False)

        variants = {"infer": run(ours, "infer"), "validate": run(ours, "validate")}
        if args.other:
            variants["other infer"] = run(args.other, "infer")
        times = rounds(variants, n_rounds=n_rounds, warmup=warmup)
    for name, seconds in times.items():
        print(f"{name}: median {statistics.median(seconds):.2f} s [{min(seconds):.2f}, {max(seconds):.2f}]")
    print(f"infer / validate time: {ratio(times, 'validate', 'infer')}")
    if args.other:
        print(f"other infer / infer time: {ratio(times, 'infer', 'other infer')}")


if __name__ == "__main__":
    main()
