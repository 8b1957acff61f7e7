"""Every timing script in benchmarks/perf/ runs in its smoke mode (tiny sizes, one round), so a
change that breaks one fails here rather than on the day someone measures with it. The scripts
that load MiniLM take tens of CPU seconds each even in smoke mode: they run when
THEORYCRAFT_PERF_SMOKE=all (e.g. in CI's nightly), the rest always."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parents[1] / "benchmarks" / "perf"
SCRIPTS = sorted(p.name for p in PERF.glob("*.py") if not p.name.startswith("_"))
# the packages a script needs beyond theorycraft's test extra: its peer or its model
NEEDS = {"capture.py": ("transformers",), "capture_writer.py": ("transformers",),
         "cached_start.py": ("transformers",), "memory.py": ("transformers",), "score_memory.py": ("transformers",)}
MODEL = {name for name, needs in NEEDS.items() if "transformers" in needs}  # load MiniLM: minutes under load


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_mode_runs(script: str) -> None:
    for module in NEEDS.get(script, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{script} needs {module}, which is not installed (sae-lens is no theorycraft dependency; "
                        f"transformers comes with the minilm extra)")
    if script in MODEL and os.environ.get("THEORYCRAFT_PERF_SMOKE") != "all":
        pytest.skip(f"{script} loads MiniLM (tens of CPU seconds): set THEORYCRAFT_PERF_SMOKE=all to run it")
    done = subprocess.run([sys.executable, str(PERF / script), "--smoke"], capture_output=True, text=True,
                          cwd=PERF.parents[1], timeout=300)
    assert done.returncode == 0, f"{script} --smoke failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.strip(), f"{script} --smoke printed nothing"
