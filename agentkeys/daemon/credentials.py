"""Where the daemon gets real credentials: the :class:`CredentialSource` interface.

* :class:`BrokerWorkerSource` — the production path (SPEC.md sections 5 and 8): mint a
  ``fetch`` cap at the broker (``POST /v1/cap/cred-fetch`` with the daemon's own device
  session, :class:`~agentkeys.daemon.session.DeviceSession`, and a K10 proof of
  possession), then fetch the credential from the worker
  (``POST /v1/cred/fetch`` presenting the cap with a worker K10 PoP). K10 never leaves
  its backend: only digests go in, signatures come out.

It is the daemon's only source: there is no local-file mode, since one would bypass the
chain scope, the caps and the worker. A :class:`Credential`'s ``expires_at`` (the cap's)
bounds how long the cache keeps it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from agentkeys.cap import CapOp
from agentkeys.clients import BrokerClient, MintedCap, WorkerClient
from agentkeys.daemon._peer import peer_errors
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable
from agentkeys.daemon.session import DeviceSession
from agentkeys.omni import normalize_hex32
from attest.device_key import DeviceKey

__all__ = [
    "BrokerWorkerSource",
    "Credential",
    "CredentialSource",
]

_SECRET = re.compile(rb"[\x21-\x7e]{1,4096}")


@dataclass(frozen=True)
class Credential:
    """A real credential and the Unix time after which it must not be used."""

    secret: bytes = field(repr=False)
    expires_at: float

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or not _SECRET.fullmatch(self.secret):
            # never echo the value: it is a secret
            raise CredentialUnavailable("the credential is not printable ASCII of 1..4096 bytes")


class CredentialSource(Protocol):
    """Fetches the real credential of ``service`` for the daemon's actor."""

    async def fetch(self, service: str) -> Credential:
        """Fetch a fresh credential.

        Raises:
            CredentialRefused: the authority said no (scope, binding, revoked device).
            CredentialUnavailable: anything else (transport, malformed answer).
        """
        ...


class BrokerWorkerSource:
    """The production credential source: broker cap mint, then worker fetch.

    Args:
        broker: client whose ``base_url`` is the broker (the caller owns it).
        worker: client whose ``base_url`` is the worker (the caller owns it).
        device_key: K10 (TPM or software); signs PoP digests only.
        session: the daemon's own device session (signed in with the same K10; the
            daemon runs its duty); told of every refusal, so that a revoked device stops
            being served.
        operator_omni, actor_omni: whose credential (64 hex).
        legacy_identity_omni: the identity omni behind the operator's master wallet (K4),
            sent on every worker fetch when set so that the worker can open a legacy v1
            envelope (and copy it lazily to v2, SPEC.md section 9 step 10); the signer
            refuses a wrong one. ``None``: fetch bodies stay ``{}``.
        clock: Unix seconds.

    Raises:
        InvalidIdentifier: ``legacy_identity_omni`` is not 64 hex digits.

    Wire formats: :class:`agentkeys.clients.BrokerClient` (``mint_cap``) and
    :class:`agentkeys.clients.WorkerClient` (``fetch``, body ``{}`` or
    ``{"legacy_identity_omni": <hex64>}``); their errors are translated by
    :func:`agentkeys.daemon._peer.peer_errors`.
    """

    def __init__(
        self,
        *,
        broker: httpx.AsyncClient,
        worker: httpx.AsyncClient,
        device_key: DeviceKey,
        session: DeviceSession,
        operator_omni: str,
        actor_omni: str,
        legacy_identity_omni: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = BrokerClient(broker, clock=clock)
        self._worker = WorkerClient(worker, clock=clock)
        self._key = device_key
        self.session = session
        self._operator = operator_omni
        self._actor = actor_omni
        self._legacy = (
            None if legacy_identity_omni is None else normalize_hex32(legacy_identity_omni)
        )

    @contextmanager
    def _peer(self) -> Iterator[None]:
        """:func:`peer_errors`, and the session told of every refusal."""
        try:
            with peer_errors():
                yield
        except CredentialRefused as exc:
            self.session.refused(exc.code)
            raise

    async def mint(self, service: str) -> MintedCap:
        """Mint a ``fetch`` cap for ``service``."""
        session = self.session.token().decode("ascii")
        with self._peer():
            return await self._broker.mint_cap(
                CapOp.FETCH,
                session=session,
                device_key=self._key,
                operator_omni=self._operator,
                actor_omni=self._actor,
                service=service,
            )

    async def fetch(self, service: str) -> Credential:
        """Mint a cap and fetch ``service``'s credential from the worker."""
        minted = await self.mint(service)
        with self._peer():
            fetched = await self._worker.fetch(minted, self._key, legacy_identity_omni=self._legacy)
        return Credential(secret=fetched.credential, expires_at=float(minted.expires_at))
