"""Splice fidelity: run the target with a site replaced by the theory's prediction, and judge its
output against the clean run and against mean ablation (the site replaced by its train mean)."""

from __future__ import annotations

import numpy as np
import torch

from ._card import SpliceScore
from ._fidelity import Examples

SPLICE_EXAMPLES = 1024  # test examples run through the model per site
MIN_GAP = 0.01  # mean ablation must raise the loss by 1% for "loss recovered" to mean anything
OUTPUT_BUDGET = 2 ** 25  # floats of model output per forward pass while splicing (128 MiB)


def _put(values: np.ndarray, position: int | None):
    """A replacement: the hook's activation with ``values`` written in (at one position, or whole)."""
    values_t = torch.from_numpy(np.array(values, np.float32))  # a writable copy

    def replace(activation: torch.Tensor) -> torch.Tensor:
        new = activation.clone()
        if position is None:
            new[...] = values_t.reshape(activation.shape).to(activation.device, activation.dtype)
        else:
            new[:, position] = values_t.reshape(new[:, position].shape).to(activation.device, activation.dtype)
        return new
    return replace


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl_rows(p_rows: np.ndarray, q_rows: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) of each row's softmax distribution."""
    p_log, q_log = _log_softmax(p_rows), _log_softmax(q_rows)
    return (np.exp(p_log) * (p_log - q_log)).sum(-1)


def row_losses(task, rows: np.ndarray, refs, clean_rows: np.ndarray | None = None) -> np.ndarray:
    """The task's loss of each output row: against its reference (cross-entropy of the label for
    logits, squared error for vectors), or without references, its departure from the clean output
    (KL for logits, squared error for vectors; zero where ``clean_rows`` is None: the clean run itself)."""
    if refs is not None and task.output == "logits":
        return -_log_softmax(rows)[np.arange(len(rows)), refs]
    if refs is None and clean_rows is None:
        return np.zeros(len(rows))
    if refs is None and task.output == "logits":
        return kl_rows(clean_rows, rows)
    target = clean_rows if refs is None else refs.reshape(rows.shape)
    return ((rows - target) ** 2).reshape(len(rows), -1).mean(1)


def _batch_size(target, inputs: np.ndarray, limit: int) -> int:
    """Examples per forward pass so that one output stays near OUTPUT_BUDGET floats (a language
    model's logits are [batch, T, vocab]), read off one example's output."""
    size = max(1, np.asarray(target.output(inputs[:1])).size)
    return int(np.clip(OUTPUT_BUDGET // size, 1, limit))


def splice_scores(fitted, target, examples: Examples, limit: int = SPLICE_EXAMPLES) -> dict[str, SpliceScore]:
    """Per coded site: KL(clean ‖ spliced) and top-1 agreement (logit outputs), and the loss
    recovered = (L_mean_ablated − L_spliced) / (L_mean_ablated − L_clean), over batches of test
    examples (every figure is a mean over output rows, so batching does not change it)."""
    rows = examples.test[:limit]
    data = examples.data
    task = target.task
    step = _batch_size(target, data["inputs"][rows[:1]], len(rows))
    per_row = {"clean": []}  # what -> its value per output row, batch by batch
    for start in range(0, len(rows), step):
        batch = rows[start:start + step]
        inputs = data["inputs"][batch]
        preds = fitted.predict(inputs, {s: data[s][batch] for s in fitted.theory.sites}, free=True)  # the theory standing in
        clean_rows, refs = task.read(target.output(inputs), inputs)
        per_row["clean"].append(row_losses(task, clean_rows, refs))
        for s in fitted.sites:
            site = fitted.theory.sites[s]
            shape = fitted.plan.site_shapes[s]
            mean = fitted.means[s]  # per row: [D] for a site over positions, else the whole example
            mean = np.broadcast_to(mean.reshape(shape) if mean.size == np.prod(shape) else mean, preds[s].shape)
            spliced_rows, _ = task.read(target.output(inputs, {site.hook: _put(preds[s], site.position)}), inputs)
            ablated_rows, _ = task.read(target.output(inputs, {site.hook: _put(mean, site.position)}), inputs)
            for name, values in (((s, "spliced"), row_losses(task, spliced_rows, refs, clean_rows)),
                                 ((s, "ablated"), row_losses(task, ablated_rows, refs, clean_rows))):
                per_row.setdefault(name, []).append(values)
            if task.output == "logits":
                per_row.setdefault((s, "kl"), []).append(kl_rows(clean_rows, spliced_rows))
                per_row.setdefault((s, "top1"), []).append(clean_rows.argmax(-1) == spliced_rows.argmax(-1))
    mean_of = {name: float(np.concatenate(values).mean()) for name, values in per_row.items()}
    clean_loss = mean_of["clean"]
    out = {}
    for s in fitted.sites:
        spliced, ablated = mean_of[s, "spliced"], mean_of[s, "ablated"]
        gap = ablated - clean_loss
        entry = {"loss_clean": round(clean_loss, 6), "loss_spliced": round(spliced, 6),
                 "loss_mean_ablated": round(ablated, 6),
                 # when mean ablation barely moves the loss there is nothing to recover: no ratio
                 "loss_recovered": round((ablated - spliced) / gap, 6) if gap > MIN_GAP * max(clean_loss, 1e-3) else None,
                 "kl": None, "top1_agreement": None, "n": int(len(rows))}
        if task.output == "logits":
            entry["kl"] = round(mean_of[s, "kl"], 6)
            entry["top1_agreement"] = round(mean_of[s, "top1"], 6)
        out[s] = SpliceScore(**entry)
    return out
