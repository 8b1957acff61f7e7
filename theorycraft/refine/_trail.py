"""What a search leaves behind: the found theory as YAML, the trail (every step's theory, and its
bits and fidelity on validation, which chose it, and on test) as JSON, the scaling curve fitted
to the trail, a plot of both, and the found theory refitted and scored as ``infer`` would."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from theorycraft import _artifact
from theorycraft.files import write_atomically
from theorycraft.inference import FitConfig, fit
from theorycraft.inference.kinds import kind_of
from theorycraft.scoring import Scorecard, score

from theorycraft.scoring import unclaimed_heads

from ._grammar import slug
from ._propose import head_rules
from ._proxy import probe
from ._scaling import fit_scaling
from ._judge import Totals
from ._search import Found, Step
from ._vocabulary import candidates


SEARCH_FORMAT = 2  # 2: every step's code on validation (selection) and test (report)


@dataclass(frozen=True)
class SearchResult:
    """A finished search, as written to ``trail.json``: every accepted step, why it stopped, the
    scaling curve, the found theory's scorecard (refitted on train + validation, as ``infer``
    fits it) and, with ``--compare``, a reference theory judged the same way. The JSON rounds
    bits to whole numbers and coverage to 6 decimals, so a reloaded result equals the written
    one only to that precision."""

    start: str
    stopped: str
    fit: Mapping
    trail: tuple[Step, ...]
    scorecard: Scorecard
    scaling: Optional[Mapping] = None
    reference: Optional[Mapping] = None  # {"theory": path, "validation": Totals, "test": Totals, "params"}
    heads_left_to_mean: tuple[Mapping, ...] = ()
    out: str = ""
    format: int = SEARCH_FORMAT

    @property
    def final(self) -> Step:
        return self.trail[-1]

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        reference = self.reference and {**self.reference, "validation": self.reference["validation"].as_dict(),
                                         "test": self.reference["test"].as_dict()}
        steps = [step.as_dict() | {"given": list(given_of(step))} for step in self.trail]  # inputs: at R² 0
        return data | {"trail": steps, "scorecard": self.scorecard.to_json(),
                       "reference": reference, "heads_left_to_mean": list(self.heads_left_to_mean)}

    @classmethod
    def from_json(cls, data: Mapping) -> "SearchResult":
        if data.get("format") != SEARCH_FORMAT:
            raise ValueError(f"expected trail format {SEARCH_FORMAT}, found {data.get('format', 1)}")
        reference = data.get("reference")
        if reference:
            reference = {**reference, "validation": Totals.from_json(reference["validation"]),
                         "test": Totals.from_json(reference["test"])}
        return cls(data["start"], data["stopped"], data["fit"], tuple(Step.from_json(s) for s in data["trail"]),
                   Scorecard.from_json(data["scorecard"]), data.get("scaling"), reference,
                   tuple(data.get("heads_left_to_mean", ())), data.get("out", ""))


def given_of(step: Step) -> tuple[str, ...]:
    """The recorded sites a step's theory was handed (its declared ``inputs``): its trail
    coverage counts each at R² 0."""
    import yaml

    data = yaml.safe_load(step.theory) if step.theory else None
    return tuple(data.get("inputs") or ()) if isinstance(data, dict) else ()


def scaling_of(trail: Sequence[Step], target_coverage: float) -> dict | None:
    """L(N) = E + A·N^-α over the trail's (theory bits, 1 − validation coverage); None under 3
    points. Fitted on validation: it is a model the tool builds, so it does not read test."""
    points = sorted({(s.selection.bits_theory, 1 - s.selection.coverage) for s in trail if s.selection.bits_theory > 0})
    if len(points) < 3:
        return None
    curve = fit_scaling([p[0] for p in points], [max(p[1], 1e-9) for p in points])
    need = curve.size_for(1 - target_coverage)
    return {"floor": curve.floor, "scale": curve.scale, "exponent": curve.exponent, "errors": curve.errors,
            "points": curve.points, "notes": list(curve.notes),
            "target_coverage": target_coverage, "bits_for_target": None if math.isinf(need) else need}


def head_names(result: Found, judge, sample: int = 1024) -> list[dict]:
    """For each head the found theory leaves to its mean pattern (no rule bought bits over it),
    the vocabulary rule whose pattern its mean pattern is closest to (cosine)."""
    theory, fitted = result.best.theory, result.best.fitted
    rows = judge.examples.validation[:sample]  # naming is a choice: made on validation
    batch = {k: v[rows] for k, v in judge.data.items()}
    out = []
    for site, shape in judge.shapes.items():
        if len(shape) != 3 or site not in judge.explained:
            continue
        actual = np.asarray(batch[site], np.float64).reshape(len(rows), *shape)
        heads = unclaimed_heads(fitted, site) if theory.predictors(site) else list(range(shape[0]))
        grammar = result.vocabulary.grammar
        if grammar is not None and site in grammar.patterns:  # the grammar's closest select
            rules = head_rules(result.vocabulary, theory, np.asarray(batch["inputs"]), actual)
            out += [{"site": site, "head": h, "rule_name": slug(rules[h][0], rules[h][0]), "rule": rules[h][0],
                     "cosine": round(rules[h][1], 4)} for h in heads]
            continue
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


def write_search(result: Found, judge, out: Path, *, start_path: str, target_coverage: float, config: FitConfig,
                 reference: dict | None = None) -> SearchResult:
    """Write theory.yaml, vocabulary.yaml, fitted/ (with its scorecard), trail.json and
    trail.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    heads = head_names(result, judge)
    comments = [f"# found by theorycraft search from {start_path} in {len(result.trail) - 1} steps ({result.stopped})"]
    comments += [f"# {h['site']} head {h['head']} is left to its mean pattern; of the vocabulary's rules it is "
                 f"closest to {h['rule_name']} ({h['rule']}), cosine {h['cosine']:.2f}" for h in heads]
    found = judge.judged(result.best.theory)  # over the sites the trail's figures cover
    write_atomically(out / "theory.yaml", "\n".join(comments) + "\n" + found.to_yaml())
    write_atomically(out / "vocabulary.yaml", result.vocabulary.text)
    fitted = fit(found, judge.acts, config, data=judge.data)  # as infer fits it
    card = score(fitted, judge.acts, data=judge.data)
    fitted.save(out / "fitted")
    card.save(out / "fitted")
    fit_record = {name: value for name, value in dataclasses.asdict(config).items()  # what `infer` needs to
                  if name not in ("progress", "checkpoint_every")}                  # refit it alike
    summary = SearchResult(start_path, result.stopped, fit_record,
                           result.trail, card, scaling_of(result.trail, target_coverage), reference, tuple(heads),
                           str(out))
    write_atomically(out / "trail.json", json.dumps(summary.to_json(), indent=1) + "\n")
    _artifact.record(out, "theory.yaml", "vocabulary.yaml", "trail.json")  # the report reads them back
    plot_trail(result.trail, summary.scaling, out / "trail.png")
    return summary


def plot_trail(trail: Sequence[Step], scaling: Mapping | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    steps = np.arange(len(trail))
    left.plot(steps, [s.selection.bits_total for s in trail], "o-", label="validation total (theory + residual)")
    left.plot(steps, [s.report.bits_total for s in trail], ".:", color="tab:gray", label="test total")
    left.set_xlabel("step")
    left.set_ylabel("bits")
    twin = left.twinx()
    twin.plot(steps, [s.report.coverage for s in trail], "s--", color="tab:green", label="test coverage")
    twin.set_ylabel("test coverage")
    left.set_xticks(steps, [s.action[:28] for s in trail], rotation=70, ha="right", fontsize=7)
    handles = [h for ax in (left, twin) for h in ax.get_legend_handles_labels()[0]]
    left.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper center", ncol=3, frameon=False,
                bbox_to_anchor=(0.5, 1.13))  # above the panel: the lines cross every corner of it
    sized = [s.selection for s in trail if s.selection.bits_theory > 0]
    right.scatter([s.bits_theory for s in sized], [max(1 - s.coverage, 1e-9) for s in sized], zorder=3,
                  label="trail (validation)")
    if scaling:
        grid = np.geomspace(min(s.bits_theory for s in sized), max(s.bits_theory for s in sized) * 4, 100)
        spread = (scaling.get("errors") or {}).get("exponent")
        right.plot(grid, scaling["floor"] + scaling["scale"] * grid ** -scaling["exponent"], "k-" if not scaling.get("notes") else "k:",
                   label=f"E + A·N^-α: E={scaling['floor']:.3g}, α={scaling['exponent']:.2f}"
                         + (f" ± {spread:.2g}" if spread is not None else "") + (" (not a result)" if scaling.get("notes") else ""))
    if sized:  # a trail of the start alone has no theory bits to put on a log axis
        right.set_xscale("log")
        right.set_yscale("log")
    right.set_xlabel("theory size N (bits)")
    right.set_ylabel("validation loss 1 − coverage")
    right.legend(fontsize=7, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1.13))
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
