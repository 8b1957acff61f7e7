"""What a component kind is: a schema, an init/apply pair, and hooks with defaults.

A simple kind writes only ``schema`` and ``init``/``apply`` (optax's pure pair: ``init`` returns
the parameters, ``apply`` never stores anything). Every other hook has a default that fits a
learned map that reads features (``from:``) and predicts a site; a kind overrides only what it
means differently. The hooks, by stage:

    language   schema, expression_names, problems, reads_field, may_read_its_site, per_position
    outline    features (output width, symbolic), parameter_shapes
    plan       plan_width (with plan-time checks), input_shapes, expression_inputs
    size       param_count, row_bytes, solve_bytes (priced before anything is allocated)
    engine     init, apply, fixed, penalty, warm_start, closed_form (-> a site solver)
    scoring    send / receive (parameters as coded), latents + codes (per-example codes)
    search     merges, takes_head, estimate
    checks     example (a small instance, for ``check_kind``)

jax is imported inside the engine hooks, never at the top of a kind module: the parser imports
every kind for its schema, and ``theorycraft validate`` must not pay ~1 s for jax.
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, Optional, Union

from theorycraft.spec import ComponentSpec, POSITION_NAMES

Width = Union[int, str]  # an int, or a symbol such as 'D(mlp)' before activations are seen


@dataclass(frozen=True)
class Shapes:
    inputs: tuple[int, ...]  # width of each input, in order
    out: int  # width of the output


@dataclass(frozen=True)
class Example:
    """A small instance of a kind, for ``check_kind``: its component's keys (``kind`` aside), the
    shapes it is built for, and inputs of a few rows as ``apply`` receives them."""

    keys: Mapping
    shapes: Shapes
    inputs: list


@dataclass(frozen=True)
class Start:
    """What a component's gradient fit may start from (``Kind.warm_start``): its predicted site's
    training mean row and per-example shape, and on a sample of training examples, ``inputs``
    (what ``apply`` reads, where none of it is learned; else None) and ``target`` (the site's
    recorded rows there, in the same rows)."""

    site_mean: np.ndarray  # [width] of the site's rows
    site_shape: tuple[int, ...]
    inputs: Optional[list] = None
    target: Optional[np.ndarray] = None  # [rows, width]
    sole: bool = False  # the only component that predicts the site: ``target`` is all its to explain


class Kind:
    """One component kind. Subclass it, set ``schema``, write ``init``/``apply``; register an
    instance with ``theorycraft.register_kind``."""

    schema: ClassVar[type[ComponentSpec]] = ComponentSpec  # the component's keys (pydantic, frozen)
    fixed: ClassVar[bool] = False  # no parameters: features computed once per batch, never per step
    reads_field: ClassVar[Optional[str]] = "from"  # the key that names what it reads (for messages)
    may_read_its_site: ClassVar[bool] = False  # an autoencoder may predict the site it reads
    pattern: ClassVar[bool] = False  # predicts one head (schema key `head`) of a pattern site [head, query, key]
    per_position: ClassVar[bool] = False  # reads its inputs at every position: feeds only sites over every position
    latents: ClassVar[bool] = False  # sends per-example codes (priced by ``codes``)
    merges: ClassVar[Optional[str]] = None  # search: a candidate adds one item to this list key
    takes_head: ClassVar[bool] = False  # search: a candidate replaces what predicts its head

    def parts(self, data: dict) -> list[dict]:
        """Search: simpler components (as written, ``predicts`` kept) that say what this one does
        where its effect is a sum of theirs; offered in its place when pruning. None: []."""
        return []

    # --- language -----------------------------------------------------------------------------

    def expression_names(self) -> frozenset:
        """Names its expressions may use besides variables."""
        return POSITION_NAMES

    def problems(self, spec) -> list[tuple[tuple, str]]:
        """Parse-time problems beyond the schema, as (key path inside the component, message)."""
        return []

    # --- outline: what a reader of the theory sees before any activations --------------------

    def features(self, spec, width_of: Callable[[str], Width]) -> Width:
        """Features it hands on; ``width_of`` gives the width of a name it reads."""
        return getattr(spec, "width", None) or (f"D({spec.predicts})" if spec.predicts else "?")

    def parameter_shapes(self, spec, fan_in: Width, out: Width) -> dict[str, str]:
        return {}

    # --- plan: widths from the captured shapes, every problem with file:line:col --------------

    def plan_width(self, name: str, spec, ctx) -> int:
        """Its output width; problems go to ``ctx.problem``. Default: fixed kinds count their
        features, learned ones take their declared width or the predicted site's."""
        if self.fixed:
            return int(self.features(spec, ctx.widths.__getitem__))
        target = ctx.widths.get(spec.predicts) if spec.predicts else None
        declared = getattr(spec, "width", None)
        if declared and target and declared != target:
            ctx.problem(name, f"width {declared} cannot predict site '{spec.predicts}' of width {target}; "
                              f"expected width {target} (or leave width out)", "width")
        width = declared or target or 0
        if not width:
            ctx.problem(name, "cannot tell this component's output width: give 'width:' or 'predicts:'", key=True)
        return width

    def input_shapes(self, name: str, spec, plan) -> Shapes:
        return Shapes(tuple(plan.widths[r] for r in spec.reads()), plan.widths[name])

    def expression_inputs(self, name: str, spec, ctx):
        """Its expressions' values in the site's rows ([rows, expressions]), computed once per
        batch and handed to ``apply`` as its first input (before what it reads)."""
        return ctx.rows([e for _, e in spec.expressions()])

    # --- size: the plan prices a theory before anything is allocated -------------------------

    def param_count(self, name: str, spec, plan) -> int:
        """Parameters it fits (float32 each). Default: the leaves ``init`` would return, traced
        abstractly by ``jax.eval_shape`` (shapes only, nothing allocated); none for a fixed kind."""
        if self.fixed:
            return 0
        import math

        import jax

        shapes = plan.shapes(name)
        leaves = jax.eval_shape(lambda key: self.init(key, spec, shapes), jax.ShapeDtypeStruct((2,), "uint32"))
        return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(leaves))

    def row_bytes(self, name: str, spec, plan) -> int:
        """Bytes it computes for one example (float32, in all of its rows): its output and what
        it holds on the way. Default: its output."""
        return 4 * plan.widths[name] * plan.rows_per_example(name)

    def solve_bytes(self, name: str, spec, plan) -> int:
        """Bytes a closed-form solve of it holds once per fit besides its parameters (sufficient
        statistics, solver vectors). Default: none."""
        return 0

    # --- engine ---------------------------------------------------------------------------------

    def init(self, key, spec, shapes: Shapes) -> dict:
        return {}

    def apply(self, params, spec, inputs):
        raise NotImplementedError(f"{type(self).__name__} must define apply(params, spec, inputs)")

    def penalty(self, params, spec):
        """Added to the training loss (e.g. an L1 penalty)."""
        return 0.0

    def warm_start(self, params, spec, start: "Start") -> dict:
        """Parameters to start the gradient fit from, where the recorded data points them (the
        predicted site's training mean; its inputs and recorded rows on a few training examples)."""
        return params

    def closed_form(self, spec, plan, predictors: int, solvers) -> Optional[Callable]:
        """The engine's solver of ``solvers`` (``ridge``: plain linear maps of fixed features;
        ``tables``: a sum of lookup tables and such maps) when a site predicted by ``predictors``
        components of this kind has an exact solution; None: fitted by Adam."""
        return None

    # --- scoring --------------------------------------------------------------------------------

    def send(self, params) -> dict:
        """Parameters as they are coded for the size in bits (each leaf quantized on its own)."""
        return params

    def receive(self, sent) -> dict:
        """``send``'s inverse, applied to the quantized values."""
        return dict(sent)

    def codes(self, params, spec, inputs):
        """Per-example codes [rows, latents], mostly zero (kinds with ``latents``)."""
        raise NotImplementedError(f"{type(self).__name__} sends no per-example codes")

    # --- baselines ------------------------------------------------------------------------------

    def randomised(self, data: dict, rng) -> Optional[dict]:
        """The component ``data`` (plain data) with its fixed choices drawn at random, same size
        (the benchmark's "random" baseline); None where the kind has none to draw."""
        return None

    # --- search ---------------------------------------------------------------------------------

    def estimate(self, data: dict, ctx) -> tuple[float, int]:
        """(squared-error gain on the residual, parameters it adds that cost ~nothing) of a
        candidate ``data`` that is not a fixed feature (those are estimated together, by ridge)."""
        return 0.0, 0

    # --- checks ---------------------------------------------------------------------------------

    def example(self, rng) -> Optional[Example]:
        """A small instance of the kind (``rng``: numpy's, for its inputs), which ``check_kind``
        runs through the conformance checks; None: the kind gives none."""
        return None


def dense(key, n_in: int, n_out: int):
    import jax
    import jax.numpy as jnp

    return jax.random.normal(key, (n_in, n_out), jnp.float32) / jnp.sqrt(max(n_in, 1))


def array_module(inputs):
    """numpy where every input is a numpy array (a fixed feature computed once per batch: no
    per-shape compilation), else jax.numpy (inside a traced loss)."""
    import jax.numpy as jnp

    return np if all(isinstance(x, np.ndarray) for x in inputs) else jnp


def concat(inputs):
    xp = array_module(inputs)
    return xp.concatenate([x.reshape(x.shape[0], -1) for x in inputs], axis=-1)


def activation(name: str):
    import jax
    import jax.numpy as jnp

    return {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}[name]
