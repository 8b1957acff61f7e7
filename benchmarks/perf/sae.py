"""SAE training throughput: theorycraft's ``dictionary`` component vs sae-lens vs torch.compile.

    pip install sae-lens   # into a separate environment: it is not a theorycraft dependency
    python benchmarks/perf/sae.py [--rounds 5] [--steps 3]

One top-k SAE, d_in = 384, width 6144, k = 32, batch 4096, the same loss in every variant (mean
squared reconstruction error; sae-lens's auxiliary dead-latent loss is switched off), Adam:

- theorycraft: the engine's own jitted Adam step (``make_loss`` + ``make_step``) over a theory
  with one ``dictionary`` component; it decodes only the k active latents and back-propagates
  through the k gathered encoder columns;
- sae-lens: ``SAETrainer.step`` on a ``TopKTrainingSAE`` (its public training step);
- torch.compile: the same SAE as a plain torch module (dense encode, top-k, dense decode) with
  its forward and loss compiled by ``torch.compile``, and torch's Adam.

Variants alternate within each round after a warm-up; the script prints activations/s per round
and the median [min, max] of the paired ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from theorycraft.inference._compile import make_plan
from theorycraft.inference._fit import make_loss, make_step
from theorycraft.spec import parse_theory

from _rounds import ratio, rounds

D_IN, WIDTH, K, BATCH, LR = 384, 6144, 32, 4096, 3e-4


def activations(seed: int = 0) -> np.ndarray:
    """Heavy-tailed, correlated data shaped like a residual stream (a sparse mix of directions)."""
    r = np.random.default_rng(seed)
    directions = r.normal(size=(4 * D_IN, D_IN)).astype(np.float32) / np.sqrt(D_IN)
    codes = r.exponential(size=(BATCH, 4 * D_IN)).astype(np.float32) * (r.random((BATCH, 4 * D_IN)) < 0.02)
    return (codes @ directions + 0.05 * r.normal(size=(BATCH, D_IN))).astype(np.float32)


def theorycraft_step(x: np.ndarray):
    theory = parse_theory(f"""
theory: sae
target: activations:unused
sites: {{resid: resid}}
components:
  sae: {{kind: dictionary, from: resid, width: {WIDTH}, k: {K}, predicts: resid}}
""")
    plan = make_plan(theory, {"resid": (D_IN,)}, None)
    from theorycraft.inference._compile import init_params
    params = init_params(plan, jax.random.PRNGKey(0))
    variance = float(x.var(0).sum())
    loss = make_loss(plan, ["resid"], {"resid": variance}, {"resid": jnp.asarray(x.mean(0))})
    optimiser = optax.adam(LR)
    step = make_step(loss, optimiser)
    batch = {"resid": {"resid": jnp.asarray(x), "__y__": jnp.asarray(x)}}
    state = {"params": params, "opt": optimiser.init(params)}

    def run():
        state["params"], state["opt"], value = step(state["params"], state["opt"], batch)
        return float(value)
    return run


def sae_lens_step(x: np.ndarray):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    cfg = TopKTrainingSAEConfig(d_in=D_IN, d_sae=WIDTH, k=K, aux_loss_coefficient=0.0, device="cpu")
    sae = TopKTrainingSAE(cfg)
    trainer = SAETrainer(SAETrainerConfig(total_training_samples=10 ** 9, train_batch_size_samples=BATCH, lr=LR,
                                          lr_end=LR),
                         sae, data_provider=iter(()))
    batch = torch.from_numpy(x)

    def run():
        return float(trainer.step(batch).loss)
    return run


class TorchTopK(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(WIDTH, D_IN), dim=-1))
        self.encoder = torch.nn.Parameter(self.decoder.detach().T.clone())
        self.encoder_bias = torch.nn.Parameter(torch.zeros(WIDTH))
        self.decoder_bias = torch.nn.Parameter(torch.zeros(D_IN))

    def forward(self, x):
        pre = torch.relu((x - self.decoder_bias) @ self.encoder + self.encoder_bias)
        values, index = pre.topk(K, dim=-1)
        codes = torch.zeros_like(pre).scatter(-1, index, values)
        return ((codes @ self.decoder + self.decoder_bias - x) ** 2).sum(-1).mean()


def torch_compile_step(x: np.ndarray):
    model = TorchTopK()
    loss_fn = torch.compile(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=LR)
    batch = torch.from_numpy(x)

    def run():
        loss = loss_fn(batch)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        return float(loss)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant per round")
    args = parser.parse_args()
    x = activations()
    steppers = {"theorycraft": theorycraft_step(x), "sae_lens": sae_lens_step(x),
                "torch_compile": torch_compile_step(x)}

    def repeat(run):
        return lambda: [run() for _ in range(args.steps)]

    times = rounds({name: repeat(run) for name, run in steppers.items()}, n_rounds=args.rounds, warmup=2)
    per_second = {name: [args.steps * BATCH / t for t in ts] for name, ts in times.items()}
    print(json.dumps({"activations_per_second": {k: [round(v) for v in vs] for k, vs in per_second.items()},
                      "median": {k: round(statistics.median(vs)) for k, vs in per_second.items()}}, indent=1))
    print(f"theorycraft vs sae-lens SAETrainer.step: {ratio(times, 'theorycraft', 'sae_lens')} x")
    print(f"theorycraft vs torch.compile:            {ratio(times, 'theorycraft', 'torch_compile')} x")
    print(f"torch threads {torch.get_num_threads()}, JAX devices {jax.devices()}")


if __name__ == "__main__":
    main()
