"""The gradient fit: optax Adam on minibatches, data-parallel over every device and process, early
stopping on validation, resumable from its checkpoints; and the loss it descends."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from theorycraft.files import replacing
from theorycraft._metrics import Metrics
from theorycraft.errors import FitError

from . import _distributed, _stream
from ._compile import Plan, predict_site
from ._examples import fixed_by_site, minibatch, variances as site_variances, varying
from ._stream import Windows, chunks, picked, take
from .kinds import kind_of

if TYPE_CHECKING:
    from ._fit import FitConfig


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
        with replacing(self.path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
            np.savez(f, __meta__=np.frombuffer(meta.encode(), np.uint8), **arrays)

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


def check_stop(stop: Callable[[], bool] | None, where: str) -> None:
    if stop is not None and stop():
        raise Stopped(where)


def _fixed_bytes(plan: Plan, data, index: np.ndarray, sites) -> int:
    """Bytes of the fixed inputs of ``sites`` per example, measured on a few of ``index``."""
    probe = index[:8]
    if not len(probe):
        return 1
    fixed = fixed_by_site(plan, take(data, probe), sites)
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
            batch = fixed_by_site(plan, take(data, part), sites)
            for j, (s, v) in enumerate(sse(params, batch).items()):
                sums[:, j] += float(v), batch[s]["__y__"].shape[0]
        totals, rows = _distributed.allsum(sums)  # every process's rows
        return sum(t / max(r, 1) / variances[s] for s, t, r in zip(sites, totals, rows)) + float(_penalties(plan, params))
    return loss



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
        fixed = fixed_by_site(plan, take(data, train_idx), sites, whole=True)
        variances = {s: float(np.var(fixed[s]["__y__"], axis=0).sum()) + 1e-12 for s in sites}  # every column's
        held.update(key=0, positions=np.arange(len(train_idx)),
                    fixed={s: f | {"__y__": varying(plan, s, f["__y__"])} for s, f in fixed.items()})
    else:
        variances = site_variances(plan, sites, data, own_train, means)
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
            held.update(key=key, positions=positions, fixed=fixed_by_site(plan, take(data, train_idx[positions]), sites))
        rows = members[picked(order, start, per_step, part, parts)]  # positions in the training split
        return rows if windows.resident else np.searchsorted(held["positions"], rows)

    def train_batch(k: int) -> dict:
        rows = train_rows(k)  # first: a streamed window's rows are read as it starts
        return minibatch(held["fixed"], plan, sites, rows)

    val_resident = validation * per_example <= _stream.RESIDENT_BYTES  # decided alike on every process
    # one process on one device with both splits in memory: they go to the device once, and each
    # call runs the steps to the next evaluation, gathering their rows there, and the validation
    # loss after them (a host gather and transfer per step cost more than the step)
    on_device = windows.resident and val_resident and parts == 1 and len(devices) == 1
    val_fixed = fixed_by_site(plan, take(data, val_idx), sites) if val_resident else None
    if on_device:
        resident, val_loss = jax.device_put((held["fixed"], val_fixed)), None
    elif val_resident:
        val_loss = _distributed.validation_loss(loss, layout, val_fixed, len(val_idx))
    else:
        val_loss = _streamed_loss(plan, sites, variances, {s: jnp.asarray(means[s]) for s in sites}, data, val_idx,
                                  max(_stream.RESIDENT_BYTES // per_example, 1))
    gather = (lambda batch: minibatch(batch[0], plan, sites, batch[1])) if on_device else None
    state = {"tree": {"params": params, "opt": optimiser.init(params), "best": params},
             "step": 0, "best_val": float("inf"), "stale": 0, "history": []}
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
            check_stop(stop, f"stopped at Adam step {k}")
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
                state["history"] = [*state.get("history", []), current]  # a resumed older checkpoint has none
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
    history = state.get("history", [])
    converged, reason = convergence(history, state["stale"] >= config.patience, len(sites), config)
    return best, {"steps": state["step"], "best_validation_loss": state["best_val"], "devices": len(devices),
                  "mesh": dict(layout.mesh.shape), "sharded_on_model": layout.split(params), "converged": converged,
                  "convergence": reason, "validation_losses": [round(v, 6) for v in history]}


CONVERGENCE_WINDOW = 3  # evaluations, at least, over which a fit's validation loss must have stopped falling


def convergence(history: list[float], stopped: bool, sites: int, config) -> tuple[bool, str]:
    """(converged, why) of an Adam fit from its validation loss at each evaluation (``history``;
    ``stopped``: early stopping ended it; ``config``: its FitConfig). A fit that stopped early has
    converged. One that ran to ``max_steps`` has when its best validation loss over the last
    quarter of its evaluations (at least ``CONVERGENCE_WINDOW``) is at most ``config.tolerance``
    per site below its best before them; with fewer evaluations than that window and one more, it
    cannot tell, and says so."""
    if stopped:
        return True, (f"stopped early: no better validation loss in its last {config.patience} evaluations "
                      f"(every {config.eval_every} steps)")
    window = max(CONVERGENCE_WINDOW, len(history) // 4)
    if len(history) <= window:
        return False, (f"cannot tell: {len(history)} validation evaluation(s) in {config.max_steps} steps, "
                       f"{window + 1} needed (one every {config.eval_every} steps); raise --max-steps")
    before, after = min(history[:-window]), min(history[-window:])
    span = f"{before:.4g} -> {after:.4g} over its last {window} evaluations"
    if before - after > config.tolerance * sites:
        return False, (f"validation loss still falling at step {config.max_steps}: {span} (more than "
                       f"{config.tolerance:g} per site); more steps (--max-steps) may reach further")
    return True, f"validation loss flat at step {config.max_steps}: {span} (at most {config.tolerance:g} per site)"
