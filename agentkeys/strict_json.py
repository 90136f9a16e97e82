"""Strict JSON text: the one parser for request bodies and for the JSON files agentkeys reads.

What pydantic's JSON parser does not refuse, refused here (each a :class:`StrictJsonError`):
text that is not UTF-8 JSON, a top level that is not an object, a duplicate key at any depth
(never last-wins), ``NaN`` / ``Infinity``, and nesting deeper than 32 levels. Request bodies
(:mod:`agentkeys.service._json`) answer these as ``malformed_json``; a file's reader raises
its own error naming the file.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "StrictJsonError", "loads_object"]

MAX_DEPTH = 32


class StrictJsonError(ValueError):
    """The text is not one strict JSON object; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJsonError(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise StrictJsonError(f"{name} is not allowed in JSON")


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def loads_object(text: bytes, *, what: str) -> dict[str, Any]:
    """Parse ``text`` as one strict JSON object (see the module docstring).

    Args:
        text: the raw bytes.
        what: what the text is, for the reason (``body``, ``the deployment record``).

    Raises:
        StrictJsonError: not UTF-8 JSON, duplicate keys, NaN/Infinity, nested deeper than
            32 levels, or the top level is not an object.
    """
    try:
        value = json.loads(
            text.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except StrictJsonError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise StrictJsonError(f"{what} is not well-formed UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise StrictJsonError(f"{what} must be a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise StrictJsonError("JSON nesting is too deep")
    return value
