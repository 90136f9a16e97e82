"""The broker: sign-in (email link → passkey → SIWE), cap minting, OIDC issuer, relay.

SPEC.md sections 5, 7 (broker) and 9; docs/broker.md. It authorises access and never
decrypts: no ``/credential/*`` endpoint, no KEK.
"""

from agentkeys.broker._chainview import CachedChainView, ChainReader
from agentkeys.broker._email import Mailer, SmtpMailer
from agentkeys.broker._keys import BrokerKeys, KeyRing
from agentkeys.broker._mint import MintDecision, ScopeSource, check_binding, decide_scope
from agentkeys.broker._oidc import discovery_document, mint_oidc_token
from agentkeys.broker._relay import Relay
from agentkeys.broker._routes import ROUTES, SESSION_REQUIREMENTS, BrokerRoute
from agentkeys.broker._run import SignerK4Client, run_broker
from agentkeys.broker._service import BrokerService
from agentkeys.broker._sessions import J0, J1, Session, SessionIssuer
from agentkeys.broker._store import (
    EmailRequest,
    LegacyScope,
    MintRecord,
    PasskeyCredential,
    SessionRecord,
    SigningKeyRecord,
    StateStore,
)
from agentkeys.broker._store_postgres import PostgresStateStore
from agentkeys.broker._store_sqlite import SqliteStateStore
from agentkeys.broker._wallet_signin import K4Signer
from agentkeys.broker.config import (
    BrokerConfig,
    CapSettings,
    ChainSettings,
    EmailSettings,
    OidcSettings,
    RelaySettings,
    SignerLink,
    SiteSettings,
    StateSettings,
)

__all__ = [
    "J0",
    "J1",
    "ROUTES",
    "SESSION_REQUIREMENTS",
    "BrokerConfig",
    "BrokerKeys",
    "BrokerRoute",
    "BrokerService",
    "CachedChainView",
    "CapSettings",
    "ChainReader",
    "ChainSettings",
    "EmailRequest",
    "EmailSettings",
    "K4Signer",
    "KeyRing",
    "LegacyScope",
    "Mailer",
    "MintDecision",
    "MintRecord",
    "OidcSettings",
    "PasskeyCredential",
    "PostgresStateStore",
    "Relay",
    "RelaySettings",
    "ScopeSource",
    "Session",
    "SessionIssuer",
    "SessionRecord",
    "SignerK4Client",
    "SignerLink",
    "SigningKeyRecord",
    "SiteSettings",
    "SmtpMailer",
    "SqliteStateStore",
    "StateSettings",
    "StateStore",
    "check_binding",
    "decide_scope",
    "discovery_document",
    "mint_oidc_token",
    "run_broker",
]
