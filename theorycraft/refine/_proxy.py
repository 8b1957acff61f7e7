"""Cheap estimates of what each candidate would buy, computed on the current residual R.

    fixed features Z   ridge gain tr(RᵀZ (ZᵀZ + λ)⁻¹ ZᵀR): per candidate two small statistics
                       (ZᵀZ, ZᵀR), all candidates of one width in one jitted batch
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

import jax
import jax.numpy as jnp
import numpy as np

from theorycraft.inference._compile import fixed_inputs, init_params, make_plan, site_rows
from theorycraft.inference._kinds import product_apply
from ._vocabulary import FEATURES, Candidate, as_list, rebuild

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


def lookup_gain(cells: np.ndarray, size: int, r: np.ndarray) -> float:
    sums = np.zeros((size, r.shape[1]))
    np.add.at(sums, cells, r)
    counts = np.bincount(cells, minlength=size)
    return float(((sums ** 2).sum(1) / (counts + 1.0)).sum())


def mechanism_gain(x: np.ndarray, r: np.ndarray, rank: int | None) -> float:
    x = x - x.mean(0)
    gram = x.T @ x
    gram += (RIDGE * np.trace(gram) / len(gram) + 1e-9) * np.eye(len(gram))
    cross = x.T @ r
    explained = np.linalg.eigvalsh(cross.T @ np.linalg.solve(gram, cross))[::-1]
    return float(np.maximum(explained[:rank], 0).sum())


def pca_gain(r: np.ndarray, k: int) -> float:
    centred = r - r.mean(0)
    return float((np.linalg.svd(centred, compute_uv=False)[:k] ** 2).sum())


def attention_gain(rule: np.ndarray, head: int, y: np.ndarray, pred: np.ndarray, causal: bool) -> float:
    """``y``, ``pred``: [n, heads, T, T]; ``rule``: [n, T, T] truth values."""
    t = rule.shape[-1]
    keys = rule.astype(bool) & (np.tril(np.ones((t, t), bool)) if causal else True)
    counts = keys.sum(-1, keepdims=True)
    spread = np.where(counts > 0, keys / np.maximum(counts, 1), pred[:, head])
    return float(((pred[:, head] - y[:, head]) ** 2).sum() - ((spread - y[:, head]) ** 2).sum())


# --- per candidate ------------------------------------------------------------------------------

def probe(cand: Candidate, theory, shapes, vocab_size, batch: dict, item: dict | None = None):
    """The candidate's inputs in its site's rows, as (plan, fixed inputs): a tiny theory of just
    the candidate (``item``, default the candidate alone) and what it reads, through the engine's
    own feature code; the candidate's name there is ``candidate_features``."""
    data = theory.to_dict()
    item = cand.item if item is None else item
    components = {r: data["components"][r] for r in item.get("of", []) if cand.kind == "product"}
    components["candidate_features"] = item
    tiny = rebuild({"theory": "probe", "target": data["target"], "sites": data["sites"],
                    "variables": {**cand.variables, **data.get("variables", {})}, "components": components})
    plan = make_plan(tiny, shapes, vocab_size)
    return plan, fixed_inputs(plan, batch, cand.site)


def feature_columns(cand: Candidate, theory, shapes, vocab_size, batch) -> np.ndarray:
    """A fixed-feature candidate's own columns ([rows, k]): a merge candidate's one new item."""
    item = {k: v for k, v in cand.item.items() if k != "predicts"}
    if cand.kind == "product":
        item = {**item, "of": as_list(cand.data["of"])}
    return np.asarray(probe(cand, theory, shapes, vocab_size, batch, item)[1]["candidate_features"], np.float32)


def _features(cand: Candidate, theory, judge, batch, products_of: set[str]) -> np.ndarray:
    z = feature_columns(cand, theory, judge.shapes, judge.acts.vocab_size, batch)
    if cand.template in products_of:  # its products with itself come with it (cos a · cos b)
        z = np.concatenate([z, np.asarray(product_apply({}, None, [jnp.asarray(z)]))], axis=1)
    return z


def _param_count(theory, judge) -> int:
    plan = make_plan(theory, judge.shapes, judge.acts.vocab_size)
    shapes = jax.eval_shape(lambda: init_params(plan, jax.random.PRNGKey(0)))
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))


def _single_gain(cand: Candidate, current, judge, batch: dict, r: np.ndarray) -> tuple[float, int]:
    """(squared-error gain, table cells no example reaches) of a candidate that is not a fixed
    feature (those are estimated together, in ``ridge_gains``)."""
    theory = current.theory
    if cand.kind == "lookup":
        plan, fixed = probe(cand, theory, judge.shapes, judge.acts.vocab_size, batch)
        cells = np.asarray(fixed["candidate_features/expr"][:, 0], np.int64)[:MAX_ROWS]
        size = plan.table_rows("candidate_features")
        return lookup_gain(cells, size, r), (size - len(np.unique(cells))) * r.shape[1]
    if cand.kind in ("linear", "mlp"):
        x = np.concatenate([site_rows(current.fitted.plan, u, batch[u]) for u in as_list(cand.data["from"])], 1)
        return mechanism_gain(x[:MAX_ROWS].astype(np.float64), r.astype(np.float64), cand.data.get("rank")), 0
    if cand.kind == "dictionary":
        return pca_gain(r, cand.data.get("k") or 1), 0
    if cand.kind == "attention":
        _, fixed = probe(cand, theory, judge.shapes, judge.acts.vocab_size, batch)
        shape = judge.shapes[cand.site]
        pred = (site_rows(current.fitted.plan, cand.site, batch[cand.site])[:len(r)] - r).reshape(-1, *shape)
        y = pred + r.reshape(-1, *shape)
        rule = np.broadcast_to(fixed["candidate_features/expr"], (len(batch["inputs"]), *shape[1:]))  # or [T, T]
        return attention_gain(rule[:len(pred)], cand.data.get("head") or 0, y, pred, cand.data.get("causal", True)), 0
    return 0.0, 0


def rank(offered: list[Candidate], current, judge, rows: np.ndarray) -> list[tuple[Candidate, float]]:
    """Candidates with their estimated gain in bits, best first."""
    residual = {s: r[:MAX_ROWS] for s, r in judge.residuals(current, rows).items()}
    batch = {k: v[rows] for k, v in judge.data.items()}
    theory = current.theory
    products_of = {n for c in offered if c.kind == "product" for n in as_list(c.data["of"])}
    products_of |= {r for c in theory.components.values() if c.kind == "product" for r in c.of}
    gains: dict[int, float] = {}
    unseen: dict[int, int] = {}  # a table's rows no example reaches stay zero: nearly free to send
    grouped = defaultdict(list)  # (site, width) -> [(index, features)]
    for k, cand in enumerate(offered):
        if cand.kind in FEATURES:
            z = _features(cand, theory, judge, batch, products_of)[:MAX_ROWS]
            grouped[(cand.site, z.shape[1])].append((k, z))
        else:
            gains[k], unseen[k] = _single_gain(cand, current, judge, batch, residual[cand.site])
    for (site, _), members in grouped.items():
        z = jnp.asarray(np.stack([m[1] for m in members]))
        for (k, _), g in zip(members, np.asarray(ridge_gains(z, jnp.asarray(residual[site])))):
            gains[k] = float(g)
    base_params = _param_count(theory, judge)
    per_param = current.bits_theory / current.params if current.params else BITS_PER_PARAM  # as measured so far
    scored = []
    for k, cand in enumerate(offered):
        sse = float((residual[cand.site] ** 2).sum())
        gain = min(max(gains.get(k, 0.0), 0.0), sse * (1 - 1e-9))
        values = len(judge.examples.test) * int(np.prod(judge.shapes[cand.site]))
        bits = values / 2 * math.log2(sse / (sse - gain)) if sse > 0 else 0.0
        added = _param_count(cand.apply(theory), judge) - base_params - unseen.get(k, 0)
        scored.append((cand, bits - per_param * max(added, 0)))
    return sorted(scored, key=lambda s: -s[1])
