"""A theory's size in bits: its compressed text, its parameters at the coarsest quantization that
costs at most ``R2_TOLERANCE`` of validation coverage, and the per-example codes of its
dictionaries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from theorycraft.inference.engine import component_output, fixed_inputs
from theorycraft.inference.kinds import kind_of

from ._codes import FLOAT_BITS, entropy_bits, spec_bits, subset_bits
from ._card import SizeScore
from ._fidelity import Examples, Kept, batches, coverage, squared_errors, unexplained_inputs

R2_TOLERANCE = 0.001  # the most validation coverage quantization may cost
LOG2_SCALES = (-20.0, 2.0)  # step sizes searched, relative to each tensor's RMS
SEARCH_STEPS = 12  # bisection steps in log₂(step): a resolution of about 0.005 octaves


@dataclass
class Size:
    """A theory's size, and its squared errors (unquantized, and as sent) on validation and test.
    The step is chosen on validation; latent codes are paid for the examples of each split."""

    spec: float
    params: float
    latents: dict[str, float]  # split -> bits of that split's examples' latent codes
    inputs: dict[str, float]  # split -> bits of that split's values of the declared inputs
    scale: float | None  # the step size relative to RMS (None: kept as float32)
    sse: dict[str, dict[str, float]]  # split -> site -> squared error of the unquantized theory
    sse_sent: dict[str, dict[str, float]]  # the same with the parameters as sent
    quantized: object = field(repr=False, default=None)  # the FittedTheory as sent

    def bits(self, split: str = "test") -> float:
        """spec + parameters + the latent codes and the declared inputs of ``split``'s examples."""
        return self.spec + self.params + self.latents[split] + self.inputs[split]

    def score(self, params: int, examples: Examples) -> SizeScore:
        return SizeScore(params, round(self.bits()), round(self.spec), round(self.params), round(self.latents["test"]),
                         round(self.inputs["test"]), self.scale, round(coverage(self.sse_sent["test"], examples.sst["test"]), 6))


def input_bits(fitted, examples: Examples) -> dict[str, float]:
    """Per split, the bits of the declared inputs' values (recorded sites the theory is given):
    each coded around its train mean (sent as float32s) to the precision of any site, as the
    mean-only code sends a site. A site that holds exactly the network's input (a vector input's
    hook) is given to every theory: it costs nothing."""
    from ._codes import gaussian_bits
    from ._fidelity import PRECISION, values_of
    from theorycraft.inference.engine import site_rows

    def spread(s, index):  # Σ (y − train mean)², batch by batch
        return sum(float(((site_rows(fitted.plan, s, data[s][rows]) - fitted.means[s]) ** 2).sum())
                   for rows in batches(fitted, index))

    seen = np.union1d(examples.train, examples.validation)
    data, out = examples.data, {"validation": 0.0, "test": 0.0}
    for s in unexplained_inputs(fitted, data):
        precision = PRECISION * max(np.sqrt(spread(s, seen) / values_of(fitted, s, len(seen))), 1e-12)
        for split in out:
            index = examples.index[split]
            sse = spread(s, index)
            out[split] += FLOAT_BITS * np.size(fitted.means[s]) + gaussian_bits(sse, values_of(fitted, s, len(index)),
                                                                                  precision)
    return out


def paid_means(fitted) -> dict[str, np.ndarray]:
    """The training means that are part of the prediction (so their bits are paid): of sites the
    theory predicts by the mean alone, and of the heads no attention component claims."""
    out = {}
    for s in fitted.sites:
        shape = fitted.plan.site_shapes[s]
        if not fitted.theory.predictors(s):
            out[s] = np.asarray(fitted.means[s])
        elif len(shape) == 3:
            heads = unclaimed_heads(fitted, s)
            if heads:
                out[s] = np.asarray(fitted.means[s]).reshape(shape[0], -1)[heads]
    return out


def unclaimed_heads(fitted, site: str) -> list[int]:
    claimed = {fitted.plan.theory.components[n].head or 0 for n in fitted.plan.theory.predictors(site)}
    return [h for h in range(fitted.plan.site_shapes[site][0]) if h not in claimed]


def _with_means(fitted, sent: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The full means with the paid parts replaced by their values as sent."""
    means = dict(fitted.means)
    for s, values in sent.items():
        shape = fitted.plan.site_shapes[s]
        if fitted.theory.predictors(s) and len(shape) == 3:
            full = np.array(fitted.means[s], np.float32).reshape(shape[0], -1)
            full[unclaimed_heads(fitted, s)] = values
            values = full.reshape(np.shape(fitted.means[s]))
        means[s] = values
    return means


def _quantize(array: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(dequantized, integer symbols, step): a uniform grid at ``scale`` × the array's RMS."""
    array = np.asarray(array, np.float64)
    rms = float(np.sqrt(np.mean(array ** 2))) if array.size else 0.0
    if rms == 0.0:
        return array.astype(np.float32), np.zeros(array.shape, np.int64), 0.0
    step = scale * rms
    symbols = np.round(array / step).astype(np.int64)
    return (symbols * step).astype(np.float32), symbols, step


def digest(array) -> bytes:
    """A tensor's content (values, dtype, shape) as 16 bytes: the key its price is kept under."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(f"{array.dtype}{array.shape}".encode(), digest_size=16)
    h.update(array.tobytes())
    return h.digest()


def _quantize_tree(tree, scale: float, prices: dict | None = None, digests: list | None = None):
    """(dequantized tree, bits): each leaf on its own grid, entropy coded, its step sent as a float.
    With ``prices`` (and the leaves' ``digests``), a leaf's bits at a scale are looked up there
    when that tensor was priced at that scale before, and kept there otherwise."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    values, bits = [], 0.0
    for k, leaf in enumerate(leaves):
        dequantized, symbols, _ = _quantize(leaf, scale)
        key = (digests[k], scale) if prices is not None else None
        if key is None or key not in prices:
            price = entropy_bits(symbols) + FLOAT_BITS
            if key is not None:
                prices[key] = price
        values.append(dequantized)
        bits += prices[key] if key is not None else price
    return treedef.unflatten(values), bits


def _float_bits(tree) -> float:
    return FLOAT_BITS * float(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))


def dictionaries(fitted) -> list[str]:
    """Components that send per-example codes (dictionaries)."""
    return [n for n, c in fitted.plan.theory.components.items() if kind_of(c).latents]


def active_latents(fitted, examples: Examples, name: str, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """A dictionary's codes on examples ``index``, in the rows of the site it feeds, as (active
    latents per row, the active values, width): codes are [rows, width] but mostly zero."""
    plan, data = fitted.plan, examples.data
    site = next(s for s in fitted.sites if name in fitted.plan.theory.upstream(s))
    c = fitted.plan.theory.components[name]
    counts, values = [], []
    for rows in batches(fitted, index):
        fixed = {k: jnp.asarray(v) for k, v in fixed_inputs(plan, {k: v[rows] for k, v in data.items()}, site).items()}
        inputs = [component_output(plan, fitted.params, r, fixed, {}) for r in c.reads()]
        codes = np.asarray(kind_of(c).codes(fitted.params[name], c, inputs))
        counts.append((codes != 0).sum(1))
        values.append(codes[codes != 0])
    return np.concatenate(counts), np.concatenate(values), c.width


def latent_bits(counts: np.ndarray, values: np.ndarray, width: int, step: float | None) -> float:
    """Each row's active latents (which ones, as a subset) and their values on a grid of
    ``step`` (None: as float32)."""
    if step is None:
        sent = FLOAT_BITS * float(values.size)
    else:
        sent = entropy_bits(np.round(values / step).astype(np.int64)) + FLOAT_BITS
    return subset_bits(width, counts) + sent


def coarsest_scale(within: Callable[[float], bool], log2_range: tuple[float, float] = LOG2_SCALES,
                   steps: int = SEARCH_STEPS) -> float | None:
    """The largest step 2^x in the range for which ``within`` holds, by bisection on x (to a
    resolution of the range / 2^steps); None if not even the finest step does."""
    lo, hi = log2_range
    if within(2.0 ** hi):
        return 2.0 ** hi
    if not within(2.0 ** lo):
        return None
    for _ in range(steps):  # invariant: 2^lo is within, 2^hi is not
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if within(2.0 ** mid) else (lo, mid)
    return 2.0 ** lo


def split_tables(fitted) -> dict:
    """Parameters as sent, each kind's own way: a lookup table as its shared row (the column
    medians: what rows that no example reaches hold) plus each row's difference from it, so
    unreached rows cost ~0 bits."""
    return {name: kind_of(fitted.plan.theory.components[name]).send(p) for name, p in fitted.params.items()}


def join_tables(fitted, sent: dict) -> dict:
    """``split_tables``'s inverse, on the quantized values."""
    return {name: kind_of(fitted.plan.theory.components[name]).receive(p) for name, p in sent.items()}


def measure(fitted, examples: Examples, tolerance: float = R2_TOLERANCE, prices: dict | None = None) -> Size:
    """Search the coarsest step (relative to each tensor's RMS) whose *validation* coverage is
    within ``tolerance`` of the unquantized theory's; pay for the parameters at that step. Test
    examples are read only to report (their squared errors and latent codes). ``prices``: a
    cache of tensor bits at a step, by content (a search prices the same tensors again and again)."""
    means = paid_means(fitted)
    tree = {"params": split_tables(fitted), "means": means}
    digests = [digest(leaf) for leaf in jax.tree_util.tree_leaves(tree)] if prices is not None else None
    code_rms = {}
    for name in dictionaries(fitted):
        _, values, _ = active_latents(fitted, examples, name, examples.validation)
        code_rms[name] = float(np.sqrt(np.mean(values ** 2))) if values.size else 1.0

    def sent(scale: float) -> tuple[object, float]:
        """(the theory as sent, parameter bits) at a step ``scale``."""
        q, bits = _quantize_tree(tree, scale, prices, digests)
        params = join_tables(fitted, q["params"])
        for name, rms in code_rms.items():
            params[name]["code_step"] = jnp.asarray(scale * rms, jnp.float32)
        return fitted.replace(params=params, means=_with_means(fitted, q["means"])), bits

    kept = Kept()  # the validation batches, which every model here (one plan) is scored on

    def errors(model, split: str) -> dict[str, float]:
        return squared_errors(model, examples.data, examples.index[split], kept=kept if split == "validation" else None)

    full = errors(fitted, "validation")
    floor = coverage(full, examples.sst["validation"]) - tolerance
    passed: dict = {}  # the last step within tolerance and its theory as sent: the bisection's answer

    def within(scale: float) -> bool:
        model, bits = sent(scale)
        ok = coverage(errors(model, "validation"), examples.sst["validation"]) >= floor
        if ok:  # each step that passes is coarser than the last; one copy of the parameters is kept, not one per step
            passed.clear()
            passed[scale] = (model, bits)
        return ok

    # no validation spread to keep (an empty or constant split): nothing to choose a step on
    choosable = sum(examples.sst["validation"].values()) > 0
    best_scale = coarsest_scale(within) if choosable else None
    if best_scale is None:  # even the finest grid costs too much: float32
        quantized, param_bits = fitted, _float_bits(tree)
    else:
        quantized, param_bits = passed[best_scale]
    latents = {split: sum(latent_bits(*active_latents(quantized, examples, name, examples.index[split]),
                                      best_scale * rms if best_scale else None) for name, rms in code_rms.items())
               for split in ("validation", "test")}
    sse = {"validation": full, "test": errors(fitted, "test")}
    sse_sent = {split: errors(quantized, split) for split in sse}
    text = spec_bits(fitted.theory.claim())
    return Size(text, param_bits, latents, input_bits(fitted, examples), best_scale, sse, sse_sent, quantized)
