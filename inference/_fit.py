"""Fitting: exact ridge where a site is a linear map of fixed features (or a lookup table), and
optax Adam with early stopping for everything else. Deterministic for a seed; resumable."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from theorycraft.errors import FitError
from theorycraft.spec import Theory

from . import _ridge
from ._compile import Plan, fixed_inputs, init_params, make_plan, predict_site, site_rows

VALIDATION_FRACTION = 0.2  # of the training examples, for ridge strength and early stopping


@dataclass(frozen=True)
class FitConfig:
    seed: int = 0
    max_steps: int = 2000
    batch_size: int = 512  # examples per step
    learning_rate: float = 3e-3
    eval_every: int = 100
    patience: int = 5  # evaluations without improvement before stopping
    checkpoint_every: int = 200
    progress: bool = True


# --- data -----------------------------------------------------------------------------------------

def site_shapes(theory: Theory, recorded: Mapping[str, tuple]) -> dict[str, tuple]:
    shapes = {}
    for name, site in theory.sites.items():
        shape = tuple(recorded[str(site.hook)])
        shapes[name] = shape[1:] if site.position is not None else shape
    return shapes


def load_examples(theory: Theory, acts) -> dict[str, np.ndarray]:
    """The inputs and every site (positions selected), all examples, in memory."""
    data = {"inputs": np.asarray(acts.inputs())}
    for name, site in theory.sites.items():
        values = acts.site(str(site.hook))
        data[name] = values[:, site.position] if site.position is not None else values
    return data


def validation_mask(acts) -> np.ndarray:
    from theorycraft.store import split_is_test
    return split_is_test(acts.n, acts.manifest["dataset"]["identity"] + ":validation") & ~acts.is_test


def _take(data: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in data.items()}


# --- closed form ----------------------------------------------------------------------------------

def closed_form_sites(plan: Plan) -> dict[str, list[str]]:
    """Sites whose predictors, read by nobody else, are all plain linear maps of fixed features
    (exact ridge; a single low-rank map: reduced-rank ridge) or all lookup tables (exact ridge of
    their one-hot design, by conjugate gradients): solved exactly."""
    theory, out = plan.theory, {}
    readers = {r for c in theory.components.values() for r in c.reads()}
    for site in theory.sites:
        names = theory.predictors(site)
        if not names or len(plan.site_shapes[site]) == 3 or any(n in readers for n in names):
            continue
        comps = [theory.components[n] for n in names]
        linear = all(c.kind == "linear" and (not c.rank or len(comps) == 1) and not c.l1 and not c.activation
                     and all(r in plan.fixed or r in theory.variables or r in theory.sites for r in c.reads())
                     for c in comps)
        if linear or all(c.kind == "lookup" for c in comps):
            out[site] = list(names)
    return out


def _design(plan: Plan, names: list[str], fixed: Mapping[str, np.ndarray]) -> np.ndarray:
    cols = [np.asarray(fixed[r], np.float32) for n in names for r in plan.theory.components[n].reads()]
    return np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]


def fit_ridge_site(plan: Plan, site: str, names: list[str], data, train_idx, val_idx, batch_rows: int = 8192):
    """Stream train and validation batches into sufficient statistics; solve; split the weights
    back into each component's parameters. Returns (params, ridge strength, the method)."""
    stats = {"train": _ridge.Stats(), "val": _ridge.Stats()}
    for split, index in (("train", train_idx), ("val", val_idx)):
        for start in range(0, len(index), batch_rows):
            batch = _take(data, index[start:start + batch_rows])
            fixed = fixed_inputs(plan, batch, site)
            stats[split].add(_design(plan, names, fixed), site_rows(plan, site, batch[site]))
    biased = [n for n in names if plan.theory.components[n].bias]
    w, b, alpha = _ridge.solve(stats["train"], stats["val"], intercept=bool(biased))
    rank = plan.theory.components[names[0]].rank
    if rank:
        return ({names[0]: _reduced_rank(w, stats["train"], stats["val"], rank, bool(biased))}, alpha,
                f"a direct solve of the normal equations, projected to rank {rank}")
    params, offset = {}, 0
    for n in names:
        c = plan.theory.components[n]
        width = sum(plan.widths[r] for r in c.reads())
        params[n] = {"weight": jnp.asarray(w[offset:offset + width], jnp.float32)}
        if c.bias:  # one intercept for the site: the first biased predictor holds it
            params[n]["bias"] = jnp.asarray(b if n == biased[0] else np.zeros_like(b), jnp.float32)
        offset += width
    return params, alpha, "a direct solve of the normal equations"


def _reduced_rank(w, train, val, rank: int, intercept: bool) -> dict:
    """Reduced-rank ridge: the full map projected on the top ``rank`` principal directions of its
    fitted values (Izenman 1975), as ``down`` [in, rank] and ``up`` [rank, out]."""
    merged = _ridge.Stats()
    merged += train
    merged += val
    cxx = merged.centred(intercept)[0]
    _, vectors = np.linalg.eigh(w.T @ cxx @ w)
    top = vectors[:, ::-1][:, :rank]  # [out, rank]
    mx, my = (merged.sx / merged.n, merged.sy / merged.n) if intercept else (0.0, 0.0)
    params = {"down": jnp.asarray(w @ top, jnp.float32), "up": jnp.asarray(top.T, jnp.float32)}
    if intercept:
        params["bias"] = jnp.asarray(my - mx @ (w @ top @ top.T), jnp.float32)
    return params


SHRINKAGES = (1e-3, 0.1, 1.0, 10.0)  # ridge strengths of a table, in examples per cell
CG_TOLERANCE = 1e-10  # relative residual of the normal equations at which the final table solve stops
SELECTION_TOLERANCE = 1e-6  # enough to compare shrinkages on validation, at a quarter of the iterations
CG_CAP = 2000  # iterations; a solve that reaches the cap says so in the fit log and the scorecard


def _normal_equations(cells: list[np.ndarray], sizes: list[int], y: np.ndarray):
    """(XᵀX sparse, Xᵀy dense) of the one-hot design of a sum of tables, with an intercept column
    first: X [rows, 1 + Σ sizes] has one 1 per table and row, so XᵀX holds each table's cell counts
    on its diagonal and the co-occurrence counts of two tables' cells off it."""
    from scipy import sparse

    n = len(y)
    offsets = np.cumsum([1, *sizes[:-1]])
    columns = np.stack([np.zeros(n, np.int64)] + [c + o for c, o in zip(cells, offsets)], axis=1)
    rows = np.arange(0, columns.size + 1, columns.shape[1])  # csr row pointers: K + 1 entries a row
    x = sparse.csr_matrix((np.ones(columns.size), columns.reshape(-1), rows), shape=(n, 1 + sum(sizes)))
    return (x.T @ x).tocsr(), np.asarray(x.T @ np.asarray(y, np.float64))


def _conjugate_gradients(matvec: Callable, rhs: np.ndarray, diagonal: np.ndarray, x: np.ndarray,
                         tolerance: float) -> tuple[np.ndarray, int, bool]:
    """Jacobi-preconditioned conjugate gradients for A x = rhs (A symmetric positive definite)
    from a first guess ``x``, every column of rhs at once; stops when each column's residual is
    within ``tolerance`` of its right-hand side, or at CG_CAP iterations. Returns (x, iterations,
    converged)."""
    scale = np.maximum(np.linalg.norm(rhs, axis=0), 1e-300)
    x = x.copy()
    r = rhs - matvec(x)
    z = r / diagonal[:, None]
    p, rz = z.copy(), np.einsum("ij,ij->j", r, z)
    for iteration in range(1, CG_CAP + 1):
        ap = matvec(p)
        pap = np.einsum("ij,ij->j", p, ap)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)  # converged columns stay put
        x += alpha * p
        r -= alpha * ap
        if np.max(np.linalg.norm(r, axis=0) / scale) <= tolerance:
            return x, iteration, True
        z = r / diagonal[:, None]
        rz, previous = np.einsum("ij,ij->j", r, z), rz
        p = z + np.divide(rz, previous, out=np.zeros_like(rz), where=previous > 0) * p
    return x, CG_CAP, False


def _solve_tables(gram, xty: np.ndarray, shrink: float, start: np.ndarray,
                  tolerance: float = CG_TOLERANCE) -> tuple[np.ndarray, str]:
    """Exact ridge for y ≈ b + Σ table_k[cell_k] (the intercept b not shrunk, each table by
    ``shrink``): the normal equations by conjugate gradients from ``start`` (a nearby solution:
    fewer iterations), over the cells some row reads (the others are 0, as ridge sets them).
    Returns ([b; tables stacked], how the solve went)."""
    reached = np.flatnonzero(gram.diagonal() > 0)
    gram = gram[reached][:, reached]
    penalty = np.where(reached == 0, 0.0, float(shrink))  # column 0 is the intercept

    def matvec(v):
        return gram @ v + penalty[:, None] * v

    solved, iterations, converged = _conjugate_gradients(matvec, xty[reached], gram.diagonal() + penalty,
                                                         start[reached], tolerance)
    scale = np.maximum(np.linalg.norm(xty, axis=0), 1e-300)
    residual = float(np.max(np.linalg.norm(xty[reached] - matvec(solved), axis=0) / scale))  # recomputed
    how = (f"relative residual {residual:.0e} after {iterations} iterations" if converged else
           f"NOT CONVERGED: stopped at the cap of {CG_CAP} iterations with relative residual {residual:.0e}")
    w = np.zeros_like(xty)
    w[reached] = solved
    return w, f"conjugate gradients on the one-hot normal equations, {how}"


def _split_tables(w: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """[b; tables stacked] -> (b, [table_k])."""
    return w[0], np.split(w[1:], np.cumsum(sizes)[:-1])


def fit_lookup_site(plan: Plan, site: str, names: list[str], data, train_idx, val_idx):
    """A sum of tables: exact ridge of the one-hot design (sparse normal equations, conjugate
    gradients); the shrinkage is chosen on validation, then the tables are refit on train +
    validation. Returns (params, shrinkage, how the final solve went)."""
    sizes = [plan.shapes(n).inputs[0] for n in names]

    def read(index):
        batch = _take(data, index)
        fixed = fixed_inputs(plan, batch, site)
        return [np.asarray(fixed[f"{n}/expr"][:, 0], np.int64) for n in names], site_rows(plan, site, batch[site])

    cells, y = read(train_idx)
    vcells, vy = read(val_idx)
    gram, xty = _normal_equations(cells, sizes, y)
    w = np.zeros_like(xty)
    best, best_shrink, best_w = np.inf, SHRINKAGES[-1], w
    for shrink in sorted(SHRINKAGES, reverse=True):  # each solve starts from the last, better conditioned one
        w, _ = _solve_tables(gram, xty, shrink, w, SELECTION_TOLERANCE)
        mean, tables = _split_tables(w, sizes)
        sse = ((mean + sum(t[c] for t, c in zip(tables, vcells)) - vy) ** 2).sum()
        if sse <= best:  # a tie goes to the weaker shrinkage
            best, best_shrink, best_w = sse, shrink, w
    vgram, vxty = _normal_equations(vcells, sizes, vy)
    w, method = _solve_tables(gram + vgram, xty + vxty, best_shrink, best_w)
    mean, tables = _split_tables(w, sizes)
    tables[0] = tables[0] + mean  # every row reads exactly one cell of the first table
    return {n: {"table": jnp.asarray(t, jnp.float32)} for n, t in zip(names, tables)}, best_shrink, method


# --- gradient fitting -----------------------------------------------------------------------------

def _rows_for(plan: Plan, site: str, examples: np.ndarray) -> np.ndarray:
    shape = plan.site_shapes[site]
    if len(shape) == 2:  # a row per position
        return (examples[:, None] * shape[0] + np.arange(shape[0])).reshape(-1)
    return examples


def _fixed_by_site(plan: Plan, data, sites) -> dict[str, dict[str, np.ndarray]]:
    return {s: fixed_inputs(plan, data, s) | {"__y__": site_rows(plan, s, data[s])} for s in sites}


def make_loss(plan: Plan, sites, variances, means) -> Callable:
    def loss(params, batch):
        total = 0.0
        for s in sites:
            fixed = batch[s]
            y = fixed["__y__"]
            pred = predict_site(plan, params, s, fixed, means[s], y.shape[0])
            total = total + jnp.mean(jnp.sum((pred - y) ** 2, axis=-1)) / variances[s]
        return total + _penalties(plan, params)
    return loss


def _penalties(plan: Plan, params) -> jax.Array:
    total = 0.0
    for name, c in plan.theory.components.items():
        if c.kind == "linear" and c.l1 and name in params:
            total = total + c.l1 * sum(jnp.abs(v).sum() for k, v in params[name].items() if k != "bias")
    return total


def _gather(fixed_all, plan, sites, examples):
    """A minibatch: every array of a site shares that site's rows."""
    return {s: {k: v[_rows_for(plan, s, examples)] for k, v in fixed_all[s].items()} for s in sites}


class Checkpoint:
    """Everything needed to continue a fit exactly: params, optimiser state, step, best so far."""

    def __init__(self, directory: Path | None, fingerprint: str):
        self.path = directory / "checkpoint.npz" if directory else None
        self.fingerprint = fingerprint

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        leaves, _ = jax.tree_util.tree_flatten(state["tree"])
        arrays = {f"leaf{k}": np.asarray(v) for k, v in enumerate(leaves)}
        meta = json.dumps({k: v for k, v in state.items() if k != "tree"} | {"fingerprint": self.fingerprint})
        tmp = self.path.with_name(".checkpoint.tmp.npz")
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


def make_step(loss: Callable, optimiser: optax.GradientTransformation) -> Callable:
    """One jitted optimiser step: (params, opt_state, batch) -> (params, opt_state, loss)."""
    @jax.jit
    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value
    return step


def fit_gradient(plan: Plan, params: dict, sites: list[str], data, train_idx, val_idx, means, config: FitConfig,
                 checkpoint: Checkpoint, log: Callable[[str], None]) -> tuple[dict, dict]:
    """Adam on minibatches of examples, data-parallel over every JAX device, early stopping on
    the validation split. Returns the best parameters and a summary."""
    fixed_train = _fixed_by_site(plan, _take(data, train_idx), sites)
    fixed_val = _fixed_by_site(plan, _take(data, val_idx), sites)
    variances = {s: float(np.var(fixed_train[s]["__y__"], axis=0).sum()) + 1e-12 for s in sites}
    loss = make_loss(plan, sites, variances, {s: jnp.asarray(means[s]) for s in sites})
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, min(100, config.max_steps // 10 + 1),
                                                  config.max_steps, config.learning_rate * 0.05)
    optimiser = optax.adam(schedule)
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    shard, replicate = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    per_step = max(len(devices), config.batch_size // len(devices) * len(devices))

    step = make_step(loss, optimiser)
    val_loss = jax.jit(loss)
    state = {"tree": {"params": params, "opt": optimiser.init(params), "best": params},
             "step": 0, "best_val": float("inf"), "stale": 0}
    resumed = checkpoint.load(state["tree"])
    if resumed is not None:
        state = resumed
        log(f"resumed from step {state['step']}")
    state["tree"] = jax.device_put(state["tree"], replicate)
    n_train = len(train_idx)
    from tqdm import tqdm
    bar = tqdm(total=config.max_steps, initial=state["step"], desc="fit", disable=not config.progress,
               dynamic_ncols=True)
    val_batch = jax.device_put(fixed_val, replicate)
    try:
        while state["step"] < config.max_steps and state["stale"] < config.patience:
            k = state["step"]
            order = np.random.default_rng([config.seed, k // max(n_train // per_step, 1)]).permutation(n_train)
            start = (k % max(n_train // per_step, 1)) * per_step
            examples = order[start:start + per_step]
            if len(examples) < per_step:  # fewer examples than a batch: repeat, keeping shapes fixed
                examples = np.resize(examples, per_step)
            batch = jax.device_put(_gather(fixed_train, plan, sites, examples), shard)
            tree = state["tree"]
            new_params, new_opt, value = step(tree["params"], tree["opt"], batch)
            if not np.isfinite(float(value)):
                checkpoint.save(state | {"tree": jax.device_get(tree)})
                learned = ", ".join(plan.learned)
                raise FitError(f"the fit diverged at step {k} (loss is NaN or Inf) in components {learned}; try a "
                               f"lower learning rate (--lr) or more regularisation (l1:, a smaller rank); "
                               f"the last good state is kept" + (f" in {checkpoint.path}" if checkpoint.path else ""))
            state["tree"] = {"params": new_params, "opt": new_opt, "best": tree["best"]}
            state["step"] = k + 1
            bar.update(1)
            if state["step"] % config.eval_every == 0 or state["step"] == config.max_steps:
                current = float(val_loss(new_params, val_batch))
                bar.set_postfix(loss=f"{float(value):.4f}", val=f"{current:.4f}")
                if current < state["best_val"] - 1e-7:
                    state.update(best_val=current, stale=0)
                    state["tree"]["best"] = new_params
                else:
                    state["stale"] += 1
            if state["step"] % config.checkpoint_every == 0:
                checkpoint.save(state | {"tree": jax.device_get(state["tree"])})
    except KeyboardInterrupt:  # Ctrl-C: keep where we are, so a rerun continues from here
        checkpoint.save(state | {"tree": jax.device_get(state["tree"])})
        raise
    finally:
        bar.close()
    checkpoint.save(state | {"tree": jax.device_get(state["tree"])})
    best = jax.device_get(state["tree"]["best"] if np.isfinite(state["best_val"]) else state["tree"]["params"])
    return best, {"steps": state["step"], "best_validation_loss": state["best_val"], "devices": len(devices)}


def fingerprint(theory: Theory, acts, config: FitConfig) -> str:
    text = theory.to_yaml() + acts.manifest["key"]["target"] + acts.manifest["dataset"]["identity"]
    text += json.dumps({k: v for k, v in config.__dict__.items() if k != "progress"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def fit(theory: Theory, acts, config: FitConfig = FitConfig(), out_dir: Path | None = None,
        log: Callable[[str], None] = lambda s: None, *, examples: np.ndarray | None = None,
        data: Mapping[str, np.ndarray] | None = None, evaluate: bool = True):
    """Fit every free parameter of ``theory`` to the captured activations ``acts`` (only to the
    training examples among ``examples``, when given: the prequential code fits on prefixes)."""
    from ._fitted import FittedTheory

    start = time.time()
    plan = make_plan(theory, site_shapes(theory, acts.sites), acts.vocab_size)
    data = data if data is not None else load_examples(theory, acts)
    is_val = validation_mask(acts)
    allowed = np.zeros(acts.n, bool)
    allowed[examples if examples is not None else slice(None)] = True
    train_idx = np.flatnonzero(~acts.is_test & ~is_val & allowed)
    val_idx = np.flatnonzero(is_val & allowed)
    means = {s: site_rows(plan, s, data[s][train_idx]).mean(0) for s in theory.sites}
    params = warm_start(plan, init_params(plan, jax.random.PRNGKey(config.seed)), means)
    closed = closed_form_sites(plan)
    summary: dict = {"closed_form": {}, "gradient": None}
    for site, names in closed.items():
        if theory.components[names[0]].kind == "lookup":
            solved, strength, method = fit_lookup_site(plan, site, names, data, train_idx, val_idx)
        else:
            solved, strength, method = fit_ridge_site(plan, site, names, data, train_idx, val_idx)
        params.update(solved)
        summary["closed_form"][site] = {"components": names, "ridge_strength": strength, "method": method}
        log(f"site {site}: exact ridge over {', '.join(names)} (strength {strength:g}): {method}")
    rest = [s for s in theory.sites if s not in closed and theory.predictors(s)]
    if rest and any(n in params for s in rest for n in plan.theory.upstream(s)):
        checkpoint = Checkpoint(out_dir, fingerprint(theory, acts, config))
        learned, info = fit_gradient(plan, params, rest, data, train_idx, val_idx, means, config, checkpoint, log)
        params = {**params, **{k: v for k, v in learned.items() if k in _upstream_all(plan, rest)}}
        summary["gradient"] = info
        log(f"sites {', '.join(rest)}: Adam, {info['steps']} steps on {info['devices']} device(s)")
    fitted = FittedTheory(theory, plan, jax.device_get(params), {s: np.asarray(m) for s, m in means.items()},
                          acts.vocab_size)
    if evaluate:
        fitted.scorecard = fitted.evaluate(acts, data) | {"fit": summary, "seconds": round(time.time() - start, 2),
                                                          "data": {"directory": str(acts.directory), "n": acts.n}}
    return fitted


def warm_start(plan: Plan, params: dict, means: Mapping[str, np.ndarray]) -> dict:
    """An attention component's positional prior starts at the log of its head's mean pattern,
    so the rule only has to explain what position does not."""
    params = dict(params)
    for name, c in plan.theory.components.items():
        if c.kind == "attention" and name in params:
            shape = plan.site_shapes[c.predicts]
            head = np.asarray(means[c.predicts]).reshape(shape)[c.head or 0]
            params[name] = {**params[name], "prior": jnp.asarray(np.log(np.maximum(head, 1e-6)), jnp.float32)}
    return params


def _upstream_all(plan: Plan, sites) -> set[str]:
    return set().union(*(plan.theory.upstream(s) for s in sites))
