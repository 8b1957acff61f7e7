"""Fitting: exact ridge where a site is a linear map of fixed features (or a lookup table), and
optax Adam with early stopping for everything else. Deterministic for a seed; resumable."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping

import jax
import numpy as np

from theorycraft._metrics import Metrics
from theorycraft.configs import FitConfig  # defined with the other stages' configs
from theorycraft.spec import Theory

from . import _distributed
from ._adam import Checkpoint, check_stop, fit_gradient
from ._compile import Plan, fixed_inputs, init_params, make_plan, read_input, site_rows
from ._examples import check_inputs, load_examples, shard_blocks, site_shapes, train_means
from ._memory import Budget, data_bytes
from ._solvers import SOLVERS
from ._stream import take
from .kinds import Kind, Start, kind_of


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

    def starts(names, staged: Plan, seed: int) -> dict:  # where the data points them (init compiles per shape)
        return warm_start(staged, init_params(staged, jax.random.PRNGKey(seed), only=names), means, data, every_train)

    def initialise(names, staged: Plan) -> None:  # starts only where a gradient fit needs them
        missing = [n for n in names if n not in params]
        if missing:
            params.update(starts(missing, staged, config.seed))

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
        initialise([n for n in _upstream_all(staged, rest) if n in learnable and n not in staged.fixed], staged)
        learning = {n: params[n] for n in _upstream_all(staged, rest) if n in learnable and n not in staged.fixed}
        if learning:
            runs = []
            for r in range(config.restarts):  # restart r: seed + r, its own starts, batches and checkpoint
                restart = config if r == 0 else replace(config, seed=config.seed + r)
                begin = learning if r == 0 else starts(list(learning), staged, restart.seed)
                name = ("checkpoint" if k == 0 else f"checkpoint.stage{k}") + (f".restart{r}" if r else "") + ".npz"
                checkpoint = Checkpoint(out_dir, fingerprint(theory, acts, config), name)
                runs.append(fit_gradient(staged, begin, rest, data, every_train, val_idx, means, restart, checkpoint,
                                         log, metrics, stage=k, stop=stop, blocks=shard_blocks(acts, every_train),
                                         own_train=train_idx, validation=int(validating.sum())))
            learned, info = chosen(runs, len(rest), config)
            params.update({n: learned[n] for n in learning})
            summary["gradient"] = info  # the last stage's; each stage's below
            log(f"sites {', '.join(rest)}: Adam, {info['steps']} steps on {info['devices']} device(s); "
                f"{'converged' if info['converged'] else 'NOT converged'}: {info['convergence']}")
        summary["stages"].append({"sites": list(stage), "closed_form": list(closed),
                                  "gradient": info if learning else None})
        frozen |= {n: params[n] for n in _upstream_all(plan, stage) if n in params}
    initialise(learnable, plan)  # a component no fit reached keeps its start
    summary |= finished(summary["stages"])
    params = {n: params[n] for n in learnable}
    # examples_read: those of this process's own shards (Adam's steps read their slices wherever they lie)
    inputs = acts.inputs()
    data = {"capture": acts.key, "n": acts.n, "cache": str(acts.directory.parent),  # by key; the cache a last resort
            "processes": _distributed.process_count(), "examples_read": len(local),
            "inputs": {"shape": [int(d) for d in inputs.shape[1:]], "dtype": str(inputs.dtype)}}  # what predict takes
    summary |= {"seconds": round(time.time() - start, 2), "data": data}
    metrics.write("fit_done", len(summary["stages"]), seconds=summary["seconds"], mode=config.mode)
    return FittedTheory(theory, plan, jax.device_get(params), {s: np.asarray(m) for s, m in means.items()},
                        acts.vocab_size, summary)



def chosen(runs: list[tuple[dict, dict]], sites: int, config: FitConfig) -> tuple[dict, dict]:
    """Of restarts' (params, summary), the best on validation; it has not converged where the
    restarts' best validation losses span more than ``config.tolerance`` per site (another start
    may find better still)."""
    params, info = min(runs, key=lambda run: run[1]["best_validation_loss"])
    if len(runs) == 1:
        return params, info
    losses = [run[1]["best_validation_loss"] for run in runs]
    info = info | {"restarts": len(runs), "restart_validation_losses": [round(v, 6) for v in losses]}
    if max(losses) - min(losses) > config.tolerance * sites:
        info |= {"converged": False, "convergence": f"restarts disagree: best validation losses "
                 f"{', '.join(f'{v:.4g}' for v in losses)} (the best kept); another start may reach lower"}
    return params, info


def finished(stages: list[dict]) -> dict:
    """``converged``: whether every Adam fit of the stages finished (a closed-form solve is exact),
    and ``convergence``: why, naming each fit's sites (those that did not finish, where any)."""
    adam = [(", ".join(s for s in st["sites"] if s not in st["closed_form"]), st["gradient"])
            for st in stages if st["gradient"] is not None]
    unfinished = [(sites, info) for sites, info in adam if not info["converged"]]
    reasons = "; ".join(f"sites {sites}: {info['convergence']}" for sites, info in unfinished or adam)
    return {"converged": not unfinished, "convergence": reasons or "no Adam fit (closed-form solves are exact)"}


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


START_BYTES = 32 << 20  # a predicted site's recorded rows that a start reads, at most (and START_EXAMPLES)
START_EXAMPLES = 256


def warm_start(plan: Plan, params: dict, means: Mapping[str, np.ndarray], data=None,
               index: np.ndarray | None = None) -> dict:
    """Each kind's start where the recorded data points it (``Kind.warm_start``): its predicted
    site's training mean, and on the first training examples of ``index`` (as many as
    ``START_BYTES`` of the site allow, up to ``START_EXAMPLES``; the same on every process) its
    inputs, where none is learned, and the site's recorded rows."""
    params, samples = dict(params), {}
    for name, c in plan.theory.components.items():
        if name not in params or not c.predicts:
            continue
        site, reads_data = c.predicts, type(kind_of(c)).warm_start is not Kind.warm_start  # else nothing to read
        if reads_data and data is not None and index is not None and len(index) and site not in samples:
            per_example = 4 * int(np.prod(plan.site_shapes[site]))
            batch = take(data, index[:max(1, min(START_EXAMPLES, START_BYTES // per_example))])
            samples[site] = (fixed_inputs(plan, batch, site), site_rows(plan, site, batch[site]))
        fixed, target = samples.get(site, (None, None))
        inputs = None
        if fixed is not None:
            wanted = ([f"{name}/expr"] if c.expressions() else []) + list(c.reads())
            if all(w in fixed for w in wanted):  # nothing it reads is learned
                inputs = ([fixed[f"{name}/expr"]] if c.expressions() else []) + [read_input(c, r, fixed) for r in c.reads()]
        start = Start(np.asarray(means[site]), plan.site_shapes[site], inputs, target if inputs is not None else None,
                      plan.theory.predictors(site) == (name,))
        params[name] = kind_of(c).warm_start(params[name], c, start)
    return params


def _upstream_all(plan: Plan, sites) -> set[str]:
    return set().union(*(plan.theory.upstream(s) for s in sites))
