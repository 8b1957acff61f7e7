"""The scorecard: typed, frozen records of every score of one fitted theory, written as
``scorecard.json`` with a format version. Definitions: docs/scores.md."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from theorycraft import _artifact
from theorycraft.files import write_atomically
from theorycraft.errors import ArtifactError

from ._intervals import SMALL_TEST

SCORECARD_FORMAT = 4  # 4: coverage over every named site (declared inputs unexplained); intervals
READABLE_FORMATS = (3, 4)  # 3: coverage over the covered sites only (the figure given its inputs)
Interval = Optional[tuple[float, float]]  # 95% bootstrap interval over test examples


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
    r2_test_interval: Interval = None
    r2_test_free_interval: Interval = None


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


SMALL_GAP = 0.25  # a splice's clean-to-ablated loss gap below this share of the clean loss is flagged


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
    loss_recovered_interval: Interval = None
    kl_interval: Interval = None
    top1_agreement_interval: Interval = None
    exact_match_clean: Optional[float] = None  # examples whose whole answer is right (a task with answers)
    exact_match_spliced: Optional[float] = None
    answer_accuracy_clean: Optional[tuple[float, ...]] = None  # per row of the answer (a sum's digit)
    answer_accuracy_spliced: Optional[tuple[float, ...]] = None

    @property
    def gap(self) -> float:
        """The denominator of "loss recovered": how much mean ablation raises the loss."""
        return self.loss_mean_ablated - self.loss_clean

    @property
    def small_gap(self) -> bool:
        """Mean ablation raises the loss by less than ``SMALL_GAP`` of the clean loss: "loss
        recovered" divides by a small number, and top-1 agreement and KL say more."""
        return self.gap < SMALL_GAP * max(abs(self.loss_clean), 1e-3)


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
    splice: Mapping[str, SpliceScore] = field(default_factory=dict)  # the theory spliced in there (a runnable target)


def _splice_score(data: Mapping) -> SpliceScore:
    tuples = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}  # JSON's lists, as they were
    return SpliceScore(**{**data, **tuples})


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
    unexplained: tuple[str, ...] = ()  # declared inputs the headline counts at R² 0 (all but the network's own input)
    coverage_given: Optional[float] = None  # test, teacher-forced, over the covered sites alone: given its inputs
    coverage_free_given: Optional[float] = None
    coverage_interval: Interval = None
    coverage_free_interval: Interval = None

    def replace(self, **changes) -> "Scorecard":
        return dataclasses.replace(self, **changes)

    @property
    def n_test(self) -> int:
        return max((s.n_test for s in self.sites.values()), default=0)

    def worst_site(self, free: bool = False) -> Optional[tuple[str, float]]:
        """The covered site of lowest test R² (teacher-forced, or ``free``-running), with it."""
        scores = {site: s.r2_test_free if free else s.r2_test for site, s in self.sites.items()}
        return min(scores.items(), key=lambda kv: kv[1]) if scores else None

    def below_mean(self) -> list[str]:
        """Covered sites predicted worse than their train mean (test R² < 0, either way of running)."""
        return [site for site, s in self.sites.items() if min(s.r2_test, s.r2_test_free) < 0]

    def warnings(self) -> list[str]:
        """What the headline figures do not show on their own, one sentence each."""
        out = []
        if self.format < 4 and self.inputs:
            out.append(f"written by an older theorycraft (format {self.format}): its coverage leaves the declared "
                       f"inputs ({', '.join(self.inputs)}) out; theorycraft score RUN_DIR counts them as unexplained")
        for site in self.below_mean():
            s = self.sites[site]
            out.append(f"site {site} is predicted worse than its mean (test R² {s.r2_test:.4g}, free {s.r2_test_free:.4g})")
        if 0 < self.n_test < SMALL_TEST:
            out.append(f"only {self.n_test} test examples (fewer than {SMALL_TEST}): every held-out figure is uncertain; "
                       f"see its interval, or capture more (--n)")
        for site, s in self.splice.items():
            if s.small_gap:
                what = ("loss recovered divides by a small gap" if s.loss_recovered is not None else
                        "there is no loss to recover (left out)")
                out.append(f"splice {site}: mean ablation moves the loss by only {s.gap:.3g} ({s.loss_clean:.4g} -> "
                           f"{s.loss_mean_ablated:.4g}): {what}; read top-1 agreement and KL")
        return out

    def headline(self) -> str:
        """Test coverage as every front shows it: over every named site (declared inputs at R² 0),
        with its interval, the figure given the inputs, and the worst site beside it."""
        parts = [f"coverage {self.coverage:.4f} teacher-forced{interval_text(self.coverage_interval)}, "
                 f"{self.coverage_free:.4f} free-running{interval_text(self.coverage_free_interval)}"]
        if self.unexplained and self.coverage_given is not None:
            parts.append(f"given {', '.join(self.unexplained)}: {self.coverage_given:.4f} / "
                         f"{self.coverage_free_given:.4f} (the inputs count at R² 0 in the headline)")
        worst = self.worst_site(free=True)
        if worst is not None and len(self.sites) > 1:
            parts.append(f"worst site {worst[0]} (free R² {worst[1]:.4f})")
        return "; ".join(parts)

    def __repr__(self) -> str:
        given = f"; given {', '.join(self.inputs)}" if self.inputs else ""
        lines = [f"Scorecard({self.theory!r} on {self.target}; covered {', '.join(self.covered)}{given})",
                 f"  test {self.headline()}"]
        width = max(map(len, self.sites), default=0)
        lines += [f"  {site:<{width}}  R² test {s.r2_test:.4f}{interval_text(s.r2_test_interval)} (free "
                  f"{s.r2_test_free:.4f}), {s.n_test} test examples" for site, s in self.sites.items()]
        size = f"  size {self.size.params:,} params" + ("" if self.size.bits is None else f", {self.size.bits:,} bits")
        lines.append(size + ("" if self.mdl is None else f"; MDL compression {self.mdl.compression:.3f}"))
        lines += [f"  splice {site}: top-1 agreement {splice_figure(s.top1_agreement, s.top1_agreement_interval)}, KL "
                  f"{splice_figure(s.kl, s.kl_interval)}, loss recovered "
                  f"{splice_figure(s.loss_recovered, s.loss_recovered_interval)}" for site, s in self.splice.items()]
        lines += [f"  warning: {w}" for w in self.warnings()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return scorecard_html(self)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "Scorecard":
        """A scorecard from its JSON (``to_json``); format 3 (before declared inputs counted as
        unexplained) still reads, its figures as they were written."""
        if not isinstance(data, Mapping):
            raise ArtifactError(f"expected a scorecard as a JSON object (a mapping, as Scorecard.to_json() writes "
                                f"it), found {type(data).__name__} {str(data)[:60]!r}")
        if data.get("format") not in READABLE_FORMATS:
            raise ArtifactError(f"expected scorecard format {' or '.join(map(str, READABLE_FORMATS))}, found "
                                f"{data.get('format', 1)}")
        missing = [k for k in ("theory", "target", "covered", "inputs", "sites", "coverage", "coverage_validation",
                               "coverage_free", "coverage_validation_free", "size") if k not in data]
        if missing:
            raise ArtifactError(f"expected a scorecard with key(s) {', '.join(missing)}, found keys "
                                f"{', '.join(map(str, data)) or 'none'}")
        mdl = data.get("mdl")
        given = {k: data.get(k) for k in ("coverage_given", "coverage_free_given")}
        if data["format"] == 3:  # its coverage was over the covered sites: the figure given its inputs
            given = {"coverage_given": data["coverage"], "coverage_free_given": data["coverage_free"]}
        return cls(data["theory"], data["target"], tuple(data["covered"]), tuple(data["inputs"]),
                   {s: SiteScore(**_intervals(v)) for s, v in data["sites"].items()}, data["coverage"],
                   data["coverage_validation"], data["coverage_free"], data["coverage_validation_free"],
                   SizeScore(**data["size"]), MDLScore(**mdl) if mdl else None,
                   {s: _splice_score(v) for s, v in data.get("splice", {}).items()}, data.get("fit", {}),
                   CounterfactualScore(**{**cf, "interventions": tuple(cf["interventions"]),
                                          "skipped": tuple(cf.get("skipped", ()))})
                   if (cf := data.get("counterfactual")) else None,
                   format=data["format"],
                   shifted={k: ShiftScore(**{**v, "splice": {s: _splice_score(x) for s, x in v.get("splice", {}).items()}})
                            for k, v in data.get("shifted", {}).items()},
                   unexplained=tuple(data.get("unexplained", ())), **given,
                   coverage_interval=_pair(data.get("coverage_interval")),
                   coverage_free_interval=_pair(data.get("coverage_free_interval")))

    def save(self, directory) -> Path:
        """Write ``scorecard.json`` atomically (a temporary file, then a rename)."""
        path = Path(directory) / "scorecard.json"
        write_atomically(path, json.dumps(self.to_json(), indent=1) + "\n")
        _artifact.record(path.parent, path.name)
        return path

    @classmethod
    def load(cls, directory) -> "Scorecard":
        """The scorecard of an artifact directory, its checksum verified first."""
        path = Path(directory) / "scorecard.json"
        _artifact.verify(directory, [path.name])
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, ArtifactError) as exc:
            raise ArtifactError(f"{path}: not a readable scorecard ({exc}); "
                                f"{_artifact.FIXES[path.name].format(run=directory)}") from None


def _pair(value) -> Interval:
    return None if value is None else (float(value[0]), float(value[1]))


def _intervals(record: Mapping) -> dict:
    """A record's fields with its ``*_interval`` lists (JSON) back as pairs."""
    return {k: _pair(v) if k.endswith("_interval") else v for k, v in record.items()}


def interval_text(interval: Interval) -> str:
    """`` [low, high]`` after a figure, or nothing where it has no interval."""
    return "" if interval is None else f" [{interval[0]:.4f}, {interval[1]:.4f}]"


def splice_figure(value: Optional[float], interval: Interval) -> str:
    """A splice figure with its interval, as text ("–" where not defined)."""
    return "–" if value is None else f"{value:.4g}{interval_text(interval)}"


def scorecard_html(card: Scorecard) -> str:
    """The scorecard as notebook tables: fidelity per site (teacher-forced and free-running on
    each split), then what was measured of size, MDL, splice, counterfactual and shift."""
    from theorycraft._html import code, esc, table

    given = f"; given {', '.join(card.inputs)}" if card.inputs else ""
    flagged = set(card.below_mean())
    parts = [f"<p><b>Scorecard</b> of {code(card.theory)} on {code(card.target)} (over "
             f"{esc(', '.join(card.covered))}{esc(given)}): test {esc(card.headline())}</p>",
             table(["site", "R² train", "R² validation", "R² test", "95% interval", "free, validation", "free, test",
                    "free, 95% interval", "n train", "n validation", "n test"],
                   [[site + (" (worse than its mean)" if site in flagged else ""), s.r2_train, s.r2_validation,
                     s.r2_test, interval_text(s.r2_test_interval).strip() or "–", s.r2_validation_free, s.r2_test_free,
                     interval_text(s.r2_test_free_interval).strip() or "–", s.n_train, s.n_validation, s.n_test]
                    for site, s in card.sites.items()],
                   "R² per site: teacher-forced (recorded sites read) and free-running (from the input alone); "
                   "intervals: 95% bootstrap over the test examples")]
    parts += [f'<p class="note">warning: {esc(w)}</p>' for w in card.warnings()]
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
        parts.append(table(["site", "top-1 agreement", "KL", "loss recovered", "loss clean", "loss spliced",
                            "loss mean-ablated", "n"],
                           [[site, splice_figure(s.top1_agreement, s.top1_agreement_interval),
                             splice_figure(s.kl, s.kl_interval),
                             splice_figure(s.loss_recovered, s.loss_recovered_interval)
                             + (" (small gap)" if s.small_gap else ""), s.loss_clean, s.loss_spliced,
                             s.loss_mean_ablated, s.n] for site, s in card.splice.items()],
                           "splice: the target run with the site replaced by the free-running prediction"))
    return "\n".join(parts)
