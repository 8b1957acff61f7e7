"""Figures a reviewer can trust, and nothing done silently (issues 26 and 27.4): the headline
counts declared inputs as unexplained, the worst site stands beside it, every held-out figure
carries an interval, splice figures come together, axiom columns are defined and a 'mean' is the
train mean per position; the data seed reaches hf: captures, a later score keeps what it does not
measure, every path in a theory file is read from the file, and library errors say what they
expected and found."""

import json
import textwrap

import numpy as np
import pytest

from theorycraft.cli import main, scorecard_table
from theorycraft.errors import ArtifactError, FitError
from theorycraft.inference import FitConfig, fit
from theorycraft.scoring import Scorecard, SpliceScore, examples_of, score
from theorycraft.spec import TheoryError, load_theory, parse_theory

from conftest import ROOT, captured, recorded_target

QUIET = FitConfig(progress=False, max_steps=200)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    return tmp, recorded_target(tmp)


def _theory(directory, body: str):
    return parse_theory(f"theory: t\ntarget: activations:{directory}\n" + textwrap.dedent(body), path="t.yaml")


def _fitted(synthetic, body: str):
    tmp, directory = synthetic
    theory = _theory(directory, body)
    acts = captured(tmp, theory)
    return fit(theory, acts, QUIET), acts


# --- 1. the honest headline ------------------------------------------------------------------

def test_a_theory_handed_its_answer_site_gets_no_credit_for_it(synthetic):
    """y is the site to explain; a theory handed y as an input and predicting u exactly used to
    read coverage 1.000. Now y counts at R² 0: the headline is u's share of the variance, by hand."""
    fitted, acts = _fitted(synthetic, """\
        sites: {u: u, y: y}
        variables: {a: 'token[0]'}
        inputs: [y]
        components:
          table: {kind: lookup, of: a, size: 7, predicts: u}
        """)
    card = score(fitted, acts, bits=False)
    data = examples_of(fitted, acts).data
    test = acts.split("test")
    sst = {s: float(((np.asarray(data[s][test]) - fitted.means[s]) ** 2).sum()) for s in ("u", "y")}  # [N, D] sites
    assert card.sites["u"].r2_test == pytest.approx(1.0, abs=1e-6)
    assert card.unexplained == ("y",) and card.inputs == ("y",)
    assert card.coverage == pytest.approx(sst["u"] / (sst["u"] + sst["y"]), abs=1e-5) and card.coverage < 0.2
    assert card.coverage_given == pytest.approx(1.0, abs=1e-6)  # the figure given its inputs, beside it
    printed = scorecard_table(card)
    assert "given y: 1.0000" in printed and "over u, y (given: y)" in printed
    assert card.size.bits is None and score(fitted, acts).size.bits_inputs > 0  # bits: as they were


def test_the_networks_own_input_is_given_to_every_theory_and_not_counted(tmp_path):
    """A vector-input target's input hook is the input itself: no theory could explain it."""
    r = np.random.default_rng(0)
    x = r.normal(size=(400, 5)).astype(np.float32)
    d = tmp_path / "rec"
    d.mkdir()
    np.save(d / "inputs.npy", x)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", (x @ r.normal(size=(5, 3))).astype(np.float32))
    (d / "manifest.json").write_text(json.dumps({"sites": ["x", "y"]}))
    theory = _theory(d, "sites: {x: x, y: y}\ninputs: [x]\ncomponents:\n  lin: {kind: linear, from: x, predicts: y}\n")
    card = score(fit(theory, captured(tmp_path, theory), QUIET), captured(tmp_path, theory), bits=False)
    assert card.unexplained == () and card.coverage == card.coverage_given == pytest.approx(1.0, abs=1e-4)


# --- 2. the worst site beside the headline; a site worse than its mean flagged ------------------

def test_a_site_worse_than_its_mean_is_flagged_by_name_beside_the_headline(synthetic):
    fitted, acts = _fitted(synthetic, """\
        sites: {x: x, y: y, u: u}
        variables: {a: 'token[0]'}
        inputs: [x]
        components:
          lin: {kind: linear, from: x, predicts: y}
          table: {kind: lookup, of: a, size: 7, predicts: u}
        """)
    broken = {**fitted.params, "lin": {k: -3 * np.asarray(v) for k, v in fitted.params["lin"].items()}}
    card = score(fitted.replace(params=broken), acts, bits=False)
    assert card.sites["y"].r2_test < 0 and card.sites["u"].r2_test > 0.99
    assert card.below_mean() == ["y"] and card.worst_site(free=True)[0] == "y"
    assert any(w.startswith("site y is predicted worse than its mean") for w in card.warnings())
    printed = scorecard_table(card)
    assert "worst site y" in printed and "<- worse than its mean" in printed and "warning: site y" in printed
    from theorycraft.scoring._card import scorecard_html
    assert "y (worse than its mean)" in scorecard_html(card)


# --- 3. intervals over the test examples ------------------------------------------------------

def test_every_held_out_figure_has_an_interval_and_a_small_test_split_is_said(synthetic):
    fitted, acts = _fitted(synthetic, """\
        sites: {x: x, y: y, z: z}
        variables: {a: 'token[0]', b: 'token[1]'}
        inputs: [x]
        components:
          lin: {kind: linear, from: x, predicts: y}
          waves: {kind: fourier, of: [a, b], modulus: 7, frequencies: [1]}
          zmap: {kind: linear, from: waves, predicts: z}
        """)
    card = score(fitted, acts, bits=False)
    for figure, (low, high) in [(card.coverage, card.coverage_interval), (card.coverage_free, card.coverage_free_interval),
                                *[(s.r2_test, s.r2_test_interval) for s in card.sites.values()]]:
        assert low <= figure <= high
    z = card.sites["z"]  # a site half explained varies from resample to resample
    assert z.r2_test_interval[1] - z.r2_test_interval[0] > 0.01
    assert score(fitted, acts, bits=False).coverage_interval == card.coverage_interval  # deterministic
    assert card.n_test < 200 and any("only" in w and "test examples" in w for w in card.warnings())
    again = Scorecard.from_json(json.loads(json.dumps(card.to_json())))
    assert again == card


def test_the_bootstrap_is_a_ratio_of_resampled_sums():
    from theorycraft.scoring._intervals import ratio_intervals, r2_intervals

    r = np.random.default_rng(3)
    sse, sst = r.gamma(2, size=500), r.gamma(5, size=500)
    naive = []
    rng = np.random.default_rng(7)
    for _ in range(1000):
        k = rng.integers(0, 500, 500)
        naive.append(1 - sse[k].sum() / sst[k].sum())
    low, high = r2_intervals(sse, sst)[0]
    assert low == pytest.approx(np.percentile(naive, 2.5), abs=0.01) and high == pytest.approx(np.percentile(naive, 97.5), abs=0.01)
    assert np.isnan(ratio_intervals(np.zeros((0, 2)))).all()


# --- 4. splice figures together; a small denominator flagged ------------------------------------

def test_a_small_splice_gap_is_flagged_and_top1_and_kl_stand_beside_loss_recovered():
    from theorycraft.benchmarks.coverage import Row, splice_text

    s = SpliceScore(4.0, 4.01, 4.5, 0.98, 0.12, 0.85, 64, (0.95, 1.0), (0.1, 0.14), (0.8, 0.9))
    assert s.small_gap and not SpliceScore(1.0, 1.1, 3.0, 0.95, 0.1, 0.9, 64).small_gap
    card = Scorecard("t", "hf:x", ("r",), (), {}, 1.0, 1.0, 1.0, 1.0, _size(), splice={"r": s})
    assert any("mean ablation moves the loss by only 0.5" in w for w in card.warnings())
    printed = scorecard_table(card)
    assert "top-1 agreement 0.85 [0.8000, 0.9000]  KL 0.12 [0.1000, 0.1400]  loss recovered 0.98" in printed
    row = Row("t", "t", "t", "reference", 1, 1, 1.0, 1.0, {}, splice={"r": s.__dict__})
    assert splice_text(row) == "0.850 / 0.120 / 0.980 (small gap)"


def test_splice_rows_are_owned_by_their_examples_where_examples_have_different_numbers_of_rows():
    """The induction task reads the copied tokens: a different number of rows per example."""
    from theorycraft.scoring._splice import row_owners
    from theorycraft.targets._builtin_models import BUILTINS, repeated_sequences

    tokens = repeated_sequences(12, np.random.default_rng(0))[:, :-1]
    task = BUILTINS["induction"].task
    logits = np.random.default_rng(1).normal(size=(*tokens.shape, 5))
    rows, _ = task.read(logits, tokens)
    owners = row_owners(task, logits, tokens)
    counts = np.bincount(owners, minlength=len(tokens))
    assert len(owners) == len(rows) and len(set(counts)) > 1 and np.all(np.diff(owners) >= 0)


def _size():
    from theorycraft.scoring import SizeScore
    return SizeScore(1)


# --- 5. axioms: columns defined; one meaning of 'mean' ------------------------------------------

def test_the_axiom_table_defines_its_columns(capsys):
    from theorycraft.cli import axioms_table
    from theorycraft.scoring import AxiomResult

    text = axioms_table([AxiomResult("a", "claim", "variance moved", 0.621, 0.6, 0.64, 0.317, 0.5, 0.1, True, 10)])
    assert "theory's predicted effect: the same effect as the theory predicts it: its own intervened run against its " \
           "own clean run" in text
    assert "mean: a 'mean' intervention writes the training mean per position" in text


def test_a_mean_intervention_on_a_component_is_its_train_mean_not_the_held_out_batchs(synthetic):
    from theorycraft.inference._intervene import Intervention, predict_intervened

    fitted, acts = _fitted(synthetic, """\
        sites: {u: u}
        variables: {a: 'token[0]'}
        components:
          table: {kind: lookup, of: a, size: 7, predicts: u}
        """)
    data = examples_of(fitted, acts).data
    inputs = np.asarray(data["inputs"])
    held = inputs[inputs[:, 0] == 3][:8]  # a batch whose own mean is table[3]
    train = inputs[acts.split("train")]
    mean = Intervention("mean")
    with pytest.raises(FitError, match="needs the training examples"):
        predict_intervened(fitted, held, {}, mean, components=("table",))
    out = predict_intervened(fitted, held, {}, mean, components=("table",), source=(train, {}))["u"]
    expected = np.asarray(fitted.predict(train, {}, free=True)["u"]).mean(0)
    assert np.allclose(out, expected, atol=1e-4) and not np.allclose(out, fitted.predict(held, {}, free=True)["u"])


# --- 7. nothing silent ----------------------------------------------------------------------------

def test_the_data_seed_chooses_the_windows_and_the_split_of_an_hf_capture(tmp_path):
    import importlib.util

    from theorycraft.store import capture
    from theorycraft.targets._hf import load_hf_model
    from theorycraft.spec import HookPoint

    spec = importlib.util.spec_from_file_location("make_tiny_lm", ROOT / "examples" / "lm" / "make_tiny_lm.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    tiny.save_tiny_lm("gpt2", tmp_path / "lm", tiny.tiny_tokenizer(), steps=0)
    texts = tuple(f"{s} Item {k}: {s.lower()}" for k in range(6) for s in tiny.SENTENCES)
    target = load_hf_model(str(tmp_path / "lm"), texts=texts, seq_len=8)
    hook = [HookPoint.parse("blocks.0.hook_resid_post")]
    first, other = (capture(target, hook, n=20, seed=seed, cache_dir=tmp_path / "cache", progress=False) for seed in (0, 3))
    assert first.key != other.key
    assert {r.tobytes() for r in np.asarray(first.inputs())} != {r.tobytes() for r in np.asarray(other.inputs())}
    assert not np.array_equal(first.is_test, other.is_test) or not np.array_equal(first.inputs(), other.inputs())


def test_score_without_splice_keeps_the_earlier_splice_and_says_so(tmp_path, capsys, at_root):
    out, cache = tmp_path / "run", str(tmp_path / "cache")
    assert main(["infer", "examples/superposition.yaml", "--n", "1500", "--max-steps", "50", "--out", str(out),
                 "--cache", cache]) == 0
    assert main(["score", str(out), "--cache", cache]) == 0
    first = json.loads((out / "scorecard.json").read_text())
    assert first["splice"] and first["counterfactual"]
    capsys.readouterr()
    assert main(["score", str(out), "--no-splice", "--cache", cache]) == 0
    second = json.loads((out / "scorecard.json").read_text())
    assert second["splice"] == first["splice"] and second["counterfactual"] == first["counterfactual"]
    assert "kept from the earlier score" in capsys.readouterr().err


def test_every_path_in_a_theory_file_is_read_from_the_file(tmp_path, monkeypatch):
    (tmp_path / "theories").mkdir()
    path = tmp_path / "theories" / "t.yaml"
    path.write_text("theory: t\ntarget: hf:../models/lm\nsites: {r: {hook: blocks.0.hook_resid_post}}\n")
    monkeypatch.chdir(ROOT)
    assert load_theory(str(path)).target.located == str(tmp_path / "models" / "lm")
    assert str(load_theory(str(path)).target) == "hf:../models/lm"  # as written; read from the file
    assert str(load_theory(str(ROOT / "examples" / "minilm_tokens.yaml")).target) == "hf:minilm"  # a name
    monkeypatch.chdir(tmp_path)  # the bundled tiny LM theory names the model make_tiny_lm.py writes, from anywhere
    assert load_theory(str(ROOT / "examples" / "lm" / "tiny_lm.yaml")).target.located == str(ROOT / "runs" / "tiny-lm")


def test_an_axiom_naming_a_site_the_theory_lacks_fails_validate_at_its_line(tmp_path, capsys):
    path = tmp_path / "ax.yaml"
    path.write_text(textwrap.dedent("""\
        theory: t
        target: builtin:superposition
        sites:
          x: {hook: hook_input}
          h: {hook: hook_hidden}
        inputs: [x]
        components:
          embed: {kind: linear, from: x, predicts: h, bias: false}
        axioms:
          moves:
            resample: "hx[[1, 2]]"
            changes: hook_output
        """))
    assert main(["validate", str(path)]) == 1
    assert f"{path}:11:15: error: undefined site 'hx' (did you mean 'x'?)" in capsys.readouterr().err


def test_library_errors_name_what_was_expected_and_found(synthetic):
    fitted, acts = _fitted(synthetic, """\
        sites: {x: x, y: y}
        inputs: [x]
        components:
          lin: {kind: linear, from: x, predicts: y}
        """)
    data = examples_of(fitted, acts).data
    tokens, x = np.asarray(data["inputs"][:5]), np.asarray(data["x"][:5])
    with pytest.raises(FitError, match=r"expected inputs of integer \(token ids\) dtype like int32, found float32"):
        fitted.predict(tokens.astype(np.float32), {"x": x})
    with pytest.raises(FitError, match=r"expected inputs of shape \[N, 3\], found \[5, 2\]"):
        fitted.predict(tokens[:, :2], {"x": x})
    with pytest.raises(FitError, match=r"expected site 'x' of shape \[5, 6\], found \[5, 3\]"):
        fitted.predict(tokens, {"x": x[:, :3]})
    with pytest.raises(ArtifactError, match="expected a scorecard as a JSON object .* found str 'coverage'"):
        Scorecard.from_json("coverage")
    with pytest.raises(ArtifactError, match="expected a scorecard with key"):
        Scorecard.from_json({"format": 4})


def test_trust_is_checked_at_every_use_of_a_python_kind(tmp_path, monkeypatch):
    """A module of its own (a built-in kind under another name), removed from the registry and
    from sys.modules afterwards, so no other test sees it."""
    import sys

    from theorycraft.spec import KINDS

    (tmp_path / "trust_probe_kind.py").write_text("from theorycraft.inference.kinds import KINDS\nLINEAR = KINDS['linear']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "trust_probe_kind:LINEAR"
    text = f"theory: t\ntarget: activations:{tmp_path}\nsites: {{x: x, y: y}}\ninputs: [x]\ncomponents:\n" \
           f"  lin: {{kind: '{name}', from: x, predicts: y}}\n"
    try:
        try:
            parse_theory(text, "t.yaml", trust_code=True)
        except TheoryError as exc:  # the kind's own schema may want more: it was imported, with trust
            assert "--trust-code" not in str(exc)
        assert name in KINDS
        with pytest.raises(TheoryError, match="--trust-code"):
            parse_theory(text, "t.yaml")
    finally:
        KINDS.pop(name, None)
        sys.modules.pop("trust_probe_kind", None)


def test_a_scorecard_written_before_still_loads_and_says_what_its_coverage_is():
    from theorycraft.scoring import SiteScore, SizeScore

    card = Scorecard("t", "builtin:x", ("y",), ("x",), {"y": SiteScore(1, 1, 0.9, 10, 10, 300, 1, 0.9)},
                     0.9, 0.9, 0.9, 0.9, SizeScore(3))
    old = {k: v for k, v in card.to_json().items()
           if k not in ("unexplained", "coverage_given", "coverage_free_given", "coverage_interval", "coverage_free_interval")}
    old["format"] = 3
    for site in old["sites"].values():
        site.pop("r2_test_interval"), site.pop("r2_test_free_interval")
    loaded = Scorecard.from_json(old)
    assert loaded.format == 3 and loaded.coverage == 0.9 and loaded.coverage_given == 0.9
    assert any("older theorycraft (format 3)" in w for w in loaded.warnings())
