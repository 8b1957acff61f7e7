"""Splice fidelity: run the target with a site replaced by the theory's prediction, and judge its
output against the clean run and against mean ablation (the site replaced by its train mean)."""

from __future__ import annotations

import numpy as np
import torch

from ._card import SpliceScore
from ._fidelity import Examples
from ._intervals import ratio_intervals, rounded

SPLICE_EXAMPLES = 1024  # test examples run through the model per site
MIN_GAP = 0.01  # mean ablation must raise the loss by 1% for "loss recovered" to mean anything
OUTPUT_BUDGET = 2 ** 25  # floats of model output per forward pass while splicing (128 MiB)


def _put(values: np.ndarray, position: int | list[int] | None):
    """A replacement: the hook's activation with ``values`` written in (at one position, at the
    kept ones, or whole)."""
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


def _right(rows: np.ndarray, refs: np.ndarray, n: int) -> np.ndarray:
    """Per example and row of its answer [n, rows]: is the top-1 the reference?"""
    return (rows.argmax(-1) == refs).reshape(n, -1)


def _batch_size(target, inputs: np.ndarray, limit: int) -> int:
    """Examples per forward pass so that one output stays near OUTPUT_BUDGET floats (a language
    model's logits are [batch, T, vocab]), read off one example's output."""
    size = max(1, np.asarray(target.output(inputs[:1])).size)
    return int(np.clip(OUTPUT_BUDGET // size, 1, limit))


def splice_scores(fitted, target, examples: Examples, limit: int = SPLICE_EXAMPLES) -> dict[str, SpliceScore]:
    """Per coded site: top-1 agreement and KL(clean ‖ spliced) (logit outputs), and the loss
    recovered = (L_mean_ablated − L_spliced) / (L_mean_ablated − L_clean), over batches of test
    examples (every figure is a mean over output rows, so batching does not change it), each with
    a 95% bootstrap interval over the examples (their own rows' sums resampled); for a task whose
    rows are answers, exact match and the accuracy of each row of the answer (each digit of a sum),
    clean and spliced."""
    rows = examples.test[:limit]
    data = examples.data
    task = target.task
    step = _batch_size(target, data["inputs"][rows[:1]], len(rows))
    per_example = {"clean": [], "rows": []}  # what -> its sum over each example's output rows, batch by batch
    right = {}  # clean or a site -> [examples, answer rows]: each answer row right (a task with answers)
    for start in range(0, len(rows), step):
        batch = rows[start:start + step]
        inputs = data["inputs"][batch]
        preds = fitted.predict(inputs, {s: data[s][batch] for s in fitted.theory.sites}, free=True)  # the theory standing in
        output = target.output(inputs)
        clean_rows, refs = task.read(output, inputs)
        owner = row_owners(task, output, inputs)
        per_example["rows"].append(np.bincount(owner, minlength=len(batch)).astype(np.float64))
        per_example["clean"].append(np.bincount(owner, row_losses(task, clean_rows, refs), len(batch)))
        if task.answers:
            right.setdefault("clean", []).append(_right(clean_rows, refs, len(inputs)))
        for s in fitted.sites:
            site = fitted.theory.sites[s]
            shape = fitted.plan.site_shapes[s]
            mean = fitted.means[s]  # per row: [D] for a site over positions, else the whole example
            mean = np.broadcast_to(mean.reshape(shape) if mean.size == np.prod(shape) else mean, preds[s].shape)
            spliced_rows, _ = task.read(target.output(inputs, {site.hook: _put(preds[s], site.kept)}), inputs)
            ablated_rows, _ = task.read(target.output(inputs, {site.hook: _put(mean, site.kept)}), inputs)
            values = {(s, "spliced"): row_losses(task, spliced_rows, refs, clean_rows),
                      (s, "ablated"): row_losses(task, ablated_rows, refs, clean_rows)}
            if task.output == "logits":
                values[s, "kl"] = kl_rows(clean_rows, spliced_rows)
                values[s, "top1"] = clean_rows.argmax(-1) == spliced_rows.argmax(-1)
            for name, v in values.items():
                per_example.setdefault(name, []).append(np.bincount(owner, np.asarray(v, np.float64), len(batch)))
            if task.answers:
                right.setdefault(s, []).append(_right(spliced_rows, refs, len(inputs)))
    per_example = {name: np.concatenate(v) for name, v in per_example.items()}
    clean, count = per_example["clean"], per_example["rows"]
    total = max(float(count.sum()), 1.0)
    clean_loss = float(clean.sum()) / total
    out = {}
    for s in fitted.sites:
        spliced, ablated = per_example[s, "spliced"], per_example[s, "ablated"]
        spliced_loss, ablated_loss = float(spliced.sum()) / total, float(ablated.sum()) / total
        gap = ablated_loss - clean_loss
        # when mean ablation barely moves the loss there is nothing to recover: no ratio
        recovers = gap > MIN_GAP * max(clean_loss, 1e-3)
        entry = {"loss_clean": round(clean_loss, 6), "loss_spliced": round(spliced_loss, 6),
                 "loss_mean_ablated": round(ablated_loss, 6),
                 "loss_recovered": round((ablated_loss - spliced_loss) / gap, 6) if recovers else None,
                 "kl": None, "top1_agreement": None, "n": int(len(rows)),
                 "loss_recovered_interval": rounded(ratio_intervals(ablated - spliced, ablated - clean)[0])
                 if recovers else None}
        if task.output == "logits":
            kl, top1 = per_example[s, "kl"], per_example[s, "top1"]
            bounds = ratio_intervals(np.stack([kl, top1], 1), np.stack([count, count], 1))
            entry |= {"kl": round(float(kl.sum()) / total, 6), "top1_agreement": round(float(top1.sum()) / total, 6),
                      "kl_interval": rounded(bounds[0]), "top1_agreement_interval": rounded(bounds[1])}
        if task.answers:
            clean_right, spliced_right = np.concatenate(right["clean"]), np.concatenate(right[s])
            entry.update(exact_match_clean=round(float(clean_right.all(1).mean()), 6),
                         exact_match_spliced=round(float(spliced_right.all(1).mean()), 6),
                         answer_accuracy_clean=tuple(round(float(v), 6) for v in clean_right.mean(0)),
                         answer_accuracy_spliced=tuple(round(float(v), 6) for v in spliced_right.mean(0)))
        out[s] = SpliceScore(**entry)
    return out


def row_owners(task, output, inputs: np.ndarray) -> np.ndarray:
    """The example each of the task's output rows belongs to: the task reads an output made of
    example numbers (it selects rows, so what it reads tells whose they are)."""
    output = np.asarray(output)
    numbers = np.broadcast_to(np.arange(len(output), dtype=np.float64).reshape(-1, *([1] * (output.ndim - 1))),
                              output.shape)
    rows, _ = task.read(numbers, inputs)
    return np.asarray(rows).reshape(len(rows), -1)[:, 0].astype(np.int64)
