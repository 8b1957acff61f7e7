"""Theory search: grow a theory greedily where it buys bits, prune what does not pay.

Each step ranks every candidate of the vocabulary by a cheap estimate (``_proxy``: the ridge gain
of its features on the current residual, from per-candidate sufficient statistics computed in
batches under jit), then fits and scores the best few for real: held-out MDL (the theory's bits
+ the test residual's bits, ``theorycraft.scoring``). The candidate that lowers the total most
is taken; then every part of the theory is offered for removal, and a removal that lowers the
total is taken too. The search stops when nothing pays, or at its budget.

Totals are comparable across steps because the sites being explained stay fixed: a site the
theory does not predict yet is sent as its training mean plus the residual around it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from theorycraft.inference._compile import make_plan, site_rows
from theorycraft.inference._fit import FitConfig, fit, load_examples, site_shapes
from theorycraft.inference._fitted import FittedTheory, count_params
from theorycraft.inference.kinds import kind_of
from theorycraft.scoring import examples_of, measure
from theorycraft.scoring._codes import gaussian_bits
from theorycraft.scoring._heldout import values_of
from theorycraft.scoring._mdl import residual_bits
from theorycraft.spec import Theory

from . import _proxy
from ._vocabulary import Vocabulary, drop_reads, candidates, readout_name, rebuild

PROXY_SAMPLE = 4096  # training examples the candidate estimates are computed on


@dataclass
class Assessment:
    """One theory, fitted on the training split and scored on the test split."""

    theory: Theory
    fitted: FittedTheory
    bits_theory: float
    bits_residual: float
    coverage: float
    r2: dict[str, float]
    params: int

    @property
    def bits_total(self) -> float:
        return self.bits_theory + self.bits_residual


@dataclass
class Judge:
    """Fits and scores theories on one capture, over a fixed set of explained sites."""

    start: Theory
    acts: object
    explained: list[str]
    config: FitConfig = field(default_factory=lambda: FitConfig(progress=False))

    def __post_init__(self):
        self.data = load_examples(self.start, self.acts)
        self.shapes = site_shapes(self.start, self.acts.sites)
        bare = Theory(self.start.name, self.start.target, dict(self.start.sites), {}, {})
        self.mean = fit(bare, self.acts, self.config, data=self.data, evaluate=False)
        self.examples = examples_of(self.mean, self.acts, self.data)
        self.mean_bits, self.mean_sse = {}, {}
        for s in self.explained:  # a site sent as its mean: the mean's bits + the residual's
            one = Theory(self.start.name, self.start.target, {s: self.start.sites[s]}, {}, {})
            alone = FittedTheory(one, make_plan(one, {s: self.shapes[s]}, self.acts.vocab_size), {},
                                 {s: self.mean.means[s]}, self.acts.vocab_size)
            size = measure(alone, self.examples)
            self.mean_sse[s] = size.sse[s]
            self.mean_bits[s] = size.bits + gaussian_bits(size.sse[s], values_of(alone, s, len(self.examples.test)),
                                                          self.examples.precision[s])
        self.seen: dict[str, Assessment] = {}

    def assess(self, theory: Theory) -> Assessment:
        key = theory.to_yaml()
        if key in self.seen:
            return self.seen[key]
        fitted = fit(theory, self.acts, self.config, data=self.data, evaluate=False)
        predicted = [s for s in self.explained if theory.predictors(s)]
        sse = dict(self.mean_sse)
        if predicted:
            size = measure(fitted, self.examples)
            bits = size.bits
            residual = residual_bits(fitted, size.sse, len(self.examples.test), self.examples.precision)
            sse.update({s: size.sse[s] for s in predicted})
        else:
            bits, residual = 0.0, 0.0
        residual += sum(self.mean_bits[s] for s in self.explained if s not in predicted)
        sst = self.examples.sst
        result = Assessment(theory, fitted, bits, residual,
                            1 - sum(sse[s] for s in self.explained) / sum(sst[s] for s in self.explained),
                            {s: 1 - sse[s] / sst[s] for s in self.explained}, count_params(fitted.params))
        self.seen[key] = result
        return result

    def residuals(self, assessment: Assessment, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per explained site, target − prediction on examples ``rows`` (in the site's rows)."""
        batch = {k: v[rows] for k, v in self.data.items()}
        fitted = assessment.fitted
        preds = fitted.predict(batch["inputs"], {s: batch[s] for s in self.start.sites}) if fitted.theory.components else {}
        out = {}
        for s in self.explained:
            y = site_rows(fitted.plan, s, batch[s])
            out[s] = y - (site_rows(fitted.plan, s, preds[s]) if s in preds else self.mean.means[s])
        return out


@dataclass
class Step:
    action: str
    theory: str  # the YAML
    bits_theory: float
    bits_residual: float
    bits_total: float
    coverage: float
    r2: dict[str, float]
    params: int
    seconds: float

    def as_dict(self) -> dict:
        return {"action": self.action, "bits_theory": round(self.bits_theory), "bits_residual": round(self.bits_residual),
                "bits_total": round(self.bits_total), "coverage": round(self.coverage, 6),
                "r2": {s: round(v, 6) for s, v in self.r2.items()}, "params": self.params,
                "seconds": round(self.seconds, 1), "theory": self.theory}


@dataclass
class SearchResult:
    best: Assessment  # the found theory, fitted and scored
    trail: list[Step]
    stopped: str
    vocabulary: Vocabulary


def removals(theory: Theory, protect: str = "") -> list[tuple[str, Theory]]:
    """Every theory one part smaller: a component gone (with what only it fed), or one item of a
    merged list (a frequency, a condition). Read-outs go with their features, not alone."""
    out = []
    for name, c in theory.components.items():
        if name == protect or name == readout_name(c.predicts or ""):
            continue
        data = theory.to_dict()
        components = dict(data["components"])
        components.pop(name)
        drop_reads(components, name)
        out.append((f"remove {name}", rebuild({**data, "components": components})))
        key = kind_of(c).merges
        if key and len(getattr(c, key)) > 1:
            for item in getattr(c, key):
                data = theory.to_dict()
                kept = [x for x in data["components"][name][key] if str(x) != str(item)]
                data["components"][name] = {**data["components"][name], key: kept}
                out.append((f"{name} -= {item}", rebuild(data)))
    return out


def shortlist(ranked: list, tries: int) -> list:
    """The candidates worth a real fit: the best estimate of each template (estimates compare
    poorly across kinds), then the best of the rest, ``tries`` in all, best estimate first."""
    firsts = list({c.template: (c, g) for c, g in reversed(ranked)}.values())
    chosen = sorted(firsts, key=lambda cg: -cg[1])[:tries]
    rest = [cg for cg in ranked if cg not in chosen]
    return sorted(chosen + rest[:tries - len(chosen)], key=lambda cg: -cg[1])


def explained_sites(start: Theory, vocab: Vocabulary) -> list[str]:
    """The sites a search explains: those its vocabulary predicts and those the start predicts."""
    return list(dict.fromkeys(vocab.sites + [s for s in start.sites if start.predictors(s)]))


def search(start: Theory, acts, vocab: Vocabulary, *, judge: Judge | None = None, budget_bits: float | None = None,
           budget_seconds: float | None = None, tries: int = 4, log: Callable[[str], None] = lambda s: None
           ) -> SearchResult:
    began = time.time()
    judge = judge or Judge(start, acts, explained_sites(start, vocab))
    trail: list[Step] = []
    state: dict[str, str] = {}  # component -> the template it came from

    def record(action: str, a: Assessment) -> None:
        trail.append(Step(action, a.theory.to_yaml(), a.bits_theory, a.bits_residual, a.bits_total, a.coverage,
                          a.r2, a.params, time.time() - began))
        log(f"[{time.time() - began:6.0f}s] {action}: {a.bits_total:,.0f} bits (theory {a.bits_theory:,.0f}), "
            f"coverage {a.coverage:.4f}, {a.params:,} params")

    def out_of_time() -> bool:
        return budget_seconds is not None and time.time() - began > budget_seconds

    current = judge.assess(start)
    record("start", current)
    best = {"now": current}  # the latest accepted theory, kept if the search is interrupted

    def prune(protect: str = "") -> None:
        while not out_of_time():
            options = [(action, judge.assess(t)) for action, t in removals(best["now"].theory, protect)]
            if not options:
                return
            action, smaller = min(options, key=lambda o: o[1].bits_total)
            if smaller.bits_total >= best["now"].bits_total:
                return
            best["now"] = smaller
            record(action, smaller)

    def grow() -> str:
        prune()
        rng = np.random.default_rng(0)
        while not out_of_time():
            current = best["now"]
            offered = candidates(vocab, current.theory, state=state)
            if not offered:
                return "the vocabulary is exhausted"
            train = judge.examples.train
            rows = np.sort(rng.choice(train, min(PROXY_SAMPLE, len(train)), replace=False))
            ranked = shortlist(_proxy.rank(offered, current, judge, rows), tries)
            log("  best estimates: " + ", ".join(f"{c.description} {g:+,.0f}" for c, g in ranked))
            chosen = None
            for cand, _ in ranked:
                a = judge.assess(cand.apply(current.theory))
                if budget_bits is not None and a.bits_theory > budget_bits:
                    continue
                if a.bits_total < (chosen[1].bits_total if chosen else current.bits_total):
                    chosen = (cand, a)
            if chosen is None:
                return ("nothing within the bit budget pays for itself" if budget_bits is not None
                        else "nothing in the vocabulary pays for itself")
            cand, best["now"] = chosen
            for old in cand.replaces:
                state.pop(old, None)
            state[cand.name] = cand.template
            record(f"add {cand.description}", best["now"])
            prune(protect=cand.name)
        return "time budget spent"

    try:
        stopped = grow()
    except KeyboardInterrupt:  # Ctrl-C: stop, and write what was found so far
        stopped = "interrupted"
    current = best["now"]
    log(f"stopped: {stopped}")
    return SearchResult(current, trail, stopped, vocab)

