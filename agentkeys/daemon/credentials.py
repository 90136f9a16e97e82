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

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from agentkeys.cap import CapOp, SignedCap, cap_digest
from agentkeys.daemon._peer import peer_answer
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable
from agentkeys.daemon.session import DeviceSession
from agentkeys.errors import AgentkeysError
from agentkeys.jwks import b64url_decode, b64url_encode
from agentkeys.omni import normalize_hex32
from agentkeys.pop import PopProof, new_mint_pop_claims, new_worker_pop_claims
from attest.device_key import DeviceKey, key_hash

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

    Wire formats: the broker's as implemented in ``agentkeys.broker._service.mint``
    (request ``CapMintRequest``; answer ``{cap, token, expires_at, scope_source}``) and
    the worker's as implemented in ``agentkeys.worker._core`` (``POST /v1/cred/fetch``
    with the body ``{}`` or ``{"legacy_identity_omni": <hex64>}`` (docs/worker.md),
    ``Authorization: Cap <token>``, ``Agentkeys-Pop: <proof>`` covering the body;
    answer ``{"credential": <base64url>, ...}``).
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
        self._broker = broker
        self._worker = worker
        self._key = device_key
        self.session = session
        self._operator = operator_omni
        self._actor = actor_omni
        body: dict[str, str] = {}
        if legacy_identity_omni is not None:
            body["legacy_identity_omni"] = normalize_hex32(legacy_identity_omni)
        self._fetch_body = json.dumps(body, separators=(",", ":")).encode()
        self._dkh = key_hash(device_key)
        self._clock = clock

    def _answer(self, response: httpx.Response, who: str) -> dict[str, object]:
        try:
            return peer_answer(response, who)
        except CredentialRefused as exc:
            self.session.refused(exc.code)
            raise

    async def _sign(self, message: bytes) -> str:
        return b64url_encode(await self._key.sign(hashlib.sha256(message).digest()))

    async def mint(self, service: str) -> tuple[SignedCap, str, int]:
        """Mint a ``fetch`` cap for ``service``: (cap, token, expires_at)."""
        claims = new_mint_pop_claims(
            op=CapOp.FETCH,
            operator_omni=self._operator,
            actor_omni=self._actor,
            service=service,
            device_key_hash=self._dkh,
            now=int(self._clock()),
        )
        proof = PopProof(claims.timestamp, claims.nonce, await self._sign(claims.message()))
        body = {
            "operator_omni": self._operator,
            "actor_omni": self._actor,
            "service": service,
            "device_key_hash": self._dkh,
            "pop": proof.to_header_value(),
        }
        headers = {"authorization": "Bearer " + self.session.token().decode("ascii")}
        try:
            response = await self._broker.post("/v1/cap/cred-fetch", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CredentialUnavailable(f"broker unreachable: {type(exc).__name__}") from exc
        doc = self._answer(response, "broker")
        try:
            cap = SignedCap.from_wire(doc.get("cap"))
        except AgentkeysError as exc:
            raise CredentialUnavailable(f"the broker's cap is malformed: {exc.reason}") from exc
        token = doc.get("token")
        if not isinstance(token, str):
            raise CredentialUnavailable("the broker's answer lacks the cap token")
        return cap, token, cap.payload.expires_at

    async def fetch(self, service: str) -> Credential:
        """Mint a cap and fetch ``service``'s credential from the worker."""
        cap, token, expires_at = await self.mint(service)
        body = self._fetch_body
        claims = new_worker_pop_claims(
            cap_digest=cap_digest(cap.payload), op=CapOp.FETCH, body=body, now=int(self._clock())
        )
        proof = PopProof(claims.timestamp, claims.nonce, await self._sign(claims.message()))
        headers = {
            "authorization": "Cap " + token,
            "agentkeys-pop": proof.to_header_value(),
            "content-type": "application/json",
        }
        try:
            response = await self._worker.post("/v1/cred/fetch", content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CredentialUnavailable(f"worker unreachable: {type(exc).__name__}") from exc
        doc = self._answer(response, "worker")
        raw = doc.get("credential")
        if not isinstance(raw, str):
            raise CredentialUnavailable("the worker's answer lacks the credential")
        try:
            secret = b64url_decode(raw)
        except AgentkeysError as exc:
            raise CredentialUnavailable("the worker's credential is not base64url") from exc
        return Credential(secret=secret, expires_at=float(expires_at))
