"""``attention``: an attention pattern, softmax(sharpness × rule + prior[i, j]) over the allowed
keys; predicts one head of a pattern site ``[head, query, key]``. The positional prior starts at
the log of its head's mean pattern, so the rule only has to explain what position does not."""

from __future__ import annotations

import math
import re
from typing import Annotated, Optional

import numpy as np
from pydantic import Field, StrictBool, StrictInt

from theorycraft.spec import ComponentSpec, Expression, PAIR_NAMES, random_offsets

from ._base import Example, Kind, Shapes


class Attention(ComponentSpec):
    """An attention pattern: each query concentrates its attention on the keys where ``rule``
    holds, on top of a learned positional prior; predicts a pattern site ``[N, T, T]``."""

    rule: Expression = Field(description="boolean over query position i and key position j")
    head: Optional[Annotated[StrictInt, Field(ge=0)]] = Field(None, description="which head of the pattern site")
    causal: StrictBool = True

    def expressions(self):
        return ((("rule",), self.rule),)


class AttentionKind(Kind):
    schema = Attention
    reads_field = None
    pattern = True
    takes_head = True  # a search candidate replaces whatever predicts its head

    def expression_names(self):
        return PAIR_NAMES

    def problems(self, spec):
        if spec.predicts is None:
            return [((), "an attention component must name the pattern site it predicts ('predicts:')")]
        return []

    def features(self, spec, width_of):
        return "T x T"

    def parameter_shapes(self, spec, fan_in, out):
        return {"sharpness": "[]", "prior": "[T, T]"}

    def plan_width(self, name, spec, ctx):
        shape = ctx.site_shapes[spec.predicts]
        if len(shape) != 3 or shape[1] != shape[2]:
            ctx.problem(name, f"an attention component predicts a pattern site [head, query, key]; "
                              f"'{spec.predicts}' has per-example shape {list(shape)}", "predicts")
            return 0
        if (spec.head or 0) >= shape[0]:
            ctx.problem(name, f"expected a head below {shape[0]} (the site's head count), found {spec.head}", "head")
        return shape[1] * shape[2]

    def param_count(self, name, spec, plan):
        return 1 + plan.widths[name]  # the sharpness and the [T, T] prior

    def row_bytes(self, name, spec, plan):
        return 3 * 4 * plan.widths[name]  # per example: the rule, the logits and the pattern, [T, T] each

    def input_shapes(self, name, spec, plan):
        return Shapes((plan.widths[name],), plan.widths[name])  # one input: the rule over [T, T]

    def expression_inputs(self, name, spec, ctx):
        return ctx.pairs(spec.rule)  # [N, T, T]: the rule at every (query i, key j)

    def init(self, key, spec, shapes):
        import jax.numpy as jnp

        t = math.isqrt(shapes.out)
        # start sharp; the positional prior starts uniform (warm_start sets it from the head's mean)
        return {"sharpness": jnp.asarray(8.0), "prior": jnp.zeros((t, t), jnp.float32)}

    def apply(self, params, spec, inputs):
        """inputs[0]: the rule's truth value, [N, T, T] (a row per example) or [N * T, T] (a row
        per query, where it feeds a site over positions through an aggregate). Attention is a softmax over the allowed
        keys (causal) of sharpness × rule + a positional prior: it concentrates on the keys where the
        rule holds, and follows the prior where no key matches."""
        import jax
        import jax.numpy as jnp

        rows = inputs[0].shape[0]  # an example ([N, T, T]) or a query ([N * T, T]) per row
        t = inputs[0].shape[-1]
        rule = inputs[0].astype(jnp.float32).reshape(-1, t, t)
        allowed = jnp.tril(jnp.ones((t, t), bool)) if spec.causal else jnp.ones((t, t), bool)
        logits = jnp.where(allowed, params["sharpness"] * rule + params["prior"], -jnp.inf)
        return jax.nn.softmax(logits, axis=-1).reshape(rows, -1)

    def warm_start(self, params, spec, site_mean, site_shape):
        import jax.numpy as jnp

        head = np.asarray(site_mean).reshape(site_shape)[spec.head or 0]
        return {**params, "prior": jnp.asarray(np.log(np.maximum(head, 1e-6)), jnp.float32)}

    def estimate(self, data, ctx):
        """The head's error now minus with attention spread evenly on the rule's keys. The rule's
        truth values on these rows do not depend on the residual: they are kept in ``ctx.shared``
        (by what the candidate is made of) where small, and each step only re-prices them."""
        shape, head = ctx.site_shape, data.get("head") or 0
        key = ("attention rule", ctx.identity)
        rule = ctx.shared.get(key)
        if rule is None:
            _, fixed = ctx.probe()
            rule = np.broadcast_to(fixed["candidate_features/expr"], (ctx.examples, *shape[1:])).astype(bool)
            if ctx.identity and rule.nbytes <= KEPT_RULE_BYTES:
                ctx.shared[key] = rule
        r = ctx.residual.reshape(-1, *shape)[:, head]  # this head only: the others do not change
        pred = ctx.site_rows(ctx.site)[:len(ctx.residual)].reshape(-1, *shape)[:, head] - r
        return attention_gain(rule[:len(pred)], pred + r, pred, data.get("causal", True)), 0

    def randomised(self, data, rng):
        """The same rule with its offset constants drawn anew; None for a rule with none."""
        rule = str(data["rule"])
        return {**data, "rule": random_offsets(rule, rng)} if re.search(r"[-+] \d+", rule) else None

    def example(self, rng):
        return Example({"rule": "j == i - 1", "predicts": "p"}, Shapes((16,), 16),  # a head of 4 x 4 pairs
                       [rng.random((8, 4, 4)) > 0.5])


def attention_gain(rule: np.ndarray, y: np.ndarray, pred: np.ndarray, causal: bool) -> float:
    """``y``, ``pred``: one head's [n, T, T]; ``rule``: [n, T, T] truth values."""
    t = rule.shape[-1]
    keys = rule.astype(bool) & (np.tril(np.ones((t, t), bool)) if causal else True)
    counts = keys.sum(-1, keepdims=True)
    spread = np.where(counts > 0, keys / np.maximum(counts, 1), pred)
    return float(((pred - y) ** 2).sum() - ((spread - y) ** 2).sum())


KEPT_RULE_BYTES = 16 << 20  # a rule's truth values kept from one step's estimates to the next up to this size


KIND = AttentionKind()
