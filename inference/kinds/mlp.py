"""``mlp``: an honest black box, a multilayer perceptron, paid for at full price."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from theorycraft.spec import ComponentSpec, PositiveInt, Refs, list_of

from ._base import Example, Kind, Shapes, activation, concat, dense
from .linear import KIND as LINEAR


class MLP(ComponentSpec):
    """An honest black box: a multilayer perceptron, paid for at full price."""

    from_: Refs = Field(alias="from")
    hidden: list_of(PositiveInt)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    width: Optional[PositiveInt] = None


class MLPKind(Kind):
    schema = MLP

    def parameter_shapes(self, spec, fan_in, out):
        sizes = [fan_in, *spec.hidden, out]
        return {f"layer{k}": f"[{a}, {b}] + [{b}]" for k, (a, b) in enumerate(zip(sizes, sizes[1:]))}

    def param_count(self, name, spec, plan):
        sizes = [sum(plan.shapes(name).inputs), *spec.hidden, plan.widths[name]]
        return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

    def row_bytes(self, name, spec, plan):
        return 4 * (2 * sum(spec.hidden) + plan.widths[name]) * plan.rows_per_example(name)  # before, after activation

    def init(self, key, spec, shapes):
        import jax
        import jax.numpy as jnp

        sizes = [sum(shapes.inputs), *spec.hidden, shapes.out]
        keys = jax.random.split(key, len(sizes) - 1)
        return {f"layer{k}": {"w": dense(keys[k], a, b), "b": jnp.zeros((b,), jnp.float32)}
                for k, (a, b) in enumerate(zip(sizes, sizes[1:]))}

    def apply(self, params, spec, inputs):
        x = concat(inputs)
        n = len(params)
        for k in range(n):
            x = x @ params[f"layer{k}"]["w"] + params[f"layer{k}"]["b"]
            if k < n - 1:
                x = activation(spec.activation)(x)
        return x

    def estimate(self, data, ctx):
        return LINEAR.estimate(data, ctx)  # at least what a linear map of the same inputs buys

    def example(self, rng):
        return Example({"from": "x", "hidden": [5]}, Shapes((4,), 3),
                       [rng.normal(size=(8, 4)).astype("float32")])


KIND = MLPKind()
