"""Small helpers for the JSON forms of bundles and pins (hex fields, strict shapes)."""

from __future__ import annotations

import json
import re
from typing import Any

from attest.errors import AttestationMalformed

_HEX = re.compile(r"(?:[0-9a-f]{2})*", re.ASCII)


def loads_object(text: str | bytes, what: str) -> dict[str, Any]:
    if not isinstance(text, str | bytes):
        raise AttestationMalformed(f"{what} is not a JSON text")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AttestationMalformed(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise AttestationMalformed(f"{what} is not a JSON object")
    return value


def get_hex(obj: dict[str, Any], key: str, what: str, *, size: int | None = None) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise AttestationMalformed(f"{what}: field {key!r} must be lowercase hex")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise AttestationMalformed(f"{what}: field {key!r} must be {size} bytes")
    return raw


def get_str(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise AttestationMalformed(f"{what}: field {key!r} must be a string")
    return value


def get_pcrs(obj: dict[str, Any], key: str, what: str) -> tuple[int, ...]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise AttestationMalformed(f"{what}: field {key!r} must be a list of PCR indices")
    return tuple(value)
