"""``fourier``: cos and sin of 2πf·x/modulus for each expression x and each frequency f."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from pydantic import Field, StrictInt

from theorycraft.spec import ComponentSpec, Expression, PositiveInt, list_of

from ._base import Example, Kind, Shapes, array_module, concat


class Fourier(ComponentSpec):
    """cos and sin of 2*pi*f*x/modulus for each expression x in ``of`` and each frequency f."""

    of: list_of(Expression)
    modulus: Annotated[StrictInt, Field(ge=2)]
    frequencies: list_of(PositiveInt)

    def expressions(self):
        return tuple((("of", k), e) for k, e in enumerate(self.of))


class FourierKind(Kind):
    schema = Fourier
    fixed = True
    reads_field = None
    merges = "frequencies"  # a search candidate adds one frequency

    def features(self, spec, width_of):
        return 2 * len(spec.frequencies) * len(spec.of)

    def row_bytes(self, name, spec, plan):
        width = plan.widths[name]  # the angles are half of it: [rows, of, frequencies]
        return 4 * (len(spec.of) + width + width // 2) * plan.rows_per_example(name)

    def apply(self, params, spec, inputs):
        xp = array_module(inputs)
        x = concat(inputs).astype(xp.float32)  # [rows, len(of)] numeric values
        freqs = xp.asarray(spec.frequencies, xp.float32)
        angle = xp.float32(2 * np.pi) * x[:, :, None] * freqs[None, None, :] / xp.float32(spec.modulus)  # [rows, of, freqs]
        return xp.concatenate([xp.cos(angle), xp.sin(angle)], axis=-1).reshape(x.shape[0], -1)

    def randomised(self, data, rng):
        """As many frequencies, drawn from those the component does not use."""
        pool = [f for f in range(1, data["modulus"] // 2 + 1) if f not in data["frequencies"]]
        return {**data, "frequencies": sorted(int(f) for f in rng.choice(pool, len(data["frequencies"]), replace=False))}

    def example(self, rng):
        return Example({"of": ["a", "b"], "modulus": 7, "frequencies": [1, 3]}, Shapes((2,), 8),
                       [rng.integers(0, 7, (8, 2)).astype(np.float32)])


KIND = FourierKind()
