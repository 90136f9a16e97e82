"""``--credential-backend sidecar``: the master's vault operations through broker + worker.

SPEC.md sections 5 and 7; wire formats in docs/broker.md ("Cap minting") and docs/worker.md
("Wire format"). The daemon's :class:`agentkeys.daemon.BrokerWorkerSource` mints only
``fetch`` caps and sends only an empty body, so ``store``, ``list``, ``teardown`` and a fetch
naming ``legacy_identity_omni`` cannot go through it; this client is built on the same
primitives (:mod:`agentkeys.pop`, :mod:`agentkeys.cap`). (To share one client, the daemon's
source would take the operation and the body as parameters of ``mint``/``fetch``.)
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx

from agentkeys.cap import CapOp, SignedCap, cap_digest
from agentkeys.cli._bootstrap import BrokerUnreachable
from agentkeys.cli._common import EXIT_REJECTED, CliError, one_line
from agentkeys.errors import AgentkeysError
from agentkeys.jwks import b64url_decode, b64url_encode
from agentkeys.pop import PopProof, new_mint_pop_claims, new_worker_pop_claims
from attest.device_key import DeviceKey, key_hash

__all__ = ["LIST_SERVICE", "SidecarRefused", "SidecarVault", "WorkerUnreachable"]

LIST_SERVICE = "all"  # a cap names one service; ``list`` caps of a master's own vault use this
MAX_ANSWER = 256 * 1024


class SidecarRefused(CliError):
    """The broker or the worker refused; ``code`` is their error code (also in the reason),
    which ``--json`` prints as ``error``."""

    error = "sidecar_refused"
    exit_code = EXIT_REJECTED

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


class WorkerUnreachable(CliError):
    """The worker did not answer (exit 1, as an unreachable broker)."""

    error = "worker_unreachable"
    status = 503  # the one status of this code (agentkeys.error_codes)


def _doc(response: httpx.Response, who: str, path: str) -> dict[str, Any]:
    try:
        doc = json.loads(response.content[:MAX_ANSWER])
    except ValueError:
        doc = None
    if response.status_code != 200 or not isinstance(doc, dict):
        code = doc.get("error") if isinstance(doc, dict) else None
        reason = doc.get("reason") if isinstance(doc, dict) else None
        detail = f"{code}: {reason}" if code else f"HTTP {response.status_code}"
        peer = str(code) if isinstance(code, str) else None
        raise SidecarRefused(f"the {who} refused {path} ({one_line(detail)})", code=peer)
    return doc


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
        self._broker = broker
        self._worker = worker
        self._key = device_key
        self._session = session
        self._operator = operator_omni
        self._actor = actor_omni
        self._dkh = key_hash(device_key)

    async def _sign(self, message: bytes) -> str:
        return b64url_encode(await self._key.sign(hashlib.sha256(message).digest()))

    async def _mint(self, op: CapOp, service: str) -> tuple[SignedCap, str]:
        claims = new_mint_pop_claims(
            op=op,
            operator_omni=self._operator,
            actor_omni=self._actor,
            service=service,
            device_key_hash=self._dkh,
            now=int(time.time()),
        )
        proof = PopProof(claims.timestamp, claims.nonce, await self._sign(claims.message()))
        path = f"/v1/cap/cred-{op.value}"
        try:
            response = await self._broker.post(
                path,
                json={
                    "operator_omni": self._operator,
                    "actor_omni": self._actor,
                    "service": service,
                    "device_key_hash": self._dkh,
                    "pop": proof.to_header_value(),
                },
                headers={"authorization": f"Bearer {self._session}"},
            )
        except httpx.HTTPError as exc:
            raise BrokerUnreachable(
                f"the broker is unreachable ({type(exc).__name__}); start it (`agentkeys dev up`)"
            ) from None
        doc = _doc(response, "broker", path)
        try:
            cap = SignedCap.from_wire(doc.get("cap"))
        except AgentkeysError as exc:
            raise SidecarRefused(f"the broker's cap is malformed ({exc.error})") from None
        token = doc.get("token")
        if not isinstance(token, str):
            raise SidecarRefused("the broker's answer lacks the cap token")
        return cap, token

    async def _call(self, op: CapOp, service: str, body: dict[str, Any]) -> dict[str, Any]:
        cap, token = await self._mint(op, service)
        raw = json.dumps(body).encode()
        claims = new_worker_pop_claims(
            cap_digest=cap_digest(cap.payload), op=op, body=raw, now=int(time.time())
        )
        proof = PopProof(claims.timestamp, claims.nonce, await self._sign(claims.message()))
        path = f"/v1/cred/{op.value}"
        try:
            response = await self._worker.post(
                path,
                content=raw,
                headers={
                    "authorization": f"Cap {token}",
                    "agentkeys-pop": proof.to_header_value(),
                    "content-type": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            raise WorkerUnreachable(
                f"the worker at {self._worker.base_url} is unreachable ({type(exc).__name__}); "
                "start it (`agentkeys dev up`) or pass --worker-url"
            ) from None
        return _doc(response, "worker", path)

    async def store(self, service: str, secret: bytes) -> dict[str, Any]:
        """Store ``secret`` as a 0x04 envelope at the actor's v2 key."""
        return await self._call(CapOp.STORE, service, {"credential": b64url_encode(secret)})

    async def fetch(
        self, service: str, *, legacy_identity_omni: str | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """The credential and the worker's answer without it (source, key, migration)."""
        body: dict[str, Any] = {}
        if legacy_identity_omni is not None:
            body["legacy_identity_omni"] = legacy_identity_omni
        doc = await self._call(CapOp.FETCH, service, body)
        raw = doc.pop("credential", None)
        if not isinstance(raw, str):
            raise SidecarRefused("the worker's answer lacks the credential")
        return b64url_decode(raw), doc

    async def list(self, cap_service: str = LIST_SERVICE) -> list[dict[str, Any]]:
        """The actor's services (``[{service, source}]``).

        The cap names one service: for the master's own vault the placeholder ``all``; for an
        agent's vault the broker mints only for a service in the agent's chain scope, so the
        caller passes one (``cap_service``); the worker lists the whole vault either way.
        """
        doc = await self._call(CapOp.LIST, cap_service, {})
        services = doc.get("services")
        return [s for s in services if isinstance(s, dict)] if isinstance(services, list) else []

    async def teardown(self, service: str) -> dict[str, Any]:
        """Delete ``service``'s credential (v2 and v1 keys)."""
        return await self._call(CapOp.TEARDOWN, service, {})
