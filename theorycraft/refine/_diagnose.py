"""Where a fitted theory fails: per site, the top principal directions of its residual, the
variables and fixed features most correlated with each, and the worst examples. On validation
examples: what it points at steers the next theory, a choice, so it never reads test."""

from __future__ import annotations

import numpy as np

from theorycraft.inference.engine import fixed_inputs, load_examples, site_rows
from theorycraft.scoring import r2, spreads, squared_errors
from theorycraft.inference.kinds import kind_of

from ._proxy import feature_columns
from ._vocabulary import candidates


def _correlations(scores: np.ndarray, candidates: dict[str, np.ndarray], top: int) -> list[dict]:
    """The candidates whose values correlate most (in absolute value) with ``scores``."""
    out = []
    centred = scores - scores.mean()
    norm = np.sqrt((centred ** 2).sum())
    for name, values in candidates.items():
        v = values - values.mean()
        denom = norm * np.sqrt((v ** 2).sum())
        if denom > 0:
            out.append({"name": name, "correlation": round(float((centred * v).sum() / denom), 4)})
    return sorted(out, key=lambda c: -abs(c["correlation"]))[:top]


def _vocabulary_columns(fitted, batch: dict, site: str, vocab) -> dict[str, np.ndarray]:
    """The columns of every fixed-feature candidate a search vocabulary offers for ``site``
    (``mlp_waves += 23[1]``): features the theory could add."""
    out = {}
    for cand in candidates(vocab, fitted.theory, state={}):
        if cand.site == site and kind_of(cand.kind).fixed:
            values = feature_columns(cand, fitted.theory, fitted.plan.site_shapes, fitted.vocab_size, batch)
            for k in range(values.shape[1]):
                out[f"candidate {cand.description}[{k}]"] = values[:, k].astype(np.float64)
    return out


def _candidates(fitted, batch: dict, site: str, vocab=None) -> dict[str, np.ndarray]:
    """Every number the theory already computes in the site's rows: its variables and the
    columns of its fixed features (``waves[3]``), and the position for sites over positions;
    with a search vocabulary, also the features it offers."""
    fixed = fixed_inputs(fitted.plan, batch, site)
    out = _vocabulary_columns(fitted, batch, site, vocab) if vocab is not None else {}
    for name in list(fitted.theory.variables) + sorted(fitted.plan.fixed):
        if name in fixed:
            values = np.asarray(fixed[name], np.float64).reshape(len(fixed[name]), -1)
            for k in range(values.shape[1]):
                out[name if values.shape[1] == 1 else f"{name}[{k}]"] = values[:, k]
    shape = fitted.plan.site_shapes[site]
    if len(shape) == 2:
        out["position"] = np.tile(np.arange(shape[0], dtype=np.float64), len(batch["inputs"]))
    return out


def diagnose(fitted, acts, top: int = 3, worst: int = 5, limit: int = 4096, vocabulary=None) -> dict:
    """A report per coded (non-pattern) site, on up to ``limit`` validation examples; ``vocabulary``
    (a search vocabulary) adds its candidate features to what residual directions are compared with."""
    from theorycraft.configs import COUNT, SEED

    top, worst, limit = COUNT.check("top", top), SEED.check("worst", worst), COUNT.check("limit", limit)
    data = load_examples(fitted.theory, acts)
    rows = acts.split("validation")[:limit]
    batch = {k: v[rows] for k, v in data.items()}
    preds = fitted.predict(batch["inputs"], {s: batch[s] for s in fitted.theory.sites})
    sse, sst = squared_errors(fitted, data, rows), spreads(fitted, data, rows)  # the scorer's figures
    report = {}
    for site in fitted.sites:
        shape = fitted.plan.site_shapes[site]
        if len(shape) == 3:
            continue  # attention patterns: rows are not examples of one distribution
        y = site_rows(fitted.plan, site, batch[site])
        residual = y - site_rows(fitted.plan, site, preds[site])
        centred = residual - residual.mean(0)
        _, singular, directions = np.linalg.svd(centred, full_matrices=False)
        share = singular ** 2 / max((singular ** 2).sum(), 1e-30)
        candidates = _candidates(fitted, batch, site, vocabulary)
        components = []
        for k in range(min(top, len(singular))):
            scores = centred @ directions[k]
            components.append({"variance_share": round(float(share[k]), 4),
                               "direction": [round(float(v), 4) for v in directions[k]],
                               "correlated": _correlations(scores, candidates, top)})
        per_example = (residual ** 2).reshape(len(rows), -1).sum(1)
        order = np.argsort(-per_example)[:worst]
        inputs = np.asarray(batch["inputs"])
        report[site] = {"residual_share_of_variance": round(1 - r2(sse[site], sst[site]), 4),
                        "directions": components,
                        "worst": [{"example": int(rows[k]), "squared_error": round(float(per_example[k]), 4),
                                   "input": inputs[k].round(4).tolist()} for k in order]}
    return report


def render(report: dict) -> str:
    lines = []
    for site, r in report.items():
        lines.append(f"site {site}: residual = {r['residual_share_of_variance']:.1%} of the variance (validation)")
        for k, d in enumerate(r["directions"]):
            near = ", ".join(f"{c['name']} ({c['correlation']:+.2f})" for c in d["correlated"]) or "nothing"
            lines.append(f"  direction {k + 1}: {d['variance_share']:.1%} of the residual; correlated with {near}")
        lines.append("  worst validation examples:")
        for w in r["worst"]:
            lines.append(f"    #{w['example']}: squared error {w['squared_error']:.4g}, input {w['input']}")
    return "\n".join(lines)
