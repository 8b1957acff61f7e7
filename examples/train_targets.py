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

from theorycraft.targets import _addition as addition
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


def addition_tokenizer():
    """One token per character: the digits (ids 0-9), '+' and '='; no other character."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: k for k, c in enumerate(addition.VOCAB)}
    word = Tokenizer(models.WordLevel(vocab, unk_token="="))
    word.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=word, eos_token="=", unk_token="=")


def addition_model(d_model: int = 128, layers: int = 2, heads: int = 4):
    """transformers' own GPT-2, small: what the hf: adapter loads and names."""
    import transformers as tf

    config = tf.GPT2Config(vocab_size=len(addition.VOCAB), n_positions=addition.LENGTH - 1, n_embd=d_model,
                           n_layer=layers, n_head=heads, n_inner=4 * d_model, resid_pdrop=0.0, embd_pdrop=0.0,
                           attn_pdrop=0.0, bos_token_id=addition.EQUALS, eos_token_id=addition.EQUALS)
    return tf.GPT2LMHeadModel(config)


def addition_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """The logits at the positions that predict the answer digits [N, ANSWER, vocab]."""
    start = addition.ANSWER_START - 1
    return model(input_ids=tokens).logits[:, start:start + addition.ANSWER]


@torch.no_grad()
def addition_measure(model, tokens: np.ndarray, batch: int = 4096) -> dict:
    """Exact match of greedy decoding (the model writes each answer digit after the ones it wrote),
    per-digit accuracy teacher-forced, and exact match by the longest carry chain."""
    model.eval()
    prompt = torch.from_numpy(tokens[:, :addition.ANSWER_START]).long()
    written = []
    for rows in prompt.split(batch):
        for _ in range(addition.ANSWER):
            rows = torch.cat([rows, model(input_ids=rows).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        written.append(rows[:, addition.ANSWER_START:])
    written = torch.cat(written).numpy()
    truth = addition.answer_digits(tokens)
    forced = torch.cat([addition_logits(model, rows).argmax(-1)
                        for rows in torch.from_numpy(tokens[:, :-1]).long().split(batch)]).numpy()
    exact = (written == truth).all(1)
    chain = addition.longest_carry_chain(*addition.operands(tokens))
    return {"n": len(tokens), "exact_match": round(float(exact.mean()), 5),
            "per_digit_teacher_forced": [round(float(v), 5) for v in (forced == truth).mean(0)],
            "exact_match_by_carry_chain": {int(k): {"n": int((chain == k).sum()),
                                                    "exact_match": round(float(exact[chain == k].mean()), 5)}
                                           for k in np.unique(chain)}}


def train_addition(seed: int = 0, max_steps: int = 3_000, batch: int = 128, lr: float = 2e-3, decay: int = 1_000,
                   checkpoint: Path | None = None) -> dict:
    """AdamW on the answer digits' next-token loss over fresh problems each step (the training mix:
    uniform operands plus a quarter with carry chains); the learning rate warms up over 200 steps
    and falls linearly to 0 over the last ``decay`` steps; stop there, or once exact match on 2,000
    validation problems stays at 1.0 for 4 evaluations. ``checkpoint``: saved every evaluation,
    resumed from."""
    torch.manual_seed(seed)
    model = addition_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.98))
    rng, step, seen, log, spent = np.random.default_rng(seed), 0, [], [], 0.0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)  # our own file: the rng's state is a dict
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state, step, seen, log, spent = (state["rng"], state["step"], state["seen"],
                                                             state["log"], state["seconds"])
        print(f"resumed at step {step}", flush=True)
    validation = addition.problems(2_000, np.random.default_rng(seed + 1))
    start, perfect = time.time() - spent, 0
    while step < max_steps and perfect < 4:
        step += 1
        full = addition.encode(*addition._mixture(batch, rng))
        seen.append(addition.operands(full)[0] * 10 ** addition.DIGITS + addition.operands(full)[1])
        tokens = torch.from_numpy(full).long()
        model.train()
        logits = addition_logits(model, tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 tokens[:, addition.ANSWER_START:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in opt.param_groups:  # by the step, so that a resumed run follows the same schedule
            group["lr"] = lr * min(step / 200, 1.0, (max_steps - step + 1) / decay)
        opt.step()
        if step % 250 == 0:
            model.eval()
            with torch.no_grad():
                forced = addition_logits(model, torch.from_numpy(validation).long()).argmax(-1).numpy()
            exact = float((forced == addition.answer_digits(validation)).all(1).mean())
            perfect = perfect + 1 if exact == 1.0 else 0
            log.append({"step": step, "loss": float(f"{loss.item():.3g}"), "validation_exact": round(exact, 4),
                        "seconds": round(time.time() - start)})
            print(log[-1], flush=True)
            if checkpoint is not None:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                            "step": step, "seen": seen, "log": log, "seconds": time.time() - start}, checkpoint)
    seconds = round(time.time() - start)
    test = addition.problems(20_000, np.random.default_rng(seed + 2))
    trained = np.concatenate(seen)
    a, b = addition.operands(test)
    test = test[~np.isin(a * 10 ** addition.DIGITS + b, trained)]  # held out: never a training problem
    report = {"test": addition_measure(model, addition.encode(*addition.operands(test))),
              "shifts": {name: addition_measure(model, addition.encode(*addition.operands(fn(5_000, seed + 3))))
                         for name, (_, fn) in addition.SHIFTS.items()},
              "steps": step, "seconds": seconds, "training_problems": int(len(trained)),
              "model": "GPT-2 (transformers), 2 layers, d_model 128, 4 heads, d_mlp 512, 12 tokens, "
                       f"{addition.LENGTH - 1} positions",
              "format": f"{addition.DIGITS}-digit operands zero-padded, most significant first; the sum's "
                        f"{addition.ANSWER} digits least significant first",
              "recipe": f"AdamW lr {lr} (200 warm-up steps, linear decay to 0 over the last {decay} of {max_steps}) "
                        f"wd 0.1 betas (0.9, 0.98), batch {batch} fresh problems "
                        f"a step (3/4 uniform, 1/4 carry chains of 1-{addition.DIGITS - 1} columns), loss on the "
                        f"answer digits, grad clip 1.0, seed {seed}; stopped after 4 evaluations at validation "
                        f"exact match 1.0",
              "log": log}
    model.eval()
    return model, report


TRAINERS = {"modadd-p113": train_modadd, "superposition": train_superposition, "induction": train_induction,
            "addition": train_addition}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", choices=sorted(TRAINERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS)
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="addition: save a checkpoint there every evaluation, and resume from it")
    parser.add_argument("--max-steps", type=int, default=3_000,
                        help="addition: stop there at the latest (resumed: the steps already run count)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    for name in args.targets:
        if name == "addition":  # a Hugging Face directory: config.json, model.safetensors, tokenizer
            checkpoint = args.checkpoint_dir / "addition.pt" if args.checkpoint_dir else None
            model, report = train_addition(max_steps=args.max_steps, checkpoint=checkpoint)
            model.save_pretrained(str(args.weights_dir / name))
            addition_tokenizer().save_pretrained(str(args.weights_dir / name))
        else:
            model, report = TRAINERS[name]()
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      args.weights_dir / f"{name}.safetensors")
        (args.weights_dir / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        print(name, {k: v for k, v in report.items() if k != "log"})


if __name__ == "__main__":
    main()
