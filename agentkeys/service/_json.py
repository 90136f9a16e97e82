"""Strict JSON input: one object per body, decoded into a frozen dataclass.

Rules (each violation is a 400 ``{error, reason}``): the body is UTF-8 JSON
whose top level is an object; no duplicate keys, no NaN/Infinity, bounded
nesting; every field of the target dataclass without a default is present,
no unknown field is present, and each value has exactly the declared type
(``bool`` is not an ``int``).

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Literal`` of
strings/ints, string ``Enum``, ``list[T]``/``tuple[T, ...]``, ``dict[str, T]``,
a nested dataclass, ``object`` (any JSON value, kept as parsed) and ``T | None``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from typing import Any, TypeVar

from agentkeys.service.errors import MalformedJson, MissingField, UnknownField, WrongType

__all__ = ["JsonObject", "decode", "parse_json_object"]

JsonObject = dict[str, Any]

T = TypeVar("T")

_MAX_DEPTH = 32


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedJson(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise MalformedJson(f"{name} is not allowed in JSON")


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def parse_json_object(body: bytes) -> JsonObject:
    """Parse ``body`` as one JSON object.

    Raises:
        MalformedJson: not UTF-8, not JSON, duplicate keys, NaN/Infinity,
            nested deeper than 32 levels, or the top level is not an object.
    """
    try:
        text = body.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except MalformedJson:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedJson("body is not well-formed UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise MalformedJson("body must be a JSON object")
    if _depth(value) > _MAX_DEPTH:
        raise MalformedJson("JSON nesting is too deep")
    return value


def decode(cls: type[T], obj: JsonObject, *, where: str = "") -> T:
    """Build the dataclass ``cls`` from the parsed JSON object ``obj``.

    Raises:
        MissingField: a field without a default is absent.
        UnknownField: ``obj`` has a key ``cls`` does not declare.
        WrongType: a value does not have the declared type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise UnknownField(f"unknown field {where}{unknown[0][:64]!r}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        label = f"{where}{name}"
        if name not in obj:
            if field.default is dataclasses.MISSING and (
                field.default_factory is dataclasses.MISSING
            ):
                raise MissingField(f"field {label!r} is required")
            continue
        values[name] = _convert(hints[name], obj[name], label)
    return cls(**values)


def _convert(tp: Any, value: Any, label: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        return _convert(rest[0], value, label)
    if tp is object:
        return value
    if origin is typing.Literal:
        if isinstance(value, bool) or value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise WrongType(f"field {label!r} must be one of {allowed}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError as exc:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise WrongType(f"field {label!r} must be one of {allowed}") from exc
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise WrongType(f"field {label!r} must be a list")
        item = args[0]
        items = [_convert(item, v, f"{label}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise WrongType(f"field {label!r} must be an object")
        return {k: _convert(args[1], v, f"{label}.{k[:32]}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise WrongType(f"field {label!r} must be an object")
        return decode(tp, value, where=f"{label}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise WrongType(f"field {label!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WrongType(f"field {label!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WrongType(f"field {label!r} must be a number")
        if not math.isfinite(value):
            raise WrongType(f"field {label!r} must be finite")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise WrongType(f"field {label!r} must be a string")
        return value
    raise TypeError(f"unsupported field type {tp!r}")
