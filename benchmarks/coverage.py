"""The coverage benchmark: every bundled target × its reference theories (from ``examples/``) ×
the baselines, fitted and scored alike; written as ``results.json``, ``results.md`` and plots.

    theorycraft bench [--quick] [--out DIR] [--targets NAME ...]
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from theorycraft.errors import TargetError
from theorycraft.inference.engine import FitConfig, fit, site_shapes
from theorycraft.scoring import Scorecard, score, score_shifted
from theorycraft.spec import load_theory

from .baselines import Context, baselines
from .suites import SUITES, Suite  # noqa: F401  (the suites, declared there)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


SEEDS = (0, 1, 2)  # fit seeds of the close comparison: the reference and its best rival
QUICK_SEEDS = SEEDS[:2]
# what --quick leaves out (the validity check and every column stay), said in its output
QUICK = ("quick: 2 fit seeds (not 3), about half the Adam steps (steps_quick), 48 MiniLM windows (not 256), 1,024 "
         "addition problems (not 4,096), one SAE and one transcoder "
         "setting per target (not two), no prequential compression; the full benchmark: theorycraft bench")
RIVALS = ("memorisation", "probe", "sae", "transcoder")  # other explanations; mean and random are controls
BENCH_FORMAT = 3  # 3: coverage intervals, free R² per site, declared inputs (optional: format 2 still reads)
READABLE_FORMATS = (2, 3)


@dataclass(frozen=True)
class Row:
    """One theory of the benchmark, fitted (seed 0) and scored. ``seeds`` holds, for the reference
    and the best baseline, the test coverage and compression of each fit seed in SEEDS."""

    target: str
    reference: str  # the reference theory this row belongs to
    theory: str
    family: str  # reference | found | mean | memorisation | probe | sae | transcoder | random
    params: int
    bits: int
    coverage: float  # test
    compression: float
    r2: Mapping[str, float]  # site -> test R²
    coverage_validation: float = 0.0
    splice: Mapping[str, Mapping] = field(default_factory=dict)  # site -> SpliceScore fields
    prequential_compression: float | None = None
    seeds: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # "coverage" / "compression" -> per seed
    seconds: float = 0.0
    coverage_free: float | None = None  # test, free-running (from the input and its given inputs alone)
    shift: str | None = None  # the suite's named shift
    coverage_shifted: float | None = None  # teacher-forced, on the shifted capture's test examples new to the fit
    counterfactual: Mapping[str, float | None] = field(default_factory=dict)  # "r2", "kl": under the standard interventions
    coverage_interval: tuple[float, float] | None = None  # 95% bootstrap over test examples
    r2_free: Mapping[str, float] = field(default_factory=dict)  # site -> test R², free-running
    given: tuple[str, ...] = ()  # declared inputs, counted at R² 0 in the coverage
    coverage_given: float | None = None  # test, over the covered sites alone (given its declared inputs)

    @classmethod
    def of(cls, card: Scorecard, target: str, reference: str, family: str, seconds: float) -> "Row":
        shift, shifted = next(iter(card.shifted.items()), (None, None))
        return cls(target, reference, card.theory, family, card.size.params, card.size.bits, card.coverage,
                   card.mdl.compression, {s: v.r2_test for s, v in card.sites.items()}, card.coverage_validation,
                   {s: _plain(dataclasses.asdict(v)) for s, v in card.splice.items()}, card.mdl.prequential_compression,
                   seconds=round(seconds, 1), coverage_free=card.coverage_free, shift=shift,
                   coverage_shifted=shifted.coverage if shifted else None,
                   counterfactual={"r2": card.counterfactual.r2, "kl": card.counterfactual.kl} if card.counterfactual else {},
                   coverage_interval=card.coverage_interval, r2_free={s: v.r2_test_free for s, v in card.sites.items()},
                   given=card.unexplained, coverage_given=card.coverage_given if card.unexplained else None)


def _plain(record: dict) -> dict:
    """A record as its JSON reads back (intervals as lists), so a row equals its reloaded self."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}


@dataclass(frozen=True)
class BenchResult:
    """A benchmark run, as written to ``results.json``; ``validity`` lists where a reference
    theory of a known mechanism is not ranked first (empty: the benchmark holds)."""

    quick: bool
    seconds: float
    machine: str
    rows: tuple[Row, ...]
    skipped: Mapping[str, str]
    validity: tuple[str, ...]
    format: int = BENCH_FORMAT

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "BenchResult":
        if data.get("format") not in READABLE_FORMATS:
            raise ValueError(f"expected benchmark results format {' or '.join(map(str, READABLE_FORMATS))}, found "
                             f"{data.get('format', 1)}")
        rows = tuple(Row(**{**r, "seeds": {k: tuple(v) for k, v in r["seeds"].items()}, "given": tuple(r.get("given", ())),
                            "coverage_interval": tuple(r["coverage_interval"]) if r.get("coverage_interval") else None})
                     for r in data["rows"])
        return cls(data["quick"], data["seconds"], data["machine"], rows, data["skipped"], tuple(data["validity"]))


def _shuffled(fitted, seed: int = 0):
    """The fitted theory with each parameter tensor's values permuted: same size, no structure."""
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: rng.permutation(np.asarray(a).reshape(-1)).reshape(np.shape(a)),
                                    fitted.params)
    return fitted.replace(params=params)


def run_suite(suite: Suite, quick: bool, cache_dir=None, log: Callable[[str], None] = print,
              done: Callable[[str], None] = lambda reference: None, progress: bool = False) -> list[Row]:
    """Every reference theory of ``suite`` and its baselines, fitted and scored; ``done(name)`` after
    each reference (and its baselines and seeds); ``progress``: the captures' bars."""
    from theorycraft.api import capture, target_of

    references = [load_theory(EXAMPLES / name) for name in suite.references]
    found = [load_theory(EXAMPLES / name) for name in suite.found if (EXAMPLES / name).exists()]
    target = target_of(references[0])
    hooks = sorted({str(site.hook) for theory in references + found for site in theory.sites.values()}
                   | {mlp_input for _, mlp_input in suite.mlp_inputs})
    acts = capture(target, hooks, n=suite.n_quick if quick else suite.n, cache_dir=cache_dir, progress=progress)
    shifted = capture(target, hooks, n=suite.n_shift, cache_dir=cache_dir, progress=progress,
                      shift=suite.shift) if suite.shift else None

    def scored(model, reference, prequential: bool = False):  # score(), and the coverage on the suite's shift
        # every theory of a reference faces the same interventions: those of the reference's sites
        over = {s: reference.sites[s] for s in reference.covered}
        card = score(model, acts, target=target, prequential=prequential, interventions_over=over)
        return card.replace(shifted={suite.shift: score_shifted(model, shifted, acts)}) if shifted else card
    # the benchmark is a judge: it picks the best rival on validation, so its fits never see it
    config = FitConfig(max_steps=suite.steps_quick if quick else suite.steps, batch_size=suite.batch_size,
                       progress=False, refit_on_validation=False)
    rows = []
    for reference in references:
        start = time.time()
        fitted = fit(reference, acts, config)
        card = scored(fitted, reference, prequential=not quick and suite.n is None)
        ref_row = Row.of(card, suite.target, reference.name, "reference", time.time() - start)
        log(f"{suite.name}: {reference.name}: coverage {card.coverage:.4f} (free {card.coverage_free:.4f}, shifted "
            f"{_number(ref_row.coverage_shifted)}), {card.size.bits:,} bits, compression {card.mdl.compression:.3f}")
        shapes = site_shapes(reference, acts.sites)
        ctx = Context(shapes, np.asarray(acts.inputs()), acts.vocab_size)
        fitted_baselines = []  # (row, its theory: None where it was not fitted)
        mlp_inputs = dict(suite.mlp_inputs)
        for baseline in baselines(reference, ctx, suite.sae_quick if quick else suite.sae, mlp_inputs):
            start = time.time()
            model = _shuffled(fitted) if baseline.shuffle else fit(baseline.theory, acts, config)
            card = scored(model, reference)
            if baseline.shuffle:
                card = card.replace(theory=f"{reference.name}.shuffled")
            row = Row.of(card, suite.target, reference.name, baseline.family, time.time() - start)
            fitted_baselines.append((row, None if baseline.shuffle else baseline.theory))
            log(f"{suite.name}: {card.theory}: coverage {card.coverage:.4f} (free {card.coverage_free:.4f}, shifted "
                f"{_number(row.coverage_shifted)}), {card.size.bits:,} bits, compression {card.mdl.compression:.3f}")
        # the close comparison: the reference against the best rival explanation, chosen on validation
        rivals = [(r, t) for r, t in fitted_baselines if r.family in RIVALS]
        best = max(rivals, key=lambda rt: rt[0].coverage_validation)[0] if rivals else None
        seeds = QUICK_SEEDS if quick else SEEDS
        rows.append(dataclasses.replace(ref_row, seeds=_over_seeds(reference, acts, config, ref_row, seeds)))
        for theory in (found if reference is references[0] else []):  # beside the first reference, scored alike
            start = time.time()
            card = scored(fit(theory, acts, config), reference)
            row = Row.of(card, suite.target, reference.name, "found", time.time() - start)
            rows.append(dataclasses.replace(row, seeds=_over_seeds(theory, acts, config, row, seeds)))
            log(f"{suite.name}: {card.theory} (found): coverage {card.coverage:.4f} (free {card.coverage_free:.4f}), "
                f"{card.size.bits:,} bits, compression {card.mdl.compression:.3f}")
        rows += [dataclasses.replace(r, seeds=_over_seeds(t, acts, config, r, seeds)) if r is best else r
                 for r, t in fitted_baselines]
        done(reference.name)
    return rows


def _over_seeds(theory, acts, config: FitConfig, seed0: Row, seeds=SEEDS) -> dict[str, tuple[float, ...]]:
    """Test coverage and compression of the theory fitted with each of ``seeds`` (seed 0 is
    ``seed0``). A fit with no Adam part does not depend on the seed: it is not repeated."""
    coverage, compression = [seed0.coverage], [seed0.compression]
    for seed in seeds[1:]:
        fitted = fit(theory, acts, dataclasses.replace(config, seed=seed))
        if fitted.fit_info["gradient"] is None:
            coverage.append(seed0.coverage)
            compression.append(seed0.compression)
            continue
        card = score(fitted, acts)
        coverage.append(card.coverage)
        compression.append(card.mdl.compression)
    return {"coverage": tuple(coverage), "compression": tuple(compression)}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (as few bits, as much coverage, one strictly)."""
    front = []
    for k, (bits, cov) in enumerate(points):
        dominated = any(b <= bits and c >= cov and (b < bits or c > cov) for j, (b, c) in enumerate(points) if j != k)
        if not dominated:
            front.append(k)
    return front


def validity(rows: Sequence[Row]) -> list[str]:
    """Where a reference theory is not ranked first: off the Pareto frontier of its target, or
    not better than a baseline that spends as many bits or more (by coverage, or where that
    baseline's coverage is higher, by compression: fidelity per bit)."""
    problems = []
    for reference in [r for r in rows if r.family == "reference"]:
        pool = [r for r in rows if r.target == reference.target and r.reference == reference.reference
                and r.family != "found"]  # a found theory is a rival theory, not a baseline
        front = pareto_front([(r.bits, r.coverage) for r in pool])
        if pool.index(reference) not in front:
            problems.append(f"{reference.theory} is not on the Pareto frontier of {reference.target}")
        for other in pool:
            if other is reference or other.bits < reference.bits:
                continue
            if other.coverage >= reference.coverage and other.compression >= reference.compression:
                problems.append(f"{other.theory} ({other.bits:,} bits, coverage {other.coverage:.4f}, compression "
                                f"{other.compression:.3f}) is not beaten by {reference.theory} ({reference.bits:,} "
                                f"bits, coverage {reference.coverage:.4f}, compression {reference.compression:.3f})")
    return problems


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def spread(values) -> str:
    """mean ± half the range, as the benchmark table shows seeds."""
    values = np.asarray(values, float)
    return f"{values.mean():.4f} ± {(values.max() - values.min()) / 2:.4f}"


def seeds_label(rows: Sequence[Row]) -> str:
    """"seeds 0–2": the fit seeds the rows' close comparison ran (fewer in a quick run)."""
    n = max((len(r.seeds["coverage"]) for r in rows if r.seeds), default=len(SEEDS))
    return f"seeds {SEEDS[0]}–{SEEDS[n - 1]}"


def coverage_text(row: Row) -> str:
    """Test coverage with its 95% interval."""
    interval = row.coverage_interval
    return f"{row.coverage:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def worst_text(row: Row) -> str:
    """The row's worst site by free-running test R² (teacher-forced where not recorded), flagged
    when it is predicted worse than its mean."""
    scores = row.r2_free or row.r2
    if len(scores) < 2:
        return "-"
    site, value = min(scores.items(), key=lambda kv: kv[1])
    return f"{site} {value:.3f}" + (" (worse than its mean)" if value < 0 else "")


def given_text(row: Row) -> str:
    """The declared inputs, and the coverage of the covered sites given them."""
    if not row.given:
        return "-"
    return ", ".join(row.given) + (f" (given them: {row.coverage_given:.4f})" if row.coverage_given is not None else "")


def splice_text(row: Row) -> str:
    """Per spliced site: top-1 agreement / KL / loss recovered (the last flagged when mean ablation
    barely moves the loss)."""
    from theorycraft.scoring import SpliceScore

    parts = []
    for site, fields in row.splice.items():
        s = SpliceScore(**{k: v for k, v in fields.items() if k in SpliceScore.__dataclass_fields__})
        figures = [_short(s.top1_agreement), _short(s.kl), _short(s.loss_recovered) + (" (small gap)" if s.small_gap else "")]
        parts.append((f"{site}: " if len(row.splice) > 1 else "") + " / ".join(figures))
    return "; ".join(parts) or "-"


def _short(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown(rows: Sequence[Row], quick: bool = False) -> str:
    lines = [QUICK, ""] if quick else []
    over_seeds = seeds_label(rows)
    for target in dict.fromkeys(r.target for r in rows):
        shift = next((r.shift for r in rows if r.target == target and r.shift), None)
        about = (f"*shifted*: test coverage on `--shift {shift}`, over the shifted capture's test examples new to "
                 f"the fit" if shift else "*shifted*: no named shift")
        about += ("; *counterfactual*: under resampling and interchange of each of the reference's sites, R² of the "
                  "theory's free-running predictions of the other sites each moves, and KL of outputs with its last "
                  "site spliced in (docs/scores.md); *coverage*: over every site the theory names, a declared input "
                  "(*given*, with the coverage of the other sites given it) counting at R² 0, with its 95% bootstrap interval over test examples; *worst site*: the "
                  "lowest free-running test R²; *splice*: per site, top-1 agreement, KL and loss recovered, \"small gap\" "
                  "where mean ablation raises the loss by under a quarter of the clean loss")
        lines += [f"### {target}", "", about, "",
                  "| theory | family | params | bits | coverage [95%] | free | worst site (free R²) | given | shifted | "
                  "counterfactual R² | counterfactual KL | "
                  f"compression | coverage, {over_seeds} | compression, {over_seeds} | "
                  "splice: top-1 / KL / loss recovered | fit+score s |",
                  "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
        for r in sorted((r for r in rows if r.target == target), key=lambda r: (r.reference, r.bits)):
            name = f"**{r.theory}**" if r.family == "reference" else r.theory
            seeds = (f"{spread(r.seeds['coverage'])} | {spread(r.seeds['compression'])}" if r.seeds else "- | -")
            free = "-" if r.coverage_free is None else f"{r.coverage_free:.4f}"
            lines.append(f"| {name} | {r.family} | {r.params:,} | {r.bits:,} | {coverage_text(r)} | {free} | "
                         f"{worst_text(r)} | {given_text(r)} | "
                         f"{_number(r.coverage_shifted)} | {_number(r.counterfactual.get('r2'))} | "
                         f"{_number(r.counterfactual.get('kl'))} | {r.compression:.3f} | {seeds} | {splice_text(r)} | "
                         f"{r.seconds:.1f} |")
        lines.append("")
    return "\n".join(lines)


def run_bench(quick: bool = False, out="bench", targets: Sequence[str] | None = None, cache_dir=None,
              log: Callable[[str], None] = print, progress: bool = False) -> BenchResult:
    """Run the benchmark's suites (all, or those of ``targets``) into ``out``; ``progress``: a bar
    on stderr over the reference theories (each with its baselines), with its ETA, and the
    captures' bars; ``log`` lines are written above it."""
    from theorycraft._progress import above, bar as progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    rows: list[Row] = []
    skipped = {}
    known = {suite.target for suite in SUITES if suite.mechanism_known}
    suites = [s for s in SUITES if not targets or s.name in targets or s.target in targets]
    bar = progress_bar(sum(len(s.references) for s in suites), desc="bench", unit="reference", shown=progress)
    log = above(bar, log)
    if quick:
        log(QUICK)

    def done(reference: str) -> None:
        bar.set_postfix_str(f"last {reference}", refresh=False)
        bar.update(1)

    for suite in suites:
        bar.set_description(f"bench {suite.name}")
        for name in suite.found:
            if not (EXAMPLES / name).exists():
                skipped[f"{suite.target} examples/{name}"] = ("no found theory: run theorycraft search and save the "
                                                              f"theory it finds as examples/{name}")
                log(f"{suite.name}: examples/{name} skipped (not there: no found theory to score)")
        try:
            rows += run_suite(suite, quick, cache_dir, log, done=done, progress=progress)
        except TargetError as exc:  # e.g. hf:minilm without its extra
            skipped[suite.target] = str(exc)
            log(f"{suite.name}: skipped ({exc})")
            bar.update(len(suite.references))
    bar.close()
    result = BenchResult(quick, round(time.time() - start, 1), _machine(), tuple(rows), skipped,
                         tuple(validity([r for r in rows if r.target in known])))
    (out / "results.json").write_text(json.dumps(result.to_json(), indent=1) + "\n")
    (out / "results.md").write_text(markdown(rows, quick))
    from .plots import counterfactual_plot, pareto_plot, site_bars
    pareto_plot(rows, out / "pareto.png")
    site_bars(rows, out / "sites.png")
    counterfactual_plot(rows, out / "counterfactual.png")
    return result


def _machine() -> str:
    import os
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
