"""``theorycraft report DIR``: one self-contained HTML page of what a directory holds.

- a run (``infer``, ``score``, ``check``, ``diagnose``): fidelity per site, teacher-forced and
  free-running; bits by part; the axioms with pass/fail; the residual's directions;
- a search (``search``): the trail and its scaling curve, then the found theory's run;
- a benchmark (``bench``): the Pareto, counterfactual and per-site panels, the table, validity.

Plots are drawn from the directory's JSON by ``theorycraft.benchmarks.plots`` (and the search's
``plot_trail``) and embedded as base64 PNG: the page has no scripts and fetches nothing."""

from __future__ import annotations

import json
from pathlib import Path

from theorycraft import _artifact
from theorycraft.files import read_bytes, read_json, write_atomically
from theorycraft._html import (Raw, big, code, details, esc, figure, fixed, note, num, page, pre, section, table,
                               verdict)
from theorycraft.errors import ArtifactError

REPORT = "report.html"
WHAT = ("expected a run directory (scorecard.json, from theorycraft infer), a search directory (trail.json, from "
        "theorycraft search) or a benchmark directory (results.json, from theorycraft bench)")


def kind_of_directory(directory) -> str:
    """'run', 'search' or 'bench', from the files the directory holds."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such directory; {WHAT}")
    for name, kind in (("results.json", "bench"), ("trail.json", "search"), ("scorecard.json", "run")):
        if (directory / name).is_file():
            return kind
    raise ArtifactError(f"{directory}: nothing to report; {WHAT}")


def report_html(directory) -> str:
    """The page for ``directory`` (a run, search or bench directory), as one HTML string."""
    directory = Path(directory)
    pages = {"run": _run_page, "search": _search_page, "bench": _bench_page}
    title, sections = pages[kind_of_directory(directory)](directory)
    from theorycraft import __version__

    return page(title, f"{code(directory)} · theorycraft {esc(__version__)}", sections)


def report(directory, out=None) -> Path:
    """Write one self-contained HTML page of a run, search or bench directory, atomically.

    Parameters
    ----------
    directory : str or Path
        A run (``infer``), search (``search``) or bench (``bench``) directory.
    out : str or Path, optional
        Where to write the page; default ``DIRECTORY/report.html``.

    Returns
    -------
    Path
        The page written.
    """
    page = report_html(directory)
    out = Path(out) if out else Path(directory) / REPORT
    try:
        write_atomically(out, page)
    except OSError as exc:
        raise ArtifactError(f"{out}: cannot write the report ({exc.strerror}); choose another --out (library: out)") from None
    return out


# --- pieces ---------------------------------------------------------------------------------

def _json(path: Path, fix: str):
    try:
        return read_json(path, follow=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc}); {fix}") from None


def _checked_text(directory: Path, name: str) -> str:
    """A text file of a directory theorycraft wrote: checked against its checksum where one was
    recorded, never read through a link or from a FIFO."""
    if name in _artifact._recorded(directory):
        _artifact.verify(directory, [name])
    try:
        return read_bytes(directory / name, follow=False).decode("utf-8")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{directory / name}: not readable ({exc})") from None


def _parsed(path: Path, cls, what: str, fix: str):
    """``cls.from_json`` of a JSON file; a file that is JSON but not ``what`` is said as such."""
    try:
        return cls.from_json(_json(path, fix))
    except (ValueError, KeyError, TypeError, ArtifactError) as exc:
        raise ArtifactError(f"{path}: not {what} ({exc}); {fix}") from None


# --- a run ------------------------------------------------------------------------------------

def _run_page(directory: Path):
    from theorycraft.scoring import Scorecard

    card = Scorecard.load(directory)
    return f"{card.theory}: a fitted theory", _run_sections(directory, card)


def _run_sections(directory: Path, card, prefix: str = "") -> list:
    from theorycraft.benchmarks.plots import fidelity_bars
    from theorycraft.scoring import scorecard_html

    from theorycraft.scoring import interval_text

    axioms = _axioms(directory)
    overview = [("test coverage, teacher-forced" + interval_text(card.coverage_interval), num(card.coverage)),
                ("test coverage, free-running" + interval_text(card.coverage_free_interval), num(card.coverage_free))]
    if card.unexplained and card.coverage_given is not None:
        overview.append((f"coverage given {', '.join(card.unexplained)} (teacher-forced / free)",
                         f"{num(card.coverage_given)} / {num(card.coverage_free_given)}"))
    worst = card.worst_site(free=True)
    if worst is not None and len(card.sites) > 1:
        overview.append(("worst site (free-running R²)" + (", worse than its mean" if worst[1] < 0 else ""),
                         f"{worst[0]}: {num(worst[1])}"))
    overview.append(("parameters", num(card.size.params)))
    if card.size.bits is not None:
        overview.append(("bits", num(card.size.bits)))
    if card.mdl is not None:
        overview.append(("MDL compression", num(card.mdl.compression, 3)))
    if axioms:
        overview.append(("axioms that hold", f"{sum(a['passed'] for a in axioms['axioms'])} of {len(axioms['axioms'])}"))
    unfinished = card.fit.get("converged") is False  # absent: a scorecard from before fits said
    if "converged" in card.fit:
        overview.append(("fit converged", "no" if unfinished else "yes"))
    sites = {s: {"teacher-forced": v.r2_test, "free-running": v.r2_test_free} for s, v in card.sites.items()}
    fidelity = figure(lambda p: fidelity_bars(sites, p, f"{card.theory}: test R² per site"),
                       "test R² per site, teacher-forced and free-running",
                       "Teacher-forced: each recorded site a component reads is the network's own; free-running: "
                       "the theory's own prediction of it, from the input (and its declared inputs) alone.")
    warning = [note(esc(f"The fit did not converge, so these figures may measure its step budget rather than "
                         f"the theory: {card.fit.get('convergence', '')}"))] if unfinished else []
    sections = [section(f"{prefix}fidelity", "Fidelity per site", big(*overview), *warning, fidelity,
                         scorecard_html(card)),
                section(f"{prefix}bits", "Bits", _bits(card)),
                section(f"{prefix}axioms", "Axioms", _axioms_html(axioms, directory, card)),
                section(f"{prefix}diagnosis", "Diagnosis: where the residual lies", _diagnosis(directory))]
    theory = directory / "theory.yaml"
    if theory.is_file():
        _artifact.verify(directory, [theory.name])
        fit = details("how it was fitted (the engine's record)", pre(json.dumps(card.fit, indent=1)))
        sections.append(section(f"{prefix}theory", "Theory", pre(theory.read_text()), fit))
    return sections


def _bits(card) -> str:
    from theorycraft.benchmarks.plots import bits_bars

    size, mdl = card.size, card.mdl
    if size.bits is None:
        return note(f"Bits are not measured yet: run {code('theorycraft score RUN_DIR')} to add size, MDL and "
                     f"splice fidelity to the scorecard.")
    parts = {"spec (compressed text)": size.bits_spec, "parameters (quantized)": size.bits_params,
             "latent codes (test examples)": size.bits_latents, "declared inputs": size.bits_inputs}
    parts = {k: v or 0 for k, v in parts.items()}
    figures = [figure(lambda p: bits_bars(parts, p, f"the theory: {size.bits:,} bits"), "bits of the theory by part")]
    if mdl is not None:
        code_parts = {"theory": mdl.bits_theory, "residual given the theory": mdl.bits_residual,
                      "theory + residual": mdl.bits_total, "mean only + residual (baseline)": mdl.bits_baseline}
        figures.append(figure(lambda p: bits_bars(code_parts, p, f"the test activations ({mdl.n_examples} examples)"
                                                   f": compression {mdl.compression:.3f}"),
                               "two-part code of the test activations against the mean-only baseline"))
    return '<div class="figs">' + "".join(figures) + "</div>"


def _axioms(directory: Path) -> dict | None:
    path = directory / "axioms.json"
    if not path.is_file():
        return None
    if path.name in _artifact._recorded(directory):
        _artifact.verify(directory, [path.name])
    data = _json(path, "run theorycraft check THEORY.yaml --run RUN_DIR again")
    if not isinstance(data, dict) or not isinstance(data.get("axioms"), list):
        raise ArtifactError(f"{path}: expected {{\"axioms\": [...]}} as theorycraft check writes it")
    return data


def _axioms_html(data: dict | None, directory: Path, card) -> str:
    if data is None:
        return note(f"No axioms.json: {code(f'theorycraft check THEORY.yaml --run {directory}')} checks the "
                     f"theory's axioms on the network and on the theory under the same interventions.")
    rows = data["axioms"]
    if not rows:
        return note("The theory states no axioms.")
    failed = [r["name"] for r in rows if not r["passed"]]
    head = (f"<p>{len(rows) - len(failed)} of {len(rows)} axioms hold on {rows[0].get('n', '?')} held-out examples"
            + (f"; failed: {esc(', '.join(failed))}" if failed else "") + ".</p>")
    from theorycraft.scoring import AXIOM_COLUMNS as COLUMNS

    return head + table(["axiom", "claim", "measure", "network effect", "95% interval", "theory's predicted effect",
                         "judged", "bound", "result"],
                        [[r["name"], r["claim"], r["measure"], r["network"], f"[{num(r['low'])}, {num(r['high'])}]",
                          r["theory"], r["judged"], r["threshold"], verdict(r["passed"])] for r in rows],
                        "; ".join(f"{name}: {meaning}" for name, meaning in COLUMNS))


def _diagnosis(directory: Path) -> str:
    path = directory / "diagnosis.json"
    if not path.is_file():
        return note(f"No diagnosis.json: {code(f'theorycraft diagnose {directory}')} finds the residual's top "
                     f"directions, what they correlate with, and the worst examples.")
    found = _json(path, f"run theorycraft diagnose {directory} again")
    parts = ["<p>On validation examples (what it points at steers the next theory, a choice).</p>"]
    try:
        for site, r in found.items():
            parts.append(f"<h3>{esc(site)}: the residual is {r['residual_share_of_variance']:.1%} of the variance</h3>")
            if "heads" in r:  # an attention site: each head's R², and the patterns side by side
                parts.append(table(["head", "R² (validation)"], [[h, v] for h, v in enumerate(r["heads"])]))
                parts += [_patterns(site, w, r["heads"]) for w in r["worst"]]
            else:
                parts.append(table(["direction", "share of the residual", "most correlated with"],
                                   [[k + 1, f"{d['variance_share']:.1%}",
                                     ", ".join(f"{c['name']} ({c['correlation']:+.2f})" for c in d["correlated"])
                                     or "nothing"] for k, d in enumerate(r["directions"])]))
            parts.append(table(["worst example", "squared error", "input"],
                               [[w["example"], w["squared_error"], _example_text(w)] for w in r["worst"]]))
    except (AttributeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: not a diagnosis as theorycraft diagnose writes it (missing {exc}); "
                            f"run theorycraft diagnose {directory} again") from None
    return "\n".join(parts)


def _example_text(example: dict) -> str:
    """A worst example's input: a text model's tokens as the text they decode to, else the numbers."""
    if "tokens" in example:
        return _short_text("".join(example["tokens"]))
    return _short(example["input"])


def _short_text(text: str, limit: int = 120) -> str:
    text = repr(text)[1:-1]  # newlines and tabs visible, on one line
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _patterns(site: str, example: dict, heads: list) -> Raw:
    """One example's attention, per head: the network's pattern above the theory's (query rows,
    key columns), the head's R² over it; the tokens label the axes of a text model's."""
    def draw(path: Path) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        network, theory = example["network"], example["theory"]
        n = len(network)
        labels = example.get("tokens", [])[: len(network[0])]
        fig, axes = plt.subplots(2, n, figsize=(2.2 * n + 0.6, 4.6), squeeze=False)
        for h in range(n):
            for row, (name, pattern) in enumerate((("network", network[h]), ("theory", theory[h]))):
                ax = axes[row][h]
                ax.imshow(pattern, cmap="Blues", vmin=0, vmax=1)
                ax.set_title(f"head {h} {name}" + (f"\nR² {heads[h]:.2f}" if row == 0 else ""), fontsize=8)
                ticks = range(len(labels)) if labels and len(labels) <= 16 else []
                ax.set_xticks(list(ticks), [repr(labels[k])[1:-1] for k in ticks], rotation=90, fontsize=6)
                ax.set_yticks(list(ticks), [repr(labels[k])[1:-1] for k in ticks], fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)

    what = f"example #{example['example']}" + (f": {_short_text(''.join(example['tokens']), 80)}"
                                                if "tokens" in example else "")
    return figure(draw, f"attention patterns of {site}, {what}", f"{site}, {what}: the network's pattern (top) and "
                   f"the theory's (bottom) per head; rows are queries, columns keys")


def _short(value, limit: int = 90) -> str:
    """An example's input on one line: numbers to 3 decimals, cut at ``limit`` characters."""
    def rounded(v):
        return [rounded(x) for x in v] if isinstance(v, list) else round(v, 3) if isinstance(v, float) else v
    text = json.dumps(rounded(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- a search ---------------------------------------------------------------------------------

def _search_page(directory: Path):
    from theorycraft.refine import SearchResult
    from theorycraft.refine import plot_trail

    result = _parsed(directory / "trail.json", SearchResult, "a search trail as theorycraft search writes it",
                     "run the search again")
    final = result.final
    overview = big(("steps", str(len(result.trail) - 1)), ("test coverage (last step)", num(final.report.coverage)),
                    ("theory bits (last step)", num(round(final.report.bits_theory))),
                    ("refitted test coverage", num(result.scorecard.coverage)))
    from theorycraft.refine import given_of

    trail_rows = [[k, s.action, s.params, round(s.selection.bits_theory), round(s.selection.bits_total),
                   s.selection.coverage, round(s.report.bits_total), s.report.coverage, s.report.coverage_free,
                   ", ".join(given_of(s)) or "–", fixed(s.seconds, 1)]
                  for k, s in enumerate(result.trail)]
    trail = table(["step", "action", "params", "theory bits", "validation total", "validation coverage",
                   "test total", "test coverage", "test coverage, free", "given (inputs, at R² 0)", "seconds"],
                  trail_rows, "each accepted step: its code on validation (what chose it) and on test (reported only); "
                  "coverage over every explained site, a site handed in as an input counting as unexplained")
    plot = figure(lambda p: plot_trail(result.trail, result.scaling, p), "the search trail and its scaling curve",
                   "Left: each step's total bits and test coverage. Right: the trail's (theory bits, 1 − validation "
                   "coverage) and the saturating power law L(N) = E + A·N^−α fitted to them.")
    sections = [section("trail", "Search trail", Raw(f"<p>From {code(result.start)}; stopped: {esc(result.stopped)}."
                                                       f"</p>"), overview, plot, trail),
                section("scaling", "Scaling curve", _scaling(result.scaling))]
    if result.reference:
        ref = result.reference
        sections.append(section("reference", "Against the reference theory", table(
            ["theory", "split", "theory bits", "total bits", "coverage"],
            [[name, split, round(t.bits_theory), round(t.bits_total), t.coverage]
             for name, totals in ((ref["theory"], ref), ("found", {"validation": final.selection, "test": final.report}))
             for split, t in (("validation", totals["validation"]), ("test", totals["test"]))])))
    if result.heads_left_to_mean:
        sections.append(section("heads", "Heads left to their mean pattern", table(
            ["site", "head", "closest rule", "rule", "cosine"],
            [[h["site"], h["head"], h["rule_name"], h["rule"], h["cosine"]] for h in result.heads_left_to_mean])))
    found = found_variables(final.theory)
    if found:
        sections.append(section("variables", "Variables found", table(
            ["variable", "what it computes"], [[name, code(text)] for name, text in found.items()])))
    if (directory / "theory.yaml").exists():
        sections.append(section("found", "Found theory", pre(_checked_text(directory, "theory.yaml"))))
    fitted = directory / "fitted"
    if (fitted / "scorecard.json").is_file():
        from theorycraft.scoring import Scorecard
        sections += [(a, f"Refitted: {t.lower()}", h) for a, t, h in _run_sections(fitted, Scorecard.load(fitted), "fitted-")
                     if a != "fitted-theory"]
    return f"{result.scorecard.theory}: found by search", sections


def found_variables(theory_yaml: str) -> dict[str, str]:
    """A found theory's variables as expressions (name -> text), as its trail step wrote them."""
    import yaml

    data = yaml.safe_load(theory_yaml)
    variables = data.get("variables") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in variables.items()} if isinstance(variables, dict) else {}


def _scaling(scaling) -> str:
    if not scaling:
        return note("Fewer than three trail points with theory bits: no curve was fitted.")
    if scaling.get("notes"):
        return note("No scaling result: the curve fitted to the trail is not one, because it "
                     + esc("; and it ".join(scaling["notes"])) + ". The plot shows it dotted, for reference only.")
    need = scaling.get("bits_for_target")
    return (f"<p>L(N) = {num(scaling['floor'], 4)} + {scaling['scale']:.4g}·N<sup>−{scaling['exponent']:.3f}</sup> "
            f"(fitted on validation). The floor E = {scaling['floor']:.4g} is the loss this vocabulary cannot pass; "
            f"coverage {scaling['target_coverage']} needs "
            + (f"about {need:,.0f} bits.</p>" if need else "more than this vocabulary can reach.</p>"))


# --- a benchmark ------------------------------------------------------------------------------

def _bench_page(directory: Path):
    from theorycraft.benchmarks import plots
    from theorycraft.benchmarks.coverage import BenchResult, coverage_text, seeds_label, splice_text, spread, worst_text

    result = _parsed(directory / "results.json", BenchResult, "benchmark results as theorycraft bench writes them",
                     "run theorycraft bench again")
    rows = result.rows
    validity = ('<p class="pass">Validity holds: every reference theory of a known mechanism is on its Pareto '
                'frontier and beats every baseline that spends as many bits or more.</p>' if not result.validity else
                '<p class="fail">Validity fails:</p><ul>' + "".join(f"<li>{esc(v)}</li>" for v in result.validity)
                + "</ul>")
    skipped = "".join(f"<p class=\"note\">skipped {esc(t)}: {esc(why)}</p>" for t, why in result.skipped.items())
    about = (f"<p>{'Quick' if result.quick else 'Full'} run: {len(rows)} theories in {result.seconds:,.0f} s on "
             f"{esc(result.machine)}.</p>")
    panels = [figure(lambda p: plots.pareto_plot(rows, p), "coverage against bits, one panel per target",
                      "Test coverage against size in bits (log scale), with each reference's Pareto frontier."),
              figure(lambda p: plots.counterfactual_plot(rows, p), "counterfactual and shifted fidelity",
                      "Top: counterfactual fidelity under the standard interventions (R², or the KL of outputs where no "
                      "intervention moves another site). Bottom: coverage on the target's named shift."),
              figure(lambda p: plots.site_bars(rows, p), "test R² per site", "Test R² per site, every theory.")]
    tables = []
    for target in dict.fromkeys(r.target for r in rows):
        body = []
        for r in sorted((r for r in rows if r.target == target), key=lambda r: (r.reference, r.bits)):
            body.append([Raw(f"<b>{esc(r.theory)}</b>") if r.family == "reference" else r.theory, r.family, r.params,
                         r.bits, coverage_text(r), r.coverage_free, worst_text(r), ", ".join(r.given) or "–",
                         r.coverage_shifted, r.counterfactual.get("r2"), r.counterfactual.get("kl"), r.compression,
                         spread(r.seeds["coverage"]) if r.seeds else "–", spread(r.seeds["compression"]) if r.seeds else "–",
                         splice_text(r), fixed(r.seconds, 1)])
        tables.append(f"<h3>{esc(target)}</h3>" + table(
            ["theory", "family", "params", "bits", "coverage [95%]", "free", "worst site (free R²)", "given",
             "shifted", "counterfactual R²", "counterfactual KL", "compression", f"coverage, {seeds_label(rows)}",
             f"compression, {seeds_label(rows)}", "splice: top-1 / KL / loss recovered", "fit + score s"], body))
    return ("coverage benchmark", [section("summary", "Summary", about, validity, skipped),
                                   section("pareto", "Pareto panels", *panels),
                                   section("table", "Every theory", *tables)])
