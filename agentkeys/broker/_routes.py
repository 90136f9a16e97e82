"""Every broker route, declared once (SPEC.md section 7; docs/api.md has the wire format).

A :class:`BrokerRoute` names the route (audit rows, metrics, OpenAPI ``operationId``), its
method and path, the session stages it accepts, the core method that serves it, the request
dataclass its body decodes into and the response dataclass it answers with. The session
table (:data:`SESSION_REQUIREMENTS`), the HTTP routes (``_shell``) and the OpenAPI document
are built from :data:`ROUTES`, and ``_shell`` refuses to start when a core method's
parameters or return type disagree with its declaration.

``J0``/``J1`` are the operator's sign-in sessions; ``DEVICE`` is the sidecar's, signed in with
its agent device's K10 (:mod:`agentkeys.broker._device_signin`), never the operator's J1. It
mints ``fetch`` caps for exactly its own device and actor, reads its session (refused with
``device_revoked`` once the chain revoked the device) and revokes it; every other route
refuses it with ``device_session_not_allowed``.

No ``/credential/*`` route exists and the broker holds no key that decrypts anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, UnionType
from typing import Any, Literal

from agentkeys.broker._cap_minting import CapMinted, CapMinting, CapMintRequest
from agentkeys.broker._device_signin import (
    DeviceChallenge,
    DeviceChallengeRequest,
    DeviceSessionRequest,
    DeviceSignedIn,
    DeviceSignIn,
)
from agentkeys.broker._email_signin import (
    EmailPending,
    EmailPollRequest,
    EmailSignedIn,
    EmailSignIn,
    EmailStarted,
    EmailStartRequest,
    EmailVerified,
)
from agentkeys.broker._enrolment import (
    EnrolmentOptions,
    PasskeyEnrolled,
    PasskeyEnrolment,
    RegisterOptionsRequest,
    RegisterVerifyRequest,
)
from agentkeys.broker._health import Health, HealthReport
from agentkeys.broker._keys import PublishedKeys
from agentkeys.broker._oidc import OidcDiscovery
from agentkeys.broker._oidc_minting import MintOidcRequest, OidcChallenge, OidcMinting, OidcToken
from agentkeys.broker._relay_requests import (
    AgentRegistered,
    FirstMasterRegistered,
    FirstMasterRelay,
    RelayAgentRequest,
    RelayDeviceRevokeRequest,
    RelayFirstMasterRequest,
    RelayReceipt,
    RelayRequests,
    RelayScopeRequest,
)
from agentkeys.broker._session_info import (
    DeviceSessionInfo,
    OperatorSessionInfo,
    SessionInfo,
    SessionRevoked,
)
from agentkeys.broker._sessions import DEVICE, J0, J1
from agentkeys.broker._wallet_signin import (
    J1Issued,
    K4SignIn,
    SiweChallenge,
    SiweK4Request,
    SiweStartRequest,
    SiweVerifyRequest,
    WalletSignIn,
)

__all__ = ["PUBLIC_ROUTE", "ROUTES", "SESSION_REQUIREMENTS", "BrokerRoute"]

PUBLIC_ROUTE: tuple[str, ...] = ()


@dataclass(frozen=True)
class BrokerRoute:
    """One broker route, declared once.

    Attributes:
        name: its key in audit rows, metrics and the OpenAPI ``operationId``.
        method, path: where it is served.
        sessions: the session stages it accepts (:data:`PUBLIC_ROUTE`: none needed); a
            session of another stage is refused (a device session with
            ``device_session_not_allowed``).
        handler: the core method that serves it, e.g. ``EmailSignIn.start``. Its parameters
            say what it is given: ``request`` (the decoded body), ``session`` (the verified
            session), ``audit`` (the request's audit fields) and any other name a query
            parameter (a string, empty when absent; published in ``/openapi.json``).
        request: the body it decodes (published in ``/openapi.json``); ``None``: none.
        response: the dataclass it answers with (its schema published), or a union of
            dataclasses whose members tell them apart (the session's two shapes); ``None``:
            a JSON object of no fixed shape.
        accepted: a second answer, sent with 202 Accepted (``email_poll``'s pending).
        body_optional: an empty body is the request with its defaults.
    """

    name: str
    method: Literal["GET", "POST"]
    path: str
    sessions: tuple[str, ...]
    handler: Callable[..., Awaitable[Any]]
    request: type[Any] | None = None
    response: type[Any] | UnionType | None = None
    accepted: type[Any] | None = None
    body_optional: bool = False


_ANY_SESSION = (J0, J1, DEVICE)

ROUTES: tuple[BrokerRoute, ...] = (
    # -- stage 1: email magic link → J0
    BrokerRoute(
        "email_start", "POST", "/v1/auth/email/start", PUBLIC_ROUTE,
        EmailSignIn.start, EmailStartRequest, EmailStarted,
    ),
    BrokerRoute(
        "email_verify", "GET", "/v1/auth/email/verify", PUBLIC_ROUTE,
        EmailSignIn.verify, response=EmailVerified,
    ),
    BrokerRoute(
        "email_poll", "POST", "/v1/auth/email/poll", PUBLIC_ROUTE,
        EmailSignIn.poll, EmailPollRequest, EmailSignedIn, accepted=EmailPending,
    ),
    # -- stage 2: passkey enrolment bound to K10
    BrokerRoute(
        "passkey_register_options", "POST", "/v1/auth/passkey/register/options", (J0,),
        PasskeyEnrolment.options, RegisterOptionsRequest, EnrolmentOptions,
    ),
    BrokerRoute(
        "passkey_register_verify", "POST", "/v1/auth/passkey/register/verify", (J0,),
        PasskeyEnrolment.verify, RegisterVerifyRequest, PasskeyEnrolled,
    ),
    # -- stage 3: SIWE (or K4's SIWE) → J1
    BrokerRoute(
        "siwe_start", "POST", "/v1/auth/siwe/start", (J0,),
        WalletSignIn.start, SiweStartRequest, SiweChallenge,
    ),
    BrokerRoute(
        "siwe_verify", "POST", "/v1/auth/siwe/verify", (J0,),
        WalletSignIn.verify, SiweVerifyRequest, J1Issued,
    ),
    BrokerRoute(
        "siwe_k4", "POST", "/v1/auth/siwe/k4", (J0,),
        K4SignIn.sign_in, SiweK4Request, J1Issued,
    ),
    # -- the sidecar's device session
    BrokerRoute(
        "device_challenge", "POST", "/v1/auth/device/challenge", PUBLIC_ROUTE,
        DeviceSignIn.challenge, DeviceChallengeRequest, DeviceChallenge,
    ),
    BrokerRoute(
        "device_session", "POST", "/v1/auth/device/session", PUBLIC_ROUTE,
        DeviceSignIn.sign_in, DeviceSessionRequest, DeviceSignedIn,
    ),
    BrokerRoute(
        "session_info", "GET", "/v1/auth/session", _ANY_SESSION,
        SessionInfo.describe, response=OperatorSessionInfo | DeviceSessionInfo,
    ),
    BrokerRoute(
        "session_revoke", "POST", "/v1/auth/session/revoke", _ANY_SESSION,
        SessionInfo.revoke, response=SessionRevoked,
    ),
    # -- cap minting
    BrokerRoute(
        "cap_fetch", "POST", "/v1/cap/cred-fetch", (J1, DEVICE),
        CapMinting.fetch, CapMintRequest, CapMinted,
    ),
    BrokerRoute(
        "cap_store", "POST", "/v1/cap/cred-store", (J1,),
        CapMinting.store, CapMintRequest, CapMinted,
    ),
    BrokerRoute(
        "cap_list", "POST", "/v1/cap/cred-list", (J1,),
        CapMinting.list, CapMintRequest, CapMinted,
    ),
    BrokerRoute(
        "cap_teardown", "POST", "/v1/cap/cred-teardown", (J1,),
        CapMinting.teardown, CapMintRequest, CapMinted,
    ),
    BrokerRoute(
        "cap_jwks", "GET", "/v1/cap/jwks.json", PUBLIC_ROUTE,
        CapMinting.jwks, response=PublishedKeys,
    ),
    # -- OIDC issuer
    BrokerRoute(
        "oidc_configuration", "GET", "/.well-known/openid-configuration", PUBLIC_ROUTE,
        OidcMinting.configuration, response=OidcDiscovery,
    ),
    BrokerRoute(
        "oidc_jwks", "GET", "/.well-known/jwks.json", PUBLIC_ROUTE,
        OidcMinting.jwks, response=PublishedKeys,
    ),
    BrokerRoute(
        "mint_oidc_challenge", "POST", "/v1/mint-oidc-jwt/challenge", (J1,),
        OidcMinting.challenge, response=OidcChallenge,
    ),
    BrokerRoute(
        "mint_oidc_jwt", "POST", "/v1/mint-oidc-jwt", (J1,),
        OidcMinting.mint, MintOidcRequest, OidcToken, body_optional=True,
    ),
    # -- hosted relay
    BrokerRoute(
        "relay_scope", "POST", "/v1/relay/scope", (J1,),
        RelayRequests.scope, RelayScopeRequest, RelayReceipt,
    ),
    BrokerRoute(
        "relay_agent", "POST", "/v1/relay/agent", (J1,),
        RelayRequests.agent, RelayAgentRequest, AgentRegistered,
    ),
    BrokerRoute(
        "relay_device_revoke", "POST", "/v1/relay/device-revoke", (J1,),
        RelayRequests.device_revoke, RelayDeviceRevokeRequest, RelayReceipt,
    ),
    BrokerRoute(
        "relay_first_master", "POST", "/v1/relay/first-master", (J1,),
        FirstMasterRelay.register, RelayFirstMasterRequest, FirstMasterRegistered,
    ),
    BrokerRoute("health", "GET", "/v1/health", PUBLIC_ROUTE, Health.report, response=HealthReport),
)  # fmt: skip
"""Every route of the broker."""

SESSION_REQUIREMENTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {route.name: route.sessions for route in ROUTES}
)
"""The broker's authorization table: route name → session stages accepted (empty: public)."""
