"""Theory search: grow a theory greedily where it buys bits, prune what does not pay.

Each step ranks every candidate of the vocabulary by a cheap estimate (``_proxy``: the ridge gain
of its features on the current residual, from per-candidate sufficient statistics computed in
batches under jit), then fits (on the training split) and scores the best few for real: held-out MDL on the
*validation* split (the theory's bits + the validation residual's bits, ``theorycraft.scoring``).
The candidate that lowers that total most is taken; then every part of the theory is offered for
removal, and a removal that lowers it is taken too. The search stops when nothing pays, or at its
budget: the time budget is checked between fits and before every Adam step, so the step in flight
stops at it and the theory last accepted is kept. The test split is only reported: every step
records both totals.

Totals are comparable across steps because the sites being explained stay fixed: a site the
theory does not predict yet is sent as its training mean plus the residual around it.

Greedy acceptance can lock in a linear map between recorded sites (the residual stream keeps
the embedding: a map from it explains most of every later site at once), and with it the site
it reads as a declared input; the computation that explains both never pays for itself one
step at a time beside it. So when greedy growth stops on its own, the search changes its mind
(``change_mind``): it drops every such map, grows again from what remains with candidates that
compute from the input alone, and keeps whichever of the two theories has the lower
*free-running* validation total (a theory built from the input is meant to run free: each site
predicted from the input, not from the recorded sites before it). That is taken where every
site the maps predict has a template that computes it, and never under a bit budget.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import jax
import numpy as np

from theorycraft.inference.engine import (FitConfig, FittedTheory, Stopped, count_params, fit, load_examples, make_plan, resident,
                                         site_rows, site_shapes)
from theorycraft.inference.kinds import kind_of
from theorycraft.configs import SearchConfig, bytes_text, memory
from theorycraft._metrics import Metrics
from theorycraft.scoring import coverage, examples_of, measure, r2, residual_bits, squared_errors, total_bits
from theorycraft.spec import Theory, TheoryError, parse_theory

from . import _proxy
from ._grammar import ATOMS, neighbours, slug
from ._propose import proposals
from ._vocabulary import Candidate, Vocabulary, drop_reads, candidates, readout_name, rebuild, spec_of

PROXY_SAMPLE = 4096  # training examples the candidate estimates are computed on
CACHE_BYTES = SearchConfig().judge_cache  # parameters the judge keeps of theories it has assessed


@dataclass(frozen=True)
class Totals:
    """A theory's two-part code on one split: its bits, the residual's, and its fidelity."""

    bits_theory: float
    bits_residual: float
    coverage: float  # over the judge's explained sites
    r2: dict[str, float]
    coverage_free: float | None = None  # the same, free-running: from the input alone
    bits_residual_free: float | None = None  # the residual's bits, free-running

    @property
    def bits_total(self) -> float:
        return self.bits_theory + self.bits_residual

    @property
    def bits_total_free(self) -> float:
        """The two-part code with every site the theory predicts predicted from its inputs alone:
        what a theory meant to run free is judged on (the teacher-forced total where not measured)."""
        return self.bits_theory + (self.bits_residual if self.bits_residual_free is None else self.bits_residual_free)

    def as_dict(self) -> dict:
        return {"bits_theory": round(self.bits_theory), "bits_residual": round(self.bits_residual),
                "bits_total": round(self.bits_total), "coverage": round(self.coverage, 6),
                "r2": {s: round(v, 6) for s, v in self.r2.items()},
                **({} if self.coverage_free is None else {"coverage_free": round(self.coverage_free, 6)}),
                **({} if self.bits_residual_free is None else {"bits_residual_free": round(self.bits_residual_free)})}

    @classmethod
    def from_json(cls, data: dict) -> "Totals":
        return cls(data["bits_theory"], data["bits_residual"], data["coverage"], dict(data["r2"]),
                   data.get("coverage_free"), data.get("bits_residual_free"))


@dataclass(frozen=True)
class Assessment:
    """One theory, fitted on the training split; ``selection`` is its code on validation (every
    choice reads this), ``report`` its code on test (read only to report)."""

    theory: Theory
    fitted: FittedTheory
    selection: Totals
    report: Totals
    params: int
    bits_params: float | None = None  # of the theory's bits, its parameters' (not its spec, inputs or codes)


SPLITS = ("validation", "test")


def variables_of(theory: Theory, components) -> set[str]:
    """The variables ``components`` read, and the variables those read."""
    todo = [n for c in components for _, e in theory.components[c].expressions() for n, _ in e.names]
    todo += [r for c in components for r in theory.components[c].reads()]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in theory.variables and name not in seen:
            seen.add(name)
            todo += [n for n, _ in theory.variables[name].names]
    return seen


def same_component(theory: Theory, old: Theory, name: str) -> bool:
    """``name`` and all it reads (components, variables) are the same in both theories."""
    names, todo = {name}, [name]
    while todo:  # and every component it reads, transitively
        for r in theory.components[todo.pop()].reads():
            if r in theory.components and r not in names:
                names.add(r)
                todo.append(r)
    return (all(n in old.components and theory.components[n] == old.components[n] for n in names)
            and all(theory.variables.get(v) == old.variables.get(v) for v in variables_of(theory, names)))


def site_key(theory: Theory, site: str) -> str | None:
    """What a stagewise fit of ``site`` depends on, as text: its components and the variables they
    read; None where it also depends on another site's fit (a component it reads predicts, or is
    shared with, another site), or on nothing."""
    names = theory.upstream(site)
    others = set().union(*(theory.upstream(s) for s in theory.sites if s != site)) if len(theory.sites) > 1 else set()
    if not names or names & others or any(theory.components[n].predicts not in (None, site) for n in names):
        return None
    parts = [(n, theory.components[n].model_dump(mode="json", by_alias=True)) for n in sorted(names)]
    parts += [(v, str(theory.variables[v])) for v in sorted(variables_of(theory, names))]
    return json.dumps([site, parts], sort_keys=True, default=str)


def param_bytes(params) -> int:
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(params)))


@dataclass
class Judge:
    """Fits and scores theories on one capture, over a fixed set of explained sites. Its fits
    never see the validation split (no refit on it), so validation totals are honest.

    Assessments are kept, least recently used first out, while their parameters fit in
    ``cache_bytes``. With ``incremental``, a theory assessed against a ``base`` (the search's
    current theory) refits only the sites whose components differ from the base's, keeping the
    base's fitted parameters elsewhere, and the bits of a quantized tensor are reused wherever the
    same tensor is priced again (``scoring.measure``'s ``prices``)."""

    start: Theory
    acts: object
    explained: list[str]
    config: FitConfig = field(default_factory=lambda: FitConfig(progress=False))
    cache_bytes: int | str | None = None  # None: CACHE_BYTES
    incremental: bool = True

    def __post_init__(self):
        self.config = dataclasses.replace(self.config, refit_on_validation=False)
        self.cache_bytes = CACHE_BYTES if self.cache_bytes is None else memory(self.cache_bytes, name="judge_cache")
        self.data = resident(load_examples(self.start, self.acts))
        self.shapes = site_shapes(self.start, self.acts.sites)
        bare = Theory(self.start.name, self.start.target, dict(self.start.sites), {}, {})  # every site, at its mean
        self.mean = fit(bare, self.acts, self.config, data=self.data)
        self.examples = examples_of(self.mean, self.acts, self.data)
        self.mean_sse: dict[str, dict[str, float]] = {split: {} for split in SPLITS}
        self.mean_bits: dict[str, dict[str, float]] = {split: {} for split in SPLITS}
        for s in self.explained:  # a site sent as its mean: the mean's bits + the residual's
            one = Theory(self.start.name, self.start.target, {s: self.start.sites[s]}, {}, {})
            alone = FittedTheory(one, make_plan(one, {s: self.shapes[s]}, self.acts.vocab_size), {},
                                 {s: self.mean.means[s]}, self.acts.vocab_size)
            size = measure(alone, self.examples)
            for split in SPLITS:
                self.mean_sse[split][s] = size.sse[split][s]
                self.mean_bits[split][s] = sum(total_bits(alone, size, self.examples, split))
        self.seen: OrderedDict[str, Assessment] = OrderedDict()  # least recently used first
        self.held = 0  # bytes of parameters in ``seen``
        self.evicted = 0
        self.prices: dict = {}  # (tensor digest, step) -> bits: see ``scoring.measure``
        self.site_fits: OrderedDict[str, dict] = OrderedDict()  # a site's fit by what it depends on (``site_key``)
        self.site_bytes = 0

    def cache_text(self) -> str:
        return (f"judge cache {bytes_text(self.held)} of {bytes_text(self.cache_bytes)} ({len(self.seen)} theories, "
                f"{self.evicted} evicted; {len(self.site_fits)} site fits, {bytes_text(self.site_bytes)})")

    def _keep_site_fits(self, fitted: FittedTheory) -> None:
        """Remember each site this fit fitted whose fit depends on nothing but its own components
        (``site_key``), least recently used out first past ``cache_bytes``."""
        theory = fitted.plan.theory
        for site in theory.sites:
            key = site_key(theory, site)
            if key is None or site in fitted.fit_info.get("kept", ()) or key in self.site_fits:
                continue
            params = {n: fitted.params[n] for n in theory.upstream(site) if n in fitted.params}
            self.site_fits[key] = params
            self.site_bytes += param_bytes(params)
        while self.site_bytes > self.cache_bytes and self.site_fits:
            _, old = self.site_fits.popitem(last=False)
            self.site_bytes -= param_bytes(old)

    def _keep(self, assessment: Assessment) -> None:
        key = assessment.theory.to_yaml()
        size = param_bytes(assessment.fitted.params)
        if size > self.cache_bytes:
            return  # larger than the whole cache: not kept (the search holds its current theory itself)
        self.seen[key] = assessment
        self.held += size
        while self.held > self.cache_bytes:
            _, old = self.seen.popitem(last=False)
            self.held -= param_bytes(old.fitted.params)
            self.evicted += 1

    def judged(self, theory: Theory) -> Theory:
        """The theory over the explained sites and the sites it reads (other sites it names are
        left out, so that every theory's code covers the same activations)."""
        read = {r for c in theory.components.values() for r in c.reads()}
        sites = {s: v for s, v in theory.sites.items() if s in self.explained or s in read}
        return dataclasses.replace(theory, sites=sites)

    def assess(self, theory: Theory, base: Assessment | None = None,
               stop: Callable[[], bool] | None = None) -> Assessment:
        """``theory`` fitted on train and coded on validation and test; with ``base`` (and
        ``incremental``), only the sites where it differs from ``base`` are refitted. ``stop``
        (the search's budget) is asked during the fit and before the coding; when it says so,
        ``Stopped`` is raised and nothing is kept."""
        key = theory.to_yaml()
        if key in self.seen:
            self.seen.move_to_end(key)
            return self.seen[key]
        judged = self.judged(theory)
        keep = self.kept(judged, base) if self.incremental and base is not None else None
        fitted = fit(judged, self.acts, self.config, data=self.data, keep=keep, stop=stop)
        if stop is not None and stop():
            raise Stopped("stopped before coding the fitted theory")
        if self.incremental:
            self._keep_site_fits(fitted)
        size = measure(fitted, self.examples, prices=self.prices if self.incremental else None)
        covered = set(fitted.sites)
        totals = {}
        for split in SPLITS:
            bits, residual = total_bits(fitted, size, self.examples, split)
            # an explained site the theory neither predicts nor is given is sent as its mean (a given
            # one is already paid for in the theory's bits, coded the same way)
            given = set(fitted.theory.inputs)
            at_mean = sum(self.mean_bits[split][s] for s in self.explained if s not in covered | given)
            residual += at_mean
            sse = {s: size.sse[split][s] if s in covered else self.mean_sse[split][s] for s in self.explained}
            sst = self.examples.sst[split]
            free = squared_errors(fitted, self.examples.data, self.examples.index[split], free=True)
            residual_free = at_mean + residual_bits(fitted, free, len(self.examples.index[split]), self.examples.precision)
            free = {s: free[s] if s in covered else self.mean_sse[split][s] for s in self.explained}
            totals[split] = Totals(bits, residual, coverage(sse, sst), {s: r2(sse[s], sst[s]) for s in self.explained},
                                   coverage(free, sst), residual_free)
        result = Assessment(theory, fitted, totals["validation"], totals["test"], count_params(fitted.params),
                            size.params)
        self._keep(result)
        return result

    def kept(self, theory: Theory, base: Assessment) -> dict[str, dict]:
        """The fitted parameters of ``base`` that ``theory`` can keep: those of every component that
        feeds only sites whose components (all they read) are the same in both theories. A fit
        of those sites would find the same parameters where it is closed-form (stagewise fits
        are per site); under Adam it keeps the base's fit instead of refitting from a new start."""
        if self.config.mode != "stagewise":
            return {}
        # both as the engine fits them: a component predicting several sites is one instance per site
        theory, old = theory.expanded(), self.judged(base.theory).expanded()

        def same(site: str) -> bool:
            names = theory.upstream(site)
            return (bool(names) and names == old.upstream(site)
                    and all(theory.components[n] == old.components[n] for n in names)
                    and all(theory.variables.get(v) == old.variables.get(v) for v in variables_of(theory, names)))

        sites = [s for s in theory.sites if theory.predictors(s)]
        touched = {s for s in sites if not same(s)}
        while True:  # a component shared with a touched site is refitted, and so are its other sites
            refit = set().union(*(theory.upstream(s) for s in touched)) if touched else set()
            more = {s for s in sites if s not in touched and theory.upstream(s) & refit}
            if not more:
                break
            touched |= more
        kept = {n: p for n, p in base.fitted.params.items()
                if n not in refit and n in old.components and theory.components.get(n) == old.components[n]}
        for site in touched:
            key = site_key(theory, site)
            if key in self.site_fits:  # fitted before with the same components (in another theory): that fit
                self.site_fits.move_to_end(key)
                kept.update(self.site_fits[key])
            elif all(kind_of(theory.components[n]).pattern for n in theory.predictors(site)):
                # each predictor fills its own head of a pattern site: one that is the same keeps its fit
                kept.update({n: base.fitted.params[n] for n in theory.predictors(site)
                             if n in base.fitted.params and same_component(theory, old, n)})
        return kept

    def residuals(self, assessment: Assessment, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per explained site, target − prediction on examples ``rows`` (in the site's rows)."""
        batch = {k: v[rows] for k, v in self.data.items()}
        fitted = assessment.fitted
        preds = fitted.predict(batch["inputs"], {s: batch[s] for s in fitted.theory.sites})
        out = {}
        for s in self.explained:
            y = site_rows(fitted.plan, s, batch[s])
            out[s] = y - (site_rows(fitted.plan, s, preds[s]) if s in preds else self.mean.means[s])
        return out


@dataclass(frozen=True)
class Step:
    """One accepted step of a search, with its code on validation (what chose it) and on test."""

    action: str
    theory: str  # the YAML, over the judge's sites: what was fitted and judged
    selection: Totals
    report: Totals
    params: int
    seconds: float

    def as_dict(self) -> dict:
        return {"action": self.action, "validation": self.selection.as_dict(), "test": self.report.as_dict(),
                "params": self.params, "seconds": round(self.seconds, 1), "theory": self.theory}

    @classmethod
    def from_json(cls, data: dict) -> "Step":
        return cls(data["action"], data["theory"], Totals.from_json(data["validation"]),
                   Totals.from_json(data["test"]), data["params"], data["seconds"])


@dataclass(frozen=True)
class Found:
    """What a search leaves in memory: the found theory (fitted, judged), the accepted steps."""

    best: Assessment
    trail: tuple[Step, ...]
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


def splits(theory: Theory) -> list[tuple[str, Theory]]:
    """Every theory with one component re-expressed by its kind's simpler parts (a table of two
    keys as a table of each, ``Kind.parts``); a part that an existing component already is (but
    for the sites it predicts) extends that component instead."""
    out = []
    data = theory.to_dict()
    for name, c in theory.components.items():
        parts = kind_of(c).parts(data["components"][name])
        if not parts:
            continue
        components = {k: dict(v) for k, v in data["components"].items() if k != name}
        for k, part in enumerate(parts):
            sites = c.predicted()
            same = next((n for n, other in components.items() if _same_but_sites(other, part)), None)
            if same is None:
                key = part["of"][0] if isinstance(part["of"], list) else part["of"]
                label = f"{slug({v: k for k, v in ATOMS.items()}.get(key, key), key)}_code"
                components[label if label not in components else f"{name}_{k}"] = part
            else:
                had = components[same]["predicts"]
                had = had if isinstance(had, list) else [had]
                merged = list(dict.fromkeys(had + list(sites)))
                components[same] = {**components[same],
                                    "predicts": sorted(merged, key=list(theory.sites).index)}
        try:
            out.append((f"split {name} into {len(parts)} tables", rebuild({**data, "components": components})))
        except TheoryError:
            continue
    return out


def _same_but_sites(a: dict, b: dict) -> bool:
    """Two components as written are the same but for what they predict (a size one leaves to
    its default taken as the other's)."""
    def norm(d: dict, drop: tuple) -> dict:
        return {k: v if isinstance(v, list) else [v] for k, v in d.items() if k not in ("predicts",) + drop}
    drop = () if "size" in a and "size" in b else ("size",)
    return norm(a, drop) == norm(b, drop)


def rewritten(theory: Theory, name: str, new: str, expression: str) -> Theory:
    """``theory`` with variable ``name`` computing ``expression`` instead, under the name ``new``
    (its readers and its component ``NAME_code`` renamed with it)."""
    text = re.sub(rf"(?<!\w){re.escape(name)}(?=_code\b|(?!\w))", new, theory.to_yaml())
    data = parse_theory(text).to_dict()
    data["variables"] = {**data["variables"], new: expression}
    return rebuild(data)


def takeovers(theory: Theory) -> list[tuple[str, Theory]]:
    """Every theory with one component gone and another extended to the sites it predicted (a
    table of one variable taking over where a joint table was kept), read-outs left alone."""
    out = []
    data = theory.to_dict()
    for name, c in theory.components.items():
        if name == readout_name(c.predicts or "") or not c.predicted():
            continue
        for other, d in theory.components.items():
            sites = list(c.predicted())
            if other == name or other == readout_name(d.predicts or "") or not d.predicted() \
                    or set(sites) <= set(d.predicted()) or name in d.reads():
                continue
            components = {k: dict(v) for k, v in data["components"].items() if k != name}
            drop_reads(components, name)
            merged = sorted(set(d.predicted()) | set(sites), key=list(theory.sites).index)
            components[other] = {**components[other], "predicts": merged if len(merged) > 1 else merged[0]}
            try:
                taken = rebuild({**data, "components": components})
            except TheoryError:  # that component cannot predict those sites (a map onto the site it reads)
                continue
            out.append((f"replace {name} by {other} -> {', '.join(s for s in sites if s not in d.predicted())}", taken))
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


def maps_of(theory: Theory) -> list[str]:
    """The components that take a recorded site as their input: maps between sites (the site they
    read is declared an input where nothing predicts it)."""
    return [n for n, c in theory.components.items() if set(c.reads()) & set(theory.sites)]


def computes(cand: Candidate, sites) -> bool:
    """Whether a candidate reads no recorded site: it computes from the input and the theory's variables."""
    return not set(spec_of(cand.data).reads()) & set(sites)


def replaceable(theory: Theory, vocab: Vocabulary) -> list[str]:
    """The maps between recorded sites a search may try to replace: all of them, where every site
    they predict has a template, or is a grammar site, that computes it from the input."""
    maps = maps_of(theory)
    computing = {t.site for t in vocab.templates.values()
                 if computes(Candidate(t.name, t.kind, t.site, t.name, next(t.items())[0], {}, {}), theory.sites)}
    computing |= set(vocab.grammar.sites if vocab.grammar else ())  # the grammar computes at its sites
    predicted = {s for n in maps for s in theory.components[n].predicted()}
    return maps if maps and predicted <= computing else []


def without(theory: Theory, names: list[str]) -> Theory:
    """``theory`` with components ``names`` gone (and what only they fed)."""
    data = theory.to_dict()
    components = dict(data["components"])
    for name in names:
        components.pop(name)
        drop_reads(components, name)
    return rebuild({**data, "components": components})


def rethought(greedy: Assessment, alternative: Assessment) -> bool:
    """Whether the alternative replaces the greedy theory: a lower free-running validation total
    (theories here are meant to run free: the alternative reads no recorded site)."""
    return alternative.selection.bits_total_free < greedy.selection.bits_total_free


def search(start: Theory, acts, vocab: Vocabulary, *, judge: Judge | None = None, budget_bits: float | None = None,
           budget_seconds: float | None = None, tries: int = 4, log: Callable[[str], None] = lambda s: None,
           progress: bool = True, metrics: Metrics | None = None, rethink: bool = True,
           clock: Callable[[], float] = time.time) -> Found:
    """Grow ``start`` greedily by held-out MDL (see the module's doc). ``progress``: a bar on
    stderr over each step's fits, with the best candidate so far and the step's ETA (shown only
    on a terminal). ``metrics``: a ``search`` record of each step (the start is step 0).
    ``rethink=False``: greedy growth alone, never changing its mind (for comparison). ``clock``:
    what ``budget_seconds`` counts (wall time; ``time.process_time`` counts this process's CPU
    time, for a machine shared with other work)."""
    from theorycraft._progress import above, bar as progress_bar

    began, started = time.time(), clock()
    vocab = vocab.beside(start)
    judge = judge or Judge(start, acts, explained_sites(start, vocab))
    trail: list[Step] = []
    state: dict[str, str] = {}  # component -> the template it came from
    bar = progress_bar(0, unit="fit", shown=None if progress else False, leave=False)
    write = above(bar, log)

    def record(action: str, a: Assessment) -> None:
        trail.append(Step(action, judge.judged(a.theory).to_yaml(), a.selection, a.report, a.params,
                          time.time() - began))
        v = a.selection
        (metrics or Metrics()).write("search", len(trail) - 1, action=action, bits_total=v.bits_total,
                                     bits_theory=v.bits_theory, coverage=v.coverage, coverage_free=v.coverage_free,
                                     test_coverage=a.report.coverage, params=a.params, seconds=time.time() - began)
        write(f"[{time.time() - began:6.0f}s] {action}: validation {v.bits_total:,.0f} bits (theory "
              f"{v.bits_theory:,.0f}), coverage {v.coverage:.4f} (free {v.coverage_free:.4f}); "
              f"test coverage {a.report.coverage:.4f}; {a.params:,} params; {judge.cache_text()}")

    def out_of_time() -> bool:
        return budget_seconds is not None and clock() - started > budget_seconds

    stop = out_of_time if budget_seconds is not None else None  # asked inside a step's estimates and fits

    def check_time() -> None:  # between the parts of a step: a step in flight stops at the budget
        if out_of_time():
            raise Stopped("the time budget ran out between fits")

    lead = {"action": "", "bits": float("inf")}  # the best fit of the step so far, for the bar

    def step(what: str, options: list) -> None:
        """The bar over one step's fits: ``options`` of them."""
        bar.reset(total=len(options))
        bar.set_description(f"step {len(trail)}: {what}")
        lead.update(action="", bits=float("inf"))

    def judged(action: str, theory: Theory, base: Assessment) -> Assessment:
        check_time()
        a = judge.assess(theory, base, stop=stop)
        if a.selection.bits_total < lead["bits"]:
            lead.update(action=action, bits=a.selection.bits_total)
        bar.set_postfix_str(f"best {lead['action']} {lead['bits'] - base.selection.bits_total:+,.0f} bits", refresh=False)
        bar.update(1)
        return a

    write(f"judge cache: parameters of at most {bytes_text(judge.cache_bytes)} of judged theories kept")
    current = judge.assess(start)
    record("start", current)
    best = {"now": current}  # the latest accepted theory, kept if the search is interrupted

    branch: dict = {"steps": None}  # while rethinking: the steps of the alternative, recorded only if it wins

    def accept(action: str, a: Assessment) -> None:
        best["now"] = a
        if branch["steps"] is None:
            record(action, a)
        else:
            branch["steps"].append(action)
            write(f"  [rethinking] {action}: validation {a.selection.bits_total:,.0f} bits, coverage "
                  f"{a.selection.coverage:.4f}; {a.params:,} params")

    def prune(protect: str = "") -> None:
        while not out_of_time():
            offered = removals(best["now"].theory, protect) + splits(best["now"].theory)
            step("pruning", offered)
            options = [(action, judged(action, t, best["now"])) for action, t in offered]
            if not options:
                return
            action, smaller = min(options, key=lambda o: o[1].selection.bits_total)
            if smaller.selection.bits_total >= best["now"].selection.bits_total:
                return
            accept(action, smaller)

    def grow(allowed: Callable[[Candidate], bool] = lambda c: True) -> str:
        prune()
        rng = np.random.default_rng(0)
        memo: dict = {}  # estimates on site residuals a step left unchanged are kept (``_proxy``)
        while not out_of_time():
            current = best["now"]
            train = judge.examples.train
            rows = np.sort(rng.choice(train, min(PROXY_SAMPLE, len(train)), replace=False))
            offered = [c for c in candidates(vocab, current.theory, state=state) + proposals(vocab, current, judge, rows, write)
                       if allowed(c)]
            if not offered:
                return "the vocabulary is exhausted"
            step("estimating", [])
            ranked = shortlist(_proxy.rank(offered, current, judge, rows, stop=stop, memo=memo), tries)
            write("  best estimates: " + ", ".join(f"{c.description} {g:+,.0f}" for c, g in ranked))
            step("fitting the best estimates", ranked)
            chosen = None
            for cand, _ in ranked:
                a = judged(cand.description, cand.apply(current.theory), current)
                if budget_bits is not None and a.selection.bits_theory > budget_bits:
                    continue
                if a.selection.bits_total < (chosen[1] if chosen else current).selection.bits_total:
                    chosen = (cand, a)
            if chosen is None:
                return ("nothing within the bit budget pays for itself" if budget_bits is not None
                        else "nothing in the vocabulary pays for itself")
            cand, a = chosen
            for old in cand.replaces:
                state.pop(old, None)
            state[cand.name] = cand.template
            accept(f"add {cand.description}", a)
            prune(protect=cand.name)
        return "time budget spent"

    def change_mind() -> str:
        """Change its mind about the maps between recorded sites (and the inputs they declare): the
        theory without them, grown again from what the input computes alone, replaces the greedy
        one if its free-running validation total is lower (``rethought``)."""
        main, main_state = best["now"], dict(state)
        maps = replaceable(main.theory, vocab)
        if not maps or budget_bits is not None:
            return ""
        write(f"rethinking: {', '.join(maps)} (maps between recorded sites) replaced by computed variables")
        branch["steps"] = []

        def choose() -> str:
            steps, branch["steps"] = branch["steps"], None
            alternative = best["now"]
            if not rethought(main, alternative):
                best["now"] = main
                state.clear()
                state.update(main_state)
                return (f"; kept {', '.join(maps)}: without them {alternative.selection.bits_total_free:,.0f} free-running "
                        f"validation bits against {main.selection.bits_total_free:,.0f}")
            record(f"replace {', '.join(maps)} by computed variables: " + "; ".join(steps), alternative)
            return f"; replaced {', '.join(maps)} by computed variables"

        try:
            for name in maps:
                state.pop(name, None)
            step("rethinking", [None])
            best["now"] = judged(f"remove {', '.join(maps)}", without(main.theory, maps), main)
            grow(allowed=lambda c: computes(c, main.theory.sites))
        except (Stopped, KeyboardInterrupt):  # the better of the two so far is kept
            choose()
            raise
        return choose()

    def polish() -> str:
        """Each variable the theory holds, oldest first, rewritten one change away (a comparison
        turned into another, a constant moved by one: ``_grammar.neighbours``) where that lowers
        the validation total: greedy growth takes the first variable that pays, and a close
        variant that pays more can only arrive once it is held. Then, while one pays, a component
        taken over by another's extension to its sites (``takeovers``): a joint table kept from
        early growth replaced by a table of a variable found later."""
        done = []
        if vocab.grammar is None:
            return ""
        for name in list(best["now"].theory.variables):
            theory = best["now"].theory
            if out_of_time() or name not in theory.variables:
                continue
            held = {str(v) for v in theory.variables.values()}
            offered = []
            for new, text in neighbours(name, str(theory.variables[name])):
                if new not in theory.variables and text not in held:
                    try:
                        offered.append((f"rewrite {name} as {new} = {text}", rewritten(theory, name, new, text)))
                    except (TheoryError, ValueError):
                        continue
            step("polishing", offered)
            options = []
            for action, t in offered:
                try:
                    options.append((action, judged(action, t, best["now"])))
                except TheoryError:  # a table too small for the new values, say
                    continue
            if options:
                action, a = min(options, key=lambda o: o[1].selection.bits_total)
                if a.selection.bits_total < best["now"].selection.bits_total:
                    accept(action, a)
                    done.append(action.split(" = ")[0].removeprefix("rewrite "))
                    prune()
        while not out_of_time():  # one component taken over by another's extension, best first
            offered = takeovers(best["now"].theory)
            step("polishing", offered)
            options = []
            for action, t in offered:
                try:
                    options.append((action, judged(action, t, best["now"])))
                except TheoryError:
                    continue
            if not options:
                break
            action, a = min(options, key=lambda o: o[1].selection.bits_total)
            if a.selection.bits_total >= best["now"].selection.bits_total:
                break
            accept(action, a)
            done.append(action.removeprefix("replace "))
            prune()
        return f"; rewrote {', '.join(done)}" if done else ""

    try:
        stopped = grow()
        if rethink and not stopped.startswith("time budget"):
            stopped += change_mind()
            stopped += polish()
    except Stopped:  # mid-step: that step's fits are dropped, the theory last accepted is the result
        stopped = f"time budget spent ({budget_seconds:g} s): the step in flight was stopped at it"
    except KeyboardInterrupt:  # Ctrl-C: stop, and write what was found so far
        stopped = "interrupted"
    finally:
        bar.close()
    current = best["now"]
    log(f"stopped: {stopped}; {judge.cache_text()}")
    return Found(current, tuple(trail), stopped, vocab)
