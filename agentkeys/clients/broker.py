"""The broker's client: cap minting with a K10 PoP, device and operator sign-in, sessions,
the relay.

Wire formats (docs/broker.md, SPEC.md sections 5 and 8), as the broker declares them in
``agentkeys.broker._routes`` (each route's request and answer type):

* ``POST /v1/cap/cred-<op>`` (``Authorization: Bearer <session>``) with
  ``{operator_omni, actor_omni, service, device_key_hash, pop}``, ``pop`` the
  :class:`~agentkeys.pop.MintPopClaims` proof signed by K10; answer
  ``{cap, token, scope_source, expires_at}`` → :class:`MintedCap`;
* ``POST /v1/auth/device/challenge`` ``{device_key_hash}`` → ``{challenge, audience,
  expires_at}``, then ``POST /v1/auth/device/session`` ``{device_key_hash, challenge,
  signature}`` with the K10 signature of :mod:`agentkeys.device_signin` → ``{session, stage,
  operator_omni, actor_omni, device_key_hash, expires_at}`` → :class:`DeviceGrant`;
* ``GET /v1/auth/session`` (``Authorization: Bearer <session>``) → :class:`SessionInfo`, and
  ``POST /v1/auth/session/revoke``;
* the operator's sign-in stages (docs/broker.md, "Sign-in stages"): the email magic link
  (``/v1/auth/email/start``, the link, ``/v1/auth/email/poll``: 202 while pending), passkey
  enrollment (``/v1/auth/passkey/register/options`` and ``…/verify``, J0), SIWE
  (``/v1/auth/siwe/start``, then ``…/verify`` or ``…/k4``, J0 → J1), and the relay's
  master mutations (``/v1/relay/<route>``, J1): their answers are returned as the broker
  sent them, once the members the caller relies on are checked;
* ``POST /v1/mint-oidc-jwt/challenge`` (J1) → ``{challenge_id, required, webauthn, …}`` →
  :class:`OidcChallenge`, then ``POST /v1/mint-oidc-jwt`` (J1; empty, or ``{challenge_id,
  device_key_hash, assertion}``) → ``{token, expires_at}`` (the legacy S3 backend's
  web-identity token).

K10 never leaves its backend: only digests go in, signatures come out. Failures are
:mod:`agentkeys.clients.errors`; a 200 answer missing a member of its contract is
:class:`~agentkeys.clients.errors.AnswerMalformed`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.cap import CapOp, SignedCap
from agentkeys.clients._answer import Answer, PeerClient, hex64, integer, prove, refusal, text
from agentkeys.clients.errors import AnswerMalformed
from agentkeys.device_signin import DEVICE_CHALLENGE_LENGTH, device_signin_digest
from agentkeys.errors import AgentkeysError, FormatError
from agentkeys.pop import MintPopClaims, PopProof, new_mint_pop_claims
from attest.device_key import DeviceKey, key_hash

__all__ = [
    "BrokerClient",
    "DeviceChallenge",
    "DeviceGrant",
    "MintedCap",
    "OidcChallenge",
    "SessionInfo",
    "mint_path",
    "mint_request_body",
]

_JSON = {"content-type": "application/json"}


def mint_path(op: CapOp) -> str:
    """The broker's mint route for ``op`` (``/v1/cap/cred-<op>``)."""
    return f"/v1/cap/cred-{op.value}"


def mint_request_body(claims: MintPopClaims, proof: PopProof) -> dict[str, str]:
    """The cap-mint request body: the claims' identifiers and the K10 ``proof`` over them."""
    return {
        "operator_omni": claims.operator_omni,
        "actor_omni": claims.actor_omni,
        "service": claims.service,
        "device_key_hash": claims.device_key_hash,
        "pop": proof.to_header_value(),
    }


def _optional(answer: Answer, name: str) -> str | None:
    value = answer.doc.get(name)
    if value is not None and not isinstance(value, str):
        raise answer.malformed(f"answer's {name} is not a string")
    return value


@dataclass(frozen=True)
class MintedCap:
    """A cap the broker minted: the parsed cap and its token (never printed)."""

    cap: SignedCap
    token: str = field(repr=False)
    scope_source: str

    @property
    def expires_at(self) -> int:
        """The cap's own expiry (Unix seconds)."""
        return self.cap.payload.expires_at

    @classmethod
    def from_answer(cls, answer: Answer) -> MintedCap:
        """Read a mint answer ``{cap, token, scope_source, …}``.

        Raises:
            AnswerMalformed: a member is missing or the cap does not parse.
        """
        try:
            cap = SignedCap.from_wire(answer.doc.get("cap"))
        except AgentkeysError as exc:
            raise answer.malformed(f"cap is malformed: {exc.reason}") from exc
        return cls(cap=cap, token=text(answer, "token"), scope_source=text(answer, "scope_source"))


@dataclass(frozen=True)
class DeviceChallenge:
    """A single-use device sign-in challenge."""

    challenge: bytes
    audience: str
    expires_at: int

    @classmethod
    def from_answer(cls, answer: Answer) -> DeviceChallenge:
        """Read ``{challenge, audience, expires_at}``.

        Raises:
            AnswerMalformed: a member is missing, or the challenge is not 32 bytes of hex.
        """
        try:
            challenge = bytes.fromhex(text(answer, "challenge"))
        except ValueError:
            raise answer.malformed("challenge is not hex") from None
        if len(challenge) != DEVICE_CHALLENGE_LENGTH:
            raise answer.malformed(f"challenge is not {DEVICE_CHALLENGE_LENGTH} bytes")
        return cls(
            challenge=challenge,
            audience=text(answer, "audience"),
            expires_at=integer(answer, "expires_at"),
        )


@dataclass(frozen=True)
class DeviceGrant:
    """A device session the broker issued, and whom the chain binds the device to."""

    session: str = field(repr=False)
    operator_omni: str
    actor_omni: str
    device_key_hash: str
    expires_at: int

    @classmethod
    def from_answer(cls, answer: Answer) -> DeviceGrant:
        """Read ``{session, operator_omni, actor_omni, device_key_hash, expires_at, …}``.

        Raises:
            AnswerMalformed: a member is missing or of another form.
        """
        return cls(
            session=text(answer, "session"),
            operator_omni=hex64(answer, "operator_omni"),
            actor_omni=hex64(answer, "actor_omni"),
            device_key_hash=hex64(answer, "device_key_hash"),
            expires_at=integer(answer, "expires_at"),
        )


@dataclass(frozen=True)
class SessionInfo:
    """What the broker says of a session (``GET /v1/auth/session``).

    ``operator_omni``, ``actor_omni`` and ``device_key_hash`` are set for a device session;
    ``wallet`` and ``identity_omni`` for an operator's (J0/J1) session.
    """

    stage: str
    subject: str
    expires_at: int
    operator_omni: str | None = None
    actor_omni: str | None = None
    device_key_hash: str | None = None
    wallet: str | None = None
    identity_omni: str | None = None

    @classmethod
    def from_answer(cls, answer: Answer) -> SessionInfo:
        """Read ``{stage, subject, expires_at, …}``.

        Raises:
            AnswerMalformed: a member is missing or of another type.
        """
        return cls(
            stage=text(answer, "stage"),
            subject=text(answer, "subject"),
            expires_at=integer(answer, "expires_at"),
            operator_omni=_optional(answer, "operator_omni"),
            actor_omni=_optional(answer, "actor_omni"),
            device_key_hash=_optional(answer, "device_key_hash"),
            wallet=_optional(answer, "wallet"),
            identity_omni=_optional(answer, "identity_omni"),
        )


@dataclass(frozen=True)
class OidcChallenge:
    """Whether minting a web-identity token needs a master passkey's assertion, and over
    what (``challenge``, the raw WebAuthn challenge; ``None`` when not required)."""

    required: bool
    challenge_id: str | None = None
    challenge: bytes | None = None

    @classmethod
    def from_answer(cls, answer: Answer) -> OidcChallenge:
        """Read ``{required, challenge_id, webauthn: {challenge}, …}``.

        Raises:
            AnswerMalformed: a required challenge is missing or not base64url.
        """
        if answer.doc.get("required") is not True:
            return cls(required=False)
        options = answer.doc.get("webauthn")
        if not isinstance(options, dict):
            raise answer.malformed("answer lacks the passkey options")
        try:
            challenge = b64url_decode(text(Answer(options, who=answer.who, path=answer.path),
                                           "challenge"))  # fmt: skip
        except FormatError:
            raise answer.malformed("challenge is not base64url") from None
        return cls(required=True, challenge_id=text(answer, "challenge_id"), challenge=challenge)


class BrokerClient(PeerClient):
    """Typed requests to the broker (``http``, ``clock``, ``max_answer``: see
    :class:`~agentkeys.clients._answer.PeerClient`)."""

    who = "broker"

    async def _post(
        self, path: str, body: Mapping[str, object] | None, *, session: str | None = None
    ) -> Answer:
        """POST ``body`` (none: an empty request) with the bearer ``session``."""
        headers = dict(_JSON) if body is not None else {}
        if session is not None:
            headers["authorization"] = "Bearer " + session
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        return await self._request("POST", path, content=content, headers=headers)

    async def mint_cap(
        self,
        op: CapOp,
        *,
        session: str,
        device_key: DeviceKey,
        operator_omni: str,
        actor_omni: str,
        service: str,
    ) -> MintedCap:
        """Mint an ``op`` cap for (operator, actor, service), proved by ``device_key``.

        Args:
            session: the bearer session (the operator's J1 or the device's session).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        dkh = key_hash(device_key)
        claims = new_mint_pop_claims(
            op=op,
            operator_omni=operator_omni,
            actor_omni=actor_omni,
            service=service,
            device_key_hash=dkh,
            now=int(self._clock()),
        )
        body = mint_request_body(claims, await prove(device_key, claims))
        answer = await self._post(mint_path(op), body, session=session)
        return MintedCap.from_answer(answer)

    async def device_challenge(self, device_key_hash: str) -> DeviceChallenge:
        """A fresh single-use sign-in challenge for the device.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._post("/v1/auth/device/challenge", {"device_key_hash": device_key_hash})
        return DeviceChallenge.from_answer(answer)

    async def device_session(
        self, *, device_key_hash: str, challenge: bytes, signature: bytes
    ) -> DeviceGrant:
        """Exchange a challenge and its K10 signature (r ‖ s) for a device session.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._post(
            "/v1/auth/device/session",
            {
                "device_key_hash": device_key_hash,
                "challenge": challenge.hex(),
                "signature": b64url_encode(signature),
            },
        )
        return DeviceGrant.from_answer(answer)

    async def sign_in_device(self, device_key: DeviceKey, *, audience: str) -> DeviceGrant:
        """One device sign-in: a fresh challenge, the K10 signature over
        :func:`~agentkeys.device_signin.device_signin_digest` for ``audience`` (the broker's
        configured session audience), a new session.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors` (``AnswerMalformed`` also when
                the challenge cannot be signed for ``audience``).
        """
        dkh = key_hash(device_key)
        challenge = await self.device_challenge(dkh)
        try:
            digest = device_signin_digest(
                audience=audience, challenge=challenge.challenge, device_key_hash=dkh
            )
        except AgentkeysError as exc:
            raise AnswerMalformed(
                f"the broker's challenge cannot be signed: {exc.reason}",
                who=self.who,
                path="/v1/auth/device/challenge",
            ) from None
        signature = await device_key.sign(digest)
        return await self.device_session(
            device_key_hash=dkh, challenge=challenge.challenge, signature=signature
        )

    async def session_info(self, session: str) -> SessionInfo:
        """What the broker says of ``session``.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._request(
            "GET", "/v1/auth/session", headers={"authorization": "Bearer " + session}
        )
        return SessionInfo.from_answer(answer)

    async def oidc_challenge(self, session: str) -> OidcChallenge:
        """Whether the J1 ``session`` needs a master passkey to mint a web-identity token.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._post("/v1/mint-oidc-jwt/challenge", None, session=session)
        return OidcChallenge.from_answer(answer)

    async def mint_oidc_token(
        self, session: str, *, approval: Mapping[str, object] | None = None
    ) -> str:
        """A web-identity token for the legacy S3 backend (never printed).

        Args:
            approval: ``{challenge_id, device_key_hash, assertion}`` over an
                :meth:`oidc_challenge` that was required; ``None`` sends an empty request.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._post("/v1/mint-oidc-jwt", approval, session=session)
        return text(answer, "token")

    async def email_start(self, address: str) -> str:
        """Sign-in stage 1: mail a magic link to ``address``; the request handle to poll.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._post("/v1/auth/email/start", {"email": address})
        return text(answer, "request")

    async def follow_magic_link(self, link: str) -> None:
        """Follow the magic link (what a click in the mail does; any 200 page).

        Raises:
            PeerUnreachable: no answer; PeerRefused: any other status.
        """
        response = await self._send("GET", link)
        if response.status_code != 200:
            raise refusal(response, who=self.who, path="/v1/auth/email/verify")

    async def email_poll(self, handle: str) -> str | None:
        """The J0 session once the link was followed, else ``None`` (202: still pending).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        content = json.dumps({"request": handle}).encode()
        answer = await self._request(
            "POST", "/v1/auth/email/poll", content=content, headers=_JSON,
            accept=frozenset({200, 202}),
        )  # fmt: skip
        return None if answer.status == 202 else text(answer, "session")

    async def passkey_options(self, j0: str, k10_public_point: bytes) -> dict[str, Any]:
        """Sign-in stage 2: WebAuthn creation ``options`` (and an ``approval`` request when
        the identity has a passkey already) for a passkey bound to this K10.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors` (``AnswerMalformed`` without
                ``options``).
        """
        body = {"k10_public_key": k10_public_point.hex()}
        answer = await self._post("/v1/auth/passkey/register/options", body, session=j0)
        if not isinstance(answer.doc.get("options"), dict):
            raise answer.malformed("answer lacks the passkey options")
        return answer.doc

    async def passkey_verify(self, j0: str, body: Mapping[str, object]) -> dict[str, Any]:
        """Enroll the created passkey (``{challenge_id, credential, k10_signature,
        approval?}``).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._post("/v1/auth/passkey/register/verify", body, session=j0)
        return answer.doc

    async def siwe_start(self, j0: str, wallet: str | None) -> dict[str, Any]:
        """Sign-in stage 3: the SIWE message (or its fields) for ``wallet`` (``None``: the
        identity's K4 wallet) and the passkey's assertion options (``webauthn``).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        body = {} if wallet is None else {"wallet": wallet}
        answer = await self._post("/v1/auth/siwe/start", body, session=j0)
        if not isinstance(answer.doc.get("webauthn"), dict):
            raise answer.malformed("answer lacks the passkey options")
        return answer.doc

    async def siwe_verify(self, j0: str, body: Mapping[str, object], *, k4: bool) -> dict[str, Any]:
        """The J1 answer ``{session, actor_omni, wallet, expires_at, …}`` for a SIWE message
        signed by the operator's own wallet (``/v1/auth/siwe/verify``) or, ``k4``, by the
        identity's K4 through the signer (``/v1/auth/siwe/k4``).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors` (``AnswerMalformed`` without
                ``session``).
        """
        path = "/v1/auth/siwe/k4" if k4 else "/v1/auth/siwe/verify"
        answer = await self._post(path, body, session=j0)
        text(answer, "session")
        return answer.doc

    async def revoke_session(self, session: str) -> None:
        """The broker refuses ``session`` from now on.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        await self._post("/v1/auth/session/revoke", {}, session=session)

    async def relay(self, j1: str, route: str, body: Mapping[str, object]) -> dict[str, Any]:
        """A master mutation the broker's relay sends (``route``: ``scope``, ``agent``,
        ``device-revoke`` or ``first-master``) → at least ``{tx_hash, block_number}``.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors` (``AnswerMalformed`` without
                ``tx_hash``).
        """
        answer = await self._post(f"/v1/relay/{route}", body, session=j1)
        text(answer, "tx_hash")
        return answer.doc
