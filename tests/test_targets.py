"""The bundled targets do what their READMEs say: measured from the shipped weights."""

import numpy as np
import pytest
import torch

from theorycraft.spec import HookPoint, evaluate, pair_env, parse_expr
from theorycraft.targets import load_target
from theorycraft.targets._builtin_models import P, modadd_pairs


def test_modadd_generalises():
    target = load_target("builtin:modadd-p113")
    pairs = modadd_pairs(None, np.random.default_rng(0))  # the training script's order
    test = pairs[int(0.3 * len(pairs)):]  # the 70% never trained on
    with torch.no_grad():
        logits = target.module(torch.from_numpy(test).long())[:, -1]
    accuracy = (logits.argmax(-1).numpy() == (test[:, 0] + test[:, 1]) % P).mean()
    assert accuracy >= 0.99


def test_modadd_embedding_is_sparse_in_fourier_space():
    embed = load_target("builtin:modadd-p113").module.embed.weight.detach().numpy()[:P]
    x = np.arange(P)
    shares = []
    for f in range(1, P // 2 + 1):
        basis = np.stack([np.cos(2 * np.pi * f * x / P), np.sin(2 * np.pi * f * x / P)])
        shares.append(np.linalg.norm(basis @ embed) ** 2)
    shares = np.sort(shares)[::-1] / np.sum(shares)
    assert shares[:8].sum() > 0.8  # a handful of key frequencies hold most of the embedding


def test_superposition_stores_more_features_than_dimensions():
    target = load_target("builtin:superposition")
    norms = target.module.W.detach().norm(dim=0).numpy()
    assert (norms > 0.5).sum() > target.module.W.shape[0]  # more than 5 features in 5 dimensions
    x = target.dataset(4000, 1)
    out = target.run(x, [HookPoint.parse("hook_output")])[HookPoint.parse("hook_output")]
    strong = norms > 0.5
    r2 = 1 - ((out - x)[:, strong] ** 2).sum() / ((x - x.mean(0))[:, strong] ** 2).sum()
    assert r2 > 0.5  # the represented features are read back out


def rule_mass(pattern: np.ndarray, tokens: np.ndarray, rule: str) -> float:
    """Mean attention on the keys where ``rule`` holds, over queries where it holds somewhere."""
    mask = np.asarray(evaluate(parse_expr(rule), pair_env(tokens, {}, np)), bool)  # [N, T, T]
    has = mask.any(-1)
    return float((pattern * mask).sum(-1)[has].mean())


def test_induction_target_has_a_previous_token_head_and_an_induction_head():
    target = load_target("builtin:induction")
    tokens = target.dataset(512, 1)
    hooks = [HookPoint.parse("blocks.0.attn.hook_pattern"), HookPoint.parse("blocks.1.attn.hook_pattern")]
    patterns = target.run(tokens, hooks)
    previous = [rule_mass(patterns[hooks[0]][:, h], tokens, "j == i - 1") for h in range(4)]
    induction = [rule_mass(patterns[hooks[1]][:, h], tokens, "token[j - 1] == token[i] and j < i") for h in range(4)]
    assert max(previous) > 0.7 and int(np.argmax(previous)) == 1  # the head examples/induction.yaml names
    assert max(induction) > 0.6 and int(np.argmax(induction)) == 3


def test_sites_lists_every_hook_with_its_shape():
    hooks = load_target("builtin:modadd-p113").hooks()
    assert hooks["blocks.0.mlp.hook_post"] == (3, 512)
    assert hooks["blocks.0.attn.hook_pattern"] == (4, 3, 3)
    assert hooks["hook_embed"] == (3, 128)


def test_missing_weights_say_how_to_train(tmp_path, monkeypatch):
    from theorycraft.errors import TargetError
    from theorycraft.targets import _load

    monkeypatch.setattr(_load, "WEIGHTS", tmp_path)
    with pytest.raises(TargetError, match="python examples/train_targets.py induction"):
        load_target("builtin:induction")
    with pytest.raises(TargetError, match="did you mean 'induction'"):
        load_target("builtin:inducton")
