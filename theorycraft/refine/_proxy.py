"""Cheap estimates of what each candidate would buy, computed on the current residual R.

    fixed features Z   ridge gain tr(RᵀZ (ZᵀZ + λ)⁻¹ ZᵀR): per candidate two small statistics
                       (ZᵀZ, ZᵀR), all candidates of one width in one jitted batch
    any other kind     its ``estimate`` hook (``theorycraft/inference/kinds/``), e.g.
      lookup             the same for a one-hot Z: Σ_cells ‖Σ r‖² / (count + 1), by bincount
      mechanism (rank r) reduced-rank regression: the top r eigenvalues of (XᵀR)ᵀ(XᵀX + λ)⁻¹(XᵀR)
      dictionary (k)     the top k principal components of R (what k directions per row at least buy)
      attention          the head's error now minus with attention spread evenly on the rule's keys

A gain in squared error becomes an estimate in bits through the Gaussian residual code, minus
the bits of the parameters the candidate adds (at the current theory's measured bits per
parameter; ``BITS_PER_PARAM`` before it has any); the search then fits and scores only the best
few for real.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from theorycraft.inference._compile import fixed_inputs, init_params, make_plan, site_rows
from theorycraft.inference._fit import Stopped
from theorycraft.inference.kinds import kind_of
from ._vocabulary import Candidate, rebuild, spec_of

BITS_PER_PARAM = 8.0  # a typical quantized parameter; the real fit measures it
MAX_ROWS = 16384  # rows per site the estimates use (sites over positions have many per example)
RIDGE = 1e-3  # relative to the mean eigenvalue


@jax.jit
def ridge_gains(z: jax.Array, r: jax.Array) -> jax.Array:
    """[candidates, rows, k] features and [rows, d] residual -> each candidate's ridge gain."""
    z = z - z.mean(axis=1, keepdims=True)
    gram = jnp.einsum("cnk,cnl->ckl", z, z)
    cross = jnp.einsum("cnk,nd->ckd", z, r)
    k = z.shape[-1]
    scale = jnp.trace(gram, axis1=1, axis2=2) / k
    weights = jnp.linalg.solve(gram + (RIDGE * scale + 1e-9)[:, None, None] * jnp.eye(k), cross)
    return jnp.sum(cross * weights, axis=(1, 2))


@dataclass(frozen=True)
class EstimateContext:
    """What a kind's ``estimate`` hook may use: the site's residual and the batch it was computed on."""

    site: str
    site_shape: tuple[int, ...]
    residual: np.ndarray  # [rows, width], at most ``max_rows`` rows
    examples: int  # examples in the batch
    probe: Callable  # () -> (plan, fixed inputs) of a tiny theory of the candidate ('candidate_features')
    site_rows: Callable  # site name -> its recorded values in its rows
    variables: frozenset = frozenset()  # names read from the probe's fixed inputs, not ``site_rows``
    max_rows: int = MAX_ROWS
    ridge: float = RIDGE


# --- per candidate ------------------------------------------------------------------------------

def probe(cand: Candidate, theory, shapes, vocab_size, batch: dict, item: dict | None = None):
    """The candidate's inputs in its site's rows, as (plan, fixed inputs): a tiny theory of just
    the candidate (``item``, default the candidate alone) and what it reads, through the engine's
    own feature code; the candidate's name there is ``candidate_features``."""
    data = theory.to_dict()
    item = cand.item if item is None else item
    written = data.get("components", {})
    components = {r: written[r] for r in spec_of(item).reads() if r in written}
    components["candidate_features"] = item
    tiny = rebuild({"theory": "probe", "target": data["target"], "sites": data["sites"],
                    "variables": {**cand.variables, **data.get("variables", {})}, "components": components})
    plan = make_plan(tiny, shapes, vocab_size)
    return plan, fixed_inputs(plan, batch, cand.site)


def feature_columns(cand: Candidate, theory, shapes, vocab_size, batch) -> np.ndarray:
    """A fixed-feature candidate's own columns ([rows, k]): a merge candidate's one new item."""
    item = {k: v for k, v in cand.item.items() if k != "predicts"}
    return np.asarray(probe(cand, theory, shapes, vocab_size, batch, item)[1]["candidate_features"], np.float32)


def _features(cand: Candidate, theory, judge, batch, readers: dict) -> np.ndarray:
    z = feature_columns(cand, theory, judge.shapes, judge.acts.vocab_size, batch)
    if cand.template in readers:  # what fixed features read it grow with it (cos a · cos b)
        spec = readers[cand.template]
        z = np.concatenate([z, np.asarray(kind_of(spec).apply({}, spec, [z]))], axis=1)
    return z


def _param_count(theory, judge) -> int:
    plan = make_plan(theory, judge.shapes, judge.acts.vocab_size)
    shapes = jax.eval_shape(lambda: init_params(plan, jax.random.PRNGKey(0)))
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))


def _single_gain(cand: Candidate, current, judge, batch: dict, r: np.ndarray) -> tuple[float, int]:
    """(squared-error gain, table cells no example reaches) of a candidate that is not a fixed
    feature (those are estimated together, in ``ridge_gains``): its kind's ``estimate``."""
    context = EstimateContext(
        cand.site, tuple(judge.shapes[cand.site]), r, len(batch["inputs"]),
        probe=lambda: probe(cand, current.theory, judge.shapes, judge.acts.vocab_size, batch),
        site_rows=lambda u: site_rows(judge.mean.plan, u, batch[u]),
        variables=frozenset(cand.variables) | frozenset(current.theory.variables))
    return kind_of(cand.kind).estimate(cand.data, context)


def rank(offered: list[Candidate], current, judge, rows: np.ndarray,
         stop: Callable[[], bool] | None = None) -> list[tuple[Candidate, float]]:
    """Candidates with their estimated gain in bits, best first. ``stop`` (the search's budget)
    is asked before each estimate; when it says so, ``Stopped`` is raised."""
    residual = {s: r[:MAX_ROWS] for s, r in judge.residuals(current, rows).items()}
    batch = {k: v[rows] for k, v in judge.data.items()}
    theory = current.theory
    # fixed features that read other features (products): estimated on a candidate's columns too
    offered_readers = [spec_of(c.data) for c in offered if kind_of(c.kind).fixed and kind_of(c.kind).reads_field]
    readers = {n: spec for spec in offered_readers + list(theory.components.values())
               if kind_of(spec).fixed for n in spec.reads()}
    gains: dict[int, float] = {}
    unseen: dict[int, int] = {}  # a table's rows no example reaches stay zero: nearly free to send
    grouped = defaultdict(list)  # (site, width) -> [(index, features)]
    for k, cand in enumerate(offered):
        if stop is not None and stop():
            raise Stopped("the time budget ran out while estimating")
        if kind_of(cand.kind).fixed:
            z = _features(cand, theory, judge, batch, readers)[:MAX_ROWS]
            grouped[(cand.site, z.shape[1])].append((k, z))
        else:
            gains[k], unseen[k] = _single_gain(cand, current, judge, batch, residual[cand.site])
    for (site, _), members in grouped.items():
        z = np.stack([m[1] for m in members])
        padded = 1 << (len(z) - 1).bit_length()  # candidates in powers of two: a compilation serves many steps
        z = np.concatenate([z, np.zeros((padded - len(z), *z.shape[1:]), z.dtype)]) if padded > len(z) else z
        for (k, _), g in zip(members, np.asarray(ridge_gains(jnp.asarray(z), jnp.asarray(residual[site])))):
            gains[k] = float(g)
    base_params = _param_count(theory, judge)
    per_param = current.selection.bits_theory / current.params if current.params else BITS_PER_PARAM  # as measured
    scored = []
    for k, cand in enumerate(offered):
        sse = float((residual[cand.site] ** 2).sum())
        gain = min(max(gains.get(k, 0.0), 0.0), sse * (1 - 1e-9))
        values = len(judge.examples.validation) * int(np.prod(judge.shapes[cand.site]))  # the split that decides
        bits = values / 2 * math.log2(sse / (sse - gain)) if sse > 0 else 0.0
        added = _param_count(cand.apply(theory), judge) - base_params - unseen.get(k, 0)
        scored.append((cand, bits - per_param * max(added, 0)))
    return sorted(scored, key=lambda s: -s[1])
