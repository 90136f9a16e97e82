"""The broker's and the worker's failures, as the daemon's errors, refusals logged.

The typed clients (:mod:`agentkeys.clients`) raise :mod:`agentkeys.clients.errors`;
:func:`peer_errors` translates them at the boundary (a 401, 403 or 404 is a refusal, any
other status, a transport failure or a malformed answer an outage) and logs each refusal
with the status, the code and a printable, bounded reason (the peers' reasons name
identifiers and rules, never a secret; the daemon's own session and proofs are never
logged).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from agentkeys.clients import AnswerMalformed, PeerRefused, PeerUnreachable
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable

__all__ = ["peer_errors"]

_log = logging.getLogger("agentkeys.daemon")
_REASON_UNSAFE = re.compile(r"[^\x20-\x7e]")
_REFUSALS = (401, 403, 404)


def _log_refusal(exc: PeerRefused, code: str) -> None:
    """Log a peer's refusal: status, code and its (printable, bounded) reason."""
    reason = exc.peer_reason
    text = _REASON_UNSAFE.sub("?", reason[:200]) if reason is not None else "-"
    _log.warning("the %s refused: HTTP %d %s (%s)", exc.who, exc.http_status, code, text)


@contextmanager
def peer_errors() -> Iterator[None]:
    """Translate the typed clients' errors raised inside into the daemon's.

    Raises:
        CredentialRefused: a 401, 403 or 404 (with the peer's code when registered).
        CredentialUnavailable: any other status, no answer, an oversized or malformed one.
    """
    try:
        yield
    except PeerUnreachable as exc:
        raise CredentialUnavailable(f"{exc.who} unreachable: {exc.transport}") from exc
    except PeerRefused as exc:
        if exc.http_status in _REFUSALS:
            code = exc.code or "refused"
            _log_refusal(exc, code)
            raise CredentialRefused(f"the {exc.who} refused: {code}", code=code) from exc
        code = exc.code or "no error code"
        _log_refusal(exc, code)
        raise CredentialUnavailable(
            f"the {exc.who} answered HTTP {exc.http_status} ({code})"
        ) from exc
    except AnswerMalformed as exc:
        raise CredentialUnavailable(exc.reason) from exc
