"""Progress: the benchmark's bar over its reference theories (with its ETA), log lines kept whole
above it; every bar is tqdm.auto's."""

import re
from pathlib import Path

from theorycraft.benchmarks import coverage

ROOT = Path(__file__).resolve().parents[1]


def test_bench_bar_counts_references_with_eta_and_keeps_log_lines(tmp_path, monkeypatch, capsys):
    def suite_run(suite, quick, cache_dir, log, done, progress):  # the suite's work, without fitting
        for name in suite.references:
            log(f"fitted {name}")
            done(name)
        return []

    monkeypatch.setattr(coverage, "run_suite", suite_run)
    targets = ["modadd-p113", "superposition"]
    total = sum(len(s.references) for s in coverage.SUITES if s.name in targets)
    coverage.run_bench(quick=True, out=tmp_path, targets=targets, log=print, progress=True)
    captured = capsys.readouterr()
    frames = captured.err.replace("\r", "\n")
    assert re.search(rf"bench \S+: 100%.*\| {total}/{total} \[\d\d:\d\d<\d\d:\d\d", frames)  # done, elapsed<ETA
    assert all(f"fitted {name}" in captured.out.splitlines() for s in coverage.SUITES if s.name in targets
               for name in s.references)

    coverage.run_bench(quick=True, out=tmp_path, targets=targets, log=lambda m: None, progress=False)
    assert "bench" not in capsys.readouterr().err


def test_every_bar_is_tqdm_auto():
    sources = [p for folder in ("theorycraft", "inference", "benchmarks", "spec") for p in (ROOT / folder).rglob("*.py")]
    plain = [str(p) for p in sources if re.search(r"^\s*(from tqdm import|import tqdm$)", p.read_text(), re.M)]
    assert not plain, f"use tqdm.auto (theorycraft._progress.bar): {plain}"
