"""What a signer failure means to the worker: the client's errors as the worker's two codes.

The worker reaches the signer through :class:`agentkeys.clients.SignerClient` (mutual TLS,
role ``worker``); :func:`signer_failures` wraps each call. The signer not reached
(:class:`~agentkeys.clients.errors.PeerUnreachable`: connection refused or reset, a timeout,
the connection closed before the answer) is :class:`SignerUnavailable` (503, retry later);
a signer that answered wrongly (a refusal, a malformed or oversized answer, a TLS alert or
a certificate that fails verification or the role check) is :class:`SignerFailed` (502).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agentkeys.clients.errors import (
    ClientError,
    PeerRefused,
    PeerUnreachable,
    PeerUntrusted,
)
from agentkeys.worker.errors import SignerFailed, SignerUnavailable

__all__ = ["signer_failures"]


def _translated(exc: ClientError) -> SignerFailed:
    if isinstance(exc, PeerUnreachable):
        return SignerUnavailable(f"signer unreachable on {exc.path} ({exc.transport})")
    if isinstance(exc, PeerUntrusted):
        return SignerFailed(f"signer rejected on {exc.path} ({exc.failure})")
    if isinstance(exc, PeerRefused):
        detail = f"{exc.code}: {exc.peer_reason}" if exc.code else f"HTTP {exc.http_status}"
        return SignerFailed(f"signer refused {exc.path} ({detail[:300]})")
    return SignerFailed(f"{exc.reason} on {exc.path}")


@contextmanager
def signer_failures() -> Iterator[None]:
    """Re-raise a signer client's failure as :class:`SignerUnavailable` / :class:`SignerFailed`."""
    try:
        yield
    except ClientError as exc:
        raise _translated(exc) from None
