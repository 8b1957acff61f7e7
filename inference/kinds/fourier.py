"""``fourier``: cos and sin of 2πf·x/modulus for each expression x and each frequency f."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt

from theorycraft.spec._model import ComponentSpec, Expression, PositiveInt, _list_of

from ._base import Kind, concat


class Fourier(ComponentSpec):
    """cos and sin of 2*pi*f*x/modulus for each expression x in ``of`` and each frequency f."""

    of: _list_of(Expression)
    modulus: Annotated[StrictInt, Field(ge=2)]
    frequencies: _list_of(PositiveInt)

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
        import jax.numpy as jnp

        x = concat(inputs)  # [rows, len(of)] numeric values
        freqs = jnp.asarray(spec.frequencies, jnp.float32)
        angle = 2 * jnp.pi * x[:, :, None] * freqs[None, None, :] / spec.modulus  # [rows, of, freqs]
        return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1).reshape(x.shape[0], -1)

    def randomised(self, data, rng):
        """As many frequencies, drawn from those the component does not use."""
        pool = [f for f in range(1, data["modulus"] // 2 + 1) if f not in data["frequencies"]]
        return {**data, "frequencies": sorted(int(f) for f in rng.choice(pool, len(data["frequencies"]), replace=False))}


KIND = FourierKind()
