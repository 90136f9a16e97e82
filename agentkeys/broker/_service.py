"""The broker service: sign-in stages, cap minting, OIDC issuer, relay (SPEC.md section 7).

Routes (all JSON; docs/broker.md has the wire format) are declared once, in :data:`ROUTES`:
name, method, path, the session stages each accepts and the body it decodes (the method
``_<name>`` serves it). The authorization table (:data:`SESSION_REQUIREMENTS`), the HTTP
routes and the OpenAPI document are built from it.

``J0``/``J1`` are the operator's sign-in sessions; ``DEVICE`` is the sidecar's, signed in with
its agent device's K10 over a single-use challenge (:mod:`agentkeys.device_signin`), never the
operator's J1. It mints ``fetch`` caps for exactly its own device and actor, reads its session
(refused with ``device_revoked`` once the chain revoked the device) and revokes it; every
other route refuses it with ``device_session_not_allowed``.

No ``/credential/*`` route exists and the broker holds no key that decrypts anything.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeVar

import cbor2
import trio
from eth_utils.address import to_checksum_address

from agentkeys.b64url import b64url_encode
from agentkeys.binding import check_device, require_device
from agentkeys.broker import _passkey as pk
from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._email import Mailer, hash_secret, new_secret
from agentkeys.broker._keys import BrokerKeys
from agentkeys.broker._mint import ScopeSource, check_binding, decide_scope
from agentkeys.broker._oidc import discovery_document, mint_oidc_token
from agentkeys.broker._relay import Approval, Relay
from agentkeys.broker._sessions import DEVICE, J0, J1, Session, SessionIssuer, bearer_token
from agentkeys.broker._store import MintRecord, PasskeyCredential, StateStore
from agentkeys.broker.config import CapSettings, EmailSettings, OidcSettings, SiteSettings
from agentkeys.broker.errors import (
    ChallengeUnknown,
    DeviceChallengesPending,
    DeviceSessionNotAllowed,
    DeviceSignatureRejected,
    EmailRateLimited,
    EmailRequestUnknown,
    EmailTokenExpired,
    EmailTokenInvalid,
    EpochMismatch,
    OperatorMismatch,
    PasskeyApprovalRequired,
    PasskeyAssertionRequired,
    PasskeyNotChainMaster,
    PasskeyNotEnrolled,
    PasskeyRegistrationRejected,
    PasskeySignCountReplayed,
    PopRejected,
    RelayDisabled,
    RelayRejected,
    ReplayedNonce,
    SignerFailed,
    StalePop,
)
from agentkeys.cap import CapOp, new_cap_payload, sign_cap
from agentkeys.chain import ROLE_CAP_MINT
from agentkeys.chain import challenge as ch
from agentkeys.chain.client import DeviceEntry, Tier
from agentkeys.device_signin import DEVICE_CHALLENGE_LENGTH, verify_device_signin
from agentkeys.errors import (
    AgentkeysError,
    FormatError,
    InvalidIdentifier,
    PopError,
    PopStale,
)
from agentkeys.omni import (
    IdentityType,
    actor_omni_for_wallet,
    agent_omni,
    device_key_hash_from_point,
    hex32_to_bytes,
    identity_omni,
    normalize_hex32,
    normalize_service,
    p256_public_key_from_point,
    service_hash,
)
from agentkeys.pop import POP_MINT_PREFIX, MintPopClaims, NonceRegistry, PopProof, verify_mint_pop
from agentkeys.service import (
    PUBLIC,
    AuditSink,
    BoundAddress,
    Call,
    JsonObject,
    Reply,
    Route,
    ServerSettings,
    ServiceApp,
    serve_http,
)
from agentkeys.service.errors import RouteTableError, WrongType
from agentkeys.siwe import SiweMessage, verify_siwe

__all__ = [
    "MAX_PENDING_DEVICE_CHALLENGES",
    "MAX_PENDING_LINKS",
    "ROUTES",
    "SESSION_REQUIREMENTS",
    "BrokerRoute",
    "BrokerService",
    "K4Signer",
]

log = logging.getLogger("agentkeys.broker")

PUBLIC_ROUTE: tuple[str, ...] = ()
# Addresses we send links to: no quoting, comments, lists or display names, so the SMTP
# recipient is exactly the identity the link signs in.
_MAILBOX = re.compile(
    r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?", re.ASCII
)
MAX_PENDING_LINKS = 5
"""Unexpired sign-in links one address may have at once (bounds mail sent to a victim)."""
MAX_PENDING_DEVICE_CHALLENGES = 5
"""Unexpired sign-in challenges one device may have at once (bounds the store)."""


_ENROLL = "enroll"
_SIWE = "siwe"
_OIDC = "oidc"


_Handler = Callable[[Call, "Session | None"], Awaitable[JsonObject | Reply]]


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


# -- request bodies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailStartRequest:
    email: str


@dataclass(frozen=True)
class EmailPollRequest:
    request: str


@dataclass(frozen=True)
class RegisterOptionsRequest:
    k10_public_key: str


@dataclass(frozen=True)
class RegisterVerifyRequest:
    challenge_id: str
    credential: dict[str, object]
    k10_signature: str
    approval: dict[str, object] | None = None


@dataclass(frozen=True)
class MintOidcRequest:
    challenge_id: str | None = None
    device_key_hash: str | None = None
    assertion: dict[str, object] | None = None


@dataclass(frozen=True)
class SiweStartRequest:
    wallet: str | None = None


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
class DeviceChallengeRequest:
    device_key_hash: str


@dataclass(frozen=True)
class DeviceSessionRequest:
    device_key_hash: str
    challenge: str  # 64 hex, as the challenge route gave it
    signature: str  # base64url r || s (agentkeys.device_signin)


@dataclass(frozen=True)
class CapMintRequest:
    operator_omni: str
    actor_omni: str
    service: str
    device_key_hash: str
    pop: str
    k3_epoch: int | None = None
    lifetime: int | None = None


@dataclass(frozen=True)
class RelayScopeRequest:
    operator_omni: str
    agent_omni: str
    device_key_hash: str
    k10_signature: str
    assertion: dict[str, object]
    services: list[str] | None = None
    read_only: bool = False
    revoke: bool = False
    service_hashes: list[str] | None = None  # 64 hex each: services known only by hash


@dataclass(frozen=True)
class RelayAgentRequest:
    """add_agent_device: the agent's K10 point and binding proof, the master's approval."""

    operator_omni: str
    device_key_hash: str  # the approving master device
    k10_signature: str
    assertion: dict[str, object]
    label: str
    agent_k10_public_key: str  # 64 bytes X || Y, hex
    agent_k10_proof: str  # r || s hex over k10_binding(operator, agent_omni, key)


@dataclass(frozen=True)
class RelayDeviceRevokeRequest:
    """revoke_device of ``revoke_device_key_hash``, approved by ``device_key_hash``."""

    operator_omni: str
    device_key_hash: str
    k10_signature: str
    assertion: dict[str, object]
    revoke_device_key_hash: str


_RelayRequest = TypeVar(
    "_RelayRequest", RelayScopeRequest, RelayAgentRequest, RelayDeviceRevokeRequest
)


@dataclass(frozen=True)
class FirstMasterDevice:
    """SidecarRegistry.NewMaster as hex (points 64 bytes X || Y, the rest 32 bytes)."""

    k10_public_key: str
    k11_credential_id_hash: str
    k11_public_key: str
    rp_id_hash: str
    roles: int = 7
    attestation_digest: str = "00" * 32

    def to_json(self) -> dict[str, object]:
        """The same object for the signer's ``/k4/register-first-master``."""
        return {
            "k10_public_key": self.k10_public_key,
            "k11_credential_id_hash": self.k11_credential_id_hash,
            "k11_public_key": self.k11_public_key,
            "rp_id_hash": self.rp_id_hash,
            "roles": self.roles,
            "attestation_digest": self.attestation_digest,
        }

    def to_new_master(self) -> ch.NewMaster:
        """The registry struct.

        Raises:
            WrongType: a field is not hex of its size, or roles are out of range.
        """

        def raw(text: str, size: int, what: str) -> bytes:
            try:
                value = bytes.fromhex(text.removeprefix("0x"))
            except ValueError:
                raise WrongType(f"{what} must be {size} bytes as hex") from None
            if len(value) != size:
                raise WrongType(f"{what} must be {size} bytes as hex")
            return value

        if not 1 <= self.roles <= 7:
            raise WrongType("roles must be a non-empty subset of 7")
        return ch.NewMaster(
            k10_point=raw(self.k10_public_key, 64, "k10_public_key"),
            k11_credential_id_hash=raw(self.k11_credential_id_hash, 32, "k11_credential_id_hash"),
            k11_point=raw(self.k11_public_key, 64, "k11_public_key"),
            rp_id_hash=raw(self.rp_id_hash, 32, "rp_id_hash"),
            roles=self.roles,
            attestation_digest=raw(self.attestation_digest, 32, "attestation_digest"),
        )


@dataclass(frozen=True)
class RelayFirstMasterRequest:
    device: FirstMasterDevice
    k10_signature: str
    assertion: dict[str, object]


@dataclass(frozen=True)
class BrokerRoute:
    """One broker route, declared once.

    The :class:`BrokerService` method ``_<name>`` serves it.

    Attributes:
        name: its key in audit rows, metrics and the OpenAPI ``operationId``.
        sessions: the session stages it accepts (:data:`PUBLIC_ROUTE`: none needed); a
            session of another stage is refused (a device session with
            ``device_session_not_allowed``).
        request: the body it decodes (published in ``/openapi.json``); ``None``: none.
    """

    name: str
    method: Literal["GET", "POST"]
    path: str
    sessions: tuple[str, ...]
    request: type[Any] | None = None


ROUTES: tuple[BrokerRoute, ...] = (
    BrokerRoute("email_start", "POST", "/v1/auth/email/start", PUBLIC_ROUTE, EmailStartRequest),
    BrokerRoute("email_verify", "GET", "/v1/auth/email/verify", PUBLIC_ROUTE),
    BrokerRoute("email_poll", "POST", "/v1/auth/email/poll", PUBLIC_ROUTE, EmailPollRequest),
    BrokerRoute(
        "passkey_register_options",
        "POST",
        "/v1/auth/passkey/register/options",
        (J0,),
        RegisterOptionsRequest,
    ),
    BrokerRoute(
        "passkey_register_verify",
        "POST",
        "/v1/auth/passkey/register/verify",
        (J0,),
        RegisterVerifyRequest,
    ),
    BrokerRoute("siwe_start", "POST", "/v1/auth/siwe/start", (J0,), SiweStartRequest),
    BrokerRoute("siwe_verify", "POST", "/v1/auth/siwe/verify", (J0,), SiweVerifyRequest),
    BrokerRoute("siwe_k4", "POST", "/v1/auth/siwe/k4", (J0,), SiweK4Request),
    BrokerRoute(
        "device_challenge",
        "POST",
        "/v1/auth/device/challenge",
        PUBLIC_ROUTE,
        DeviceChallengeRequest,
    ),
    BrokerRoute(
        "device_session", "POST", "/v1/auth/device/session", PUBLIC_ROUTE, DeviceSessionRequest
    ),
    BrokerRoute("session_info", "GET", "/v1/auth/session", (J0, J1, DEVICE)),
    BrokerRoute("session_revoke", "POST", "/v1/auth/session/revoke", (J0, J1, DEVICE)),
    BrokerRoute("cap_fetch", "POST", "/v1/cap/cred-fetch", (J1, DEVICE), CapMintRequest),
    BrokerRoute("cap_store", "POST", "/v1/cap/cred-store", (J1,), CapMintRequest),
    BrokerRoute("cap_list", "POST", "/v1/cap/cred-list", (J1,), CapMintRequest),
    BrokerRoute("cap_teardown", "POST", "/v1/cap/cred-teardown", (J1,), CapMintRequest),
    BrokerRoute("cap_jwks", "GET", "/v1/cap/jwks.json", PUBLIC_ROUTE),
    BrokerRoute("oidc_configuration", "GET", "/.well-known/openid-configuration", PUBLIC_ROUTE),
    BrokerRoute("oidc_jwks", "GET", "/.well-known/jwks.json", PUBLIC_ROUTE),
    BrokerRoute("mint_oidc_challenge", "POST", "/v1/mint-oidc-jwt/challenge", (J1,)),
    BrokerRoute("mint_oidc_jwt", "POST", "/v1/mint-oidc-jwt", (J1,), MintOidcRequest),
    BrokerRoute("relay_scope", "POST", "/v1/relay/scope", (J1,), RelayScopeRequest),
    BrokerRoute("relay_agent", "POST", "/v1/relay/agent", (J1,), RelayAgentRequest),
    BrokerRoute(
        "relay_device_revoke", "POST", "/v1/relay/device-revoke", (J1,), RelayDeviceRevokeRequest
    ),
    BrokerRoute(
        "relay_first_master", "POST", "/v1/relay/first-master", (J1,), RelayFirstMasterRequest
    ),
    BrokerRoute("health", "GET", "/v1/health", PUBLIC_ROUTE),
)
"""Every route of the broker."""

SESSION_REQUIREMENTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {route.name: route.sessions for route in ROUTES}
)
"""The broker's authorization table: route name → session stages accepted (empty: public)."""


def _cose_point(cose: bytes) -> bytes | None:
    """X || Y of an EC2 COSE key, None when it is not one."""
    try:
        key = cbor2.loads(cose)
    except (cbor2.CBORDecodeError, ValueError):
        return None
    if not isinstance(key, dict):
        return None
    x, y = key.get(-2), key.get(-3)
    if not isinstance(x, bytes) or not isinstance(y, bytes):
        return None
    return x + y


def _rfc3339(now: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _point_from_hex(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text[2:] if text[:2] in ("0x", "0X") else text)
    except ValueError:
        raise WrongType("k10_public_key must be 64 bytes X || Y as hex") from None
    if len(raw) != 64:
        raise WrongType("k10_public_key must be 64 bytes X || Y as hex")
    p256_public_key_from_point(raw)
    return raw


class BrokerService:
    """The broker core: owns its nursery (HTTP server, chain follower, state purger).

    Args:
        settings: listening options.
        site: public URL, WebAuthn relying party, SIWE expectations, session lifetimes.
        email: magic-link settings.
        caps: cap audience, lifetime, PoP window.
        oidc: OIDC token audience and lifetime.
        keys: K1, K2 and the session key.
        store: the state store (the caller opens and closes it).
        mailer: sends magic links.
        chain: cached chain reads.
        audit: receives one event per request (denials included).
        follow: drives the chain watcher into ``chain`` (a task of :meth:`serve`); ``None``
            when the caller runs it.
        k4: the signer's K4 operations (email identities); ``None`` disables ``siwe_k4``.
        extra_oidc_jwks: returns further public JWKs that sign OIDC tokens for this issuer
            (the signer's key), published in ``/.well-known/jwks.json``.
        relay: hosted-relay submitter; ``None`` keeps relay mode off.
        clock: Unix seconds (tests may fix it).
    """

    def __init__(
        self,
        *,
        settings: ServerSettings,
        site: SiteSettings,
        email: EmailSettings,
        caps: CapSettings,
        oidc: OidcSettings,
        keys: BrokerKeys,
        store: StateStore,
        mailer: Mailer,
        chain: CachedChainView,
        audit: AuditSink,
        follow: Callable[..., Awaitable[None]] | None = None,
        k4: K4Signer | None = None,
        extra_oidc_jwks: Callable[[], Awaitable[list[dict[str, str]]]] | None = None,
        relay: Relay | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._site = site
        self._email = email
        self._caps = caps
        self._oidc = oidc
        self.keys = keys
        self.store = store
        self._mailer = mailer
        self.chain = chain
        self._follow = follow
        self._k4 = k4
        self._extra_jwks = extra_oidc_jwks
        self._extra_cache: list[dict[str, str]] = []
        self._extra_fetched = -1e9
        self._relay = relay
        self._clock = clock
        self._stop = trio.Event()
        self.sessions = SessionIssuer(
            keys.session, store, issuer=site.public_url, audience=site.session_audience
        )
        names = [route.name for route in ROUTES]
        if len(set(names)) != len(names):
            raise RouteTableError("broker: a route name is declared twice")
        wrapped = tuple(
            Route(
                route.name,
                route.method,
                route.path,
                self._guarded(route.sessions, getattr(self, f"_{route.name}")),
                request=route.request,
            )
            for route in ROUTES
        )
        self.app = ServiceApp(
            "broker",
            wrapped,
            dict.fromkeys(names, PUBLIC),  # transport: anyone; sessions: ROUTES
            audit=audit,
            max_body_bytes=settings.max_body_bytes,
            readiness=self._readiness,
        )
        self.app.metrics.cache_counts_from("chain_view", lambda: (chain.hits, chain.misses))
        self.app.metrics.chain_lag_from(lambda: self.chain.head_lag())

    async def _readiness(self) -> list[str]:
        """``/readyz``: a broker that follows the chain is ready once it has synced."""
        following = self._follow is not None
        return ["chain_not_synced"] if following and self.chain.synced_through is None else []

    # -- lifecycle ----------

    async def serve(
        self, *, task_status: trio.TaskStatus[BoundAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the chain, purge expired state, and serve HTTP until :meth:`shutdown`.

        ``task_status.started`` receives the bound address once listening.
        """
        async with trio.open_nursery() as nursery:
            if self._follow is not None:
                await nursery.start(self._follow)
            nursery.start_soon(self._purge_loop)
            if self._relay is not None:
                await nursery.start(self._relay.run)

            async def http(*, task_status: trio.TaskStatus[BoundAddress]) -> None:
                await serve_http(
                    self.app,
                    self._settings,
                    tls=None,
                    shutdown_trigger=self._stop.wait,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()

            bound: BoundAddress = await nursery.start(http)
            log.info("broker listening on %s", bound.url)
            task_status.started(bound)

    def shutdown(self) -> None:
        """Stop serving gracefully."""
        self._stop.set()

    async def _purge_loop(self) -> None:
        while True:
            await trio.sleep(60)
            try:
                await self.store.purge_expired(self._now())
            except AgentkeysError as exc:
                self.app.metrics.store_error(exc.error)
                log.warning("broker state purge failed: %s", exc.reason)

    def _now(self) -> int:
        return int(self._clock())

    # -- session guard ----------

    def _guarded(
        self, stages: tuple[str, ...], handler: _Handler
    ) -> Callable[[Call], Awaitable[JsonObject | Reply]]:
        async def guarded(call: Call) -> JsonObject | Reply:
            session: Session | None = None
            if stages:
                session = await self.sessions.verify(
                    bearer_token(call.headers), now=self._now(), stages=stages
                )
                call.audit["session_stage"] = session.stage
                call.audit["subject"] = session.subject
            return await handler(call, session)

        return guarded

    @staticmethod
    def _need(session: Session | None) -> Session:
        if session is None:  # pragma: no cover - the table guarantees it
            raise RouteTableError("route without a session requirement used a session")
        return session

    # -- stage 1: email magic link ----------

    async def _email_start(self, call: Call, _: Session | None) -> JsonObject:
        req = call.decode(EmailStartRequest)
        if _MAILBOX.fullmatch(req.email) is None:
            raise InvalidIdentifier("email must be a plain address local@domain")
        identity = identity_omni(IdentityType.EMAIL, req.email)
        email = req.email.lower()
        call.audit["identity"] = identity
        now = self._now()
        if await self.store.pending_email_requests(identity, now=now) >= MAX_PENDING_LINKS:
            raise EmailRateLimited("too many pending sign-in links for this address")
        token, handle = new_secret(), new_secret()
        expires_at = now + self._email.link_lifetime
        await self.store.add_email_request(
            token_hash=hash_secret(token),
            request_hash=hash_secret(handle),
            email=email,
            identity_omni=identity,
            expires_at=expires_at,
        )
        link = f"{self._site.public_url}/v1/auth/email/verify?token={token}"
        minutes = self._email.link_lifetime // 60
        await self._mailer.send(
            to=email,
            subject="Your agentkeys sign-in link",
            body=(
                "Follow this link to sign in to agentkeys:\n\n"
                f"{link}\n\n"
                f"It works once and expires in {minutes} minutes. If you did not ask to sign "
                "in, ignore this message.\n"
            ),
        )
        return {"request": handle, "expires_at": expires_at}

    async def _email_verify(self, call: Call, _: Session | None) -> JsonObject:
        token = call.query.get("token", "")
        if not token or len(token) > 128:
            raise EmailTokenInvalid("the sign-in link is invalid or was already used")
        now = self._now()
        request = await self.store.follow_email_link(hash_secret(token), now=now)
        if request is None or request.verified:
            raise EmailTokenInvalid("the sign-in link is invalid or was already used")
        call.audit["identity"] = request.identity_omni
        if request.expires_at < now:
            raise EmailTokenExpired("the sign-in link has expired")
        return {"verified": True, "message": "Signed in: you may return to agentkeys."}

    async def _email_poll(self, call: Call, _: Session | None) -> JsonObject | Reply:
        req = call.decode(EmailPollRequest)
        handle = hash_secret(req.request)
        request = await self.store.get_email_request(handle)
        now = self._now()
        if request is None:
            raise EmailRequestUnknown("no such sign-in request")
        call.audit["identity"] = request.identity_omni
        if request.expires_at < now:
            raise EmailTokenExpired("the sign-in request has expired")
        if not request.verified:
            return Reply.json({"status": "pending"}, status=202)
        collected = await self.store.collect_email_request(handle)
        if collected is None:
            raise EmailRequestUnknown("no such sign-in request")
        token, session = await self.sessions.issue(
            stage=J0,
            subject=collected.identity_omni,
            now=now,
            lifetime=self._site.j0_lifetime,
            extra={"email": collected.email},
        )
        return {
            "status": "verified",
            "session": token,
            "stage": J0,
            "identity_omni": collected.identity_omni,
            "expires_at": session.expires_at,
        }

    # -- stage 2: passkey enrollment bound to K10 ----------

    async def _passkey_register_options(self, call: Call, session: Session | None) -> JsonObject:
        s = self._need(session)
        req = call.decode(RegisterOptionsRequest)
        point = _point_from_hex(req.k10_public_key)
        challenge = pk.enrollment_challenge(point, secrets.token_bytes(32))
        challenge_id = secrets.token_urlsafe(16)
        existing = await self.store.credentials_of(s.subject)
        await self.store.add_challenge(
            challenge_id=challenge_id,
            purpose=_ENROLL,
            session_jti=s.jti,
            payload={"challenge": challenge.hex(), "k10_point": point.hex()},
            expires_at=self._now() + self._site.challenge_lifetime,
        )
        options = pk.registration_options(
            rp_id=self._site.rp_id,
            rp_name=self._site.rp_name,
            user_id=bytes.fromhex(s.subject),
            user_name=str(s.claims.get("email", s.subject)),
            challenge=challenge,
            exclude=[c.credential_id for c in existing],
            timeout_ms=self._site.challenge_lifetime * 1000,
        )
        # a further passkey needs an enrolled one's assertion (see _passkey's docstring)
        approval: JsonObject | None = None
        if existing:
            approval = {
                "challenge": "sha256(agentkeys.broker.enroll-approve.v1 || 0x00 || "
                "enrollment challenge || sha256(new credential id))",
                "allow_credentials": [b64url_encode(c.credential_id) for c in existing],
                "rp_id": self._site.rp_id,
                "user_verification": "required",
            }
        return {"challenge_id": challenge_id, "options": options, "approval": approval}

    async def _passkey_register_verify(self, call: Call, session: Session | None) -> JsonObject:
        s = self._need(session)
        req = call.decode(RegisterVerifyRequest)
        payload = await self.store.take_challenge(
            challenge_id=req.challenge_id, purpose=_ENROLL, session_jti=s.jti, now=self._now()
        )
        if payload is None:
            raise ChallengeUnknown("no such enrollment challenge for this session")
        point = bytes.fromhex(payload["k10_point"])
        verified = pk.verify_enrollment(
            req.credential,
            challenge=bytes.fromhex(payload["challenge"]),
            k10_point=point,
            k10_signature=req.k10_signature,
            rp_id=self._site.rp_id,
            origin=self._site.origin,
        )
        existing = await self.store.credentials_of(s.subject)
        if any(c.credential_id == verified.credential_id for c in existing):
            raise PasskeyRegistrationRejected("this passkey is already enrolled")
        if existing:
            await self._check_enroll_approval(
                existing,
                req.approval,
                pk.enrollment_approval_challenge(
                    bytes.fromhex(payload["challenge"]), verified.credential_id
                ),
            )
        await self.store.add_credential(
            PasskeyCredential(
                identity_omni=s.subject,
                credential_id=verified.credential_id,
                public_key=verified.public_key,
                sign_count=verified.sign_count,
                k10_point=point,
                rp_id=self._site.rp_id,
                created_at=self._now(),
            )
        )
        dkh = device_key_hash_from_point(point)
        call.audit["device_key_hash"] = dkh
        return {
            "credential_id": b64url_encode(verified.credential_id),
            "device_key_hash": dkh,
            "sign_count": verified.sign_count,
        }

    async def _check_enroll_approval(
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
        verified = pk.verify_assertion(
            approval,
            challenge=challenge,
            public_key=credential.public_key,
            stored_sign_count=credential.sign_count,
            rp_id=self._site.rp_id,
            origin=self._site.origin,
        )
        if not await self.store.update_sign_count(
            credential.credential_id, old=credential.sign_count, new=verified.new_sign_count
        ):
            raise PasskeySignCountReplayed("a concurrent assertion used this sign count")

    # -- stage 3: SIWE → J1 ----------

    async def _siwe_start(self, call: Call, session: Session | None) -> JsonObject:
        s = self._need(session)
        req = call.decode(SiweStartRequest)
        credentials = await self.store.credentials_of(s.subject)
        if not credentials:
            raise PasskeyNotEnrolled("enroll a passkey before signing in with a wallet")
        nonce = secrets.token_hex(16)
        challenge_id = secrets.token_urlsafe(16)
        now = self._now()
        expires_at = now + self._site.challenge_lifetime
        await self.store.add_challenge(
            challenge_id=challenge_id,
            purpose=_SIWE,
            session_jti=s.jti,
            payload={"nonce": nonce},
            expires_at=expires_at,
        )
        answer: JsonObject = {
            "challenge_id": challenge_id,
            "nonce": nonce,
            "domain": self._site.siwe_domain,
            "uri": self._site.siwe_uri,
            "chain_id": self._site.chain_id,
            "issued_at": _rfc3339(now),
            "expiration_time": _rfc3339(expires_at),
            "webauthn": pk.assertion_options(
                rp_id=self._site.rp_id,
                challenge=pk.assertion_challenge(pk.SIWE_ASSERT_TAG, nonce),
                allow=[c.credential_id for c in credentials],
                timeout_ms=self._site.challenge_lifetime * 1000,
            ),
        }
        if req.wallet is not None:
            answer["message"] = self.siwe_message(
                wallet=req.wallet, nonce=nonce, now=now, expires_at=expires_at
            ).to_text()
        return answer

    def siwe_message(self, *, wallet: str, nonce: str, now: int, expires_at: int) -> SiweMessage:
        """The SIWE message this broker asks ``wallet`` to sign for ``nonce``."""
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

    async def _check_passkey(
        self, session: Session, assertion: Mapping[str, Any], nonce: str
    ) -> PasskeyCredential:
        credentials = {c.credential_id: c for c in await self.store.credentials_of(session.subject)}
        credential = credentials.get(pk.credential_id_of(assertion))
        if credential is None:
            raise PasskeyNotEnrolled("the assertion is not by an enrolled passkey")
        verified = pk.verify_assertion(
            assertion,
            challenge=pk.assertion_challenge(pk.SIWE_ASSERT_TAG, nonce),
            public_key=credential.public_key,
            stored_sign_count=credential.sign_count,
            rp_id=self._site.rp_id,
            origin=self._site.origin,
        )
        if not await self.store.update_sign_count(
            credential.credential_id, old=credential.sign_count, new=verified.new_sign_count
        ):
            raise PasskeySignCountReplayed("a concurrent assertion used this sign count")
        return credential

    async def _chain_master_device(
        self,
        operator: str,
        device_key_hash: str,
        credential_id: bytes,
        k11_point: bytes | None = None,
    ) -> DeviceEntry:
        """The operator's live master device ``device_key_hash`` whose registered passkey is
        ``credential_id`` (and, when given, ``k11_point``) for this broker's rpId.

        Raises:
            PasskeyNotChainMaster: no such device, or another passkey / operator / rpId.
            ChainUnavailable: the chain cannot be read.
        """
        device = await self.chain.device(device_key_hash)
        if (
            device is None
            or device.revoked
            or device.tier != Tier.MASTER
            or device.operator_omni != operator
            or device.k11_credential_id_hash != hashlib.sha256(credential_id).hexdigest()
            or (k11_point is not None and device.k11_point != k11_point)
            or device.rp_id_hash != hashlib.sha256(self._site.rp_id.encode()).hexdigest()
        ):
            raise PasskeyNotChainMaster(
                "this operator has a master on chain, and this passkey is not the one "
                "registered for a live master device of it"
            )
        return device

    async def _take_siwe_nonce(self, session: Session, challenge_id: str) -> str:
        payload = await self.store.take_challenge(
            challenge_id=challenge_id, purpose=_SIWE, session_jti=session.jti, now=self._now()
        )
        if payload is None:
            raise ChallengeUnknown("no such SIWE challenge for this session")
        return payload["nonce"]

    async def _issue_j1(self, call: Call, session: Session, wallet: str) -> JsonObject:
        actor = actor_omni_for_wallet(wallet)
        call.audit["actor"] = actor
        token, j1 = await self.sessions.issue(
            stage=J1,
            subject=actor,
            now=self._now(),
            lifetime=self._site.j1_lifetime,
            extra={"wallet": wallet, "identity_omni": session.subject},
        )
        await self.sessions.revoke(session)
        return {
            "session": token,
            "stage": J1,
            "actor_omni": actor,
            "wallet": wallet,
            "expires_at": j1.expires_at,
        }

    async def _siwe_verify(self, call: Call, session: Session | None) -> JsonObject:
        s = self._need(session)
        req = call.decode(SiweVerifyRequest)
        nonce = await self._take_siwe_nonce(s, req.challenge_id)
        verified = verify_siwe(
            req.message,
            req.signature,
            expected_domain=self._site.siwe_domain,
            expected_nonce=nonce,
            expected_chain_id=self._site.chain_id,
            expected_uri=self._site.siwe_uri,
            now=self._clock(),
            max_age=self._site.challenge_lifetime,
        )
        await self._check_passkey(s, req.assertion, nonce)
        return await self._issue_j1(call, s, verified.wallet)

    async def _siwe_k4(self, call: Call, session: Session | None) -> JsonObject:
        s = self._need(session)
        if self._k4 is None:
            raise RelayDisabled("this broker has no signer for email wallets")
        req = call.decode(SiweK4Request)
        nonce = await self._take_siwe_nonce(s, req.challenge_id)
        credential = await self._check_passkey(s, req.assertion, nonce)
        wallet = await self._k4.k4_address(s.subject)
        # SPEC section 6: K4 signs for an operator with a master only with that master's K11
        operator = actor_omni_for_wallet(wallet)
        if await self.chain.master_wallet(operator) is not None:
            await self._chain_master_device(
                operator,
                device_key_hash_from_point(credential.k10_point),
                credential.credential_id,
                _cose_point(credential.public_key),
            )
        now = self._now()
        message = self.siwe_message(
            wallet=wallet, nonce=nonce, now=now, expires_at=now + self._site.challenge_lifetime
        ).to_text()
        signature = await self._k4.k4_siwe_sign(s.subject, message)
        verified = verify_siwe(
            message,
            signature,
            expected_domain=self._site.siwe_domain,
            expected_nonce=nonce,
            expected_chain_id=self._site.chain_id,
            expected_uri=self._site.siwe_uri,
            now=self._clock(),
        )
        return await self._issue_j1(call, s, verified.wallet)

    # -- the sidecar's device session (SPEC section 8) ----------

    async def _live_device(self, device_key_hash: str) -> DeviceEntry:
        """The registered, unrevoked device holding CAP_MINT (rules 1, 2 and 4 of
        ``agentkeys.binding`` against the device's own binding).

        Raises:
            DeviceNotRegistered, DeviceRevoked, RoleMissing, ChainUnavailable.
        """
        device = require_device(await self.chain.device(device_key_hash))
        return check_device(
            device,
            op=CapOp.FETCH,
            operator_omni=device.operator_omni,
            actor_omni=device.actor_omni,
        )

    async def _device_challenge(self, call: Call, _: Session | None) -> JsonObject:
        req = call.decode(DeviceChallengeRequest)
        dkh = normalize_hex32(req.device_key_hash)
        call.audit["device_key_hash"] = dkh
        await self._live_device(dkh)  # nothing is stored for a device that cannot sign in
        challenge = secrets.token_bytes(DEVICE_CHALLENGE_LENGTH)
        now = self._now()
        expires_at = now + self._site.challenge_lifetime
        if not await self.store.add_device_challenge(
            challenge,
            device_key_hash=dkh,
            expires_at=expires_at,
            now=now,
            limit=MAX_PENDING_DEVICE_CHALLENGES,
        ):
            raise DeviceChallengesPending("this device has too many pending sign-in challenges")
        return {
            "challenge": challenge.hex(),
            "audience": self._site.session_audience,
            "expires_at": expires_at,
        }

    async def _device_session(self, call: Call, _: Session | None) -> JsonObject:
        """Sign a device in: its single-use challenge (taken in one store statement, bound to
        the device), its chain entry (registered, not revoked, CAP_MINT) and its K10
        signature over :mod:`agentkeys.device_signin`'s message, in that order."""
        req = call.decode(DeviceSessionRequest)
        dkh = normalize_hex32(req.device_key_hash)
        call.audit["device_key_hash"] = dkh
        try:
            challenge = bytes.fromhex(req.challenge)
        except ValueError:
            raise WrongType("challenge must be the challenge route's hex") from None
        if len(challenge) != DEVICE_CHALLENGE_LENGTH or not await self.store.take_device_challenge(
            challenge, device_key_hash=dkh, now=self._now()
        ):
            raise ChallengeUnknown("no such sign-in challenge for this device")
        device = await self._live_device(dkh)
        call.audit.update(operator=device.operator_omni, actor=device.actor_omni)
        if not verify_device_signin(
            req.signature,
            public_key=p256_public_key_from_point(device.k10_point),
            audience=self._site.session_audience,
            challenge=challenge,
            device_key_hash=dkh,
        ):
            raise DeviceSignatureRejected("the signature is not this device's K10 over it")
        token, session = await self.sessions.issue(
            stage=DEVICE,
            subject=device.operator_omni,
            now=self._now(),
            lifetime=self._site.device_lifetime,
            extra={"actor_omni": device.actor_omni, "device_key_hash": dkh},
        )
        return {
            "session": token,
            "stage": DEVICE,
            "operator_omni": device.operator_omni,
            "actor_omni": device.actor_omni,
            "device_key_hash": dkh,
            "expires_at": session.expires_at,
        }

    async def _session_info(self, call: Call, session: Session | None) -> JsonObject:
        s = self._need(session)
        if s.stage == DEVICE:
            dkh = s.device_key_hash
            if dkh is None:
                raise DeviceSessionNotAllowed("the device session names no device")
            device = await self._live_device(dkh)
            return {
                "stage": s.stage,
                "subject": s.subject,
                "operator_omni": device.operator_omni,
                "actor_omni": s.actor_omni,
                "device_key_hash": dkh,
                "expires_at": s.expires_at,
            }
        return {
            "stage": s.stage,
            "subject": s.subject,
            "wallet": s.wallet,
            "identity_omni": s.identity_omni if s.stage == J1 else s.subject,
            "expires_at": s.expires_at,
        }

    async def _session_revoke(self, call: Call, session: Session | None) -> JsonObject:
        await self.sessions.revoke(self._need(session))
        return {"revoked": True}

    # -- cap minting ----------

    async def _cap_fetch(self, call: Call, session: Session | None) -> JsonObject:
        return await self.mint(call, self._need(session), CapOp.FETCH)

    async def _cap_store(self, call: Call, session: Session | None) -> JsonObject:
        return await self.mint(call, self._need(session), CapOp.STORE)

    async def _cap_list(self, call: Call, session: Session | None) -> JsonObject:
        return await self.mint(call, self._need(session), CapOp.LIST)

    async def _cap_teardown(self, call: Call, session: Session | None) -> JsonObject:
        return await self.mint(call, self._need(session), CapOp.TEARDOWN)

    async def _verify_pop(self, claims: MintPopClaims, signature: str, point: bytes) -> None:
        now = self._now()
        window = self._caps.pop_window
        try:
            verified = verify_mint_pop(
                claims,
                signature,
                public_key=p256_public_key_from_point(point),
                now=now,
                nonces=NonceRegistry(1),
                window=window,
            )
        except PopStale as exc:
            raise StalePop(exc.reason) from exc
        except PopError as exc:
            raise PopRejected(exc.reason) from exc
        key = POP_MINT_PREFIX + bytes.fromhex(verified.device_key_hash) + claims.nonce
        if not await self.store.consume_nonce(key, expires_at=claims.timestamp + window, now=now):
            raise ReplayedNonce("the PoP nonce was already used")

    async def mint(self, call: Call, session: Session, op: CapOp) -> JsonObject:
        """Check and mint one cap (SPEC section 5; the checks are listed in ``_mint``)."""
        req = call.decode(CapMintRequest)
        operator = normalize_hex32(req.operator_omni)
        actor = normalize_hex32(req.actor_omni)
        service = normalize_service(req.service)
        dkh = normalize_hex32(req.device_key_hash)
        call.audit.update(
            op=op.value, operator=operator, actor=actor, service=service, device_key_hash=dkh
        )
        if session.subject != operator:
            raise OperatorMismatch("the session is not this operator's")
        if session.stage == DEVICE and (
            op != CapOp.FETCH or dkh != session.device_key_hash or actor != session.actor_omni
        ):
            raise DeviceSessionNotAllowed(
                "a device session mints fetch caps for its own device and actor only"
            )
        try:
            proof = PopProof.from_header_value(req.pop)
            claims = MintPopClaims(
                op=op,
                operator_omni=operator,
                actor_omni=actor,
                service=service,
                device_key_hash=dkh,
                nonce=proof.nonce,
                timestamp=proof.timestamp,
            )
        except FormatError as exc:
            raise PopRejected(exc.reason) from exc
        device = await self.chain.device(dkh)
        if device is not None:
            await self._verify_pop(claims, proof.signature, device.k10_point)
        check_binding(device, op=op, operator_omni=operator, actor_omni=actor)
        chain_scope = None
        legacy = None
        agent_operator = None
        if actor != operator:
            agent_operator = await self.chain.agent_operator(actor)
            chain_scope = await self.chain.scope(operator, actor)
            if chain_scope is None:
                legacy = await self.store.get_legacy_scope(operator, actor)
        try:
            decision = decide_scope(
                op=op,
                operator_omni=operator,
                actor_omni=actor,
                service=service,
                agent_operator=agent_operator,
                chain_scope=chain_scope,
                legacy_scope=legacy,
            )
        except AgentkeysError:
            source = (
                ScopeSource.CHAIN
                if chain_scope is not None
                else ScopeSource.LEGACY
                if legacy is not None
                else ScopeSource.NONE
            )
            call.audit["scope_source"] = source.value
            raise
        call.audit["scope_source"] = decision.scope_source.value
        epoch = await self.chain.epoch()
        call.audit["epoch"] = epoch
        if req.k3_epoch is not None and req.k3_epoch != epoch:
            raise EpochMismatch(f"the chain's current K3 epoch is {epoch}")
        lifetime = req.lifetime if req.lifetime is not None else self._caps.lifetime
        if not 1 <= lifetime <= self._caps.lifetime:
            raise WrongType(f"lifetime must be within 1..{self._caps.lifetime}")
        now = self._now()
        payload = new_cap_payload(
            op=op,
            operator_omni=operator,
            actor_omni=actor,
            service=service,
            device_key_hash=dkh,
            k3_epoch=epoch,
            aud=self._caps.audience,
            now=now,
            lifetime=lifetime,
        )
        signed = sign_cap(payload, self.keys.cap.active, self.keys.cap.active_kid)
        await self.store.add_mint_record(
            MintRecord(
                cap_nonce=payload.nonce,
                op=op.value,
                operator_omni=operator,
                actor_omni=actor,
                service=service,
                device_key_hash=dkh,
                k3_epoch=epoch,
                scope_source=decision.scope_source.value,
                issued_at=now,
            )
        )
        return {
            "cap": signed.to_wire(),
            "token": signed.to_token(),
            "scope_source": decision.scope_source.value,
            "expires_at": payload.expires_at,
        }

    async def _cap_jwks(self, call: Call, _: Session | None) -> JsonObject:
        return dict(self.keys.cap.published.to_dict())

    # -- OIDC ----------

    async def _oidc_configuration(self, call: Call, _: Session | None) -> JsonObject:
        return discovery_document(self._site.public_url)

    async def _oidc_jwks(self, call: Call, _: Session | None) -> JsonObject:
        keys = [dict(k) for k in self.keys.oidc.published.to_dict()["keys"]]
        if self._extra_jwks is not None and self._clock() - self._extra_fetched > 60:
            try:
                self._extra_cache = await self._extra_jwks()
                self._extra_fetched = self._clock()
            except AgentkeysError as exc:
                log.warning("cannot fetch the signer's OIDC keys: %s", exc.reason)
        known = {k["kid"] for k in keys}
        keys += [k for k in self._extra_cache if k.get("kid") not in known]
        return {"keys": keys}

    async def _mint_oidc_challenge(self, call: Call, session: Session | None) -> JsonObject:
        """A single-use nonce for the K11 assertion ``/v1/mint-oidc-jwt`` needs once the
        operator has a master on chain (``required`` says whether it does now)."""
        s = self._need(session)
        nonce = secrets.token_hex(16)
        challenge_id = secrets.token_urlsafe(16)
        expires_at = self._now() + self._site.challenge_lifetime
        await self.store.add_challenge(
            challenge_id=challenge_id,
            purpose=_OIDC,
            session_jti=s.jti,
            payload={"nonce": nonce},
            expires_at=expires_at,
        )
        required = await self.chain.master_wallet(normalize_hex32(s.subject)) is not None
        return {
            "challenge_id": challenge_id,
            "required": required,
            "expires_at": expires_at,
            "webauthn": pk.assertion_options(
                rp_id=self._site.rp_id,
                challenge=pk.assertion_challenge(pk.OIDC_ASSERT_TAG, nonce),
                allow=[],
                timeout_ms=self._site.challenge_lifetime * 1000,
            ),
        }

    async def _oidc_k11(self, call: Call, session: Session) -> None:
        """A fresh assertion by the chain-registered passkey of a live master of the session's
        operator, over the nonce of ``/v1/mint-oidc-jwt/challenge`` (verified against the K11
        public key and sign count on chain)."""
        req = call.decode(MintOidcRequest) if call.body.strip() else MintOidcRequest()
        if req.challenge_id is None or req.device_key_hash is None or req.assertion is None:
            raise PasskeyAssertionRequired(
                "this operator has a master on chain: send challenge_id, device_key_hash and "
                "an assertion by that master's passkey"
            )
        dkh = normalize_hex32(req.device_key_hash)
        call.audit["device_key_hash"] = dkh
        payload = await self.store.take_challenge(
            challenge_id=req.challenge_id,
            purpose=_OIDC,
            session_jti=session.jti,
            now=self._now(),
        )
        if payload is None:
            raise ChallengeUnknown("no such OIDC challenge for this session")
        device = await self._chain_master_device(
            session.subject, dkh, pk.credential_id_of(req.assertion)
        )
        pk.verify_assertion(
            req.assertion,
            challenge=pk.assertion_challenge(pk.OIDC_ASSERT_TAG, payload["nonce"]),
            public_key=pk.cose_es256_key(device.k11_point),
            stored_sign_count=device.sign_count,
            rp_id=self._site.rp_id,
            origin=self._site.origin,
        )

    async def _mint_oidc_jwt(self, call: Call, session: Session | None) -> JsonObject:
        s = self._need(session)
        now = self._now()
        token = mint_oidc_token(
            self.keys.oidc,
            issuer=self._site.public_url,
            audience=self._oidc.audience,
            actor_omni=s.subject,
            wallet=s.wallet,
            now=now,
            lifetime=self._oidc.token_lifetime,
        )  # first: it refuses non-canonical tags before anything is read
        call.audit["actor"] = s.subject
        if await self.chain.master_wallet(s.subject) is not None:
            await self._oidc_k11(call, s)
        return {"token": token, "expires_at": now + self._oidc.token_lifetime}

    # -- relay ----------

    def _approval(
        self, call: Call, session: Session | None, kind: type[_RelayRequest]
    ) -> tuple[Relay, _RelayRequest, Approval]:
        """The relay, the request and the master's approval in it, once the J1 is the
        operator's."""
        s = self._need(session)
        if self._relay is None:
            raise RelayDisabled("hosted-relay mode is not enabled on this broker")
        req = call.decode(kind)
        operator = normalize_hex32(req.operator_omni)
        device = normalize_hex32(req.device_key_hash)
        call.audit.update(operator=operator, approving_device=device)
        if s.subject != operator:
            raise OperatorMismatch("the session is not this operator's")
        site = self._site
        return (
            self._relay,
            req,
            Approval(operator, device, req.k10_signature, req.assertion, site.rp_id, site.origin),
        )

    async def _relay_agent(self, call: Call, session: Session | None) -> JsonObject:
        """Register an agent device of the operator (SidecarRegistry.add_agent_device)."""
        relay, req, approval = self._approval(call, session, RelayAgentRequest)
        label = req.label
        try:
            actor = agent_omni(normalize_hex32(req.operator_omni), label)
        except FormatError:
            raise WrongType("label must match ^[a-z0-9-]{1,32}$") from None
        point = _point_from_hex(req.agent_k10_public_key)
        dkh = device_key_hash_from_point(point)
        call.audit.update(actor=actor, device_key_hash=dkh)
        agent = ch.NewAgent(label=label, k10_point=point, roles=ROLE_CAP_MINT)
        receipt = await relay.add_agent_device(approval, agent, req.agent_k10_proof)
        call.audit["tx_hash"] = receipt.tx_hash
        return {
            "tx_hash": receipt.tx_hash,
            "block_number": receipt.block_number,
            "agent_omni": actor,
            "device_key_hash": dkh,
        }

    async def _relay_device_revoke(self, call: Call, session: Session | None) -> JsonObject:
        """Revoke a device of the operator (SidecarRegistry.revoke_device)."""
        relay, req, approval = self._approval(call, session, RelayDeviceRevokeRequest)
        target = normalize_hex32(req.revoke_device_key_hash)
        call.audit["device_key_hash"] = target
        receipt = await relay.revoke_device(approval, target)
        call.audit["tx_hash"] = receipt.tx_hash
        return {"tx_hash": receipt.tx_hash, "block_number": receipt.block_number}

    async def _relay_scope(self, call: Call, session: Session | None) -> JsonObject:
        relay, req, approval = self._approval(call, session, RelayScopeRequest)
        call.audit["actor"] = normalize_hex32(req.agent_omni)
        receipt = await relay.scope_mutation(
            approval,
            agent_omni=normalize_hex32(req.agent_omni),
            services=None
            if req.revoke
            else [
                *(service_hash(normalize_service(x)) for x in req.services or []),
                *(hex32_to_bytes(x) for x in req.service_hashes or []),
            ],
            read_only=req.read_only,
        )
        call.audit["tx_hash"] = receipt.tx_hash
        return {"tx_hash": receipt.tx_hash, "block_number": receipt.block_number}

    async def _relay_first_master(self, call: Call, session: Session | None) -> JsonObject:
        """First-master registration of an email operator, whose master wallet is its K4.

        The J1 must be an email identity's (K4 SIWE); the new device must be a passkey this
        identity enrolled, bound at enrollment to this very K10; the passkey's assertion over
        the registration challenge verifies here (origin included) and at the signer, which
        also checks K10 and signs the EIP-712 approval; the relay wallet submits.
        """
        s = self._need(session)
        if self._relay is None:
            raise RelayDisabled("hosted-relay mode is not enabled on this broker")
        if self._k4 is None:
            raise RelayDisabled("this broker has no signer for email wallets")
        req = call.decode(RelayFirstMasterRequest)
        device = req.device.to_new_master()
        dkh = device_key_hash_from_point(device.k10_point)
        call.audit.update(operator=s.subject, device_key_hash=dkh)
        identity, wallet = s.identity_omni, s.wallet
        if identity is None or wallet is None:
            raise RelayRejected("the session is not an email operator's (K4 sign-in)")
        if (
            await self._k4.k4_address(identity) != wallet
            or actor_omni_for_wallet(wallet) != s.subject
        ):
            raise RelayRejected("the session's wallet is not the identity's K4 wallet")
        credential = await self._enrolled_credential(identity, req.assertion, device)
        challenge = await self._relay.first_master_challenge(wallet, device)
        verified = pk.verify_assertion(
            req.assertion,
            challenge=challenge,
            public_key=credential.public_key,
            stored_sign_count=credential.sign_count,
            rp_id=self._site.rp_id,
            origin=self._site.origin,
        )
        if not await self.store.update_sign_count(
            credential.credential_id, old=credential.sign_count, new=verified.new_sign_count
        ):
            raise PasskeySignCountReplayed("a concurrent assertion used this sign count")
        approval = await self._k4.k4_register_first_master(
            identity, req.device.to_json(), req.k10_signature, req.assertion
        )
        if approval.get("wallet") != wallet or approval.get("challenge") != challenge.hex():
            raise SignerFailed("the signer approved another registration than this one")
        try:
            k10 = bytes.fromhex(req.k10_signature.removeprefix("0x"))
            wallet_sig = bytes.fromhex(str(approval["signature"]).removeprefix("0x"))
        except ValueError:
            raise RelayRejected("a signature is not hex") from None
        receipt = await self._relay.register_first_master(
            wallet=wallet,
            device=device,
            k10_signature=k10,
            assertion=req.assertion,
            wallet_signature=wallet_sig,
        )
        return {
            "tx_hash": receipt.tx_hash,
            "block_number": receipt.block_number,
            "operator_omni": s.subject,
            "wallet": wallet,
            "device_key_hash": dkh,
        }

    async def _enrolled_credential(
        self, identity: str, assertion: Mapping[str, Any], device: ch.NewMaster
    ) -> PasskeyCredential:
        """The identity's enrolled passkey the assertion is by, matching ``device`` exactly."""
        wanted = pk.credential_id_of(assertion)
        for credential in await self.store.credentials_of(identity):
            if credential.credential_id != wanted:
                continue
            if (
                hashlib.sha256(credential.credential_id).digest() != device.k11_credential_id_hash
                or _cose_point(credential.public_key) != device.k11_point
                or credential.k10_point != device.k10_point
                or hashlib.sha256(self._site.rp_id.encode()).digest() != device.rp_id_hash
            ):
                raise RelayRejected("the device is not the one this passkey was enrolled with")
            return credential
        raise PasskeyNotEnrolled("the assertion is not by a passkey this identity enrolled")

    async def _health(self, call: Call, _: Session | None) -> JsonObject:
        return {
            "chain_synced_through": self.chain.synced_through,
            "relay": self._relay is not None,
        }
