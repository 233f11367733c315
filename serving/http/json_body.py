"""JSON bodies parsed and written by pydantic's Rust core, not by FastAPI.

FastAPI parses a body with Python's ``json`` module, validates the resulting
dicts, then validates the returned model again before writing it. For a
single-NPC request that is most of the application's time per call. Here a
route takes the raw bytes, ``model_validate_json`` parses and validates in one
pass, and the answer is written by ``model_dump_json`` (the saving is in
``benchmarks/reference/design-measurements.md``).

The routes keep their OpenAPI description: ``body_schema`` documents the model
the route parses, and ``register_schemas`` adds the models it refers to.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import FastAPI, Response
from pydantic import BaseModel, ValidationError

from models.errors import InvalidInputError
from serving.upstream import extend_openapi

M = TypeVar("M", bound=BaseModel)

_REF = "#/components/schemas/{model}"
MAX_PROBLEMS = 5


def field_path(location: tuple[int | str, ...] | list[int | str]) -> str:
    """``("body", "npcs", 0, "health")`` → ``npcs[0].health``."""
    path = ""
    for part in location:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def describe(errors: list[Any]) -> str:
    """Validation errors as one message that names each field (the first few)."""
    problems = [f"{field_path(e['loc'])}: {e['msg']}" for e in errors]
    more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
    return "; ".join(problems[:MAX_PROBLEMS]) + more


def parse(model: type[M], body: bytes) -> M:
    """The request ``model`` from a JSON body, or InvalidInputError naming the fields."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInputError(describe(exc.errors(include_url=False))) from None


def respond(result: BaseModel) -> Response:
    return Response(result.model_dump_json(), media_type="application/json")


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses ``model`` from its body itself."""
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def register_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add ``models`` (and the models they refer to) to the app's OpenAPI components."""

    def add(document: dict[str, Any]) -> None:
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schema = model.model_json_schema(ref_template=_REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema

    extend_openapi(app, add)
