"""Sign-in stage 2: a passkey enrolled under the J0's identity, bound to the device's K10.

``options`` stores a single-use challenge that commits to the K10 point
(:func:`agentkeys.broker._passkey.enrollment_challenge`); ``verify`` takes it, checks the
attestation and the K10 signature over it and stores the credential. An identity that has a
passkey adds another only with that passkey's assertion over the new enrolment (see
:meth:`PasskeyEnrolment.verify`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentkeys.b64url import b64url_encode
from agentkeys.broker import _passkey as pk
from agentkeys.broker._devices import k10_point_from_hex, verify_enrolled_assertion
from agentkeys.broker._sessions import Session
from agentkeys.broker._store import PasskeyCredential, StateStore
from agentkeys.broker.config import SiteSettings
from agentkeys.broker.errors import (
    ChallengeUnknown,
    PasskeyApprovalRequired,
    PasskeyRegistrationRejected,
)
from agentkeys.omni import device_key_hash_from_point
from agentkeys.service._audit import AuditValue

__all__ = [
    "EnrolmentOptions",
    "PasskeyEnrolled",
    "PasskeyEnrolment",
    "RegisterOptionsRequest",
    "RegisterVerifyRequest",
]

_ENROLL = "enroll"


@dataclass(frozen=True)
class RegisterOptionsRequest:
    k10_public_key: str


@dataclass(frozen=True)
class EnrolmentOptions:
    challenge_id: str
    options: dict[str, object]  # WebAuthn PublicKeyCredentialCreationOptions
    approval: dict[str, object] | None  # what a further passkey's approval must sign


@dataclass(frozen=True)
class RegisterVerifyRequest:
    challenge_id: str
    credential: dict[str, object]
    k10_signature: str
    approval: dict[str, object] | None = None


@dataclass(frozen=True)
class PasskeyEnrolled:
    credential_id: str  # base64url
    device_key_hash: str
    sign_count: int


class PasskeyEnrolment:
    """The enrolment core: the store's challenges and credentials, the site's rpId."""

    def __init__(
        self, *, site: SiteSettings, store: StateStore, clock: Callable[[], float]
    ) -> None:
        self._site = site
        self._store = store
        self._clock = clock

    async def options(self, request: RegisterOptionsRequest, session: Session) -> EnrolmentOptions:
        """WebAuthn creation options over a challenge bound to ``request.k10_public_key``.

        Raises:
            WrongType, InvalidKeyMaterial: the K10 key is not a P-256 point as hex.
        """
        point = k10_point_from_hex(request.k10_public_key)
        challenge = pk.enrollment_challenge(point, secrets.token_bytes(32))
        challenge_id = secrets.token_urlsafe(16)
        existing = await self._store.credentials_of(session.subject)
        await self._store.add_challenge(
            challenge_id=challenge_id,
            purpose=_ENROLL,
            session_jti=session.jti,
            payload={"challenge": challenge.hex(), "k10_point": point.hex()},
            expires_at=int(self._clock()) + self._site.challenge_lifetime,
        )
        options = pk.registration_options(
            rp_id=self._site.rp_id,
            rp_name=self._site.rp_name,
            user_id=bytes.fromhex(session.subject),
            user_name=str(session.claims.get("email", session.subject)),
            challenge=challenge,
            exclude=[c.credential_id for c in existing],
            timeout_ms=self._site.challenge_lifetime * 1000,
        )
        # a further passkey needs an enrolled one's assertion (see _passkey's docstring)
        approval: dict[str, object] | None = None
        if existing:
            approval = {
                "challenge": "sha256(agentkeys.broker.enroll-approve.v1 || 0x00 || "
                "enrollment challenge || sha256(new credential id))",
                "allow_credentials": [b64url_encode(c.credential_id) for c in existing],
                "rp_id": self._site.rp_id,
                "user_verification": "required",
            }
        return EnrolmentOptions(challenge_id=challenge_id, options=options, approval=approval)

    async def verify(
        self, request: RegisterVerifyRequest, session: Session, audit: dict[str, AuditValue]
    ) -> PasskeyEnrolled:
        """Store the passkey the attestation in ``request`` creates.

        Raises:
            ChallengeUnknown: no such challenge for this session (or it was used).
            PasskeyRegistrationRejected: the attestation or K10 signature does not verify,
                or the passkey is enrolled already.
            PasskeyApprovalRequired, PasskeyAssertionRejected, PasskeySignCountReplayed:
                a further passkey without a valid approval by an enrolled one.
        """
        payload = await self._store.take_challenge(
            challenge_id=request.challenge_id,
            purpose=_ENROLL,
            session_jti=session.jti,
            now=int(self._clock()),
        )
        if payload is None:
            raise ChallengeUnknown("no such enrollment challenge for this session")
        point = bytes.fromhex(payload["k10_point"])
        verified = pk.verify_enrollment(
            request.credential,
            challenge=bytes.fromhex(payload["challenge"]),
            k10_point=point,
            k10_signature=request.k10_signature,
            rp_id=self._site.rp_id,
            origin=self._site.origin,
        )
        existing = await self._store.credentials_of(session.subject)
        if any(c.credential_id == verified.credential_id for c in existing):
            raise PasskeyRegistrationRejected("this passkey is already enrolled")
        if existing:
            await self._check_approval(
                existing,
                request.approval,
                pk.enrollment_approval_challenge(
                    bytes.fromhex(payload["challenge"]), verified.credential_id
                ),
            )
        await self._store.add_credential(
            PasskeyCredential(
                identity_omni=session.subject,
                credential_id=verified.credential_id,
                public_key=verified.public_key,
                sign_count=verified.sign_count,
                k10_point=point,
                rp_id=self._site.rp_id,
                created_at=int(self._clock()),
            )
        )
        dkh = device_key_hash_from_point(point)
        audit["device_key_hash"] = dkh
        return PasskeyEnrolled(
            credential_id=b64url_encode(verified.credential_id),
            device_key_hash=dkh,
            sign_count=verified.sign_count,
        )

    async def _check_approval(
        self,
        existing: list[PasskeyCredential],
        approval: Mapping[str, Any] | None,
        challenge: bytes,
    ) -> None:
        """An identity with a passkey adds another only with that passkey's assertion over
        ``challenge`` (which binds the enrollment, hence the new K10, and the new credential).

        Without it the J0 alone (control of the mailbox) could enroll a passkey of its own and
        sign in as the identity's wallet.

        Raises:
            PasskeyApprovalRequired: no approval, or not by an enrolled passkey.
            PasskeyAssertionRejected, PasskeySignCountReplayed: the approval does not verify.
        """
        if approval is None:
            raise PasskeyApprovalRequired(
                "this identity already has a passkey: approve the new one with it"
            )
        wanted = pk.credential_id_of(approval)
        credential = next((c for c in existing if c.credential_id == wanted), None)
        if credential is None:
            raise PasskeyApprovalRequired("the approval is not by a passkey of this identity")
        await verify_enrolled_assertion(self._store, self._site, credential, approval, challenge)
