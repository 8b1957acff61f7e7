"""Captures are reused, never silently redone: the data seed apart from the fit seed, --capture,
the request index (a cached capture opened without loading its target), cache ls|verify|rm,
artifacts that name their capture by key, and activations:DIR read from the theory's directory."""

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import recorded_target
from theorycraft import _captures, api
from theorycraft.cli import main
from theorycraft.errors import ArgumentError, FitError
from theorycraft.spec import load_theory

LINEAR = """\
theory: linear
target: activations:{target}
sites: {{x: x, y: y}}
inputs: [x]
components:
  read: {{kind: linear, from: x, predicts: y}}
"""


@pytest.fixture
def theory_file(tmp_path):
    recorded_target(tmp_path, n=300)
    path = tmp_path / "linear.yaml"
    path.write_text(LINEAR.format(target="recorded"))  # relative: read from the theory file's directory
    return path


def captures(cache):
    return sorted(p.name for p in cache.iterdir() if p.name != "index")


def quiet(**kw):
    return dict(progress=False, log=lambda m: None, **kw)


def test_fit_seed_is_not_data_seed(theory_file, tmp_path):
    cache = tmp_path / "cache"
    first = api.infer(str(theory_file), cache_dir=cache, **quiet())
    again = api.infer(str(theory_file), cache_dir=cache, seed=7, **quiet())
    assert captures(cache) == [first.fitted.fit_info["data"]["capture"]]  # another fit seed: the same capture
    assert again.fitted.fit_info["data"]["capture"] == first.fitted.fit_info["data"]["capture"]
    other = api.infer(str(theory_file), cache_dir=cache, data_seed=1, **quiet())
    assert other.fitted.fit_info["data"]["capture"] != first.fitted.fit_info["data"]["capture"]  # another data seed:
    assert len(captures(cache)) == 2  # another capture


def test_without_n_a_capture_of_another_size_is_reused_and_said(theory_file, tmp_path):
    cache, said = tmp_path / "cache", []
    theory = load_theory(theory_file)
    sized = api.capture(theory, n=200, cache_dir=cache, progress=False)
    acts = api.capture(theory, cache_dir=cache, progress=False, log=said.append)
    assert acts.key == sized.key and acts.n == 200 and captures(cache) == [sized.key]
    assert said and f"using capture {sized.key}" in said[0] and "--n was not given" in said[0]
    said.clear()
    bigger = api.capture(theory, n=250, cache_dir=cache, progress=False, log=said.append)  # asked for: captured
    assert bigger.n == 250 and len(captures(cache)) == 2
    assert said and "capturing 250 examples anew" in said[0] and f"{sized.key} (200 examples)" in said[0]


def test_a_cached_capture_opens_without_loading_its_target(theory_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    theory = load_theory(theory_file)
    made = api.capture(theory, n=100, cache_dir=cache, progress=False)

    def no_loading(*args, **kwargs):
        raise AssertionError("the target was loaded")

    monkeypatch.setattr(_captures, "target_of", no_loading)  # where capture finds it
    assert api.capture(theory, n=100, cache_dir=cache, progress=False).key == made.key
    x = theory_file.parent / "recorded" / "x.npy"  # a changed recording is a new request: the target loads
    os.utime(x, ns=(x.stat().st_atime_ns, x.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="the target was loaded"):
        api.capture(theory, n=100, cache_dir=cache, progress=False)


def test_named_capture_and_the_flags_it_excludes(theory_file, tmp_path, capsys):
    cache = tmp_path / "cache"
    acts = api.capture(load_theory(theory_file), n=150, cache_dir=cache, progress=False)
    out = tmp_path / "run"
    assert main(["infer", str(theory_file), "--capture", acts.key[:6], "--cache", str(cache), "--out", str(out)]) == 0
    assert json.loads((out / "scorecard.json").read_text())["fit"]["data"]["capture"] == acts.key
    assert main(["infer", str(theory_file), "--capture", acts.key, "--n", "10", "--cache", str(cache)]) == 2
    assert "--capture names the data" in capsys.readouterr().err
    assert main(["infer", str(theory_file), "--capture", "nope", "--cache", str(cache)]) == 1
    assert "no capture 'nope'" in capsys.readouterr().err
    other = api.capture("builtin:superposition", ["hook_hidden"], n=20, cache_dir=cache, progress=False)
    with pytest.raises(ArgumentError, match="lacks site"):
        api.infer(str(theory_file), str(other.directory), cache_dir=cache, **quiet())


def test_artifacts_name_their_capture_by_key(theory_file, tmp_path):
    cache = tmp_path / "cache"
    fitted = api.infer(str(theory_file), cache_dir=cache, out_dir=tmp_path / "run", **quiet()).fitted
    data = fitted.fit_info["data"]
    assert "directory" not in data and (cache / data["capture"]).is_dir()
    moved = tmp_path / "moved"
    shutil.move(cache, moved)  # the store moved: found by key where it is now
    fitted = api.load_run(tmp_path / "run")
    assert api.run_activations(fitted, tmp_path / "run", moved).key == data["capture"]
    with pytest.raises(FitError, match="--cache DIR"):
        api.run_activations(fitted, tmp_path / "run", tmp_path / "elsewhere")


def test_cache_ls_verify_rm(theory_file, tmp_path, capsys):
    cache = tmp_path / "cache"
    acts = api.capture(load_theory(theory_file), n=120, cache_dir=cache, progress=False)
    interrupted = "0000aaaa0000aaaa0000"  # killed after taking its lock (what capture makes first), before a shard
    (cache / interrupted).mkdir()
    (cache / interrupted / ".lock").touch()
    (cache / "not-a-capture").mkdir()  # listed by nothing, removed by nothing (issue 29)
    assert main(["cache", "ls", "--cache", str(cache)]) == 0
    listed = capsys.readouterr().out
    assert acts.key in listed and "x, y" in listed and " 120 " in listed and interrupted in listed
    assert "not-a-capture" not in listed
    assert "incomplete" in listed and "2 captures" in listed
    assert main(["cache", "verify", acts.key, "--cache", str(cache)]) == 0
    shard = next(cache.glob(f"{acts.key}/shard-*/y.npy"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    assert main(["cache", "verify", "--cache", str(cache)]) == 1
    printed = capsys.readouterr().out
    assert "checksum mismatch" in printed and "incomplete" in printed and "0 of 2 captures" in printed
    assert main(["cache", "rm", acts.key[:8], "--cache", str(cache)]) == 0
    assert not (cache / acts.key).exists() and not list((cache / "index").glob("*.json"))
    assert main(["cache", "rm", "ffff", "--cache", str(cache)]) == 1
    assert "no capture 'ffff'" in capsys.readouterr().err


def test_the_default_store_is_the_platforms_user_cache(monkeypatch, tmp_path):
    import platformdirs

    from theorycraft.store import cache_root

    monkeypatch.delenv("THEORYCRAFT_CACHE", raising=False)
    assert cache_root() == Path(platformdirs.user_cache_dir("theorycraft", appauthor=False))
    monkeypatch.setenv("THEORYCRAFT_CACHE", str(tmp_path))
    assert cache_root() == tmp_path and cache_root(tmp_path / "x") == tmp_path / "x"


def test_a_relative_recording_is_read_from_the_theory_files_directory(theory_file, tmp_path, monkeypatch):
    from theorycraft.targets import TargetError, load_target

    monkeypatch.chdir(tmp_path.parent)  # not the theory's directory
    theory = load_theory(theory_file)
    assert str(theory.target) == "activations:recorded" and "activations:recorded" in theory.to_yaml()
    assert load_target(theory.target).hooks()["y"] == (4,)
    (tmp_path / "sub").mkdir()  # the same text elsewhere names another directory: there is none there
    shutil.copy(theory_file, tmp_path / "sub" / "linear.yaml")
    with pytest.raises(TargetError, match=f"{tmp_path / 'sub' / 'recorded' / 'manifest.json'}"):
        load_target(load_theory(tmp_path / "sub" / "linear.yaml").target)


def test_text_flags_belong_to_hf_targets(theory_file, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("some text " * 100)
    assert main(["infer", str(theory_file), "--text", str(text), "--cache", str(tmp_path / "cache")]) == 2
    assert "--text and --data are the data of hf: targets" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A one-layer, 8-wide BERT with random weights and a 21-word vocabulary, saved as a local
    Hugging Face directory: an hf: target that loads in a moment."""
    transformers = pytest.importorskip("transformers", reason="the minilm extra is not installed")
    import torch

    directory = tmp_path_factory.mktemp("tiny-bert")
    words = "the a cat dog sat ran on under mat house tree".split()
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.BertTokenizer(str(directory / "vocab.txt")).save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(directory)
    return directory


def test_score_captures_an_hf_run_on_another_text(tiny_bert, tmp_path, capsys):
    import random

    rng = random.Random(0)
    words = "the a cat dog sat ran on under mat house tree".split()
    for name, chosen in {"a.txt": words[:6], "b.txt": words[5:]}.items():
        (tmp_path / name).write_text(" ".join(rng.choice(chosen) for _ in range(8000)))
    theory = tmp_path / "tiny.yaml"
    theory.write_text(f"theory: tiny\ntarget: hf:{tiny_bert}\nsites: {{emb: embeddings, l0: encoder.layer.0.output}}\n"
                      "inputs: [emb]\ncomponents:\n  mix: {kind: linear, from: emb, predicts: l0}\n")
    cache, run = str(tmp_path / "cache"), str(tmp_path / "run")
    assert main(["infer", str(theory), "--text", str(tmp_path / "a.txt"), "--n", "40", "--cache", cache,
                 "--out", run]) == 0
    assert main(["score", run, "--text", str(tmp_path / "b.txt"), "--shift", "other-words", "--no-splice",
                 "--cache", cache]) == 0
    assert "shifted (other-words; " in capsys.readouterr().out
    shifted = json.loads((tmp_path / "run" / "scorecard.json").read_text())["shifted"]["other-words"]
    assert shifted["n"] > 0 and set(shifted["r2"]) == {"l0"}
    assert len(captures(tmp_path / "cache")) == 2  # the run's text and the other, each its own capture
