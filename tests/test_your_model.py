"""The model as the researcher holds it (issue 30): ``target=`` takes a TransformerLens model
(a TransformerBridge around a tiny random GPT-2 built from a config), an nnsight-wrapped module or
any nn.Module, end to end (capture -> infer -> score -> check); a theory file may leave
``target:`` out; ``hf:NAME`` resolves a model in a (fake) Hugging Face cache, offline."""

import importlib.util
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import theorycraft as tc
from conftest import ROOT
from theorycraft.api import score_run
from theorycraft.errors import ArgumentError, TargetError
from theorycraft.spec import HookPoint, parse_theory
from theorycraft._html import esc
from theorycraft.spec._model import TargetRef
from theorycraft.targets import UserModel, as_target, decoder

VOCAB, T = 40, 8
MODADD = """\
theory: sum-of-tables
sites:
  hidden: {hook: body.0, doc: "the first layer's output  # [batch, 16]"}
variables:
  a: token[0]
  b: token[1]
components:
  by_a: {kind: lookup, of: a, predicts: hidden}
  by_b: {kind: lookup, of: b, predicts: hidden}
axioms:
  needs_the_first_layer:
    zero: hidden
    changes: output
    metric: kl
    at_least: 0.0001
"""
LM = """\
theory: tokens-and-positions
sites:
  resid0: {hook: blocks.0.hook_resid_post}
variables:
  tok: token[i]
  pos: i
components:
  by_token:    {kind: lookup, of: tok, predicts: resid0}
  by_position: {kind: lookup, of: pos, size: 8, predicts: resid0}
axioms:
  block0_matters:
    resample: resid0
    changes: output
    metric: kl
    at_least: 0.0001
"""


class Embedder(nn.Module):
    """Two tokens -> a sum of their embeddings through a nonlinearity -> class scores."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 16)
        self.body = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, VOCAB))

    def forward(self, x):
        return self.body(self.embed(x).sum(1))


def pairs(n, seed):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n or 600, 2))


def sequential():
    from collections import OrderedDict

    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(inp=nn.Linear(2, 16), act=nn.Tanh(), out=nn.Linear(16, 3)))


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("THEORYCRAFT_CACHE", str(tmp_path / "store"))
    monkeypatch.chdir(tmp_path)


def test_a_theory_file_may_leave_its_target_out():
    theory = parse_theory(MODADD, "t.yaml")
    assert theory.target is None and "target" not in theory.to_dict()
    with pytest.raises(ArgumentError, match="names no target.*target=model"):
        tc.infer(theory, progress=False, log=lambda m: None)
    with pytest.raises(TargetError, match="model object given in Python: pass it again as target="):
        tc.load_target("model:GPT2LMHeadModel")
    with pytest.raises(ArgumentError, match="pass target= too"):
        tc.capture(theory, dataset=np.zeros((2, 2), int), progress=False)


def test_a_plain_module_end_to_end():
    """capture -> infer -> score (splice) -> check of an nn.Module object and its data; the
    capture is the same (content-addressed) when the same weights and data come again, and
    another when the data differ."""
    theory = parse_theory(MODADD, "t.yaml")
    model = Embedder()
    data = pairs(600, 0)
    acts = tc.capture(theory, target=model, dataset=data, progress=False)
    assert list(acts.sites) == ["body.0"] and acts.n == 600
    with torch.no_grad():
        expected = model.body[0](model.embed(torch.from_numpy(np.array(acts.inputs()[:3]))).sum(1)).numpy()
    np.testing.assert_allclose(acts.site("body.0")[:3], expected, atol=1e-6)
    assert tc.capture(theory, target=Embedder(), dataset=data, progress=False).key == acts.key
    assert tc.capture(theory, target=model, dataset=pairs(600, 1), progress=False).key != acts.key

    fitted, card = tc.infer(theory, target=model, dataset=data, output="logits", out_dir="run", progress=False,
                            log=lambda m: None)
    assert str(fitted.theory.target) == "model:Embedder" and card.sites["hidden"].r2_test > 0.99  # it is a sum
    spliced = tc.score(fitted, acts, target=UserModel(model, pairs, output="logits"), bits=False).splice["hidden"]
    assert spliced.top1_agreement > 0.95 and spliced.kl < 0.01
    [result] = tc.check(theory, target=model, dataset=data, output="logits", run_dir="run", log=lambda m: None)
    assert result.name == "needs_the_first_layer" and result.passed
    card = score_run("run", target=model, output="logits")  # a run of a model given in Python splices with it
    assert card.splice["hidden"].top1_agreement == pytest.approx(spliced.top1_agreement)


def test_a_module_wrapped_by_nnsight():
    nnsight = pytest.importorskip("nnsight", reason="the lens extra is not installed")
    model = sequential()
    wrapped = nnsight.NNsight(model)
    vectors = np.random.default_rng(0).normal(size=(400, 2)).astype(np.float32)
    target = as_target(wrapped, dataset=vectors)
    assert target.module is model and target.input_kind == "vectors" and "act" in target.hooks()
    theory = parse_theory(textwrap.dedent("""\
        theory: first-layer
        sites:
          x:  {hook: "inp:input"}
          h:  {hook: inp}
        inputs: [x]
        components:
          read: {kind: linear, from: x, predicts: h}
        """), "t.yaml")
    fitted, card = tc.infer(theory, target=wrapped, dataset=vectors, progress=False, log=lambda m: None)
    assert card.sites["h"].r2_test > 0.999  # the layer is linear: its closed form is exact


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    """A TransformerBridge (TransformerLens 4) around a tiny random-weight GPT-2 built from a config,
    with a BPE tokenizer trained here (saved and loaded, as TransformerLens reloads it): no download."""
    pytest.importorskip("transformer_lens", reason="the lens extra is not installed")
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformers import AutoTokenizer

    spec = importlib.util.spec_from_file_location("make_tiny_lm", ROOT / "examples" / "lm" / "make_tiny_lm.py")
    make_tiny_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny_lm)
    saved = tmp_path_factory.mktemp("tokenizer")
    make_tiny_lm.tiny_tokenizer(vocab_size=VOCAB * 4).save_pretrained(saved)
    tokenizer = AutoTokenizer.from_pretrained(saved)
    model = make_tiny_lm.tiny_model("gpt2", len(tokenizer), positions=T)
    return build_bridge_from_module(model, "GPT2LMHeadModel", hf_config=model.config, tokenizer=tokenizer)


def lm_data(n, seed):
    return np.random.default_rng(seed).integers(0, VOCAB * 4, size=(n or 300, T))


def test_a_transformer_lens_bridge_end_to_end(bridge):
    """Its own hook names are the sites; a splice is judged by next-token loss; an axiom is
    checked with the bridge's hooks intervened on."""
    target = as_target(bridge, dataset=lm_data)
    sites = target.hooks()
    assert sites["blocks.0.hook_resid_post"] == (T, 32) and sites["blocks.1.attn.hook_pattern"] == (4, T, T)
    assert target.task.output == "logits" and target.vocab_size == bridge.cfg.d_vocab
    theory = parse_theory(LM, "lm.yaml")
    acts = tc.capture(theory, target=bridge, dataset=lm_data, progress=False)
    _, cache = bridge.run_with_cache(torch.from_numpy(np.array(acts.inputs()[:4])).long())
    np.testing.assert_allclose(acts.site("blocks.0.hook_resid_post")[:4], cache["blocks.0.hook_resid_post"].numpy(),
                               atol=1e-5)
    fitted, card = tc.infer(theory, target=bridge, dataset=lm_data, out_dir="lm", max_steps=200, progress=False,
                            log=lambda m: None)
    assert card.sites["resid0"].r2_test > 0.9  # block 0 of a random GPT-2: mostly its token and position
    splice = tc.score(fitted, acts, target=bridge, bits=False).splice["resid0"]
    # random weights: no loss to recover (mean ablation scores as well), but the theory's stream moves little
    assert splice.kl < 1e-3 and splice.top1_agreement > 0.9 and splice.n > 0
    [result] = tc.check(theory, target=bridge, dataset=lm_data, run_dir="lm", log=lambda m: None)
    assert result.passed, result


def _fake_hub_cache(root, name, model_dir):
    """The hub cache's layout: models--ORG--NAME/snapshots/HASH/ and refs/main naming HASH."""
    entry = root / ("models--" + name.replace("/", "--"))
    snapshot = entry / "snapshots" / "0123abcd"
    snapshot.parent.mkdir(parents=True)
    model_dir.rename(snapshot)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_hf_name_resolves_from_the_cache_offline(tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="the minilm extra is not installed")
    import theorycraft.targets._hf as hf

    spec = importlib.util.spec_from_file_location("make_tiny_lm", ROOT / "examples" / "lm" / "make_tiny_lm.py")
    make_tiny_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny_lm)
    make_tiny_lm.save_tiny_lm("gpt2", tmp_path / "made", make_tiny_lm.tiny_tokenizer(), steps=0)
    hub = tmp_path / "hf-home" / "hub"
    snapshot = _fake_hub_cache(hub, "tiny-org/tiny-gpt2", tmp_path / "made")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("THEORYCRAFT_DOWNLOAD", raising=False)
    assert hf.resolve_model_path("tiny-org/tiny-gpt2") == snapshot
    target = tc.load_target("hf:tiny-org/tiny-gpt2")
    assert target.name == "hf:tiny-org/tiny-gpt2" and "blocks.0.hook_resid_post" in target.hooks()
    decode = decoder(TargetRef("hf", "tiny-org/tiny-gpt2"))  # what theorycraft diagnose shows a run's examples with
    assert [decode(t) for t in target.dataset(1, 0)[0]] == [target.tokenizer.decode([t]) for t in target.dataset(1, 0)[0]]
    monkeypatch.setattr(hf, "_download", lambda name: pytest.fail("downloaded without the opt-in"))
    with pytest.raises(TargetError, match=r"not in the Hugging Face cache.*THEORYCRAFT_DOWNLOAD=1"):
        tc.load_target("hf:tiny-org/absent")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))  # HF_HUB_CACHE wins over HF_HOME
    with pytest.raises(TargetError, match="elsewhere"):
        tc.load_target("hf:tiny-org/tiny-gpt2")
    monkeypatch.setenv("THEORYCRAFT_DOWNLOAD", "1")
    monkeypatch.setattr(hf, "_download", lambda name: snapshot)
    assert hf.resolve_model_path("tiny-org/tiny-gpt2") == snapshot


def test_device_auto_is_the_cpu_here_and_cuda_is_refused_clearly(monkeypatch):
    """--device: auto takes a GPU where there is one (none here: the CPU); cuda where torch sees
    none is refused before anything loads, as a usage error on the command line."""
    from theorycraft.cli import main
    from theorycraft.targets import _device

    theory = parse_theory(MODADD, "t.yaml")
    model = Embedder()
    acts = tc.capture(theory, target=model, dataset=pairs(200, 0), device="auto", progress=False)
    assert acts.n == 200 and as_target(model, dataset=pairs).to_device("auto").device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TargetError, match="device 'cuda': no CUDA GPU is visible to torch"):
        tc.capture(theory, target=model, dataset=pairs(200, 0), device="cuda", progress=False)
    assert main(["capture", "builtin:modadd-p113", "--sites", "hook_embed", "--n", "8", "--device", "cuda"]) == 1
    # the batch fitted to the device: every site's float32 activation per example, half the free memory
    assert _device.fitted_batch(256, {"a": (4, 8), "b": (32,)}, free=64 * 4 * 64 * 2) == 64
    assert _device.fitted_batch(16, {"a": (4, 8)}, free=10 ** 9) == 16 and _device.fitted_batch(16, {"a": (8,)}, free=1) == 1
    assert _device.fitted_batch(16, {"a": (8,)}, free=None) == 16  # the CPU: what was asked for


def test_a_theory_reads_as_what_it_says():
    theory = parse_theory(MODADD, "t.yaml")
    text = repr(theory)
    assert text.splitlines()[0] == ("Theory('sum-of-tables' on the model given in Python: 1 sites, 2 variables, "
                                    "2 components, 1 axioms)")
    assert "  site hidden = body.0  <- by_a, by_b" in text and "  by_b: lookup of b -> hidden" in text
    html = theory._repr_html_()
    assert "<b>Theory</b> <code>sum-of-tables</code>" in html and "<td>by_a</td><td>lookup</td><td>a</td>" in html
    assert "needs_the_first_layer" in html and "MappingProxy" not in text + html


PATTERN = """\
theory: previous-token-heads
sites:
  pattern: {hook: blocks.1.attn.hook_pattern}
components:
  head0: {kind: attention, rule: "j == i - 1", head: 0, predicts: pattern}
  head1: {kind: attention, rule: "j == i", head: 1, predicts: pattern}
"""


def test_diagnose_reads_pattern_sites_per_head_and_decodes_tokens(bridge):
    """An attention site's diagnosis: each head's R² (the theory's heads against the network's,
    SST around the train mean) and the worst examples' patterns, both; tokens read as text."""
    from theorycraft.refine import diagnose, render

    theory = parse_theory(PATTERN, "p.yaml")
    fitted, card = tc.infer(theory, target=bridge, dataset=lm_data, max_steps=50, out_dir="pat", progress=False,
                            log=lambda m: None)
    acts = tc.capture(theory, target=bridge, dataset=lm_data, progress=False)
    decode = decoder(as_target(bridge, dataset=lm_data))
    report = diagnose(fitted, acts, worst=2, decode=decode)["pattern"]
    assert report["residual_share_of_variance"] == pytest.approx(1 - card.sites["pattern"].r2_validation, abs=1e-3)
    rows = acts.split("validation")
    y = np.asarray(acts.site("blocks.1.attn.hook_pattern")[rows], np.float64)
    pred = np.asarray(fitted.predict(acts.inputs()[rows], {"pattern": y})["pattern"], np.float64)
    mean = np.asarray(fitted.means["pattern"], np.float64).reshape(y.shape[1:])
    for head in range(4):
        r2 = 1 - ((y[:, head] - pred[:, head]) ** 2).sum() / ((y[:, head] - mean[head]) ** 2).sum()
        assert report["heads"][head] == pytest.approx(r2, abs=1e-3)
    worst = report["worst"][0]
    assert np.array(worst["network"]).shape == (4, T, T) == np.array(worst["theory"]).shape
    assert worst["tokens"] == [bridge.tokenizer.decode([t]) for t in worst["input"]]
    assert "R² per head: 0: " in render({"pattern": report})

    # the report draws each head's patterns, the network's beside the theory's, and shows the text
    import json
    from pathlib import Path

    from theorycraft._report import report_html

    Path("pat/diagnosis.json").write_text(json.dumps({"pattern": report}))
    page = report_html("pat")
    assert page.count('<figure><img alt="attention patterns of pattern, example #') == 2
    text = repr("".join(worst["tokens"]))[1:-1]
    assert esc(text[:40]) in page and "<td>R² (validation)</td>" not in page and "R² (validation)" in page


def test_a_transformers_model_object_is_read_as_hf_loads_one():
    """A transformers model object (what from_pretrained returns): TransformerLens-style aliases
    and pattern sites as for hf:, judged by next-token loss."""
    pytest.importorskip("transformers", reason="the minilm extra is not installed")
    spec = importlib.util.spec_from_file_location("make_tiny_lm", ROOT / "examples" / "lm" / "make_tiny_lm.py")
    make_tiny_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny_lm)
    model = make_tiny_lm.tiny_model("gpt2", VOCAB * 4, positions=T)
    target = as_target(model, dataset=lm_data)
    hooks = target.hooks()
    assert hooks["blocks.0.hook_resid_post"] == (T, 32) and hooks["blocks.1.attn.hook_pattern"] == (4, T, T)
    assert target.task.output == "logits" and target.vocab_size == VOCAB * 4
    inputs = lm_data(4, 0)
    recorded, logits = target.intervene(inputs, [HookPoint.parse("blocks.0.hook_resid_post")])
    with torch.no_grad():
        clean = model(input_ids=torch.from_numpy(inputs), output_hidden_states=True)
    np.testing.assert_allclose(logits, clean.logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(next(iter(recorded.values())), clean.hidden_states[1].numpy(), atol=1e-5)
