"""The ``theorycraft`` command. Exit codes: 0 ok, 1 invalid input, 2 usage error (a bad flag or
argument), 3 internal error (a bug in theorycraft: reported without a traceback unless
THEORYCRAFT_DEBUG=1), 130 interrupted.

Here: the parser (the stages' flags generated from theorycraft.configs) and ``main``; what each
command does is in theorycraft._commands."""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Callable, Sequence

from theorycraft import __version__
from theorycraft import configs
from theorycraft._arguments import flag, include_path_flag, part_flag, site_flag
from theorycraft._commands import (EXIT_INTERNAL, EXIT_INVALID, EXIT_OK, EXIT_USAGE, _bench, _cache_ls, _cache_rm,
                                   _cache_verify, _capture, _check, _diagnose, _explain, _infer, _report, _schema,
                                   _search, _shifts, _sites, _score, _validate, axioms_table, scorecard_table)
from theorycraft.configs import CaptureConfig, FitConfig, ScoreConfig, SearchConfig, add_flags
from theorycraft.errors import USER_ERRORS, ArgumentError
from theorycraft.spec import TheoryError, load_theory, schemes_text
__all__ = ["axioms_table", "build_parser", "main", "scorecard_table"]  # the tables: as the terminal shows them
DEBUG_ENV = "THEORYCRAFT_DEBUG"
TRUST_HELP = "allow torch: targets and 'kind: module:attr' components to run their Python"


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
    add_flags(cap, CaptureConfig, "n", "data_seed", "dtype", "seq_len", "batch_size", "shift", "device",
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
    add_flags(inf, FitConfig, "seed", "max_steps", "learning_rate", "batch_size", "restarts", "fit_mode", "max_memory",
              "model_shards")
    add_flags(inf, CaptureConfig, "n", "data_seed", "dtype", "seq_len", "device")
    _data_flags(inf, named=True)
    inf.add_argument("--processes", type=flag("processes"), default=None, metavar="N", help="fit on N processes "
                     "(jax.distributed), each reading its own shards: started here, or, where THEORYCRAFT_COORDINATOR, "
                     "THEORYCRAFT_NUM_PROCESSES and THEORYCRAFT_PROCESS_ID are set (a cluster job), joined")
    _common(inf)

    sc = command("score", _score, "score a fitted theory: bits, MDL compression, splice fidelity (into scorecard.json)")
    sc.add_argument("run_dir", metavar="RUN_DIR", help="an artifact directory written by theorycraft infer")
    add_flags(sc, ScoreConfig, "prequential", "splice", "limit", "shift", "n", "data_seed", "dtype", "max_memory",
              "device")
    _data_flags(sc, named=True, shifted=True)
    sc.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _cache_flag(sc)

    chk = command("check", _check, "check a theory's axioms: intervene on the network and on the theory alike, "
                                   "on held-out examples; exit 1 if one fails", ["theory"])
    chk.add_argument("theory", metavar="THEORY.yaml")
    chk.add_argument("--run", dest="run_dir", metavar="RUN_DIR", help="a fit of this theory (default: fit it into runs/THEORY_NAME)")
    chk.add_argument("--limit", type=flag("limit"), default=None, metavar="N", help="held-out examples to check on (default 512)")
    add_flags(chk, FitConfig, "seed", "max_memory")  # of the fit when there is no --run; the seed resamples too
    add_flags(chk, CaptureConfig, "n", "data_seed", "seq_len", "device")
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
    add_flags(se, CaptureConfig, "n", "data_seed", "dtype", "seq_len", "device")
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
