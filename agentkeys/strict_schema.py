"""The one strict validation rule (pydantic v2) for request bodies and the files agentkeys reads.

:data:`STRICT` is set on every request dataclass (:mod:`agentkeys.service._json`), every
configuration section (:mod:`agentkeys.config`) and every file schema (the daemon policy, the
deployment record, the contract artifacts): pydantic's strict mode, so each value is exactly
of its declared type (``bool`` is not an ``int``, ``1.0`` is not an ``int``, a number is not a
string); an unknown member is refused at any depth; numbers are finite. The text itself is
parsed first by :mod:`agentkeys.strict_json` (duplicate keys refused).

Each reader words its own refusal from pydantic's errors; the names below keep the error
types and the location wording one thing.
"""

from __future__ import annotations

from pydantic import ConfigDict

__all__ = ["MISSING_MEMBER", "STRICT", "UNKNOWN_MEMBER", "location"]

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
"""Strict types, unknown members refused, numbers finite."""

UNKNOWN_MEMBER = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
"""pydantic's error types for a member the schema does not declare."""

MISSING_MEMBER = frozenset({"missing", "missing_argument", "missing_keyword_only_argument"})
"""pydantic's error types for a required member that is absent."""


def location(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a reader writes it: ``server.hosts[2]``."""
    label = ""
    for part in loc:
        label += f"[{part}]" if isinstance(part, int) else (f".{part}" if label else str(part))
    return label
