"""The root of agentkeys' exception tree.

    AgentkeysError                 every error agentkeys raises on purpose
    ├── FormatError                malformed or tampered input to a core format (below)
    └── (each subpackage)          its own errors.py, leaves subclass AgentkeysError

Every leaf answers the caller's question: it carries a machine-readable
``error`` code, the HTTP ``status`` a service answers with, and a ``reason``
for humans. A reason never contains secret material (keys, plaintexts,
tokens): it is logged and shown to callers.
"""

from __future__ import annotations

from typing import ClassVar


class AgentkeysError(Exception):
    """Base of every error agentkeys raises deliberately.

    Subclasses set ``error`` (stable snake_case code) and ``status`` (HTTP).
    """

    error: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_json(self) -> dict[str, str]:
        """The ``{error, reason}`` body every endpoint answers a failure with."""
        return {"error": self.error, "reason": self.reason}
