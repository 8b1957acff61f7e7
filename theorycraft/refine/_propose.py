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

import time
from typing import Callable

import numpy as np

from theorycraft.inference.kinds.lookup import lookup_gain
from theorycraft.spec import Theory, evaluate, evaluate_variables, parse_expr, position_env

from ._grammar import ATOMS, Proposal, is_bos, propose
from ._proxy import bits_per_param, gain_bits
from ._vocabulary import Candidate, Vocabulary

SAMPLE_POSITIONS = 8192  # positions (examples × sequence length) the grammar's variables are valued on
PER_SITE = 3  # of the candidates sent on, at least this many are each site's best


def component_name(proposal: Proposal) -> str:
    return f"{proposal.name}_code"


def proposals(vocab: Vocabulary, current, judge, rows: np.ndarray,
              log: Callable[[str], None] = lambda s: None) -> list[Candidate]:
    """The grammar's best candidates for ``current`` (an Assessment) by the data; ``rows``: the
    training examples the step's estimates use (the grammar values the first of them)."""
    grammar = vocab.grammar
    if grammar is None or not grammar.sites:
        return []
    began = time.time()
    theory = current.theory
    length = judge.shapes[grammar.sites[0]][0]
    sample = rows[: max(16, SAMPLE_POSITIONS // length)]
    inputs = np.asarray(judge.data["inputs"][sample])
    found, enumerated = propose(inputs, theory.variables, grammar, is_bos(inputs))
    residual = judge.residuals(current, sample)
    per_param = bits_per_param(current)
    scored = []
    for site in grammar.sites:
        r = np.asarray(residual[site], np.float64)
        r = r - r.mean(0)
        sse = float((r ** 2).sum())
        gains = {p.name: (p, gain, cells) for p, gain, cells in _gains(found, r)}
        for p, gain, cells in gains.values():
            if p.kind == "pair":  # what a table of two buys beyond the tables of each
                gain -= sum(gains[q][1] for q in p.parts if q in gains)
            scored.append((gain_bits(gain, sse, r.size, judge, site) - per_param * cells * r.shape[1], site, p))
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


def _gains(found: list[Proposal], r: np.ndarray):
    """(proposal, gain in squared error on ``r``, parameters per output) of every proposal."""
    numeric = [p for p in found if p.kind in ("numerical", "boolean")]
    if numeric:
        z = np.stack([p.values.reshape(-1) for p in numeric], 1)
        z = z - z.mean(0)
        cross = z.T @ r
        gains = (cross ** 2).sum(1) / np.maximum((z ** 2).sum(0), 1e-12)
        yield from ((p, float(g), 1) for p, g in zip(numeric, gains))
    for p in found:
        if p.kind in ("categorical", "pair"):
            _, cells = np.unique(p.values.reshape(-1), return_inverse=True)
            reached = int(cells.max()) + 1
            yield p, lookup_gain(cells, reached, r), reached


class _Values:
    """Expressions' values over the whole capture (a table's size must hold every key)."""

    def __init__(self, theory: Theory, inputs: np.ndarray, vocab_size: int | None):
        self.env = position_env(inputs, np, evaluate_variables(theory.variables, inputs, np))
        self.vocab_size = vocab_size

    def size(self, text: str) -> tuple[int, bool]:
        """(table rows, whether a key falls outside them: -1, read before the sequence starts)."""
        values = np.asarray(evaluate(parse_expr(text), self.env))
        top = int(values.max()) + 1
        if text == ATOMS["token"] and self.vocab_size:
            top = max(top, self.vocab_size)
        return max(top, 1), bool((values < 0).any())


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
        if p.kind == "categorical":
            size, outside = full.size(ref if ref not in variables else p.expression)
            data = {"kind": "lookup", "of": ref, "size": size, **({"outside": "row"} if outside else {})}
        elif ref in ATOMS.values():
            return None  # (atoms are categorical)
        else:
            data = {"kind": "linear", "from": ref}
    data["predicts"] = site
    return Candidate(name, data["kind"], site, name, data, data, variables, label=p.name)
