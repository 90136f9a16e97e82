"""The OpenAPI 3.1 document of a service, generated from its route table (``GET /openapi.json``).

One source of truth: the document is built from what :class:`~agentkeys.service.ServiceApp`
enforces — each :class:`~agentkeys.service.Route` (name → ``operationId``, method, path),
its request dataclass (``Route.request``, decoded by ``Call.decode`` under the rules of
``agentkeys.service._json``), the ONE authorization table (public, or mutual TLS with the
roles allowed) and the ``{error, reason}`` body every failure answers with. Request schemas
are JSON Schema 2020-12 and say exactly what the decoder accepts: every field without a
default is required, no other member is allowed, ``bool`` is not an integer, ``T | None``
admits ``null``.

Schema-driven fuzzing (tests/fuzz/test_broker_schema.py) generates requests from this
document, so a route whose request type is not declared is documented with an open JSON
object body (and fuzzed with arbitrary objects).
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentkeys.service._app import Access, Route

__all__ = ["OPENAPI_PATH", "openapi_document", "schema_of"]

OPENAPI_PATH = "/openapi.json"
_PATH_PARAM = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
    "required": ["error", "reason"],
    "additionalProperties": False,
}


def _version() -> str:
    try:
        return metadata.version("agentkeys")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "0"


def schema_of(tp: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one request field type (the types ``_json.decode`` supports).

    Dataclasses go into ``components`` (by class name) and are referenced.

    Raises:
        TypeError: a type the decoder does not support either.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        inner = schema_of(rest[0], components)
        return {"anyOf": [inner, {"type": "null"}]} if type(None) in args else inner
    if tp is object:
        return {}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if origin in (list, tuple):
        return {"type": "array", "items": schema_of(args[0], components)}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(args[1], components)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return {"$ref": f"#/components/schemas/{_component(tp, components)}"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"unsupported field type {tp!r}")


def _component(cls: type[Any], components: dict[str, Any]) -> str:
    name = cls.__name__
    if name in components:
        return name
    components[name] = {}  # placeholder: recursive types refer back to it
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        properties[field.name] = schema_of(hints[field.name], components)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    components[name] = schema
    return name


def _error_responses() -> dict[str, Any]:
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "4XX": {"description": "refused: `{error, reason}`", "content": body},
        "5XX": {"description": "server-side failure: `{error, reason}`", "content": body},
    }


def openapi_document(
    name: str,
    routes: Sequence[Route],
    authorization: Mapping[str, Access],
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of service ``name`` (see the module docstring).

    Raises:
        TypeError: a route's request dataclass uses a field type the decoder lacks.
    """
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        access = authorization[route.name]
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        operation: dict[str, Any] = {
            "operationId": route.name,
            "responses": {
                "200": {
                    "description": "success",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_error_responses(),
            },
        }
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _PATH_PARAM.findall(route.path)
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.method in ("POST", "PUT"):
            schema = (
                {"type": "object"}
                if route.request is None
                else schema_of(route.request, components)
            )
            operation["requestBody"] = {
                "required": route.request is not None,
                "content": {"application/json": {"schema": schema}},
            }
        if access.public:
            operation["security"] = []
        else:
            operation["security"] = [{"mutualTLS": []}]
            operation["x-agentkeys-roles"] = sorted(role.value for role in access.roles)
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": f"agentkeys {name}", "version": _version()},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "client certificate issued by the deployment CA; the "
                    "role is read from it (agentkeys.pki)",
                }
            },
        },
    }
