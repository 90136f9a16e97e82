"""Broker sessions: J0 (email verified), J1 (wallet signed in) and device (a sidecar signed in
with its K10), as revocable ES256 JWTs.

SPEC sections 7 (broker, bootstrap stages) and 8 (the sidecar's own identity). A session is a
compact JWS signed by the broker's session key with claims ``iss`` (the broker's public URL),
``aud`` (the session audience), ``sub`` (J0: the email identity omni; J1: the actor_omni of
the wallet; device: the device's operator_omni), ``stage`` (``j0``, ``j1`` or ``device``),
``iat``, ``exp``, ``jti`` (128 random bits, hex) and, for J1, ``wallet`` (lowercase ``0x``
hex) and, when the operator signed up by email, ``identity_omni``; for a device session
``actor_omni`` and ``device_key_hash`` (64 hex each: the only device and actor it may mint
for). Every issued session is recorded in the state store; verification requires the record
to exist and not be revoked, so a session is revocable before its expiry.

A session is presented on every request of its holder (a sidecar mints every cap with one
session), so :class:`SessionIssuer` remembers the tokens whose signature it verified (a bounded
table): presented again, a token's signature is not verified again as long as the key that
verified it is still published, unchanged. Everything else (issuer, audience, expiry, stage and
the revocation record in the store) is checked on every request.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.broker._jwt import decode_jwt
from agentkeys.broker._keys import KeyRing
from agentkeys.broker._store import SessionRecord, StateStore
from agentkeys.broker.errors import (
    DeviceSessionNotAllowed,
    SessionExpired,
    SessionInvalid,
    SessionMissing,
    SessionRevoked,
    SessionStageMismatch,
)
from agentkeys.es256 import es256_jws

__all__ = ["DEVICE", "J0", "J1", "Session", "SessionIssuer", "bearer_token"]

J0 = "j0"
J1 = "j1"
DEVICE = "device"
_MAX_SKEW = 5
_MAX_VERIFIED = 1024


@dataclass(frozen=True)
class Session:
    """A verified session."""

    jti: str
    stage: str
    subject: str
    expires_at: int
    claims: Mapping[str, Any]

    @property
    def wallet(self) -> str | None:
        """The J1 wallet (lowercase ``0x`` hex), if any."""
        value = self.claims.get("wallet")
        return value if isinstance(value, str) else None

    @property
    def identity_omni(self) -> str | None:
        """The email identity omni behind the session, if any."""
        value = self.claims.get("identity_omni")
        return value if isinstance(value, str) else None

    @property
    def actor_omni(self) -> str | None:
        """A device session's actor (64 hex), else ``None``."""
        value = self.claims.get("actor_omni")
        return value if isinstance(value, str) and self.stage == DEVICE else None

    @property
    def device_key_hash(self) -> str | None:
        """A device session's device (64 hex), else ``None``."""
        value = self.claims.get("device_key_hash")
        return value if isinstance(value, str) and self.stage == DEVICE else None


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer`` header (headers keyed in lowercase).

    Raises:
        SessionMissing: no such header.
    """
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SessionMissing("this endpoint needs Authorization: Bearer <session>")
    return token.strip()


class SessionIssuer:
    """Issues and verifies sessions (see the module docstring).

    Args:
        keys: the session key ring (active signs; all verify).
        store: where sessions are recorded and revoked.
        issuer: ``iss`` (the broker's public URL).
        audience: ``aud``.
    """

    def __init__(self, keys: KeyRing, store: StateStore, *, issuer: str, audience: str) -> None:
        self._keys = keys
        self._store = store
        self._issuer = issuer
        self._audience = audience
        #: token -> (the public key that verified its signature, its claims)
        self._verified: dict[str, tuple[ec.EllipticCurvePublicKey, Mapping[str, Any]]] = {}

    async def issue(
        self, *, stage: str, subject: str, now: int, lifetime: int, extra: Mapping[str, str]
    ) -> tuple[str, Session]:
        """Sign and record a new session; returns (token, session)."""
        jti = secrets.token_hex(16)
        claims: dict[str, Any] = {
            **extra,
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "stage": stage,
            "iat": now,
            "exp": now + lifetime,
            "jti": jti,
        }
        token = es256_jws(claims, self._keys.active, self._keys.active_kid)
        await self._store.add_session(
            SessionRecord(
                jti=jti, stage=stage, subject=subject, expires_at=now + lifetime, revoked=False
            )
        )
        return token, Session(jti, stage, subject, now + lifetime, claims)

    async def verify(self, token: str, *, now: int, stages: tuple[str, ...]) -> Session:
        """Verify signature, issuer, audience, expiry, stage and revocation.

        Raises:
            SessionInvalid, SessionExpired, SessionRevoked, SessionStageMismatch,
            DeviceSessionNotAllowed (a device session where ``stages`` has no place for one).
        """
        claims = self._signed_claims(token)
        if claims.get("iss") != self._issuer:
            raise SessionInvalid("session was issued by another broker")
        audience = claims.get("aud")
        if not isinstance(audience, str) or not hmac.compare_digest(
            audience.encode(), self._audience.encode()
        ):
            raise SessionInvalid("session is for another audience")
        jti, sub, stage, exp = (claims.get(k) for k in ("jti", "sub", "stage", "exp"))
        if not isinstance(jti, str) or not isinstance(sub, str) or not isinstance(stage, str):
            raise SessionInvalid("session lacks jti, sub or stage")
        if isinstance(exp, bool) or not isinstance(exp, int):
            raise SessionInvalid("session lacks exp")
        if now >= exp + _MAX_SKEW:
            raise SessionExpired("session has expired")
        record = await self._store.get_session(jti)
        if record is None or record.revoked or record.subject != sub or record.stage != stage:
            raise SessionRevoked("session was revoked")
        if stage == DEVICE and stage not in stages:
            raise DeviceSessionNotAllowed("a device session (the sidecar's) may not use this")
        if stage not in stages:
            raise SessionStageMismatch(f"this endpoint needs a {' or '.join(stages)} session")
        return Session(jti, stage, sub, exp, claims)

    def _signed_claims(self, token: str) -> Mapping[str, Any]:
        """The claims of ``token`` once its signature verifies against a published key
        (remembered, module docstring).

        Raises:
            SessionInvalid: see :func:`~agentkeys.broker._jwt.decode_jwt`.
        """
        published = self._keys.published.by_kid
        known = self._verified.get(token)
        if known is not None and known[0] in published.values():
            return known[1]
        kid, claims = decode_jwt(token, published)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        frozen = MappingProxyType(claims)
        self._verified[token] = (published[kid], frozen)
        return frozen

    async def revoke(self, session: Session) -> None:
        """Revoke one session."""
        await self._store.revoke_session(session.jti)
