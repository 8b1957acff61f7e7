"""The search vocabulary language, defined once: a file's top-level keys, the ``{each: ...}``
field of a template (its items: a list, named items, or a range ``LO..HI``) and the ``grammar:``
section. ``_schema`` builds the JSON Schema from these; ``theorycraft.refine`` reads files with them.

    vocabulary: NAME
    description: TEXT
    variables: {NAME: EXPRESSION}
    grammar: {sites: [SITE, ...], shifts: [1, 2], offsets: [0, -1, 1], pairs: true, generated: 20000, estimated: 24}
    components: {NAME: TEMPLATE}     # a component of any kind; any field but kind and predicts may be {each: ...}

A vocabulary needs templates, or a grammar, or both.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ._diagnostics import describe
from ._model import Name, PositiveInt

VOCABULARY_KEYS = ("vocabulary", "description", "variables", "grammar", "components")
RANGE_PATTERN = r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$"
_RANGE = re.compile(RANGE_PATTERN)


class Grammar(BaseModel):
    """RASP's primitives over the theory's variables, proposed at every step (``refine/_grammar.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sites: tuple[Name, ...] = Field((), description="sites with a row per position where the grammar's variables "
                                                    "are proposed (as tables, or linear read-outs)")
    patterns: tuple[Name, ...] = Field((), description="attention pattern sites [head, query, key] where the "
                                                       "grammar's selects are proposed as attention rules")
    shifts: tuple[PositiveInt, ...] = Field((1, 2), description="reads of a variable k positions back: x[i - k]")
    offsets: tuple[StrictInt, ...] = Field((0, -1, 1), description="the query side of a select: x + c")
    pairs: StrictBool = Field(True, description="tables of two variables")
    generated: PositiveInt = Field(20000, description="variables enumerated per step at most")
    estimated: PositiveInt = Field(24, description="of them, the best by the data sent to the search's estimates")


def each_items(value: Any) -> tuple[list, list[str]] | None:
    """The items of an ``{each: ...}`` field and a label for each (None for a plain field).
    Raises ValueError saying what it expected."""
    if not (isinstance(value, dict) and list(value) == ["each"]):
        return None
    items = value["each"]
    if isinstance(items, str) and _RANGE.match(items):
        lo, hi = map(int, _RANGE.match(items).groups())
        items = list(range(lo, hi + 1))
    if isinstance(items, dict) and items:
        return list(items.values()), [str(k) for k in items]
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected 'each:' to hold a non-empty list, a mapping of named items or a range "
                         f"'LO..HI', found {describe(items)}")
    return items, [_label(v, k) for k, v in enumerate(items)]


def _label(value: Any, index: int) -> str:
    if value is None:
        return "full"
    return str(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else str(index)


EACH_SCHEMA = {  # the JSON Schema of an {each: ...} field: what ``each_items`` accepts
    "type": "object", "required": ["each"], "additionalProperties": False,
    "description": "one candidate per item: a list, a mapping of named items, or a range like \"1..56\"",
    "properties": {"each": {"anyOf": [{"type": "array", "minItems": 1}, {"type": "object", "minProperties": 1},
                                      {"type": "string", "pattern": RANGE_PATTERN}]}},
}
