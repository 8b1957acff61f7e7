"""JSON Schema of the theory language, for editors with a YAML language server. One schema covers
the three kinds of file: a theory (it has ``theory:`` or ``target:``), a search vocabulary (it has
``vocabulary:``) and a part pulled in by ``include:`` (neither). Every kind in the registry at
export time (built-in and registered) is in it, each its own schema with ``kind`` fixed.

A component is discriminated on ``kind`` the way every JSON Schema validator understands: ``kind``
must be one of the registered names (so a misspelt kind reads "'fourrier' is not one of [...]"),
and ``if kind is K then K's schema``, so a bad field is reported against its own kind's schema,
never as "not valid under any of the given schemas"."""

from __future__ import annotations

import copy
from typing import Optional

from pydantic import ConfigDict, StrictStr, create_model
from pydantic.json_schema import models_json_schema

from ._axioms import Axiom
from ._model import ComponentSpec, Doc, Expression, Fragment, Name, TheoryFile
from ._registry import KINDS
from ._vocabulary import EACH_SCHEMA, Grammar


def json_schema() -> dict:
    from typing import Literal

    kinds = {name: create_model(kind.schema.__name__, __base__=kind.schema, kind=(Literal[name], ...))
             for name, kind in sorted(KINDS.items())}
    theory_file = create_model("TheoryFile", __base__=TheoryFile, axioms=(dict[Name, Axiom], {}))
    part_file = create_model("PartFile", __base__=Fragment)
    vocabulary_file = create_model(
        "VocabularyFile", __config__=ConfigDict(extra="forbid"), vocabulary=(Optional[StrictStr], None),
        description=(Doc, None), variables=(dict[Name, Expression], {}), grammar=(Optional[Grammar], None),
        components=(dict[Name, ComponentSpec], {}))
    models = [theory_file, part_file, vocabulary_file, *kinds.values()]
    _, top = models_json_schema([(m, "validation") for m in models], by_alias=True, ref_template="#/$defs/{model}")
    defs = top["$defs"]
    refs = {name: f"#/$defs/{model.__name__}" for name, model in kinds.items()}
    defs["Component"] = _discriminated(refs, "a component of the theory language")
    for name, model in kinds.items():  # a template: any field but kind and predicts may hold {each: ...}
        defs[f"{model.__name__}Template"] = _template(defs[model.__name__])
    defs["Template"] = _discriminated({n: f"#/$defs/{m.__name__}Template" for n, m in kinds.items()},
                                      "a vocabulary's template: a component whose fields may hold {each: ...}")
    defs["Each"] = EACH_SCHEMA
    _point(defs["TheoryFile"], "#/$defs/Component")
    _point(defs["PartFile"], "#/$defs/Component")
    _point(defs["VocabularyFile"], "#/$defs/Template")
    defs["VocabularyFile"]["properties"]["components"]["minProperties"] = 1
    defs["VocabularyFile"]["anyOf"] = [{"required": ["components"]}, {"required": ["grammar"]}]  # templates, a grammar, or both
    defs.pop("ComponentSpec", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "theorycraft theory, part or vocabulary",
            "$defs": defs,
            "if": {"required": ["vocabulary"]}, "then": {"$ref": "#/$defs/VocabularyFile"},
            "else": {"if": {"anyOf": [{"required": ["theory"]}, {"required": ["target"]}]},
                     "then": {"$ref": "#/$defs/TheoryFile"}, "else": {"$ref": "#/$defs/PartFile"}}}


def _discriminated(refs: dict[str, str], description: str) -> dict:
    """``kind`` one of ``refs``; then the schema of that kind."""
    return {"type": "object", "description": description, "required": ["kind"],
            "properties": {"kind": {"enum": sorted(refs)}},
            "allOf": [{"if": {"properties": {"kind": {"const": name}}, "required": ["kind"]}, "then": {"$ref": ref}}
                      for name, ref in refs.items()]}


def _template(schema: dict) -> dict:
    template = copy.deepcopy(schema)
    template["title"] = f"{schema.get('title', '')} template".strip()
    for key, field in template["properties"].items():
        if key not in ("kind", "predicts"):
            template["properties"][key] = {"anyOf": [field, {"$ref": "#/$defs/Each"}]}
    template["required"] = sorted(set(template.get("required", [])) | {"predicts"})
    return template


def _point(file_schema: dict, ref: str) -> None:
    """The file's components: each a ``ref``."""
    for pattern in file_schema["properties"]["components"]["patternProperties"]:
        file_schema["properties"]["components"]["patternProperties"][pattern] = {"$ref": ref}
