"""The broker service's composition root: its cores, its HTTP app and its duties.

:class:`BrokerService` builds each core (``_email_signin``, ``_enrolment``,
``_wallet_signin``, ``_device_signin``, ``_session_info``, ``_cap_minting``,
``_oidc_minting``, ``_relay_requests``, ``_health``) with only the dependencies it needs,
serves the routes of ``_routes`` over them through ``_shell``, and runs its nursery: the
HTTP server, the chain follower and the expired-state purger (SPEC.md section 7).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from agentkeys.broker._cap_minting import CapMinting
from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._device_signin import DeviceSignIn
from agentkeys.broker._email import Mailer
from agentkeys.broker._email_signin import EmailSignIn
from agentkeys.broker._enrolment import PasskeyEnrolment
from agentkeys.broker._health import Health
from agentkeys.broker._keys import BrokerKeys
from agentkeys.broker._oidc_minting import OidcMinting
from agentkeys.broker._relay import Relay
from agentkeys.broker._relay_requests import FirstMasterRelay, RelayRequests
from agentkeys.broker._routes import ROUTES
from agentkeys.broker._session_info import SessionInfo
from agentkeys.broker._sessions import SessionIssuer
from agentkeys.broker._shell import Disabled, http_routes
from agentkeys.broker._store import StateStore
from agentkeys.broker._wallet_signin import K4Signer, K4SignIn, WalletSignIn
from agentkeys.broker.config import CapSettings, EmailSettings, OidcSettings, SiteSettings
from agentkeys.broker.errors import RelayDisabled
from agentkeys.errors import AgentkeysError
from agentkeys.service import (
    PUBLIC,
    AuditSink,
    BoundAddress,
    ServerSettings,
    ServiceApp,
    serve_http,
)

__all__ = ["BrokerService"]

log = logging.getLogger("agentkeys.broker")

_NO_RELAY = Disabled(RelayDisabled, "hosted-relay mode is not enabled on this broker")
_NO_K4 = Disabled(RelayDisabled, "this broker has no signer for email wallets")


class BrokerService:
    """The broker: its cores, its HTTP app and its nursery (server, chain follower, purger).

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
        self.keys = keys
        self.store = store
        self.chain = chain
        self._follow = follow
        self._relay = relay
        self._clock = clock
        self._stop = trio.Event()
        self.sessions = SessionIssuer(
            keys.session, store, issuer=site.public_url, audience=site.session_audience
        )
        sessions = self.sessions
        wallet = WalletSignIn(site=site, store=store, sessions=sessions, clock=clock)
        cores: dict[type[Any], object] = {
            EmailSignIn: EmailSignIn(
                site=site, email=email, store=store, mailer=mailer, sessions=sessions, clock=clock
            ),
            PasskeyEnrolment: PasskeyEnrolment(site=site, store=store, clock=clock),
            WalletSignIn: wallet,
            K4SignIn: _NO_K4
            if k4 is None
            else K4SignIn(wallet_signin=wallet, k4=k4, chain=chain, site=site, clock=clock),
            DeviceSignIn: DeviceSignIn(
                site=site, store=store, chain=chain, sessions=sessions, clock=clock
            ),
            SessionInfo: SessionInfo(sessions=sessions, chain=chain),
            CapMinting: CapMinting(caps=caps, keys=keys, store=store, chain=chain, clock=clock),
            OidcMinting: OidcMinting(
                site=site,
                oidc=oidc,
                keys=keys,
                store=store,
                chain=chain,
                extra_jwks=extra_oidc_jwks,
                clock=clock,
            ),
            RelayRequests: _NO_RELAY if relay is None else RelayRequests(relay=relay, site=site),
            FirstMasterRelay: _NO_RELAY
            if relay is None
            else _NO_K4
            if k4 is None
            else FirstMasterRelay(relay=relay, k4=k4, store=store, site=site),
            Health: Health(chain=chain, relay=relay is not None),
        }
        routes = http_routes(ROUTES, cores, sessions, clock)
        self.app = ServiceApp(
            "broker",
            routes,
            {route.name: PUBLIC for route in routes},  # transport: anyone; sessions: ROUTES
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
                await self.store.purge_expired(int(self._clock()))
            except AgentkeysError as exc:
                self.app.metrics.store_error(exc.error)
                log.warning("broker state purge failed: %s", exc.reason)
