"""Shared by the timing scripts: warm up, alternate variants in rounds, report paired ratios."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def rounds(variants: Mapping[str, Callable[[], object]], n_rounds: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each variant per round; variants run alternately in every round, after a warm-up."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(n_rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> str:
    """median [min, max] of per-round time(denominator)/time(numerator): > 1 means numerator is faster."""
    paired = [d / n for n, d in zip(times[numerator], times[denominator])]
    return f"{statistics.median(paired):.3f} [{min(paired):.3f}, {max(paired):.3f}]"
