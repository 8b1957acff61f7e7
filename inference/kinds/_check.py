"""``check_kind``: the conformance checks every kind passes, shipped with the library (as
scikit-learn ships ``check_estimator``), so that a kind written anywhere proves itself with the
checks the test suite runs on every registered kind. jax loads when the checks run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from theorycraft.spec import KINDS

from ._base import Example, Kind

ROWS_PER_EXAMPLE = 4  # what the size hooks are told: each example a sequence of 4 positions


class KindCheckError(AssertionError):
    """A kind failed conformance checks; the message lists every one, with what was expected."""


def check_kind(kind: Kind, example: Example | None = None) -> None:
    """Run a kind through the conformance checks: ``init`` deterministic for a key (and no
    parameters exactly when fixed), ``apply`` of the shapes it was built for, finite, the same
    jitted, with finite gradients; the outline, pricing and size hooks consistent with ``init``;
    unknown keys refused, and a learned map refusing features of the wrong width.

    Parameters
    ----------
    kind : Kind
        The kind to check (an instance).
    example : Example, optional
        A small instance to check it on: its keys, shapes and inputs. Default: the kind's own
        ``example(rng)``.

    Returns
    -------
    None
        Nothing when every check passes; otherwise ``KindCheckError`` lists each one that failed.
    """
    if not isinstance(kind, Kind):
        raise TypeError(f"expected a theorycraft Kind instance, found {type(kind).__name__}")
    name = type(kind).__name__
    example = example if example is not None else kind.example(np.random.default_rng(0))
    if example is None:
        raise KindCheckError(f"{name} gives no example to check it on: define example(self, rng) returning "
                             f"Example(keys, shapes, inputs), or call check_kind(kind, Example(...))")
    import jax.numpy as jnp

    registered = next((n for n, k in KINDS.items() if k is kind), "checked")
    spec = kind.schema.model_validate({"kind": registered, **example.keys})
    inputs = [jnp.asarray(x) for x in example.inputs]
    failed = []
    for check in CHECKS:
        try:
            check(kind, spec, example.shapes, inputs)
        except Exception as exc:  # every check runs; all failures are reported together
            failed.append(f"  {check.__name__.replace('_', ' ')}: {type(exc).__name__}: {exc}".rstrip())
    if failed:
        raise KindCheckError(f"{name} fails {len(failed)} of {len(CHECKS)} conformance checks:\n" + "\n".join(failed))


def init_is_deterministic(kind, spec, shapes, inputs):
    import jax

    params, again = (kind.init(jax.random.PRNGKey(0), spec, shapes) for _ in range(2))
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)
    assert (params == {}) == kind.fixed, (f"expected parameters exactly when the kind is not fixed (fixed = "
                                          f"{kind.fixed}), found {sorted(params) or 'none'}")


def apply_has_its_shape_and_is_finite(kind, spec, shapes, inputs):
    import jax
    import jax.numpy as jnp

    out = kind.apply(kind.init(jax.random.PRNGKey(0), spec, shapes), spec, inputs)
    rows = inputs[0].shape[0]
    assert out.shape == (rows, shapes.out), f"expected an output of shape {(rows, shapes.out)}, found {out.shape}"
    assert bool(jnp.all(jnp.isfinite(out))), "expected finite outputs, found NaN or Inf"


def apply_jits_alike(kind, spec, shapes, inputs):
    import jax

    params = kind.init(jax.random.PRNGKey(0), spec, shapes)
    jitted = jax.jit(lambda p, x: kind.apply(p, spec, x))(params, inputs)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(kind.apply(params, spec, inputs)), rtol=1e-5, atol=1e-6)


def gradients_are_finite(kind, spec, shapes, inputs):
    import jax
    import jax.numpy as jnp

    if kind.fixed:
        return
    params = kind.init(jax.random.PRNGKey(0), spec, shapes)
    grads = jax.grad(lambda p: jnp.sum(kind.apply(p, spec, inputs) ** 2))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads)), \
        "expected finite gradients for every parameter, found NaN or Inf"


def outline_agrees(kind, spec, shapes, inputs):
    import jax

    reads = spec.reads()  # what it reads comes after its expressions' values, in order
    widths = dict(zip(reads, shapes.inputs[len(shapes.inputs) - len(reads):]))
    width = kind.features(spec, lambda r: widths.get(r, 4))
    assert width == shapes.out or isinstance(width, str) or not kind.fixed, \
        f"expected the outline's width {width} to be the engine's {shapes.out}"
    assert isinstance(kind.parameter_shapes(spec, 4, shapes.out), dict), "expected parameter_shapes to give a dict"
    assert kind.penalty(kind.init(jax.random.PRNGKey(0), spec, shapes), spec) is not None, "expected a penalty, found None"


def pricing_round_trips(kind, spec, shapes, inputs):
    """What the scorer sends is what it receives back (on random values: a zero start proves
    nothing); a kind with latents sends per-example codes, any other says it sends none."""
    import jax

    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map(lambda v: rng.normal(size=np.shape(v)).astype(np.float32),
                                    jax.device_get(kind.init(jax.random.PRNGKey(1), spec, shapes)))
    back = kind.receive(kind.send(params))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), back, params)
    if kind.latents:
        codes = np.asarray(kind.codes(params, spec, inputs))
        assert codes.ndim == 2 and len(codes) == inputs[0].shape[0] and np.isfinite(codes).all(), \
            f"expected finite codes [rows, latents], found shape {codes.shape}"
    else:
        try:
            kind.codes(params, spec, inputs)
        except NotImplementedError:
            return
        raise AssertionError("expected a kind without latents to send no per-example codes (NotImplementedError)")


def size_hooks_agree_with_init(kind, spec, shapes, inputs):
    """Its parameter count is what ``init`` allocates (and what the default, tracing ``init``
    without allocating, counts); its bytes per example are at least its output's."""
    import jax

    plan = _one_plan(spec, shapes)
    leaves = jax.tree_util.tree_leaves(kind.init(jax.random.PRNGKey(0), spec, shapes))
    counts = kind.param_count("c", spec, plan), sum(leaf.size for leaf in leaves), Kind.param_count(kind, "c", spec, plan)
    assert len(set(counts)) == 1, f"expected param_count = init's leaves = the traced count, found {counts}"
    assert kind.row_bytes("c", spec, plan) >= 4 * shapes.out, f"expected row_bytes >= {4 * shapes.out} (its output)"
    assert kind.solve_bytes("c", spec, plan) >= 0, "expected solve_bytes >= 0"


def misuse_fails_clearly(kind, spec, shapes, inputs):
    """An unknown key is refused by the schema; a learned map of features refuses features of a
    width it was not built for (rather than broadcasting them)."""
    import jax
    import jax.numpy as jnp
    from pydantic import ValidationError

    try:
        kind.schema.model_validate(spec.model_dump(by_alias=True) | {"no_such_key": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError("expected the schema to refuse an unknown key, found it accepted")
    if kind.fixed or not spec.reads():
        return
    params = kind.init(jax.random.PRNGKey(0), spec, shapes)
    wrong = [*inputs[:-1], jnp.ones((inputs[-1].shape[0], inputs[-1].shape[-1] + 5))]
    try:
        kind.apply(params, spec, wrong)
    except (TypeError, ValueError):
        return
    raise AssertionError(f"expected apply to refuse {wrong[-1].shape[-1]} features where it was built for "
                         f"{inputs[-1].shape[-1]}, found it accepted")


def _one_plan(spec, shapes):
    """What a kind's size hooks read of a plan, for one component 'c' reading fixed features."""
    return SimpleNamespace(shapes=lambda name: shapes, widths={"c": shapes.out}, fixed=frozenset(spec.reads()),
                           theory=SimpleNamespace(variables={}, sites={}),
                           rows_per_example=lambda name: ROWS_PER_EXAMPLE)


CHECKS = (init_is_deterministic, apply_has_its_shape_and_is_finite, apply_jits_alike, gradients_are_finite,
          outline_agrees, pricing_round_trips, size_hooks_agree_with_init, misuse_fails_clearly)
