"""The bundled toy targets: small torch models whose mechanisms are known, with their data.

Every activation a theory may name passes through a ``Hook`` module (an identity), so a site is
just a module path, as in TransformerLens: ``blocks.0.mlp.hook_post``. Weights are trained by
``examples/train_targets.py`` and shipped as safetensors next to this file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._base import Shift, Task


class Hook(nn.Identity):
    """A named place where an activation can be read (and, for splicing, replaced)."""


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.hook_pattern = Hook()  # [batch, head, query, key]
        self.hook_z = Hook()  # [batch, query, head, d_head]

    def forward(self, x):  # x: [batch, pos, d_model]
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # 3 x [b, h, t, dh]
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # [b, h, t, t]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        pattern = self.hook_pattern(scores.masked_fill(~causal, float("-inf")).softmax(-1))
        z = self.hook_z((pattern @ v).transpose(1, 2))  # [b, t, h, dh]
        return self.out(z.reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.up, self.down = nn.Linear(d_model, d_mlp), nn.Linear(d_mlp, d_model)
        self.hook_pre, self.hook_post = Hook(), Hook()  # [batch, pos, d_mlp]

    def forward(self, x):
        return self.down(self.hook_post(torch.relu(self.hook_pre(self.up(x)))))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int | None):
        super().__init__()
        self.attn = Attention(d_model, n_heads)
        self.mlp = MLP(d_model, d_mlp) if d_mlp else None
        self.hook_resid_pre, self.hook_attn_out = Hook(), Hook()
        self.hook_resid_mid, self.hook_resid_post = Hook(), Hook()  # [batch, pos, d_model]

    def forward(self, x):
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(x)))
        if self.mlp is not None:
            x = x + self.mlp(x)
        return self.hook_resid_post(x)


class Transformer(nn.Module):
    """A LayerNorm-free transformer (as in Nanda et al. 2023): tokens in, logits out."""

    def __init__(self, vocab: int, n_ctx: int, d_model: int, n_heads: int, n_layers: int,
                 d_mlp: int | None, n_out: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos_embed = nn.Parameter(torch.randn(n_ctx, d_model) / math.sqrt(d_model))
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_mlp) for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, n_out, bias=False)
        self.hook_embed, self.hook_logits = Hook(), Hook()

    def forward(self, tokens):  # tokens: [batch, pos] int
        x = self.hook_embed(self.embed(tokens) + self.pos_embed[: tokens.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.hook_logits(self.unembed(x))  # [batch, pos, n_out]


class Superposition(nn.Module):
    """Elhage et al. 2022: n sparse features through an m-dim bottleneck, ReLU(WᵀW x + b)."""

    def __init__(self, n_features: int = 20, n_hidden: int = 5):
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_hidden, n_features) * math.sqrt(2 / (n_hidden + n_features)))
        self.b = nn.Parameter(torch.zeros(n_features))
        self.hook_input, self.hook_hidden = Hook(), Hook()  # [batch, n_features], [batch, n_hidden]
        self.hook_output = Hook()  # [batch, n_features]

    def forward(self, x):
        h = self.hook_hidden(self.hook_input(x) @ self.W.T)
        return self.hook_output(torch.relu(h @ self.W + self.b))


# --- the bundled targets: architecture, data, and what is known about them -------------------

@dataclass(frozen=True)
class BuiltinSpec:
    name: str
    mechanism: str  # the known mechanism, in a sentence
    input_kind: str  # "tokens" ([N, T] int) or "vectors" ([N, D] float)
    task: Task  # what the model was trained to do: the loss a splice is judged by

    def build(self) -> nn.Module:
        return _ARCHITECTURES[self.name]()

    def dataset(self, n: int | None, seed: int) -> np.ndarray:
        return _DATASETS[self.name](n, np.random.default_rng(seed))

    def shifts(self) -> dict[str, Shift]:
        return {name: Shift(description, lambda n, seed, fn=fn: fn(n, np.random.default_rng(seed)))
                for name, (description, fn) in _SHIFTS.get(self.name, {}).items()}


P = 113
MODADD_TRAIN_FRACTION = 0.3  # trained on the first 30% of modadd_pairs(None, seed 0): examples/train_targets.py
SUPERPOSITION_FEATURES, SUPERPOSITION_HIDDEN, SUPERPOSITION_DENSITY = 20, 5, 0.05
INDUCTION_VOCAB, INDUCTION_HALF = 32, 12  # sequences of 2 * INDUCTION_HALF tokens


def modadd_pairs(n: int | None, rng: np.random.Generator) -> np.ndarray:
    """All (a, b, =) sequences, shuffled; the first n of them (all P² when n is None)."""
    a, b = np.divmod(np.arange(P * P), P)
    seqs = np.stack([a, b, np.full_like(a, P)], axis=1).astype(np.int32)
    return seqs[rng.permutation(len(seqs))][: n or len(seqs)]


def superposition_vectors(n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Each feature is present with probability DENSITY, with a uniform [0, 1) magnitude."""
    n = n or 20_000
    present = rng.random((n, SUPERPOSITION_FEATURES)) < SUPERPOSITION_DENSITY
    return (present * rng.random((n, SUPERPOSITION_FEATURES))).astype(np.float32)


def repeated_sequences(n: int | None, rng: np.random.Generator, with_lengths: bool = False, *,
                       shortest: int = 4, longest: int = INDUCTION_HALF, copies: int = 2):
    """Random filler, then a random segment of random length L in [shortest, longest], then the
    same segment again (``copies`` times in all). The copy's offset varies, so only induction (find
    the earlier copy of the current token, predict its successor) predicts the second copy; a
    fixed positional offset cannot. Trained on the defaults."""
    n = n or 4_096
    t = 2 * INDUCTION_HALF
    assert copies * longest <= t
    seqs = rng.integers(0, INDUCTION_VOCAB, size=(n, t), dtype=np.int32)
    lengths = rng.integers(shortest, longest + 1, size=n)
    for row, length in zip(seqs, lengths):
        for copy in range(1, copies):
            row[t - copy * length: t - (copy - 1) * length] = row[t - copies * length: t - (copies - 1) * length]
    return (seqs, lengths) if with_lengths else seqs


_ARCHITECTURES = {
    "modadd-p113": lambda: Transformer(vocab=P + 1, n_ctx=3, d_model=128, n_heads=4, n_layers=1, d_mlp=512, n_out=P),
    "superposition": lambda: Superposition(SUPERPOSITION_FEATURES, SUPERPOSITION_HIDDEN),
    "induction": lambda: Transformer(vocab=INDUCTION_VOCAB, n_ctx=2 * INDUCTION_HALF, d_model=64, n_heads=4,
                                     n_layers=2, d_mlp=None, n_out=INDUCTION_VOCAB),
}
_DATASETS = {"modadd-p113": modadd_pairs, "superposition": superposition_vectors,
             # the model reads all but the last token and predicts each next one (its training input)
             "induction": lambda n, rng: repeated_sequences(n, rng)[:, :-1]}


def _held_out_pairs(n, rng):  # rng unused: the held-out pairs are fixed by the training run
    pairs = modadd_pairs(None, np.random.default_rng(0))[int(MODADD_TRAIN_FRACTION * P * P):]
    return pairs[: n or len(pairs)]


def _pairs_where(keep):
    def dataset(n, rng):
        pairs = modadd_pairs(None, rng)
        pairs = pairs[keep(pairs[:, 0], pairs[:, 1])]
        return pairs[: n or len(pairs)]
    return dataset


def _superposition_with(density: float = SUPERPOSITION_DENSITY, low: float = 0.0, high: float = 1.0):
    def dataset(n, rng):
        n = n or 20_000
        present = rng.random((n, SUPERPOSITION_FEATURES)) < density
        return (present * rng.uniform(low, high, (n, SUPERPOSITION_FEATURES))).astype(np.float32)
    return dataset


# Named shifts (``--shift NAME``): data off the training distribution, each a dataset function
# (n, rng) -> inputs with a line saying what changes. The induction model's learned positional
# embeddings stop at 24 positions, so its shifts change what repeats, not the length. Modular
# addition has only P² inputs and a theory's capture holds all of them: its shifts re-weight the
# pairs (the scorer keeps only shifted test examples the fit never saw; see docs/targets.md, Shifts).
_SHIFTS = {
    "modadd-p113": {
        "held-out": (f"only the {P * P - int(MODADD_TRAIN_FRACTION * P * P):,} pairs the model was never trained "
                     f"on (it saw the first 30% of seed 0's shuffle)", _held_out_pairs),
        "wrap": ("only pairs whose sum wraps around, a + b >= 113", _pairs_where(lambda a, b: a + b >= P)),
        "small": ("both operands below 20 (400 pairs, a corner of the table)", _pairs_where(lambda a, b: (a < 20) & (b < 20))),
    },
    "superposition": {
        "dense": ("each feature present with probability 0.2 instead of 0.05", _superposition_with(density=0.2)),
        "large": ("feature magnitudes uniform in [1, 2) instead of [0, 1)", _superposition_with(low=1.0, high=2.0)),
    },
    "induction": {
        "short-repeats": ("a repeated segment of 2-3 tokens (trained: 4-12)",
                          lambda n, rng: repeated_sequences(n, rng, shortest=2, longest=3)[:, :-1]),
        "three-copies": ("the segment (4-8 tokens) appears three times, not twice",
                         lambda n, rng: repeated_sequences(n, rng, shortest=4, longest=8, copies=3)[:, :-1]),
    },
}

def _sum_at_last_position(logits, tokens):
    return logits[:, -1], (tokens[:, 0] + tokens[:, 1]) % P


def copy_lengths(tokens: np.ndarray) -> np.ndarray:
    """The length L of each sequence's repeated segment, read off the tokens: the longest L whose
    last L − 1 visible tokens repeat the L − 1 tokens L places before them. From 2 up, so the
    shifts read right too (short repeats; of three copies, the last is the copy read); the longest
    match wins, so the training data's lengths (4-12) read as before."""
    t = tokens.shape[1] + 1  # the full sequence; the model sees all but its last token
    lengths = np.zeros(len(tokens), np.int64)
    for length in range(2, INDUCTION_HALF + 1):
        same = (tokens[:, t - length:] == tokens[:, t - 2 * length:t - 1 - length]).all(1)
        lengths[same] = length
    return lengths


def _copied_tokens(logits, tokens):
    """The predictions the model was trained on: the tokens of the copy after its first one."""
    t = tokens.shape[1] + 1
    start = t - copy_lengths(tokens)  # position of the copy's first token
    query = np.arange(tokens.shape[1] - 1)  # position t predicts token t + 1 (visible up to the last)
    mask = query[None, :] >= start[:, None]
    return logits[:, :-1][mask], tokens[:, 1:][mask]


def _reconstruction(output, features):
    return output, features


BUILTINS = {
    "modadd-p113": BuiltinSpec("modadd-p113", "adds a and b by rotating waves of a few key frequencies: "
                               "cos(w(a+b)) from products of cos/sin of wa and wb (Nanda et al. 2023)", "tokens",
                               Task("logits", _sum_at_last_position)),
    "superposition": BuiltinSpec("superposition", f"stores {SUPERPOSITION_FEATURES} sparse features in "
                                 f"{SUPERPOSITION_HIDDEN} dimensions as nearly-orthogonal directions, read out "
                                 f"through a ReLU that filters interference (Elhage et al. 2022)", "vectors",
                                 Task("vector", _reconstruction)),
    "induction": BuiltinSpec("induction", "a layer-0 head attends to the previous token; a layer-1 head "
                             "attends to the token after the earlier copy of the current token", "tokens",
                             Task("logits", _copied_tokens)),
}
