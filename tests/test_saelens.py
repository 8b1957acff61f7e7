"""SAELens interop: an SAE saved in SAELens's format, read as a dictionary and held fixed in a fit,
predicts what SAELens's own top-k forward pass computes; a fitted dictionary written in that
format reads back the same; what cannot be represented is refused with a clear message."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from theorycraft.errors import ArtifactError
from theorycraft.inference import FitConfig, fit
from theorycraft.saelens import read_saelens, write_saelens

from conftest import captured, recorded_target, theory_for

D_IN, D_SAE, K = 6, 10, 2


def saelens_dir(path, *, apply_b_dec=True, cfg=None, seed=0):
    """A directory as SAELens's SAE.save_model writes one (cfg.json of SAELens 6)."""
    r = np.random.default_rng(seed)
    weights = {"W_enc": r.normal(size=(D_IN, D_SAE)), "b_enc": r.normal(size=D_SAE) * 0.1,
               "W_dec": r.normal(size=(D_SAE, D_IN)), "b_dec": r.normal(size=D_IN)}
    path.mkdir(parents=True)
    save_file({k: v.astype(np.float32) for k, v in weights.items()}, str(path / "sae_weights.safetensors"))
    config = {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "k": K, "dtype": "float32", "device": "cpu",
              "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none", "reshape_activations": "none",
              "metadata": {"hook_name": "x", "sae_lens_version": "6.12.1"}}
    (path / "cfg.json").write_text(json.dumps({**config, **(cfg or {})}))
    return {k: v.astype(np.float32) for k, v in weights.items()}


def saelens_forward(w, x, apply_b_dec):
    """SAELens's TopKSAE: relu of the top k pre-activations, decoded."""
    pre = (x - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]
    top = np.argsort(-pre, axis=1)[:, :K]
    codes = np.zeros_like(pre)
    np.put_along_axis(codes, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    return codes @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_a_saelens_sae_held_fixed_predicts_as_saelens_does(tmp_path, apply_b_dec):
    weights = saelens_dir(tmp_path / "sae", apply_b_dec=apply_b_dec)
    sae = read_saelens(tmp_path / "sae")
    assert (sae.width, sae.k, sae.d_in, sae.hook) == (D_SAE, K, D_IN, "x")
    component = sae.component("x", predicts="x")
    text = "sae: {" + ", ".join(f"{k}: {v}" for k, v in component.items()) + "}\n"
    theory = theory_for(recorded_target(tmp_path), text, sites="x: x")
    acts = captured(tmp_path, theory)
    fitted = fit(theory, acts, FitConfig(max_steps=5, progress=False), keep={"sae": sae.params})
    x = np.asarray(acts.site("x"))[:50]
    predicted = fitted.predict(np.asarray(acts.inputs())[:50], sites={"x": x})["x"]
    np.testing.assert_allclose(predicted, saelens_forward(weights, x, apply_b_dec), rtol=1e-4, atol=1e-4)

    write_saelens(fitted, "sae", tmp_path / "out")  # and back out: SAELens's names, shapes and config
    written, cfg = load_file(str(tmp_path / "out" / "sae_weights.safetensors")), json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in weights.items()}
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["k"], cfg["apply_b_dec_to_input"]) == ("topk", D_IN, D_SAE, K, True)
    np.testing.assert_allclose(saelens_forward(written, x, True), predicted, rtol=1e-4, atol=1e-4)


def test_the_older_config_spelling_of_top_k_is_read(tmp_path):
    saelens_dir(tmp_path / "sae", cfg={"architecture": "standard", "k": None, "activation_fn_str": "topk",
                                       "activation_fn_kwargs": {"k": 3}})
    assert read_saelens(tmp_path / "sae").k == 3


@pytest.mark.parametrize("cfg, message", [
    ({"architecture": "jumprelu"}, "expected a top-k SAE (architecture 'topk'), found architecture 'jumprelu'"),
    ({"normalize_activations": "layer_norm"}, "expected normalize_activations 'none', found 'layer_norm'"),
    ({"d_sae": 12}, "expected W_enc of shape [6, 12] (d_in 6, d_sae 12), found [6, 10]"),
    ({"d_in": "six"}, "expected integers d_in, d_sae and k"),
])
def test_what_a_dictionary_cannot_be_is_refused_clearly(tmp_path, cfg, message):
    saelens_dir(tmp_path / "sae", cfg=cfg)
    with pytest.raises(ArtifactError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        read_saelens(tmp_path / "sae")
    with pytest.raises(ArtifactError, match="not found"):
        read_saelens(tmp_path / "nowhere")
