"""The ``theorycraft`` command. Exit codes: 0 ok, 1 invalid input, 2 usage error (a bad flag or
argument), 3 internal error (a bug in theorycraft: reported without a traceback unless
THEORYCRAFT_DEBUG=1), 130 interrupted."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from typing import Callable, Sequence

from theorycraft import __version__
from theorycraft import configs
from theorycraft._arguments import flag, include_path_flag, part_flag, site_flag
from theorycraft.configs import CaptureConfig, FitConfig, ScoreConfig, SearchConfig, add_flags, from_args
from theorycraft.errors import USER_ERRORS, ArgumentError
from theorycraft.spec import TheoryError, check_theory, json_schema, load_theory, outline, schemes_text

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
DEBUG_ENV = "THEORYCRAFT_DEBUG"
TRUST_HELP = "allow torch: targets and 'kind: module:attr' components to run their Python"


def _validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        theory, diagnostics = check_theory(path, trust_code=args.trust_code, include_paths=args.include_path)
        for d in diagnostics:
            print(d, file=sys.stderr)
        if theory is None:
            status = EXIT_INVALID
            errors = sum(d.severity == "error" for d in diagnostics)
            print(f"{path}: invalid ({errors} error{'s' * (errors != 1)})")
        else:
            print(f"{path}: ok (theory '{theory.name}', {len(theory.components)} components)")
    return status


def _explain(args: argparse.Namespace) -> int:
    theory, diagnostics = check_theory(args.file, trust_code=args.trust_code, include_paths=args.include_path)
    for d in diagnostics:
        print(d, file=sys.stderr)
    if theory is None:
        return EXIT_INVALID
    print(outline(theory))
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def _sites(args: argparse.Namespace) -> int:
    from theorycraft.api import target_of

    target = target_of(args.target, trust_code=args.trust_code)
    hooks = target.hooks()
    width = max(map(len, hooks), default=0)
    for name, shape in hooks.items():
        print(f"{name:<{width}}  {list(shape)}")
    return EXIT_OK


def _shifts(args: argparse.Namespace) -> int:
    from theorycraft.api import target_of

    target = target_of(args.target, trust_code=args.trust_code)
    shifts = target.shifts()
    if not shifts:
        print(f"{target.name} has no named shifts; {target.shift_hint}")
    width = max(map(len, shifts), default=0)
    for name, description in shifts.items():
        print(f"{name:<{width}}  {description}")
    return EXIT_OK


def _capture(args: argparse.Namespace) -> int:
    from theorycraft.api import capture
    from theorycraft.store import ActivationSet

    acts = capture(args.source, sites=args.sites, config=from_args(CaptureConfig, args), texts=_texts(args),
                   cache_dir=args.cache, trust_code=args.trust_code, include_paths=args.include_path, part=args.part,
                   log=_say)
    if not isinstance(acts, ActivationSet):  # a partial store (--part; a finished capture is returned whole)
        print(f"captured part {args.part[0]} of {args.part[1]} in {acts}; the same capture without --part (or "
              f"infer) merges the parts and records what they lack")
        return EXIT_OK
    print(f"captured {acts.n} examples of {len(acts.sites)} sites ({acts.manifest['dtype']}) in {acts.directory} "
          f"(key {acts.key})")
    for site, shape in acts.sites.items():
        print(f"  {site}  {list(shape)}")
    return EXIT_OK


def _infer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from theorycraft.api import infer
    from theorycraft.inference import _distributed
    from theorycraft.spec import load_theory

    cluster = _distributed.cluster_from_environment()  # a task of a cluster job: join it before JAX starts
    if cluster is not None:
        _distributed.initialize(cluster)
    leader = cluster is None or cluster.process_id == 0
    theory = load_theory(args.theory, trust_code=args.trust_code, include_paths=args.include_path)
    out = Path(args.out or Path("runs") / theory.name)
    lines: list[str] = []

    def log(message: str) -> None:
        lines.append(message)
        print(message, file=sys.stderr)

    _, card = infer(theory, config=from_args(FitConfig, args, progress=leader), out_dir=out, cache_dir=args.cache,
                    trust_code=args.trust_code, log=log if leader else (lambda m: None),
                    processes=args.processes or (cluster.num_processes if cluster else 1), **_data(args))
    if not leader:  # process 0 reports and writes
        return EXIT_OK
    (out / "log.txt").write_text("\n".join(lines) + "\n")
    print(scorecard_table(card))
    print(f"artifact: {out}")
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    from theorycraft.api import score_run

    card = score_run(args.run_dir, config=from_args(ScoreConfig, args), trust_code=args.trust_code,
                     cache_dir=args.cache, acts=args.capture, texts=_texts(args))
    print(scorecard_table(card))
    print(f"scorecard: {args.run_dir}/scorecard.json")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from theorycraft.api import check

    given = {dest: getattr(args, dest) for dest in configs.given(args, ("n", "data_seed", "seq_len", "seed",
                                                                         "max_memory"))}
    results = check(args.theory, run_dir=args.run_dir, limit=args.limit, cache_dir=args.cache,
                    trust_code=args.trust_code, log=lambda m: print(m, file=sys.stderr),
                    include_paths=args.include_path, **given)
    print(axioms_table(results))
    failed = [r.name for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} axioms hold on {results[0].n} held-out examples"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_INVALID if failed else EXIT_OK


def axioms_table(results) -> str:
    """Axiom results as the terminal shows them: the network's effect with its 95% interval, the
    theory's predicted effect, and the judged quantity against its bound."""
    rows = [f"{'axiom':<40} {'measure':<18} {'network [95% interval]':>28} {'theory':>10}  {'judged':>10}  result"]
    for r in results:
        theory = "-" if r.theory is None else f"{r.theory:.4g}"
        rows.append(f"{r.name:<40} {r.measure:<18} {f'{r.network:.4g} [{r.low:.4g}, {r.high:.4g}]':>28} {theory:>10}  "
                    f"{r.judged:>10.4g}  {'pass' if r.passed else 'FAIL'}")
        rows.append(f"    {r.claim}")
    return "\n".join(rows)


def _bench(args: argparse.Namespace) -> int:
    from theorycraft.benchmarks.coverage import run_bench

    result = run_bench(quick=args.quick, out=args.out, targets=args.targets, cache_dir=args.cache,
                       log=lambda m: print(m, file=sys.stderr), progress=not args.no_progress)
    from pathlib import Path
    print((Path(args.out) / "results.md").read_text())
    for problem in result.validity:
        print(f"validity: {problem}")
    print(f"{len(result.rows)} theories in {result.seconds:.0f}s; results, table and plots in {args.out}/")
    if result.validity:  # a reference theory not ranked first: the benchmark does not hold
        print(f"error: the benchmark's validity check failed ({len(result.validity)} problems)", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from theorycraft._report import report

    print(f"report: {report(args.directory, args.out)}")
    return EXIT_OK


def _diagnose(args: argparse.Namespace) -> int:
    from pathlib import Path

    from theorycraft.refine import diagnose, render
    from theorycraft.api import load_run, run_activations

    run = Path(args.run_dir)
    fitted = load_run(run, trust_code=args.trust_code)
    vocabulary = None
    if args.vocabulary:
        from theorycraft.refine import load_vocabulary
        vocabulary = load_vocabulary(args.vocabulary, fitted.theory, trust_code=args.trust_code)
    report = diagnose(fitted, run_activations(fitted, run, args.cache, args.capture), top=args.top, worst=args.worst,
                      vocabulary=vocabulary)
    (run / "diagnosis.json").write_text(json.dumps(report, indent=1) + "\n")
    print(render(report))
    print(f"diagnosis: {run}/diagnosis.json")
    return EXIT_OK


def _search(args: argparse.Namespace) -> int:
    from theorycraft.api import search

    result = search(args.start, vocabulary=args.vocabulary, config=from_args(SearchConfig, args),
                    fit=from_args(FitConfig, args), out_dir=args.out, compare=args.compare, cache_dir=args.cache,
                    trust_code=args.trust_code, log=lambda m: print(m, file=sys.stderr),
                    include_paths=args.include_path, progress=not args.no_progress, **_data(args))
    final, out = result.final, result.out
    print(f"found in {len(result.trail) - 1} steps ({result.stopped}), judged on validation: "
          f"{_totals(final.selection)}, {final.params:,} params (start {result.trail[0].selection.bits_total:,.0f} bits)")
    print(f"reported on test: {_totals(final.report)}")
    print(f"refitted on train + validation (as infer fits it): test coverage {result.scorecard.coverage:.4f} over "
          f"{', '.join(result.scorecard.covered)}")
    scaling = result.scaling
    if scaling:
        need, se = scaling["bits_for_target"], scaling.get("errors") or {}
        print(f"scaling curve L(N) = {scaling['floor']:.4g}{_pm(se, 'floor')} + {scaling['scale']:.4g}{_pm(se, 'scale')}"
              f"·N^-({scaling['exponent']:.3f}{_pm(se, 'exponent')}) (validation, {scaling.get('points', '?')} points"
              f"{'' if se else ', errors not estimable'}): coverage {scaling['target_coverage']} needs "
              + (f"~{need:,.0f} bits" if need else "more than this vocabulary can reach (below the floor)"))
        for note in scaling.get("notes", ()):
            print(f"  scaling curve: {note}")
    ref = result.reference
    if ref:
        print(f"compared with {ref['theory']}, same judge: validation {_totals(ref['validation'])}; test "
              f"{_totals(ref['test'])}; {ref['params']:,} params -> found/reference on test: coverage "
              f"{final.report.coverage / ref['test'].coverage:.3f}x, theory bits "
              f"{final.report.bits_theory / ref['test'].bits_theory:.2f}x")
    for h in result.heads_left_to_mean:
        print(f"{h['site']} head {h['head']}: left to its mean pattern, closest rule {h['rule_name']} "
              f"({h['rule']}, cosine {h['cosine']:.2f})")
    print(f"theory: {out}/theory.yaml  trail: {out}/trail.json, {out}/trail.png  fitted: {out}/fitted")
    return EXIT_OK


def _pm(errors: dict, name: str) -> str:
    return f" ± {errors[name]:.2g}" if errors.get(name) is not None else ""


def _totals(t) -> str:
    free = "" if t.coverage_free is None else f" (free-running {t.coverage_free:.4f})"
    return f"coverage {t.coverage:.4f}{free}, theory {t.bits_theory:,.0f} bits, total {t.bits_total:,.0f} bits"


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def scorecard_table(card) -> str:
    """A Scorecard as the terminal shows it."""
    rows = ["R2 teacher-forced (each site a component reads is the recorded one) and free (the theory's own "
            "prediction of it, from the input alone)",
            f"{'site':<16} {'R2 train':>9} {'R2 valid':>9} {'R2 test':>9} {'free test':>10} {'n test':>8}"]
    for site, s in card.sites.items():
        rows.append(f"{site:<16} {s.r2_train:>9.4f} {s.r2_validation:>9.4f} {s.r2_test:>9.4f} {s.r2_test_free:>10.4f} "
                    f"{s.n_test:>8}")
    inputs = f" (given: {', '.join(card.inputs)})" if card.inputs else ""
    rows.append(f"coverage (test, over {', '.join(card.covered)}){inputs}: teacher-forced {card.coverage:.4f}, "
                f"free {card.coverage_free:.4f}   params {card.size.params:,}   fit {card.fit.get('seconds', 0):.1f}s")
    size, mdl = card.size, card.mdl
    if size.bits is not None:
        given = f", inputs {size.bits_inputs:,}" if card.inputs else ""
        rows.append(f"size {size.bits:,} bits (spec {size.bits_spec:,}, params {size.bits_params:,}, "
                    f"latent codes {size.bits_latents:,}{given}; step {size.quantization} x RMS, chosen on validation)")
    if mdl is not None:
        rows.append(f"MDL on {mdl.n_examples} test examples: theory {mdl.bits_theory:,} + residual "
                    f"{mdl.bits_residual:,} = {mdl.bits_total:,} bits vs mean only {mdl.bits_baseline:,}"
                    f"  -> compression {mdl.compression:.3f}")
        if mdl.prequential_bits is not None:
            rows.append(f"prequential code {mdl.prequential_bits:,} bits vs mean only "
                        f"{mdl.prequential_baseline_bits:,} -> compression {mdl.prequential_compression:.3f}")
    if card.counterfactual is not None:
        cf = card.counterfactual
        rows.append(f"counterfactual fidelity on {cf.n} test examples, {len(cf.interventions)} interventions "
                    f"({', '.join(cf.interventions)}): R2 {_number(cf.r2)}  KL of outputs {_number(cf.kl)}")
    for name, s in card.shifted.items():
        rows.append(f"shifted ({name}; {s.n} test examples new to the fit): coverage teacher-forced {s.coverage:.4f}, "
                    f"free {s.coverage_free:.4f}")
    for site, s in card.splice.items():
        rows.append(f"splice {site}: KL {_number(s.kl)}  top-1 agreement {_number(s.top1_agreement)}  "
                    f"loss recovered {_number(s.loss_recovered)}  (clean {s.loss_clean:.4g}, spliced "
                    f"{s.loss_spliced:.4g}, mean-ablated {s.loss_mean_ablated:.4g})")
    return "\n".join(rows)


# Two examples per subcommand, shown under its --help (a new subcommand adds its pair here)
EXAMPLES = {
    "validate": ["theorycraft validate examples/*.yaml", "theorycraft validate examples/modadd_fourier.yaml --include-path examples/parts"],
    "explain": ["theorycraft explain examples/modadd_fourier.yaml", "theorycraft explain examples/induction.yaml"],
    "schema": ["theorycraft schema > theory.schema.json", "theorycraft schema | head -20"],
    "sites": ["theorycraft sites builtin:induction", "theorycraft sites hf:minilm"],
    "shifts": ["theorycraft shifts builtin:induction", "theorycraft shifts builtin:superposition"],
    "capture": ["theorycraft capture examples/induction.yaml --n 2048",
                "theorycraft capture hf:minilm --sites encoder.layer.0.output --n 256 --dtype float16"],
    "infer": ["theorycraft infer examples/modadd_fourier.yaml --out runs/fourier",
              "theorycraft infer examples/induction.yaml --fit joint --max-memory 4G"],
    "score": ["theorycraft score runs/fourier --prequential", "theorycraft score runs/fourier --shift held-out --no-splice"],
    "check": ["theorycraft check examples/induction.yaml", "theorycraft check examples/induction.yaml --run runs/induction"],
    "diagnose": ["theorycraft diagnose runs/fourier",
                 "theorycraft diagnose runs/search-modadd-search/fitted --vocabulary runs/search-modadd-search/vocabulary.yaml"],
    "search": ["theorycraft search examples/search_modadd.yaml --budget-bits 324000",
               "theorycraft search examples/search_induction.yaml --budget-minutes 10 --compare examples/induction.yaml"],
    "bench": ["theorycraft bench --quick --out bench", "theorycraft bench --targets modadd-p113 induction"],
    "report": ["theorycraft report runs/fourier", "theorycraft report docs/bench-quick --out bench.html"],
    "cache": ["theorycraft cache ls", "theorycraft cache verify && theorycraft cache rm 6fc0c95b"],
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless it says it already or has none worth saying);
    the epilog (the examples) keeps its lines."""

    def _format_action(self, action: argparse.Action) -> str:
        default = action.default
        unsaid = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if action.option_strings and not unsaid and "default" not in (action.help or ""):
            action = copy.copy(action)
            action.help = f"{action.help or ''} (default: %(default)s)".lstrip()
        return super()._format_action(action)


def _examples(name: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES.get(name, ()))


def _check_theory_files(args: argparse.Namespace) -> None:
    """Validate the command's theory files before the command imports torch and jax: a bad theory is
    reported as quickly as `theorycraft validate` reports it."""
    for dest in args.theory_files:
        path = getattr(args, dest, None)
        if isinstance(path, str) and path.endswith((".yaml", ".yml")):
            load_theory(path, trust_code=args.trust_code, include_paths=getattr(args, "include_path", ()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="theorycraft", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable, help: str, theory_files: Sequence[str] = ()) -> argparse.ArgumentParser:
        """A subcommand; ``theory_files`` names the arguments that are theory files, validated first."""
        sub = commands.add_parser(name, help=help, description=help, epilog=_examples(name),
                                  formatter_class=_HelpFormatter)
        sub.set_defaults(run=run, parser=sub, theory_files=tuple(theory_files))
        return sub

    val = command("validate", _validate, "check theory files; report every problem as file:line:col")
    val.add_argument("files", nargs="+", metavar="FILE")
    val.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _include_path(val)
    exp = command("explain", _explain, "outline a theory: what reads what, what predicts what")
    exp.add_argument("file", metavar="FILE")
    exp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _include_path(exp)
    command("schema", _schema, "print the JSON Schema of the theory language")

    sites = command("sites", _sites, "list a target's sites (hook points) with their per-example shapes")
    sites.add_argument("target", metavar="TARGET", help=schemes_text())
    sites.add_argument("--trust-code", action="store_true", help=TRUST_HELP)

    shf = command("shifts", _shifts, "list a target's named shifts (off-distribution data for --shift)")
    shf.add_argument("target", metavar="TARGET", help="builtin:NAME (other targets have none)")
    shf.add_argument("--trust-code", action="store_true", help=TRUST_HELP)

    cap = command("capture", _capture, "record a theory's (or a target's) sites into the activation store",
                  ["source"])
    cap.add_argument("source", metavar="THEORY_OR_TARGET", help="a theory .yaml, or a target like builtin:induction")
    cap.add_argument("--sites", nargs="+", type=site_flag, metavar="SITE",
                     help="hook points to record (default: the theory's; a target needs them)")
    add_flags(cap, CaptureConfig, "n", "data_seed", "dtype", "seq_len", "batch_size", "shift",
              aliases={"data_seed": ("--seed",)})
    _data_flags(cap)
    cap.add_argument("--part", type=part_flag, metavar="K/N", help="record only shards K, K+N, K+2N, ... (K from 0) "
                     "into a partial store; run parts 0/N to N-1/N anywhere on the same cache, then the capture "
                     "without --part merges them")
    _common(cap)

    inf = command("infer", _infer, "fit a theory to its target's activations; write an artifact directory",
                  ["theory"])
    inf.add_argument("theory", metavar="THEORY.yaml")
    inf.add_argument("--out", metavar="DIR", help="artifact directory (default: runs/THEORY_NAME)")
    add_flags(inf, FitConfig, "seed", "max_steps", "learning_rate", "batch_size", "fit_mode", "max_memory",
              "model_shards")
    add_flags(inf, CaptureConfig, "n", "data_seed", "dtype", "seq_len")
    _data_flags(inf, named=True)
    inf.add_argument("--processes", type=flag("processes"), default=None, metavar="N", help="fit on N processes "
                     "(jax.distributed), each reading its own shards: started here, or, where THEORYCRAFT_COORDINATOR, "
                     "THEORYCRAFT_NUM_PROCESSES and THEORYCRAFT_PROCESS_ID are set (a cluster job), joined")
    _common(inf)

    sc = command("score", _score, "score a fitted theory: bits, MDL compression, splice fidelity (into scorecard.json)")
    sc.add_argument("run_dir", metavar="RUN_DIR", help="an artifact directory written by theorycraft infer")
    add_flags(sc, ScoreConfig, "prequential", "splice", "limit", "shift", "n", "data_seed", "dtype", "max_memory")
    _data_flags(sc, named=True, shifted=True)
    sc.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _cache_flag(sc)

    chk = command("check", _check, "check a theory's axioms: intervene on the network and on the theory alike, "
                                   "on held-out examples; exit 1 if one fails", ["theory"])
    chk.add_argument("theory", metavar="THEORY.yaml")
    chk.add_argument("--run", dest="run_dir", metavar="RUN_DIR", help="a fit of this theory (default: fit it into runs/THEORY_NAME)")
    chk.add_argument("--limit", type=flag("limit"), default=None, metavar="N", help="held-out examples to check on (default 512)")
    add_flags(chk, FitConfig, "seed", "max_memory")  # of the fit when there is no --run; the seed resamples too
    add_flags(chk, CaptureConfig, "n", "data_seed", "seq_len")
    _common(chk)
    diag = command("diagnose", _diagnose, "where a fitted theory fails: residual directions, what they correlate "
                   "with, the worst examples (into diagnosis.json)")
    diag.add_argument("run_dir", metavar="RUN_DIR", help="an artifact directory written by theorycraft infer")
    diag.add_argument("--top", type=flag("top"), default=3, help="residual directions (and correlates of each) to report")
    diag.add_argument("--worst", type=flag("worst"), default=5, help="worst test examples to show")
    diag.add_argument("--vocabulary", metavar="VOCAB.yaml", help="also correlate with the candidate features of "
                      "a search vocabulary (e.g. a search's vocabulary.yaml)")
    diag.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    diag.add_argument("--capture", metavar="KEY|DIR", help="diagnose on this capture instead of the run's own")
    _cache_flag(diag)

    se = command("search", _search, "grow a theory from a start by held-out MDL, pruning what does not pay; "
                 "write the found theory, the trail and its scaling curve", ["start", "compare"])
    se.add_argument("start", metavar="START.yaml", help="the theory to start from (its sites; components optional)")
    se.add_argument("--vocabulary", metavar="VOCAB.yaml", help="candidate components (default: generated for the "
                    "target's sites: lookups, Fourier features, rules, attention rules, low-rank mechanisms)")
    add_flags(se.add_mutually_exclusive_group(), SearchConfig, "budget_bits", "budget_minutes")
    add_flags(se, SearchConfig, "tries", "target_coverage", "judge_cache")
    se.add_argument("--out", metavar="DIR", help="output directory (default: runs/search-THEORY_NAME)")
    se.add_argument("--compare", metavar="THEORY.yaml", help="also score this theory (same sites) the same way")
    add_flags(se, FitConfig, "seed", "max_steps", "learning_rate", "batch_size", "fit_mode", "max_memory")
    add_flags(se, CaptureConfig, "n", "data_seed", "dtype", "seq_len")
    _data_flags(se, named=True)
    se.add_argument("--no-progress", action="store_true", help="no progress bar over the steps")
    _common(se)

    bench = command("bench", _bench, "the coverage benchmark: bundled targets x reference theories x baselines")
    bench.add_argument("--quick", action="store_true", help="fewer examples, steps and baselines (minutes)")
    bench.add_argument("--out", default="bench", metavar="DIR", help="where results.json, results.md and plots go")
    bench.add_argument("--targets", nargs="+", metavar="NAME", help="only these targets (e.g. modadd-p113 induction)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar over the theories")
    _cache_flag(bench)
    _cache_commands(command)
    rep = command("report", _report, "one self-contained HTML page (plots embedded) of a run, search or bench "
                  "directory: fidelity, bits, axioms, diagnosis; the search trail; the benchmark's panels")
    rep.add_argument("directory", metavar="RUN_DIR|SEARCH_DIR|BENCH_DIR")
    rep.add_argument("--out", metavar="FILE.html", help="where to write it (default: DIR/report.html)")
    return parser


def _common(sub: argparse.ArgumentParser) -> None:
    _cache_flag(sub)
    sub.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _include_path(sub)


def _cache_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--cache", metavar="DIR", help="activation store (default: $THEORYCRAFT_CACHE, else the user cache "
                     "directory: ~/.cache/theorycraft on Linux)")


def _data_flags(sub: argparse.ArgumentParser, *, named: bool = False, shifted: bool = False) -> None:
    """The data flags that are no config's: --text and --data (the data of hf: targets; on score,
    the text scored as a shift); ``named``: also --capture KEY|DIR, an existing capture instead."""
    sub.add_argument("--text", nargs="+", default=[], metavar="FILE", help="hf targets: text files as the data"
                     + (" (scored as --shift NAME, default 'text', in windows as long as the run's)" if shifted else ""))
    sub.add_argument("--data", nargs="+", default=[], metavar="FILE.jsonl", help="hf targets: JSONL with a 'text' field")
    if named:
        sub.add_argument("--capture", metavar="KEY|DIR", help="use this capture (a key from theorycraft cache ls, or a "
                         "capture's directory)" + (" instead of the run's own" if shifted else
                                                   "; the data flags then stay out"))


def _texts(args: argparse.Namespace) -> tuple[str, ...] | None:
    from theorycraft.targets._hf import read_texts

    return read_texts(args.text, args.data) if (args.text or args.data) else None


DATA = ("n", "data_seed", "dtype", "seq_len")  # the CaptureConfig flags of infer and search


def _data(args: argparse.Namespace) -> dict:
    """infer's and search's data, as keyword arguments of the api: the capture the data flags
    name, or the one --capture names (then a data flag is a usage error)."""
    if args.capture:
        if configs.given(args, DATA) or args.text or args.data:
            raise ArgumentError("--capture names the data: leave out --n, --data-seed, --dtype, --text, --data "
                                "and --seq-len")
        return {"acts": args.capture}
    return {"data": from_args(CaptureConfig, args), "texts": _texts(args)}


def _say(message: str) -> None:
    print(message, file=sys.stderr)


# --- theorycraft cache ls | verify | rm ------------------------------------------------------------

def _cache_commands(command: Callable) -> None:
    cache = command("cache", None, "the activation store: list, verify or remove captures")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, run, help in (("ls", _cache_ls, "list the captures: key, size, date, target, examples, data seed, "
                                               "dtype, sites"),
                            ("verify", _cache_verify, "check every file of captures against its sha256; exit 1 if "
                                                      "one is corrupted or incomplete"),
                            ("rm", _cache_rm, "remove captures (by key or a unique prefix of it)")):
        sub = actions.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run, parser=sub)
        if name != "ls":
            sub.add_argument("keys", nargs="+" if name == "rm" else "*", metavar="KEY",
                             help="captures to " + ("remove" if name == "rm" else "verify (default: all)"))
        _cache_flag(sub)


def _cache_ls(args: argparse.Namespace) -> int:
    from theorycraft._arguments import bytes_text
    from theorycraft.store import Store, date_text

    store = Store(args.cache)
    held = store.held()
    print(f"{'key':<20}  {'size':>9}  {'captured':<16}  {'target':<24} {'n':>7} {'seed':>4} {'dtype':<8}  sites")
    for h in held:
        if not h.complete:
            why = ("a partial store (capture --part): the capture without --part merges it" if ".part-" in h.key else
                   f"an interrupted capture: run it again to resume, or theorycraft cache rm {h.key}")
            print(f"{h.key:<20}  {bytes_text(h.bytes):>9}  {date_text(h.modified):<16}  incomplete ({why})")
            continue
        shift = f" (shift {h.shift})" if h.shift else ""
        print(f"{h.key:<20}  {bytes_text(h.bytes):>9}  {date_text(h.modified):<16}  {h.target + shift:<24} "
              f"{h.n:>7} {h.seed if h.seed is not None else '-':>4} {h.dtype:<8}  {', '.join(h.sites)}")
    print(f"{len(held)} capture{'s' * (len(held) != 1)}, {bytes_text(sum(h.bytes for h in held))} in {store.root}")
    return EXIT_OK


def _cache_verify(args: argparse.Namespace) -> int:
    from theorycraft.errors import StoreError
    from theorycraft.store import Store

    store, bad = Store(args.cache), 0
    keys = args.keys or [h.key for h in store.held()]
    for key in keys:
        try:
            acts = store.find(key)
            acts.verify()  # every file read and checked now
            print(f"{acts.key}  ok ({acts.n} examples, {len(acts.sites)} sites)")
        except StoreError as exc:
            bad += 1
            print(f"{key}  FAILED: {exc}")
    print(f"{len(keys) - bad} of {len(keys)} captures in {store.root} verified" + (f"; {bad} failed" if bad else ""))
    return EXIT_INVALID if bad else EXIT_OK


def _cache_rm(args: argparse.Namespace) -> int:
    from theorycraft._arguments import bytes_text
    from theorycraft.store import Store

    store = Store(args.cache)
    for key in args.keys:
        gone = store.remove(key)
        print(f"removed {gone.key} ({bytes_text(gone.bytes)}, {gone.target})")
    return EXIT_OK


def _include_path(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--include-path", action="append", default=[], type=include_path_flag, metavar="DIR",
                     help="a directory the theory's includes may read from, besides the theory file's own "
                          "(repeatable); includes never leave these")


# parameters the library's errors name that are no config's field, as the CLI spells them
FLAGS = {"texts": "--text and --data", "acts": "--capture", "run_dir": "--run", "processes": "--processes",
         "sites": "--sites", "part": "--part"}


def _flag(name: str) -> str:
    """A library parameter as the command line spells it: a config field's flag (``learning_rate``
    -> ``--lr``), else FLAGS'."""
    for config in configs.CONFIGS:
        known = configs.params(config)
        if name in known:
            return configs.flag_of(*known[name])
    return FLAGS.get(name, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    try:
        _check_theory_files(args)
        return args.run(args)
    except TheoryError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except ArgumentError as exc:  # an argument the parser could not judge alone: a usage error too
        args.parser.print_usage(sys.stderr)
        print(f"{args.parser.prog}: error: {exc.said(_flag)}", file=sys.stderr)
        return EXIT_USAGE
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (theorycraft schema | head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    except Exception as exc:  # the last resort: anything else is a bug in theorycraft, said so
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc}\n"
              f"This is a bug in theorycraft, not in your input. Please report it with the command you ran and "
              f"the traceback that {DEBUG_ENV}=1 shows (rerun with {DEBUG_ENV}=1 theorycraft ...).",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
