"""Errors of the typed clients (agentkeys.clients): what a peer's answer was, typed.

AgentkeysError
└── ClientError                 502  client_error             the peer gave no usable answer
    ├── PeerUnreachable         503  peer_unreachable         no answer (transport failure)
    ├── PeerUntrusted           502  peer_untrusted           TLS failed, or not the expected role
    ├── PeerRefused             502  peer_refused             a non-200 answer, ``{error, reason}``
    └── AnswerMalformed         502  answer_malformed         a 200 that breaks the wire contract

Every error names the peer (``who``: ``"broker"``, ``"worker"`` or ``"signer"``) and the
``path`` asked.
:class:`PeerRefused` carries the peer's HTTP status, its ``error`` code (when it is a plain
snake_case word) and its ``reason``; the caller decides what a refusal means to it (the
daemon: a 401/403/404 is a refusal, anything else an outage; the CLI: its exit code).
Reasons never hold a secret, cap, session token or PoP: only the peer's own reason, which
names identifiers and rules.
"""

from __future__ import annotations

from typing import ClassVar

from agentkeys.errors import AgentkeysError

__all__ = ["AnswerMalformed", "ClientError", "PeerRefused", "PeerUnreachable", "PeerUntrusted"]


class ClientError(AgentkeysError):
    """Branch: a peer (broker, worker or signer) gave no usable answer to ``path``."""

    error: ClassVar[str] = "client_error"
    status: ClassVar[int] = 502

    def __init__(self, reason: str, *, who: str, path: str) -> None:
        super().__init__(reason)
        self.who = who
        self.path = path


class PeerUnreachable(ClientError):
    """The peer did not answer; ``transport`` names the httpx error (never its text)."""

    error: ClassVar[str] = "peer_unreachable"
    status: ClassVar[int] = 503

    def __init__(self, *, who: str, path: str, transport: str) -> None:
        super().__init__(f"the {who} is unreachable ({transport})", who=who, path=path)
        self.transport = transport


class PeerUntrusted(ClientError):
    """A mutual-TLS peer failed the handshake (an alert, a certificate that does not verify)
    or is not the role expected; ``failure`` names the error (never its text)."""

    error: ClassVar[str] = "peer_untrusted"

    def __init__(self, *, who: str, path: str, failure: str) -> None:
        super().__init__(f"the {who} is not trusted ({failure})", who=who, path=path)
        self.failure = failure


class PeerRefused(ClientError):
    """The peer answered ``path`` with a non-200 status.

    Attributes:
        http_status: the peer's HTTP status.
        code: the peer's ``error`` code when it is a snake_case word of 1..64 characters,
            else ``None``.
        peer_reason: the peer's ``reason`` when it is a string, else ``None`` (as sent:
            print it through a sanitiser, it may hold newlines).
    """

    error: ClassVar[str] = "peer_refused"

    def __init__(
        self,
        *,
        who: str,
        path: str,
        http_status: int,
        code: str | None,
        peer_reason: str | None,
    ) -> None:
        super().__init__(
            f"the {who} refused {path}: HTTP {http_status} {code or '(no error code)'}",
            who=who,
            path=path,
        )
        self.http_status = http_status
        self.code = code
        self.peer_reason = peer_reason


class AnswerMalformed(ClientError):
    """A 200 answer that is too large, not a JSON object or lacks a member of its contract."""

    error: ClassVar[str] = "answer_malformed"
