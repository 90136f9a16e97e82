"""The local service-name table: ``services.json`` in the agentkeys home.

The chain stores a scope's services as keccak256 hashes (SPEC.md section 6), so a name
cannot be read back from it. The CLI records every name it hashes for the chain (``scope
add|remove``) or writes to a vault (``store``): ``{"version": 1, "names": {<hash hex>:
<name>}}`` (0600). ``scope show`` and ``list --agent`` map hashes back through it; a hash
it does not hold is shown as the hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from agentkeys._files import write_private
from agentkeys.omni import normalize_service, service_hash

__all__ = ["NAMES_FILE", "known_names", "remember_names"]

NAMES_FILE = "services.json"
_MAX_NAMES = 4096


def known_names(home: Path) -> dict[str, str]:
    """hash hex → service name, as recorded in ``home`` (empty when none or unreadable)."""
    try:
        doc = json.loads((home / NAMES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    names = doc.get("names") if isinstance(doc, dict) else None
    if not isinstance(names, dict):
        return {}
    return {str(h): str(n) for h, n in names.items() if isinstance(n, str)}


def remember_names(home: Path, names: Iterable[str] | Mapping[str, str]) -> None:
    """Add service names to the table (a no-op when all are known already)."""
    table = known_names(home)
    fresh = {
        service_hash(n).hex(): normalize_service(n)
        for n in (names.values() if isinstance(names, Mapping) else names)
    }
    if fresh.items() <= table.items() or len(table) >= _MAX_NAMES:
        return
    table.update(fresh)
    write_private(home / NAMES_FILE, json.dumps({"version": 1, "names": table}, sort_keys=True))
