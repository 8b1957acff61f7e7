"""The theory language's structure: one pydantic model per block and per component kind.

Validation of *structure* (keys, types, ranges) lives here; references between names, cycles
and includes are checked in ``_parse``. Everything is frozen: a parsed theory never changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PlainValidator, StrictBool,
                      StrictInt, StrictStr, WithJsonSchema)
from pydantic_core import PydanticCustomError

from ._diagnostics import describe, did_you_mean
from ._expr import ExprError, Expr, parse_expr

_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
Name = Annotated[StrictStr, Field(pattern=_NAME_PATTERN)]
TheoryName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0, strict=True)]
Doc = Optional[StrictStr]


def _as_list(value: Any) -> Any:
    """Accept ``x`` as shorthand for ``[x]``; the canonical form is always a list."""
    return [value] if not isinstance(value, (list, tuple)) else value


def _list_of(item: Any, *, min_length: int = 1) -> Any:
    return Annotated[tuple[item, ...], Field(min_length=min_length),
                     BeforeValidator(_as_list, json_schema_input_type=Union[item, list[item]])]


def _expression(value: Any) -> Expr:
    if isinstance(value, Expr):
        return value
    try:
        return parse_expr(value)
    except ExprError as exc:
        raise PydanticCustomError("expression", "{message}", {"message": exc.message, "offset": exc.offset})


Expression = Annotated[Expr, PlainValidator(_expression), PlainSerializer(str, return_type=str),
                       WithJsonSchema({"type": ["string", "number", "boolean"],
                                       "description": "an expression of the safe expression language"})]


# --- typed names: parsed once, never split again downstream ------------------------------------

_HOOK = re.compile(r"^(?P<module>[A-Za-z_][\w]*(?:\.[\w]+)*)(?::(?P<io>input|output))?$")


@dataclass(frozen=True)
class HookPoint:
    """A place in the target: a module path (``blocks.0.mlp.hook_post``) and, where a module's
    input and output differ, which one (``encoder.layer.3.output:input``)."""

    module: tuple[str, ...]
    io: Optional[Literal["input", "output"]] = None

    @classmethod
    def parse(cls, text: str) -> "HookPoint":
        match = _HOOK.match(text)
        if match is None:
            raise ValueError(text)
        return cls(tuple(match["module"].split(".")), match["io"])

    def __str__(self) -> str:
        return ".".join(self.module) + (f":{self.io}" if self.io else "")


def _hook(value: Any) -> HookPoint:
    if isinstance(value, HookPoint):
        return value
    try:
        return HookPoint.parse(value) if isinstance(value, str) else HookPoint.parse("")
    except ValueError:
        raise PydanticCustomError("hook", "{message}", {"message": (
            "expected a hook point like 'blocks.0.mlp.hook_post' or 'encoder.layer.3.output:input', "
            f"found {describe(value)}")})


Hook = Annotated[HookPoint, PlainValidator(_hook), PlainSerializer(str, return_type=str),
                 WithJsonSchema({"type": "string", "pattern": _HOOK.pattern})]

TARGET_SCHEMES = ("builtin", "hf", "activations", "torch")


@dataclass(frozen=True)
class TargetRef:
    """What the theory explains: ``builtin:NAME``, ``hf:PATH``, ``activations:DIR`` or
    ``torch:module.path:factory`` (the last runs user code, so it needs explicit trust)."""

    scheme: Literal["builtin", "hf", "activations", "torch"]
    address: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.address}"


def _target(value: Any) -> TargetRef:
    if isinstance(value, TargetRef):
        return value
    scheme, _, address = value.partition(":") if isinstance(value, str) else ("", "", "")
    if scheme not in TARGET_SCHEMES or not address:
        hint = did_you_mean(scheme, TARGET_SCHEMES) if address else ""
        raise PydanticCustomError("target", "{message}", {"message": (
            "expected a target 'SCHEME:ADDRESS' with SCHEME one of builtin, hf, activations, torch, "
            f"found {describe(value)}{hint}")})
    return TargetRef(scheme, address)


Target = Annotated[TargetRef, PlainValidator(_target), PlainSerializer(str, return_type=str),
                   WithJsonSchema({"type": "string", "pattern": r"^(builtin|hf|activations|torch):.+$"})]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- sites --------------------------------------------------------------------------------------

def _site_shorthand(value: Any) -> Any:
    return {"hook": value} if isinstance(value, str) else value


class Site(_Frozen):
    """A named activation of the target. ``position`` keeps one position of each sequence
    (negative counts from the end); without it every position is predicted."""

    hook: Hook
    position: Optional[StrictInt] = None
    doc: Doc = None


SiteEntry = Annotated[Site, BeforeValidator(_site_shorthand, json_schema_input_type=Union[str, Site])]


# --- component kinds ----------------------------------------------------------------------------

Refs = _list_of(Name)


class _Component(_Frozen):
    predicts: Optional[Name] = Field(None, description="the site this component's output adds to")
    doc: Doc = None

    def reads(self) -> tuple[str, ...]:
        """Names of components, sites or variables whose *features* this component takes."""
        return getattr(self, "from_", ())

    def expressions(self) -> tuple[tuple[tuple, Expr], ...]:
        """(key path inside the component, expression) for every expression it holds."""
        return ()


class Lookup(_Component):
    """A learned table: one row per value of the variables in ``of`` (jointly). A key that is not
    an integer from 0 to its size - 1 (``token[i - 1]`` reads -1 at the first position) is an
    error when the theory is fitted, unless ``outside: row`` gives the table one more row, shared
    by every row of data with a key outside its size."""

    kind: Literal["lookup"]
    of: _list_of(Expression)
    size: Optional[_list_of(PositiveInt)] = Field(None, description="values per variable (default: from the target's vocabulary)")
    width: Optional[PositiveInt] = Field(None, description="output features (default: the predicted site's width)")
    outside: Literal["error", "row"] = Field("error", description="a key outside its size: an error, or one "
                                                                   "extra row shared by all such keys")

    def expressions(self):
        return tuple((("of", k), e) for k, e in enumerate(self.of))


class Linear(_Component):
    """An affine map of the features it reads, optionally low-rank or L1-sparse, optionally
    followed by a nonlinearity (a single layer: ``ReLU(W x + b)``)."""

    kind: Literal["linear"]
    from_: Refs = Field(alias="from")
    rank: Optional[PositiveInt] = None
    l1: NonNegativeFloat = 0.0
    bias: StrictBool = True
    activation: Optional[Literal["relu", "gelu", "tanh"]] = None
    width: Optional[PositiveInt] = None


class Fourier(_Component):
    """cos and sin of 2*pi*f*x/modulus for each expression x in ``of`` and each frequency f."""

    kind: Literal["fourier"]
    of: _list_of(Expression)
    modulus: Annotated[StrictInt, Field(ge=2)]
    frequencies: _list_of(PositiveInt)

    def expressions(self):
        return tuple((("of", k), e) for k, e in enumerate(self.of))


class Rule(_Component):
    """Indicator features: 1 where each boolean expression in ``when`` holds, else 0."""

    kind: Literal["rule"]
    when: _list_of(Expression)

    def expressions(self):
        return tuple((("when", k), e) for k, e in enumerate(self.when))


class Product(_Component):
    """Products of features: the outer product of two or more components, or all pairwise
    products (with squares) of one component's features."""

    kind: Literal["product"]
    of: Refs

    def reads(self):
        return self.of


class Attention(_Component):
    """An attention pattern: each query concentrates its attention on the keys where ``rule``
    holds, on top of a learned positional prior; predicts a pattern site ``[N, T, T]``."""

    kind: Literal["attention"]
    rule: Expression = Field(description="boolean over query position i and key position j")
    head: Optional[Annotated[StrictInt, Field(ge=0)]] = Field(None, description="which head of the pattern site")
    causal: StrictBool = True

    def expressions(self):
        return ((("rule",), self.rule),)


class Dictionary(_Component):
    """A sparse code (SAE-like): ``width`` latents, at most ``k`` active per example or an L1
    penalty; each example's active latents are paid for in bits."""

    kind: Literal["dictionary"]
    from_: Refs = Field(alias="from")
    width: PositiveInt
    k: Optional[PositiveInt] = None
    l1: Optional[NonNegativeFloat] = None


class MLP(_Component):
    """An honest black box: a multilayer perceptron, paid for at full price."""

    kind: Literal["mlp"]
    from_: Refs = Field(alias="from")
    hidden: _list_of(PositiveInt)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    width: Optional[PositiveInt] = None


KINDS: dict[str, type[_Component]] = {cls.model_fields["kind"].annotation.__args__[0]: cls
                                      for cls in (Lookup, Linear, Fourier, Rule, Product, Attention,
                                                  Dictionary, MLP)}
Component = Annotated[Union[tuple(KINDS.values())], Field(discriminator="kind")]


# --- files --------------------------------------------------------------------------------------

class Fragment(_Frozen):
    """A file of shared parts, pulled in by ``include:``."""

    description: Doc = None
    include: _list_of(StrictStr, min_length=0) = ()
    sites: dict[Name, SiteEntry] = {}
    variables: dict[Name, Expression] = {}
    components: dict[Name, Component] = {}


class TheoryFile(Fragment):
    """A theory: a name, a target, and the parts (its own and included)."""

    theory: TheoryName
    target: Target


TOP_LEVEL_KEYS = tuple(TheoryFile.model_fields)
RESERVED_KEYS = {"axioms": "'axioms:' is reserved for claims about interventions and not checked yet"}
