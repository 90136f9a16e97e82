"""The worker's client: the four vault operations, each presenting a cap with its K10 PoP.

Wire format (docs/worker.md, SPEC.md section 5), as the worker implements it in
``agentkeys.worker._core``: ``POST /v1/cred/<op>`` with ``Authorization: Cap <token>``,
``Agentkeys-Pop: <proof>`` (the :class:`~agentkeys.pop.WorkerPopClaims` over the cap's
digest, the op and the exact body bytes, signed by K10) and a JSON body:

* ``fetch`` ``{}`` or ``{"legacy_identity_omni": <hex64>}`` → ``{credential, source, key,
  …}`` → :class:`Fetched`;
* ``store`` ``{"credential": <base64url>}`` → ``{service, key, envelope_version, …}`` →
  :class:`Stored`;
* ``list`` ``{}`` → ``{services: [{service, source}]}`` → :class:`Listed`;
* ``teardown`` ``{}`` → ``{service, deleted: {v2, v1}}`` (counts) → :class:`TornDown`.

A cap of another operation is the worker's to refuse (``cap_operation_mismatch``). Each
result keeps the worker's whole ``answer`` (without the credential) for display.
Failures are :mod:`agentkeys.clients.errors`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.cap import CapOp, cap_digest
from agentkeys.clients._answer import Answer, PeerClient, integer, prove, text
from agentkeys.clients.broker import MintedCap
from agentkeys.errors import InvalidEncoding
from agentkeys.omni import normalize_hex32
from agentkeys.pop import PopProof, new_worker_pop_claims
from attest.device_key import DeviceKey

__all__ = [
    "Fetched",
    "Listed",
    "ListedService",
    "Stored",
    "TornDown",
    "WorkerClient",
    "worker_path",
    "worker_request_headers",
]


def worker_path(op: CapOp) -> str:
    """The worker's route for ``op`` (``/v1/cred/<op>``)."""
    return f"/v1/cred/{op.value}"


def worker_request_headers(token: str, proof: PopProof) -> dict[str, str]:
    """The headers of a worker request: the cap ``token`` and the worker ``proof``."""
    return {
        "Authorization": "Cap " + token,
        "Agentkeys-Pop": proof.to_header_value(),
        "Content-Type": "application/json",
    }


@dataclass(frozen=True)
class Fetched:
    """A fetched credential (never printed) and the rest of the worker's answer."""

    credential: bytes = field(repr=False)
    source: str
    key: str
    answer: Mapping[str, object]

    @classmethod
    def from_answer(cls, answer: Answer) -> Fetched:
        """Read ``{credential, source, key, …}``.

        Raises:
            AnswerMalformed: a member is missing, or the credential is not base64url.
        """
        try:
            credential = b64url_decode(text(answer, "credential"))
        except InvalidEncoding:
            raise answer.malformed("credential is not base64url") from None
        return cls(
            credential=credential,
            source=text(answer, "source"),
            key=text(answer, "key"),
            answer={k: v for k, v in answer.doc.items() if k != "credential"},
        )


@dataclass(frozen=True)
class Stored:
    """Where ``store`` wrote the envelope."""

    key: str
    envelope_version: int
    answer: Mapping[str, object]

    @classmethod
    def from_answer(cls, answer: Answer) -> Stored:
        """Read ``{key, envelope_version, …}``.

        Raises:
            AnswerMalformed: a member is missing.
        """
        return cls(
            key=text(answer, "key"),
            envelope_version=integer(answer, "envelope_version"),
            answer=answer.doc,
        )


@dataclass(frozen=True)
class ListedService:
    """One service of a vault and where its credential lives (``v2`` / ``v1``)."""

    service: str
    source: str


@dataclass(frozen=True)
class Listed:
    """The services of a vault."""

    services: tuple[ListedService, ...]
    answer: Mapping[str, object]

    @classmethod
    def from_answer(cls, answer: Answer) -> Listed:
        """Read ``{services: [{service, source}], …}``.

        Raises:
            AnswerMalformed: ``services`` is missing or holds another shape.
        """
        services = answer.doc.get("services")
        if not isinstance(services, list):
            raise answer.malformed("answer lacks services")
        listed = []
        for entry in services:
            if not isinstance(entry, dict):
                raise answer.malformed("services holds a non-object")
            item = Answer(entry, who=answer.who, path=answer.path)
            listed.append(ListedService(service=text(item, "service"), source=text(item, "source")))
        return cls(services=tuple(listed), answer=answer.doc)


@dataclass(frozen=True)
class TornDown:
    """What ``teardown`` deleted: objects per key layout (``{"v2": 1, "v1": 0}``)."""

    deleted: Mapping[str, int]
    answer: Mapping[str, object]

    @classmethod
    def from_answer(cls, answer: Answer) -> TornDown:
        """Read ``{deleted: {v2, v1}, …}``.

        Raises:
            AnswerMalformed: ``deleted`` is missing or not an object of counts.
        """
        deleted = answer.doc.get("deleted")
        if not isinstance(deleted, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in deleted.values()
        ):
            raise answer.malformed("answer lacks deleted")
        return cls(deleted=deleted, answer=answer.doc)


class WorkerClient(PeerClient):
    """Typed requests to the worker (``http``, ``clock``, ``max_answer``: see
    :class:`~agentkeys.clients._answer.PeerClient`)."""

    who = "worker"

    async def _call(
        self, op: CapOp, minted: MintedCap, device_key: DeviceKey, body: dict[str, str]
    ) -> Answer:
        content = json.dumps(body, separators=(",", ":")).encode()
        claims = new_worker_pop_claims(
            cap_digest=cap_digest(minted.cap.payload),
            op=op,
            body=content,
            now=int(self._clock()),
        )
        proof = await prove(device_key, claims)
        return await self._request(
            "POST",
            worker_path(op),
            content=content,
            headers=worker_request_headers(minted.token, proof),
        )

    async def fetch(
        self, minted: MintedCap, device_key: DeviceKey, *, legacy_identity_omni: str | None = None
    ) -> Fetched:
        """Fetch the credential of the cap's service.

        Args:
            legacy_identity_omni: the identity behind the operator's master wallet, so that
                the worker can open a legacy v1 envelope; ``None`` sends ``{}``.

        Raises:
            InvalidIdentifier: ``legacy_identity_omni`` is not 64 hex digits.
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        body: dict[str, str] = {}
        if legacy_identity_omni is not None:
            body["legacy_identity_omni"] = normalize_hex32(legacy_identity_omni)
        return Fetched.from_answer(await self._call(CapOp.FETCH, minted, device_key, body))

    async def store(self, minted: MintedCap, device_key: DeviceKey, secret: bytes) -> Stored:
        """Store ``secret`` under the cap's service.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        body = {"credential": b64url_encode(secret)}
        return Stored.from_answer(await self._call(CapOp.STORE, minted, device_key, body))

    async def list(self, minted: MintedCap, device_key: DeviceKey) -> Listed:
        """The services of the cap's vault (the cap names one service; all are listed).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        return Listed.from_answer(await self._call(CapOp.LIST, minted, device_key, {}))

    async def teardown(self, minted: MintedCap, device_key: DeviceKey) -> TornDown:
        """Delete the cap's service's credential (v2 and v1 keys).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        return TornDown.from_answer(await self._call(CapOp.TEARDOWN, minted, device_key, {}))
