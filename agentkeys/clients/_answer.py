"""One request to a peer and its answer: a JSON object, or a typed error (agentkeys.clients).

Both peers answer a refusal with ``{error, reason}`` (``AgentkeysError.to_json``) and
success with a JSON object; :class:`PeerClient` turns anything else into
:mod:`agentkeys.clients.errors`. The members readers (:func:`text`, :func:`integer`, …)
raise :class:`AnswerMalformed` naming the member, never a ``KeyError``; :func:`prove` signs
a PoP with K10 (digests in, signatures out) for both clients.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from agentkeys.b64url import b64url_encode
from agentkeys.clients.errors import AnswerMalformed, PeerRefused, PeerUnreachable
from agentkeys.pop import MintPopClaims, PopProof, WorkerPopClaims
from attest.device_key import DeviceKey

__all__ = [
    "MAX_ANSWER_BYTES",
    "Answer",
    "PeerClient",
    "hex64",
    "integer",
    "prove",
    "read_answer",
    "refusal",
    "text",
]

MAX_ANSWER_BYTES = 64 * 1024
"""The default bound of an answer (a larger 200 answer is malformed)."""

_CODE = re.compile(r"[a-z0-9_]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


_OK = frozenset({200})


class Answer:
    """A peer's JSON object (``status``: 200 or another status the caller accepts), with
    the peer and path it came from (for errors)."""

    def __init__(self, doc: dict[str, Any], *, who: str, path: str, status: int = 200) -> None:
        self.doc = doc
        self.who = who
        self.path = path
        self.status = status

    def malformed(self, what: str) -> AnswerMalformed:
        """An :class:`AnswerMalformed` saying ``the <who>'s <what>``."""
        return AnswerMalformed(f"the {self.who}'s {what}", who=self.who, path=self.path)


def refusal(
    response: httpx.Response, *, who: str, path: str, max_bytes: int = MAX_ANSWER_BYTES
) -> PeerRefused:
    """The :class:`PeerRefused` of a non-200 ``response`` (its ``{error, reason}`` when sent)."""
    doc: object = None
    if len(response.content) <= max_bytes:
        try:
            doc = json.loads(response.content)
        except ValueError:
            doc = None
    code = doc.get("error") if isinstance(doc, dict) else None
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return PeerRefused(
        who=who,
        path=path,
        http_status=response.status_code,
        code=code if isinstance(code, str) and _CODE.fullmatch(code) else None,
        peer_reason=reason if isinstance(reason, str) else None,
    )


async def prove(device_key: DeviceKey, claims: MintPopClaims | WorkerPopClaims) -> PopProof:
    """The PoP of ``claims``: K10 signs the SHA-256 digest of their message (SPEC.md 5)."""
    signature = await device_key.sign(hashlib.sha256(claims.message()).digest())
    return PopProof(claims.timestamp, claims.nonce, b64url_encode(signature))


class PeerClient:
    """What both typed clients share: the peer's httpx client, the clock, the answer bound.

    Args:
        http: client whose ``base_url`` is the peer (the caller owns and closes it).
        clock: Unix seconds (PoP timestamps).
        max_answer: the largest answer read as JSON (bytes).
    """

    who: ClassVar[str]

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        max_answer: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.http = http
        self._clock = clock
        self._max = max_answer

    async def _send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (``content``: the exact body bytes a PoP covers); the answer.

        Raises:
            PeerUnreachable: transport failure (no answer).
        """
        try:
            return await self.http.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise PeerUnreachable(who=self.who, path=path, transport=type(exc).__name__) from exc

    async def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        accept: frozenset[int] = _OK,
    ) -> Answer:
        """Send one request (see :meth:`_send`) and return the peer's JSON object.

        Raises:
            PeerUnreachable: transport failure (no answer).
            PeerRefused, AnswerMalformed: see :func:`read_answer`.
        """
        response = await self._send(method, path, content=content, headers=headers)
        return read_answer(response, who=self.who, path=path, max_bytes=self._max, accept=accept)


def read_answer(
    response: httpx.Response,
    *,
    who: str,
    path: str,
    max_bytes: int = MAX_ANSWER_BYTES,
    accept: frozenset[int] = _OK,
) -> Answer:
    """The JSON object of ``response`` (read in full), whose status is one of ``accept``.

    Raises:
        PeerRefused: any other status.
        AnswerMalformed: an accepted answer larger than ``max_bytes``, not JSON, or not an
            object.
    """
    if response.status_code not in accept:
        raise refusal(response, who=who, path=path, max_bytes=max_bytes)
    answer = Answer({}, who=who, path=path, status=response.status_code)
    if len(response.content) > max_bytes:
        raise answer.malformed("answer is too large")
    try:
        doc = json.loads(response.content)
    except ValueError as exc:
        raise answer.malformed("answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise answer.malformed("answer is not a JSON object")
    answer.doc = doc
    return answer


def text(answer: Answer, name: str) -> str:
    """The non-empty printable-ASCII string member ``name``.

    Raises:
        AnswerMalformed: missing or another type.
    """
    value = answer.doc.get(name)
    if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable():
        raise answer.malformed(f"answer lacks {name}")
    return value


def hex64(answer: Answer, name: str) -> str:
    """The member ``name``: 64 lowercase hex digits (an omni or a device_key_hash).

    Raises:
        AnswerMalformed: missing or another form.
    """
    value = answer.doc.get(name)
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise answer.malformed(f"answer lacks {name} (64 hex digits)")
    return value


def integer(answer: Answer, name: str) -> int:
    """The integer (not boolean) member ``name``.

    Raises:
        AnswerMalformed: missing or another type.
    """
    value = answer.doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise answer.malformed(f"answer lacks {name}")
    return value
