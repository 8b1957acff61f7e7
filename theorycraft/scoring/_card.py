"""The scorecard: typed, frozen records of every score of one fitted theory, written as
``scorecard.json`` with a format version. Definitions: docs/scores.md."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from theorycraft import _artifact
from theorycraft.errors import ArtifactError

SCORECARD_FORMAT = 3  # 3: free-running fidelity beside teacher-forced; bits of declared inputs


@dataclass(frozen=True)
class SiteScore:
    """R² of one site per split (SST around the train mean) and the examples it was computed on:
    teacher-forced (every site a component reads is the recorded one), and free-running (the
    theory's own prediction of it, computed from the input and its declared inputs alone)."""

    r2_train: float
    r2_validation: float
    r2_test: float
    n_train: int
    n_validation: int
    n_test: int
    r2_validation_free: float
    r2_test_free: float


@dataclass(frozen=True)
class SizeScore:
    """What the theory costs to state: free parameters, and bits (spec + parameters at the chosen
    quantization + the test examples' latent codes); bits are None until measured (``score``)."""

    params: int
    bits: Optional[int] = None
    bits_spec: Optional[int] = None
    bits_params: Optional[int] = None
    bits_latents: Optional[int] = None
    bits_inputs: Optional[int] = None  # the declared inputs' test values, coded around their train mean
    quantization: Optional[float] = None  # step relative to each tensor's RMS, chosen on validation (None: float32)
    coverage_quantized: Optional[float] = None  # test coverage with the parameters as sent


@dataclass(frozen=True)
class MDLScore:
    """The test activations sent two ways: theory + residual against mean only + residual."""

    bits_theory: int
    bits_residual: int
    bits_total: int
    bits_baseline: int
    compression: float
    n_examples: int
    prequential_bits: Optional[int] = None
    prequential_baseline_bits: Optional[int] = None
    prequential_compression: Optional[float] = None
    prequential_blocks: Optional[int] = None


@dataclass(frozen=True)
class SpliceScore:
    """The target run with one site replaced by the theory's prediction."""

    loss_clean: float
    loss_spliced: float
    loss_mean_ablated: float
    loss_recovered: Optional[float]
    kl: Optional[float]
    top1_agreement: Optional[float]
    n: int


@dataclass(frozen=True)
class CounterfactualScore:
    """The theory under the standard interventions (resample each predicted site; interchange
    its last position), against the network under the same ones: R² over the sites each moves,
    and the KL of outputs with the theory spliced in (None where not defined)."""

    r2: Optional[float]
    kl: Optional[float]
    interventions: tuple[str, ...]
    n: int
    skipped: tuple[str, ...] = ()  # interventions the theory cannot express (e.g. on a predictor another component reads)


@dataclass(frozen=True)
class ShiftScore:
    """Coverage on a shifted distribution (``score --shift NAME``): the test examples of a capture
    of the theory's sites on that shift that the fit never saw, SST around the theory's own train
    means (from its in-distribution fit), teacher-forced and free-running."""

    coverage: float
    coverage_free: float
    n: int  # the examples scored
    r2: Mapping[str, float] = field(default_factory=dict)  # covered site -> R², teacher-forced


@dataclass(frozen=True)
class Scorecard:
    """Every score of one fitted theory. ``covered``: the sites coverage and MDL are over (a site
    the theory does not predict counts at its train mean); ``inputs``: recorded sites it reads."""

    theory: str
    target: str
    covered: tuple[str, ...]
    inputs: tuple[str, ...]
    sites: Mapping[str, SiteScore]
    coverage: float  # test, teacher-forced
    coverage_validation: float
    coverage_free: float  # test, free-running: the theory from the input (and its declared inputs) alone
    coverage_validation_free: float
    size: SizeScore
    mdl: Optional[MDLScore] = None
    splice: Mapping[str, SpliceScore] = field(default_factory=dict)
    fit: Mapping = field(default_factory=dict)  # how it was fitted (the engine's record)
    counterfactual: Optional[CounterfactualScore] = None  # under standard interventions (a runnable target)
    format: int = SCORECARD_FORMAT
    shifted: Mapping[str, ShiftScore] = field(default_factory=dict)  # shift name -> coverage there

    def replace(self, **changes) -> "Scorecard":
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        given = f"; given {', '.join(self.inputs)}" if self.inputs else ""
        lines = [f"Scorecard({self.theory!r} on {self.target}; covered {', '.join(self.covered)}{given})",
                 f"  coverage (test): {self.coverage:.4f} teacher-forced, {self.coverage_free:.4f} free-running"]
        width = max(map(len, self.sites), default=0)
        lines += [f"  {site:<{width}}  R² test {s.r2_test:.4f} (free {s.r2_test_free:.4f}), {s.n_test} test examples"
                  for site, s in self.sites.items()]
        size = f"  size {self.size.params:,} params" + ("" if self.size.bits is None else f", {self.size.bits:,} bits")
        lines.append(size + ("" if self.mdl is None else f"; MDL compression {self.mdl.compression:.3f}"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return scorecard_html(self)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "Scorecard":
        if data.get("format") != SCORECARD_FORMAT:
            raise ValueError(f"expected scorecard format {SCORECARD_FORMAT}, found {data.get('format', 1)}")
        mdl = data.get("mdl")
        return cls(data["theory"], data["target"], tuple(data["covered"]), tuple(data["inputs"]),
                   {s: SiteScore(**v) for s, v in data["sites"].items()}, data["coverage"],
                   data["coverage_validation"], data["coverage_free"], data["coverage_validation_free"],
                   SizeScore(**data["size"]), MDLScore(**mdl) if mdl else None,
                   {s: SpliceScore(**v) for s, v in data.get("splice", {}).items()}, data.get("fit", {}),
                   CounterfactualScore(**{**cf, "interventions": tuple(cf["interventions"]),
                                          "skipped": tuple(cf.get("skipped", ()))})
                   if (cf := data.get("counterfactual")) else None,
                   shifted={k: ShiftScore(**v) for k, v in data.get("shifted", {}).items()})

    def save(self, directory) -> Path:
        """Write ``scorecard.json`` atomically (a temporary file, then a rename)."""
        path = Path(directory) / "scorecard.json"
        tmp = path.with_name(".scorecard.tmp.json")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)
        _artifact.record(path.parent, path.name)
        return path

    @classmethod
    def load(cls, directory) -> "Scorecard":
        """The scorecard of an artifact directory, its checksum verified first."""
        path = Path(directory) / "scorecard.json"
        _artifact.verify(directory, [path.name])
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: not a readable scorecard ({exc}); "
                                f"{_artifact.FIXES[path.name].format(run=directory)}") from None


def scorecard_html(card: Scorecard) -> str:
    """The scorecard as notebook tables: fidelity per site (teacher-forced and free-running on
    each split), then what was measured of size, MDL, splice, counterfactual and shift."""
    from theorycraft._html import code, esc, table

    given = f"; given {', '.join(card.inputs)}" if card.inputs else ""
    parts = [f"<p><b>Scorecard</b> of {code(card.theory)} on {code(card.target)}: test coverage "
             f"<b>{card.coverage:.4f}</b> teacher-forced, <b>{card.coverage_free:.4f}</b> free-running "
             f"(over {esc(', '.join(card.covered))}{esc(given)})</p>",
             table(["site", "R² train", "R² validation", "R² test", "free, validation", "free, test",
                    "n train", "n validation", "n test"],
                   [[site, s.r2_train, s.r2_validation, s.r2_test, s.r2_validation_free, s.r2_test_free, s.n_train,
                     s.n_validation, s.n_test] for site, s in card.sites.items()],
                   "R² per site: teacher-forced (recorded sites read) and free-running (from the input alone)")]
    size, mdl = card.size, card.mdl
    rows = [["parameters", size.params]]
    if size.bits is not None:
        rows += [["bits", size.bits], ["bits: spec", size.bits_spec], ["bits: parameters", size.bits_params],
                 ["bits: latent codes", size.bits_latents], ["bits: declared inputs", size.bits_inputs],
                 ["quantization step (× RMS)", size.quantization], ["coverage, quantized", size.coverage_quantized]]
    if mdl is not None:
        rows += [[f"MDL: theory + residual ({mdl.n_examples} test examples)", mdl.bits_total],
                 ["MDL: mean only", mdl.bits_baseline], ["MDL: compression", mdl.compression]]
        if mdl.prequential_compression is not None:
            rows.append(["prequential compression", mdl.prequential_compression])
    if card.counterfactual is not None:
        cf = card.counterfactual
        rows += [[f"counterfactual R² ({len(cf.interventions)} interventions)", cf.r2], ["counterfactual KL", cf.kl]]
    rows += [[f"shifted coverage ({name}, {s.n} examples): teacher-forced / free", f"{s.coverage:.4f} / {s.coverage_free:.4f}"]
             for name, s in card.shifted.items()]
    parts.append(table(["measure", "value"], rows, "size and fit" if size.bits is None else "size, MDL, counterfactual"))
    if card.splice:
        parts.append(table(["site", "KL", "top-1 agreement", "loss recovered", "loss clean", "loss spliced",
                            "loss mean-ablated", "n"],
                           [[site, s.kl, s.top1_agreement, s.loss_recovered, s.loss_clean, s.loss_spliced,
                             s.loss_mean_ablated, s.n] for site, s in card.splice.items()],
                           "splice: the target run with the site replaced by the free-running prediction"))
    return "\n".join(parts)
