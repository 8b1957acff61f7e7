"""``attention``: an attention pattern, softmax(sharpness × rule + prior[i, j]) over the allowed
keys; predicts one head of a pattern site ``[head, query, key]``. A fit starts where the head's
recorded patterns point: the sharpness and prior that match its mean pattern and its recorded
mass on the rule's keys, so the rule only has to explain what position does not."""

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
        # start sharp; the positional prior starts uniform (where it predicts a head, warm_start
        # sets both from the head's recorded patterns)
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

    def warm_start(self, params, spec, start):
        """Where the recorded patterns point: the sharpness and prior that match the head's
        recorded mass on the rule's keys and its mean pattern (``matched_start``); the prior alone
        from the mean where no recorded rows are given."""
        import jax.numpy as jnp

        head = spec.head or 0
        mean = np.asarray(start.site_mean).reshape(start.site_shape)[head]
        t = mean.shape[-1]
        allowed = np.tril(np.ones((t, t), bool)) if spec.causal else np.ones((t, t), bool)
        if start.inputs is None or start.target is None:
            return {**params, "prior": jnp.asarray(np.log(np.maximum(mean, FLOOR)), jnp.float32)}
        rule = np.asarray(start.inputs[0], np.float32).reshape(-1, t, t)
        recorded = np.asarray(start.target, np.float32).reshape(-1, *start.site_shape)[:, head]
        sharpness, prior = matched_start(rule, recorded, mean, allowed)
        return {**params, "sharpness": jnp.asarray(sharpness, jnp.float32), "prior": jnp.asarray(prior, jnp.float32)}

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


FLOOR = 1e-6  # the smallest attention weight a start reads as a logarithm
SHARPEST = 20.0  # |sharpness| a start stops at: e^20 against one key is hard attention


def matched_start(rule: np.ndarray, recorded: np.ndarray, mean: np.ndarray, allowed: np.ndarray,
                  iterations: int = 40) -> tuple[float, np.ndarray]:
    """(sharpness, prior [T, T]) of softmax(sharpness × rule + prior) fitted to one head's recorded
    patterns (``rule``, ``recorded``: [n, T, T]; ``mean``: the head's training mean pattern) by
    cross-entropy with the recorded weights as soft labels. That fit is convex, and at its optimum
    the predicted mean pattern is the recorded one and the predicted mass on the rule's keys is the
    recorded mass: each round takes a Newton step in the sharpness (the Hessian is the variance of
    the rule under the predicted pattern) and an iterative-scaling step in the prior."""
    target = np.log(np.maximum(mean, FLOOR))
    prior, sharpness = np.where(allowed, target, np.log(FLOOR)), 0.0
    mass = float((rule * recorded).sum(-1).mean())  # recorded weight on the rule's keys, per query
    for _ in range(iterations):
        p = _softmax(sharpness * rule + prior, allowed)
        held = (rule * p).sum(-1)  # [n, T]
        spread = float(((rule * rule * p).sum(-1) - held ** 2).mean())
        if spread > 1e-9:
            sharpness = float(np.clip(sharpness - np.clip((held.mean() - mass) / spread, -4, 4), -SHARPEST, SHARPEST))
        p = _softmax(sharpness * rule + prior, allowed)
        step = np.where(allowed, target - np.log(np.maximum(p.mean(0), FLOOR)), 0.0)
        prior = np.clip(prior + step, np.log(FLOOR) - SHARPEST, SHARPEST)
        if np.abs(step).max() < 1e-4 and abs(float(held.mean()) - mass) < 1e-5:
            break
    return sharpness, prior.astype(np.float32)


def _softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    logits = np.where(allowed, logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


KEPT_RULE_BYTES = 16 << 20  # a rule's truth values kept from one step's estimates to the next up to this size


KIND = AttentionKind()
