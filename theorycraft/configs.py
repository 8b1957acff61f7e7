"""One config per stage (capture, fit, score, search): every field's default, range and help,
defined here once. The library takes these (``theorycraft.infer(theory, config=FitConfig(...))``,
``theorycraft.search(start, config=SearchConfig(...), fit=FitConfig(...))``);
the CLI's flags are generated from them (``add_flags``); a value out of range is an
``ArgumentError`` naming the field, which the CLI says as its flag. ``python -m
theorycraft.configs`` prints the table docs/configs.md holds."""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from theorycraft.errors import ArgumentError

DTYPES = ("float32", "float16", "bfloat16")  # storage dtypes of a capture
FIT_MODES = ("stagewise", "joint")
DEVICES = ("cpu", "cuda", "mps", "auto")  # where a target's forward passes run (theorycraft.targets.resolve_device)


class Range(NamedTuple):
    integer: bool
    low: float
    low_open: bool = False  # low itself excluded
    high: float | None = None
    high_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        low = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        if self.high is None:
            return f"{what} {low}"
        return f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def holds(self, value) -> bool:  # numpy scalars count; True and False do not
        number = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def check(self, name: str, value):
        """``value`` as an int or float if it is in range, else an ArgumentError naming ``name``."""
        if not self.holds(value):
            raise ArgumentError(f"{name} must be {self.describe()}, got {value!r}")
        return int(value) if self.integer else float(value)


COUNT, SEED, POSITIVE = Range(True, 1), Range(True, 0), Range(False, 0, low_open=True)
DEVICE_HELP = ("where the target's forward passes run (capture, splice, axioms; default cpu); auto: a GPU where "
               "there is one. A batch holds fewer examples where they would not fit the device's memory")


@dataclass(frozen=True)
class Param:
    """What a config field means to a user: its help, range or choices, and the CLI's flag for
    it. ``dest`` is its name as the library's keyword argument and the CLI's attribute, where
    that differs from the field's (the data seed is ``seed`` of a capture, ``data_seed`` of a fit)."""

    help: str
    range: Range | None = None
    choices: tuple | None = None
    memory: bool = False  # a size in bytes: an integer, or text like '4G'
    flag: str | None = None  # default --FIELD-NAME
    dest: str | None = None
    metavar: str | None = None
    cli: bool = True  # False: a library setting only (no flag)


def param(default, help: str, **meaning) -> Any:
    return field(default=default, metadata={"param": Param(help, **meaning)})


class Config:
    """A stage's settings, frozen and checked when made: a field out of its range is an
    ArgumentError naming it (``learning_rate must be a finite number > 0, got -1``)."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            p, value = f.metadata["param"], getattr(self, f.name)
            if value is None and f.default is None:  # None: what the help says the field defaults to
                continue
            if p.range is not None:
                object.__setattr__(self, f.name, p.range.check(f.name, value))
            elif p.memory:
                object.__setattr__(self, f.name, memory(value, name=f.name))
            elif p.choices is not None and value not in p.choices:
                raise ArgumentError(f"{f.name} must be one of {', '.join(map(repr, p.choices))}, got {value!r}")
            elif isinstance(f.default, bool) and not isinstance(value, bool):
                raise ArgumentError(f"{f.name} must be True or False, got {value!r}")

    @classmethod
    def of(cls, config=None, **given):
        """``config`` (default all defaults) with the ``given`` fields that are not None replaced:
        the library's keyword arguments over its config argument."""
        if config is not None and not isinstance(config, cls):
            raise ArgumentError(f"expected a {cls.__name__}, got {type(config).__name__}")
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:  # a bug in a caller of this module, never a user's input
            raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
        return dataclasses.replace(config or cls(), **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class CaptureConfig(Config):
    """How a target's sites are recorded into the store (``theorycraft capture``; the data of
    ``infer`` and ``search`` when they capture)."""

    n: int | None = param(None, "number of examples (default: the target's dataset; infer and search first reuse "
                                "a stored capture of these sites at any size)", range=COUNT)
    seed: int = param(0, "seed of the data: which examples, their order, the test split; part of the capture's "
                         "key", range=SEED, flag="--data-seed", dest="data_seed", metavar="SEED")
    dtype: str = param("float32", "how the activations are stored", choices=DTYPES)
    batch_size: int = param(256, "examples per forward pass of the target", range=COUNT)
    seq_len: int | None = param(None, "hf targets: tokens per window; part of the capture's key (default: 128, or "
                                      "the model's positions if fewer)", range=Range(True, 2), metavar="T")
    shift: str | None = param(None, "one of the target's named shifted datasets instead of its own (theorycraft "
                                    "shifts TARGET lists them)", metavar="NAME")
    device: str | None = param(None, DEVICE_HELP, choices=DEVICES)  # not of the capture's key: the same activations

    def __post_init__(self):
        super().__post_init__()
        _check_shift(self.shift)


@dataclass(frozen=True)
class FitConfig(Config):
    """How a theory is fitted (``theorycraft infer``; each fit of ``search``)."""

    seed: int = param(0, "seed of the fit (initialisation, minibatches); never of the data (--data-seed)",
                      range=SEED)
    max_steps: int = param(2000, "Adam steps for parts without a closed form", range=COUNT)
    batch_size: int = param(512, "examples per Adam step", range=COUNT)
    learning_rate: float = param(3e-3, "Adam learning rate (peak of a warmup-cosine schedule)", range=POSITIVE,
                                 flag="--lr", metavar="LR")
    eval_every: int = param(100, "Adam steps between validation losses", range=COUNT, cli=False)
    patience: int = param(5, "validation losses without improvement before Adam stops", range=COUNT, cli=False)
    # a fit that ends at max_steps has converged when its best validation loss (the sum over its
    # sites of 1 - R2) fell by at most this per site over the last quarter of its evaluations
    tolerance: float = param(1e-3, "a fit ending at max_steps converged if its validation loss fell by at most "
                                   "this per site over its last quarter; restarts disagree past it", range=Range(False, 0),
                             cli=False)
    restarts: int = param(1, "Adam fits from this many starts (seeds SEED, SEED+1, ...), the best on validation kept; "
                             "the fit says where they disagree", range=COUNT)
    checkpoint_every: int = param(200, "Adam steps between checkpoints (with an output directory)", range=COUNT,
                                  cli=False)
    progress: bool = param(True, "progress bars on stderr", cli=False)
    mode: str = param("stagewise", "stagewise: each component fitted to the site it predicts, then held fixed for "
                                   "the sites that read it; joint: every site at once, end to end through shared "
                                   "components", choices=FIT_MODES, flag="--fit", dest="fit_mode")
    # closed-form fits choose their strength on validation, then refit on train + validation; a
    # judge comparing theories on validation needs fits that never saw it
    refit_on_validation: bool = param(True, "closed-form fits, their strength chosen on validation, refitted on "
                                            "train + validation", cli=False)
    # a theory over it is refused by its plan, before anything is allocated
    max_memory: int | None = param(None, "refuse a theory whose fit would need more memory than this, e.g. 4G or "
                                         "512M (default: what the machine has free)", memory=True, metavar="SIZE")
    model_shards: int = param(1, "devices of the mesh's 'model' axis: large tables and maps are split over them "
                                 "(1: data-parallel only)", range=COUNT, metavar="M")


@dataclass(frozen=True)
class ScoreConfig(Config):
    """What ``theorycraft score`` adds to a fit's scorecard."""

    prequential: bool = param(False, "also the prequential (online) code: refits the theory on growing prefixes "
                                     "of the data")
    splice: bool = param(True, "run the target with each site replaced by the theory's prediction (runnable "
                               "targets)", flag="--no-splice")
    limit: int | None = param(None, "score on the first N validation and test examples (default: all)",
                              range=COUNT, metavar="N")
    shift: str | None = param(None, "also capture the theory's sites on this named shift of its target and report "
                                    "coverage there (theorycraft shifts TARGET lists them)", metavar="NAME")
    n: int | None = param(None, "examples of the shifted capture (default: as many as the run's capture)",
                          range=COUNT)
    data_seed: int | None = param(None, "seed of the shifted capture's data (default: the run's)", range=SEED,
                                  metavar="SEED")
    dtype: str | None = param(None, "how the shifted capture's activations are stored (default: the run's)",
                              choices=DTYPES)
    max_memory: int | None = param(None, "bound the prequential refits' memory, e.g. 4G (default: what the "
                                         "machine has free)", memory=True, metavar="SIZE")
    device: str | None = param(None, DEVICE_HELP, choices=DEVICES)  # the splices' and the shift's forward passes

    def __post_init__(self):
        super().__post_init__()
        _check_shift(self.shift)


@dataclass(frozen=True)
class SearchConfig(Config):
    """How ``theorycraft search`` grows a theory (its fits: a FitConfig)."""

    budget_bits: float | None = param(None, "never grow the theory past B bits", range=POSITIVE, metavar="B")
    budget_minutes: float | None = param(None, "stop after M minutes of search: the step in flight stops at it, "
                                               "the best so far is kept", range=POSITIVE, metavar="M")
    tries: int = param(4, "best-estimated candidates fitted and scored per step", range=COUNT)
    target_coverage: float = param(0.99, "the coverage the scaling curve is asked about",
                                   range=Range(False, 0, low_open=True, high=1, high_open=True))
    judge_cache: int = param(256 * 10 ** 6, "bytes of judged theories' parameters kept for reuse, least recently "
                                            "used out first, e.g. 1G", memory=True, metavar="SIZE")


CONFIGS = (CaptureConfig, FitConfig, ScoreConfig, SearchConfig)


def _check_shift(name) -> None:
    """A shift's name, or None for the target's own data; the target checks that it knows the name."""
    if name is not None and not (isinstance(name, str) and name):
        raise ArgumentError(f"shift must be the name of one of the target's shifts, like 'dense' (theorycraft "
                            f"shifts TARGET lists them), got {name!r}")


# --- sizes ------------------------------------------------------------------------------------------

_MEMORY_UNITS = {"": 1, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
                 "KI": 2 ** 10, "MI": 2 ** 20, "GI": 2 ** 30, "TI": 2 ** 40}


def memory(value, *, optional: bool = False, name: str = "max_memory"):
    """A memory size in bytes (``--max-memory``, ``--judge-cache``): a positive integer of bytes, or
    text like '4G', '512M', '1.5GB' (powers of 1000) or '2GiB' (powers of 1024); an ArgumentError
    (naming the argument ``name``) otherwise."""
    import re

    if value is None and optional:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0:
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*", value, re.IGNORECASE) if isinstance(value, str) else None
    size = float(match[1]) * _MEMORY_UNITS[(match[2] or "").upper()] if match else 0
    if not 1 <= size < 2 ** 63:
        raise ArgumentError(f"{name} must be a size in bytes like 4G, 512M, 1.5GB or 2GiB (at least 1 byte), "
                            f"got {value!r}")
    return int(size)


def bytes_text(n: float) -> str:
    """A size for messages: '812 bytes', '6.0 KB', '4.3 GB' (powers of 1000)."""
    unit = "bytes"
    for bigger in ("KB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1000:
            break
        n, unit = n / 1000, bigger
    return f"{n:,.0f} bytes" if unit == "bytes" else f"{n:,.1f} {unit}"


def site(text):
    """A site (hook point) named by the user, parsed once; a malformed name is an ArgumentError."""
    from theorycraft.spec import HookPoint

    if isinstance(text, HookPoint):
        return text
    try:
        return HookPoint.parse(text)
    except (ValueError, TypeError):
        raise ArgumentError(f"expected a site (hook point) like 'blocks.0.mlp.hook_post' or "
                            f"'encoder.layer.3.output:input', got {text!r}") from None


# --- the CLI's flags --------------------------------------------------------------------------------

def params(config: type[Config]) -> dict[str, tuple[dataclasses.Field, Param]]:
    """Each field of ``config`` by its dest (library keyword / CLI attribute), with its meaning."""
    return {f.metadata["param"].dest or f.name: (f, f.metadata["param"]) for f in dataclasses.fields(config)}


def flag_of(f: dataclasses.Field, p: Param) -> str:
    return p.flag or "--" + f.name.replace("_", "-")


class _Given(argparse.Action):
    """Stores a flag's value and notes that it was given (``args.given``), so that a default is
    told from an equal value typed out."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def _type(name: str, p: Param):
    def parse(text: str):
        try:
            if p.memory:
                return memory(text, name=name)
            try:
                value = int(text) if p.range.integer else float(text)
            except ValueError:
                raise ArgumentError(f"{name} must be {p.range.describe()}, got {text!r}") from None
            return p.range.check(name, value)
        except ArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name  # argparse names the type in some messages
    return parse


def add_flags(parser, config: type[Config], *dests: str, aliases: dict[str, tuple] | None = None) -> None:
    """Add the flags of ``config``'s fields named ``dests`` (library keyword names) to ``parser``
    (or an argument group): name, type, choices, default and help all from the field; ``aliases``
    adds other spellings of a flag."""
    known, key = params(config), _flags_key(config)
    parser.set_defaults(**{key: (*(parser.get_default(key) or ()), *dests)})  # what from_args reads back
    for dest in dests:
        f, p = known[dest]
        if not p.cli:
            raise ValueError(f"{config.__name__}.{f.name} is a library setting, not a flag")
        # the parser's help formatter says a default; a size is said here, in its units
        help = p.help + (f" (default: {_shown(f, p)})" if p.memory and f.default is not None else "")
        options = dict(dest=dest, action=_Given, default=f.default, help=help)
        if isinstance(f.default, bool):  # a switch: --X turns on a default off, --no-X off a default on
            options.update(nargs=0, const=not f.default)
            options["help"] = help if not f.default else f"do not {help[0].lower()}{help[1:]} (default: on)"
        elif p.choices is not None:
            options["choices"] = p.choices
        elif p.range is not None or p.memory:
            options["type"] = _type(f.name, p)
        if p.metavar:
            options["metavar"] = p.metavar
        parser.add_argument(flag_of(f, p), *(aliases or {}).get(dest, ()), **options)


def _shown(f: dataclasses.Field, p: Param) -> str:  # a size in its units
    return bytes_text(f.default)


def _flags_key(config: type[Config]) -> str:
    return f"flags_of_{config.__name__}"


def from_args(config: type[Config], args: argparse.Namespace, **extra):
    """The ``config`` that its flags (added by ``add_flags``) on ``args`` set, with ``extra``."""
    known = params(config)
    values = {known[dest][0].name: getattr(args, dest) for dest in getattr(args, _flags_key(config), ())}
    return config(**{**values, **extra})


def given(args: argparse.Namespace, dests: Iterable[str]) -> list[str]:
    """Which of ``dests`` were typed on the command line."""
    typed = getattr(args, "given", frozenset())
    return [d for d in dests if d in typed]


# --- the documentation ------------------------------------------------------------------------------

def document(config: type[Config], where: str | None, **keywords: str):
    """Fill the ``{where}`` line of a library function's docstring with one numpy-style entry per
    keyword argument that replaces a field of ``config`` (``keywords``: keyword -> its dest, where
    they differ), its type and help taken from the field. ``where`` None: a function that takes
    no such config, only the keywords (its line is ``{CONFIG_NAME}``)."""
    import textwrap

    def fill(function):
        known, lines = params(config), []
        for keyword, dest in keywords.items():
            f, p = known[dest or keyword]
            replaces = f" Given, it replaces ``{where}.{f.name}``." if where else ""
            lines += [f"    {keyword} : {_type_text(f, p)}, optional",
                      *textwrap.wrap(f"{p.help[0].upper()}{p.help[1:]}.{replaces}", 100, initial_indent=" " * 8,
                                     subsequent_indent=" " * 8)]
        marker = f"    {{{where}: {config.__name__}}}\n" if where else f"    {{{config.__name__}}}\n"
        assert marker in function.__doc__, (function.__name__, marker)
        function.__doc__ = function.__doc__.replace(marker, "\n".join(lines) + "\n")
        return function
    return fill


def _type_text(f: dataclasses.Field, p: Param) -> str:
    if isinstance(f.default, bool):
        return "bool"
    if p.memory:
        return "int or str"
    if p.range is not None:
        return "int" if p.range.integer else "float"
    return "str"

def table() -> str:
    """Every stage's fields as Markdown: the library's name, the CLI's flag, default, range, help."""
    rows = []
    for config in CONFIGS:
        rows += [f"### {config.__name__}", "", (config.__doc__ or "").strip(), "",
                 "| field | keyword | flag | default | range | help |", "|---|---|---|---|---|---|"]
        for dest, (f, p) in params(config).items():
            allowed = (p.range.describe() if p.range else "a size: bytes, or 4G, 512M, 2GiB" if p.memory else
                       " / ".join(p.choices) if p.choices else "true / false" if isinstance(f.default, bool) else
                       "a name")
            if f.default is None and (p.range or p.memory or p.choices):
                allowed += ", or none"
            flag = f"`{flag_of(f, p)}`" if p.cli else "(library only)"
            rows.append(f"| `{f.name}` | `{dest}` | {flag} | `{f.default!r}` | {allowed} | {p.help} |")
        rows.append("")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
