"""Errors of the sidecar daemon (agentkeys.daemon, SPEC.md section 8).

AgentkeysError
└── DaemonError                         500  daemon_error
    ├── PolicyInvalid                   500  policy_invalid        (start-up / reload)
    ├── Denied                          403  denied                (branch: refused by policy)
    │   ├── CallerNotAllowed            403  caller_not_allowed    no policy entry for the caller
    │   ├── ServiceNotAllowed           403  service_not_allowed   caller may not use the service
    │   ├── RouteNotAllowed             403  route_not_allowed     method/path outside the allowlist
    │   └── ScopeRevoked                403  scope_revoked         chain scope or device revoked
    ├── UnknownService                  404  unknown_service       no such service in the policy
    ├── BadProxyRequest                 400  bad_request           malformed path or headers
    ├── RequestTooLarge                 413  request_too_large
    ├── RequestTimeout                  408  request_timeout       the body came too slowly
    ├── QuotaExceeded                   429  quota_exceeded        carries ``retry_after`` seconds
    ├── BrokerUnreachable               503  broker_unreachable    fail closed (heartbeat window)
    ├── CredentialUnavailable           502  credential_unavailable
    │   ├── CredentialRefused           403  credential_refused    peer said no (its own code)
    │   └── SessionUnavailable          503  session_unavailable   no valid device session
    ├── UpstreamFailed                  502  upstream_failed
    │   └── UpstreamTimeout             504  upstream_timeout
    ├── AuditLogError                   500  audit_log_error       cannot read/append the log
    │   └── AuditChainBroken            500  audit_chain_broken    ``row`` names the first bad row
    └── DutyFailed                      500  duty_failed           a supervised duty gave up

Reasons never contain credentials, placeholder keys or request bodies.
"""

from __future__ import annotations

from typing import ClassVar

from agentkeys.error_codes import CODES, status_of
from agentkeys.errors import AgentkeysError

__all__ = [
    "AuditChainBroken",
    "AuditLogError",
    "BadProxyRequest",
    "BrokerUnreachable",
    "CallerNotAllowed",
    "CredentialRefused",
    "CredentialUnavailable",
    "DaemonError",
    "Denied",
    "DutyFailed",
    "PolicyInvalid",
    "QuotaExceeded",
    "RequestTimeout",
    "RequestTooLarge",
    "RouteNotAllowed",
    "ScopeRevoked",
    "ServiceNotAllowed",
    "SessionUnavailable",
    "UnknownService",
    "UpstreamFailed",
    "UpstreamTimeout",
]


class DaemonError(AgentkeysError):
    """Base of every error the daemon raises."""

    error: ClassVar[str] = "daemon_error"
    status: ClassVar[int] = 500


class PolicyInvalid(DaemonError):
    """The host-local policy file is missing, unsafe or malformed."""

    error: ClassVar[str] = "policy_invalid"


class Denied(DaemonError):
    """Branch: the request was refused by the host-local policy or the chain scope."""

    error: ClassVar[str] = "denied"
    status: ClassVar[int] = 403


class CallerNotAllowed(Denied):
    """No policy entry matches the caller's (uid, executable)."""

    error: ClassVar[str] = "caller_not_allowed"


class ServiceNotAllowed(Denied):
    """The caller's policy entry does not list the service."""

    error: ClassVar[str] = "service_not_allowed"


class RouteNotAllowed(Denied):
    """The method and path are outside the service's allowlist."""

    error: ClassVar[str] = "route_not_allowed"


class ScopeRevoked(Denied):
    """The chain revoked the actor's scope for the service, or this device."""

    error: ClassVar[str] = "scope_revoked"


class UnknownService(DaemonError):
    """The path names no service of the policy."""

    error: ClassVar[str] = "unknown_service"
    status: ClassVar[int] = 404


class BadProxyRequest(DaemonError):
    """A malformed path, header or body framing."""

    error: ClassVar[str] = "bad_request"
    status: ClassVar[int] = 400


class RequestTooLarge(DaemonError):
    """The request body exceeds the configured bound."""

    error: ClassVar[str] = "request_too_large"
    status: ClassVar[int] = 413


class RequestTimeout(DaemonError):
    """The request body did not arrive whole within ``listen.body_timeout``."""

    error: ClassVar[str] = "request_timeout"
    status: ClassVar[int] = 408


class QuotaExceeded(DaemonError):
    """A per-(caller, service) quota is used up; retry after ``retry_after`` seconds."""

    error: ClassVar[str] = "quota_exceeded"
    status: ClassVar[int] = 429

    def __init__(self, reason: str, *, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = max(1, retry_after)


class BrokerUnreachable(DaemonError):
    """The broker has not answered a heartbeat within the fail-closed window."""

    error: ClassVar[str] = "broker_unreachable"
    status: ClassVar[int] = 503


class CredentialUnavailable(DaemonError):
    """The credential could not be obtained (transport failure, malformed answer)."""

    error: ClassVar[str] = "credential_unavailable"
    status: ClassVar[int] = 502


class CredentialRefused(CredentialUnavailable):
    """The broker or the worker refused to hand out the credential (scope, binding, ...).

    ``code`` is the refusing peer's own error code when it is a registered one
    (agentkeys.error_codes): the daemon answers with it and its status (for example 404
    ``credential_not_found``, 403 ``service_not_in_scope``), so the caller learns what
    happened; without one it answers 403 ``credential_refused``.
    """

    error: ClassVar[str] = "credential_refused"
    status: ClassVar[int] = 403

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code if code is not None and code in CODES else None

    @property
    def answer_code(self) -> str:
        """The code the daemon answers with."""
        return self.code or self.error

    @property
    def answer_status(self) -> int:
        """The status the daemon answers with (the code's, agentkeys.error_codes)."""
        return self.status if self.code is None else status_of(self.code)

    def to_json(self) -> dict[str, str]:
        """``{error, reason}`` with the peer's code."""
        return {"error": self.answer_code, "reason": self.reason}


class SessionUnavailable(CredentialUnavailable):
    """The daemon holds no valid device session at the broker (not signed in yet, or renewals
    failed until it expired): fail closed; it recovers by itself (agentkeys.daemon.session)."""

    error: ClassVar[str] = "session_unavailable"
    status: ClassVar[int] = 503


class UpstreamFailed(DaemonError):
    """The upstream API could not be reached or broke the connection."""

    error: ClassVar[str] = "upstream_failed"
    status: ClassVar[int] = 502


class UpstreamTimeout(UpstreamFailed):
    """The upstream API did not answer in time."""

    error: ClassVar[str] = "upstream_timeout"
    status: ClassVar[int] = 504


class AuditLogError(DaemonError):
    """The audit log cannot be opened, read or appended to."""

    error: ClassVar[str] = "audit_log_error"


class AuditChainBroken(AuditLogError):
    """Verification failed; ``row`` is the 1-based number of the first bad row."""

    error: ClassVar[str] = "audit_chain_broken"

    def __init__(self, reason: str, *, row: int) -> None:
        super().__init__(f"row {row}: {reason}")
        self.row = row


class DutyFailed(DaemonError):
    """A supervised duty failed too often; the daemon stops."""

    error: ClassVar[str] = "duty_failed"
