"""A theory's size in bits: its compressed text, its parameters at the coarsest quantization that
costs at most ``R2_TOLERANCE`` of test coverage, and the per-example codes of its dictionaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from theorycraft.inference._compile import component_output, fixed_inputs
from theorycraft.inference._kinds import dictionary_codes

from ._codes import FLOAT_BITS, entropy_bits, spec_bits, subset_bits
from ._heldout import Examples, coverage, squared_errors

R2_TOLERANCE = 0.001  # the most test coverage quantization may cost
LOG2_SCALES = (-20.0, 2.0)  # step sizes searched, relative to each tensor's RMS
SEARCH_STEPS = 12  # bisection steps in log₂(step): a resolution of about 0.005 octaves


@dataclass
class Size:
    bits: float  # spec + params + latent codes
    spec: float
    params: float
    latents: float
    scale: float | None  # the step size relative to RMS (None: kept as float32)
    coverage: float  # test coverage with the quantized parameters
    coverage_full: float
    quantized: object = field(repr=False, default=None)  # the FittedTheory as sent
    sse: dict = field(repr=False, default_factory=dict)  # test squared errors of the unquantized theory

    def as_dict(self) -> dict:
        return {"bits": round(self.bits), "bits_spec": round(self.spec), "bits_params": round(self.params),
                "bits_latents": round(self.latents), "quantization": self.scale,
                "coverage_quantized": round(self.coverage, 6)}


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
    claimed = {fitted.theory.components[n].head or 0 for n in fitted.theory.predictors(site)}
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


def _quantize_tree(tree, scale: float):
    """(dequantized tree, bits): each leaf on its own grid, entropy coded, its step sent as a float."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    quantized = [_quantize(leaf, scale) for leaf in leaves]
    bits = sum(entropy_bits(symbols) + FLOAT_BITS for _, symbols, _ in quantized)
    return treedef.unflatten([values for values, _, _ in quantized]), bits


def _float_bits(tree) -> float:
    return FLOAT_BITS * float(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))


def dictionaries(fitted) -> list[str]:
    return [n for n, c in fitted.theory.components.items() if c.kind == "dictionary"]


def active_latents(fitted, examples: Examples, name: str, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, int]:
    """A dictionary's codes on the test examples, in the rows of the site it feeds, as (active
    latents per row, the active values, width): codes are [rows, width] but mostly zero."""
    plan, data = fitted.plan, examples.data
    site = next(s for s in fitted.sites if name in fitted.theory.upstream(s))
    c = fitted.theory.components[name]
    counts, values = [], []
    for start in range(0, len(examples.test), batch_size):
        rows = examples.test[start:start + batch_size]
        fixed = {k: jnp.asarray(v) for k, v in fixed_inputs(plan, {k: v[rows] for k, v in data.items()}, site).items()}
        inputs = [component_output(plan, fitted.params, r, fixed, {}) for r in c.reads()]
        codes = np.asarray(dictionary_codes(fitted.params[name], c, inputs))
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
    """Parameters as sent: a lookup table as its shared row (the column medians: what rows that
    no example reaches hold) plus each row's difference from it, so unreached rows cost ~0 bits."""
    params = {}
    for name, p in fitted.params.items():
        if fitted.theory.components[name].kind == "lookup":
            table = np.asarray(p["table"], np.float64)
            base = np.median(table, axis=0, keepdims=True)
            params[name] = {"base": base, "rows": table - base}
        else:
            params[name] = p
    return params


def join_table(params: dict) -> dict:
    if "base" not in params:
        return dict(params)
    return {"table": np.asarray(params["base"], np.float32) + np.asarray(params["rows"], np.float32)}


def measure(fitted, examples: Examples, tolerance: float = R2_TOLERANCE) -> Size:
    """Search the coarsest step (relative to each tensor's RMS) whose test coverage is within
    ``tolerance`` of the unquantized theory's; pay for the parameters at that step."""
    means = paid_means(fitted)
    code_rms = {}
    for name in dictionaries(fitted):
        _, values, _ = active_latents(fitted, examples, name)
        code_rms[name] = float(np.sqrt(np.mean(values ** 2))) if values.size else 1.0

    def at(scale: float | None):
        """(theory as sent, parameter bits, test SSE, coverage) at a step ``scale`` (None: float32)."""
        tree = {"params": split_tables(fitted), "means": means}
        if scale is None:
            quantized, bits = fitted, _float_bits(tree)
        else:
            q, bits = _quantize_tree(tree, scale)
            params = {n: join_table(p) for n, p in q["params"].items()}
            for name, rms in code_rms.items():
                params[name]["code_step"] = jnp.asarray(scale * rms, jnp.float32)
            quantized = fitted.replace(params=params, means=_with_means(fitted, q["means"]))
        sse = squared_errors(quantized, examples.data, examples.test)
        return quantized, bits, sse, coverage(sse, examples.sst)

    full = at(None)
    trials: dict = {}

    def within(scale: float) -> bool:
        trials[scale] = at(scale)
        return trials[scale][3] >= full[3] - tolerance

    best_scale = coarsest_scale(within)
    best = trials[best_scale] if best_scale else full  # even the finest grid costs too much: float32
    quantized, param_bits, _, cov = best
    latents = sum(latent_bits(*active_latents(quantized, examples, name), best_scale * rms if best_scale else None)
                  for name, rms in code_rms.items())
    text = spec_bits(fitted.theory.claim())
    return Size(text + param_bits + latents, text, param_bits, latents, best_scale, cov, full[3], quantized, full[2])
