"""A fitted theory: the theory, its parameters, and its scorecard, saved as a directory:
``theory.yaml`` (normalised), ``params.safetensors``, ``scorecard.json``, ``log.txt``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from theorycraft.errors import FitError
from theorycraft.spec import Theory, parse_theory

from ._compile import Plan, fixed_inputs, make_plan, predict_site, site_rows


def r2(pred: np.ndarray, y: np.ndarray, train_mean: np.ndarray) -> tuple[float, float, float]:
    """(R², SSE, SST): 1 − SSE/SST pooled over dimensions, SST around the *train* mean."""
    sse = float(((pred - y) ** 2).sum())
    sst = float(((y - train_mean) ** 2).sum())
    return (1.0 - sse / sst if sst > 0 else 0.0), sse, sst


def count_params(params) -> int:
    return int(sum(np.size(v) for comp in params.values() for v in _leaves(comp)))


def _leaves(tree):
    if isinstance(tree, Mapping):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


def _flatten(params, prefix="") -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.ascontiguousarray(np.asarray(v, np.float32))
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *path, leaf = key.split("/")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def coded_sites(theory) -> list[str]:
    """The sites a theory is scored on: those it predicts; every site for the empty (mean-only)
    theory, which predicts each site by its training mean."""
    if not theory.components:
        return list(theory.sites)
    return [s for s in theory.sites if theory.predictors(s)]


class FittedTheory:
    """A theory with its parameters: ``predict`` new inputs, ``save`` and ``load`` it."""

    def __init__(self, theory, plan: Plan, params: dict, means: Mapping[str, np.ndarray], vocab_size=None):
        self.theory, self.plan, self.params, self.means = theory, plan, params, dict(means)
        self.vocab_size = vocab_size
        self.scorecard: dict = {}

    @property
    def sites(self) -> list[str]:
        return coded_sites(self.theory)

    def replace(self, params: dict | None = None, means: Mapping[str, np.ndarray] | None = None) -> "FittedTheory":
        """The same theory with other parameters (e.g. quantized ones)."""
        return FittedTheory(self.theory, self.plan, self.params if params is None else params,
                            self.means if means is None else means, self.vocab_size)

    def mean_only(self) -> "FittedTheory":
        """The baseline every score is measured against: each of this theory's sites predicted by
        its training mean (the empty theory over the same sites and target)."""
        sites = {s: self.theory.sites[s] for s in self.sites}
        theory = Theory(name="mean-only", target=self.theory.target, sites=sites, variables={}, components={})
        shapes = {s: self.plan.site_shapes[s] for s in sites}
        return FittedTheory(theory, make_plan(theory, shapes, self.vocab_size), {},
                            {s: self.means[s] for s in sites}, self.vocab_size)

    def predict(self, inputs: np.ndarray, sites: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Predictions for every predicted site, shaped as the site is per example. ``sites``
        supplies recorded sites that mechanisms read."""
        batch = {"inputs": np.asarray(inputs), **(sites or {})}
        n = len(batch["inputs"])
        out = {}
        for site in self.sites:
            fixed = {k: jnp.asarray(v) for k, v in fixed_inputs(self.plan, batch, site).items()}
            rows = n * (self.plan.site_shapes[site][0] if len(self.plan.site_shapes[site]) == 2 else 1)
            pred = predict_site(self.plan, self.params, site, fixed, jnp.asarray(self.means[site]), rows)
            out[site] = np.asarray(pred).reshape(n, *self.plan.site_shapes[site])
        return out

    def evaluate(self, acts, data=None, batch_size: int = 4096) -> dict:
        """The scorecard's fidelity part: per-site R² on train and test, coverage, size."""
        from ._fit import load_examples

        data = data if data is not None else load_examples(self.theory, acts)
        sites = {}
        for split, mask in (("train", ~acts.is_test), ("test", acts.is_test)):
            index = np.flatnonzero(mask)
            sums = {s: [0.0, 0.0] for s in self.theory.sites}
            for start in range(0, len(index), batch_size):
                rows = index[start:start + batch_size]
                others = {s: data[s][rows] for s in self.theory.sites}
                preds = self.predict(data["inputs"][rows], others)
                for s in self.theory.sites:
                    y = site_rows(self.plan, s, data[s][rows])
                    pred = site_rows(self.plan, s, preds[s]) if s in preds else np.broadcast_to(self.means[s], y.shape)
                    _, sse, sst = r2(pred, y, self.means[s])
                    sums[s][0] += sse
                    sums[s][1] += sst
            for s, (sse, sst) in sums.items():
                entry = sites.setdefault(s, {})
                entry[f"r2_{split}"] = round(1 - sse / sst, 6) if sst > 0 else 0.0
                entry[f"sst_{split}"] = sst
                entry[f"n_{split}"] = int(len(index))
        predicted = self.sites
        weight = sum(sites[s]["sst_test"] for s in predicted)
        coverage = sum(sites[s]["sst_test"] * sites[s]["r2_test"] for s in predicted) / weight if weight else 0.0
        for entry in sites.values():
            entry.pop("sst_train"), entry.pop("sst_test")
        return {"theory": self.theory.name, "target": str(self.theory.target),
                "sites": {s: sites[s] for s in predicted}, "coverage": round(coverage, 6),
                "size": {"params": count_params(self.params)}}

    # --- the artifact directory -------------------------------------------------------------

    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "theory.yaml").write_text(self.theory.to_yaml())
        tensors = _flatten(self.params) | {f"__mean__/{s}": np.asarray(m, np.float32) for s, m in self.means.items()}
        save_file(tensors, str(directory / "params.safetensors"),
                  metadata={"site_shapes": json.dumps({s: list(v) for s, v in self.plan.site_shapes.items()}),
                            "vocab_size": json.dumps(self.vocab_size)})
        (directory / "scorecard.json").write_text(json.dumps(self.scorecard, indent=1) + "\n")
        return directory

    @classmethod
    def load(cls, directory, *, trust_code: bool = False) -> "FittedTheory":
        """``trust_code``: a theory with ``kind: module:attr`` components may import their modules."""
        directory = Path(directory)
        try:
            theory = parse_theory((directory / "theory.yaml").read_text(), path=str(directory / "theory.yaml"),
                                  trust_code=trust_code)
            from safetensors import safe_open
            with safe_open(str(directory / "params.safetensors"), "numpy") as f:
                meta = f.metadata()
            tensors = load_file(str(directory / "params.safetensors"))
            shapes = {s: tuple(v) for s, v in json.loads(meta["site_shapes"]).items()}
            vocab = json.loads(meta["vocab_size"])
        except (OSError, KeyError, ValueError) as exc:
            raise FitError(f"{directory}: not a fitted theory directory ({exc}); run theorycraft infer") from None
        means = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("__mean__/")}
        params = _unflatten({k: v for k, v in tensors.items() if not k.startswith("__mean__/")})
        fitted = cls(theory, make_plan(theory, shapes, vocab), params, means, vocab)
        score = directory / "scorecard.json"
        fitted.scorecard = json.loads(score.read_text()) if score.exists() else {}
        return fitted
