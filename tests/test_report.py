"""theorycraft report: one self-contained page of a run, a search and a benchmark directory, with
what each holds; it loads in headless Chromium with no console error and is not blank. The
notebook views of Scorecard, FittedTheory and ActivationSet; the plot fixes."""

import html
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from theorycraft._report import report
from theorycraft.api import check, infer, load_run, run_activations, score_run
from theorycraft.cli import main
from theorycraft.refine import SearchResult, Step, Totals
from theorycraft.refine._trail import scaling_of
from theorycraft.scoring import Scorecard

from conftest import ROOT

BENCH = ROOT / "docs" / "bench-quick"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run with everything a run directory can hold: the superposition theory with a linear
    read-out (closed form, quick; its third axiom, which needs the ReLU, fails), fitted on 1,000
    examples, scored, checked and diagnosed."""
    out = tmp_path_factory.mktemp("report")
    data = yaml.safe_load((ROOT / "examples" / "superposition.yaml").read_text())
    del data["components"]["readout"]["activation"]
    theory = out / "linear.yaml"
    theory.write_text(yaml.safe_dump(data, sort_keys=False))
    infer(str(theory), out_dir=out / "run", n=1000, cache_dir=out / "cache", progress=False, log=lambda m: None)
    score_run(out / "run")
    check(str(theory), run_dir=out / "run", limit=200, log=lambda m: None)
    assert main(["diagnose", str(out / "run")]) == 0
    return out / "run"


@pytest.fixture(scope="module")
def search_dir(run, tmp_path_factory):
    """A search directory as ``theorycraft search`` writes it: trail.json (its own serializer, a
    trail of four steps), theory.yaml and fitted/ (here the tiny run)."""
    out = tmp_path_factory.mktemp("search")
    card = Scorecard.load(run)
    steps = [Step(action, "theory: t\n", Totals(bits, residual, cov, {"h": cov}, cov), Totals(bits, residual * 1.1, cov - 0.01, {"h": cov}),
                  params, 0.5)
             for action, bits, residual, cov, params in (("start", 0, 9000, 0.0, 0), ("add embed (linear)", 800, 4000, 0.6, 100),
                                                         ("add readout (linear)", 2000, 1500, 0.9, 220),
                                                         ("remove nothing", 2400, 1400, 0.92, 240))]
    result = SearchResult("start.yaml", "nothing pays", {"seed": 0, "max_steps": 100}, tuple(steps), card,
                          scaling_of(steps, 0.99), out=str(out))
    (out / "trail.json").write_text(json.dumps(result.to_json(), indent=1))
    shutil.copy(run / "theory.yaml", out / "theory.yaml")
    shutil.copytree(run, out / "fitted")
    return out


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A real search, tiny: from a bare start over a recording with a planted table (u of token[0])
    and a planted linear map (y of x), with a vocabulary of three candidates; 100 Adam steps a fit."""
    from conftest import recorded_target
    from theorycraft.api import search

    out = tmp_path_factory.mktemp("searched")
    start = out / "start.yaml"
    start.write_text(f"theory: planted\ntarget: activations:{recorded_target(out, n=300)}\n"
                     "sites: {x: x, y: y, u: u}\nvariables: {a: 'token[0]', b: 'token[1]'}\n")
    (out / "vocab.yaml").write_text("vocabulary: planted\nvariables: {a: 'token[0]', b: 'token[1]'}\ncomponents:\n"
                                    "  tables: {kind: lookup, of: {each: {by_a: a, by_b: b}}, predicts: u}\n"
                                    "  x_to_y: {kind: linear, from: x, predicts: y}\n")
    search(str(start), vocabulary=str(out / "vocab.yaml"), out_dir=out / "search", cache_dir=out / "cache",
           max_steps=100, log=lambda m: None, progress=False)
    return out / "search"


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """The quick benchmark's results (docs/bench-quick) for two of its targets, so that the plots
    are quick: superposition (values below the floor) and induction (three sites)."""
    out = tmp_path_factory.mktemp("bench")
    results = json.loads((BENCH / "results.json").read_text())
    results["rows"] = [r for r in results["rows"] if r["target"] in ("builtin:superposition", "builtin:induction")]
    (out / "results.json").write_text(json.dumps(results))
    return out


@pytest.fixture(scope="module")
def pages(run, search_dir, bench_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    assert main(["report", str(run)]) == 0
    return {"run": run / "report.html", "search": report(search_dir),
            "bench": report(bench_dir, out / "bench.html")}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A language-model run: a tiny GPT-2 object (random weights, a BPE tokenizer trained on a few
    sentences; no download) fitted on its first block's stream and a pattern site, diagnosed with
    its tokens decoded."""
    import importlib.util

    import torch

    pytest.importorskip("transformers", reason="the minilm extra is not installed")
    import theorycraft as tc
    from theorycraft.refine import diagnose
    from theorycraft.targets import as_target, decoder

    spec = importlib.util.spec_from_file_location("make_tiny_lm", ROOT / "examples" / "lm" / "make_tiny_lm.py")
    make_tiny_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny_lm)
    torch.manual_seed(0)
    tokenizer = make_tiny_lm.tiny_tokenizer()
    model = make_tiny_lm.tiny_model("gpt2", len(tokenizer), positions=8)
    model.tokenizer = tokenizer
    ids = tokenizer(" ".join(make_tiny_lm.SENTENCES * 12))["input_ids"]
    tokens = np.array(ids[: len(ids) // 8 * 8]).reshape(-1, 8)
    theory = tc.parse_theory(textwrap.dedent("""\
        theory: tiny-lm
        sites:
          resid0:  {hook: blocks.0.hook_resid_post}
          pattern: {hook: blocks.1.attn.hook_pattern}
        variables:
          tok: token[i]
          pos: i
        components:
          by_token:    {kind: lookup, of: tok, predicts: resid0}
          by_position: {kind: lookup, of: pos, size: 8, predicts: resid0}
          first:       {kind: attention, rule: "j == 0", head: 0, predicts: pattern}
        """), "tiny_lm.yaml")
    out = tmp_path_factory.mktemp("lm") / "run"
    store = tmp_path_factory.mktemp("lm-store")
    fitted, _ = tc.infer(theory, target=model, dataset=tokens, max_steps=30, out_dir=out, cache_dir=store,
                         progress=False, log=lambda m: None)
    acts = tc.capture(theory, target=model, dataset=tokens, cache_dir=store, progress=False)
    found = diagnose(fitted, acts, worst=2, decode=decoder(as_target(model, dataset=tokens)))
    (out / "diagnosis.json").write_text(json.dumps(found))
    return out


def test_a_language_model_report_shows_text_and_patterns_per_head(lm_run):
    page = report(lm_run).read_text()
    diagnosis = json.loads((lm_run / "diagnosis.json").read_text())
    worst = diagnosis["pattern"]["worst"]
    assert page.count('alt="attention patterns of pattern, example #') == len(worst) == 2
    for example in worst + diagnosis["resid0"]["worst"]:  # each worst example as the text its tokens decode to
        assert html.escape(repr("".join(example["tokens"]))[1:-1][:60]) in page
    for head, r2 in enumerate(diagnosis["pattern"]["heads"]):
        assert re.search(rf'<td class="n">{head}</td><td class="n">{re.escape(_num(r2))}</td>', page)
    assert fetched(page) == []


def _num(value) -> str:
    from theorycraft._html import num
    return num(value)


@pytest.fixture
def page_of(request):
    """The report page a browser test renders: one of ``pages``, the tiny real search's, or a
    language-model run's (decoded text, attention patterns per head)."""
    def of(name):
        if name == "searched":
            return report(request.getfixturevalue("searched"))
        if name == "lm":
            return report(request.getfixturevalue("lm_run"))
        return request.getfixturevalue("pages")[name]
    return of


def fetched(page: str) -> list[str]:
    """Every address the page would load: none may leave it (embedded data and anchors only)."""
    return [a for a in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page) if not a.startswith(("data:", "#"))]


def test_run_report_shows_fidelity_bits_axioms_and_diagnosis(run, pages):
    page = pages["run"].read_text()
    card = json.loads((run / "scorecard.json").read_text())
    axioms = json.loads((run / "axioms.json").read_text())["axioms"]
    diagnosis = json.loads((run / "diagnosis.json").read_text())
    for site, s in card["sites"].items():  # fidelity per site, teacher-forced and free-running
        assert re.search(rf"<td>{site}</td>.*?{s['r2_test']:.4f}.*?{s['r2_test_free']:.4f}", page)
    assert f"{card['size']['bits']:,}" in page and f"{card['size']['bits_params']:,}" in page  # bits, by part
    failed = [a["name"] for a in axioms if not a["passed"]]
    assert failed == ["theory_predicts_the_interference"]  # a linear read-out cannot follow the ReLU's
    assert f"{len(axioms) - 1} of {len(axioms)} axioms hold" in page
    assert re.search(rf"<td>{failed[0]}</td>.*?<span class=\"fail\">FAIL</span>", page)
    assert page.count('<span class="pass">pass</span>') == len(axioms) - 1
    for site, r in diagnosis.items():
        assert f"{site}: the residual is {r['residual_share_of_variance']:.1%}" in page
    assert page.count("data:image/png;base64,") == 3 and fetched(page) == []


def test_search_report_shows_the_trail_scaling_curve_and_the_refitted_run(search_dir, pages):
    page = pages["search"].read_text()
    trail = json.loads((search_dir / "trail.json").read_text())
    for step in trail["trail"]:
        assert f"<td>{step['action']}</td>" in page
    scaling = trail["scaling"]  # printed as a result only when it is one; otherwise the page says why not
    assert scaling and (f"The floor E = {scaling['floor']:.4g}" in page if not scaling["notes"] else
                        "No scaling result" in page and "The floor E" not in page)
    assert "Refitted: fidelity per site" in page and "Refitted: axioms" in page
    assert page.count("data:image/png;base64,") == 4 and fetched(page) == []  # trail + the run's three


def test_bench_report_shows_the_panels_table_and_validity(pages, bench_dir):
    page = pages["bench"].read_text()
    results = json.loads((bench_dir / "results.json").read_text())
    for row in results["rows"]:
        assert html.escape(row["theory"]) in page
    for target in {row["target"] for row in results["rows"]}:
        assert f"<h3>{target}</h3>" in page
    assert ("Validity holds" in page) == (not results["validity"])
    assert page.count("data:image/png;base64,") == 3 and fetched(page) == []  # Pareto, counterfactual, sites


def test_a_run_only_fitted_says_which_commands_add_the_rest(run, tmp_path):
    from theorycraft.scoring import SizeScore

    fitted_only = tmp_path / "run"
    shutil.copytree(run, fitted_only, ignore=shutil.ignore_patterns("axioms.json", "diagnosis.json", "report.html"))
    card = Scorecard.load(run)
    card.replace(size=SizeScore(card.size.params), mdl=None, splice={}, counterfactual=None).save(fitted_only)
    page = report(fitted_only).read_text()
    assert "Bits are not measured yet" in page and "theorycraft score RUN_DIR" in page
    assert "No axioms.json" in page and "No diagnosis.json" in page
    assert page.count("data:image/png;base64,") == 1 and fetched(page) == []  # fidelity per site only


def test_report_errors_name_the_file_and_exit_1(run, tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "nothing to report; expected a run directory (scorecard.json" in capsys.readouterr().err
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    (broken / "scorecard.json").write_text((broken / "scorecard.json").read_text().replace("0", "1", 1))
    assert main(["report", str(broken)]) == 1
    assert "scorecard.json: checksum mismatch" in capsys.readouterr().err
    shutil.copy(run / "scorecard.json", broken / "scorecard.json")
    (broken / "diagnosis.json").write_text("{not json")
    assert main(["report", str(broken)]) == 1
    assert "diagnosis.json: not readable JSON" in capsys.readouterr().err


# --- in a real browser ----------------------------------------------------------------------------

PROBE = """<script>
window.__problems = [];
addEventListener("error", function (e) { var t = e.target;
  __problems.push(t && t.tagName ? "failed to load a " + t.tagName : "error: " + e.message); }, true);
["error", "warn"].forEach(function (level) { var original = console[level];
  console[level] = function () { __problems.push("console." + level + ": " + Array.prototype.join.call(arguments, " "));
                                 original.apply(console, arguments); }; });
addEventListener("load", function () {
  Array.prototype.forEach.call(document.images, function (img) {
    if (!img.complete || img.naturalWidth === 0) __problems.push("image not decoded: " + img.alt); });
  var p = document.createElement("pre"); p.id = "probe";
  p.textContent = JSON.stringify({images: document.images.length, problems: __problems});
  document.body.appendChild(p); });
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("CI is set and chromium is missing: the report must be rendered in a browser here "
                    "(.ci/run installs it with apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium): the report is not rendered in a browser")


@pytest.mark.parametrize("name", ["run", "searched", "bench", "lm"])  # searched: written by a real search
def test_the_page_loads_in_chromium_without_errors_and_is_not_blank(page_of, name, tmp_path):
    from PIL import Image

    browser = chromium()
    page = page_of(name)
    # the page with a probe in front: it records script errors, console errors and images that do not
    # decode, and writes them into the DOM once the page has loaded
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    shot = tmp_path / "page.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                           "--window-size=1200,2000", f"--screenshot={shot}", "--dump-dom", probed.as_uri()],
                          capture_output=True, text=True, timeout=180)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    probe = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert probe, f"the page did not finish loading:\n{done.stderr[-2000:]}"
    seen = json.loads(html.unescape(probe.group(1)))
    assert seen["problems"] == [] and seen["images"] == page.read_text().count("<img ")
    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.shape == (2000, 1200)
    assert (pixels < 200).mean() > 0.02 and pixels.std() > 20  # text, tables and plots, not an empty page


# --- notebook views -------------------------------------------------------------------------------

def test_notebook_views_are_readable_and_tables(run):
    fitted = load_run(run)
    acts = run_activations(fitted, run)
    card = Scorecard.load(run)
    text = repr(card)
    assert text.startswith(f"Scorecard('{card.theory}' on {card.target}") and f"{card.coverage:.4f} teacher-forced" in text
    assert all(re.search(rf"^  {site}\s+R² test {s.r2_test:.4f}", text, re.M) for site, s in card.sites.items())
    assert f"{card.size.bits:,} bits" in text
    text = repr(fitted)
    assert "2 components, 220 params" in text and re.search(r"embed\s+linear\s+x -> h\s+100 params", text)
    text = repr(acts)
    splits = [int(m) for m in re.findall(r"(?:train|validation|test) ([\d,]+)", text.replace(",", ""))]
    assert sum(splits) == acts.n == 1000 and "hook_hidden  [5]" in text
    for obj, cells in ((card, [f"{s.r2_test_free:.4f}" for s in card.sites.values()]), (fitted, ["embed", "readout"]),
                       (acts, ["hook_output", "[20]"])):
        view = obj._repr_html_()
        assert "<table" in view and all(f">{c}<" in view for c in cells)
        assert "<script" not in view and fetched(view) == []


# --- plots ------------------------------------------------------------------------------------

def drawn(monkeypatch):
    """Keep the figures the plot functions would save, to look at their artists."""
    from theorycraft.benchmarks import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    return plots, figures


def shown_ticks(ax) -> list:
    """The x tick labels drawn: labelled, inside the panel's limits."""
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
            if t.get_text() and lo <= t.get_position()[0] <= hi]


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_values_below_the_floor_are_written_and_no_zero_bar_stands_for_a_value(monkeypatch):
    plots, figures = drawn(monkeypatch)
    plots.fidelity_bars({"h": {"teacher-forced": -0.5, "free-running": 0.0}, "out": {"teacher-forced": 0.7}}, Path("x"))
    ax = figures[0].axes[0]
    assert "↓−0.50" in texts(figures[0]) and "≈0" in texts(figures[0])
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_height() == pytest.approx(plots.FLOOR)  # drawn to the floor
    ticks = [line for line in ax.lines if len(line.get_ydata()) == 2 and line.get_linewidth() > 2]
    assert len(ticks) == 1 and list(ticks[0].get_ydata()) == [0.0, 0.0]  # the zero value, drawn
    assert ax.get_ylim()[0] < plots.FLOOR  # room under the floor for what is written there


def test_bench_panels_mark_the_floor_and_keep_labels_readable(monkeypatch, bench_dir):
    from theorycraft.benchmarks.coverage import BenchResult

    rows = BenchResult.from_json(json.loads((bench_dir / "results.json").read_text())).rows
    plots, figures = drawn(monkeypatch)
    plots.pareto_plot(rows, Path("x"))
    below = [r for r in rows if r.coverage < plots.FLOOR]
    assert below and all(f"↓{r.coverage:.2f}".replace("-", "−") in texts(figures[0]) for r in below)
    fig = figures[0]
    fig.canvas.draw()
    frame = fig.bbox
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        labels = shown_ticks(ax)
        assert len(labels) >= 2  # every panel keeps labelled ticks on its log axis
        for t in ax.texts + labels:
            box = t.get_window_extent()
            assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1  # no name runs off the figure
    legend = fig.legends[0].get_window_extent()
    assert frame.y0 - 1 <= legend.y0 and legend.x1 <= frame.x1 + 1  # the legend is inside the figure


@pytest.mark.parametrize("bits", [(2000, 6000), (2000, 60000)])
def test_log_ticks_are_labelled_and_do_not_run_into_each_other(monkeypatch, bits):
    from types import SimpleNamespace

    plots, figures = drawn(monkeypatch)
    rows = [SimpleNamespace(target="t", reference="r", theory=name, family=family, bits=b, coverage=cov)
            for name, family, b, cov in (("r", "reference", bits[0] * 1.5, 0.9), ("m", "mean", bits[0], 0.0),
                                         ("p", "probe", bits[1], 0.5))]
    plots.pareto_plot(rows, Path("x"))
    fig = figures[0]
    fig.canvas.draw()
    boxes = sorted((t.get_window_extent() for t in shown_ticks(fig.axes[0])), key=lambda b: b.x0)
    assert len(boxes) >= 2  # less than a decade, or one and a half: still read off the axis
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))  # (matplotlib's own labels overlap at 1.5)
