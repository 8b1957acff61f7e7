"""What a search leaves behind: the found theory as YAML, the trail (every step's theory, bits
and test fidelity) as JSON, the scaling curve fitted to the trail, and a plot of both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from theorycraft.inference.kinds import kind_of
from theorycraft.scoring._size import unclaimed_heads

from ._proxy import probe
from ._scaling import fit_scaling
from ._search import SearchResult
from ._vocabulary import candidates


def scaling_of(trail: list[dict], target_coverage: float) -> dict | None:
    """L(N) = E + A·N^-α over the trail's (theory bits, 1 − coverage); None under 3 points."""
    points = sorted({(s["bits_theory"], 1 - s["coverage"]) for s in trail if s["bits_theory"] > 0})
    if len(points) < 3:
        return None
    curve = fit_scaling([p[0] for p in points], [max(p[1], 1e-9) for p in points])
    need = curve.size_for(1 - target_coverage)
    return {"floor": curve.floor, "scale": curve.scale, "exponent": curve.exponent,
            "target_coverage": target_coverage, "bits_for_target": None if math.isinf(need) else need}


def head_names(result: SearchResult, judge, sample: int = 1024) -> list[dict]:
    """For each head the found theory leaves to its mean pattern (no rule bought bits over it),
    the vocabulary rule whose pattern its mean pattern is closest to (cosine)."""
    theory, fitted = result.best.theory, result.best.fitted
    rows = judge.examples.test[:sample]
    batch = {k: v[rows] for k, v in judge.data.items()}
    out = []
    for site, shape in judge.shapes.items():
        if len(shape) != 3 or site not in judge.explained:
            continue
        actual = np.asarray(batch[site], np.float64).reshape(len(rows), *shape)
        heads = unclaimed_heads(fitted, site) if theory.predictors(site) else list(range(shape[0]))
        offered = [c for c in candidates(result.vocabulary, theory, state={}) if c.site == site and kind_of(c.kind).takes_head]
        for head in heads:
            best = None
            for cand in offered:
                if (cand.data.get("head") or 0) != head:
                    continue
                _, fixed = probe(cand, theory, judge.shapes, judge.acts.vocab_size, batch)
                keys = np.broadcast_to(fixed["candidate_features/expr"], actual.shape[:1] + shape[1:]).astype(bool)
                keys = keys & np.tril(np.ones(shape[1:], bool))
                spread = keys / np.maximum(keys.sum(-1, keepdims=True), 1)
                a = actual[:, head]
                cosine = float((a * spread).sum() / max(np.linalg.norm(a) * np.linalg.norm(spread), 1e-12))
                if best is None or cosine > best["cosine"]:
                    best = {"site": site, "head": head, "rule_name": cand.label.rsplit("_", 1)[0],
                            "rule": str(cand.data["rule"]), "cosine": round(cosine, 4)}
            if best:
                out.append(best)
    return out


def write_search(result: SearchResult, judge, out: Path, *, start_path: str, target_coverage: float,
                 config: dict, reference: dict | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    trail = [s.as_dict() for s in result.trail]
    heads = head_names(result, judge)
    comments = [f"# found by theorycraft search from {start_path} in {len(trail) - 1} steps ({result.stopped})"]
    comments += [f"# {h['site']} head {h['head']} is left to its mean pattern; of the vocabulary's rules it is "
                 f"closest to {h['rule_name']} ({h['rule']}), cosine {h['cosine']:.2f}" for h in heads]
    (out / "theory.yaml").write_text("\n".join(comments) + "\n" + result.best.theory.to_yaml())
    (out / "vocabulary.yaml").write_text(result.vocabulary.text)
    fitted = result.best.fitted
    fitted.scorecard = fitted.evaluate(judge.acts, judge.data) | {
        "data": {"directory": str(judge.acts.directory), "n": judge.acts.n}}
    fitted.save(out / "fitted")
    summary = {"start": start_path, "stopped": result.stopped, "fit": config, "final": trail[-1] | {"theory": None},
               "heads_left_to_mean": heads, "scaling": scaling_of(trail, target_coverage), "reference": reference,
               "trail": trail}
    (out / "trail.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_trail(trail, summary["scaling"], out / "trail.png")
    return summary


def plot_trail(trail: list[dict], scaling: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    steps = np.arange(len(trail))
    left.plot(steps, [s["bits_total"] for s in trail], "o-", label="total (theory + test residual)")
    left.set_xlabel("step")
    left.set_ylabel("bits")
    twin = left.twinx()
    twin.plot(steps, [s["coverage"] for s in trail], "s--", color="tab:green", label="test coverage")
    twin.set_ylabel("test coverage")
    left.set_xticks(steps, [s["action"][:28] for s in trail], rotation=70, ha="right", fontsize=7)
    left.legend(loc="lower left", fontsize=8)
    twin.legend(loc="center right", fontsize=8)
    sized = [s for s in trail if s["bits_theory"] > 0]
    right.scatter([s["bits_theory"] for s in sized], [max(1 - s["coverage"], 1e-9) for s in sized], zorder=3,
                  label="trail")
    if scaling:
        grid = np.geomspace(min(s["bits_theory"] for s in sized), max(s["bits_theory"] for s in sized) * 4, 100)
        right.plot(grid, scaling["floor"] + scaling["scale"] * grid ** -scaling["exponent"], "k-",
                   label=f"E + A·N^-α: E={scaling['floor']:.3g}, α={scaling['exponent']:.2f}")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("theory size N (bits)")
    right.set_ylabel("test loss 1 − coverage")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
