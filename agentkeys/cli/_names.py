"""The local service-name table: ``services.json`` in the agentkeys home.

The chain stores a scope's services as keccak256 hashes (SPEC.md section 6), so a name
cannot be read back from it. The CLI records every name it hashes for the chain (``scope
add|remove``) or writes to a vault (``store``): ``{"version": 1, "names": {<hash hex>:
<name>}}`` (0600). ``scope show`` and ``list --agent`` map hashes back through it; a hash
it does not hold is shown as the hash.

The table only labels what the chain says, so it is checked, not trusted: the file is read
strictly (:mod:`agentkeys.strict_json`, :data:`~agentkeys.strict_schema.STRICT`), and an
entry whose name does not hash to its key is dropped, so an edited file cannot make a
hash read as another service. A file that cannot be read is never overwritten: the names
are then shown as hashes and new ones are not recorded (one warning on stderr).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, with_config

from agentkeys._files import write_private
from agentkeys.config import ConfigError, validate_document
from agentkeys.errors import AgentkeysError
from agentkeys.omni import normalize_service, service_hash
from agentkeys.strict_json import StrictJsonError, loads_object
from agentkeys.strict_schema import STRICT

__all__ = ["NAMES_FILE", "known_names", "remember_names"]

NAMES_FILE = "services.json"
_MAX_NAMES = 4096
_MAX_BYTES = 1 << 20


@with_config(STRICT)
@dataclass(frozen=True)
class _Table:
    version: Literal[1]
    names: dict[str, str]


_TABLE = TypeAdapter(_Table)


def _hash_of(name: str) -> str | None:
    """The key ``name`` belongs under; ``None`` unless it is a service name as written."""
    try:
        return service_hash(name).hex() if normalize_service(name) == name else None
    except AgentkeysError:
        return None


def _read(home: Path) -> dict[str, str] | None:
    """The checked table (``{}`` when there is no file); ``None`` when the file is unreadable."""
    path = home / NAMES_FILE
    try:
        with path.open("rb") as file:
            text = file.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    if len(text) > _MAX_BYTES:
        return None
    try:
        table = validate_document(_TABLE, loads_object(text, what=path.name))
    except (StrictJsonError, ConfigError):
        return None
    return {key: name for key, name in table.names.items() if _hash_of(name) == key}


def known_names(home: Path) -> dict[str, str]:
    """hash hex → service name, as recorded in ``home`` (empty when none or unreadable)."""
    return _read(home) or {}


def remember_names(home: Path, names: Iterable[str] | Mapping[str, str]) -> None:
    """Add service names to the table (a no-op when all are known already, or when the file
    exists but cannot be read: it is left as it is)."""
    table = _read(home)
    if table is None:
        print(
            f"agentkeys: {home / NAMES_FILE} is unreadable or malformed; not recording service "
            "names in it (move it away to start a new table)",
            file=sys.stderr,
        )
        return
    fresh = {
        service_hash(n).hex(): normalize_service(n)
        for n in (names.values() if isinstance(names, Mapping) else names)
    }
    if fresh.items() <= table.items() or len(table) >= _MAX_NAMES:
        return
    table.update(fresh)
    write_private(home / NAMES_FILE, json.dumps({"version": 1, "names": table}, sort_keys=True))
