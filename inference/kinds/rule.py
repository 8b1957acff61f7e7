"""``rule``: indicator features, 1 where each boolean expression holds, else 0."""

from __future__ import annotations

import numpy as np

from theorycraft.spec import ComponentSpec, Expression, list_of

from ._base import Example, Kind, Shapes, concat


class Rule(ComponentSpec):
    """Indicator features: 1 where each boolean expression in ``when`` holds, else 0."""

    when: list_of(Expression)

    def expressions(self):
        return tuple((("when", k), e) for k, e in enumerate(self.when))


class RuleKind(Kind):
    schema = Rule
    fixed = True
    reads_field = None
    merges = "when"  # a search candidate adds one condition

    def features(self, spec, width_of):
        return len(spec.when)

    def apply(self, params, spec, inputs):
        return concat(inputs).astype(np.float32)  # the expressions' truth values, 0/1

    def example(self, rng):
        return Example({"when": ["a > 1"]}, Shapes((1,), 1),
                       [rng.random((8, 1)) > 0.5])


KIND = RuleKind()
