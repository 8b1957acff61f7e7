"""Data access for fits: each site's shape, the examples read from the memory-mapped shards, a
site's rows, the fixed inputs of a batch, and the sums (means, variances) over a split."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from theorycraft.spec import Theory, TheoryError

from . import _distributed
from ._compile import Plan, fixed_inputs, site_rows, varying_columns
from ._stream import capture_rows, chunks, rows_per_example


def site_shapes(theory: Theory, recorded: Mapping[str, tuple]) -> dict[str, tuple]:
    """Each site's per-example shape, its position selected; a position outside the recorded
    sequence (or of a site with none) is reported at file:line:col."""
    shapes, problems = {}, []
    for name, site in theory.sites.items():
        shape = tuple(recorded[str(site.hook)])
        positions = () if site.position is None else (site.position,) if isinstance(site.position, int) else site.position
        outside = [p for p in positions if len(shape) < 2 or not -shape[0] <= p < shape[0]]
        if outside:
            expected = (f"a position from {-shape[0]} to {shape[0] - 1} (the hook records {shape[0]} positions, "
                        f"shape {list(shape)})" if len(shape) >= 2 else
                        f"no position: hook '{site.hook}' records one vector per example, shape {list(shape)}")
            problems.append(theory.diagnostic("sites", name, f"site '{name}': expected {expected}, found position "
                                              f"{outside[0]}", "position"))
            continue
        shapes[name] = site.kept_shape(shape)
    if problems:
        raise TheoryError(problems)
    return shapes


def load_examples(theory: Theory, acts) -> dict:
    """The inputs and every site (positions selected), all examples, read from the memory-mapped
    shards only where indexed (``data[site][rows]`` is a float32 batch): nothing is loaded here."""
    return capture_rows(theory, acts)


def train_means(plan: Plan, data, index: np.ndarray) -> dict[str, np.ndarray]:
    """Each site's mean row over examples ``index``, summed batch by batch (float64)."""
    means = {}
    for s in plan.theory.sites:
        total, count = 0.0, 0
        for rows in chunks(index, rows_per_example(plan.site_shapes[s])):
            y = site_rows(plan, s, data[s][rows])
            # float32 within a batch (4x faster than a float64 sum of float32), float64 across: as _ridge.Stats
            total, count = total + y.sum(0).astype(np.float64), count + len(y)
        total, count = _distributed.allsum(total), int(_distributed.allsum(np.asarray(count, np.int64)))  # Σ over processes
        means[s] = (total / max(count, 1)).astype(np.float32)
    return means



def rows_for(plan: Plan, site: str, examples: np.ndarray) -> np.ndarray:
    shape = plan.site_shapes[site]
    if len(shape) == 2:  # a row per position
        return (examples[:, None] * shape[0] + np.arange(shape[0])).reshape(-1)
    return examples


def fixed_by_site(plan: Plan, data, sites, *, whole: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Per site, what its predictors read, and its targets ``__y__``: the columns the fit changes
    (``varying``), or all of them (``whole``)."""
    out = {}
    for s in sites:
        y = site_rows(plan, s, data[s])
        out[s] = fixed_inputs(plan, data, s) | {"__y__": y if whole else varying(plan, s, y)}
    return out


def varying(plan: Plan, site: str, values):
    """The columns of ``values`` ([rows, width] of ``site``) that the fit changes (``varying_columns``)."""
    columns = varying_columns(plan, site)
    return values if columns is None else values[:, columns]



def minibatch(fixed_all, plan, sites, examples):
    """A minibatch: every array of a site shares that site's rows."""
    return {s: {k: v[rows_for(plan, s, examples)] for k, v in fixed_all[s].items()} for s in sites}



def variances(plan: Plan, sites, data, index: np.ndarray, means) -> dict[str, float]:
    """Each site's summed per-dimension variance over ``index`` (this process's examples; Σ over
    processes), around its mean over them."""
    out = {}
    for s in sites:
        total, count = 0.0, 0
        for rows in chunks(index, rows_per_example(plan.site_shapes[s])):
            y = site_rows(plan, s, data[s][rows])
            total, count = total + float(((y - means[s]) ** 2).sum(dtype=np.float64)), count + len(y)
        total, count = _distributed.allsum(np.array([total, count], np.float64))
        out[s] = float(total) / max(float(count), 1) + 1e-12
    return out



def check_inputs(theory: Theory, acts) -> None:
    """A theory reads ``token[...]`` only of token inputs ``[N, T]``: every variable that reads
    them from float inputs is reported at file:line:col, naming what the inputs are."""
    if acts.input_kind == "tokens":
        return
    shape = acts.manifest["inputs"]["shape"]
    problems = [theory.diagnostic("variables", name, f"variable '{name}' reads token[...], but the inputs of "
                                  f"{theory.target} are {acts.manifest['inputs']['dtype']} vectors {shape}, not "
                                  f"integer token ids [N, T]; read a site instead, or record token inputs")
                for name, expr in theory.variables.items() if any(n == "token" for n, _ in expr.names)]
    if problems:
        raise TheoryError(problems)



def shard_blocks(acts, index: np.ndarray) -> list[tuple[int, int]]:
    """The positions in ``index`` (sorted example indices) that each shard of ``acts`` holds."""
    bounds = [np.searchsorted(index, shard["rows"]) for shard in acts.manifest["shards"]]
    return [(int(a), int(b)) for a, b in bounds if b > a]

