"""Fitting: exact ridge where a site is a linear map of fixed features (or a lookup table), and
optax Adam with early stopping for everything else. Deterministic for a seed; resumable."""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from theorycraft._metrics import Metrics
from theorycraft.configs import FitConfig  # defined with the other stages' configs
from theorycraft.errors import FitError
from theorycraft.spec import Theory, TheoryError

from . import _distributed
from ._memory import Budget, data_bytes
from ._compile import Plan, fixed_inputs, init_params, make_plan, predict_site, site_rows, varying_columns
from . import _stream
from ._stream import Windows, capture_rows, chunks, picked, rows_per_example, take
from .kinds import kind_of

# --- data -----------------------------------------------------------------------------------------

def site_shapes(theory: Theory, recorded: Mapping[str, tuple]) -> dict[str, tuple]:
    """Each site's per-example shape, its position selected; a position outside the recorded
    sequence (or of a site with none) is reported at file:line:col."""
    shapes, problems = {}, []
    for name, site in theory.sites.items():
        shape = tuple(recorded[str(site.hook)])
        if site.position is not None and (len(shape) < 2 or not -shape[0] <= site.position < shape[0]):
            expected = (f"a position from {-shape[0]} to {shape[0] - 1} (the hook records {shape[0]} positions, "
                        f"shape {list(shape)})" if len(shape) >= 2 else
                        f"no position: hook '{site.hook}' records one vector per example, shape {list(shape)}")
            problems.append(theory.diagnostic("sites", name, f"site '{name}': expected {expected}, found position "
                                              f"{site.position}", "position"))
            continue
        shapes[name] = shape[1:] if site.position is not None else shape
    if problems:
        raise TheoryError(problems)
    return shapes


def load_examples(theory: Theory, acts) -> dict:
    """The inputs and every site (positions selected), all examples, read from the memory-mapped
    shards only where indexed (``data[site][rows]`` is a float32 batch): nothing is loaded here."""
    return capture_rows(theory, acts)


def train_means(plan: Plan, data, index: np.ndarray) -> dict[str, np.ndarray]:
    """Each site's mean row over examples ``index``, summed batch by batch (float64)."""
    means = {}
    for s in plan.theory.sites:
        total, count = 0.0, 0
        for rows in chunks(index, rows_per_example(plan.site_shapes[s])):
            y = site_rows(plan, s, data[s][rows])
            total, count = total + y.sum(0, dtype=np.float64), count + len(y)
        total, count = _distributed.allsum(total), int(_distributed.allsum(np.asarray(count, np.int64)))  # Σ over processes
        means[s] = (total / max(count, 1)).astype(np.float32)
    return means


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
        solvers = {kind_of(c).closed_form(c, plan, len(comps)) for c in comps}
        general = [s for s in solvers if s is not None and solvers <= {s, *getattr(s, "covers", ())}]
        if general:  # one solver for them all (a solver may say which others it covers)
            out[site] = (general[0], list(names))
    return out


# --- gradient fitting -----------------------------------------------------------------------------

def _rows_for(plan: Plan, site: str, examples: np.ndarray) -> np.ndarray:
    shape = plan.site_shapes[site]
    if len(shape) == 2:  # a row per position
        return (examples[:, None] * shape[0] + np.arange(shape[0])).reshape(-1)
    return examples


def _fixed_by_site(plan: Plan, data, sites, *, whole: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Per site, what its predictors read, and its targets ``__y__``: the columns the fit changes
    (``varying``), or all of them (``whole``)."""
    out = {}
    for s in sites:
        y = site_rows(plan, s, data[s])
        out[s] = fixed_inputs(plan, data, s) | {"__y__": y if whole else varying(plan, s, y)}
    return out


def varying(plan: Plan, site: str, values):
    """The columns of ``values`` ([rows, width] of ``site``) that the fit changes (``varying_columns``)."""
    columns = varying_columns(plan, site)
    return values if columns is None else values[:, columns]


def make_loss(plan: Plan, sites, variances, means) -> Callable:
    def loss(params, batch):
        total = 0.0
        for s in sites:
            fixed = batch[s]
            y = fixed["__y__"]
            pred = varying(plan, s, predict_site(plan, params, s, fixed, means[s], y.shape[0]))
            total = total + jnp.mean(jnp.sum((pred - y) ** 2, axis=-1)) / variances[s]
        return total + _penalties(plan, params)
    return loss


def _penalties(plan: Plan, params) -> jax.Array:
    total = 0.0
    for name, c in plan.theory.components.items():
        if name in params:
            total = total + kind_of(c).penalty(params[name], c)
    return total


def _gather(fixed_all, plan, sites, examples):
    """A minibatch: every array of a site shares that site's rows."""
    return {s: {k: v[_rows_for(plan, s, examples)] for k, v in fixed_all[s].items()} for s in sites}


class Checkpoint:
    """Everything needed to continue a fit exactly: params, optimiser state, step, best so far."""

    def __init__(self, directory: Path | None, fingerprint: str, name: str = "checkpoint.npz"):
        self.path = directory / name if directory else None
        self.fingerprint = fingerprint

    def save(self, state: dict) -> None:
        if self.path is None or not _distributed.is_leader():  # one writer per cluster
            return
        leaves, _ = jax.tree_util.tree_flatten(state["tree"])
        arrays = {f"leaf{k}": np.asarray(v) for k, v in enumerate(leaves)}
        meta = json.dumps({k: v for k, v in state.items() if k != "tree"} | {"fingerprint": self.fingerprint})
        tmp = self.path.with_name(f".{self.path.stem}.tmp.npz")
        np.savez(tmp, __meta__=np.frombuffer(meta.encode(), np.uint8), **arrays)
        os.replace(tmp, self.path)

    def load(self, like: dict) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            with np.load(self.path) as f:
                meta = json.loads(f["__meta__"].tobytes().decode())
                leaves = [f[f"leaf{k}"] for k in range(len(f.files) - 1)]
        except (OSError, ValueError, KeyError):
            return None  # a torn checkpoint: start over rather than trust it
        if meta.pop("fingerprint") != self.fingerprint:
            return None
        like_leaves, treedef = jax.tree_util.tree_flatten(like)
        if [np.shape(x) for x in like_leaves] != [x.shape for x in leaves]:
            return None  # saved by a different version of the theory's kinds
        return meta | {"tree": jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])}


def make_step(loss: Callable, optimiser: optax.GradientTransformation, shardings=None,
              gather: Callable | None = None) -> Callable:
    """One jitted optimiser step: (params, opt_state, batch) -> (params, opt_state, loss).
    ``shardings``: those of (params, opt_state), kept by the step (see _distributed.Layout).
    ``gather``: the batch is ``(held, rows, validation)`` instead, ``rows`` [K, batch size]: one
    call takes K steps, each gathering its batch as ``gather((held, rows[k]))`` inside (on a small
    theory a dispatch per step costs more than the step), and returns (the K losses, the loss on
    the ``validation`` batch after them) in place of the loss (one compilation, not two)."""
    out = None if shardings is None else (*shardings, None)

    def update(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    if gather is None:
        return jax.jit(update, out_shardings=out)

    @partial(jax.jit, out_shardings=out)
    def steps(params, opt_state, batch):
        held, rows, validation = batch

        def one(carry, r):
            params, opt_state, value = update(*carry, gather((held, r)))
            return (params, opt_state), value
        (params, opt_state), values = jax.lax.scan(one, (params, opt_state), rows)
        return params, opt_state, (values, loss(params, validation))
    return steps


class Stopped(Exception):
    """A fit's ``stop`` said stop (a search's time budget is spent): the fit is abandoned, its
    checkpoint, where it has one, kept."""


def _check_stop(stop: Callable[[], bool] | None, where: str) -> None:
    if stop is not None and stop():
        raise Stopped(where)


def _fixed_bytes(plan: Plan, data, index: np.ndarray, sites) -> int:
    """Bytes of the fixed inputs of ``sites`` per example, measured on a few of ``index``."""
    probe = index[:8]
    if not len(probe):
        return 1
    fixed = _fixed_by_site(plan, take(data, probe), sites)
    return max(1, sum(v.nbytes for f in fixed.values() for v in f.values()) // len(probe))


def _streamed_loss(plan: Plan, sites, variances, means, data, index: np.ndarray, window: int) -> Callable:
    """The loss over examples ``index`` (this process's; Σ over processes) too many to hold at
    once: per-site squared errors summed window by window, then averaged as ``make_loss`` does."""
    def sse(params, batch):
        return {s: jnp.sum((varying(plan, s, predict_site(plan, params, s, batch[s], means[s], batch[s]["__y__"].shape[0]))
                            - batch[s]["__y__"]) ** 2) for s in sites}
    sse = jax.jit(sse)

    def loss(params):
        params = _distributed.to_host(params)
        sums = np.zeros((2, len(sites)))  # [squared error, rows] per site
        for part in chunks(index, 1, window):
            batch = _fixed_by_site(plan, take(data, part), sites)
            for j, (s, v) in enumerate(sse(params, batch).items()):
                sums[:, j] += float(v), batch[s]["__y__"].shape[0]
        totals, rows = _distributed.allsum(sums)  # every process's rows
        return sum(t / max(r, 1) / variances[s] for s, t, r in zip(sites, totals, rows)) + float(_penalties(plan, params))
    return loss


def _variances(plan: Plan, sites, data, index: np.ndarray, means) -> dict[str, float]:
    """Each site's summed per-dimension variance over ``index`` (this process's examples; Σ over
    processes), around its mean over them."""
    out = {}
    for s in sites:
        total, count = 0.0, 0
        for rows in chunks(index, rows_per_example(plan.site_shapes[s])):
            y = site_rows(plan, s, data[s][rows])
            total, count = total + float(((y - means[s]) ** 2).sum(dtype=np.float64)), count + len(y)
        total, count = _distributed.allsum(np.array([total, count], np.float64))
        out[s] = float(total) / max(float(count), 1) + 1e-12
    return out


def fit_gradient(plan: Plan, params: dict, sites: list[str], data, train_idx, val_idx, means, config: FitConfig,
                 checkpoint: Checkpoint, log: Callable[[str], None], metrics: Metrics = Metrics(),
                 stage: int = 0, stop: Callable[[], bool] | None = None, blocks=(), own_train=None,
                 validation: int | None = None) -> tuple[dict, dict]:
    """Adam on minibatches of examples, data-parallel over every JAX device (and process), early
    stopping on the validation split. Returns the best parameters and a summary. The fixed inputs
    of a split are computed once when they fit in ``RESIDENT_BYTES``; otherwise the steps read
    shuffled windows of the memory-mapped shards (``_stream.Windows``; ``blocks``: the training
    positions each shard holds) and the validation loss is summed window by window. At each
    evaluation a ``fit`` record goes to ``metrics``. ``stop`` is asked before every step (on one
    device with the split resident, before each run of steps to the next evaluation, taken in one
    call); when it says so, the fit raises ``Stopped``.

    On several processes, ``train_idx`` is still the whole training split: every process draws
    the same order of it and feeds its equal part of each step, so the steps are those of one
    process. ``own_train`` (default ``train_idx``) and ``val_idx`` are this process's own
    examples, whose sums (variances, the validation loss) are added across processes;
    ``validation``: the validation examples of every process together."""
    own_train = train_idx if own_train is None else own_train
    validation = len(val_idx) if validation is None else validation
    layout = _distributed.Layout(_distributed.make_mesh(config.model_shards))  # batches on `data`, big params on `model`
    devices = jax.devices()
    per_step = max(layout.data, config.batch_size // len(devices) * len(devices))
    part, parts = jax.process_index(), jax.process_count()  # this process's slice of each step
    per_example = _fixed_bytes(plan, data, train_idx, sites)  # alike on every process: the same windows
    windows = Windows(len(train_idx), per_step, config.seed, _stream.RESIDENT_BYTES // per_example, blocks)
    held = {"key": None, "positions": None, "fixed": None, "order": None}
    if windows.resident:  # the whole split, computed once, on every process
        fixed = _fixed_by_site(plan, take(data, train_idx), sites, whole=True)
        variances = {s: float(np.var(fixed[s]["__y__"], axis=0).sum()) + 1e-12 for s in sites}  # every column's
        held.update(key=0, positions=np.arange(len(train_idx)),
                    fixed={s: f | {"__y__": varying(plan, s, f["__y__"])} for s, f in fixed.items()})
    else:
        variances = _variances(plan, sites, data, own_train, means)
        log(f"streaming: {len(train_idx):,} training examples in shuffled windows of {windows.window:,}")
    loss = make_loss(plan, sites, variances, {s: jnp.asarray(means[s]) for s in sites})
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, min(100, config.max_steps // 10 + 1),
                                                  config.max_steps, config.learning_rate * 0.05)
    optimiser = optax.adam(schedule)

    def train_rows(k: int) -> np.ndarray:
        """Step ``k``'s rows of ``held["fixed"]`` (a streamed window's rows read when it starts)."""
        epoch, w, start = windows.locate(k)
        key = (0 if windows.resident else epoch, w)
        if held["order"] is None or held["order"][0] != (epoch, w):  # a new window (or epoch): its shuffle
            members = windows.members(epoch, w)
            held["order"] = ((epoch, w), members, windows.order(epoch, w, len(members)))
        _, members, order = held["order"]
        if held["key"] != key and not windows.resident:  # read this process's rows of the window's steps
            positions = np.unique(members[order[windows.share(w, part, parts)]])
            held.update(key=key, positions=positions, fixed=_fixed_by_site(plan, take(data, train_idx[positions]), sites))
        rows = members[picked(order, start, per_step, part, parts)]  # positions in the training split
        return rows if windows.resident else np.searchsorted(held["positions"], rows)

    def train_batch(k: int) -> dict:
        rows = train_rows(k)  # first: a streamed window's rows are read as it starts
        return _gather(held["fixed"], plan, sites, rows)

    val_resident = validation * per_example <= _stream.RESIDENT_BYTES  # decided alike on every process
    # one process on one device with both splits in memory: they go to the device once, and each
    # call runs the steps to the next evaluation, gathering their rows there, and the validation
    # loss after them (a host gather and transfer per step cost more than the step)
    on_device = windows.resident and val_resident and parts == 1 and len(devices) == 1
    val_fixed = _fixed_by_site(plan, take(data, val_idx), sites) if val_resident else None
    if on_device:
        resident, val_loss = jax.device_put((held["fixed"], val_fixed)), None
    elif val_resident:
        val_loss = _distributed.validation_loss(loss, layout, val_fixed, len(val_idx))
    else:
        val_loss = _streamed_loss(plan, sites, variances, {s: jnp.asarray(means[s]) for s in sites}, data, val_idx,
                                  max(_stream.RESIDENT_BYTES // per_example, 1))
    gather = (lambda batch: _gather(batch[0], plan, sites, batch[1])) if on_device else None
    state = {"tree": {"params": params, "opt": optimiser.init(params), "best": params},
             "step": 0, "best_val": float("inf"), "stale": 0}
    step = make_step(loss, optimiser, layout.shardings((state["tree"]["params"], state["tree"]["opt"])), gather)
    resumed = checkpoint.load(state["tree"])
    if not _distributed.agree(-1 if resumed is None else resumed["step"]):
        resumed = None  # a checkpoint that not every process sees alike: all start over together
    if resumed is not None:
        state = resumed
        log(f"resumed from step {state['step']}")
    state["tree"] = layout.place(state["tree"])
    from tqdm.auto import tqdm
    bar = tqdm(total=config.max_steps, initial=state["step"], desc="fit", disable=not config.progress,
               dynamic_ncols=True)
    since = []  # training losses since the last evaluation, on the device (read at each evaluation:
    checked = state  # a read per step waits for the step) and the last state they were checked finite at
    try:
        while state["step"] < config.max_steps and state["stale"] < config.patience:
            k = state["step"]
            _check_stop(stop, f"stopped at Adam step {k}")
            if on_device:  # every step up to the next evaluation or checkpoint in one call
                end = min(-(-(k + 1) // every) * every for every in (config.eval_every, config.checkpoint_every))
                end = min(end, config.max_steps)
                batch = (resident[0], np.stack([train_rows(j) for j in range(k, end)]), resident[1])
            else:
                end, batch = k + 1, layout.batch(train_batch(k))
            tree = state["tree"]
            new_params, new_opt, value = step(tree["params"], tree["opt"], batch)
            if on_device:
                value, evaluated = value
            state = state | {"tree": {"params": new_params, "opt": new_opt, "best": tree["best"]}, "step": end}
            bar.update(end - k)
            since.append(value)
            if state["step"] % config.eval_every == 0 or state["step"] == config.max_steps:
                losses = np.concatenate([np.ravel(v) for v in _distributed.to_host(since)]).astype(np.float64)
                if not np.isfinite(losses).all():
                    checkpoint.save(checked | {"tree": _distributed.to_host(checked["tree"])})
                    learned = ", ".join(plan.learned)
                    raise FitError(f"the fit diverged at step {checked['step'] + int(np.argmin(np.isfinite(losses)))} "
                                   f"(loss is NaN or Inf) in components {learned}; try a lower learning rate (--lr) "
                                   f"or more regularisation (l1:, a smaller rank); the last good state (step "
                                   f"{checked['step']}) is kept" + (f" in {checkpoint.path}" if checkpoint.path else ""))
                checked, value = state, float(losses[-1])
                current = float(evaluated) if on_device else val_loss(new_params)
                bar.set_postfix(loss=f"{value:.4f}", val=f"{current:.4f}")
                if current < state["best_val"] - 1e-7:
                    state.update(best_val=current, stale=0)
                    state["tree"]["best"] = new_params
                else:
                    state["stale"] += 1
                metrics.write("fit", state["step"], stage=stage, sites=sites, loss=float(losses.mean()),
                              validation_loss=current, best_validation_loss=state["best_val"],
                              learning_rate=float(schedule(state["step"] - 1)))
                since = []
            if state["step"] % config.checkpoint_every == 0:
                checkpoint.save(state | {"tree": _distributed.to_host(state["tree"])})
    except (KeyboardInterrupt, Stopped):  # Ctrl-C or the budget: keep where we are, so a rerun continues
        checkpoint.save(state | {"tree": _distributed.to_host(state["tree"])})
        raise
    finally:
        bar.close()
    checkpoint.save(state | {"tree": _distributed.to_host(state["tree"])})
    best = _distributed.to_host(state["tree"]["best"] if np.isfinite(state["best_val"]) else state["tree"]["params"])
    return best, {"steps": state["step"], "best_validation_loss": state["best_val"], "devices": len(devices),
                  "mesh": dict(layout.mesh.shape), "sharded_on_model": layout.split(params)}


def fingerprint(theory: Theory, acts, config: FitConfig) -> str:
    text = theory.to_yaml() + acts.manifest["key"]["target"] + acts.manifest["dataset"]["identity"]
    text += json.dumps({k: v for k, v in config.__dict__.items() if k not in ("progress", "max_memory", "model_shards")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def check_inputs(theory: Theory, acts) -> None:
    """A theory reads ``token[...]`` only of token inputs ``[N, T]``: every variable that reads
    them from float inputs is reported at file:line:col, naming what the inputs are."""
    if acts.input_kind == "tokens":
        return
    shape = acts.manifest["inputs"]["shape"]
    problems = [theory.diagnostic("variables", name, f"variable '{name}' reads token[...], but the inputs of "
                                  f"{theory.target} are {acts.manifest['inputs']['dtype']} vectors {shape}, not "
                                  f"integer token ids [N, T]; read a site instead, or record token inputs")
                for name, expr in theory.variables.items() if any(n == "token" for n, _ in expr.names)]
    if problems:
        raise TheoryError(problems)


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
        _check_stop(stop, f"stopped before fitting {', '.join(stage)}")
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


def shard_blocks(acts, index: np.ndarray) -> list[tuple[int, int]]:
    """The positions in ``index`` (sorted example indices) that each shard of ``acts`` holds."""
    bounds = [np.searchsorted(index, shard["rows"]) for shard in acts.manifest["shards"]]
    return [(int(a), int(b)) for a, b in bounds if b > a]


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
