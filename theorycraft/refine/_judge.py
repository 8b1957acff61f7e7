"""The judge of a search: fits a theory on the training split and codes it on validation and
test (the theory's bits + the residual's bits: MDL totals, teacher-forced and free-running), keeping
the fits of theories and of single sites it has assessed (least recently used out first) so a
candidate that changes one site refits only that site.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import jax
import numpy as np

from theorycraft.inference.engine import (FitConfig, FittedTheory, Stopped, count_params, fit, load_examples, make_plan, resident,
                                         site_rows, site_shapes)
from theorycraft.inference.kinds import kind_of
from theorycraft.configs import SearchConfig, bytes_text, memory
from theorycraft.scoring import coverage, examples_of, measure, r2, residual_bits, squared_errors, total_bits
from theorycraft.spec import Theory


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
