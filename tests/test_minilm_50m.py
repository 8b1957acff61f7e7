"""The 50-million-parameter MiniLM script, scaled down: one layer, a few windows."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the minilm extra is not installed")


def _script():
    path = Path(__file__).parents[1] / "benchmarks" / "minilm_50m.py"
    spec = importlib.util.spec_from_file_location("minilm_50m", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_50m_script_fits_and_scores_a_scaled_down_theory(tmp_path):
    script = _script()
    report = script.run(layers=1, n=24, out=tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
                        bits=False)  # bits: 14 quantizations of 23.5 M parameters, too slow for the suite
    assert report["windows"] == 24 and report["sites"] == 2
    assert report["params"] == 2 * (30522 + 128) * 384  # two sites' token and position tables
    assert set(report["per_site"]) == {"emb", "l0"}
    assert report["per_site"]["emb"]["test_r2"] > 0.3  # the embeddings are mostly token + position
    assert report["coverage_free"] == report["coverage"]  # it reads no site: free is teacher-forced
    assert report["peak_rss_bytes"] > 0
    assert (tmp_path / "run" / "report.json").exists() and (tmp_path / "run" / "params.safetensors").exists()
