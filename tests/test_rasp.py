"""Compiled RASP programs (tracr) as exact ground truth: the shipped recordings and theories.

examples/rasp/export.py compiles each program and writes its residual stream after every
sublayer; examples/rasp_PROGRAM.yaml states the program as a theory. Here: the shipped files are
what the exporter writes, each residual site is exactly a sum of codes of the program's variables
(checked with a least-squares fit in numpy), and every theory reaches test R² ≥ 0.999 at every
site, on the plain and on the rotated recording.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RASP = ROOT / "examples" / "rasp"
PROGRAMS = ["hist", "sort", "frac_prevs"]


def _load(directory: Path):
    manifest = json.loads((directory / "manifest.json").read_text())
    inputs = np.load(directory / "inputs.npy")
    return manifest, inputs, {s: np.load(directory / f"{s.replace(':', '@')}.npy") for s in manifest["sites"]}


def _exporter():
    spec = importlib.util.spec_from_file_location("rasp_export", RASP / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exporter_recreates_the_shipped_files(tmp_path):
    pytest.importorskip("tracr", reason="tracr (tracr-pypi, in the test extra) is not installed")
    _exporter().main(["frac_prevs", "--out", str(tmp_path)])
    for name in ("frac_prevs", "frac_prevs_rotated"):
        manifest, inputs, sites = _load(RASP / name)
        manifest2, inputs2, sites2 = _load(tmp_path / name)
        assert manifest2 == manifest
        np.testing.assert_array_equal(inputs2, inputs)
        assert inputs.dtype == inputs2.dtype
        for site in sites:  # the same compiled weights and inputs; allow last-bit differences of BLAS
            assert sites2[site].dtype == np.float32
            np.testing.assert_allclose(sites2[site], sites[site], rtol=0, atol=1e-5)
        assert sorted(p.name for p in (RASP / name).iterdir()) == sorted(p.name for p in (tmp_path / name).iterdir())


# --- the program's variables, computed in numpy (what each theory's variables say) -------------

def _count(cond):  # cond [N, T(query), T(key)] -> [N, T]
    return cond.sum(-1)


def _variables(program, x):
    """{name: (values [N, T], 'categorical' | 'numerical')}; x: [N, T] token ids, BOS at position 0."""
    n, t = x.shape
    i = np.broadcast_to(np.arange(t)[None, :, None], (n, t, t))
    j = np.broadcast_to(np.arange(t)[None, None, :], (n, t, t))
    tq, tk = x[:, :, None], x[:, None, :]
    pos = np.broadcast_to(np.arange(t), (n, t))
    out = {"token": (x, "categorical"), "position": (pos, "categorical")}
    if program == "hist":
        hist = _count((j > 0) & (tk == tq))
        out["hist"] = (hist, "categorical")
        out["width_attn"] = (1 / (hist + 1), "numerical")
    elif program == "sort":
        smaller = _count((i > 0) & (j > 0) & (tk < tq))
        key = np.broadcast_to(smaller[:, None, :], (n, t, t))
        hit = (j > 0) & (key == i - 1)
        out["target_pos"] = (smaller, "categorical")
        out["width_attn"] = (1 / (smaller + 1), "numerical")
        out["sort"] = ((hit * tk).sum(-1) / np.maximum(hit.sum(-1), 1), "categorical")
    elif program == "frac_prevs":
        is_one = (x == 1).astype(float)
        sel = (j > 0) & (j <= i)
        out["is_one"] = (is_one, "numerical")
        out["frac"] = ((sel * is_one[:, None, :]).sum(-1) / np.maximum(sel.sum(-1), 1), "numerical")
    return out


# which variables each site holds (a residual stream keeps what earlier sublayers wrote)
HOLDS = {
    "hist": {"resid.0": ["token", "position"], "resid.1": ["width_attn"], "resid.2": ["hist"]},
    "sort": {"resid.0": ["token", "position"], "resid.1": ["width_attn"], "resid.2": ["target_pos"],
             "resid.3": ["sort"]},
    "frac_prevs": {"resid.0": ["token", "position"], "resid.2": ["is_one"], "resid.3": ["frac"]},
}


def _design(variables, names):
    columns = [np.ones(variables["token"][0].shape + (1,))]
    for name in names:
        values, kind = variables[name]
        if kind == "categorical":
            v = np.rint(values).astype(int)
            columns.append((v[..., None] == np.unique(v)).astype(float))
        else:
            columns.append(values[..., None].astype(float))
    return np.concatenate(columns, -1)


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize("program", PROGRAMS)
def test_each_site_is_exactly_a_sum_of_codes_of_the_program_variables(program, rotated):
    manifest, x, sites = _load(RASP / (program + "_rotated" * rotated))
    assert list(sites) == list(HOLDS[program])
    variables = _variables(program, x)
    held = []
    for site, array in sites.items():
        held += HOLDS[program][site]
        features = _design(variables, held).reshape(len(array) * array.shape[1], -1)
        y = array.reshape(-1, array.shape[-1]).astype(float)
        coef, *_ = np.linalg.lstsq(features, y, rcond=None)
        r2 = 1 - ((features @ coef - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        assert r2 > 1 - 1e-6, (program, site, r2)
        # and it needs the newest variable: without it the fit is worse (is_one is a function of the
        # token at the same position: a token table could hold it as well)
        if len(held) > 2 and held[-1] != "is_one":
            fewer = _design(variables, held[:-1]).reshape(len(y), -1)
            coef, *_ = np.linalg.lstsq(fewer, y, rcond=None)
            assert 1 - ((fewer @ coef - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum() < 0.999


@pytest.mark.parametrize("program", PROGRAMS)
def test_the_theory_variables_are_the_program_variables(program):
    """The theory's expressions, evaluated by the language, give the variables checked above."""
    import yaml
    from theorycraft.spec import evaluate_variables, parse_expr

    part = yaml.safe_load((ROOT / "examples" / "parts" / f"rasp_{program}.yaml").read_text())
    x = _load(RASP / program)[1]
    values = evaluate_variables({k: parse_expr(v) for k, v in part["variables"].items()}, x, np)
    expected = _variables(program, x)
    names = {"bos_share": "width_attn", "frac_prevs": "frac"}
    assert set(names.get(k, k) for k in values) == set(expected) - {"token", "position"}
    for name, value in values.items():
        np.testing.assert_allclose(np.asarray(value, float), expected[names.get(name, name)][0], atol=1e-12)


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize("program", PROGRAMS)
def test_rasp_theory_reaches_exact_fidelity(program, rotated, tmp_path, monkeypatch):
    import theorycraft as tc

    monkeypatch.chdir(ROOT)  # the theories' targets are paths from the repository root
    theory = ROOT / "examples" / f"rasp_{program}{'_rotated' * rotated}.yaml"
    result = tc.infer(str(theory), progress=False, log=lambda s: None, cache_dir=tmp_path)
    sites = result.scorecard.sites
    assert len(sites) == len(_load(RASP / program)[0]["sites"])
    for site, card in sites.items():
        assert card.r2_test >= 0.999, (program, rotated, site, card.r2_test)
