"""Causal language models from a local path (issue 17): tiny random-weight GPT-2, GPT-NeoX (Pythia)
and Llama-style models, built here from transformers configs and a BPE tokenizer trained on a few
sentences (no hub), run through sites -> capture -> infer -> score; and torch: factories that say
what their output is."""

import importlib.util
import json
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the minilm extra is not installed")

from conftest import ROOT  # noqa: E402
from theorycraft.api import infer, load_run  # noqa: E402
from theorycraft.cli import main  # noqa: E402
from theorycraft.errors import TargetError  # noqa: E402
from theorycraft.scoring import examples_of, score, splice_scores  # noqa: E402
from theorycraft.spec import HookPoint, load_theory  # noqa: E402
from theorycraft.store import capture  # noqa: E402
from theorycraft.targets import load_target  # noqa: E402
from theorycraft.targets._hf import load_hf_model  # noqa: E402

_spec = importlib.util.spec_from_file_location("make_tiny_lm", ROOT / "examples" / "lm" / "make_tiny_lm.py")
make_tiny_lm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_tiny_lm)

T = 16  # tokens per window: short, so every family runs in a second or two
TEXTS = tuple(f"{s} Item {k}: {s.lower()}" for k in range(6) for s in make_tiny_lm.SENTENCES)
THEORY = """\
theory: tiny-lm
target: hf:{path}
sites:
  resid0:  {{hook: blocks.0.hook_resid_post, doc: "# [batch, {T}, 32]"}}
variables:
  tok: token[i]
  pos: i
components:
  by_token:    {{kind: lookup, of: tok, predicts: resid0}}
  by_position: {{kind: lookup, of: pos, size: {T}, predicts: resid0}}
"""
PATTERN_THEORY = """\
theory: tiny-lm-attention
target: hf:{path}
sites:
  pattern: {{hook: blocks.1.attn.hook_pattern, doc: "# [batch, head, query, key]"}}
variables:
  tok: token[i]
components:  # two heads, each its positional prior alone: "j > i" holds on no causal key
  head0: {{kind: attention, rule: "j > i", head: 0, predicts: pattern}}
  head3: {{kind: attention, rule: "j > i", head: 3, predicts: pattern}}
"""
SITES = [HookPoint.parse("blocks.0.hook_resid_post"), HookPoint.parse("blocks.1.attn.hook_pattern")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small run fastest on one thread (and are not slowed by other work on the machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_lm.tiny_tokenizer()


@pytest.fixture(scope="module", params=["gpt2", "gpt_neox", "llama"])
def model_dir(request, tokenizer, tmp_path_factory):
    """A tiny model of the family, trained 30 steps: it predicts something, so splicing has a loss to recover."""
    out = tmp_path_factory.mktemp(request.param)
    make_tiny_lm.save_tiny_lm(request.param, out, tokenizer, steps=30)
    return out


def _reference(model_dir):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager").eval()


def test_sites_capture_infer_score(model_dir, tokenizer, tmp_path):
    target = load_hf_model(str(model_dir), texts=TEXTS, seq_len=T)
    hooks = target.hooks()
    assert hooks["blocks.0.hook_resid_post"] == hooks["blocks.1.hook_resid_pre"] == (T, 32)
    assert hooks["blocks.1.attn.hook_pattern"] == (4, T, T)  # 4 query heads, also where keys are grouped (Llama)
    assert len(hooks["blocks.0.mlp.hook_post"]) == 2 and target.vocab_size == len(tokenizer)

    # windows of plain tokens: the first is the first text's first T tokens, no [CLS] or BOS added
    windows = target.dataset(None, 0)
    assert windows.shape[1] == T and list(windows[0]) == tokenizer(TEXTS[0])["input_ids"][:T]

    acts = capture(target, SITES, cache_dir=tmp_path, batch_size=16, progress=False)
    tokens = torch.from_numpy(np.array(acts.inputs())).long()
    reference = _reference(model_dir)
    with torch.no_grad():  # the family's own eager attention, read the family's own way
        clean = reference(input_ids=tokens, output_hidden_states=True, output_attentions=True)
    np.testing.assert_allclose(acts.site("blocks.0.hook_resid_post"), clean.hidden_states[1].numpy(), atol=1e-5)
    np.testing.assert_allclose(acts.site("blocks.1.attn.hook_pattern"), clean.attentions[1].numpy(), atol=1e-6)

    theory_file = tmp_path / "tiny.yaml"
    theory_file.write_text(THEORY.format(path=model_dir, T=T))
    fitted, card = infer(load_theory(str(theory_file)), acts, progress=False, log=lambda m: None)
    assert card.sites["resid0"].r2_test > 0.5  # token + position tables: most of the first layer
    splice = score(fitted, acts, target=target, bits=False).splice["resid0"]
    # the language-modelling loss: the clean model's next-token cross-entropy on the test windows
    test = torch.from_numpy(np.array(acts.inputs()[np.sort(np.asarray(acts.split("test")))])).long()
    with torch.no_grad():
        logits = reference(input_ids=test).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), test[:, 1:].reshape(-1))
    assert splice.loss_clean == pytest.approx(float(expected), rel=1e-4)
    assert splice.loss_mean_ablated > splice.loss_clean + 0.1  # the trained model needs its first layer
    assert splice.loss_recovered > 0.3 and splice.kl > 0 and 0.3 < splice.top1_agreement < 1


def test_a_pattern_spliced_back_changes_nothing_and_another_changes_the_output(model_dir):
    """A replaced pattern is what the heads read: the same pattern (a copy, recomputed through the
    values) leaves the logits as they were; another example's pattern moves them."""
    target = load_hf_model(str(model_dir), texts=TEXTS, seq_len=T)
    inputs = target.dataset(4, 0)
    hook = HookPoint.parse("blocks.1.attn.hook_pattern")
    recorded, clean = target.intervene(inputs, [hook])
    same = target.output(inputs, {hook: lambda a: a.clone()})
    np.testing.assert_allclose(same, clean, atol=1e-5)
    swapped = torch.from_numpy(recorded[hook][::-1].copy())
    moved = target.output(inputs, {hook: lambda a: swapped})
    assert np.abs(moved - clean).max() > 1e-3


def test_attention_runs_sdpa_unless_a_pattern_site_is_read(model_dir, monkeypatch):
    """Attention whose pattern no site reads runs transformers' sdpa; a layer whose pattern is read
    (or replaced) runs the family's eager function, and both give the same layer outputs, also
    with a padded batch (the eager function gets sdpa's mask made additive)."""
    import sys

    import transformers.integrations.sdpa_attention as sdpa_module

    target = load_hf_model(str(model_dir), texts=TEXTS, seq_len=T)
    attention = next(m for m in target.module.modules() if hasattr(m, "hook_pattern"))
    family = sys.modules[type(attention).__module__]
    ran = []
    for module, name in ((sdpa_module, "sdpa_attention_forward"), (family, "eager_attention_forward")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: ran.append(_n) or _f(*a, **k))

    inputs, resid = target.dataset(4, 0), [HookPoint.parse(f"blocks.{k}.hook_resid_post") for k in (0, 1)]
    fast = target.run(inputs, resid)
    assert ran == ["sdpa_attention_forward"] * 2
    ran.clear()
    read = target.run(inputs, [*resid, HookPoint.parse("blocks.1.attn.hook_pattern")])
    assert ran == ["sdpa_attention_forward", "eager_attention_forward"]  # layer 0 fast, layer 1 read
    for hook in resid:
        np.testing.assert_allclose(read[hook], fast[hook], atol=1e-5)

    ids = torch.from_numpy(inputs).long()
    mask = torch.ones_like(ids)
    mask[1, T // 2:] = 0  # a padded row: its last half is masked
    with torch.no_grad():
        sdpa_logits = target.module(input_ids=ids, attention_mask=mask).logits
        unpadded = target.module(input_ids=ids[1:2, : T // 2]).logits  # padding is invisible to the kept tokens
        handles = [m.hook_pattern.register_forward_hook(lambda *a: None)
                   for m in target.module.modules() if hasattr(m, "hook_pattern")]
        eager_logits = target.module(input_ids=ids, attention_mask=mask).logits
        for handle in handles:
            handle.remove()
    assert ran[-2:] == ["eager_attention_forward"] * 2
    valid = mask.bool()
    np.testing.assert_allclose(eager_logits[valid].numpy(), sdpa_logits[valid].numpy(), atol=1e-5)
    np.testing.assert_allclose(eager_logits[1, : T // 2].numpy(), unpadded[0].numpy(), atol=1e-5)


def test_an_attention_theory_of_a_grouped_query_model(tokenizer, tmp_path):
    """Attention components fitted to a Llama-style model's pattern site (4 query heads over 2
    key-value heads) and spliced in, so the heads read the theory's patterns. The rule "j > i"
    never holds on a causal key: each head is its positional prior, the head's mean pattern, so the
    theory explains none of the variance and splicing it is mean ablation."""
    make_tiny_lm.save_tiny_lm("llama", tmp_path / "llama", tokenizer, steps=30)
    target = load_hf_model(str(tmp_path / "llama"), texts=TEXTS, seq_len=T)
    acts = capture(target, SITES[1:], cache_dir=tmp_path, batch_size=16, progress=False)
    theory_file = tmp_path / "attention.yaml"
    theory_file.write_text(PATTERN_THEORY.format(path=tmp_path / "llama"))
    fitted, card = infer(load_theory(str(theory_file)), acts, max_steps=20, progress=False, log=lambda m: None)
    assert card.sites["pattern"].r2_test == pytest.approx(0, abs=0.01)
    splice = splice_scores(fitted, target, examples_of(fitted, acts))["pattern"]
    assert abs(splice.loss_spliced - splice.loss_clean) > 1e-3 and splice.kl > 1e-4  # the heads read it
    assert splice.loss_spliced == pytest.approx(splice.loss_mean_ablated, abs=1e-4)


RULES_THEORY = """\
theory: tiny-lm-rules
target: hf:{path}
sites:
  pattern: {{hook: blocks.0.attn.hook_pattern, doc: "# [batch, head, query, key]"}}
components:  # issue 26's rules for layer 0's heads
  self:     {{kind: attention, rule: "j == i", head: 0, predicts: pattern}}
  previous: {{kind: attention, rule: "j == i - 1", head: 1, predicts: pattern}}
  first:    {{kind: attention, rule: "j == 0", head: 2, predicts: pattern}}
  same:     {{kind: attention, rule: "token[j] == token[i]", head: 3, predicts: pattern}}
"""


def test_attention_rules_on_layer_0_reach_at_default_steps_what_ten_times_the_steps_reach(tokenizer, tmp_path):
    """Issue 26, small: four rules for a random GPT-2's layer-0 heads started at sharpness 8 and sat
    there (at 2,000 steps, test R² -160 in the issue); started where the recorded patterns point,
    the default fit reaches what ten times the steps reach. (The trained model's case, measured at
    full size, is in docs/trust.md; at this size its two fits took 7.5 minutes on a loaded machine.)"""
    from theorycraft.inference import FitConfig, fit

    make_tiny_lm.save_tiny_lm("gpt2", tmp_path / "gpt2", tokenizer, steps=0)
    target = load_hf_model(str(tmp_path / "gpt2"), texts=TEXTS, seq_len=T)
    acts = capture(target, [HookPoint.parse("blocks.0.attn.hook_pattern")], cache_dir=tmp_path, batch_size=16,
                   progress=False)
    (tmp_path / "rules.yaml").write_text(RULES_THEORY.format(path=tmp_path / "gpt2"))
    theory = load_theory(str(tmp_path / "rules.yaml"))
    r2 = [score(fit(theory, acts, FitConfig(progress=False, max_steps=m)), acts, bits=False).sites["pattern"].r2_test
          for m in (2000, 20000)]
    assert r2[0] > -0.05 and r2[0] == pytest.approx(r2[1], abs=0.02)


def test_cli_lists_aliases_and_captures_with_a_window_length(tokenizer, tmp_path, capsys, monkeypatch):
    import theorycraft.targets._hf as hf

    model = tmp_path / "tiny-gpt2"
    make_tiny_lm.save_tiny_lm("gpt2", model, tokenizer)
    monkeypatch.setattr(hf, "stdlib_docstrings", lambda: TEXTS)  # the default corpus, kept small here
    assert main(["sites", f"hf:{model}"]) == 0
    rows = {" ".join(row.split()) for row in capsys.readouterr().out.splitlines()}
    for line in ("blocks.1.attn.hook_pattern [4, 64, 64]", "blocks.0.mlp.hook_post [64, 128]",
                 "transformer.h.1.attn.hook_pattern [4, 64, 64]"):  # windows: the model's 64 positions
        assert line in rows
    args = ["capture", f"hf:{model}", "--sites", "blocks.0.hook_resid_post", "--seq-len", "8", "--n", "5",
            "--cache", str(tmp_path / "cache")]
    assert main(args) == 0 and "blocks.0.hook_resid_post  [8, 32]" in capsys.readouterr().out
    assert main(args[:4] + ["--seq-len", "65"] + args[6:]) == 1
    assert "the window length 65 is longer than the model's 64 positions" in capsys.readouterr().err
    assert main(["capture", "builtin:superposition", "--sites", "hook_hidden", "--seq-len", "8"]) == 2
    assert "--seq-len sets the windows of hf: targets" in capsys.readouterr().err


USER_MODULE = '''
import numpy as np
import torch
from theorycraft.targets import UserModel

class Bigram(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(11, 8)
        self.unembed = torch.nn.Linear(8, 11)

    def forward(self, x):
        return self.unembed(self.embed(x))

def data(n, seed):
    return np.random.default_rng(seed).integers(0, 11, size=(n or 400, 6))

def make():
    return UserModel(Bigram(), data, output="logits", vocab_size=11)

def make_lm():
    return UserModel(Bigram(), data, output="next-token", vocab_size=11)

def wrong_output():
    return UserModel(Bigram(), data, output="logit")

def small_vocabulary():
    return UserModel(Bigram(), data, vocab_size=5)

def undeclared():
    return Bigram(), data
'''


def test_a_torch_factory_in_the_working_directory_declares_its_output_and_vocabulary(tmp_path, monkeypatch):
    (tmp_path / "mymodel.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)  # importable from here, as `python -c "import mymodel"` would find it
    target = load_target("torch:mymodel:make", trust_code=True)
    assert target.vocab_size == 11 and target.task.output == "logits"
    theory = tmp_path / "bigram.yaml"
    theory.write_text(textwrap.dedent("""\
        theory: bigram
        target: torch:mymodel:make
        sites:
          embed: embed
        variables:
          tok: token[i]
        components:
          table: {kind: lookup, of: tok, predicts: embed}
        """))  # no size: the lookup reads the declared vocabulary
    fitted, card = infer(load_theory(str(theory), trust_code=True), n=400, cache_dir=tmp_path / "cache",
                         trust_code=True, progress=False, log=lambda m: None)
    assert card.sites["embed"].r2_test > 0.999  # the embedding is a table of the token
    acts = capture(target, [HookPoint.parse("embed")], n=400, cache_dir=tmp_path / "cache", progress=False)
    splice = score(fitted, acts, target=target, bits=False).splice["embed"]
    assert splice.kl == pytest.approx(0, abs=1e-6) and splice.top1_agreement == 1.0
    assert splice.loss_clean == 0 and splice.loss_recovered == pytest.approx(1, abs=1e-4)  # loss: KL to clean
    lm = load_target("torch:mymodel:make_lm", trust_code=True)  # judged on the token that follows
    inputs = lm.dataset(3, 0)
    rows, labels = lm.task.read(lm.output(inputs), inputs)
    assert rows.shape == (3 * 5, 11) and list(labels) == list(inputs[:, 1:].reshape(-1))
    with pytest.raises(TargetError, match="expected output one of 'logits', 'next-token', 'regression'"):
        load_target("torch:mymodel:wrong_output", trust_code=True)
    with pytest.raises(TargetError, match="has token id 10; expected ids below vocab_size 5"):
        load_target("torch:mymodel:small_vocabulary", trust_code=True)


# --- --seq-len on search and check as on capture and infer; score's text in the run's windows ------

TOKEN_THEORY = """\
theory: tiny-lm-tokens
target: hf:{path}
sites:
  resid0: blocks.0.hook_resid_post
variables:
  tok: token[i]
components:
  by_token: {{kind: lookup, of: tok, predicts: resid0}}
axioms:
  needs_its_first_layer:
    zero: blocks.0.hook_resid_post
    changes: output
    metric: kl
    at_least: 0.001
"""


@pytest.fixture
def tiny_gpt2(tokenizer, tmp_path, monkeypatch):
    """A random-weight GPT-2 of 64 positions, its theory of tokens, the default corpus kept small, and
    the working directory a fresh one (check fits into runs/)."""
    import theorycraft.targets._hf as hf

    make_tiny_lm.save_tiny_lm("gpt2", tmp_path / "gpt2", tokenizer)
    (tmp_path / "tokens.yaml").write_text(TOKEN_THEORY.format(path=tmp_path / "gpt2"))
    monkeypatch.setattr(hf, "stdlib_docstrings", lambda: TEXTS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def windows_in(cache) -> dict:
    """Every capture of a store: its key -> (window length, site shape)."""
    from theorycraft.store import ActivationSet

    sets = [ActivationSet(m.parent) for m in sorted(cache.glob("*/manifest.json"))]
    return {a.key: (a.inputs().shape[1], tuple(a.sites["blocks.0.hook_resid_post"])) for a in sets}


def test_search_and_check_capture_windows_of_seq_len_and_score_text_the_runs(tiny_gpt2, capsys):
    cache = tiny_gpt2 / "cache"
    assert main(["search", "tokens.yaml", "--seq-len", "8", "--n", "40", "--out", "found", "--tries", "1",
                 "--max-steps", "20", "--no-progress", "--cache", str(cache)]) == 0
    fitted_on = load_run(tiny_gpt2 / "found" / "fitted").fit_info["data"]["capture"]
    assert windows_in(cache) == {fitted_on: (8, (8, 32))}  # the search captured and fitted windows of 8

    assert main(["check", "tokens.yaml", "--seq-len", "12", "--n", "40", "--limit", "8", "--cache", str(cache)]) == 0
    assert "1 of 1 axioms hold" in capsys.readouterr().out
    assert sorted(windows_in(cache).values()) == [(8, (8, 32)), (12, (12, 32))]

    # words in reverse order: no window of it is one the run was fitted on (whichever rows the split tests)
    (tiny_gpt2 / "other.txt").write_text(" ".join(w for t in reversed(TEXTS) for w in reversed(t.split())))
    run = ["score", "runs/tiny-lm-tokens", "--no-splice", "--cache", str(cache)]
    # 40 windows: a test split (a hashed 20% of the rows) of 10 is empty one time in nine
    assert main(run + ["--text", "other.txt", "--n", "40"]) == 0  # cut into the run's windows, not the default's
    assert sorted(windows_in(cache).values()) == [(8, (8, 32)), (12, (12, 32)), (12, (12, 32))]
    shifted = json.loads((tiny_gpt2 / "runs" / "tiny-lm-tokens" / "scorecard.json").read_text())["shifted"]
    assert list(shifted) == ["text"] and shifted["text"]["n"] > 0


@pytest.mark.parametrize("argv, message", [
    (["search", "tokens.yaml", "--capture", "abc", "--seq-len", "8"], "leave out --n, --data-seed, --dtype"),
    (["check", "tokens.yaml", "--run", "runs/x", "--seq-len", "8"], "with --run the run's own capture is used"),
    (["search", str(ROOT / "examples" / "superposition.yaml"), "--seq-len", "8", "--cache", "cache"],
     "--seq-len sets the windows of hf: targets"),
])
def test_seq_len_where_it_sets_nothing_is_a_usage_error(tmp_path, monkeypatch, capsys, argv, message):
    (tmp_path / "tokens.yaml").write_text(TOKEN_THEORY.format(path=tmp_path / "gpt2"))  # refused before it loads
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_search_on_a_torch_factory_sizes_its_tables_by_the_declared_vocabulary(tmp_path, monkeypatch, capsys):
    """The default vocabulary's token tables take the size the factory declares (UserModel's
    vocab_size): search finds the embedding as a table of the token. A factory that declares none
    is refused first, saying how to declare it."""
    from safetensors.numpy import load_file

    (tmp_path / "mymodel.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "start.yaml").write_text("theory: bigram\ntarget: torch:mymodel:make\nsites: {embed: embed}\n")
    args = ["--trust-code", "--n", "200", "--max-steps", "50", "--tries", "1", "--cache", "cache", "--no-progress"]
    assert main(["search", "start.yaml", "--out", "found", *args]) == 0
    found = load_theory("found/theory.yaml", trust_code=True)
    tables = [c for c in found.components.values() if c.kind == "lookup" and c.predicts == "embed"]
    assert [[e.text for e in c.of] for c in tables] == [["token[i]"]] and tables[0].size is None  # sized by the vocabulary
    assert "test coverage 1.0000" in capsys.readouterr().out
    rows = {k: v.shape for k, v in load_file("found/fitted/params.safetensors").items() if "token_code" in k}
    assert list(rows.values()) == [(11, 8)], rows  # a row per declared token id

    (tmp_path / "bare.yaml").write_text("theory: bare\ntarget: torch:mymodel:undeclared\nsites: {embed: embed}\n")
    assert main(["search", "bare.yaml", "--out", "bare", *args]) == 1
    assert "torch:mymodel:undeclared declares no vocabulary" in capsys.readouterr().err


def test_a_local_models_split_does_not_depend_on_where_its_folder_lies(tokenizer, tmp_path, monkeypatch):
    """Two clones hold the same model at different paths: the same windows, the same test split
    (the capture's key still differs by the files, which the target's identity names)."""
    import shutil

    import theorycraft.targets._hf as hf

    monkeypatch.setattr(hf, "stdlib_docstrings", lambda: TEXTS)
    make_tiny_lm.save_tiny_lm("gpt2", tmp_path / "one" / "tiny", tokenizer)
    shutil.copytree(tmp_path / "one" / "tiny", tmp_path / "two" / "tiny")
    one, two = (load_hf_model(str(tmp_path / d / "tiny")) for d in ("one", "two"))
    assert one.dataset_identity(64, 0) == two.dataset_identity(64, 0)
    assert one.dataset_identity(64, 0) != one.dataset_identity(64, 3)  # the data seed still chooses
    assert str(tmp_path) not in one.dataset_identity(64, 0)
