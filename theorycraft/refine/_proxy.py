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
parameter, ``bits_per_param``); the search then fits and scores only the best
few for real.

A step changes the residual of the sites its edit touches only, so a search passes one ``memo``
to every ranking: a gain is kept per site residual (by digest) and candidate (by what its
features read), and recomputed only where either changed; kinds keep work shared by several
candidates there too (a mechanism's spectrum serves each of its ranks), and work that depends on
the sampled rows alone (a recorded site's whitening serves every later site, every step).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from theorycraft.inference.engine import Stopped, fixed_inputs, make_plan, site_rows
from theorycraft.inference.kinds import kind_of
from ._vocabulary import Candidate, _used_variables, rebuild, spec_of

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
    memo: dict = field(default_factory=dict)  # work candidates on this residual share (kinds' own keys)
    shared: dict = field(default_factory=dict)  # work on these rows whatever the residual (kinds' own keys)
    identity: str = ""  # what the candidate's features are made of (``identity``): a key into ``shared``


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
    """The parameters ``init_params`` would make, by each kind's arithmetic on the plan (no tracing)."""
    plan = make_plan(theory, judge.shapes, judge.acts.vocab_size)
    return int(sum(kind_of(c).param_count(n, c, plan) for n, c in theory.components.items() if n not in plan.fixed))


def _single_gain(cand: Candidate, current, judge, batch: dict, r: np.ndarray,
                 memo: dict | None = None, shared: dict | None = None, identity: str = "") -> tuple[float, int]:
    """(squared-error gain, table cells no example reaches) of a candidate that is not a fixed
    feature (those are estimated together, in ``ridge_gains``): its kind's ``estimate``."""
    context = EstimateContext(
        cand.site, tuple(judge.shapes[cand.site]), r, len(batch["inputs"]),
        probe=lambda: probe(cand, current.theory, judge.shapes, judge.acts.vocab_size, batch),
        site_rows=lambda u: site_rows(judge.mean.plan, u, batch[u]),
        variables=frozenset(cand.variables) | frozenset(current.theory.variables), memo={} if memo is None else memo,
        shared={} if shared is None else shared, identity=identity)
    return kind_of(cand.kind).estimate(cand.data, context)


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1))
    return h.hexdigest()


def identity(cand: Candidate, theory, readers: dict) -> str:
    """What a candidate's features are made of: the candidate, the components it reads, the
    products that would read it, and the definitions of every variable those use."""
    written = theory.to_dict().get("components", {})
    parts = {"candidate": cand.item, "kind": cand.kind, "site": cand.site,
             "reads": {r: written[r] for r in spec_of(cand.item).reads() if r in written}}
    if cand.template in readers:
        parts["readers"] = readers[cand.template].model_dump(mode="json")
    variables = {**cand.variables, **{k: str(v) for k, v in theory.to_dict().get("variables", {}).items()}}
    used = _used_variables({"components": {"c": cand.item, **parts["reads"]}, "variables": variables})
    parts["variables"] = {k: variables[k] for k in sorted(used & set(variables))}
    return json.dumps(parts, sort_keys=True, default=str)


def bits_per_param(current) -> float:
    """What a parameter of the current theory costs, as measured: its parameters' bits only (a
    site the theory is given is paid for in its bits too, but a new parameter does not cost that);
    ``BITS_PER_PARAM`` before it has any."""
    return current.bits_params / current.params if current.params and current.bits_params else BITS_PER_PARAM


def rank(offered: list[Candidate], current, judge, rows: np.ndarray,
         stop: Callable[[], bool] | None = None, memo: dict | None = None) -> list[tuple[Candidate, float]]:
    """Candidates with their estimated gain in bits, best first. ``stop`` (the search's budget)
    is asked before each estimate; when it says so, ``Stopped`` is raised. ``memo``: kept by the
    caller from one ranking to the next (see the module's doc); it holds only the current
    residuals' entries."""
    residual = {s: r[:MAX_ROWS] for s, r in judge.residuals(current, rows).items()}
    memo = {} if memo is None else memo
    keys = {s: (s, digest(rows, r)) for s, r in residual.items()}
    rows_key = ("rows", digest(rows))
    for stale in set(memo) - set(keys.values()) - {rows_key}:
        memo.pop(stale)
    site_memo = {s: memo.setdefault(key, {"gains": {}}) for s, key in keys.items()}
    shared = memo.setdefault(rows_key, {})
    batch = {k: v[rows] for k, v in judge.data.items()}
    theory = current.theory
    # fixed features that read other features (products): estimated on a candidate's columns too
    offered_readers = [spec_of(c.data) for c in offered if kind_of(c.kind).fixed and kind_of(c.kind).reads_field]
    readers = {n: spec for spec in offered_readers + list(theory.components.values())
               if kind_of(spec).fixed for n in spec.reads()}
    gains: dict[int, float] = {}
    unseen: dict[int, int] = {}  # a table's rows no example reaches stay zero: nearly free to send
    grouped = defaultdict(list)  # (site, width) -> [(index, features)]
    known = {}  # candidate -> its key in its site's memo
    for k, cand in enumerate(offered):
        if stop is not None and stop():
            raise Stopped("the time budget ran out while estimating")
        known[k] = identity(cand, theory, readers)
        kept = site_memo[cand.site]["gains"].get(known[k])
        if kept is not None:
            gains[k], unseen[k] = kept
        elif kind_of(cand.kind).fixed:
            z = _features(cand, theory, judge, batch, readers)[:MAX_ROWS]
            grouped[(cand.site, z.shape[1])].append((k, z))
        else:
            gains[k], unseen[k] = _single_gain(cand, current, judge, batch, residual[cand.site], site_memo[cand.site],
                                               shared, known[k])
    for (site, _), members in grouped.items():
        z = np.stack([m[1] for m in members])
        padded = 1 << (len(z) - 1).bit_length()  # candidates in powers of two: a compilation serves many steps
        z = np.concatenate([z, np.zeros((padded - len(z), *z.shape[1:]), z.dtype)]) if padded > len(z) else z
        for (k, _), g in zip(members, np.asarray(ridge_gains(jnp.asarray(z), jnp.asarray(residual[site])))):
            gains[k], unseen[k] = float(g), 0
    for k, cand in enumerate(offered):
        site_memo[cand.site]["gains"][known[k]] = (gains[k], unseen[k])
    base_params = _param_count(theory, judge)
    per_param = bits_per_param(current)
    scored = []
    site_sse = {s: float((r ** 2).sum()) for s, r in residual.items()}
    for k, cand in enumerate(offered):
        bits = float(gain_bits(gains[k], site_sse[cand.site], residual[cand.site].size, judge, cand.site))
        added = _param_count(cand.apply(theory), judge) - base_params - unseen[k]
        scored.append((cand, bits - per_param * max(added, 0)))
    return sorted(scored, key=lambda s: -s[1])


def gain_bits(gain: float, sse: float, count: int, judge, site: str) -> float:
    """A gain in squared error on ``count`` residual values whose squared error is ``sse``, in
    bits of the Gaussian residual code of the split that decides (validation). Below the site's
    precision a residual costs nothing (``gaussian_bits``' floor), so nothing is gained there:
    a site explained to its precision offers no bits for explaining its rounding."""
    floor = max(count * judge.examples.precision[site] ** 2 / (2 * math.pi * math.e), 1e-300)
    gain = np.clip(gain, 0.0, sse)  # (an array of gains gives an array of bits)
    values = len(judge.examples.validation) * int(np.prod(judge.shapes[site]))
    return values / 2 * np.log2(max(sse, floor) / np.maximum(sse - gain, floor))
