"""``dictionary``: a sparse code (SAE-like), ``width`` latents with at most ``k`` active per
example; each example's active latents are paid for in bits.

Top-k dictionaries compute the full pre-activations once (one dense product), keep the k largest
per row and decode only the k active decoder rows. The backward pass touches k of ``width``
latents per row: the encoder's gradient is summed over the active (row, latent) pairs
(``_select``), not a dense product with mostly-zero codes, and nothing recomputes the k values
from gathered encoder columns (benchmarks/perf/sae.py, docs/speed.md).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from pydantic import Field

from theorycraft.spec import ComponentSpec, NonNegativeFloat, PositiveInt, Refs

from ._base import Example, Kind, Shapes, concat, dense


class Dictionary(ComponentSpec):
    """A sparse code (SAE-like): ``width`` latents, at most ``k`` active per example or an L1
    penalty; each example's active latents are paid for in bits."""

    from_: Refs = Field(alias="from")
    width: PositiveInt
    k: Optional[PositiveInt] = None
    l1: Optional[NonNegativeFloat] = None


class DictionaryKind(Kind):
    schema = Dictionary
    may_read_its_site = True  # an autoencoder: its codes are paid for, so it may reconstruct its input
    latents = True

    def features(self, spec, width_of):  # its width counts latents; it reconstructs its site (or its input)
        if spec.predicts:
            return f"D({spec.predicts})"
        widths = [width_of(r) for r in spec.reads()]
        return sum(widths) if all(isinstance(w, int) for w in widths) else " + ".join(map(str, widths))

    def parameter_shapes(self, spec, fan_in, out):
        return {"encoder": f"[{fan_in}, {spec.width}]", "encoder_bias": f"[{spec.width}]",
                "decoder": f"[{spec.width}, {out}]", "decoder_bias": f"[{out}]"}

    def plan_width(self, name, spec, ctx):
        if not spec.k:
            ctx.problem(name, "expected 'k' (active latents per example): the engine fits top-k dictionaries; "
                              "an L1 penalty on codes is not fitted yet", key=True)
        if spec.k and spec.k > spec.width:
            ctx.problem(name, f"expected k (active latents per example) of at most its width {spec.width}, found "
                              f"{spec.k}", "k")
        target = ctx.widths.get(spec.predicts) if spec.predicts else None
        return target or sum(ctx.widths[r] for r in spec.reads())

    def param_count(self, name, spec, plan):
        n_in, out = sum(plan.shapes(name).inputs), plan.widths[name]
        return n_in * spec.width + spec.width + spec.width * out + out  # encoder, its bias, decoder, its bias

    def row_bytes(self, name, spec, plan):
        """The pre-activations of every latent, the k gathered encoder columns and decoder rows,
        and the output."""
        n_in, out = sum(plan.shapes(name).inputs), plan.widths[name]
        return 4 * (spec.width + (spec.k or spec.width) * (n_in + out + 2) + out) * plan.rows_per_example(name)

    def init(self, key, spec, shapes):
        import jax
        import jax.numpy as jnp

        n_in, out = sum(shapes.inputs), shapes.out
        k1, k2 = jax.random.split(key)
        decoder = jax.random.normal(k2, (spec.width, out), jnp.float32)
        decoder = decoder / jnp.linalg.norm(decoder, axis=-1, keepdims=True)
        encoder = decoder.T if n_in == out else dense(k1, n_in, spec.width)
        return {"encoder": encoder, "encoder_bias": jnp.zeros((spec.width,), jnp.float32),
                "decoder": decoder, "decoder_bias": jnp.zeros((out,), jnp.float32)}

    def apply(self, params, spec, inputs):
        """Top-k dictionaries decode only their k active rows of the decoder (k × d, not width × d
        per row); L1 dictionaries decode densely."""
        import jax.numpy as jnp

        if spec.k:
            values, index = active(params, spec, inputs)
            return jnp.einsum("rk,rkd->rd", values, params["decoder"][index]) + params["decoder_bias"]
        return self.codes(params, spec, inputs) @ params["decoder"] + params["decoder_bias"]

    def codes(self, params, spec, inputs):
        """Sparse codes as a dense [rows, width] array: the top k kept (or all, under L1)."""
        import jax
        import jax.numpy as jnp

        if spec.k:
            values, index = active(params, spec, inputs)
            rows = jnp.arange(values.shape[0])[:, None]
            return jnp.zeros((values.shape[0], spec.width), values.dtype).at[rows, index].set(values)
        x = concat(inputs)
        if x.shape[-1] == params["decoder_bias"].shape[0]:  # an autoencoder: centre on the decoder bias
            x = x - params["decoder_bias"]
        return _sent(params, jax.nn.relu(x @ params["encoder"] + params["encoder_bias"]))

    def estimate(self, data, ctx):
        """The top k principal components of the residual: what k directions per row at least buy."""
        return pca_gain(ctx.residual, data.get("k") or 1), 0

    def example(self, rng):
        return Example({"from": "x", "width": 8, "k": 2}, Shapes((4,), 4),
                       [rng.normal(size=(8, 4)).astype(np.float32)])


def _sent(params, values):
    import jax.numpy as jnp

    if "code_step" in params:  # scoring: the codes as they are sent, at a fixed precision
        return jnp.round(values / params["code_step"]) * params["code_step"]
    return values


def active(params, spec, inputs):
    """Top-k codes as (values [rows, k], latent indices [rows, k]). An autoencoder (input as wide as
    its output) centres its input on the decoder bias, folded into the encoder's bias here:
    ``(x - b_dec) @ W + b = x @ W + (b - b_dec @ W)``, so the centring's gradient is a product
    with a vector, not with every row."""
    import jax

    x = concat(inputs)
    bias = params["encoder_bias"]
    if x.shape[-1] == params["decoder_bias"].shape[0]:  # an autoencoder: centre on the decoder bias
        bias = bias - params["decoder_bias"] @ params["encoder"]
    pre = jax.lax.stop_gradient(x @ params["encoder"] + bias)
    index = jax.lax.top_k(pre, spec.k)[1]  # [rows, k]
    values = jax.nn.relu(_select(x, params["encoder"], bias, index, pre))
    return _sent(params, values), index


def _select_forward(x, encoder, bias, index, pre):
    import jax.numpy as jnp

    return jnp.take_along_axis(pre, index, axis=-1), (x, encoder, index)


def _select_backward(saved, grad):
    """Gradients of the k pre-activations per row: each (row, latent) pair adds its row of ``x``
    to its encoder column (a scatter-add over rows × k, not a product over rows × width)."""
    import jax
    import jax.numpy as jnp

    x, encoder, index = saved
    flat, width = index.reshape(-1), encoder.shape[1]
    d_encoder = jax.ops.segment_sum((grad[..., None] * x[:, None, :]).reshape(-1, x.shape[-1]), flat, width).T
    d_bias = jax.ops.segment_sum(grad.reshape(-1), flat, width)
    d_x = jnp.einsum("rk,rkd->rd", grad, encoder.T[index])  # dropped by XLA when x is data, not a parameter's output
    return d_x, d_encoder, d_bias, None, None


def _make_select():
    """``take_along_axis(pre, index)`` where ``pre = x @ encoder + bias`` (already computed for the
    top-k choice), differentiated as a function of (x, encoder, bias) with a sparse backward."""
    import jax

    select = jax.custom_vjp(lambda x, encoder, bias, index, pre: _select_forward(x, encoder, bias, index, pre)[0])
    select.defvjp(_select_forward, _select_backward)
    return select


_SELECT = []


def _select(x, encoder, bias, index, pre):
    if not _SELECT:  # built on first use: this module imports without JAX
        _SELECT.append(_make_select())
    return _SELECT[0](x, encoder, bias, index, pre)


def pca_gain(r: np.ndarray, k: int) -> float:
    centred = r - r.mean(0)
    return float((np.linalg.svd(centred, compute_uv=False)[:k] ** 2).sum())


KIND = DictionaryKind()
