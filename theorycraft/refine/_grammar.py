"""A grammar of RASP's primitives over a theory's variables: what a search may compute next.

The building blocks (*terms*) at a step are the input's atoms (the token and the position) and
every variable the theory holds, each also read ``k`` positions back (``x[i - k]``). From them,
one step of the grammar derives:

- rules: a term compared with a constant it takes, or with another term (booleans);
- selects: a key-side term (read at ``j``) compared by ``== < <= > >= !=`` with an affine
  expression of a query-side term (``x + c``, small offsets) or with a constant; and ``always``;
- ``count`` of a select (its width), and ``aggregate`` of a value over it: a numerical or boolean
  term (a rule included) averaged, a categorical one moved as its code (only where the select
  picks at most one key);
- the terms themselves and reads of them at another position, as tables; tables of two terms.

Every expression is written in the theory language (``spec/_expr.py``) and its values computed
here at once in numpy, with the language's semantics (a read outside the sequence is -1, an
aggregate selecting nothing 0), so thousands are valued in a second; ``tests`` check those values
against the language's own evaluation. A variable the search accepts becomes a term of the next
step, so depth comes from composition. Nothing here names a program: names are spelt from the
expressions (``count_token_lt_token``).

A first token that never varies is a beginning-of-sequence marker: selects leave its key out
(``j > 0 and ...``). Where the network is causal (its recorded attention never reads a later
position), no select does either (``j <= i and ...``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field

import numpy as np

from theorycraft.spec import Grammar, evaluate_variables

OPS = {"==": ("eq", np.equal), "<": ("lt", np.less), "<=": ("le", np.less_equal), ">": ("gt", np.greater),
       ">=": ("ge", np.greater_equal), "!=": ("ne", np.not_equal)}
MAX_CODES = 64  # a term with at most this many integer values is categorical (a table); else numerical
MAX_CONSTANTS = 8  # a term compared with each of its values where it takes at most this many
MAX_NAME = 64
MAX_CONJUNCTIONS = 512  # pairs of rules offered as one boolean, at most
WORDS = {**{op: word for op, (word, _) in OPS.items()}, "-": "minus", "+": "plus"}  # operators, spelt in names
ATOMS = {"token": "token[i]", "pos": "i"}  # the input's atoms, by name: what they read at the query  # longer names are cut and end in a digest of the expression


@dataclass
class Term:
    """A value at every position: how it reads at the query (``i``) and at a key (``j``)."""

    name: str
    query: str  # text at the query position: token[i], i, x, token[i - 1]
    key: str  # text at the key position: token[j], j, x[j], token[j - 1]
    values: np.ndarray  # [N, T] on the sample
    kind: str = ""  # categorical | numerical | boolean (from the values)
    definition: str | None = None  # the expression of a new variable; None for an atom or a held variable
    shift_of: str | None = None  # the term it reads k positions back

    def __post_init__(self):
        if not self.kind:
            self.kind = kind_of_values(self.values)


@dataclass(frozen=True)
class Proposal:
    """A variable the grammar offers: its expression, its values on the sample, how it is read out."""

    name: str
    expression: str  # in the theory language, over the query position i
    values: np.ndarray = field(compare=False, repr=False)
    kind: str = "categorical"
    reads: tuple[str, ...] = ()  # for a table of two terms: what each reads at the query (the lookup's ``of``)
    parts: tuple[str, ...] = ()  # and their names
    codes: np.ndarray | None = field(default=None, compare=False, repr=False)  # a table's cell of each position


def kind_of_values(values: np.ndarray) -> str:
    v = np.asarray(values)
    if v.dtype == bool or set(np.unique(v).tolist()) <= {0, 1}:
        return "boolean"
    if np.all(v == np.round(v)) and len(np.unique(v)) <= MAX_CODES:
        return "categorical"
    return "numerical"


def slug(name: str, expression: str) -> str:
    """A valid variable name, at most MAX_NAME characters (cut names end in the expression's digest)."""
    name = re.sub(r"==|!=|<=|>=|<|>|-|\+", lambda m: f"_{WORDS[m[0]]}_", name)
    name = re.sub(r"_+", "_", re.sub(r"\W", "_", name)).strip("_") or "v"
    name = name if name[0].isalpha() else f"v_{name}"
    if len(name) <= MAX_NAME:
        return name
    return f"{name[:MAX_NAME - 9]}_{hashlib.blake2b(expression.encode(), digest_size=4).hexdigest()}"


def shifted(values: np.ndarray, k: int) -> np.ndarray:
    """x[i - k]: -1 where i - k is outside the sequence (the language's rule)."""
    out = np.full_like(values, -1)
    out[:, k:] = values[:, :-k] if k else values
    return out


def terms(tokens: np.ndarray, variables, config: Grammar) -> list[Term]:
    """The atoms, the theory's variables (``variables``: name -> Expr, in dependency order), and
    reads of the categorical ones ``k`` positions back."""
    n, t = tokens.shape
    tokens = np.asarray(tokens)
    out = [Term("token", ATOMS["token"], "token[j]", tokens.astype(np.float64), "categorical"),
           Term("pos", ATOMS["pos"], "j", np.broadcast_to(np.arange(t, dtype=np.float64), (n, t)).copy(), "categorical")]
    values = evaluate_variables(dict(variables), tokens, np) if variables else {}
    for name, value in values.items():
        out.append(Term(name, name, f"{name}[j]", np.broadcast_to(np.asarray(value, np.float64), (n, t)).copy()))
    for term in list(out):
        if term.name == "pos" or term.kind != "categorical":
            continue
        for k in config.shifts:
            if k >= t:
                continue
            at = "token" if term.name == "token" else term.name
            out.append(Term(f"{term.name}_prev{k}", f"{at}[i - {k}]", f"{at}[j - {k}]",
                            shifted(term.values, k), "categorical", definition=f"{at}[i - {k}]", shift_of=term.name))
    return out


def constants_of(term: Term) -> list[int]:
    values = np.unique(term.values)
    values = values[values >= 0]
    return [int(v) for v in values] if len(values) <= MAX_CONSTANTS and term.kind != "numerical" else []


def rules(atoms: list[Term]) -> list[Term]:
    """A categorical term compared with each constant it takes, and two compared with each other."""
    out = []
    codes = [a for a in atoms if a.kind == "categorical"]
    for x in codes:
        for c in constants_of(x):
            for op in ("==", "<"):
                word, f = OPS[op]
                out.append(Term(f"{x.name}_{word}_{c}", f"{x.query} {op} {c}", f"{x.key} {op} {c}",
                                f(x.values, c), "boolean", definition=f"{x.query} {op} {c}", shift_of=x.shift_of))
    for x, y in itertools.combinations(codes, 2):
        for op in ("==", "<"):
            word, f = OPS[op]
            out.append(Term(f"{x.name}_{word}_{y.name}", f"{x.query} {op} {y.query}", f"{x.key} {op} {y.key}",
                            f(x.values, y.values), "boolean", definition=f"{x.query} {op} {y.query}",
                            shift_of=x.shift_of or y.shift_of))
    return out


def conjunctions(derived: list[Term], atoms: list[Term]) -> list[Term]:
    """Two rules at once (``a and b``): a term equal to a constant, or a boolean variable the
    theory holds, with another such of a different term; at most MAX_CONJUNCTIONS, the held
    variables' first."""
    base = lambda t: t.shift_of or t.name  # noqa: E731  (a read back is of the term it reads)
    held = [a for a in atoms if a.kind == "boolean" and a.definition is None]
    equal = [r for r in derived if " == " in (r.definition or "") and not re.search(r"==\s*[A-Za-z(]", r.definition)]
    parts = held + equal
    out = []
    for x, y in itertools.combinations(parts, 2):
        if base(x) == base(y) or x.name.split("_eq_")[0] == y.name.split("_eq_")[0]:
            continue
        out.append(Term(f"{x.name}_and_{y.name}", f"{x.query} and {y.query}", f"{x.key} and {y.key}",
                        np.logical_and(x.values, y.values), "boolean", definition=f"{x.query} and {y.query}",
                        shift_of=x.shift_of or y.shift_of))
        if len(out) >= MAX_CONJUNCTIONS:
            break
    return out


def _plus(text: str, c: int) -> str:
    return text if c == 0 else f"{text} + {c}" if c > 0 else f"{text} - {-c}"


def _offset_name(c: int) -> str:
    return "" if c == 0 else f"_plus{c}" if c > 0 else f"_minus{-c}"


def selects(atoms: list[Term], bos: bool, config: Grammar, causal: bool = False):
    """(name, condition text, mask [N, T_query, T_key]) of every select: always; a key-side term
    against a query-side one, ``==`` and ``!=`` at every offset, ``< <= > >=`` at offset 0 (on
    integers an offset only turns one into another); a term against its reflection, or a
    variable the theory holds against the position's and the position against the variable's
    (``x[j] == c - y``: the query side with coefficient -1, every constant ``c`` the two sides can
    meet at); a term and the position ordered together (``x[j] * T + j < x * T + i``, and with the
    position's coefficient -1: ties broken by position, either way). The theory's own variables
    come first (newest first: depth grows from them), then the atoms; last, a key-side term
    against each constant it takes."""
    n, t = atoms[0].values.shape
    keep = np.ones((1, 1, t), bool)
    keep[..., 0] = not bos
    if causal:  # a causal network's position never reads a later one: neither does a select of its theory
        keep = keep & np.tril(np.ones((t, t), bool))[None]
    prefix = " and ".join((["j > 0"] if bos else []) + (["j <= i"] if causal else []))
    yield "all", prefix or "true", np.broadcast_to(keep, (n, t, t))
    prefix = f"{prefix} and " if prefix else ""
    sides = [a for a in atoms if a.kind != "numerical" and not (a.definition and a.shift_of not in ATOMS)]
    held = [a for a in sides if a.name not in ATOMS and a.definition is None][::-1]

    def rank(*used: Term) -> int:
        return min([held.index(a) for a in used if a in held], default=len(held))

    specs = []  # (rank, order, name, condition, mask of the values) before any mask is computed
    for order, c in enumerate(config.offsets):
        for key in sides:
            for query in sides:
                for op, (word, f) in OPS.items():
                    if c == 0 or op in ("==", "!="):
                        specs.append((rank(key, query), order, f"{key.name}_{word}_{query.name}{_offset_name(c)}",
                                      f"{key.key} {op} {_plus(query.query, c)}",
                                      lambda key=key, query=query, f=f, c=c:
                                      f(key.values[:, None, :], query.values[:, :, None] + c)))
    later = len(config.offsets)
    position = next(a for a in sides if a.name == "pos")
    mirrored = [(x, x) for x in sides] + [(x, position) for x in held] + [(position, x) for x in held]
    for key, query in mirrored:
        low = min(np.min(a.values[a.values >= 0], initial=0) for a in (key, query))
        high = max(np.max(a.values, initial=0) for a in (key, query))
        for c in range(int(2 * low), int(2 * high) + 1):
            specs.append((rank(key, query), later, f"{key.name}_eq_{c}_minus_{query.name}",
                          f"{key.key} == {c} - {_paren(query.query)}",
                          lambda key=key, query=query, c=c: key.values[:, None, :] == c - query.values[:, :, None]))
    for x in sides:
        if x.name == "pos":
            continue
        for sign, side in ((1, "pos"), (-1, "rpos")):
            key = x.values[:, None, :] * t + sign * np.arange(t)[None, None, :]
            query = x.values[:, :, None] * t + sign * np.arange(t)[None, :, None]
            for op in ("<", ">"):
                word, f = OPS[op]
                specs.append((rank(x), later + 1, f"{x.name}_{side}_{word}_{x.name}_{side}",
                              f"{_paren(x.key)} * T {'+' if sign > 0 else '-'} j {op} "
                              f"{_paren(x.query)} * T {'+' if sign > 0 else '-'} i",
                              lambda key=key, query=query, f=f: f(key, query)))
    specs.sort(key=lambda s: s[:2])  # stable: within a rank and an order, as enumerated
    for _, _, name, condition, mask in specs:
        yield name, f"{prefix}{condition}", mask() & keep
    for key in sides:
        for c in constants_of(key):
            for op, (word, f) in OPS.items():
                yield (f"{key.name}_{word}_{c}", f"{prefix}{key.key} {op} {c}",
                       np.broadcast_to(f(key.values[:, None, :], c) & keep, (n, t, t)))


def _paren(text: str) -> str:
    """``text`` as an operand of ``*`` or ``-``: in parentheses where it is a sum or difference."""
    return f"({text})" if re.search(r"\s[-+]\s", text.replace("[i - ", "[").replace("[j - ", "[")) else text


def propose(tokens: np.ndarray, variables, config: Grammar, bos: bool, causal: bool = False,
            extra: tuple = ()) -> tuple[list[Proposal], int]:
    """What one step of the grammar derives from the theory's ``variables`` (name -> Expr, in
    dependency order) over ``tokens`` (the sample): the terms themselves (tables), tables of two
    terms, rules, counts and aggregates; simplest first, at most ``config.generated`` enumerated.
    Kept only where new: a categorical variable that is a function of the token, the position or
    a variable held (a table of that says as much) or that splits the positions as an earlier one
    does, or a numerical one that is an affine map of an earlier one, is left out. Returns
    (proposals, how many were enumerated). ``extra``: selects found elsewhere (name, condition,
    mask [N, T, T] on ``tokens``: what a head's recorded pattern points at), aggregated first.

    Besides: the sum and the difference of two categorical terms of which one is a held variable
    (``x + y``, ``x - y``); and where a select picks at most two keys, the sum of a categorical
    value over them (``sum(j: x[j] if ... else 0)``: what a head that splits its weight between
    two keys moves)."""
    atoms = terms(tokens, variables, config)
    derived = rules(atoms)
    held = [partition(a.values) for a in atoms if a.definition is None and a.kind == "categorical"]
    seen: set[str] = set()
    out: list[Proposal] = []
    count = [0]

    def new(values: np.ndarray, kind: str, z: np.ndarray | None):
        """None where not new; else the partition the values make (None for a numerical one)."""
        codes = None
        if kind == "numerical":
            z = _standard(values[..., None])[..., 0] if z is None else z
            if not z.any():
                return None
            key = _digest(z)
        else:
            codes = partition(values)
            if codes.max() == 0 or (kind == "categorical" and any(_function_of(codes, h) for h in held)):
                return None
            key = _digest(codes)
        if key in seen:
            return None
        seen.add(key)
        return codes if codes is not None else False

    def offer(name: str, expression: str, values: np.ndarray, kind: str, reads=(), z=None, parts=()) -> bool:
        count[0] += 1
        codes = partition(values) if reads else new(values, kind, z)
        if codes is not None:
            out.append(Proposal(slug(name, expression), expression, values, kind, reads, parts,
                                codes if codes is not False else None))
        return count[0] < config.generated

    for term in atoms:  # the terms themselves, as tables (a held variable's: its component)
        codes = partition(term.values) if term.kind != "numerical" else None
        seen.add(_digest(codes) if codes is not None else "")
        out.append(Proposal(term.name, term.definition or term.query, term.values, term.kind, codes=codes))
    if config.pairs:  # categorical terms, and boolean variables the theory holds (a found condition)
        codes = [a for a in atoms if a.kind == "categorical" or (a.kind == "boolean" and a.definition is None)]
        for x, y in itertools.combinations(codes, 2):
            joint = (x.values + 1) * (y.values.max() + 2) + (y.values + 1)
            if not offer(f"{x.name}_by_{y.name}", f"{x.query}, {y.query}", joint, "pair", (x.query, y.query),
                         parts=(x.name, y.name)):
                return out, count[0]
    for rule in derived + conjunctions(derived, atoms):
        if not offer(rule.name, rule.definition, rule.values, "boolean"):
            return out, count[0]
    for name, expression, values in arithmetic(atoms):
        if not offer(name, expression, values, kind_of_values(values)):
            return out, count[0]
    # averaged: numerical and boolean terms, and rules of unshifted terms; moved as a code: categorical terms
    averaged = [a for a in atoms if a.kind in ("numerical", "boolean")]
    averaged += [r for r in derived if r.shift_of is None and not r.name.startswith("pos_")]
    codes = [a for a in atoms if a.kind == "categorical"]
    keep = np.ones((1, 1, tokens.shape[1]), bool)
    keep[..., 0] = not bos
    keep = keep & (np.tril(np.ones((tokens.shape[1],) * 2, bool))[None] if causal else True)
    prefix = " and ".join((["j > 0"] if bos else []) + (["j <= i"] if causal else []))
    found = [(name, f"{prefix} and ({condition})" if prefix else condition, mask & keep)
             for name, condition, mask in extra]
    for name, condition, mask in itertools.chain(found, selects(atoms, bos, config, causal)):
        width = mask.sum(-1)
        if not offer(f"count_{name}", f"count(j: {condition})", width.astype(np.float64), "categorical"):
            return out, count[0]
        values = averaged + (codes if width.max() <= 1 else [])
        means = np.einsum("nqk,nkv->nqv", mask.astype(np.float64), np.stack([v.values for v in values], -1))
        means = np.where(width[..., None] > 0, means / np.maximum(width, 1)[..., None], 0.0)
        standard = _standard(means)
        for k, value in enumerate(values):
            kind = "categorical" if value.kind == "categorical" else "numerical"
            if not offer(f"{value.name}_where_{name}", f"aggregate(j: {condition}, {value.key})", means[..., k], kind,
                         z=standard[..., k]):
                return out, count[0]
        if width.max() == 2:  # the sum of a code over two keys (an integer: a table's key)
            for value in codes:
                total = np.einsum("nqk,nk->nq", mask.astype(np.float64), value.values)
                if not offer(f"{value.name}_sum_{name}", f"sum(j: {value.key} if {condition} else 0)", total,
                             kind_of_values(total)):
                    return out, count[0]
    return out, count[0]


def arithmetic(atoms: list[Term]):
    """(name, expression, values) of the sum and the difference of a held categorical variable and
    another categorical term read at the query (the token, the position, a held variable after
    it); ``x - y`` and ``y - x`` split the positions alike, so one is offered."""
    codes = [a for a in atoms if a.kind == "categorical" and a.shift_of is None]
    held = [a for a in codes if a.definition is None and a.name not in ATOMS]
    for x in held:
        for y in codes:
            if y is x or (y in held and held.index(y) < held.index(x)):
                continue
            yield f"{x.name}_plus_{y.name}", f"{x.query} + {y.query}", x.values + y.values
            yield f"{x.name}_minus_{y.name}", f"{x.query} - {_paren(y.query)}", x.values - y.values


def _standard(values: np.ndarray) -> np.ndarray:
    """Each column of ``values [..., V]`` centred, scaled and signed (its first nonzero value
    positive), rounded: equal for two columns that are affine maps of each other; 0 where constant."""
    flat = values.reshape(-1, values.shape[-1])
    spread = flat.std(0)
    z = np.round((flat - flat.mean(0)) / np.where(spread > 1e-9, spread, np.inf), 6)
    first = z[np.argmax(z != 0, axis=0), np.arange(z.shape[1])]
    return (z * np.where(first < 0, -1.0, 1.0)).reshape(values.shape) + 0.0


def partition(values: np.ndarray) -> np.ndarray:
    """The partition ``values`` make of the positions, labelled in order of first appearance (the
    same for any one-to-one relabelling of the values)."""
    _, first, inverse = np.unique(values.reshape(-1), return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _function_of(codes: np.ndarray, of: np.ndarray) -> bool:
    """Whether ``codes`` is a function of ``of`` (each value of ``of`` goes with one of ``codes``)."""
    width = int(codes.max()) + 1
    return np.count_nonzero(np.bincount(of * width + codes)) == int(of.max()) + 1


def _digest(values: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(np.asarray(values, np.float32)).view(np.uint8).reshape(-1),
                           digest_size=16).hexdigest()


def is_bos(tokens: np.ndarray) -> bool:
    """A first token that never varies (and sequences longer than it) marks the beginning."""
    tokens = np.asarray(tokens)
    return tokens.ndim == 2 and tokens.shape[1] > 1 and len(np.unique(tokens[:, 0])) == 1
