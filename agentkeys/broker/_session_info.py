"""What a session is (``GET /v1/auth/session``) and its revocation, for every stage.

A device session is described only while its device is live on chain (refused with
``device_revoked`` once the chain revoked it); an operator session (J0, J1) names its
identity and, for a J1, its wallet.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._devices import live_device
from agentkeys.broker._sessions import DEVICE, J1, Session, SessionIssuer
from agentkeys.broker.errors import DeviceSessionNotAllowed

__all__ = ["DeviceSessionInfo", "OperatorSessionInfo", "SessionInfo", "SessionRevoked"]


@dataclass(frozen=True)
class OperatorSessionInfo:
    """A J0 or J1 session: ``wallet`` is a J1's (``null`` for a J0); ``identity_omni`` the
    email identity (a J0's subject; ``null`` for a J1 whose operator signed up by wallet)."""

    stage: str
    subject: str
    wallet: str | None
    identity_omni: str | None
    expires_at: int


@dataclass(frozen=True)
class DeviceSessionInfo:
    """A device session (the sidecar's), with its live device's operator."""

    stage: str
    subject: str
    operator_omni: str
    actor_omni: str | None
    device_key_hash: str
    expires_at: int


@dataclass(frozen=True)
class SessionRevoked:
    revoked: bool


class SessionInfo:
    """The session core: the issuer (revocation) and the chain view (device sessions)."""

    def __init__(self, *, sessions: SessionIssuer, chain: CachedChainView) -> None:
        self._sessions = sessions
        self._chain = chain

    async def describe(self, session: Session) -> OperatorSessionInfo | DeviceSessionInfo:
        """The session's stage, subject and expiry, with its device's or identity's names.

        Raises:
            DeviceSessionNotAllowed: a device session naming no device.
            DeviceNotRegistered, DeviceRevoked, RoleMissing, ChainUnavailable: its device.
        """
        if session.stage == DEVICE:
            dkh = session.device_key_hash
            if dkh is None:
                raise DeviceSessionNotAllowed("the device session names no device")
            device = await live_device(self._chain, dkh)
            return DeviceSessionInfo(
                stage=session.stage,
                subject=session.subject,
                operator_omni=device.operator_omni,
                actor_omni=session.actor_omni,
                device_key_hash=dkh,
                expires_at=session.expires_at,
            )
        return OperatorSessionInfo(
            stage=session.stage,
            subject=session.subject,
            wallet=session.wallet,
            identity_omni=session.identity_omni if session.stage == J1 else session.subject,
            expires_at=session.expires_at,
        )

    async def revoke(self, session: Session) -> SessionRevoked:
        """Revoke ``session`` (its ``jti`` is refused from now on)."""
        await self._sessions.revoke(session)
        return SessionRevoked(revoked=True)
