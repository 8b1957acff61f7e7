"""``aggregate``: RASP's aggregate of a select. An attention pattern over (query i, key j) moves
values from the keys to each query: ``out[i] = Σ_j pattern[i, j] · value[j]``.

A categorical variable is moved as its one-hot code (``size``), a numerical one as its value.
The pattern is either *hard*, a ``rule`` whose keys are averaged (0 where no key matches: RASP's
numerical aggregate), or *soft*, an ``attention`` component named by ``select`` (its fitted
sharpness and positional prior; the attention kind is the pattern half of this one). The value
is a variable, a component's features or a recorded site, read at the key positions, so an
aggregate feeds only sites over every position.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from theorycraft.spec import ComponentSpec, Expression, Name, PAIR_NAMES, PositiveInt, random_offsets

from ._base import Example, Kind, Shapes


class Aggregate(ComponentSpec):
    """Values moved between positions: each query gets the mean of ``value`` over the keys where
    ``rule`` holds (hard), or the ``value`` weighted by the pattern of the attention component
    named by ``select`` (soft)."""

    value: Name = Field(description="a variable, component or site, read at the key positions")
    rule: Optional[Expression] = Field(None, description="hard selection: boolean over query i and key j")
    select: Optional[Name] = Field(None, description="soft selection: an attention component's pattern")
    size: Optional[PositiveInt] = Field(None, description="a categorical value: a variable moved as its one-hot "
                                                          "code over this many values (others: all zero)")
    width: Optional[PositiveInt] = Field(None, description="the value's width (checked)")

    @model_validator(mode="after")
    def _one_pattern(self):
        if (self.rule is None) == (self.select is None):
            raise ValueError("an aggregate needs exactly one of 'rule' (hard: the keys where it holds, averaged) "
                             "or 'select' (soft: the pattern of an attention component)")
        return self

    def reads(self):
        return ((self.select,) if self.select else ()) + (self.value,)

    def read_paths(self):
        return ((("select",),) if self.select else ()) + (("value",),)

    def expressions(self):
        return ((("rule",), self.rule),) if self.rule is not None else ()


class AggregateKind(Kind):
    schema = Aggregate
    fixed = True  # no parameters of its own: fixed when what it reads is (a rule and a fixed value)
    reads_field = None
    per_position = True

    def expression_names(self):
        return PAIR_NAMES

    def features(self, spec, width_of):
        return spec.size or width_of(spec.value)

    def plan_width(self, name, spec, ctx):
        from . import kind_of  # the registry imports this module

        width = spec.size or ctx.widths[spec.value]
        value_shape = ctx.site_shapes.get(spec.value)
        if value_shape is not None and len(value_shape) != 2:
            ctx.problem(name, f"the value is read at every key position, so it must be a site over every position "
                              f"([T, D]); '{spec.value}' has per-example shape {list(value_shape)}", "value")
        if spec.size and spec.value not in ctx.theory.variables:
            ctx.problem(name, f"'size' moves a categorical variable as its one-hot code; '{spec.value}' is not a "
                              f"variable", "size")
        if spec.select is not None:
            chosen = ctx.theory.components.get(spec.select)
            if chosen is None or not kind_of(chosen).pattern:
                ctx.problem(name, f"'select' names the attention component whose pattern moves the values; "
                                  f"'{spec.select}' is not one", "select")
        if spec.width and spec.width != width:
            ctx.problem(name, f"expected width {width} (the width of '{spec.value}'), found {spec.width}", "width")
        target = ctx.widths.get(spec.predicts) if spec.predicts else None
        if target and target != width:
            ctx.problem(name, f"it moves '{spec.value}' of width {width}, which cannot predict site "
                              f"'{spec.predicts}' of width {target}; read it out with a linear component "
                              f"({{kind: linear, from: {name}, predicts: {spec.predicts}}})", "predicts")
        return width

    def row_bytes(self, name, spec, plan):
        t = plan.rows_per_example(name)  # a row per query position
        return 4 * t * (t + 2 * plan.widths[name])  # each query's keys, the value and what it moves

    def input_shapes(self, name, spec, plan):
        return Shapes(tuple(plan.widths[r] for r in spec.reads()), plan.widths[name])

    def expression_inputs(self, name, spec, ctx):
        return ctx.pairs(spec.rule)  # [N, T, T]

    def apply(self, params, spec, inputs):
        """inputs: each query's keys, selected by the rule [N * T, T] or weighted by the select's
        pattern [N * T, T]; then the value in the same rows (a row per position), [N * T, W]."""
        import jax
        import jax.numpy as jnp

        pattern, value = inputs[0].astype(jnp.float32), inputs[-1].astype(jnp.float32)
        if spec.size:  # a categorical variable: its one-hot code (a value outside the size: zeros)
            value = jax.nn.one_hot(jnp.round(value[:, 0]).astype(jnp.int32), spec.size)
        t = pattern.shape[-1]
        if spec.rule is not None:  # hard: the mean over the keys where the rule holds (is nonzero), 0 where none
            selected = (pattern != 0).astype(jnp.float32)
            pattern = selected / jnp.maximum(selected.sum(-1, keepdims=True), 1.0)
        moved = jnp.einsum("nqk,nkw->nqw", pattern.reshape(-1, t, t), value.reshape(-1, t, value.shape[-1]))
        return moved.reshape(value.shape[0], -1)

    def randomised(self, data, rng):
        """A hard rule with its offset constants drawn anew; None for a rule with none (or a select)."""
        rule = str(data.get("rule", ""))
        drawn = random_offsets(rule, rng)
        return {**data, "rule": drawn} if drawn != rule else None

    def example(self, rng):
        return Example({"rule": "j <= i", "value": "x", "width": 4}, Shapes((4,), 4),
                       [rng.random((8, 4)) > 0.5, rng.normal(size=(8, 4)).astype("float32")])


KIND = AggregateKind()
