"""SAE training throughput: theorycraft's ``dictionary`` step vs sae-lens vs plain torch.

    # in a separate environment (sae-lens is not a theorycraft dependency), e.g.
    #   python3 -m venv /work/perf-env && /work/perf-env/bin/pip install torch==2.13.0
    #   /work/perf-env/bin/pip install -e . <theorycraft's dependencies> sae-lens 'torch==2.13.0'
    python benchmarks/perf/sae.py [--rounds 5] [--steps 3] [--quick] [--smoke]

One top-k SAE, d_in = 384, width 6144, k = 32, batch 4096, the same loss in every variant (mean
squared reconstruction error; no auxiliary dead-latent loss), Adam. Every step takes a fresh batch
from the same pool of 8 batches. Variants:

- theorycraft: one step of ``fit_gradient``'s loop as ``theorycraft infer`` runs it with
  ``--batch-size 4096``: the minibatch gathered from the training rows (``minibatch``), put on the
  device mesh (``jax.device_put`` with the data sharding), the jitted Adam step of
  ``make_loss`` + ``make_step`` (warm-up-cosine schedule), and the loss read back (its
  divergence check). One dense encoder product (no gradient) chooses the k latents and gives
  their values; it decodes only the k active decoder rows, and the encoder's gradient is a
  scatter-add over the k active (row, latent) pairs (``dictionary._select``), not a dense product;
- sae-lens ``SAETrainer.step`` on a ``TopKTrainingSAE`` (its public training step), twice: its
  defaults (``rescale_acts_by_decoder_norm=True``, dense top-k codes) and configured for speed
  (``rescale_acts_by_decoder_norm=False``, as theorycraft's SAE does not rescale either, and
  ``use_sparse_activations=True``: a sparse decode);
- plain torch: the naive module (dense encode, top-k, dense [batch, width] codes, dense decode)
  under ``torch.compile``, and the same sparse algorithm as theorycraft (top-k chosen without a
  gradient, the k encoder rows gathered and recomputed, the k decoder rows gathered) in eager
  torch and under ``torch.compile``; torch's Adam.

- the roofline: the dense encoder product alone (``x @ W_enc``, float32, jitted JAX), which every
  variant computes once per step (it chooses the top k); the step's fraction of the roofline is
  the paired ratio of its time to theorycraft's step.

Variants alternate within each round after a warm-up; prints activations/s (this run's) and the
median [min, max] of the paired speed ratios, theorycraft over each peer. sae-lens's variants
run only where sae-lens is installed. ``--smoke`` (CI): width 256, batch 256, one round of one
step, no torch.compile.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from theorycraft.inference.engine import (FitConfig, fixed_by_site, init_params, make_loss, make_plan, make_step,
                                          minibatch)
from theorycraft.spec import parse_theory

from _rounds import ratio, rounds

D_IN, WIDTH, K, BATCH, LR, POOL = 384, 6144, 32, 4096, 3e-4, 8


def smoke_sizes() -> None:
    global WIDTH, BATCH, POOL
    WIDTH, BATCH, POOL = 256, 256, 2


def activations(seed: int = 0) -> np.ndarray:
    """Heavy-tailed, correlated data shaped like a residual stream (a sparse mix of directions)."""
    r = np.random.default_rng(seed)
    n = POOL * BATCH
    directions = r.normal(size=(4 * D_IN, D_IN)).astype(np.float32) / np.sqrt(D_IN)
    codes = r.exponential(size=(n, 4 * D_IN)).astype(np.float32) * (r.random((n, 4 * D_IN)) < 0.02)
    return (codes @ directions + 0.05 * r.normal(size=(n, D_IN))).astype(np.float32)


def batches():
    """Example indices of the next batch: the pool's batches in turn."""
    step = 0
    while True:
        yield np.arange(BATCH) + (step % POOL) * BATCH
        step += 1


def theorycraft_step(x: np.ndarray):
    """The body of ``fit_gradient``'s loop (inference/_adam.py), on one theory with a dictionary."""
    theory = parse_theory(f"""
theory: sae
target: activations:unused
sites: {{resid: resid}}
components:
  sae: {{kind: dictionary, from: resid, width: {WIDTH}, k: {K}, predicts: resid}}
""")
    plan = make_plan(theory, {"resid": (D_IN,)}, None)
    params = init_params(plan, jax.random.PRNGKey(0))
    fixed_train = fixed_by_site(plan, {"resid": x}, ["resid"])
    variance = float(x.var(0).sum())
    loss = make_loss(plan, ["resid"], {"resid": variance}, {"resid": jnp.asarray(x.mean(0))})
    config = FitConfig(learning_rate=LR, batch_size=BATCH)
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, min(100, config.max_steps // 10 + 1),
                                                  config.max_steps, config.learning_rate * 0.05)
    optimiser = optax.adam(schedule)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    shard, replicate = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    step = make_step(loss, optimiser)
    state = jax.device_put({"params": params, "opt": optimiser.init(params)}, replicate)
    order = batches()

    def run():
        batch = jax.device_put(minibatch(fixed_train, plan, ["resid"], next(order)), shard)
        state["params"], state["opt"], value = step(state["params"], state["opt"], batch)
        if not np.isfinite(float(value)):
            raise FloatingPointError("diverged")
    return run


def sae_lens_step(x: np.ndarray, speed: bool):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    options = {"rescale_acts_by_decoder_norm": False, "use_sparse_activations": True} if speed else {}
    cfg = TopKTrainingSAEConfig(d_in=D_IN, d_sae=WIDTH, k=K, aux_loss_coefficient=0.0, device="cpu", **options)
    trainer = SAETrainer(SAETrainerConfig(total_training_samples=10 ** 9, train_batch_size_samples=BATCH, lr=LR,
                                          lr_end=LR),
                         TopKTrainingSAE(cfg), data_provider=iter(()))
    pool, order = torch.from_numpy(x), batches()

    def run():
        trainer.step(pool[next(order)])
    return run


class DenseTopK(torch.nn.Module):
    """The naive SAE: dense codes [batch, width], dense decode."""

    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(WIDTH, D_IN), dim=-1))
        self.encoder = torch.nn.Parameter(self.decoder.detach().clone())  # [width, d_in], rows
        self.encoder_bias = torch.nn.Parameter(torch.zeros(WIDTH))
        self.decoder_bias = torch.nn.Parameter(torch.zeros(D_IN))

    def forward(self, x):
        pre = torch.relu((x - self.decoder_bias) @ self.encoder.T + self.encoder_bias)
        values, index = pre.topk(K, dim=-1)
        codes = torch.zeros_like(pre).scatter(-1, index, values)
        return ((codes @ self.decoder + self.decoder_bias - x) ** 2).sum(-1).mean()


class SparseTopK(DenseTopK):
    """theorycraft's algorithm in torch: choose the k latents without a gradient, recompute their
    values from the k gathered encoder rows, decode the k gathered decoder rows."""

    def forward(self, x):
        centred = x - self.decoder_bias
        with torch.no_grad():
            index = (centred @ self.encoder.T + self.encoder_bias).topk(K, dim=-1).indices  # [rows, k]
        values = torch.relu(torch.einsum("rd,rkd->rk", centred, self.encoder[index]) + self.encoder_bias[index])
        recon = torch.einsum("rk,rkd->rd", values, self.decoder[index]) + self.decoder_bias
        return ((recon - x) ** 2).sum(-1).mean()


def torch_step(x: np.ndarray, module: type, compiled: bool):
    model = module()
    loss_fn = torch.compile(model) if compiled else model
    optimiser = torch.optim.Adam(model.parameters(), lr=LR)
    pool, order = torch.from_numpy(x), batches()

    def run():
        loss = loss_fn(pool[next(order)])
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    return run


def roofline(x: np.ndarray):
    """The dense encoder product every variant computes once per step, alone."""
    product = jax.jit(lambda x, w: x @ w)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(D_IN, WIDTH)).astype(np.float32))
    order = batches()

    def run():
        product(jnp.asarray(x[next(order)]), w).block_until_ready()
    return run


VARIANTS = {
    "theorycraft": theorycraft_step,
    "roofline: the dense encoder product alone": roofline,
    "sae-lens, speed-minded": lambda x: sae_lens_step(x, speed=True),
    "sae-lens, defaults": lambda x: sae_lens_step(x, speed=False),
    "torch sparse, eager": lambda x: torch_step(x, SparseTopK, compiled=False),
    "torch sparse, torch.compile": lambda x: torch_step(x, SparseTopK, compiled=True),
    "torch dense (naive), torch.compile": lambda x: torch_step(x, DenseTopK, compiled=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 steps")
    parser.add_argument("--smoke", action="store_true", help="width 256, batch 256, 1 round of 1 step, no "
                                                             "torch.compile: CI's check that it runs")
    args = parser.parse_args()
    n_rounds, steps = (1, 1) if args.smoke else (2, 2) if args.quick else (args.rounds, args.steps)
    if args.smoke:
        smoke_sizes()
    x = activations()
    has_sae_lens = importlib.util.find_spec("sae_lens") is not None
    steppers = {name: make(x) for name, make in VARIANTS.items()
                if (has_sae_lens or "sae-lens" not in name) and not (args.smoke and "compile" in name)}

    def repeat(run):
        return lambda: [run() for _ in range(steps)]

    times = rounds({name: repeat(run) for name, run in steppers.items()}, n_rounds=n_rounds,
                   warmup=0 if args.smoke else 2)
    print(f"\n{n_rounds} rounds of {steps} steps; torch threads {torch.get_num_threads()}, JAX devices "
          f"{jax.devices()}; d_in {D_IN}, width {WIDTH}, k {K}, batch {BATCH}"
          f"{'' if has_sae_lens else '; sae-lens not installed: its variants left out'}\n")
    print("| variant | activations/s (this run) | theorycraft speed-up |\n|---|---:|---:|")
    for name, t in times.items():
        speed = f"{steps * BATCH / statistics.median(t):,.0f}"
        print(f"| {name} | {speed} | {'—' if name == 'theorycraft' else ratio(times, 'theorycraft', name)} |")
    roof = "roofline: the dense encoder product alone"
    print(f"\ntheorycraft's step at {ratio(times, 'theorycraft', roof)} of the roofline (the time of its one dense "
          f"encoder product, {2 * BATCH * D_IN * WIDTH / 1e9:.1f} GFLOP, over the step's; paired, median [min, max])")


if __name__ == "__main__":
    main()
