"""The theory language's structure: one pydantic model per block (each component kind's model
lives with its kind, in ``theorycraft/inference/kinds/``).

Validation of *structure* (keys, types, ranges) lives here; references between names, cycles
and includes are checked in ``_parse``. Everything is frozen: a parsed theory never changes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PlainValidator,
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


def list_of(item: Any, *, min_length: int = 1) -> Any:
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
        # "X:output" is what "X" names (a module's output): one spelling, so both find the same site
        return cls(tuple(match["module"].split(".")), match["io"] if match["io"] != "output" else None)

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


@dataclass(frozen=True)
class Scheme:
    """A kind of target reference, ``SCHEME:ADDRESS``: what its address is and what it can do.
    The one table of them is ``SCHEMES``; the adapters that load each are in theorycraft.targets."""

    name: str
    address: str  # what follows the colon
    runnable: bool  # a model that runs (splices, axioms, shifts); else a recording that only replays
    runs_code: bool = False  # runs the user's Python: needs explicit trust
    texts: bool = False  # its data can be the user's texts, cut into windows (--text, --data, --seq-len)
    given: bool = False  # an object handed in from Python (target=); its address only names it, nothing loads it

    def __str__(self) -> str:
        return f"{self.name}:{self.address}"


SCHEMES = {s.name: s for s in (Scheme("builtin", "NAME", runnable=True), Scheme("hf", "PATH", runnable=True, texts=True),
                                Scheme("activations", "DIR", runnable=False),
                                Scheme("torch", "module:factory", runnable=True, runs_code=True),
                                Scheme("model", "NAME", runnable=True, given=True))}


def schemes_text(schemes=None, *, bare: bool = False) -> str:
    """'builtin:NAME, hf:PATH, activations:DIR or torch:module:factory' (``bare``: 'builtin:, hf:'); by default
    the schemes a reference can load (not ``model:``, an object given in Python)."""
    names = [f"{s.name}:" if bare else str(s) for s in (schemes or [s for s in SCHEMES.values() if not s.given])]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass(frozen=True)
class TargetRef:
    """What the theory explains: ``builtin:NAME``, ``hf:PATH``, ``activations:DIR``,
    ``torch:module.path:factory`` (runs user code, so it needs explicit trust) or ``model:NAME``
    (a model object handed in from Python as ``target=``; written by a fit of one)."""

    scheme: str  # a name in SCHEMES
    address: str
    base: Optional[str] = field(default=None, compare=False)  # the theory file's directory, for a relative DIR

    def __str__(self) -> str:
        return f"{self.scheme}:{self.address}"

    @property
    def located(self) -> str:
        """The address, a relative path (``activations:DIR``, ``hf:PATH``) read from the theory
        file's directory, like ``include:``."""
        return os.path.normpath(os.path.join(self.base, self.address)) if self.base else self.address

    @property
    def is_path(self) -> bool:
        """Does the address name a file or directory? ``activations:DIR`` always; ``hf:`` when it
        has a path separator or starts with '.' or '~' (a bare word is a model's name: ``hf:minilm``)."""
        if self.scheme == "activations":
            return True
        return self.scheme == "hf" and ("/" in self.address or os.sep in self.address
                                        or self.address.startswith((".", "~")))

    def relative_to(self, theory_file: str) -> "TargetRef":
        """This reference as written in ``theory_file``: every relative path in a theory file is
        read from the file's directory (the one rule for targets, includes and recordings)."""
        address = os.path.expanduser(self.address) if self.is_path else self.address
        if not self.is_path or os.path.isabs(address):
            return TargetRef(self.scheme, address) if address != self.address else self
        return TargetRef(self.scheme, address, os.path.dirname(os.path.abspath(theory_file)))


def _target(value: Any) -> TargetRef:
    if isinstance(value, TargetRef):
        return value
    scheme, _, address = value.partition(":") if isinstance(value, str) else ("", "", "")
    if scheme not in SCHEMES or not address:
        hint = did_you_mean(scheme, SCHEMES) if address else ""
        raise PydanticCustomError("target", "{message}", {"message": (
            f"expected a target 'SCHEME:ADDRESS' with SCHEME one of {', '.join(SCHEMES)}, "
            f"found {describe(value)}{hint}")})
    return TargetRef(scheme, address)


Target = Annotated[TargetRef, PlainValidator(_target), PlainSerializer(str, return_type=str),
                   WithJsonSchema({"type": "string", "pattern": f"^({'|'.join(SCHEMES)}):.+$"})]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- sites --------------------------------------------------------------------------------------

def _site_shorthand(value: Any) -> Any:
    return {"hook": value} if isinstance(value, str) else value


def _distinct_positions(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(set(value)) != len(value):
        raise ValueError(f"expected distinct positions, found {list(value)}")
    return value


Positions = Annotated[tuple[StrictInt, ...], Field(min_length=1), BeforeValidator(_distinct_positions)]


class Site(_Frozen):
    """A named activation of the target. ``position`` keeps one position of each sequence
    (negative counts from the end), or a list of them (``[11, 12, 13]``: the answer positions a
    format fixes; the site then has a row per example and kept position, like a site over every
    position); without it every position is predicted."""

    hook: Hook
    position: Optional[Union[StrictInt, Positions]] = None
    doc: Doc = None

    @property
    def kept(self) -> "int | list[int] | None":
        """The kept positions as an index into ``[N, T, ...]`` after the example axis: an int (one
        position, its axis dropped), a list (several, the axis kept) or None (all)."""
        return list(self.position) if isinstance(self.position, tuple) else self.position

    def kept_shape(self, shape: tuple) -> tuple:
        """A hook's per-example shape ``[T, ...]`` after the position selection."""
        if self.position is None:
            return tuple(shape)
        return tuple(shape[1:]) if isinstance(self.position, int) else (len(self.position), *shape[1:])


SiteEntry = Annotated[Site, BeforeValidator(_site_shorthand, json_schema_input_type=Union[str, Site])]


# --- components ---------------------------------------------------------------------------------

Refs = list_of(Name)


def _one_or_several(value: Any) -> Any:
    """``predicts: [a]`` is ``predicts: a``: one site is always spelled as a name."""
    return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value


SiteTargets = Annotated[Optional[Union[Name, Annotated[tuple[Name, ...], Field(min_length=1)]]],
                        BeforeValidator(_one_or_several)]


class ComponentSpec(_Frozen):
    """The keys every component has. Each kind's schema (``theorycraft/inference/kinds/``)
    subclasses this; ``kind`` is the registry key the component was written with."""

    kind: StrictStr
    predicts: SiteTargets = Field(None, description="the site (or sites) this component's output adds to; "
                                                   "each site it names gets its own parameters")
    doc: Doc = None

    def predicted(self) -> tuple[str, ...]:
        """The sites its output adds to: none, one, or several (a residual stream carries a
        variable from the layer that writes it to every later layer)."""
        if self.predicts is None:
            return ()
        return (self.predicts,) if isinstance(self.predicts, str) else tuple(self.predicts)

    def reads(self) -> tuple[str, ...]:
        """Names of components, sites or variables whose *features* this component takes."""
        return getattr(self, "from_", ())

    def read_paths(self) -> Optional[tuple[tuple, ...]]:
        """The key path of each name in ``reads()``, where they come from several keys (None:
        all from the kind's ``reads_field``)."""
        return None

    def expressions(self) -> tuple[tuple[tuple, Expr], ...]:
        """(key path inside the component, expression) for every expression it holds."""
        return ()


# --- files --------------------------------------------------------------------------------------

class Fragment(_Frozen):
    """A file of shared parts, pulled in by ``include:``."""

    description: Doc = None
    include: list_of(StrictStr, min_length=0) = ()
    sites: dict[Name, SiteEntry] = {}
    variables: dict[Name, Expression] = {}
    components: dict[Name, ComponentSpec] = {}  # validated per kind by _parse


class TheoryFile(Fragment):
    """A theory: a name, a target, the recorded sites it is given (``inputs``), and the parts
    (its own and included)."""

    theory: TheoryName
    target: Target
    inputs: list_of(Name, min_length=0) = ()
    axioms: dict[Name, Any] = {}  # each validated by spec._axioms.Axiom (by _parse, one at a time)


TOP_LEVEL_KEYS = tuple(TheoryFile.model_fields)
