"""Load the recorded vectors of tests/vectors/ and resolve error names to leaf classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentkeys import errors

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def load(name: str) -> dict[str, Any]:
    """The decoded JSON document tests/vectors/<name>."""
    document: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return document


def error_class(name: str) -> type[errors.FormatError]:
    """The agentkeys.errors leaf a vector names; it must be a FormatError."""
    cls = getattr(errors, name)
    assert isinstance(cls, type)
    assert issubclass(cls, errors.FormatError)
    return cls


def ids(vectors: list[dict[str, Any]], key: str = "description") -> list[str]:
    """pytest ids for a vector list: the given member, else the index."""
    return [str(vector.get(key, index)) for index, vector in enumerate(vectors)]
