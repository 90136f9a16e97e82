"""The OIDC issuer's routes: discovery, its keys, and web-identity tokens for a J1.

A token is minted for the J1's actor and wallet (format: :mod:`agentkeys.broker._oidc`).
Once the operator has a master on chain, a token also needs a fresh assertion by the
chain-registered passkey of a live master of that operator, over the nonce of
:meth:`OidcMinting.challenge` (verified against the K11 key and sign count on chain). The
published keys are K2's and, when configured, the signer's (fetched at most once a minute).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentkeys.broker import _passkey as pk
from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._devices import chain_master_device
from agentkeys.broker._keys import BrokerKeys, PublishedKeys
from agentkeys.broker._oidc import OidcDiscovery, discovery_document, mint_oidc_token
from agentkeys.broker._sessions import Session
from agentkeys.broker._store import StateStore
from agentkeys.broker.config import OidcSettings, SiteSettings
from agentkeys.broker.errors import ChallengeUnknown, PasskeyAssertionRequired
from agentkeys.errors import AgentkeysError
from agentkeys.omni import normalize_hex32
from agentkeys.service._audit import AuditValue

__all__ = ["MintOidcRequest", "OidcChallenge", "OidcMinting", "OidcToken"]

log = logging.getLogger("agentkeys.broker")

_OIDC = "oidc"
_EXTRA_KEYS_TTL = 60


@dataclass(frozen=True)
class OidcChallenge:
    challenge_id: str
    required: bool  # whether the operator has a master on chain now
    expires_at: int
    webauthn: dict[str, object]  # WebAuthn request options over the nonce


@dataclass(frozen=True)
class MintOidcRequest:
    challenge_id: str | None = None
    device_key_hash: str | None = None
    assertion: dict[str, object] | None = None


@dataclass(frozen=True)
class OidcToken:
    token: str
    expires_at: int


class OidcMinting:
    """The OIDC core: K2, the chain view (masters), the store's challenges."""

    def __init__(
        self,
        *,
        site: SiteSettings,
        oidc: OidcSettings,
        keys: BrokerKeys,
        store: StateStore,
        chain: CachedChainView,
        extra_jwks: Callable[[], Awaitable[list[dict[str, str]]]] | None,
        clock: Callable[[], float],
    ) -> None:
        self._site = site
        self._oidc = oidc
        self._keys = keys
        self._store = store
        self._chain = chain
        self._extra_jwks = extra_jwks
        self._extra_cache: list[dict[str, str]] = []
        self._extra_fetched = -1e9
        self._clock = clock

    async def configuration(self) -> OidcDiscovery:
        """The discovery document of this issuer."""
        return discovery_document(self._site.public_url)

    async def jwks(self) -> PublishedKeys:
        """K2's public keys, then the signer's (a failed fetch keeps the last ones)."""
        keys = [dict(k) for k in self._keys.oidc.published.to_dict()["keys"]]
        if self._extra_jwks is not None and self._clock() - self._extra_fetched > _EXTRA_KEYS_TTL:
            try:
                self._extra_cache = await self._extra_jwks()
                self._extra_fetched = self._clock()
            except AgentkeysError as exc:
                log.warning("cannot fetch the signer's OIDC keys: %s", exc.reason)
        known = {k["kid"] for k in keys}
        keys += [k for k in self._extra_cache if k.get("kid") not in known]
        return PublishedKeys(keys=keys)

    async def challenge(self, session: Session) -> OidcChallenge:
        """A single-use nonce for the K11 assertion :meth:`mint` needs once the operator has
        a master on chain (``required`` says whether it does now)."""
        nonce = secrets.token_hex(16)
        challenge_id = secrets.token_urlsafe(16)
        expires_at = int(self._clock()) + self._site.challenge_lifetime
        await self._store.add_challenge(
            challenge_id=challenge_id,
            purpose=_OIDC,
            session_jti=session.jti,
            payload={"nonce": nonce},
            expires_at=expires_at,
        )
        required = await self._chain.master_wallet(normalize_hex32(session.subject)) is not None
        return OidcChallenge(
            challenge_id=challenge_id,
            required=required,
            expires_at=expires_at,
            webauthn=pk.assertion_options(
                rp_id=self._site.rp_id,
                challenge=pk.assertion_challenge(pk.OIDC_ASSERT_TAG, nonce),
                allow=[],
                timeout_ms=self._site.challenge_lifetime * 1000,
            ),
        )

    async def mint(
        self, request: MintOidcRequest, session: Session, audit: dict[str, AuditValue]
    ) -> OidcToken:
        """A web-identity token for the J1's actor and wallet.

        Raises:
            OidcRefused: the tags are not canonical (checked before anything is read).
            PasskeyAssertionRequired, ChallengeUnknown, PasskeyNotChainMaster,
            PasskeyAssertionRejected: the operator has a master, and no valid K11 assertion.
        """
        now = int(self._clock())
        token = mint_oidc_token(
            self._keys.oidc,
            issuer=self._site.public_url,
            audience=self._oidc.audience,
            actor_omni=session.subject,
            wallet=session.wallet,
            now=now,
            lifetime=self._oidc.token_lifetime,
        )  # first: it refuses non-canonical tags before anything is read
        audit["actor"] = session.subject
        if await self._chain.master_wallet(session.subject) is not None:
            await self._check_k11(request, session, audit)
        return OidcToken(token=token, expires_at=now + self._oidc.token_lifetime)

    async def _check_k11(
        self, request: MintOidcRequest, session: Session, audit: dict[str, AuditValue]
    ) -> None:
        if (
            request.challenge_id is None
            or request.device_key_hash is None
            or request.assertion is None
        ):
            raise PasskeyAssertionRequired(
                "this operator has a master on chain: send challenge_id, device_key_hash and "
                "an assertion by that master's passkey"
            )
        dkh = normalize_hex32(request.device_key_hash)
        audit["device_key_hash"] = dkh
        payload = await self._store.take_challenge(
            challenge_id=request.challenge_id,
            purpose=_OIDC,
            session_jti=session.jti,
            now=int(self._clock()),
        )
        if payload is None:
            raise ChallengeUnknown("no such OIDC challenge for this session")
        device = await chain_master_device(
            self._chain,
            self._site,
            session.subject,
            dkh,
            pk.credential_id_of(request.assertion),
        )
        pk.verify_assertion(
            request.assertion,
            challenge=pk.assertion_challenge(pk.OIDC_ASSERT_TAG, payload["nonce"]),
            public_key=pk.cose_es256_key(device.k11_point),
            stored_sign_count=device.sign_count,
            rp_id=self._site.rp_id,
            origin=self._site.origin,
        )
