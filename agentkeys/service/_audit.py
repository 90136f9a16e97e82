"""The audit hook every service calls for each request and each denial.

A deliberately simple first version: :class:`AuditSink` is the interface,
:class:`JsonLinesAudit` appends one JSON object per line to a 0600 file in a
0700 directory. (The sidecar's tamper-evident, hash-chained log is a
different, later implementation of the same interface.)

Nothing secret may be put into an :class:`AuditEvent`: handlers add only
identifiers (actor omni, epoch, service name) to ``fields``.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agentkeys.config import InsecureFileError

__all__ = ["AuditEvent", "AuditSink", "JsonLinesAudit", "MemoryAudit"]

AuditValue = str | int | bool | None


@dataclass(frozen=True)
class AuditEvent:
    """One audited happening.

    ``kind`` is ``"request"`` for an HTTP request (whatever its outcome) and
    ``"connection_refused"`` for a connection refused before any request
    (TLS handshake failure, bad peer certificate). ``outcome`` is ``"ok"``,
    ``"denied"`` (authentication/authorization) or ``"error"``.
    """

    service: str
    kind: str
    outcome: str
    peer_role: str | None
    peer_address: str | None
    route: str | None = None
    method: str | None = None
    path: str | None = None
    status: int | None = None
    error: str | None = None
    reason: str | None = None
    fields: Mapping[str, AuditValue] = field(default_factory=dict)
    time: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))

    def to_json(self) -> dict[str, AuditValue | dict[str, AuditValue]]:
        """The JSON object written for this event (``fields`` nested as-is)."""
        return {
            "time": self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "service": self.service,
            "kind": self.kind,
            "outcome": self.outcome,
            "peer_role": self.peer_role,
            "peer_address": self.peer_address,
            "route": self.route,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "error": self.error,
            "reason": self.reason,
            "fields": dict(self.fields),
        }


class AuditSink(Protocol):
    """Receives every audit event of a service. Must not raise for a well-formed event."""

    async def record(self, event: AuditEvent) -> None:
        """Persist (or forward) ``event``."""
        ...


class MemoryAudit:
    """Keeps events in a bounded in-memory list (for embedding and tests)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.events: list[AuditEvent] = []
        self._limit = limit

    async def record(self, event: AuditEvent) -> None:
        """Append ``event``, dropping the oldest beyond the limit."""
        self.events.append(event)
        if len(self.events) > self._limit:
            del self.events[0]


class JsonLinesAudit:
    """Appends events as JSON lines to ``path`` (file 0600, directory 0700).

    The file is opened once, ``O_APPEND``; each event is one ``write`` of one
    line (small local appends, like any logger; no thread hop). Call
    :meth:`close` when the service stops.

    Raises:
        InsecureFileError: the directory or an existing file is accessible by others.
    """

    def __init__(self, path: Path) -> None:
        directory = path.parent
        if not directory.exists():
            directory.mkdir(parents=True, mode=0o700)
            os.chmod(directory, 0o700)
        dst = directory.stat()
        if dst.st_mode & 0o077 or dst.st_uid not in (os.geteuid(), 0):
            raise InsecureFileError(f"audit directory {directory} must be 0700 and ours")
        self._fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        st = os.fstat(self._fd)
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.close(self._fd)
            raise InsecureFileError(f"audit file {path} is accessible by group or others")
        self.path = path

    async def record(self, event: AuditEvent) -> None:
        """Append ``event`` as one line."""
        line = json.dumps(event.to_json(), separators=(",", ":"), sort_keys=True) + "\n"
        os.write(self._fd, line.encode("utf-8"))

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
