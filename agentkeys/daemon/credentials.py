"""Where the daemon gets real credentials: the :class:`CredentialSource` interface.

* :class:`BrokerWorkerSource` — the production path (SPEC.md sections 5 and 8): mint a
  ``fetch`` cap at the broker (``POST /v1/cap/cred-fetch`` with the operator's J1
  session and a K10 proof of possession), then fetch the credential from the worker
  (``POST /v1/cred/fetch`` presenting the cap with a worker K10 PoP). K10 never leaves
  its backend: only digests go in, signatures come out.
* :class:`FileCredentialSource` — **interim** path for single-host development while the
  worker is not available: credentials from a 0600 TOML file (``[credentials]
  <service> = "<secret>"``) owned by the daemon's user. It does no chain checks; do not
  use it where the chain scope must bound the daemon.

Both return a :class:`Credential` whose ``expires_at`` bounds how long the cache keeps it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import trio

from agentkeys.cap import CapOp, SignedCap, cap_digest
from agentkeys.config import ConfigError, check_private_file
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable
from agentkeys.errors import AgentkeysError
from agentkeys.jwks import b64url_decode, b64url_encode
from agentkeys.pop import PopProof, new_mint_pop_claims, new_worker_pop_claims
from attest.device_key import DeviceKey, key_hash

__all__ = [
    "BrokerWorkerSource",
    "Credential",
    "CredentialSource",
    "FileCredentialSource",
]

_SECRET = re.compile(rb"[\x21-\x7e]{1,4096}")
MAX_ANSWER_BYTES = 64 * 1024


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


class FileCredentialSource:
    """INTERIM credential source: a 0600 TOML file ``[credentials] <service> = "<secret>"``.

    Args:
        path: the file (refused unless 0600 and owned by us or root).
        lifetime: seconds a fetched credential may be cached.
    """

    def __init__(
        self, path: Path, *, lifetime: float = 300.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._path = path
        self._lifetime = lifetime
        self._clock = clock
        self._limiter = trio.CapacityLimiter(1)

    def _read(self) -> Mapping[str, object]:
        try:
            check_private_file(self._path)
            with self._path.open("rb") as fh:
                data = tomllib.load(fh)
        except ConfigError as exc:
            raise CredentialUnavailable(exc.reason) from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CredentialUnavailable(f"cannot read {self._path}") from exc
        creds = data.get("credentials")
        if not isinstance(creds, dict):
            raise CredentialUnavailable(f"{self._path} has no [credentials] table")
        return creds

    async def fetch(self, service: str) -> Credential:
        """The file's credential for ``service``.

        Raises:
            CredentialRefused: the file has none for ``service``.
            CredentialUnavailable: unreadable or unsafe file, malformed value.
        """
        creds = await trio.to_thread.run_sync(self._read, limiter=self._limiter)
        value = creds.get(service)
        if not isinstance(value, str):
            raise CredentialRefused(f"no credential for {service!r} in the credential file")
        return Credential(secret=value.encode("utf-8"), expires_at=self._clock() + self._lifetime)


def _answer(response: httpx.Response, who: str) -> dict[str, object]:
    if response.status_code in (401, 403, 404):
        try:
            code = response.json().get("error", "refused")
        except (ValueError, AttributeError):
            code = "refused"
        raise CredentialRefused(f"the {who} refused: {str(code)[:64]}")
    if response.status_code != 200:
        raise CredentialUnavailable(f"the {who} answered HTTP {response.status_code}")
    if len(response.content) > MAX_ANSWER_BYTES:
        raise CredentialUnavailable(f"the {who}'s answer is too large")
    try:
        doc = json.loads(response.content)
    except ValueError as exc:
        raise CredentialUnavailable(f"the {who}'s answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise CredentialUnavailable(f"the {who}'s answer is not a JSON object")
    return doc


class BrokerWorkerSource:
    """The production credential source: broker cap mint, then worker fetch.

    Args:
        broker: client whose ``base_url`` is the broker (the caller owns it).
        worker: client whose ``base_url`` is the worker (the caller owns it).
        device_key: K10 (TPM or software); signs PoP digests only.
        session: the operator's J1 session token (bytes; never logged).
        operator_omni, actor_omni: whose credential (64 hex).
        clock: Unix seconds.

    Wire formats: the broker's as implemented in ``agentkeys.broker._service.mint``
    (request ``CapMintRequest``; answer ``{cap, token, expires_at, scope_source}``) and
    the worker's as implemented in ``agentkeys.worker._core`` (``POST /v1/cred/fetch``
    with an empty body, ``Authorization: Cap <token>``, ``Agentkeys-Pop: <proof>``;
    answer ``{"credential": <base64url>, ...}``).
    """

    def __init__(
        self,
        *,
        broker: httpx.AsyncClient,
        worker: httpx.AsyncClient,
        device_key: DeviceKey,
        session: bytes,
        operator_omni: str,
        actor_omni: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = broker
        self._worker = worker
        self._key = device_key
        self._session = session
        self._operator = operator_omni
        self._actor = actor_omni
        self._dkh = key_hash(device_key)
        self._clock = clock

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
        headers = {"authorization": "Bearer " + self._session.decode("ascii")}
        try:
            response = await self._broker.post("/v1/cap/cred-fetch", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CredentialUnavailable(f"broker unreachable: {type(exc).__name__}") from exc
        doc = _answer(response, "broker")
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
        body = b""
        claims = new_worker_pop_claims(
            cap_digest=cap_digest(cap.payload), op=CapOp.FETCH, body=body, now=int(self._clock())
        )
        proof = PopProof(claims.timestamp, claims.nonce, await self._sign(claims.message()))
        headers = {"authorization": "Cap " + token, "agentkeys-pop": proof.to_header_value()}
        try:
            response = await self._worker.post("/v1/cred/fetch", content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CredentialUnavailable(f"worker unreachable: {type(exc).__name__}") from exc
        doc = _answer(response, "worker")
        raw = doc.get("credential")
        if not isinstance(raw, str):
            raise CredentialUnavailable("the worker's answer lacks the credential")
        try:
            secret = b64url_decode(raw)
        except AgentkeysError as exc:
            raise CredentialUnavailable("the worker's credential is not base64url") from exc
        return Credential(secret=secret, expires_at=float(expires_at))
