"""Entries of a theory validated by their schemas: a component by its kind's (looked up in the
registry), and pydantic's errors as positioned messages that say what was expected and found."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from . import _registry as kinds
from ._axioms import Axiom
from ._diagnostics import Diagnostic, describe, did_you_mean
from ._model import Site
from ._yaml import Path, SourceMap

_PLAIN = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
          "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
          "bool_parsing": "true or false", "string_type": "text", "dict_type": "a mapping",
          "model_type": "a mapping", "model_attributes_type": "a mapping", "tuple_type": "a list",
          "list_type": "a list", "string_pattern_mismatch":
          "a name of letters, digits and '_' that starts with a letter"}


def valid(adapter: TypeAdapter, value: Any) -> bool:
    try:
        adapter.validate_python(value)
        return True
    except ValidationError:
        return False


def _field_names(model) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def validate_component(raw: Any, source: SourceMap, path: Path, *, trust_code: bool = False):
    """(the component, or None; diagnostics): its ``kind`` looked up in the registry (a
    ``module:attr`` kind imported only with ``trust_code``), then its keys by that kind's schema."""
    if not isinstance(raw, dict):
        return None, [source.diagnostic(tuple(path), f"expected a component (a mapping with a 'kind'), "
                                                     f"found {describe(raw)}")]
    names = sorted(k for k in kinds.KINDS if not kinds.is_reference(k))
    if "kind" not in raw:
        return None, [source.diagnostic(tuple(path), f"missing required key 'kind'; expected one of: {', '.join(names)}")]
    name = raw["kind"]
    if not isinstance(name, str) or (name not in kinds.KINDS and not kinds.is_reference(name)):
        return None, [source.diagnostic(tuple(path) + ("kind",), f"unknown component kind {describe(name)}"
                                        f"{did_you_mean(name, names)}; expected one of: {', '.join(names)}")]
    try:
        model = kinds.resolve(name, trust_code=trust_code).schema
    except kinds.KindError as exc:
        return None, [source.diagnostic(tuple(path) + ("kind",), str(exc))]
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        return None, [pydantic_diagnostic(err, raw, source, path, model) for err in exc.errors()]


def pydantic_diagnostic(err: dict, raw: Any, source: SourceMap, path: Path, model=None) -> Diagnostic:
    """One pydantic error, as a positioned message that says what was expected and found."""
    loc, error, found = list(err["loc"]), err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if path[0] == "sites":
        model = Site
    where = tuple(path) + tuple(loc)
    noun = {Site: "a site", Axiom: "an axiom"}.get(model) or (f"a {raw.get('kind')} component" if model else "")
    if error == "extra_forbidden":
        allowed = _field_names(model) if model else []
        return source.diagnostic(where, f"unknown key '{loc[-1]}' in {noun}{did_you_mean(loc[-1], allowed)}; "
                                        f"expected one of: {', '.join(sorted(allowed))}", key=True)
    if error == "missing":
        return source.diagnostic(where[:-1], f"missing required key '{loc[-1]}' in {noun}")
    if error in ("expression", "hook", "target", "place", "axiom"):
        return source.diagnostic(where, ctx["message"], offset=ctx.get("offset", 0))
    if error == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx["expected"])
        return source.diagnostic(where, f"expected one of {ctx['expected']}, found {describe(found)}"
                                        f"{did_you_mean(found, choices)}")
    if error in ("greater_than", "greater_than_equal"):
        bound = f"> {ctx['gt']}" if "gt" in ctx else f">= {ctx['ge']}"
        return source.diagnostic(where, f"expected a number {bound}, found {describe(found)}")
    if error == "too_short":
        return source.diagnostic(where, f"expected at least {ctx['min_length']} item, found none")
    if error == "string_pattern_mismatch" and where == ("theory",):
        return source.diagnostic(where, f"expected a theory name of letters, digits, '_', '-' and '.' "
                                        f"that starts with a letter, found {describe(found)}")
    expected = _PLAIN.get(error, err["msg"].replace("Input should be", "").strip())
    return source.diagnostic(where, f"expected {expected}, found {describe(found)}")
