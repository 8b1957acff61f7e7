"""A component kind written outside theorycraft, as a user would: squares of expressions.

Loaded in YAML as ``kind: custom_kind:Square`` (with trust) or registered as ``square``."""

from theorycraft.inference.kinds import Example, Kind, Shapes
from theorycraft.spec import ComponentSpec, Expression, list_of


class SquareSpec(ComponentSpec):
    """x² for each expression x in ``of``."""

    of: list_of(Expression)

    def expressions(self):
        return tuple((("of", k), e) for k, e in enumerate(self.of))


class Square(Kind):
    schema = SquareSpec
    fixed = True  # no parameters: read out by a linear map
    reads_field = None

    def features(self, spec, width_of):
        return len(spec.of)

    def apply(self, params, spec, inputs):
        return inputs[0].astype("float32") ** 2

    def example(self, rng):  # what check_kind runs it on
        return Example({"of": ["a", "b"]}, Shapes((2,), 2), [rng.normal(size=(8, 2)).astype("float32")])
