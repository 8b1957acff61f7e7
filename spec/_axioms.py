"""Axioms: claims about what happens under an intervention, checked on the network itself.

An axiom is one **intervention** and one **expectation**::

    commutative:
      input: "token[1] if i == 0 else token[0] if i == 1 else token[i]"   # swap the operands
      invariant: output
      metric: accuracy
      tolerance: 0.01

Interventions: ``input`` (each position's new token, an expression), or one on a place in the
network: ``zero``, ``mean`` (its training mean), ``resample`` (from another held-out example),
``patch`` (from the example the ``from`` expression makes of this one), ``keep`` / ``project_out``
(the directions a theory component's ``subspace`` spans). A place is a theory site or a hook of
the target, optionally indexed like numpy: ``blocks.0.attn.hook_z[:, 1]`` (head 1), ``x[[3, 5]]``.
``theory`` names what stands for it in the theory (a site or components; default: the site).

Expectations: ``invariant`` (a change of at most ``tolerance``), ``changes`` (at least
``at_least``), ``predicted_by_theory`` (the theory, run free under the same intervention, predicts
the intervened network: R² ≥ ``r2``, or its change of ``metric`` within ``within`` of the network's).
Of a site the change is the fraction of its variance moved; of ``output``, the change of
``metric`` (loss, accuracy or kl).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, PlainSerializer, PlainValidator, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from ._diagnostics import describe
from ._model import Doc, Expression, HookPoint, Name, NonNegativeFloat, _Frozen, list_of

OUTPUT = "output"  # the target's final output, judged by its task
INTERVENTIONS = ("input", "zero", "mean", "resample", "patch", "keep", "project_out")
EXPECTATIONS = ("invariant", "changes", "predicted_by_theory")
Index = tuple  # per-example axes: None (all), an int, or a tuple of ints


@dataclass(frozen=True)
class Place:
    """A place in the network: a theory site's name or a hook path, and an index into its
    per-example values (``()``: all of it)."""

    name: str
    index: Index = ()

    def __str__(self) -> str:
        if not self.index:
            return self.name
        parts = [":" if k is None else (f"[{', '.join(map(str, k))}]" if isinstance(k, tuple) else str(k))
                 for k in self.index]
        return f"{self.name}[{', '.join(parts)}]"

    @property
    def numpy_index(self) -> tuple:
        """The index after the example axis, for numpy and torch: ``(slice, …)``."""
        return tuple(slice(None) if k is None else (list(k) if isinstance(k, tuple) else k) for k in self.index)


def _index_entry(text: str) -> Any:
    text = text.strip()
    if text == ":":
        return None
    if text.startswith("[") and text.endswith("]"):
        items = [t.strip() for t in text[1:-1].split(",") if t.strip()]
        if not items:
            raise ValueError("an empty list of indices")
        return tuple(int(t) for t in items)
    return int(text)


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    return parts + [text[start:]]


def parse_place(value: Any) -> Place:
    if isinstance(value, Place):
        return value
    problem = ("expected a site or hook, optionally indexed like numpy ('mlp', 'blocks.0.attn.hook_z[:, 1]', "
               f"'x[[3, 5]]'), found {describe(value)}")
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("place", "{message}", {"message": problem})
    name, bracket, rest = value.strip().partition("[")
    try:
        HookPoint.parse(name.strip())
        if bracket and not rest.endswith("]"):
            raise ValueError(rest)
        index = tuple(_index_entry(e) for e in _split_top(rest[:-1])) if bracket else ()
    except ValueError:
        raise PydanticCustomError("place", "{message}", {"message": problem}) from None
    return Place(name.strip(), index)


PlaceRef = Annotated[Place, PlainValidator(parse_place), PlainSerializer(str, return_type=str),
                     WithJsonSchema({"type": "string", "description": "a site or hook, optionally indexed "
                                                                       "like numpy: 'blocks.0.attn.hook_z[:, 1]'"})]


class Axiom(_Frozen):
    """One claim: an intervention and an expectation (see the module's docstring)."""

    doc: Doc = None
    input: Optional[Expression] = Field(None, description="each position's new token, e.g. swap two operands")
    zero: Optional[PlaceRef] = None
    mean: Optional[PlaceRef] = None
    resample: Optional[PlaceRef] = None
    patch: Optional[PlaceRef] = None
    keep: Optional[PlaceRef] = None
    project_out: Optional[PlaceRef] = None
    from_: Optional[Expression] = Field(None, alias="from", description="patch: the paired example's tokens")
    subspace: Optional[Name] = Field(None, description="keep / project_out: the component whose features span it")
    theory: list_of(Name, min_length=0) = Field((), description="what stands for the place in the theory")
    invariant: Optional[PlaceRef] = None
    changes: Optional[PlaceRef] = None
    predicted_by_theory: Optional[PlaceRef] = None
    metric: Optional[Literal["loss", "accuracy", "kl"]] = None
    tolerance: Optional[NonNegativeFloat] = None
    at_least: Optional[NonNegativeFloat] = None
    r2: Optional[Annotated[float, Field(le=1, strict=False)]] = None
    within: Optional[NonNegativeFloat] = None

    @model_validator(mode="after")
    def _one_claim(self) -> "Axiom":
        for group, noun in ((INTERVENTIONS, "intervention"), (EXPECTATIONS, "expectation")):
            given = [k for k in group if getattr(self, k) is not None]
            if len(given) != 1:
                found = f"found {', '.join(given)}" if given else "found none"
                raise PydanticCustomError("axiom", "{message}", {"message": (
                    f"expected exactly one {noun} ({', '.join(group)}), {found}")})
        for option, owners in (("from_", ("patch",)), ("subspace", ("keep", "project_out"))):
            has = any(getattr(self, o) is not None for o in owners)
            if has != (getattr(self, option) is not None):
                key = "from" if option == "from_" else option
                message = (f"'{'/'.join(owners)}' needs '{key}'" if has else
                           f"'{key}' belongs to {' or '.join(owners)}")
                raise PydanticCustomError("axiom", "{message}", {"message": message})
        expectation = self.expectation
        allowed = {"invariant": {"tolerance", "metric"}, "changes": {"at_least", "metric"},
                   "predicted_by_theory": {"r2", "within", "metric"}}[expectation]
        for option in ("tolerance", "at_least", "r2", "within", "metric"):
            if getattr(self, option) is not None and option not in allowed:
                raise PydanticCustomError("axiom", "{message}", {"message": (
                    f"'{option}' does not go with '{expectation}' (it takes {', '.join(sorted(allowed))})")})
        if self.metric is not None and getattr(self, expectation).name != OUTPUT:
            raise PydanticCustomError("axiom", "{message}", {"message": (
                f"'metric' judges the target's output; '{getattr(self, expectation)}' is a site, whose change "
                f"is the fraction of its variance moved")})
        if self.subspace is not None and self.place.index:
            raise PydanticCustomError("axiom", "{message}", {"message": (
                f"'{self.intervention}' acts on the whole of '{self.place.name}' (its subspace spans all of it); "
                f"remove the index [{str(self.place).split('[', 1)[1]}")})
        if self.observed.name == OUTPUT and self.observed.index:
            raise PydanticCustomError("axiom", "{message}", {"message": (
                "the output is judged whole, by its task's metric; remove the index")})
        if self.r2 is not None and self.metric is not None:
            raise PydanticCustomError("axiom", "{message}", {"message": (
                "'r2' judges the intervened prediction itself, 'metric' its change: give one of them")})
        if self.within is not None and self.metric is None:
            raise PydanticCustomError("axiom", "{message}", {"message": "'within' compares a metric's change: name the 'metric'"})
        return self

    @property
    def intervention(self) -> str:
        return next(k for k in INTERVENTIONS if getattr(self, k) is not None)

    @property
    def expectation(self) -> str:
        return next(k for k in EXPECTATIONS if getattr(self, k) is not None)

    @property
    def place(self) -> Optional[Place]:
        """Where it intervenes (None: on the input)."""
        return None if self.intervention == "input" else getattr(self, self.intervention)

    @property
    def observed(self) -> Place:
        """Where its expectation looks: a site, a hook, or ``output``."""
        return getattr(self, self.expectation)

    def threshold(self) -> float:
        """The expectation's bound, its default where none is written."""
        if self.expectation == "invariant":
            return 0.01 if self.tolerance is None else self.tolerance
        if self.expectation == "changes":
            return 0.1 if self.at_least is None else self.at_least
        if self.metric is not None:
            return 0.2 if self.within is None else self.within  # relative, with a floor: see Effect
        return 0.9 if self.r2 is None else self.r2

    def describe(self) -> str:
        """The claim in one line, e.g. ``resample blocks.0.attn.hook_z[:, 1] -> changes output (accuracy) >= 0.5``."""
        what = (f"input := {self.input.text}" if self.intervention == "input" else
                f"{self.intervention} {self.place}" + (f" from {self.from_.text}" if self.from_ else "")
                + (f" ({self.subspace})" if self.subspace else ""))
        metric = f" ({self.metric})" if self.metric else ""
        bound = {"invariant": f"<= {self.threshold():g}", "changes": f">= {self.threshold():g}",
                 "predicted_by_theory": (f"within {self.threshold():g}" if self.metric else
                                         f"R² >= {self.threshold():g}")}[self.expectation]
        return f"{what} -> {self.expectation} {self.observed}{metric} {bound}"

