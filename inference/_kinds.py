"""Component kinds: each a pair of pure functions, registered by name (optax's shape).

    init(key, spec, shapes) -> params        (a dict of arrays; {} for fixed features)
    apply(params, spec, inputs) -> features  ([rows, features]; jit-able)

``shapes`` gives the widths of the inputs and the output; ``inputs`` holds, in order, the
feature arrays of the names the component reads (for fixed kinds: the values of its
expressions, evaluated once per batch by ``_compile``). A kind is *fixed* when it has no
parameters: its features are computed once per batch and never during optimisation steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Shapes:
    inputs: tuple[int, ...]  # width of each input, in order
    out: int  # width of the output


class Kind(NamedTuple):
    init: Callable  # (key, spec, shapes) -> params
    apply: Callable  # (params, spec, inputs) -> [rows, out]
    fixed: bool  # no parameters: features computed once per batch


def _dense(key, n_in: int, n_out: int) -> jax.Array:
    return jax.random.normal(key, (n_in, n_out), jnp.float32) / jnp.sqrt(max(n_in, 1))


def _concat(inputs: Sequence[jax.Array]) -> jax.Array:
    return jnp.concatenate([x.reshape(x.shape[0], -1) for x in inputs], axis=-1)


# --- fixed features ----------------------------------------------------------------------------

def fourier_apply(params, spec, inputs):
    x = _concat(inputs)  # [rows, len(of)] numeric values
    freqs = jnp.asarray(spec.frequencies, jnp.float32)
    angle = 2 * jnp.pi * x[:, :, None] * freqs[None, None, :] / spec.modulus  # [rows, of, freqs]
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1).reshape(x.shape[0], -1)


def rule_apply(params, spec, inputs):
    return _concat(inputs).astype(jnp.float32)  # the expressions' truth values, 0/1


def product_apply(params, spec, inputs):
    if len(inputs) == 1:  # all pairwise products with squares: the upper triangle of x xᵀ
        x = inputs[0]
        rows, cols = jnp.triu_indices(x.shape[-1])
        return x[:, rows] * x[:, cols]
    out = inputs[0]
    for x in inputs[1:]:
        out = (out[:, :, None] * x[:, None, :]).reshape(out.shape[0], -1)
    return out


def _no_params(key, spec, shapes):
    return {}


# --- learned maps ------------------------------------------------------------------------------

_ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}


def lookup_init(key, spec, shapes):
    return {"table": jnp.zeros((shapes.inputs[0], shapes.out), jnp.float32)}


def lookup_apply(params, spec, inputs):
    index = inputs[0].reshape(-1).astype(jnp.int32)  # the joint cell, computed by _compile
    return params["table"][index]


def linear_init(key, spec, shapes):
    n_in, out = sum(shapes.inputs), shapes.out
    k1, k2 = jax.random.split(key)
    params = ({"down": _dense(k1, n_in, spec.rank), "up": _dense(k2, spec.rank, out)} if spec.rank
              else {"weight": _dense(k1, n_in, out) * 0.1})
    if spec.bias:
        params["bias"] = jnp.zeros((out,), jnp.float32)
    return params


def linear_apply(params, spec, inputs):
    x = _concat(inputs)
    y = (x @ params["down"]) @ params["up"] if "down" in params else x @ params["weight"]
    y = y + params["bias"] if "bias" in params else y
    return _ACTIVATIONS[spec.activation](y) if spec.activation else y


def mlp_init(key, spec, shapes):
    sizes = [sum(shapes.inputs), *spec.hidden, shapes.out]
    keys = jax.random.split(key, len(sizes) - 1)
    return {f"layer{k}": {"w": _dense(keys[k], a, b), "b": jnp.zeros((b,), jnp.float32)}
            for k, (a, b) in enumerate(zip(sizes, sizes[1:]))}


def mlp_apply(params, spec, inputs):
    x = _concat(inputs)
    n = len(params)
    for k in range(n):
        x = x @ params[f"layer{k}"]["w"] + params[f"layer{k}"]["b"]
        if k < n - 1:
            x = _ACTIVATIONS[spec.activation](x)
    return x


def dictionary_init(key, spec, shapes):
    n_in, out = sum(shapes.inputs), shapes.out
    k1, k2 = jax.random.split(key)
    decoder = jax.random.normal(k2, (spec.width, out), jnp.float32)
    decoder = decoder / jnp.linalg.norm(decoder, axis=-1, keepdims=True)
    encoder = decoder.T if n_in == out else _dense(k1, n_in, spec.width)
    return {"encoder": encoder, "encoder_bias": jnp.zeros((spec.width,), jnp.float32),
            "decoder": decoder, "decoder_bias": jnp.zeros((out,), jnp.float32)}


def _centred(params, inputs):
    x = _concat(inputs)
    if x.shape[-1] == params["decoder_bias"].shape[0]:  # an autoencoder: centre on the decoder bias
        x = x - params["decoder_bias"]
    return x


def _sent(params, values):
    if "code_step" in params:  # scoring: the codes as they are sent, at a fixed precision
        return jnp.round(values / params["code_step"]) * params["code_step"]
    return values


def dictionary_active(params, spec, inputs):
    """Top-k codes as (values [rows, k], latent indices [rows, k]). The k latents are chosen on
    the full pre-activations without a gradient; their values are recomputed from the k gathered
    encoder columns, so the backward pass touches only the active latents (k of width)."""
    x = _centred(params, inputs)
    pre = jax.lax.stop_gradient(x @ params["encoder"] + params["encoder_bias"])
    index = jax.lax.top_k(pre, spec.k)[1]  # [rows, k]
    columns = params["encoder"].T[index]  # [rows, k, d_in]
    values = jax.nn.relu(jnp.einsum("rd,rkd->rk", x, columns) + params["encoder_bias"][index])
    return _sent(params, values), index


def dictionary_codes(params, spec, inputs):
    """Sparse codes as a dense [rows, width] array: the top k kept (or all, under L1)."""
    if spec.k:
        values, index = dictionary_active(params, spec, inputs)
        rows = jnp.arange(values.shape[0])[:, None]
        return jnp.zeros((values.shape[0], spec.width), values.dtype).at[rows, index].set(values)
    x = _centred(params, inputs)
    return _sent(params, jax.nn.relu(x @ params["encoder"] + params["encoder_bias"]))


def dictionary_apply(params, spec, inputs):
    """Top-k dictionaries decode only their k active rows of the decoder (k × d, not width × d
    per row); L1 dictionaries decode densely."""
    if spec.k:
        values, index = dictionary_active(params, spec, inputs)
        return jnp.einsum("rk,rkd->rd", values, params["decoder"][index]) + params["decoder_bias"]
    return dictionary_codes(params, spec, inputs) @ params["decoder"] + params["decoder_bias"]


def attention_init(key, spec, shapes):
    t = math.isqrt(shapes.out)
    # start sharp; the positional prior starts uniform (the fit warm-starts it from the head's mean)
    return {"sharpness": jnp.asarray(8.0), "prior": jnp.zeros((t, t), jnp.float32)}


def attention_apply(params, spec, inputs):
    """inputs[0]: the rule's truth value [rows, T, T]. Attention is a softmax over the allowed
    keys (causal) of sharpness × rule + a positional prior: it concentrates on the keys where the
    rule holds, and follows the prior where no key matches."""
    rule = inputs[0].astype(jnp.float32)
    t = rule.shape[-1]
    allowed = jnp.tril(jnp.ones((t, t), bool)) if spec.causal else jnp.ones((t, t), bool)
    logits = jnp.where(allowed, params["sharpness"] * rule + params["prior"], -jnp.inf)
    return jax.nn.softmax(logits, axis=-1).reshape(rule.shape[0], -1)


KINDS: dict[str, Kind] = {
    "fourier": Kind(_no_params, fourier_apply, True),
    "rule": Kind(_no_params, rule_apply, True),
    "product": Kind(_no_params, product_apply, True),
    "lookup": Kind(lookup_init, lookup_apply, False),
    "linear": Kind(linear_init, linear_apply, False),
    "mlp": Kind(mlp_init, mlp_apply, False),
    "dictionary": Kind(dictionary_init, dictionary_apply, False),
    "attention": Kind(attention_init, attention_apply, False),
}


def register(name: str, kind: Kind) -> None:
    """Add a component kind (library use; the YAML language knows the built-in kinds)."""
    KINDS[name] = kind
