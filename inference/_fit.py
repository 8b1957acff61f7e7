"""Fitting: exact ridge where a site is a linear map of fixed features (or a lookup table), and
optax Adam with early stopping for everything else. Deterministic for a seed; resumable."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Mapping

import jax
import numpy as np

from theorycraft._metrics import Metrics
from theorycraft.configs import FitConfig  # defined with the other stages' configs
from theorycraft.spec import Theory

from . import _distributed
from ._adam import Checkpoint, check_stop, fit_gradient
from ._compile import Plan, init_params, make_plan
from ._examples import check_inputs, load_examples, shard_blocks, site_shapes, train_means
from ._memory import Budget, data_bytes
from ._solvers import SOLVERS
from .kinds import kind_of


# --- closed form ----------------------------------------------------------------------------------

def closed_form_sites(plan: Plan, stage: list[str] | None = None) -> dict[str, tuple[Callable, list[str]]]:
    """Sites (of ``stage``, default all) solved exactly, with their solver: those whose predictors,
    read by no other component fitted with them (a later stage's readers see them frozen), all
    offer a closed-form solver that one of them covers (each kind says when: plain linear maps of
    fixed features -> ridge; lookup tables, with or without such maps -> ridge of their one-hot
    design by conjugate gradients)."""
    theory, out = plan.theory, {}
    sites = list(theory.sites) if stage is None else stage
    fitted_together = set().union(*(theory.upstream(s) for s in sites)) if sites else set()
    readers = {r for n in fitted_together for r in theory.components[n].reads()}
    for site in sites:
        names = theory.predictors(site)
        if not names or len(plan.site_shapes[site]) == 3 or any(n in readers for n in names):
            continue
        comps = [theory.components[n] for n in names]
        solvers = {kind_of(c).closed_form(c, plan, len(comps), SOLVERS) for c in comps}
        general = [s for s in solvers if s is not None and solvers <= {s, *getattr(s, "covers", ())}]
        if general:  # one solver for them all (a solver may say which others it covers)
            out[site] = (general[0], list(names))
    return out



def fingerprint(theory: Theory, acts, config: FitConfig) -> str:
    text = theory.to_yaml() + acts.manifest["key"]["target"] + acts.manifest["dataset"]["identity"]
    text += json.dumps({k: v for k, v in config.__dict__.items() if k not in ("progress", "max_memory", "model_shards")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]



def fit(theory: Theory, acts, config: FitConfig = FitConfig(), out_dir: Path | None = None,
        log: Callable[[str], None] = lambda s: None, *, examples: np.ndarray | None = None,
        data: Mapping[str, np.ndarray] | None = None, keep: Mapping[str, dict] | None = None,
        stop: Callable[[], bool] | None = None):
    """Fit every free parameter of ``theory`` to the captured activations ``acts``: on the
    training split, every choice on the validation split; the test split is never read. With
    ``examples``, only those among them (the prequential code fits on prefixes). ``keep``:
    components whose parameters are already fitted (a search's current theory): held fixed as an
    earlier stage's are, and a site whose every learned component is kept is not fitted again.
    ``stop`` (a search's budget; single-process fits only, as a process stopping alone would
    leave the others waiting) is asked between stages and before every Adam step; when it says
    so, the fit raises ``Stopped``."""
    from ._fitted import FittedTheory

    start = time.time()
    metrics = Metrics(out_dir)  # out_dir None: nowhere
    metrics.write("fit_start", 0, mode=config.mode, seed=config.seed, max_steps=config.max_steps)
    check_inputs(theory, acts)
    allowed = np.zeros(acts.n, bool)
    allowed[examples if examples is not None else slice(None)] = True
    local = _distributed.local_rows(acts)  # all examples; on several processes, this one's shards
    training, validating = ~acts.is_test & ~acts.is_validation & allowed, acts.is_validation & allowed
    every_train = np.flatnonzero(training)  # Adam's steps draw from all of it, on every process
    train_idx = _distributed.own(acts, every_train)  # this process's own examples
    val_idx = _distributed.own(acts, np.flatnonzero(validating))
    shapes = site_shapes(theory, acts.sites)
    budget = Budget.of(config.max_memory, config.batch_size, len(every_train), len(val_idx),  # Adam may hold all
                       data_bytes(shapes, len(local)))  # priced (and refused) before anything is allocated
    plan = make_plan(theory, shapes, acts.vocab_size, budget=budget)
    data = load_examples(theory, acts) if data is None else data  # read from the shards where indexed
    means = train_means(plan, data, train_idx)
    learnable = [n for n in plan.theory.components if n not in plan.fixed]

    def initialise(names) -> None:  # starting points only where a gradient fit needs them (init compiles per shape)
        missing = [n for n in names if n not in params]
        if missing:
            params.update(warm_start(plan, init_params(plan, jax.random.PRNGKey(config.seed), only=missing), means))

    summary: dict = {"mode": config.mode, "closed_form": {}, "gradient": None, "stages": [], "kept": []}
    keep = {n: p for n, p in (keep or {}).items() if n in learnable}
    params = dict(keep)
    frozen: dict = dict(keep)  # parameters fitted by earlier stages (or kept): fixed for the later ones
    for k, stage in enumerate(fit_stages(plan, config.mode)):
        kept = [s for s in stage if all(n in keep for n in plan.theory.upstream(s) if n in learnable)]
        summary["kept"] += kept
        stage = [s for s in stage if s not in kept]
        if not stage:
            continue
        check_stop(stop, f"stopped before fitting {', '.join(stage)}")
        staged = make_plan(theory, plan.site_shapes, acts.vocab_size, frozen=frozen) if frozen else plan
        closed = closed_form_sites(staged, stage)
        for site, (solve, names) in closed.items():
            solved, strength, method = solve(staged, site, names, data, train_idx, val_idx, config.refit_on_validation)
            params.update(solved)
            summary["closed_form"][site] = {"components": names, "ridge_strength": strength, "method": method}
            log(f"site {site}: exact ridge over {', '.join(names)} (strength {strength:g}): {method}")
            metrics.write("closed_form", k, site=site, components=names, ridge_strength=strength, method=method)
        rest = [s for s in stage if s not in closed]
        initialise([n for n in _upstream_all(staged, rest) if n in learnable and n not in staged.fixed])
        learning = {n: params[n] for n in _upstream_all(staged, rest) if n in learnable and n not in staged.fixed}
        if learning:
            name = "checkpoint.npz" if k == 0 else f"checkpoint.stage{k}.npz"
            checkpoint = Checkpoint(out_dir, fingerprint(theory, acts, config), name)
            learned, info = fit_gradient(staged, learning, rest, data, every_train, val_idx, means, config, checkpoint,
                                         log, metrics, stage=k, stop=stop, blocks=shard_blocks(acts, every_train),
                                         own_train=train_idx, validation=int(validating.sum()))
            params.update({n: learned[n] for n in learning})
            summary["gradient"] = info  # the last stage's; each stage's below
            log(f"sites {', '.join(rest)}: Adam, {info['steps']} steps on {info['devices']} device(s)")
        summary["stages"].append({"sites": list(stage), "closed_form": list(closed),
                                  "gradient": info if learning else None})
        frozen |= {n: params[n] for n in _upstream_all(plan, stage) if n in params}
    initialise(learnable)  # a component no fit reached keeps its start
    params = {n: params[n] for n in learnable}
    # examples_read: those of this process's own shards (Adam's steps read their slices wherever they lie)
    data = {"capture": acts.key, "n": acts.n, "cache": str(acts.directory.parent),  # by key; the cache a last resort
            "processes": _distributed.process_count(), "examples_read": len(local)}
    summary |= {"seconds": round(time.time() - start, 2), "data": data}
    metrics.write("fit_done", len(summary["stages"]), seconds=summary["seconds"], mode=config.mode)
    return FittedTheory(theory, plan, jax.device_get(params), {s: np.asarray(m) for s, m in means.items()},
                        acts.vocab_size, summary)



def fit_stages(plan: Plan, mode: str = "stagewise") -> list[list[str]]:
    """The predicted sites in the order they are fitted. Stagewise: a site is fitted once every
    component it depends on that predicts another site has been fitted to that site (and is then
    held fixed), so each component is fitted to the site it predicts; sites that wait on each
    other are fitted together. Joint: all sites at once (end to end through shared components)."""
    theory = plan.theory
    pending = [s for s in theory.sites if theory.predictors(s)]
    if mode == "joint":
        return [pending] if pending else []
    stages, done = [], set()
    while pending:
        ready = [s for s in pending if all(theory.components[n].predicts in (None, s) or theory.components[n].predicts
                                           in done for n in theory.upstream(s))] or pending
        stages.append(ready)
        done |= set(ready)
        pending = [s for s in pending if s not in ready]
    return stages


def warm_start(plan: Plan, params: dict, means: Mapping[str, np.ndarray]) -> dict:
    """Each kind's start from its predicted site's training mean (an attention prior starts at
    the log of its head's mean pattern, so the rule only explains what position does not)."""
    params = dict(params)
    for name, c in plan.theory.components.items():
        if name in params and c.predicts:
            params[name] = kind_of(c).warm_start(params[name], c, means[c.predicts], plan.site_shapes[c.predicts])
    return params


def _upstream_all(plan: Plan, sites) -> set[str]:
    return set().union(*(plan.theory.upstream(s) for s in sites))
