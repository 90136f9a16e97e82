"""The sidecar's device session (SPEC.md section 8): signed in with the agent device's K10.

``challenge`` stores a single-use challenge for a live CAP_MINT device (at most
:data:`MAX_PENDING_DEVICE_CHALLENGES` unexpired per device, nothing stored for a device that
cannot sign in); ``sign_in`` takes it and checks the device's K10 signature over
:mod:`agentkeys.device_signin`'s message before issuing the ``DEVICE`` session.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._devices import live_device
from agentkeys.broker._sessions import DEVICE, SessionIssuer
from agentkeys.broker._store import StateStore
from agentkeys.broker.config import SiteSettings
from agentkeys.broker.errors import (
    ChallengeUnknown,
    DeviceChallengesPending,
    DeviceSignatureRejected,
)
from agentkeys.device_signin import DEVICE_CHALLENGE_LENGTH, verify_device_signin
from agentkeys.omni import normalize_hex32, p256_public_key_from_point
from agentkeys.service._audit import AuditValue
from agentkeys.service.errors import WrongType

__all__ = [
    "MAX_PENDING_DEVICE_CHALLENGES",
    "DeviceChallenge",
    "DeviceChallengeRequest",
    "DeviceSessionRequest",
    "DeviceSignIn",
    "DeviceSignedIn",
]

MAX_PENDING_DEVICE_CHALLENGES = 5
"""Unexpired sign-in challenges one device may have at once (bounds the store)."""


@dataclass(frozen=True)
class DeviceChallengeRequest:
    device_key_hash: str


@dataclass(frozen=True)
class DeviceChallenge:
    challenge: str  # 64 hex
    audience: str
    expires_at: int


@dataclass(frozen=True)
class DeviceSessionRequest:
    device_key_hash: str
    challenge: str  # 64 hex, as the challenge route gave it
    signature: str  # base64url r || s (agentkeys.device_signin)


@dataclass(frozen=True)
class DeviceSignedIn:
    session: str
    stage: str
    operator_omni: str
    actor_omni: str
    device_key_hash: str
    expires_at: int


class DeviceSignIn:
    """The device sign-in core: the chain view, the store's device challenges, the issuer."""

    def __init__(
        self,
        *,
        site: SiteSettings,
        store: StateStore,
        chain: CachedChainView,
        sessions: SessionIssuer,
        clock: Callable[[], float],
    ) -> None:
        self._site = site
        self._store = store
        self._chain = chain
        self._sessions = sessions
        self._clock = clock

    async def challenge(
        self, request: DeviceChallengeRequest, audit: dict[str, AuditValue]
    ) -> DeviceChallenge:
        """A single-use sign-in challenge for the device.

        Raises:
            DeviceNotRegistered, DeviceRevoked, RoleMissing, ChainUnavailable: the device.
            DeviceChallengesPending: too many unexpired challenges for it.
        """
        dkh = normalize_hex32(request.device_key_hash)
        audit["device_key_hash"] = dkh
        await live_device(self._chain, dkh)  # nothing is stored for a device that cannot sign in
        challenge = secrets.token_bytes(DEVICE_CHALLENGE_LENGTH)
        now = int(self._clock())
        expires_at = now + self._site.challenge_lifetime
        if not await self._store.add_device_challenge(
            challenge,
            device_key_hash=dkh,
            expires_at=expires_at,
            now=now,
            limit=MAX_PENDING_DEVICE_CHALLENGES,
        ):
            raise DeviceChallengesPending("this device has too many pending sign-in challenges")
        return DeviceChallenge(
            challenge=challenge.hex(), audience=self._site.session_audience, expires_at=expires_at
        )

    async def sign_in(
        self, request: DeviceSessionRequest, audit: dict[str, AuditValue]
    ) -> DeviceSignedIn:
        """Sign a device in: its single-use challenge (taken in one store statement, bound to
        the device), its chain entry (registered, not revoked, CAP_MINT) and its K10
        signature over :mod:`agentkeys.device_signin`'s message, in that order.

        Raises:
            WrongType: the challenge is not hex.
            ChallengeUnknown: no such challenge for this device (or it was used).
            DeviceNotRegistered, DeviceRevoked, RoleMissing, ChainUnavailable: the device.
            DeviceSignatureRejected: the signature is not the device's K10 over it.
        """
        dkh = normalize_hex32(request.device_key_hash)
        audit["device_key_hash"] = dkh
        try:
            challenge = bytes.fromhex(request.challenge)
        except ValueError:
            raise WrongType("challenge must be the challenge route's hex") from None
        if len(challenge) != DEVICE_CHALLENGE_LENGTH or not await self._store.take_device_challenge(
            challenge, device_key_hash=dkh, now=int(self._clock())
        ):
            raise ChallengeUnknown("no such sign-in challenge for this device")
        device = await live_device(self._chain, dkh)
        audit.update(operator=device.operator_omni, actor=device.actor_omni)
        if not verify_device_signin(
            request.signature,
            public_key=p256_public_key_from_point(device.k10_point),
            audience=self._site.session_audience,
            challenge=challenge,
            device_key_hash=dkh,
        ):
            raise DeviceSignatureRejected("the signature is not this device's K10 over it")
        token, session = await self._sessions.issue(
            stage=DEVICE,
            subject=device.operator_omni,
            now=int(self._clock()),
            lifetime=self._site.device_lifetime,
            extra={"actor_omni": device.actor_omni, "device_key_hash": dkh},
        )
        return DeviceSignedIn(
            session=token,
            stage=DEVICE,
            operator_omni=device.operator_omni,
            actor_omni=device.actor_omni,
            device_key_hash=dkh,
            expires_at=session.expires_at,
        )
