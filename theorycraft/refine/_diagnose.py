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


PATTERN_EXAMPLES = 3  # worst examples whose patterns (the network's and the theory's) a pattern site's report keeps
PATTERN_POSITIONS = 32  # of at most this many query and key positions each


def _pattern_report(fitted, site: str, y: np.ndarray, pred: np.ndarray, rows: np.ndarray, worst: int,
                    inputs: np.ndarray, decode) -> dict:
    """An attention site ([example, head, query, key]): the R² of each head (SST around its train
    mean, as the scorer's), and for the worst examples both patterns per head, for the report's panels."""
    mean = np.asarray(fitted.means[site], np.float64).reshape(y.shape[1:])
    sse = ((y - pred) ** 2).sum(axis=(0, 2, 3))
    sst = ((y - mean) ** 2).sum(axis=(0, 2, 3))
    per_example = ((y - pred) ** 2).reshape(len(y), -1).sum(1)
    shown = PATTERN_POSITIONS
    return {"residual_share_of_variance": round(float(sse.sum() / max(sst.sum(), 1e-30)), 4),
            "heads": [round(r2(float(a), float(b)), 4) for a, b in zip(sse, sst)],
            "worst": [{"example": int(rows[k]), "squared_error": round(float(per_example[k]), 4),
                       "input": inputs[k].round(4).tolist(), **_text(decode, inputs[k]),
                       "network": y[k, :, :shown, :shown].round(3).tolist(),
                       "theory": pred[k, :, :shown, :shown].round(3).tolist()}
                      for k in np.argsort(-per_example)[:min(worst, PATTERN_EXAMPLES)]]}


def _text(decode, tokens) -> dict:
    """A text model's example as its tokens read: ``{"tokens": [...]}``, or nothing without a decoder."""
    return {} if decode is None else {"tokens": [decode(int(t)) for t in np.asarray(tokens).reshape(-1)]}


def diagnose(fitted, acts, top: int = 3, worst: int = 5, limit: int = 4096, vocabulary=None, decode=None) -> dict:
    """A report per site, on up to ``limit`` validation examples: of a coded site, its residual's
    top directions and what they correlate with; of an attention site, each head's R²; of both,
    the worst examples. ``vocabulary`` (a search vocabulary) adds its candidate features to what
    residual directions are compared with; ``decode`` (token id -> text, a text model's tokenizer)
    adds each worst example's tokens as text."""
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
        if len(shape) == 3:  # attention patterns: rows are not examples of one distribution, heads are read apart
            report[site] = _pattern_report(fitted, site, np.asarray(batch[site], np.float64),
                                           np.asarray(preds[site], np.float64), rows, worst,
                                           np.asarray(batch["inputs"]), decode)
            continue
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
                                   "input": inputs[k].round(4).tolist(), **_text(decode, inputs[k])} for k in order]}
    return report


def render(report: dict) -> str:
    lines = []
    for site, r in report.items():
        lines.append(f"site {site}: residual = {r['residual_share_of_variance']:.1%} of the variance (validation)")
        if "heads" in r:
            lines.append("  R² per head: " + ", ".join(f"{h}: {v:.3f}" for h, v in enumerate(r["heads"])))
        for k, d in enumerate(r.get("directions", ())):
            near = ", ".join(f"{c['name']} ({c['correlation']:+.2f})" for c in d["correlated"]) or "nothing"
            lines.append(f"  direction {k + 1}: {d['variance_share']:.1%} of the residual; correlated with {near}")
        lines.append("  worst validation examples:")
        for w in r["worst"]:
            shown = repr("".join(w["tokens"])) if "tokens" in w else w["input"]
            lines.append(f"    #{w['example']}: squared error {w['squared_error']:.4g}, input {shown}")
    return "\n".join(lines)
