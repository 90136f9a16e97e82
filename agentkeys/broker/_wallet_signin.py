"""Sign-in stage 3: J0 → J1 by the master wallet's SIWE (SPEC.md section 7).

Either the operator's wallet signs the SIWE message (:meth:`WalletSignIn.verify`) or, for an
email identity, its K4 wallet at the signer does (:class:`K4SignIn`); both need a fresh
assertion by a passkey the J0's identity enrolled, over the challenge's nonce. K4 signs for
an operator that has a master on chain only with that master's K11 (SPEC section 6). The J1
replaces the J0, which is revoked.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from eth_utils.address import to_checksum_address

from agentkeys.broker import _passkey as pk
from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._devices import chain_master_device, cose_point, verify_enrolled_assertion
from agentkeys.broker._sessions import J1, Session, SessionIssuer
from agentkeys.broker._store import PasskeyCredential, StateStore
from agentkeys.broker.config import SiteSettings
from agentkeys.broker.errors import ChallengeUnknown, PasskeyNotEnrolled
from agentkeys.errors import InvalidIdentifier
from agentkeys.omni import actor_omni_for_wallet, device_key_hash_from_point
from agentkeys.service._audit import AuditValue
from agentkeys.siwe import SiweMessage, verify_siwe

__all__ = [
    "J1Issued",
    "K4SignIn",
    "K4Signer",
    "SiweChallenge",
    "SiweK4Request",
    "SiweStartRequest",
    "SiweVerifyRequest",
    "WalletSignIn",
]

_SIWE = "siwe"


class K4Signer(Protocol):
    """The signer's K4 operations for email identities (over mutual TLS in production)."""

    async def k4_address(self, identity_omni: str) -> str:
        """The identity's K4 wallet, lowercase ``0x`` hex."""
        ...

    async def k4_siwe_sign(self, identity_omni: str, message: str) -> str:
        """The K4 EIP-191 signature (hex) over a SIWE message for that wallet."""
        ...

    async def k4_register_first_master(
        self,
        identity_omni: str,
        device: Mapping[str, object],
        k10_signature: str,
        assertion: Mapping[str, object],
    ) -> dict[str, Any]:
        """K4's EIP-712 RegisterFirstMaster approval: ``{wallet, operator_omni, challenge,
        signature}``; the signer checks K10 and K11 over the challenge itself."""
        ...


@dataclass(frozen=True)
class SiweStartRequest:
    wallet: str | None = None


@dataclass(frozen=True)
class SiweChallenge:
    challenge_id: str
    nonce: str
    domain: str
    uri: str
    chain_id: int
    issued_at: str
    expiration_time: str
    webauthn: dict[str, object]  # WebAuthn request options over the nonce
    message: str | None = None  # the message to sign, when the request named the wallet


@dataclass(frozen=True)
class SiweVerifyRequest:
    challenge_id: str
    message: str
    signature: str
    assertion: dict[str, object]


@dataclass(frozen=True)
class SiweK4Request:
    challenge_id: str
    assertion: dict[str, object]


@dataclass(frozen=True)
class J1Issued:
    session: str
    stage: str
    actor_omni: str
    wallet: str
    expires_at: int


def _rfc3339(now: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class WalletSignIn:
    """The SIWE core: the store's challenges and passkeys, the session issuer."""

    def __init__(
        self,
        *,
        site: SiteSettings,
        store: StateStore,
        sessions: SessionIssuer,
        clock: Callable[[], float],
    ) -> None:
        self._site = site
        self._store = store
        self._sessions = sessions
        self._clock = clock

    async def start(self, request: SiweStartRequest, session: Session) -> SiweChallenge:
        """A SIWE challenge (and the message, when ``request.wallet`` names the wallet).

        Raises:
            PasskeyNotEnrolled: the identity has no passkey yet.
            InvalidIdentifier: ``wallet`` is not an EVM address.
        """
        credentials = await self._store.credentials_of(session.subject)
        if not credentials:
            raise PasskeyNotEnrolled("enroll a passkey before signing in with a wallet")
        nonce = secrets.token_hex(16)
        challenge_id = secrets.token_urlsafe(16)
        now = int(self._clock())
        expires_at = now + self._site.challenge_lifetime
        await self._store.add_challenge(
            challenge_id=challenge_id,
            purpose=_SIWE,
            session_jti=session.jti,
            payload={"nonce": nonce},
            expires_at=expires_at,
        )
        message = None
        if request.wallet is not None:
            message = self.siwe_message(
                wallet=request.wallet, nonce=nonce, now=now, expires_at=expires_at
            ).to_text()
        return SiweChallenge(
            challenge_id=challenge_id,
            nonce=nonce,
            domain=self._site.siwe_domain,
            uri=self._site.siwe_uri,
            chain_id=self._site.chain_id,
            issued_at=_rfc3339(now),
            expiration_time=_rfc3339(expires_at),
            webauthn=pk.assertion_options(
                rp_id=self._site.rp_id,
                challenge=pk.assertion_challenge(pk.SIWE_ASSERT_TAG, nonce),
                allow=[c.credential_id for c in credentials],
                timeout_ms=self._site.challenge_lifetime * 1000,
            ),
            message=message,
        )

    def siwe_message(self, *, wallet: str, nonce: str, now: int, expires_at: int) -> SiweMessage:
        """The SIWE message this broker asks ``wallet`` to sign for ``nonce``.

        Raises:
            InvalidIdentifier: ``wallet`` is not an EVM address.
        """
        try:
            address = to_checksum_address(wallet)
        except ValueError:
            raise InvalidIdentifier("wallet is not an EVM address") from None
        return SiweMessage(
            domain=self._site.siwe_domain,
            address=address,
            statement="Sign in to agentkeys as the master wallet of this operator.",
            uri=self._site.siwe_uri,
            chain_id=self._site.chain_id,
            nonce=nonce,
            issued_at=_rfc3339(now),
            expiration_time=_rfc3339(expires_at),
        )

    async def verify(
        self, request: SiweVerifyRequest, session: Session, audit: dict[str, AuditValue]
    ) -> J1Issued:
        """The J1 for the wallet that signed ``request.message``.

        Raises:
            ChallengeUnknown: no such challenge for this session (or it was used).
            SiweError: the message or signature is not this challenge's.
            PasskeyNotEnrolled, PasskeyAssertionRejected, PasskeySignCountReplayed.
        """
        nonce = await self.take_nonce(session, request.challenge_id)
        verified = verify_siwe(
            request.message,
            request.signature,
            expected_domain=self._site.siwe_domain,
            expected_nonce=nonce,
            expected_chain_id=self._site.chain_id,
            expected_uri=self._site.siwe_uri,
            now=self._clock(),
            max_age=self._site.challenge_lifetime,
        )
        await self.check_passkey(session, request.assertion, nonce)
        return await self.issue_j1(session, verified.wallet, audit)

    async def take_nonce(self, session: Session, challenge_id: str) -> str:
        """The nonce of the session's SIWE challenge ``challenge_id``, which is used up.

        Raises:
            ChallengeUnknown: no such challenge for this session.
        """
        payload = await self._store.take_challenge(
            challenge_id=challenge_id,
            purpose=_SIWE,
            session_jti=session.jti,
            now=int(self._clock()),
        )
        if payload is None:
            raise ChallengeUnknown("no such SIWE challenge for this session")
        nonce: str = payload["nonce"]
        return nonce

    async def check_passkey(
        self, session: Session, assertion: Mapping[str, Any], nonce: str
    ) -> PasskeyCredential:
        """The identity's enrolled passkey that made ``assertion`` over ``nonce``.

        Raises:
            PasskeyNotEnrolled, PasskeyAssertionRejected, PasskeySignCountReplayed.
        """
        credentials = {
            c.credential_id: c for c in await self._store.credentials_of(session.subject)
        }
        credential = credentials.get(pk.credential_id_of(assertion))
        if credential is None:
            raise PasskeyNotEnrolled("the assertion is not by an enrolled passkey")
        challenge = pk.assertion_challenge(pk.SIWE_ASSERT_TAG, nonce)
        await verify_enrolled_assertion(self._store, self._site, credential, assertion, challenge)
        return credential

    async def issue_j1(
        self, session: Session, wallet: str, audit: dict[str, AuditValue]
    ) -> J1Issued:
        """The J1 of ``wallet``'s operator in place of the J0 ``session`` (revoked)."""
        actor = actor_omni_for_wallet(wallet)
        audit["actor"] = actor
        token, j1 = await self._sessions.issue(
            stage=J1,
            subject=actor,
            now=int(self._clock()),
            lifetime=self._site.j1_lifetime,
            extra={"wallet": wallet, "identity_omni": session.subject},
        )
        await self._sessions.revoke(session)
        return J1Issued(
            session=token, stage=J1, actor_omni=actor, wallet=wallet, expires_at=j1.expires_at
        )


class K4SignIn:
    """SIWE signed by an email identity's K4 wallet at the signer."""

    def __init__(
        self,
        *,
        wallet_signin: WalletSignIn,
        k4: K4Signer,
        chain: CachedChainView,
        site: SiteSettings,
        clock: Callable[[], float],
    ) -> None:
        self._siwe = wallet_signin
        self._k4 = k4
        self._chain = chain
        self._site = site
        self._clock = clock

    async def sign_in(
        self, request: SiweK4Request, session: Session, audit: dict[str, AuditValue]
    ) -> J1Issued:
        """The J1 of the J0 identity's K4 wallet.

        Raises:
            ChallengeUnknown, PasskeyNotEnrolled, PasskeyAssertionRejected,
            PasskeySignCountReplayed: as :meth:`WalletSignIn.verify`.
            PasskeyNotChainMaster: the operator has a master and this passkey is not its K11.
            SignerFailed, SignerUnavailable: the signer's answer.
        """
        nonce = await self._siwe.take_nonce(session, request.challenge_id)
        credential = await self._siwe.check_passkey(session, request.assertion, nonce)
        wallet = await self._k4.k4_address(session.subject)
        # SPEC section 6: K4 signs for an operator with a master only with that master's K11
        operator = actor_omni_for_wallet(wallet)
        if await self._chain.master_wallet(operator) is not None:
            await chain_master_device(
                self._chain,
                self._site,
                operator,
                device_key_hash_from_point(credential.k10_point),
                credential.credential_id,
                cose_point(credential.public_key),
            )
        now = int(self._clock())
        message = self._siwe.siwe_message(
            wallet=wallet, nonce=nonce, now=now, expires_at=now + self._site.challenge_lifetime
        ).to_text()
        signature = await self._k4.k4_siwe_sign(session.subject, message)
        verified = verify_siwe(
            message,
            signature,
            expected_domain=self._site.siwe_domain,
            expected_nonce=nonce,
            expected_chain_id=self._site.chain_id,
            expected_uri=self._site.siwe_uri,
            now=self._clock(),
        )
        return await self._siwe.issue_j1(session, verified.wallet, audit)
