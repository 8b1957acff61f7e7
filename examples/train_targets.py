"""Train the bundled toy targets and write their weights (safetensors) and a report (JSON).

    python examples/train_targets.py modadd-p113 superposition induction

Each report records how the model was trained and the measurements that show its mechanism;
the example READMEs quote them. Training is deterministic for the seed on one CPU thread count.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from theorycraft.targets._builtin_models import (BUILTINS, MODADD_TRAIN_FRACTION, P, SUPERPOSITION_FEATURES,
                                                 modadd_pairs, repeated_sequences, superposition_vectors)

WEIGHTS = Path(__file__).resolve().parents[1] / "theorycraft" / "targets" / "weights"


def key_frequencies(embedding: np.ndarray, top: int = 8) -> list[dict]:
    """Fourier analysis of the token embedding [P, d]: the share of its squared norm in each
    frequency's (cos, sin) plane, largest first (Nanda et al.'s reading of the embedding)."""
    x = np.arange(P)
    total = np.linalg.norm(embedding - embedding.mean(0)) ** 2
    shares = []
    for f in range(1, P // 2 + 1):
        basis = np.stack([np.cos(2 * np.pi * f * x / P), np.sin(2 * np.pi * f * x / P)]) / np.sqrt(P / 2)
        shares.append(float(np.linalg.norm(basis @ embedding) ** 2 / total))
    order = np.argsort(shares)[::-1][:top]
    return [{"frequency": int(k + 1), "share": round(shares[k], 4)} for k in order]


def answer_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits at the '=' position only, computing just what that position needs (its query, its
    attention output, its MLP): in one layer nothing else reaches it. The same function as
    ``model(tokens)[:, -1]`` at about 60% of the cost; the final accuracies use the full model."""
    x = model.embed(tokens) + model.pos_embed[: tokens.shape[1]]  # [b, t, d]
    block = model.blocks[0]
    attn, (b, t, d) = block.attn, x.shape
    h, dh = attn.n_heads, attn.d_head
    w = attn.qkv.weight  # [3d, d]
    q = (x[:, -1] @ w[:d].T).view(b, h, dh)  # [b, h, dh]
    k, v = (x @ w[d:].T).view(b, t, 2, h, dh).unbind(2)  # 2 x [b, t, h, dh]
    pattern = (torch.einsum("bhe,bthe->bht", q, k) / dh ** 0.5).softmax(-1)  # the last query sees all keys
    z = torch.einsum("bht,bthe->bhe", pattern, v).reshape(b, d)
    last = x[:, -1] + attn.out(z)
    return model.unembed(last + block.mlp(last))


def train_modadd(seed: int = 0, max_steps: int = 40_000, train_fraction: float = MODADD_TRAIN_FRACTION) -> dict:
    torch.manual_seed(seed)
    spec = BUILTINS["modadd-p113"]
    model = spec.build()
    with torch.no_grad():  # Nanda et al.'s scale: unit-norm token vectors, not torch's N(0, 1)
        model.embed.weight.normal_(0, model.embed.embedding_dim ** -0.5)
    data = torch.from_numpy(modadd_pairs(None, np.random.default_rng(seed))).long()
    labels = (data[:, 0] + data[:, 1]) % P
    n_train = int(train_fraction * len(data))
    x_train, y_train, x_test, y_test = data[:n_train], labels[:n_train], data[n_train:], labels[n_train:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(step / 10, 1))
    start, generalised_at, log = time.time(), None, []
    for step in range(1, max_steps + 1):
        # the loss in float64, as Nanda et al. do: in float32 it underflows to exactly 0 once the
        # training pairs are memorised, and the gradient that drives generalisation vanishes
        loss = torch.nn.functional.cross_entropy(answer_logits(model, x_train).double(), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0:
            with torch.no_grad():
                test_acc = (answer_logits(model, x_test).argmax(-1) == y_test).float().mean().item()
            log.append({"step": step, "train_loss": float(f"{loss.item():.3g}"), "test_acc": round(test_acc, 4)})
            print(log[-1], flush=True)
            if generalised_at is None and test_acc >= 0.99:
                generalised_at = step
            # stop once generalised and cleaned up: weight decay keeps sparsifying for a while
            if generalised_at is not None and step >= generalised_at + 3000:
                break
    with torch.no_grad():
        train_acc = (model(x_train)[:, -1].argmax(-1) == y_train).float().mean().item()
        test_acc = (model(x_test)[:, -1].argmax(-1) == y_test).float().mean().item()
    embedding = model.embed.weight.detach().numpy()[:P]
    return model, {"train_accuracy": round(train_acc, 5), "test_accuracy": round(test_acc, 5),
                   "steps": step, "generalised_at_step": generalised_at, "train_pairs": n_train,
                   "seconds": round(time.time() - start), "key_frequencies": key_frequencies(embedding),
                   "recipe": "AdamW lr 1e-3 wd 1.0 betas (0.9, 0.98), full batch, 30% of pairs, seed 0",
                   "log": log}


def train_superposition(seed: int = 0, steps: int = 10_000) -> dict:
    torch.manual_seed(seed)
    model = BUILTINS["superposition"].build()
    importance = 0.9 ** torch.arange(SUPERPOSITION_FEATURES, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    for step in range(1, steps + 1):
        x = torch.from_numpy(superposition_vectors(1024, rng))
        loss = (importance * (model(x) - x) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    norms = model.W.detach().norm(dim=0).numpy()
    return model, {"final_loss": round(loss.item(), 6), "steps": steps,
                   "feature_norms": [round(float(v), 3) for v in norms],
                   "features_represented": int((norms > 0.5).sum()),
                   "recipe": "Adam lr 1e-3, batch 1024, importance 0.9^i, feature density 0.05, seed 0"}


def induction_scores(model, tokens: torch.Tensor) -> dict:
    """Per head: mean attention to the previous token (layer 0), and mean attention on the keys
    that follow an earlier copy of the current token, over queries that have one (layer 1)."""
    patterns = {}
    hooks = [model.blocks[l].attn.hook_pattern.register_forward_hook(
        lambda m, i, o, l=l: patterns.__setitem__(l, o.detach())) for l in range(2)]
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    t = tokens.shape[1]
    q = torch.arange(1, t)
    previous = patterns[0][:, :, q, q - 1].mean(dim=(0, 2))
    before = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], dim=1)  # token[j - 1]
    match = (before[:, None, :] == tokens[:, :, None]) & torch.ones(t, t, dtype=torch.bool).tril(-1)  # [b, i, j]
    has = match.any(-1)  # queries with an earlier copy
    mass = (patterns[1] * match[:, None]).sum(-1)  # [b, h, i]
    induction = (mass * has[:, None]).sum(dim=(0, 2)) / has.sum()
    return {"previous_token": [round(float(v), 3) for v in previous],
            "induction": [round(float(v), 3) for v in induction]}


def train_induction(seed: int = 0, steps: int = 4_000) -> dict:
    torch.manual_seed(seed)
    model = BUILTINS["induction"].build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for step in range(1, steps + 1):
        seqs, lengths = repeated_sequences(128, rng, with_lengths=True)
        tokens = torch.from_numpy(seqs).long()
        logits = model(tokens[:, :-1])
        # the loss counts the predictable targets only: tokens 2.. of the copy
        t = tokens.shape[1]
        copy = torch.arange(1, t)[None, :] > torch.from_numpy(t - lengths)[:, None]  # [b, t-1]
        loss = torch.nn.functional.cross_entropy(logits[copy], tokens[:, 1:][copy])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print({"step": step, "loss": round(loss.item(), 4)}, flush=True)
    test = torch.from_numpy(repeated_sequences(512, np.random.default_rng(seed + 1))).long()
    with torch.no_grad():  # accuracy on the last token of each sequence: always inside the copy
        acc = (model(test[:, :-1])[:, -1].argmax(-1) == test[:, -1]).float().mean().item()
    scores = induction_scores(model, test)
    return model, {"copy_accuracy": round(acc, 4), "final_loss": round(loss.item(), 4), "steps": steps,
                   "attention": scores, "previous_token_head": int(np.argmax(scores["previous_token"])),
                   "induction_head": int(np.argmax(scores["induction"])),
                   "recipe": "Adam lr 3e-3, batch 128, next-token loss on the copied tokens, seed 0"}


TRAINERS = {"modadd-p113": train_modadd, "superposition": train_superposition, "induction": train_induction}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", choices=sorted(TRAINERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    for name in args.targets:
        model, report = TRAINERS[name]()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.weights_dir / f"{name}.safetensors")
        (args.weights_dir / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        print(name, {k: v for k, v in report.items() if k != "log"})


if __name__ == "__main__":
    main()
