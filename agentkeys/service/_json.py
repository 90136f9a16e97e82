"""Strict JSON input: one object per body, validated into a frozen dataclass by pydantic v2.

Two steps, each violation a 400 ``{error, reason}``:

1. :func:`parse_json_object` (:mod:`agentkeys.strict_json`, what pydantic's parser does
   not refuse): the body is UTF-8 JSON whose top level is an object; no duplicate keys, no
   NaN/Infinity, nesting at most 32 levels (``malformed_json``);
2. pydantic validates the same bytes into the request dataclass, strictly (the one schema
   layer: :data:`agentkeys.strict_schema.STRICT`): every field without a default is present
   (``missing_field``), no unknown member is present, at any depth (``unknown_field``), and
   each value has exactly the declared type (``wrong_type``): ``bool`` is not an ``int``,
   ``1.0`` is not an ``int``, a number is not a string, numbers are finite.

Supported field types (checked once per class, :func:`adapter`): ``str``, ``int``,
``float``, ``bool``, ``Literal`` of strings/ints, string ``Enum``, ``list[T]`` /
``tuple[T, ...]``, ``dict[str, T]``, a nested dataclass, ``object`` (any JSON value, kept
as parsed) and ``T | None``. Request types stay plain frozen dataclasses; the strict
configuration is the wire layer's, set on each class the first time it is used.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from agentkeys.service.errors import MalformedJson, MissingField, UnknownField, WrongType
from agentkeys.strict_json import StrictJsonError, loads_object
from agentkeys.strict_schema import MISSING_MEMBER, STRICT, UNKNOWN_MEMBER, location

__all__ = ["JsonObject", "adapter", "decode", "decode_body", "parse_json_object"]

JsonObject = dict[str, Any]

T = TypeVar("T")

_SIMPLE = (str, int, float, bool, object)


def parse_json_object(body: bytes) -> JsonObject:
    """Parse ``body`` as one JSON object (step 1 of the module docstring).

    Raises:
        MalformedJson: not UTF-8, not JSON, duplicate keys, NaN/Infinity,
            nested deeper than 32 levels, or the top level is not an object.
    """
    try:
        return loads_object(body, what="body")
    except StrictJsonError as exc:
        raise MalformedJson(exc.reason) from None


def _check_type(tp: Any, seen: set[type[Any]]) -> None:
    """Refuse field types outside the supported set; give each dataclass :data:`STRICT`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        _check_type(rest[0], seen)
    elif origin is typing.Literal:
        if not all(isinstance(a, str | int) and not isinstance(a, bool) for a in args):
            raise TypeError(f"unsupported literal {tp!r}")
    elif origin in (list, tuple):
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            raise TypeError(f"only tuple[T, ...] is supported, not {tp!r}")
        _check_type(args[0], seen)
    elif origin is dict:
        if args[0] is not str:
            raise TypeError(f"object keys are strings, not {args[0]!r}")
        _check_type(args[1], seen)
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        if not all(isinstance(m.value, str) for m in tp):
            raise TypeError(f"{tp!r} is not a string enum")
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp in seen:
            return
        seen.add(tp)
        if "__pydantic_config__" not in tp.__dict__:
            tp.__pydantic_config__ = STRICT  # type: ignore[attr-defined]
        for field_type in typing.get_type_hints(tp).values():
            _check_type(field_type, seen)
    elif tp not in _SIMPLE:
        raise TypeError(f"unsupported field type {tp!r}")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def adapter(cls: type[T]) -> TypeAdapter[T]:
    """The validator of request dataclass ``cls`` (built once per class).

    Raises:
        TypeError: ``cls`` is not a dataclass or uses an unsupported field type.
    """
    found = _ADAPTERS.get(cls)
    if found is None:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"{cls!r} is not a dataclass")
        _check_type(cls, set())
        found = _ADAPTERS[cls] = TypeAdapter(cls)
    return typing.cast(TypeAdapter[T], found)


def _refusal(exc: ValidationError) -> MalformedJson | UnknownField | MissingField | WrongType:
    """The one leaf for the first problem: an unknown member anywhere first, as the decoder
    has always answered, then the first field in declaration order."""
    errors = exc.errors(include_url=False, include_input=False)
    for error in errors:
        if error["type"] in UNKNOWN_MEMBER:
            return UnknownField(f"unknown field {location(error['loc'])[:96]!r}")
    first = errors[0]
    label = location(first["loc"])[:96]
    if first["type"] == "json_invalid":
        return MalformedJson("body is not well-formed UTF-8 JSON")
    if first["type"] in MISSING_MEMBER:
        return MissingField(f"field {label!r} is required")
    return WrongType(f"field {label!r}: {first['msg'][:120]}")


def decode_body(cls: type[T], body: bytes) -> T:
    """The request dataclass ``cls`` from the raw JSON ``body`` (both steps).

    Raises:
        MalformedJson, MissingField, UnknownField, WrongType: see the module docstring.
        TypeError: ``cls`` is not a supported request dataclass (a programming error).
    """
    validator = adapter(cls)
    parse_json_object(body)
    try:
        return validator.validate_json(body)
    except ValidationError as exc:
        raise _refusal(exc) from None


def decode(cls: type[T], obj: JsonObject) -> T:
    """The request dataclass ``cls`` from an already parsed JSON object (step 2 only).

    Raises:
        MissingField, UnknownField, WrongType: see the module docstring.
    """
    try:
        body = json.dumps(obj, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise WrongType("the object is not JSON") from exc
    try:
        return adapter(cls).validate_json(body)
    except ValidationError as exc:
        raise _refusal(exc) from None
