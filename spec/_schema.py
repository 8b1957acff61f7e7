"""JSON Schema of the theory language, for editors with a YAML language server: every kind in the
registry at export time (built-in and registered), each its own schema with ``kind`` fixed."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, create_model

from ._axioms import Axiom
from ._model import Name, TheoryFile


def json_schema() -> dict:
    from theorycraft.inference.kinds import KINDS  # late: the kinds' schemas import spec

    members = tuple(create_model(kind.schema.__name__, __base__=kind.schema, kind=(Literal[name], ...))
                    for name, kind in sorted(KINDS.items()))
    component = Annotated[Union[members], Field(discriminator="kind")]
    theory_file = create_model("TheoryFile", __base__=TheoryFile, components=(dict[Name, component], {}),
                               axioms=(dict[Name, Axiom], {}))
    schema = theory_file.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "theorycraft theory"
    return schema
