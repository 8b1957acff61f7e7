"""``product``: products of features, the outer product of two or more components, or all
pairwise products (with squares) of one component's features."""

from __future__ import annotations

from math import prod

from theorycraft.spec import ComponentSpec, Refs

from ._base import Example, Kind, Shapes


class Product(ComponentSpec):
    """Products of features: the outer product of two or more components, or all pairwise
    products (with squares) of one component's features."""

    of: Refs

    def reads(self):
        return self.of


class ProductKind(Kind):
    schema = Product
    fixed = True
    reads_field = "of"

    def features(self, spec, width_of):
        widths = [width_of(r) for r in spec.of]
        if len(widths) == 1:
            w = widths[0]
            return w * (w + 1) // 2 if isinstance(w, int) else f"{w}({w}+1)/2"
        return prod(widths) if all(isinstance(w, int) for w in widths) else " x ".join(map(str, widths))

    def apply(self, params, spec, inputs):
        import numpy as np

        if len(inputs) == 1:  # all pairwise products with squares: the upper triangle of x xᵀ
            x = inputs[0]
            rows, cols = np.triu_indices(x.shape[-1])
            return x[:, rows] * x[:, cols]
        out = inputs[0]
        for x in inputs[1:]:
            out = (out[:, :, None] * x[:, None, :]).reshape(out.shape[0], -1)
        return out

    def example(self, rng):
        return Example({"of": "x"}, Shapes((4,), 10),
                       [rng.normal(size=(8, 4)).astype("float32")])


KIND = ProductKind()
