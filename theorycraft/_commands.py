"""What each ``theorycraft`` command does, given its parsed flags (the parser and ``main`` are in
``theorycraft.cli``), and the tables it prints. Each returns its exit code."""

from __future__ import annotations

import argparse
import json
import sys

from theorycraft import configs
from theorycraft.configs import CaptureConfig, FitConfig, ScoreConfig, SearchConfig, from_args
from theorycraft.errors import ArgumentError
from theorycraft.files import write_atomically
from theorycraft.spec import check_theory, json_schema, outline

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


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
    from theorycraft.inference import engine as _distributed  # its cluster functions
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

    fitted, card = infer(theory, config=from_args(FitConfig, args, progress=leader), out_dir=out, cache_dir=args.cache,
                         trust_code=args.trust_code, log=log if leader else (lambda m: None),
                         processes=args.processes or (cluster.num_processes if cluster else 1), **_data(args))
    adam = configs.given(args, ("max_steps", "learning_rate", "batch_size", "restarts"))
    if adam and leader and not any(stage["gradient"] for stage in fitted.fit_info["stages"]):  # said, not dropped
        log(f"note: every site was solved in closed form, so no Adam fit ran: "
            f"{', '.join(configs.flag_of(*configs.params(FitConfig)[d]) for d in adam)} did nothing")
    if not leader:  # process 0 reports and writes
        return EXIT_OK
    write_atomically(out / "log.txt", "\n".join(lines) + "\n")
    print(scorecard_table(card))
    print(f"artifact: {out}")
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    from theorycraft.api import score_run

    card = score_run(args.run_dir, config=from_args(ScoreConfig, args), trust_code=args.trust_code,
                     cache_dir=args.cache, acts=args.capture, texts=_texts(args), log=_say)
    print(scorecard_table(card))
    print(f"scorecard: {args.run_dir}/scorecard.json")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from theorycraft.api import check

    given = {dest: getattr(args, dest) for dest in configs.given(args, ("n", "data_seed", "seq_len", "seed",
                                                                         "max_memory", "device"))}
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
    from theorycraft.scoring import AXIOM_COLUMNS as COLUMNS

    rows = [f"{'axiom':<40} {'measure':<18} {'network effect [95%]':>28} {'theory pred.':>12}  {'judged':>10}  result"]
    for r in results:
        theory = "-" if r.theory is None else f"{r.theory:.4g}"
        rows.append(f"{r.name:<40} {r.measure:<18} {f'{r.network:.4g} [{r.low:.4g}, {r.high:.4g}]':>28} {theory:>12}  "
                    f"{r.judged:>10.4g}  {'pass' if r.passed else 'FAIL'}")
        rows.append(f"    {r.claim}")
    rows += [f"{name}: {meaning}" for name, meaning in COLUMNS]
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
    from theorycraft.targets import decoder

    report = diagnose(fitted, run_activations(fitted, run, args.cache, args.capture), top=args.top, worst=args.worst,
                      vocabulary=vocabulary, decode=decoder(fitted.theory.target))  # a text model's tokens as text
    write_atomically(run / "diagnosis.json", json.dumps(report, indent=1) + "\n")
    print(render(report))
    print(f"diagnosis: {run}/diagnosis.json")
    return EXIT_OK


def _search(args: argparse.Namespace) -> int:
    from theorycraft._report import found_variables
    from theorycraft.api import search

    result = search(args.start, vocabulary=args.vocabulary, config=from_args(SearchConfig, args),
                    fit=from_args(FitConfig, args), out_dir=args.out, compare=args.compare, cache_dir=args.cache,
                    trust_code=args.trust_code, log=lambda m: print(m, file=sys.stderr),
                    include_paths=args.include_path, progress=not args.no_progress, **_data(args))
    final, out = result.final, result.out
    print(f"found in {len(result.trail) - 1} steps ({result.stopped}), judged on validation: "
          f"{_totals(final.selection)}, {final.params:,} params (start {result.trail[0].selection.bits_total:,.0f} bits)")
    print(f"reported on test: {_totals(final.report)}")
    for name, expr in found_variables(final.theory).items():
        print(f"  variable {name} = {expr}")
    card = result.scorecard
    given = f" (given: {', '.join(card.inputs)})" if card.inputs else ""
    print(f"refitted on train + validation (as infer fits it): test {card.headline()}; over "
          f"{', '.join((*card.covered, *card.unexplained))}{given}")
    for warning in card.warnings():
        print(f"warning: {warning}")
    scaling = result.scaling
    if scaling and scaling.get("notes"):
        print(f"scaling curve: no result ({len(scaling['notes'])} reason{'s' * (len(scaling['notes']) > 1)}):")
        for note in scaling["notes"]:
            print(f"  it {note}")
    elif scaling:
        need, se = scaling["bits_for_target"], scaling.get("errors") or {}
        print(f"scaling curve L(N) = {scaling['floor']:.4g}{_pm(se, 'floor')} + {scaling['scale']:.4g}{_pm(se, 'scale')}"
              f"·N^-({scaling['exponent']:.3f}{_pm(se, 'exponent')}) (validation, {scaling.get('points', '?')} points"
              f"{'' if se else ', errors not estimable'}): coverage {scaling['target_coverage']} needs "
              + (f"~{need:,.0f} bits" if need else "more than this vocabulary can reach (below the floor)"))
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
    from theorycraft.scoring import interval_text

    rows = ["R2 teacher-forced (each site a component reads is the recorded one) and free (the theory's own "
            "prediction of it, from the input alone); [95% bootstrap interval over the test examples]",
            f"{'site':<16} {'R2 train':>9} {'R2 valid':>9} {'R2 test':>9} {'[95% interval]':>20} {'free test':>10} "
            f"{'[95% interval]':>20} {'n test':>8}"]
    flagged = set(card.below_mean())
    for site, s in card.sites.items():
        rows.append(f"{site:<16} {s.r2_train:>9.4f} {s.r2_validation:>9.4f} {s.r2_test:>9.4f} "
                    f"{interval_text(s.r2_test_interval).strip():>20} {s.r2_test_free:>10.4f} "
                    f"{interval_text(s.r2_test_free_interval).strip():>20} {s.n_test:>8}"
                    + ("  <- worse than its mean" if site in flagged else ""))
    inputs = f" (given: {', '.join(card.inputs)})" if card.inputs else ""
    rows.append(f"test {card.headline()}")
    rows.append(f"  over {', '.join((*card.covered, *card.unexplained))}{inputs}   params {card.size.params:,}   "
                f"fit {card.fit.get('seconds', 0):.1f}s")
    if card.fit.get("converged") is False:  # absent: a scorecard from before fits said
        rows.append(f"fit NOT converged: {card.fit.get('convergence', '')}")
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
        rows += [_splice_row(f"  splice {site} ({name}; {sp.n} examples)", sp) for site, sp in s.splice.items()]
    rows += [_splice_row(f"splice {site} ({s.n} test examples)", s) for site, s in card.splice.items()]
    rows += [f"warning: {w}" for w in card.warnings()]
    return "\n".join(rows)


def _splice_row(label: str, s) -> str:
    from theorycraft.scoring import splice_figure

    row = (f"{label}: top-1 agreement {splice_figure(s.top1_agreement, s.top1_agreement_interval)}  "
           f"KL {splice_figure(s.kl, s.kl_interval)}  "
           f"loss recovered {splice_figure(s.loss_recovered, s.loss_recovered_interval)}  (clean "
           f"{s.loss_clean:.4g}, spliced {s.loss_spliced:.4g}, mean-ablated {s.loss_mean_ablated:.4g})")
    if s.exact_match_spliced is not None:  # a task whose rows are answers: each row's accuracy
        digits = lambda values: " ".join(f"{v:.3f}" for v in values)  # noqa: E731
        row += (f"\n{' ' * len(label)}  exact match {s.exact_match_spliced:.4f} (clean {s.exact_match_clean:.4f}); "
                f"accuracy per answer row {digits(s.answer_accuracy_spliced)} (clean {digits(s.answer_accuracy_clean)})")
    return row


def _texts(args: argparse.Namespace) -> tuple[str, ...] | None:
    from theorycraft.targets import read_texts

    return read_texts(args.text, args.data) if (args.text or args.data) else None


DATA = ("n", "data_seed", "dtype", "seq_len", "device")  # the CaptureConfig flags of infer and search


def _data(args: argparse.Namespace) -> dict:
    """infer's and search's data, as keyword arguments of the api: the capture the data flags
    name, or the one --capture names (then a data flag is a usage error)."""
    if args.capture:
        if configs.given(args, DATA) or args.text or args.data:
            raise ArgumentError("--capture names the data: leave out --n, --data-seed, --dtype, --text, --data, "
                                "--seq-len and --device (nothing runs the target)")
        return {"acts": args.capture}
    return {"data": from_args(CaptureConfig, args), "texts": _texts(args)}


def _say(message: str) -> None:
    print(message, file=sys.stderr)


# --- theorycraft cache ls | verify | rm ------------------------------------------------------------

def _cache_ls(args: argparse.Namespace) -> int:
    from theorycraft.configs import bytes_text
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
    from theorycraft.configs import bytes_text
    from theorycraft.store import Store

    store = Store(args.cache)
    for key in args.keys:
        gone = store.remove(key)
        print(f"removed {gone.key} ({bytes_text(gone.bytes)}, {gone.target})")
    return EXIT_OK
