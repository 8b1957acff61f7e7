"""Axioms checked on the network (counterfactual fidelity, in ``_counterfactual``, uses the same
lab): the network and the theory under the same intervention, side by side on held-out examples.

The network runs with a torch hook at the intervened place; the theory runs free from the input
(``inference._intervene``) with the same intervention at what stands for that place in it. The
recorded sites a theory is given (its declared inputs, what its autoencoders encode) are the
network's clean values: a theory is told the intervention, not the intervened activations.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from theorycraft.errors import FitError
from theorycraft.inference.engine import (SUBSPACE, Intervention, component_output, predict_intervened, subspace_basis,
                                         transformed_inputs)
from theorycraft.spec import HookPoint, OUTPUT, Place, Site, evaluate_variables

from ._fidelity import r2
from ._intervals import ratio_intervals
from ._splice import _put, kl_rows, row_losses

# what each column of an axiom's result means, as the CLI and the report define them
COLUMNS = (
    ("network effect", "the intervention's effect on the network: the share of the observed site's variance it "
                       "moves, or the change of the output's metric; [95% bootstrap interval over held-out examples]"),
    ("theory's predicted effect", "the same effect as the theory predicts it: its own intervened run against its own "
                                  "clean run (free-running, the same intervention at what stands for the place in it)"),
    ("judged", "what is compared with the bound: the network effect (invariant, changes); for predicted_by_theory, "
               "the R² of the theory's intervened prediction against the intervened network, or with a metric the "
               "relative error of its predicted change"),
    ("mean", "a 'mean' intervention writes the training mean per position (of the place, component or variable "
             "intervened on), on the network and on the theory alike"),
)
CHECK_EXAMPLES = 512  # held-out examples an axiom is checked on (theorycraft check --limit)
TRAIN_EXAMPLES = 1024  # training examples means and subspaces are measured on
RELATIVE_FLOOR = 1e-3  # `within` compares changes relative to the network's, or to this where it barely moves


@dataclass(frozen=True)
class AxiomResult:
    """One axiom on held-out examples. ``network``: the intervention's effect on the network
    (fraction of the observed site's variance moved, or the change of the output's metric),
    with its 95% bootstrap interval; ``theory``: the effect the theory predicts; ``judged``: what
    is compared with ``threshold`` (the network's effect; for ``predicted_by_theory`` the R² of
    the theory's intervened prediction, or the relative error of its predicted change)."""

    name: str
    claim: str
    measure: str
    network: float
    low: float
    high: float
    theory: Optional[float]
    judged: float
    threshold: float
    passed: bool
    n: int


@dataclass(frozen=True)
class _Where:
    """A place resolved against the theory and the target: its hook and position, the theory's
    site there (if it has one) and the index into that site's per-example values."""

    place: Place
    hook: HookPoint
    position: "int | list[int] | None"  # the site's kept position(s)
    site: Optional[str]
    index: tuple  # numpy, after the example (and position) axes

    @property
    def at(self) -> tuple:
        return (slice(None), *self.index)


@dataclass(frozen=True)
class Outcome:
    """An intervention ready on both sides: the inputs the network runs on, its hook
    replacements, and the theory's free-running predictions under it."""

    inputs: np.ndarray
    replace: Mapping
    theory: Mapping[str, np.ndarray]


class Lab:
    """A fitted theory and its runnable target, on held-out examples (``inputs``), with the
    training examples (``train_inputs``) that means and subspaces are measured on."""

    def __init__(self, fitted, target, inputs: np.ndarray, train_inputs: np.ndarray, seed: int = 0):
        self.fitted, self.target = fitted, target
        self.inputs, self.train_inputs = np.asarray(inputs), np.asarray(train_inputs)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.theory = fitted.theory

    def reseed(self, name: str) -> None:
        """Each axiom draws its own sources and intervals: its result does not depend on the others."""
        self.rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    # --- places ---------------------------------------------------------------------------------

    def where(self, place: Place, name: str) -> _Where:
        """A place by name: a theory site, or a hook, which is the theory's site where one has the
        same hook (a site over every position takes the hook's position index as its own)."""
        index = place.numpy_index
        site = self.theory.sites.get(place.name)
        if site is not None:
            where = _Where(place, site.hook, site.kept, place.name, index)
        else:
            hook = HookPoint.parse(place.name)
            self.target.check_hooks([hook])
            where = _Where(place, hook, None, None, index)
            length = (self.target.hooks()[str(hook)] or (0,))[0]
            for s, spec in self.theory.sites.items():
                if spec.hook != hook:
                    continue
                if spec.position is None:
                    where = _Where(place, hook, None, s, index)
                elif (isinstance(spec.position, int) and index and isinstance(index[0], int) and length
                      and index[0] % length == spec.position % length):
                    where = _Where(place, hook, spec.position, s, index[1:])
                elif isinstance(spec.position, tuple) and index and length:  # positions the format fixes
                    kept, first = [p % length for p in spec.position], index[0]
                    if isinstance(first, list) and [p % length for p in first] == kept:  # all of them
                        where = _Where(place, hook, spec.kept, s, index[1:])
                    elif isinstance(first, int) and first % length in kept:  # one: its row of the site
                        where = _Where(place, hook, spec.kept, s, (kept.index(first % length), *index[1:]))
        shape = self.target.hooks()[str(where.hook)]
        shape = Site(hook=where.hook, position=where.position).kept_shape(shape)
        try:
            np.empty(shape)[where.index]
        except IndexError as exc:
            raise FitError(f"axiom '{name}': '{place}' indexes outside its per-example shape {list(shape)} ({exc})") from None
        return where

    def record(self, inputs: np.ndarray, hooks, replace=None):
        """The network on ``inputs``: {hook: values}, output."""
        return self.target.intervene(inputs, list(dict.fromkeys(hooks)), replace or {})

    def at(self, recorded: Mapping, where) -> np.ndarray:
        """A place's (or a site's) values in a recording: its hook, at its position."""
        values = recorded[where.hook]
        return values[:, where.position] if where.position is not None else values

    def theory_sites(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The network's clean values at every theory site: what the theory is given."""
        recorded, _ = self.record(inputs, [s.hook for s in self.theory.sites.values()])
        return {n: self.at(recorded, s) for n, s in self.theory.sites.items()}

    # --- interventions --------------------------------------------------------------------------

    def intervention(self, how: str, where: _Where, subspace: Optional[str] = None) -> Intervention:
        if how not in ("mean", *SUBSPACE):
            return Intervention(how, where.index)
        train_values = self.at(self.record(self.train_inputs, [where.hook])[0], where)
        mean = train_values.mean(0)
        if how not in SUBSPACE:
            return Intervention(how, where.index, mean)
        features = component_features(self.fitted, self.train_inputs, self.theory_sites(self.train_inputs), subspace)
        n = len(train_values)
        per_row = train_values.ndim == 3 and len(features) == n * train_values.shape[1]  # a row per position
        if len(features) != n and not per_row:
            raise FitError(f"component '{subspace}' has {len(features)} rows on {n} examples; '{where.place}' "
                           f"has per-example shape {list(train_values.shape[1:])}: its features span no subspace there")
        values = train_values.reshape(-1, train_values.shape[-1]) if per_row else train_values.reshape(n, -1)
        return Intervention(how, where.index, mean, subspace_basis(features, values), per_row)

    def network_replacement(self, where: _Where, intervention: Intervention, source: Optional[np.ndarray]):
        def replace(activation: torch.Tensor) -> torch.Tensor:
            new = activation.clone()
            values = (new[:, where.position] if where.position is not None else new).float().cpu().numpy()
            changed = torch.from_numpy(intervention.apply(values, source)).to(new.device, new.dtype)
            if where.position is None:
                new[...] = changed
            else:
                new[:, where.position] = changed
            return new
        return replace

    def apply(self, how: str, place: Optional[Place], name: str, *, expr=None, subspace: Optional[str] = None,
              counterpart: tuple[str, ...] = (), clean_sites: Optional[Mapping] = None) -> "Outcome":
        """One intervention (``how`` at ``place``, or on the input when ``place`` is None), set up
        for the network and run on the theory. ``counterpart``: what stands for the place in the
        theory (default: the place's site, if the theory has it)."""
        inputs = self.inputs
        clean_sites = clean_sites if clean_sites is not None else self.theory_sites(inputs)
        if place is None:
            new_inputs = self.tokens(expr, inputs, name)
            return Outcome(new_inputs, {}, self.fitted.predict(new_inputs, self.theory_sites(new_inputs), free=True))
        where = self.where(place, name)
        intervention = self.intervention(how, where, subspace)
        source_inputs = (inputs[self.derangement(len(inputs))] if how == "resample" else
                         self.tokens(expr, inputs, name) if how == "patch" else None)
        source = self.at(self.record(source_inputs, [where.hook])[0], where) if source_inputs is not None else None
        if how == "mean":  # the theory's counterparts take their own training means (per position), too
            source_inputs = self.train_inputs
        counterpart = counterpart or ((where.site,) if where.site else ())
        theory = self.theory
        predicted = predict_intervened(
            self.fitted, inputs, clean_sites, intervention, site=next((c for c in counterpart if c in theory.sites), None),
            components=tuple(c for c in counterpart if c in theory.components),
            variables=tuple(c for c in counterpart if c in theory.variables),
            source=(source_inputs, self.theory_sites(source_inputs)) if source_inputs is not None else None)
        return Outcome(inputs, {where.hook: self.network_replacement(where, intervention, source)}, predicted)

    def spliced(self, outcome: Outcome, site: Site) -> dict:
        """The replacements of a run with the theory's (intervened) prediction of ``site`` spliced
        in: the network's own intervention is kept only where it acts before that site; after it,
        the theory has already said what it says (its prediction carries the intervention or not)."""
        name = next(n for n, s in self.theory.sites.items() if s == site)
        replace = {h: fn for h, fn in outcome.replace.items() if self.fires_before(h, site.hook)}
        return {**replace, site.hook: _put(outcome.theory[name], site.kept)}

    def fires_before(self, first: HookPoint, second: HookPoint) -> bool:
        """Does ``first`` run before ``second`` in the network's forward pass (the order in which a
        recording's hooks fire)?"""
        if first == second:
            return False
        order = list(self.record(self.inputs[:1], [first, second])[0])
        return order.index(first) < order.index(second)

    def derangement(self, n: int) -> np.ndarray:
        """Each example's source: another example (a random cycle, so never itself)."""
        order = self.rng.permutation(n)
        source = np.empty(n, np.int64)
        source[order] = np.roll(order, -1)
        return source

    def tokens(self, expr, inputs: np.ndarray, name: str) -> np.ndarray:
        """The tokens an input expression writes, checked: whole numbers in the vocabulary."""
        if not np.issubdtype(inputs.dtype, np.integer):
            raise FitError(f"axiom '{name}': an input expression rewrites tokens; {self.target.name} takes vectors "
                           f"(intervene on its input site instead: resample / zero / mean)")
        variables = evaluate_variables(self.theory.variables, inputs, np) if self.theory.variables else {}
        env_values = np.asarray(transformed_inputs(expr, inputs, variables, np.float64))
        vocab = self.target.vocab_size
        bad = ~np.isfinite(env_values) | (env_values != np.round(env_values)) | (env_values < 0)
        if vocab:
            bad |= env_values >= vocab
        if bad.any():
            k = tuple(np.argwhere(bad)[0])
            raise FitError(f"axiom '{name}': '{expr.text}' writes {env_values[k]:g} at example {k[0]}, position {k[1]}; "
                           f"expected a token id in 0..{(vocab or 0) - 1 if vocab else 'the vocabulary'}")
        return env_values.astype(inputs.dtype)


def component_features(fitted, inputs: np.ndarray, sites: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A component's output [rows, features] on ``inputs``, free-running, in the rows of a site
    whose prediction it feeds."""
    theory = fitted.plan.theory
    site = next((s for s in theory.site_order()[0] if name in theory.upstream(s)), None)
    if site is None:
        raise FitError(f"component '{name}' feeds no site the theory predicts, so it spans no subspace")
    batch = fitted.run_free(fitted.free_batch(inputs, sites), len(inputs), until=site)
    return np.asarray(component_output(fitted.plan, fitted.params, name, fitted.fixed(batch, site), {}), np.float64)


# --- measures -----------------------------------------------------------------------------------

def _interval(numerator: np.ndarray, denominator: Optional[np.ndarray], rng) -> tuple[float, float]:
    """95% bootstrap interval of Σ numerator / Σ denominator (or of the mean of ``numerator``),
    over the held-out examples, drawn from the axiom's own ``rng``."""
    low, high = ratio_intervals(numerator, denominator, seed=int(rng.integers(2 ** 32)))[0]
    return float(low), float(high)


def _per_example(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1).sum(1)


def _metric_rows(task, output: np.ndarray, inputs: np.ndarray, metric: str, clean_rows=None):
    rows, refs = task.read(output, inputs)
    if metric in ("accuracy", "kl") and task.output != "logits":
        raise FitError(f"metric '{metric}' needs a target whose output is logits; this one's is a vector (use loss)")
    if metric == "accuracy":
        if refs is None:
            raise FitError("metric 'accuracy' needs the target's labels; this target's logits have none (use kl or loss)")
        return rows, (rows.argmax(-1) == refs).astype(np.float64)
    if metric == "kl":
        if clean_rows is None:
            return rows, np.zeros(len(rows))
        return rows, kl_rows(clean_rows, rows)
    return rows, row_losses(task, rows, refs, clean_rows)


def check_axioms(lab: Lab) -> list[AxiomResult]:
    return [check_axiom(lab, name, axiom) for name, axiom in lab.theory.axioms.items()]


def check_axiom(lab: Lab, name: str, axiom) -> AxiomResult:
    """Run one axiom on the network and on the theory; judge its expectation."""
    lab.reseed(name)
    clean_sites = lab.theory_sites(lab.inputs)
    outcome = lab.apply(axiom.intervention, axiom.place, name, expr=axiom.input if axiom.place is None else axiom.from_,
                        subspace=axiom.subspace, counterpart=tuple(axiom.theory), clean_sites=clean_sites)
    before = lab.fitted.predict(lab.inputs, clean_sites, free=True)
    if axiom.observed.name == OUTPUT:
        effect = _output_effect(lab, outcome, before, axiom.metric)
    else:
        effect = _site_effect(lab, lab.where(axiom.observed, name), outcome, before)
    bound = axiom.threshold()
    if axiom.expectation == "invariant":
        judged, passed = abs(effect.network), abs(effect.network) <= bound
    elif axiom.expectation == "changes":
        judged, passed = abs(effect.network), abs(effect.network) >= bound
    else:  # the predicted change's relative error (with a metric), else the R² of the intervened prediction
        judged = effect.relative_error if axiom.metric is not None else effect.r2
        passed = judged <= bound if axiom.metric is not None else judged >= bound
    return AxiomResult(name, axiom.describe(), effect.measure, round(effect.network, 6), round(effect.low, 6),
                       round(effect.high, 6), None if effect.theory is None else round(effect.theory, 6),
                       round(float(judged), 6), bound, bool(passed), len(lab.inputs))


@dataclass(frozen=True)
class _Effect:
    measure: str
    network: float  # the intervention's effect on the network
    low: float
    high: float
    theory: Optional[float]  # the effect the theory predicts
    r2: Optional[float]  # of the theory's intervened prediction against the intervened network

    @property
    def relative_error(self) -> float:
        return abs(self.theory - self.network) / max(abs(self.network), RELATIVE_FLOOR)


def _site_effect(lab: Lab, observed: _Where, outcome: Outcome, theory_before) -> _Effect:
    """The fraction of a site's (or hook's) variance the intervention moves, on the network and
    as the theory predicts it (where the theory has the site)."""
    idx = observed.at
    before = lab.at(lab.record(lab.inputs, [observed.hook])[0], observed)[idx]
    after = lab.at(lab.record(outcome.inputs, [observed.hook], outcome.replace)[0], observed)[idx]
    mean = lab.at(lab.record(lab.train_inputs, [observed.hook])[0], observed)[idx].mean(0)
    num, den = _per_example((after - before) ** 2), _per_example((before - mean) ** 2)
    spread = max(float(den.sum()), 1e-30)
    predicted = fit = None
    if observed.site in outcome.theory:  # a site it predicts (not one it is given)
        p0, p1 = theory_before[observed.site][idx], outcome.theory[observed.site][idx]
        predicted = float(((p1 - p0) ** 2).sum()) / spread
        fit = r2(float(((p1 - after) ** 2).sum()), float(((after - mean) ** 2).sum()))
    return _Effect("variance moved", float(num.sum()) / spread, *_interval(num, den, lab.rng), predicted, fit)


def _output_effect(lab: Lab, outcome: Outcome, theory_before, metric: Optional[str]) -> _Effect:
    """The change of the output's ``metric`` on the network, and as the theory predicts it: the
    network with the theory's prediction of its last site spliced in, before and after."""
    metric = metric or "loss"
    task, theory = lab.target.task, lab.theory
    rows0, m0 = _metric_rows(task, lab.record(lab.inputs, [])[1], lab.inputs, metric)
    rows1, m1 = _metric_rows(task, lab.record(outcome.inputs, [], outcome.replace)[1], outcome.inputs, metric, rows0)
    if len(m0) == len(m1):
        low, high = _interval(m1 - m0, None, lab.rng)
    else:  # an input intervention changed which rows the task reads: the two means drawn apart
        (low0, high0), (low1, high1) = _interval(m0, None, lab.rng), _interval(m1, None, lab.rng)
        low, high = low1 - high0, high1 - low0
    last = theory.sites[theory.site_order()[0][-1]]
    spliced0 = lab.record(lab.inputs, [], {last.hook: _put(theory_before[theory.site_order()[0][-1]], last.kept)})[1]
    spliced1 = lab.record(outcome.inputs, [], lab.spliced(outcome, last))[1]
    s_rows0, s0 = _metric_rows(task, spliced0, lab.inputs, metric)
    s_rows1, s1 = _metric_rows(task, spliced1, outcome.inputs, metric, s_rows0)
    fit = r2(float(((s_rows1 - rows1) ** 2).sum()), float(((rows1 - rows0.mean(0)) ** 2).sum()))
    return _Effect(f"{metric} change", float(m1.mean() - m0.mean()), low, high, float(s1.mean() - s0.mean()), fit)
