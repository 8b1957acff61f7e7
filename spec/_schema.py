"""JSON Schema of the theory language, for editors with a YAML language server."""

from __future__ import annotations

from ._model import TheoryFile


def json_schema() -> dict:
    schema = TheoryFile.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "theorycraft theory"
    return schema
