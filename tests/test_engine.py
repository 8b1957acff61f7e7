"""The JAX engine: the kind conformance suite, exact ridge, devices, resume, errors, artifacts."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theorycraft.errors import FitError
from theorycraft.inference import KINDS, FitConfig, FittedTheory, fit, register_kind
from theorycraft.inference.kinds import check_kind
from theorycraft.inference import _ridge
from theorycraft.scoring import Scorecard, score
from theorycraft.spec import TheoryError
from theorycraft.targets import write_recording

from conftest import captured, per_position_target, r2_test, recorded_target, theory_for
from custom_kind import Square

# --- the conformance suite: every registered kind ---------------------------------------------------

ROWS, T = 8, 4  # rows of each kind's example: 2 sequences of T positions
NAMES = sorted({*KINDS, "square"})  # the built-in kinds and tests/custom_kind.py's


@pytest.fixture(scope="module", autouse=True)
def square_registered():
    """The custom kind of tests/custom_kind.py, registered for this module's tests only."""
    register_kind("square", Square())
    yield
    KINDS.pop("square")


def _case(name):
    example = KINDS[name].example(np.random.default_rng(0))
    spec = KINDS[name].schema.model_validate({"kind": name, **example.keys})
    return KINDS[name], spec, example.shapes, [jnp.asarray(x) for x in example.inputs]


def test_every_registered_kind_has_a_case():
    assert set(KINDS) == set(NAMES) and all(KINDS[n].example(np.random.default_rng(0)) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_kind_conformance(name):
    """The library's own checks (``check_kind``): jit, finite outputs, shapes, determinism for a
    key, pricing and size hooks consistent with ``init``, clear failure when misused."""
    check_kind(KINDS[name])


def test_a_dictionary_sends_at_most_k_codes_a_row():
    kind, spec, shapes, inputs = _case("dictionary")
    params = jax.device_get(kind.init(jax.random.PRNGKey(1), spec, shapes))
    codes = np.asarray(kind.codes(params, spec, inputs))
    assert codes.shape == (ROWS, spec.width) and ((codes != 0).sum(1) <= spec.k).all()



@pytest.mark.parametrize("n_in", [6, 5])  # an autoencoder (centred on the decoder bias) and a plain encoder
def test_a_top_k_dictionarys_sparse_gradients_equal_the_dense_ones(n_in):
    """The top-k step (k active latents gathered, the encoder's gradient summed over active pairs)
    has the loss and every gradient, of the parameters and of the input, of the dense SAE: all
    ``width`` codes, the non-top-k masked to zero, the input centred on the decoder bias."""
    kind = KINDS["dictionary"]
    spec = kind.schema.model_validate({"kind": "dictionary", "from": "x", "width": 16, "k": 3})
    from theorycraft.inference.kinds import Shapes

    r = np.random.default_rng(3)
    params = kind.init(jax.random.PRNGKey(2), spec, Shapes((n_in,), 6))
    params = {k: v + 0.3 * jnp.asarray(r.normal(size=v.shape), jnp.float32) for k, v in params.items()}
    x = jnp.asarray(r.normal(size=(40, n_in)), jnp.float32)
    y = jnp.asarray(r.normal(size=(40, 6)), jnp.float32)

    def dense(params, x):
        centred = x - params["decoder_bias"] if n_in == 6 else x
        pre = centred @ params["encoder"] + params["encoder_bias"]
        kth = jax.lax.top_k(pre, spec.k)[0][:, -1:]
        codes = jnp.where(pre >= kth, jax.nn.relu(pre), 0.0)
        return codes @ params["decoder"] + params["decoder_bias"]

    def loss(apply):
        return jax.jit(jax.value_and_grad(lambda p, x: jnp.sum((apply(p, x) - y) ** 2), argnums=(0, 1)))

    (sparse_value, (sparse_params, sparse_x)) = loss(lambda p, x: kind.apply(p, spec, [x]))(params, x)
    (dense_value, (dense_params, dense_x)) = loss(dense)(params, x)
    np.testing.assert_allclose(sparse_value, dense_value, rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(sparse_params[name], dense_params[name], rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(sparse_x, dense_x, rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(sparse_params["encoder"])).max() > 0.1  # the gradients compared are not all zero

@pytest.mark.parametrize("name", NAMES)
def test_kind_estimate_hooks(name):
    """Every kind estimates a search candidate to a finite gain and a count of nearly free
    parameters (fixed features are estimated by ridge together: their hook says 0)."""
    from types import SimpleNamespace

    from theorycraft.refine._proxy import EstimateContext

    kind, spec, shapes, inputs = _case(name)
    r = np.random.default_rng(2)
    site_shape = (1, T, T) if kind.pattern else (3,)
    residual = r.normal(size=(ROWS, int(np.prod(site_shape))))
    fixed = {"candidate_features/expr": np.asarray(inputs[0])}
    plan = SimpleNamespace(lookup_sizes={"candidate_features": tuple(getattr(spec, "size", None) or (7,))})
    context = EstimateContext("y", site_shape, residual, ROWS, probe=lambda: (plan, fixed),
                              site_rows=lambda u: r.normal(size=(ROWS, residual.shape[1] if u == "y" else 4)))
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    gain, free = kind.estimate(data, context)
    assert np.isfinite(gain) and isinstance(free, int) and free >= 0
    if kind.fixed:
        assert (gain, free) == (0.0, 0)
    elif not kind.pattern:
        assert gain > 0  # random residuals: some of it is always explained in-sample


@pytest.mark.parametrize("name", ["linear", "mlp", "dictionary"])
def test_kind_misuse_fails_clearly(name):
    kind, spec, shapes, _ = _case(name)
    params = kind.init(jax.random.PRNGKey(0), spec, shapes)
    with pytest.raises(TypeError, match="dot_general|incompatible|shape"):
        kind.apply(params, spec, [jnp.ones((ROWS, 9))])  # 9 features, not the 4 it was built for


def test_a_kind_without_apply_says_what_to_write():
    from theorycraft.inference.kinds import Kind

    with pytest.raises(NotImplementedError, match="must define apply"):
        Kind().apply({}, None, [])
    with pytest.raises(TypeError, match="Kind instance"):
        register_kind("broken", object())


# --- synthetic targets: recorded activations with known structure (conftest) ----------------------

def test_closed_form_matches_a_float64_reference(tmp_path):
    theory = theory_for(recorded_target(tmp_path), "lin: {kind: linear, from: x, predicts: y}\n")
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False))
    strength = fitted.fit_info["closed_form"]["y"]["ridge_strength"]
    train = ~acts.is_test  # ridge refits on train + validation (never on test)
    x, y = acts.site("x")[train].astype(np.float64), acts.site("y")[train].astype(np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    gram = xc.T @ xc
    w = np.linalg.solve(gram + strength * np.trace(gram) / len(gram) * np.eye(len(gram)), xc.T @ yc)
    b = y.mean(0) - x.mean(0) @ w
    np.testing.assert_allclose(fitted.params["lin"]["weight"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fitted.params["lin"]["bias"], b, rtol=1e-4, atol=1e-5)
    assert r2_test(fitted, acts, "y") > 0.99


def test_low_rank_map_is_reduced_rank_ridge(tmp_path):
    theory = theory_for(recorded_target(tmp_path), "lin: {kind: linear, from: x, rank: 2, predicts: y}\n")
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False))
    assert fitted.fit_info["gradient"] is None  # solved in closed form, no Adam steps
    strength = fitted.fit_info["closed_form"]["y"]["ridge_strength"]
    train = ~acts.is_test
    x, y = acts.site("x")[train].astype(np.float64), acts.site("y")[train].astype(np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    gram = xc.T @ xc
    w = np.linalg.solve(gram + strength * np.trace(gram) / len(gram) * np.eye(len(gram)), xc.T @ yc)
    top = np.linalg.svd(xc @ w)[2][:2].T  # the fitted values' top 2 directions
    reference = w @ top @ top.T
    params = fitted.params["lin"]
    np.testing.assert_allclose(np.asarray(params["down"]) @ np.asarray(params["up"]), reference, rtol=1e-3, atol=1e-4)
    full = r2_test(fit(theory_for(tmp_path / "recorded", "lin: {kind: linear, from: x, predicts: y}\n"), acts,
                       FitConfig(progress=False)), acts, "y")
    assert 0.3 < r2_test(fitted, acts, "y") < full  # rank 2 of a rank-4 map: most, not all


def test_ridge_statistics_are_exact_sums():
    r = np.random.default_rng(1)
    x, y = r.normal(size=(300, 5)).astype(np.float32), r.normal(size=(300, 2)).astype(np.float32)
    stats = _ridge.Stats()
    for k in range(0, 300, 70):
        stats.add(x[k:k + 70], y[k:k + 70])
    np.testing.assert_allclose(stats.xtx, x.T.astype(np.float64) @ x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stats.xty, x.T.astype(np.float64) @ y, rtol=1e-5, atol=1e-5)


def test_fourier_theory_recovers_a_planted_wave(tmp_path):
    directory = recorded_target(tmp_path)

    def coverage(frequency):
        theory = theory_for(directory, f"""\
            waves: {{kind: fourier, of: [a, b], modulus: 7, frequencies: [{frequency}]}}
            read: {{kind: linear, from: waves, predicts: z}}
            """)
        acts = captured(tmp_path, theory)
        return r2_test(fit(theory, acts, FitConfig(progress=False)), acts, "z")

    # z[:, 0] is a frequency-1 wave of a and b; the wrong frequency explains none of it
    assert coverage(1) > 0.8
    assert coverage(2) < 0.1


MULTI_DEVICE = """
import json, sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_engine import recorded_target, theory_for, captured
from theorycraft.inference import fit, FitConfig
tmp = Path({tmp!r})
theory = theory_for(recorded_target(tmp), "net: {{kind: mlp, from: x, hidden: [8], predicts: z}}\\n")
fitted = fit(theory, captured(tmp, theory), FitConfig(max_steps=60, batch_size=64, eval_every=20, progress=False))
print(json.dumps({{"devices": len(jax.devices()), "w": np.asarray(fitted.params["net"]["layer0"]["w"]).tolist()}}))
"""


def run_fit_in_process(tmp_path, devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    code = MULTI_DEVICE.format(tests=os.path.dirname(__file__), tmp=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_devices_fit_like_one(tmp_path):
    one = run_fit_in_process(tmp_path / "one", 1)
    four = run_fit_in_process(tmp_path / "four", 4)
    assert (one["devices"], four["devices"]) == (1, 4)
    np.testing.assert_allclose(four["w"], one["w"], rtol=1e-4, atol=1e-5)


def test_interrupted_fit_resumes_to_the_same_result(tmp_path, monkeypatch):
    import tqdm.auto

    theory = theory_for(recorded_target(tmp_path), "net: {kind: mlp, from: x, hidden: [8], predicts: z}\n")
    acts = captured(tmp_path, theory)
    config = FitConfig(max_steps=120, batch_size=64, eval_every=20, checkpoint_every=40, progress=False)
    clean = fit(theory, acts, config, out_dir=None)

    class Interrupting(tqdm.auto.tqdm):
        def update(self, n=1):
            super().update(n)
            if self.n == 60:  # between two checkpoints (and an evaluation: steps run to each in one call), like a Ctrl-C
                raise KeyboardInterrupt

    out = tmp_path / "run"
    out.mkdir()
    monkeypatch.setattr(tqdm.auto, "tqdm", Interrupting)
    with pytest.raises(KeyboardInterrupt):  # a bar that is shown (a disabled bar counts nothing)
        fit(theory, acts, FitConfig(**{**config.__dict__, "progress": True}), out_dir=out)
    monkeypatch.undo()
    assert (out / "checkpoint.npz").exists()
    lines = []
    resumed = fit(theory, acts, config, out_dir=out, log=lines.append)
    assert "resumed from step 60" in lines
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                           resumed.params, clean.params)


def test_a_sum_of_tables_is_the_least_squares_fit_of_one_hot_columns(tmp_path):
    theory = theory_for(recorded_target(tmp_path), """\
        by_a: {kind: lookup, of: a, size: 7, predicts: z}
        by_b: {kind: lookup, of: b, size: 7, predicts: z}
        """)
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False))
    assert fitted.fit_info["gradient"] is None  # solved exactly, in closed form
    tokens, z = np.asarray(acts.inputs()), acts.site("z")
    onehot = np.concatenate([np.eye(7)[tokens[:, 0]], np.eye(7)[tokens[:, 1]], np.ones((len(z), 1))], axis=1)
    train = ~acts.is_test
    coef = np.linalg.lstsq(onehot[train], z[train], rcond=None)[0]
    strength = fitted.fit_info["closed_form"]["z"]["ridge_strength"]
    np.testing.assert_allclose(fitted.predict(tokens)["z"], onehot @ coef, atol=0.02 + strength)
    assert r2_test(fitted, acts, "z") > 0.5  # cos(2πa/7) + 2 sin(2πb/7) is additive


def _correlated_tables(tmp_path, m=13, n=2000):
    """Keys that are functions of each other: b is a or a + 1 (mod m), and y = F[a] + G[b]."""
    r = np.random.default_rng(1)
    a = r.integers(0, m, n)
    b = (a + r.integers(0, 2, n)) % m
    y = r.normal(size=(m, 3))[a] + r.normal(size=(m, 3))[b] + 0.01 * r.normal(size=(n, 3))
    d = write_recording(tmp_path / "correlated", np.stack([a, b], 1).astype(np.int32), {"y": y.astype(np.float32)})
    from theorycraft.spec import parse_theory
    return parse_theory(f"""\
theory: correlated
target: activations:{d}
sites: {{y: y}}
variables: {{a: 'token[0]', b: 'token[1]'}}
components:
  by_a: {{kind: lookup, of: a, size: {m}, predicts: y}}
  by_b: {{kind: lookup, of: b, size: {m}, predicts: y}}
""", path="correlated.yaml")


@pytest.mark.parametrize("solver", ["Cholesky", "conjugate gradients"])
def test_tables_of_correlated_keys_reach_the_exact_ridge_solution(tmp_path, monkeypatch, solver):
    from theorycraft.inference import _solvers

    if solver == "conjugate gradients":  # what a table too large to factorise is solved by
        monkeypatch.setattr(_solvers, "DIRECT_COLUMNS", 0)
    theory = _correlated_tables(tmp_path)
    acts = captured(tmp_path, theory)
    log = []
    fitted = fit(theory, acts, FitConfig(progress=False), log=log.append)
    solve = fitted.fit_info["closed_form"]["y"]
    assert solver in solve["method"] and "relative residual" in solve["method"]
    assert "NOT CONVERGED" not in solve["method"]
    assert solve["method"] in log[0]
    # the same ridge by a dense solve: one-hot columns of a and b, an unshrunk intercept, tables
    # shrunk by the chosen strength, fitted on train + validation
    tokens, y = np.asarray(acts.inputs()), acts.site("y").astype(np.float64)
    onehot = np.concatenate([np.ones((len(y), 1)), np.eye(13)[tokens[:, 0]], np.eye(13)[tokens[:, 1]]], axis=1)
    fit_rows, test = ~acts.is_test, acts.is_test
    penalty = np.diag([0.0] + [solve["ridge_strength"]] * 26)
    coef = np.linalg.solve(onehot[fit_rows].T @ onehot[fit_rows] + penalty, onehot[fit_rows].T @ y[fit_rows])
    sst = ((y[test] - fitted.means["y"]) ** 2).sum()
    exact = 1 - ((onehot[test] @ coef - y[test]) ** 2).sum() / sst
    found = 1 - ((fitted.predict(tokens[test])["y"] - y[test]) ** 2).sum() / sst
    assert found == pytest.approx(exact, abs=1e-6)
    assert exact > 0.999


def _previous_token_theory(directory, outside=""):
    from theorycraft.spec import parse_theory
    return parse_theory(f"""\
theory: previous
target: activations:{directory}
sites: {{h: h}}
variables: {{tok: 'token[i]', prev: 'token[i - 1]'}}
components:
  by_token: {{kind: lookup, of: tok, size: 7, predicts: h}}
  by_previous: {{kind: lookup, of: prev, size: 7, predicts: h{outside}}}
""", path="previous.yaml")


def test_a_key_outside_its_table_is_an_error_naming_the_component_key_and_value(tmp_path):
    theory = _previous_token_theory(per_position_target(tmp_path))
    with pytest.raises(TheoryError) as info:
        fit(theory, captured(tmp_path, theory), FitConfig(progress=False))
    message = str(info.value)
    assert message.startswith("previous.yaml:7:35: error: lookup 'by_previous': key 'prev' must be an integer "
                              "from 0 to 6 (its size), found -1 in ")
    assert "'outside: row'" in message
    shifted = theory_for(recorded_target(tmp_path), "t: {kind: lookup, of: a + 5, size: 7, predicts: z}\n")
    with pytest.raises(TheoryError, match=r"key 'a \+ 5' must be an integer from 0 to 6 \(its size\), "
                                          r"found 7, 8, 9 and 2 more in \d+ of \d+ rows"):
        fit(shifted, captured(tmp_path, shifted), FitConfig(progress=False))


def test_an_outside_row_is_one_row_shared_by_every_key_outside_the_table(tmp_path):
    theory = _previous_token_theory(per_position_target(tmp_path), outside=", outside: row")
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False))
    assert fitted.params["by_previous"]["table"].shape == (8, 2)  # 7 tokens and the row before the start
    assert r2_test(fitted, acts, "h") == pytest.approx(1.0, abs=1e-4)  # h is exactly such a sum
    # two keys: any key outside its size sends the row to the shared row (the 50th cell)
    pairs = theory_for(recorded_target(tmp_path), "t: {kind: lookup, of: [a, b + 5], size: [7, 7], outside: row, "
                                                  "predicts: u}\n", ", u: u")
    acts = captured(tmp_path, pairs)
    fitted = fit(pairs, acts, FitConfig(progress=False))
    tokens, u = np.asarray(acts.inputs()), acts.site("u")
    predicted = fitted.predict(tokens)["u"]
    outside = tokens[:, 1] >= 2
    np.testing.assert_allclose(predicted[outside], np.broadcast_to(predicted[outside][0], predicted[outside].shape))
    np.testing.assert_allclose(predicted[~outside], u[~outside], atol=0.05)  # u is a table of a


def test_shape_mismatch_is_refused_before_fitting_with_its_position(tmp_path):
    theory = theory_for(recorded_target(tmp_path), "t: {kind: lookup, of: a, size: 7, width: 128, predicts: y}\n")
    with pytest.raises(TheoryError) as info:
        fit(theory, captured(tmp_path, theory), FitConfig(progress=False))
    assert str(info.value) == ("synthetic.yaml:6:44: error: width 128 cannot predict site 'y' of width 4; "
                               "expected width 4 (or leave width out)")


def test_a_dictionary_without_k_is_refused_before_fitting(tmp_path):
    theory = theory_for(recorded_target(tmp_path), "sae: {kind: dictionary, from: y, width: 8, l1: 0.1, predicts: y}\n")
    with pytest.raises(TheoryError, match=r"synthetic.yaml:6:3: error: expected 'k' .* not fitted yet"):
        fit(theory, captured(tmp_path, theory), FitConfig(progress=False))


def test_divergence_names_the_components_and_a_fix(tmp_path):
    theory = theory_for(recorded_target(tmp_path), "net: {kind: mlp, from: x, hidden: [64, 64], predicts: y}\n")
    with pytest.raises(FitError, match=r"diverged at step \d+ .* components net; try a lower learning rate"):
        fit(theory, captured(tmp_path, theory), FitConfig(learning_rate=1e9, max_steps=200, progress=False))


def test_artifact_round_trip_predicts_the_same(tmp_path):
    theory = theory_for(recorded_target(tmp_path), """\
        waves: {kind: fourier, of: [a, b], modulus: 7, frequencies: [1, 2]}
        read: {kind: linear, from: waves, predicts: z}
        table: {kind: lookup, of: [a, b], predicts: y}
        """)
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(progress=False))
    fitted.save(tmp_path / "artifact")
    loaded = FittedTheory.load(tmp_path / "artifact")
    assert loaded.theory == theory and loaded.fit_info == json.loads(json.dumps(fitted.fit_info))
    inputs = np.asarray(acts.inputs()[:50])
    for site, values in fitted.predict(inputs).items():
        np.testing.assert_allclose(loaded.predict(inputs)[site], values, rtol=1e-6)
    card = score(loaded, acts, bits=False)
    card.save(tmp_path / "artifact")
    assert Scorecard.load(tmp_path / "artifact") == card  # typed, and the same after a round trip through JSON
    assert card.covered == ("x", "y", "z") and card.inputs == ()  # x is named and unread: at its mean
    assert set(card.sites) == {"x", "y", "z"} and card.sites["x"].r2_train == pytest.approx(0.0, abs=1e-6)
    assert card.size.params == 8 * 2 + 2 + 49 * 4  # 8 waves -> z (width 2) + bias, a 7x7 table -> y (width 4)