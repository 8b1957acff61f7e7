"""Proposals the data points at: the grammar's variables (``_grammar``) ranked on the current
residual before anything is estimated or fitted.

Each step the grammar derives every variable one composition away from the theory's variables,
valued on a sample of training positions. At each of the grammar's sites a variable is priced as
what its component would buy on the site's residual R there, as ``diagnose`` reads a residual:
a categorical variable by its table's shrunk per-cell sums (``lookup_gain``), a numerical or
boolean one by its correlation with R, ‖Rᵀz‖² / ‖z‖² (its share of every residual direction it
correlates with, at once), minus its parameters at the theory's bits per parameter. The best
``estimated`` (variable, site) pairs become candidates, and the search estimates and fits those
beside its vocabulary's templates. A variable already read by a component is offered at another
site as that component's extension, never derived anew.

The log reports the budget each step: variables enumerated (at most ``generated``), distinct,
how fast they were valued, and how many went on to the estimates.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from theorycraft.inference.kinds import kind_of
from theorycraft.spec import Theory, evaluate, evaluate_variables, parse_expr, position_env

from ._grammar import (ATOMS, Proposal, _digest, _function_of, _standard, is_bos, partition, propose, selects, slug,
                       terms)
from ._proxy import bits_per_param, gain_bits
from ._vocabulary import Candidate, Vocabulary

SAMPLE_POSITIONS = 8192  # positions (examples × sequence length) the grammar's variables are valued on
PER_SITE = 3  # of the candidates sent on, at least this many are each site's best
PATTERN_PAIRS = 65536  # (query, key) pairs a pattern site's selects are judged on (4 to 64 examples)
PER_HEAD = 2  # selects proposed for each head of a pattern site


def component_name(proposal: Proposal) -> str:
    return f"{proposal.name}_code"


def proposals(vocab: Vocabulary, current, judge, rows: np.ndarray,
              log: Callable[[str], None] = lambda s: None) -> list[Candidate]:
    """The grammar's best candidates for ``current`` (an Assessment) by the data; ``rows``: the
    training examples the step's estimates use (the grammar values the first of them)."""
    grammar = vocab.grammar
    if grammar is None:
        return []
    out, pointed = [], {}  # pointed: the select each head's pattern points at -> its parts
    kept = [current.theory.sites[s].kept for s in grammar.sites]
    queries = None if not kept or any(k is None for k in kept) else sorted({q for k in kept for q in np.atleast_1d(k)})
    for site in grammar.patterns:
        out += _heads(site, vocab, current, judge, rows, log, pointed, queries)
    return out + (_tables(vocab, current, judge, rows, log, causal(judge, grammar.patterns, rows), pointed)
                  if grammar.sites else [])


def causal(judge, patterns, rows: np.ndarray) -> bool:
    """Whether the network's recorded attention (its pattern sites ``patterns``, on a few
    examples) never puts weight on a later position: then the grammar's selects do not either.
    False without a pattern site (nothing says so)."""
    for site in patterns:
        shape = judge.shapes[site]  # [head, query, key]
        recorded = np.asarray(judge.data[site][rows[:16]], np.float64).reshape(-1, *shape)
        if np.abs(np.triu(recorded, 1)).max(initial=0.0) > 1e-6:
            return False
    return bool(patterns)


def _tables(vocab: Vocabulary, current, judge, rows: np.ndarray, log, causal: bool = False,
            pointed: dict | None = None) -> list[Candidate]:
    """The grammar's variables at its sites over positions, best by the data first (``causal``:
    no select reads a later position; ``pointed``: selects the heads' patterns point at, condition
    -> the conditions it joins by ``or``, aggregated before the grammar's own)."""
    grammar = vocab.grammar
    began = time.time()
    theory = current.theory
    length = np.asarray(judge.data["inputs"][rows[:1]]).shape[1]  # the sequence, whatever positions a site keeps
    sample = rows[: max(16, SAMPLE_POSITIONS // length)]
    inputs = np.asarray(judge.data["inputs"][sample])
    extra = _pointed(pointed or {}, theory, inputs, vocab)
    found, enumerated = propose(inputs, theory.variables, grammar, is_bos(inputs), causal, extra)
    residual = judge.residuals(current, sample)
    per_param = bits_per_param(current)
    designs: dict = {}  # by the positions a site keeps: its rows are those positions of each example
    scored = []
    for site in grammar.sites:
        kept = theory.sites[site].kept
        key = None if kept is None else tuple(np.atleast_1d(kept).tolist())
        design = designs.get(key) or designs.setdefault(key, _Design(found, kept))
        r = np.asarray(residual[site], np.float64)
        r = r - r.mean(0)
        sse = float((r ** 2).sum())
        gains = design.gains(r)
        for k, parts in design.pairs:  # what a table of two buys beyond the tables of each
            gains[k] -= gains[parts].sum()
        bits = gain_bits(gains, sse, r.size, judge, site) - per_param * design.cells * r.shape[1]
        bits[design.repeats] = -np.inf
        scored += [(b, site, p) for b, p in zip(bits.tolist(), found)]
    scored.sort(key=lambda s: -s[0])
    valued = time.time() - began
    full = _Values(theory, np.asarray(judge.acts.inputs()), judge.acts.vocab_size)
    out, taken = [], set()
    for best_of_site in (True, False):
        for bits, site, p in scored:
            if len(out) >= grammar.estimated:
                break
            if (site, p.name) in taken or (best_of_site and sum(c.site == site for c in out) >= PER_SITE):
                continue
            cand = candidate(p, site, theory, vocab, full)
            taken.add((site, p.name))
            if cand is not None:
                out.append(cand)
    log(f"  grammar: {enumerated:,} variables enumerated (budget {grammar.generated:,}), {len(found):,} distinct, "
        f"valued at {len(grammar.sites)} sites in {valued:.1f} s ({len(found) * len(grammar.sites) / max(valued, 1e-9):,.0f}"
        f"/s); the best {len(out)} go on to the estimates: "
        + ", ".join(f"{c.description} at {c.site}" for c in out[:6]) + (" ..." if len(out) > 6 else ""))
    return out


class _Design:
    """Every proposal's features on the sample, to price them all on a residual at once: numerical
    and boolean ones as columns (a linear read-out's gain ‖Rᵀz‖²/‖z‖²), categorical ones as the
    cells of their tables, all in one sparse one-hot matrix (the lookup kind's estimate,
    ``lookup_gain``: Σ over reached cells ‖Σ r‖² / (count + 1), for every table in one product)."""

    def __init__(self, found: list[Proposal], kept=None):
        """``kept``: the positions a site keeps (its ``Site.kept``), None for every position."""
        from scipy import sparse

        self.repeats = np.zeros(len(found), bool)
        if kept is not None:  # a site of kept positions has a row per example and kept position
            found = [replace(p, values=_at(p.values, kept), codes=None) for p in found]  # cells reached there
            self.repeats = repeats(found)
        self.numeric = [k for k, p in enumerate(found) if p.kind in ("numerical", "boolean")]
        self.tables = [k for k, p in enumerate(found) if p.kind in ("categorical", "pair")]
        self.cells = np.ones(len(found), np.int64)  # parameters per output: a column, or a row per reached cell
        z = np.stack([found[k].values.reshape(-1) for k in self.numeric], 1) if self.numeric else None
        self.z = None if z is None else z - z.mean(0)
        self.norms = None if z is None else np.maximum((self.z ** 2).sum(0), 1e-12)
        columns, starts = [], [0]
        for k in self.tables:
            codes = found[k].codes if found[k].codes is not None else partition(found[k].values)
            self.cells[k] = int(codes.max()) + 1
            columns.append(codes.reshape(-1) + starts[-1])
            starts.append(starts[-1] + self.cells[k])
        self.starts = np.asarray(starts[:-1], np.int64)
        if columns:
            cells = np.concatenate(columns)
            rows = np.tile(np.arange(len(columns[0])), len(columns))
            self.onehot = sparse.csr_matrix((np.ones(len(cells)), (cells, rows)), shape=(starts[-1], len(columns[0])))
            self.counts = np.asarray(self.onehot.sum(1)).reshape(-1)
        self.size = len(found)
        index = {p.name: k for k, p in enumerate(found)}
        self.pairs = [(k, [index[q] for q in p.parts if q in index]) for k, p in enumerate(found) if p.kind == "pair"]

    def gains(self, r: np.ndarray) -> np.ndarray:
        """Each proposal's gain in squared error on the residual ``r`` [rows, width]."""
        out = np.zeros(self.size)
        if self.numeric:
            cross = self.z.T @ r
            out[self.numeric] = (cross ** 2).sum(1) / self.norms
        if self.tables:
            sums = self.onehot @ r
            per_cell = (sums ** 2).sum(1) / (self.counts + 1.0)
            out[self.tables] = np.add.reduceat(per_cell, self.starts)
        return out


TERM = re.compile(r"i|\w+(\[i( - \d+)?\])?")  # a term's own text: i, token[i], x, token[i - 1], x[i - 2]


def repeats(found: list[Proposal]) -> np.ndarray:
    """Which proposals say nothing new on these values (a site's kept positions, where variables
    distinct over the whole sequence may coincide): a categorical one that is a function of a
    term (the token, the position, a held variable, a read back: ``TERM``) or that splits the rows
    as an earlier one does, a numerical one that is an affine map of an earlier one. Each term
    keeps its own table; a table of two is never a repeat."""
    out = np.zeros(len(found), bool)
    seen: set[str] = set()
    held = []
    for k, p in enumerate(found):
        if p.kind == "pair":
            continue
        if p.kind == "numerical":
            key = _digest(_standard(p.values.reshape(-1, 1)))
        else:
            codes = partition(p.values)
            key = _digest(codes)
            term = TERM.fullmatch(p.expression) is not None
            out[k] = not term and (codes.max() == 0 or any(_function_of(codes, h) for h in held))
            if term and p.kind == "categorical":
                held.append(codes)
        out[k] |= key in seen
        seen.add(key)
    return out


def _at(values: np.ndarray, kept) -> np.ndarray:
    """``values`` [N, T] at the kept positions (an int or a list), as [N, K]."""
    return np.asarray(values)[:, np.atleast_1d(kept)]


class _Values:
    """Expressions' values over the whole capture (a table's size must hold every key)."""

    def __init__(self, theory: Theory, inputs: np.ndarray, vocab_size: int | None):
        self.env = position_env(inputs, np, evaluate_variables(theory.variables, inputs, np))
        self.vocab_size = vocab_size

    def size(self, text: str) -> tuple[int, bool]:
        """(table rows, whether a key falls outside them: -1, read before the sequence starts)."""
        values = np.asarray(evaluate(parse_expr(text), self.env))
        return max(int(values.max()) + 1, 1), bool((values < 0).any())


def candidate(p: Proposal, site: str, theory: Theory, vocab: Vocabulary, full: _Values) -> Candidate | None:
    """``p`` read out at ``site``: a table of a categorical variable (or of two), a linear map of
    a numerical or boolean one; None where a component reads it there already."""
    name = component_name(p)
    written = theory.to_dict().get("components", {})
    if name in theory.components:
        predicted = list(theory.components[name].predicted())
        if not predicted or site in predicted:
            return None
        sites = sorted(predicted + [site], key=list(theory.sites).index)
        return Candidate(name, written[name]["kind"], site, name, {**written[name], "predicts": sites},
                         {**written[name], "predicts": site}, dict(vocab.variables), label=f"{name}@{site}",
                         extends=site)
    variables = dict(vocab.variables)
    if p.kind == "pair":
        sizes = [full.size(text) for text in p.reads]
        data = {"kind": "lookup", "of": list(p.reads), "size": [s for s, _ in sizes]}
        if any(out for _, out in sizes):
            data["outside"] = "row"
    else:
        if p.name in theory.variables or p.expression in ATOMS.values():
            ref = p.name if p.name in theory.variables else p.expression
        else:
            ref, variables[p.name] = p.name, p.expression
        if p.kind == "categorical" and ref == ATOMS["token"] and full.vocab_size:
            data = {"kind": "lookup", "of": ref}  # sized by the target's vocabulary, the language's default
        elif p.kind == "categorical":
            size, outside = full.size(ref if ref not in variables else p.expression)
            data = {"kind": "lookup", "of": ref, "size": size, **({"outside": "row"} if outside else {})}
        elif ref in ATOMS.values():
            return None  # (atoms are categorical)
        else:
            data = {"kind": "linear", "from": ref}
    data["predicts"] = site
    return Candidate(name, data["kind"], site, name, data, data, variables, label=p.name)


def pattern_selects(theory: Theory, inputs: np.ndarray, vocab: Vocabulary):
    """(condition, [N, T, T] truth values) of every select the grammar offers a pattern site: each
    also with its key before the query (``and j < i``)."""
    atoms = terms(inputs, theory.variables, vocab.grammar)
    t = inputs.shape[1]
    before = np.tril(np.ones((t, t), bool), -1)
    for _, condition, mask in selects(atoms, False, vocab.grammar):
        yield condition, mask
        if condition != "true":
            yield f"{condition} and j < i", mask & before


def _pointed(pointed: dict, theory: Theory, inputs: np.ndarray, vocab: Vocabulary) -> list:
    """(name, condition, mask on ``inputs``) of each select a head's pattern points at."""
    if not pointed:
        return []
    parts = {c for joined in pointed.values() for c in joined}
    masks = {c: m for c, m in pattern_selects(theory, inputs, vocab) if c in parts}
    return [(f"head_{slug(c, c)}", c, np.logical_or.reduce([masks[p] for p in joined]))
            for c, joined in pointed.items() if all(p in masks for p in joined)]


DISJUNCTS = 6  # a head's best selects of which every two are tried joined by ``or``


def query_gains(mask: np.ndarray, recorded: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per head and query, what spreading the head evenly over the select's keys (``mask`` [n, T, T])
    gains in squared error over ``pred`` (``recorded``, ``pred``: [n, H, T, T]): ``attention_gain``
    by query [H, T]; 0 at a query the select leaves empty (the prediction stays there)."""
    t = mask.shape[-1]
    keys = np.broadcast_to(mask, (len(recorded), t, t)) & np.tril(np.ones((t, t), bool))
    counts = keys.sum(-1, keepdims=True)
    spread = (keys / np.maximum(counts, 1))[:, None]
    gain = ((pred - recorded) ** 2 - (spread - recorded) ** 2).sum(-1)  # [n, H, T]
    return np.where(counts[:, None, :, 0] > 0, gain, 0.0).sum(0)


def excess_mass(mask: np.ndarray, recorded: np.ndarray) -> np.ndarray:
    """Per head and query [H, T], summed over examples: the recorded weight (``recorded`` [n, H, T, T])
    on the select's keys (``mask`` [n, T, T]) less what a head spread evenly over the keys it may
    read would put there: how much more the head reads those keys than any others."""
    t = mask.shape[-1]
    causal = np.tril(np.ones((t, t), bool))
    keys = np.broadcast_to(mask, (len(recorded), t, t)) & causal
    share = keys.sum(-1) / causal.sum(-1)  # [n, T]
    return (np.einsum("nqk,nhqk->hq", keys.astype(np.float64), recorded) - share.sum(0)[None])


def _heads(site: str, vocab: Vocabulary, current, judge, rows: np.ndarray, log,
           pointed: dict | None = None, queries=None) -> list[Candidate]:
    """Each head's recorded pattern proposes the selects that best explain what the theory does
    not yet (the attention kind's own estimate, ``attention_gain``, on a sample), and two of its
    best joined by ``or`` (a head that splits its weight between two keys). ``pointed``, where
    given, gets what each head reads: the select (or two joined) that best describes its pattern
    beyond a head spread evenly (``excess_mass``), at the queries the grammar's sites keep
    (``queries``; None: every query). A head may read by a rule at the positions a format fixes,
    where its mean already predicts it (no attention rule gains there), and do something else
    elsewhere: condition -> its parts."""
    began = time.time()
    theory = current.theory
    shape = judge.shapes[site]
    sample = rows[:int(np.clip(PATTERN_PAIRS // (shape[1] * shape[2]), 4, 64))]
    recorded = np.asarray(judge.data[site][sample], np.float64).reshape(len(sample), *shape)
    pred = recorded - judge.residuals(current, sample)[site].reshape(len(sample), *shape)
    inputs = np.asarray(judge.data["inputs"][sample])
    at = slice(None) if queries is None else np.asarray(queries)
    best: dict[int, list] = {h: [] for h in range(shape[0])}
    reads: dict[int, list] = {h: [] for h in range(shape[0])}
    count = 0
    for condition, mask in pattern_selects(theory, inputs, vocab):
        count += 1
        for h, (gain, describes) in enumerate(zip(query_gains(mask, recorded, pred), excess_mass(mask, recorded))):
            best[h].append((float(gain.sum()), condition))
            reads[h].append((float(describes[at].sum()), condition))
    for scored in list(best.values()) + list(reads.values()):
        scored.sort(key=lambda g: -g[0])
    top = {c for scored in list(best.values()) + list(reads.values()) for _, c in scored[:DISJUNCTS]}
    masks = {c: m for c, m in pattern_selects(theory, inputs, vocab) if c in top}
    out = []
    for h in best:
        parts = {}
        for scored, measure in ((best[h], lambda m: query_gains(m, recorded, pred)[h].sum()),
                                (reads[h], lambda m: excess_mass(m, recorded)[h][at].sum())):
            pairs = {f"({a}) or ({b})": (a, b) for (_, a), (_, b) in itertools.combinations(scored[:DISJUNCTS], 2)}
            parts.update(pairs)
            scored += [(float(measure(masks[a] | masks[b])), c) for c, (a, b) in pairs.items()]
            scored.sort(key=lambda g: -g[0])
        for gain, rule in best[h][:PER_HEAD]:
            if gain > 0:
                out.append(_attention(site, h, rule, theory, vocab))
        if pointed is not None and reads[h] and reads[h][0][0] > 0:
            pointed[reads[h][0][1]] = parts.get(reads[h][0][1], (reads[h][0][1],))
    out = [c for c in out if c is not None]
    log(f"  grammar: {count:,} selects judged against {shape[0]} heads of {site} in {time.time() - began:.1f} s; "
        f"proposed: " + ", ".join(f"head {c.data['head']}: {c.data['rule']}" for c in out)
        + ("; the heads read: " + ", ".join(pointed) if pointed else ""))
    return out


def _attention(site: str, head: int, rule: str, theory: Theory, vocab: Vocabulary) -> Candidate | None:
    """An attention component taking over ``head`` with ``rule``; None where that head has it already."""
    data = {"kind": "attention", "rule": rule, "head": head, "predicts": site}
    taken = tuple(n for n, c in theory.components.items() if kind_of(c).takes_head and c.predicts == site
                  and (c.head or 0) == head)
    if any(str(theory.components[n].rule) == rule for n in taken):
        return None
    name = slug(f"{site}_{head}_{rule}", f"{site} {head} {rule}")
    return Candidate(f"{site}_heads", "attention", site, name, data, data, dict(vocab.variables), taken,
                     label=f"{slug(rule, rule)}_{head}")


def head_rules(vocab: Vocabulary, theory: Theory, inputs: np.ndarray, patterns: np.ndarray):
    """For each head of a pattern site (``patterns`` [N, H, T, T], recorded), the grammar's select
    whose keys, attended evenly, are closest to its mean pattern (cosine): (condition, cosine)."""
    t = patterns.shape[-1]
    causal = np.tril(np.ones((t, t), bool))
    best = [("", -1.0)] * patterns.shape[1]
    for condition, mask in pattern_selects(theory, inputs, vocab):
        keys = np.broadcast_to(mask, (len(inputs), t, t)) & causal
        spread = keys / np.maximum(keys.sum(-1, keepdims=True), 1)
        for h in range(patterns.shape[1]):
            a = patterns[:, h]
            cosine = float((a * spread).sum() / max(np.linalg.norm(a) * np.linalg.norm(spread), 1e-12))
            if cosine > best[h][1]:
                best[h] = (condition, cosine)
    return best
