"""Splice fidelity: run the target with a site replaced by the theory's prediction, and judge its
output against the clean run and against mean ablation (the site replaced by its train mean)."""

from __future__ import annotations

import numpy as np
import torch

from ._card import SpliceScore
from ._fidelity import Examples

SPLICE_EXAMPLES = 1024  # test examples run through the model per site
MIN_GAP = 0.01  # mean ablation must raise the loss by 1% for "loss recovered" to mean anything


def _put(values: np.ndarray, position: int | None):
    """A replacement: the hook's activation with ``values`` written in (at one position, or whole)."""
    values_t = torch.from_numpy(np.array(values, np.float32))  # a writable copy

    def replace(activation: torch.Tensor) -> torch.Tensor:
        new = activation.clone()
        if position is None:
            new[...] = values_t.reshape(activation.shape).to(activation.dtype)
        else:
            new[:, position] = values_t.reshape(new[:, position].shape).to(activation.dtype)
        return new
    return replace


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl_rows(p_rows: np.ndarray, q_rows: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) of each row's softmax distribution."""
    p_log, q_log = _log_softmax(p_rows), _log_softmax(q_rows)
    return (np.exp(p_log) * (p_log - q_log)).sum(-1)


def _loss(task, rows: np.ndarray, refs, clean_rows: np.ndarray) -> float:
    if task.output == "logits":
        return float(-_log_softmax(rows)[np.arange(len(rows)), refs].mean())
    target = clean_rows if refs is None else refs.reshape(rows.shape)
    return float(((rows - target) ** 2).mean())


def splice_scores(fitted, target, examples: Examples, limit: int = SPLICE_EXAMPLES) -> dict[str, SpliceScore]:
    """Per coded site: KL(clean ‖ spliced) and top-1 agreement (logit outputs), and the loss
    recovered = (L_mean_ablated − L_spliced) / (L_mean_ablated − L_clean)."""
    rows = examples.test[:limit]
    data = examples.data
    inputs = data["inputs"][rows]
    preds = fitted.predict(inputs, {s: data[s][rows] for s in fitted.theory.sites}, free=True)  # the theory standing in
    task = target.task
    clean_rows, refs = task.read(target.output(inputs), inputs)
    clean_loss = _loss(task, clean_rows, refs, clean_rows)
    out = {}
    for s in fitted.sites:
        site = fitted.theory.sites[s]
        shape = fitted.plan.site_shapes[s]
        mean = fitted.means[s]  # per row: [D] for a site over positions, else the whole example
        mean = np.broadcast_to(mean.reshape(shape) if mean.size == np.prod(shape) else mean, preds[s].shape)
        spliced_rows, _ = task.read(target.output(inputs, {site.hook: _put(preds[s], site.position)}), inputs)
        ablated_rows, _ = task.read(target.output(inputs, {site.hook: _put(mean, site.position)}), inputs)
        spliced, ablated = _loss(task, spliced_rows, refs, clean_rows), _loss(task, ablated_rows, refs, clean_rows)
        gap = ablated - clean_loss
        entry = {"loss_clean": round(clean_loss, 6), "loss_spliced": round(spliced, 6),
                 "loss_mean_ablated": round(ablated, 6),
                 # when mean ablation barely moves the loss there is nothing to recover: no ratio
                 "loss_recovered": round((ablated - spliced) / gap, 6) if gap > MIN_GAP * max(clean_loss, 1e-3) else None,
                 "kl": None, "top1_agreement": None, "n": int(len(rows))}
        if task.output == "logits":
            entry["kl"] = round(float(kl_rows(clean_rows, spliced_rows).mean()), 6)
            entry["top1_agreement"] = round(float((clean_rows.argmax(-1) == spliced_rows.argmax(-1)).mean()), 6)
        out[s] = SpliceScore(**entry)
    return out
