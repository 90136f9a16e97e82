"""``--credential-backend sidecar``: the master's vault operations through broker + worker.

SPEC.md sections 5 and 7; wire formats in docs/broker.md ("Cap minting") and docs/worker.md
("Wire format"), spoken by the typed clients :mod:`agentkeys.clients` (as the daemon's
:class:`agentkeys.daemon.BrokerWorkerSource` does); this module adds the J1 session and the
command line's errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from agentkeys.cap import CapOp
from agentkeys.cli._errors import peer_failure
from agentkeys.clients import BrokerClient, ClientError, MintedCap, WorkerClient
from attest.device_key import DeviceKey

__all__ = ["LIST_SERVICE", "SidecarVault"]

LIST_SERVICE = "all"  # a cap names one service; ``list`` caps of a master's own vault use this
MAX_ANSWER = 256 * 1024


class SidecarVault:
    """One actor's vault, operated by a master device.

    Args:
        broker, worker: clients whose ``base_url`` is the broker / worker (caller owns them).
        device_key: this master device's K10 (signs PoP digests only).
        session: the operator's J1 session token.
        operator_omni, actor_omni: 64 hex (actor = operator for the master's own vault).
    """

    def __init__(
        self,
        *,
        broker: httpx.AsyncClient,
        worker: httpx.AsyncClient,
        device_key: DeviceKey,
        session: str,
        operator_omni: str,
        actor_omni: str,
    ) -> None:
        self._broker = BrokerClient(broker, max_answer=MAX_ANSWER)
        self._worker = WorkerClient(worker, max_answer=MAX_ANSWER)
        self._key = device_key
        self._session = session
        self._operator = operator_omni
        self._actor = actor_omni

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The clients' errors as the command line's (exit codes, ``--json`` codes)."""
        try:
            yield
        except ClientError as exc:
            peer = self._worker if exc.who == "worker" else self._broker
            raise peer_failure(exc, url=peer.http.base_url, vault=True) from None

    async def _mint(self, op: CapOp, service: str) -> MintedCap:
        with self._errors():
            return await self._broker.mint_cap(
                op,
                session=self._session,
                device_key=self._key,
                operator_omni=self._operator,
                actor_omni=self._actor,
                service=service,
            )

    async def store(self, service: str, secret: bytes) -> dict[str, Any]:
        """Store ``secret`` as a 0x04 envelope at the actor's v2 key."""
        minted = await self._mint(CapOp.STORE, service)
        with self._errors():
            stored = await self._worker.store(minted, self._key, secret)
        return dict(stored.answer)

    async def fetch(
        self, service: str, *, legacy_identity_omni: str | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """The credential and the worker's answer without it (source, key, migration)."""
        minted = await self._mint(CapOp.FETCH, service)
        with self._errors():
            fetched = await self._worker.fetch(
                minted, self._key, legacy_identity_omni=legacy_identity_omni
            )
        return fetched.credential, dict(fetched.answer)

    async def list(self, cap_service: str = LIST_SERVICE) -> list[dict[str, Any]]:
        """The actor's services (``[{service, source}]``).

        The cap names one service: for the master's own vault the placeholder ``all``; for an
        agent's vault the broker mints only for a service in the agent's chain scope, so the
        caller passes one (``cap_service``); the worker lists the whole vault either way.
        """
        minted = await self._mint(CapOp.LIST, cap_service)
        with self._errors():
            listed = await self._worker.list(minted, self._key)
        return [{"service": s.service, "source": s.source} for s in listed.services]

    async def teardown(self, service: str) -> dict[str, Any]:
        """Delete ``service``'s credential (v2 and v1 keys)."""
        minted = await self._mint(CapOp.TEARDOWN, service)
        with self._errors():
            torn = await self._worker.teardown(minted, self._key)
        return dict(torn.answer)
