"""A fitted theory: the theory, its parameters, its training means and how it was fitted, saved as
a directory: ``theory.yaml`` (normalised) and ``params.safetensors`` (with the fit's record and the
artifact's format version in its metadata), their sha256 in ``checksums.json``, verified on load.
Scores are the scorer's (``scorecard.json``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from theorycraft import _artifact
from theorycraft.files import replacing, write_atomically
from theorycraft.errors import FitError
from theorycraft.spec import TargetRef, Theory, parse_theory

from ._compile import Plan, fixed_inputs, make_plan, predict_site


def count_params(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


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


ARTIFACT_FORMAT = 3  # 2: fit record in the parameters' metadata; scores in scorecard.json only. 3: checksums.json
ARTIFACT_FILES = ("theory.yaml", "params.safetensors")


class FittedTheory:
    """A theory with its parameters: ``predict`` new inputs, ``save`` and ``load`` it.
    ``fit_info`` records how it was fitted (closed-form strengths, Adam steps, the capture)."""

    def __init__(self, theory, plan: Plan, params: dict, means: Mapping[str, np.ndarray], vocab_size=None,
                 fit_info: Mapping | None = None):
        self.theory, self.plan, self.params, self.means = theory, plan, params, dict(means)
        self.vocab_size = vocab_size
        self.fit_info = dict(fit_info or {})

    def _component_rows(self) -> list[tuple[str, str, str, str, int]]:
        """(name, kind, what it reads, what it predicts, parameters) per component; a component
        that predicts several sites counts the parameters of each of its instances."""
        def size(name):
            return sum(count_params(v) for k, v in self.params.items() if k == name or k.startswith(f"{name}@"))
        return [(name, c.kind, ", ".join(c.reads() or [str(e) for _, e in c.expressions()]) or "-",
                 ", ".join(c.predicted()) or "-", size(name))
                for name, c in self.theory.components.items()]

    def __repr__(self) -> str:
        rows = self._component_rows()
        how = self.fit_info.get("mode", "")
        lines = [f"FittedTheory({self.theory.name!r} on {self.theory.target}: {len(rows)} components, "
                 f"{count_params(self.params):,} params" + (f"; fitted {how}" if how else "") + ")"]
        w = [max((len(r[k]) for r in rows), default=0) for k in range(4)]
        lines += [f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}} -> {r[3]:<{w[3]}}  {r[4]:,} params" for r in rows]
        lines.append("  sites: " + ", ".join(f"{s} {list(v)}" for s, v in self.plan.site_shapes.items()))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from theorycraft._html import code, esc, table

        head = (f"<p><b>FittedTheory</b> {code(self.theory.name)} on {code(self.theory.target)}: "
                f"{count_params(self.params):,} parameters{esc(', fitted ' + self.fit_info['mode']) if self.fit_info.get('mode') else ''}</p>")
        inputs = set(self.theory.inputs)
        sites = [[s, str(self.theory.sites[s].hook) if s in self.theory.sites else "", str(list(shape)),
                  "given (input)" if s in inputs else ", ".join(self.theory.predictors(s)) or "its training mean"]
                 for s, shape in self.plan.site_shapes.items()]
        return "\n".join([head, table(["component", "kind", "reads", "predicts", "parameters"], self._component_rows()),
                          table(["site", "hook", "shape per example", "predicted by"], sites)])

    @property
    def sites(self) -> list[str]:
        """The sites it answers for (``Theory.covered``): predicted, or at their training mean."""
        return list(self.theory.covered)

    def replace(self, params: dict | None = None, means: Mapping[str, np.ndarray] | None = None) -> "FittedTheory":
        """The same theory with other parameters (e.g. quantized ones)."""
        return FittedTheory(self.theory, self.plan, self.params if params is None else params,
                            self.means if means is None else means, self.vocab_size, self.fit_info)

    def with_theory(self, theory: Theory) -> "FittedTheory":
        """The same fit under ``theory`` where it says the same thing (its claim), e.g. with axioms added."""
        return FittedTheory(theory, self.plan, self.params, self.means, self.vocab_size, self.fit_info)

    def mean_only(self) -> "FittedTheory":
        """The baseline every score is measured against: each of this theory's sites predicted by
        its training mean (the empty theory over the same sites and target)."""
        sites = {s: self.theory.sites[s] for s in self.sites}
        theory = Theory(name="mean-only", target=self.theory.target, sites=sites, variables={}, components={})
        shapes = {s: self.plan.site_shapes[s] for s in sites}
        return FittedTheory(theory, make_plan(theory, shapes, self.vocab_size), {},
                            {s: self.means[s] for s in sites}, self.vocab_size, self.fit_info)

    def predict(self, inputs: np.ndarray, sites: Mapping[str, np.ndarray] | None = None, *,
                free: bool = False) -> dict[str, np.ndarray]:
        """Predictions for every site it answers for (sites it does not predict: their training
        mean), shaped as the site is per example. ``sites`` supplies recorded sites.

        Teacher-forced (default): a component that reads a site reads the recorded one. Free
        (``free=True``): it reads the theory's own prediction of that site, computed first from
        the input alone; only the declared ``inputs`` (and an autoencoder's own site, whose
        codes are paid for) are read from ``sites``."""
        sites = dict(sites or {})
        self._check_batch(inputs, sites)
        autoencoded = self._autoencoded()
        needed = ([*self.theory.inputs, *autoencoded] if free else
                  sorted(set().union(*(self.theory.site_reads(s) for s in self.sites)) | set(autoencoded)))
        missing = [s for s in needed if s not in sites]
        if missing:
            why = ("its inputs, and sites its autoencoders encode" if free else
                   "read teacher-forced; predict(..., free=True) reads only its inputs and the sites its autoencoders encode")
            raise FitError(f"theory '{self.theory.name}' needs the recorded site(s) {', '.join(missing)} ({why}): "
                           f"pass them as predict(inputs, sites={{...}})")
        if not free:
            return self.predict_given(self.given(inputs, sites), len(inputs))
        batch = self.run_free(self.free_batch(inputs, sites), len(inputs))
        return {s: batch[s] for s in self.sites}

    def _check_batch(self, inputs, sites: Mapping) -> None:
        """Inputs and recorded sites shaped (and typed) as the fit's, or a FitError naming what
        was expected and what was found."""
        problems = []
        fitted_on = self.fit_info.get("data", {}).get("inputs")
        found = np.asarray(inputs)
        if fitted_on is not None:
            shape, dtype = tuple(fitted_on["shape"]), np.dtype(fitted_on["dtype"])
            if found.ndim != len(shape) + 1 or found.shape[1:] != shape:
                problems.append(f"inputs of shape [N, {', '.join(map(str, shape))}], found {list(found.shape)}")
            elif np.issubdtype(dtype, np.integer) != np.issubdtype(found.dtype, np.integer):
                problems.append(f"inputs of {'integer (token ids)' if np.issubdtype(dtype, np.integer) else 'float'} "
                                f"dtype like {dtype}, found {found.dtype}")
        for name, values in sites.items():
            if name not in self.plan.site_shapes:
                continue  # a site it does not name: not read
            shape, got = tuple(self.plan.site_shapes[name]), np.shape(values)
            n = len(found) if found.ndim and not problems else "N"
            if got[1:] != shape or (n != "N" and got and got[0] != n):
                problems.append(f"site '{name}' of shape [{n}, {', '.join(map(str, shape))}], found {list(got)}")
        if problems:
            raise FitError(f"theory '{self.theory.name}' predicts from what it was fitted on: expected "
                           + "; expected ".join(problems))

    def given(self, inputs: np.ndarray, sites: Mapping[str, np.ndarray]) -> dict[str, dict]:
        """What each site's predictors are given teacher-forced on a batch (``fixed``). It does
        not depend on the parameters: models of one plan (a theory quantized at many steps) can
        share it (``predict_given``)."""
        batch = {"inputs": np.asarray(inputs), **sites}
        return {site: self.fixed(batch, site) for site in self.sites}

    def predict_given(self, given: Mapping[str, dict], n: int) -> dict[str, np.ndarray]:
        """Teacher-forced predictions of ``n`` examples from what ``given`` says their sites' predictors read."""
        return {site: self._predict_fixed(given[site], site, n) for site in self.sites}

    def run_free(self, batch: dict, n: int, *, until: str | None = None, adjust=None, after=None) -> dict:
        """Sites in dependency order (up to ``until``), each prediction handed on in ``batch`` as
        the data later sites read. ``adjust(site, fixed)`` may rewrite what a site's predictors
        are given; ``after(site, prediction)`` what is handed on (an intervention)."""
        for site in self.theory.site_order()[0]:
            if site == until:
                break
            prediction = self._predict_site(batch, site, n, adjust)
            batch[site] = after(site, prediction) if after else prediction
        return batch

    def free_batch(self, inputs: np.ndarray, sites: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What a free run starts from: the input, the declared inputs, and the recorded sites its
        autoencoders encode (``SITE/recorded``)."""
        return {"inputs": np.asarray(inputs), **{s: sites[s] for s in self.theory.inputs},
                **{f"{s}/recorded": sites[s] for s in self._autoencoded()}}

    def _autoencoded(self) -> list[str]:
        """Sites an autoencoder (a kind that may read its own site) encodes: recorded in both modes."""
        from .kinds import kind_of

        return sorted({c.predicts for c in self.plan.theory.components.values()
                       if kind_of(c).may_read_its_site and c.predicts in c.reads()})

    def _predict_site(self, batch: Mapping[str, np.ndarray], site: str, n: int, adjust=None) -> np.ndarray:
        fixed = self.fixed(batch, site)
        if adjust is not None:
            adjust(site, fixed)
        return self._predict_fixed(fixed, site, n)

    def _predict_fixed(self, fixed: Mapping, site: str, n: int) -> np.ndarray:
        shape = self.plan.site_shapes[site]
        rows = n * (shape[0] if len(shape) == 2 else 1)
        pred = predict_site(self.plan, self.params, site, fixed, jnp.asarray(self.means[site]), rows)
        return np.asarray(pred).reshape(n, *shape)

    def fixed(self, batch: Mapping[str, np.ndarray], site: str) -> dict:
        """What ``site``'s predictors are given on ``batch`` (``fixed_inputs``), as jax arrays."""
        return {k: jnp.asarray(v) for k, v in fixed_inputs(self.plan, batch, site).items()}

    # --- the artifact directory -------------------------------------------------------------

    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = self.theory.target  # a relative path, as located: the run's theory names it from its own directory
        located = dataclasses.replace(self.theory, target=TargetRef(target.scheme, target.located))
        write_atomically(directory / "theory.yaml", located.to_yaml())
        tensors = _flatten(self.params) | {f"__mean__/{s}": np.asarray(m, np.float32) for s, m in self.means.items()}
        with replacing(directory / "params.safetensors") as tmp:
            save_file(tensors, str(tmp),
                      metadata={"format": str(ARTIFACT_FORMAT),
                                "site_shapes": json.dumps({s: list(v) for s, v in self.plan.site_shapes.items()}),
                                "vocab_size": json.dumps(self.vocab_size), "fit": json.dumps(self.fit_info)})
        _artifact.record(directory, *ARTIFACT_FILES)
        return directory

    @classmethod
    def load(cls, directory, *, trust_code: bool = False) -> "FittedTheory":
        """``trust_code``: a theory with ``kind: module:attr`` components may import their modules."""
        directory = Path(directory)
        _artifact.verify(directory, ARTIFACT_FILES)  # nothing unverified is read
        try:
            theory = parse_theory((directory / "theory.yaml").read_text(), path=str(directory / "theory.yaml"),
                                  trust_code=trust_code)
            from safetensors import safe_open
            with safe_open(str(directory / "params.safetensors"), "numpy") as f:
                meta = f.metadata()
            tensors = load_file(str(directory / "params.safetensors"))
            if meta.get("format") != str(ARTIFACT_FORMAT):
                raise FitError(f"{directory}: a fitted theory of format {meta.get('format', 1)}, expected format "
                               f"{ARTIFACT_FORMAT}; fit it again (theorycraft infer)")
            shapes = {s: tuple(v) for s, v in json.loads(meta["site_shapes"]).items()}
            vocab = json.loads(meta["vocab_size"])
            fit_info = json.loads(meta["fit"])
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise FitError(f"{directory}: not a fitted theory directory ({exc}); run theorycraft infer") from None
        means = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("__mean__/")}
        params = _unflatten({k: v for k, v in tensors.items() if not k.startswith("__mean__/")})
        return cls(theory, make_plan(theory, shapes, vocab), params, means, vocab, fit_info)
