"""The broker's configuration (built once with agentkeys.config.load_config).

TOML sections and their environment overlay (``AGENTKEYS_<SECTION>_<OPTION>``)::

    [broker]  listening (agentkeys.service.ServerSettings); plain HTTP on loopback, put a TLS
              terminating proxy in front in production
    [state]   dir (key files and the SQLite database), backend (sqlite | postgres), dsn
              (libpq, no password in it), password_file (0600), pool_size
    [keys]    source (files | store; default: files with sqlite, store with postgres),
              seal_key_file (0600, the same file on every replica), refresh_interval,
              publish_lead
    [site]    public_url (this broker's external base URL; also the OIDC issuer),
              rp_id, rp_name, origin (WebAuthn), siwe_domain, siwe_uri, chain_id,
              j0_lifetime, j1_lifetime, device_lifetime (a sidecar's device session, which
              it renews itself; default 900 s), challenge_lifetime
    [email]   smtp_host, smtp_port, sender, link_lifetime (<= 600 s), starttls
    [chain]   rpc_url, deployment (record written by agentkeys.chain.deploy), confirmations,
              poll_interval, cache_staleness (0: every mint checks the head; else seconds the
              chain view trusts its cache without asking), max_log_range (blocks per
              eth_getLogs)
    [caps]    audience (the worker's), lifetime, pop_window
    [oidc]    audience, token_lifetime
    [relay]   enabled, key_file (the relay wallet's hex private key, 0600)
    [signer]  url, ca, cert, key (mutual TLS to the signer; optional: K4 SIWE for email
              identities and the signer's OIDC key in the published JWKS)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from agentkeys.cap import MAX_CAP_LIFETIME
from agentkeys.config import ConfigError
from agentkeys.service import ServerSettings

__all__ = [
    "BrokerConfig",
    "CapSettings",
    "ChainSettings",
    "EmailSettings",
    "KeySettings",
    "OidcSettings",
    "RelaySettings",
    "SignerLink",
    "SiteSettings",
    "StateSettings",
]


@dataclass(frozen=True, kw_only=True)
class StateSettings:
    """Where the broker keeps its state: SQLite under ``dir`` or a shared PostgreSQL.

    ``dsn`` is a libpq connection string or URI (``host=/run/pg port=5432 dbname=agentkeys
    user=broker``); it may not hold a password: put that in ``password_file`` (0600), or
    use a libpq ``passfile`` / peer authentication. ``pool_size`` bounds the connections
    (and worker threads) one broker uses.

    Raises:
        ConfigError: postgres without a dsn, a dsn with a password or malformed, a
            password_file or dsn with sqlite.
    """

    dir: Path
    backend: Literal["sqlite", "postgres"] = "sqlite"
    dsn: str | None = None
    password_file: Path | None = None
    pool_size: int = 8

    def __post_init__(self) -> None:
        if self.backend == "sqlite":
            if self.dsn is not None or self.password_file is not None:
                raise ConfigError("state.dsn and state.password_file need backend = postgres")
            return
        if self.dsn is None:
            raise ConfigError("state.backend = postgres needs state.dsn")
        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            raise ConfigError("state.dsn is not a libpq connection string or URI") from None
        if "password" in params:
            raise ConfigError(
                "state.dsn must not hold a password: put it in state.password_file (0600)"
            )
        if not 1 <= self.pool_size <= 256:
            raise ConfigError("state.pool_size must be within 1..256")


@dataclass(frozen=True, kw_only=True)
class KeySettings:
    """Where K1, K2 and the session key live (``agentkeys.broker._keys``).

    ``source``: ``files`` (PEM files under ``state.dir/keys``, one host) or ``store`` (the
    shared key set in the state store, sealed under ``seal_key_file``, default
    ``state.dir/keys/seal.key``; every replica needs the same file). Unset: ``files`` with
    SQLite, ``store`` with PostgreSQL (replicas must share one set; ``files`` is refused
    there). ``publish_lead``: seconds a rotated key is published before it signs; keep it
    above the workers' JWKS cache time (300 s) plus ``refresh_interval``.
    """

    source: Literal["files", "store"] | None = None
    seal_key_file: Path | None = None
    refresh_interval: float = 10.0
    publish_lead: int = 600

    def __post_init__(self) -> None:
        if not 0.1 <= self.refresh_interval <= 300:
            raise ConfigError("keys.refresh_interval must be within 0.1..300 seconds")
        if not self.refresh_interval < self.publish_lead <= 86400:
            raise ConfigError("keys.publish_lead must exceed keys.refresh_interval (≤ 1 day)")


@dataclass(frozen=True, kw_only=True)
class SiteSettings:
    """Who the broker is to browsers, wallets and STS."""

    public_url: str
    rp_id: str
    origin: str
    chain_id: int
    rp_name: str = "agentkeys"
    siwe_domain: str = ""
    siwe_uri: str = ""
    session_audience: str = "agentkeys-broker"
    j0_lifetime: int = 900
    j1_lifetime: int = 3600
    device_lifetime: int = 900
    challenge_lifetime: int = 300

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ConfigError("site.public_url must be an http(s) URL without query")
        if self.public_url.endswith("/"):
            raise ConfigError("site.public_url must not end with '/'")
        if not self.rp_id or not self.origin.startswith(("https://", "http://")):
            raise ConfigError("site.rp_id and site.origin (http(s)://...) are required")
        if not self.siwe_domain:
            object.__setattr__(self, "siwe_domain", parts.netloc)
        if not self.siwe_uri:
            object.__setattr__(self, "siwe_uri", self.public_url)
        for name in ("j0_lifetime", "j1_lifetime", "challenge_lifetime"):
            if not 30 <= getattr(self, name) <= 86400:
                raise ConfigError(f"site.{name} must be within 30..86400 seconds")
        # the sidecar renews its own session: a short one costs renewals only
        if not 2 <= self.device_lifetime <= 86400:
            raise ConfigError("site.device_lifetime must be within 2..86400 seconds")


@dataclass(frozen=True, kw_only=True)
class EmailSettings:
    """The SMTP relay magic links are sent through."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    sender: str = "agentkeys@localhost"
    link_lifetime: int = 600
    starttls: bool = False
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not 60 <= self.link_lifetime <= 600:
            raise ConfigError("email.link_lifetime must be within 60..600 seconds")


@dataclass(frozen=True, kw_only=True)
class ChainSettings:
    """The chain the broker reads (SidecarRegistry, ScopeContract, K3EpochCounter)."""

    rpc_url: str
    deployment: Path
    confirmations: int = 0
    poll_interval: float = 1.0
    cache_staleness: float = 0.0
    max_log_range: int = 2000

    def __post_init__(self) -> None:
        if self.cache_staleness != 0 and self.cache_staleness <= self.poll_interval:
            raise ConfigError("chain.cache_staleness must be 0 or above chain.poll_interval")
        if self.max_log_range < 1:
            raise ConfigError("chain.max_log_range must be >= 1")


@dataclass(frozen=True, kw_only=True)
class CapSettings:
    """Caps minted by this broker."""

    audience: str = "agentkeys-worker"
    lifetime: int = 300
    pop_window: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.lifetime <= MAX_CAP_LIFETIME:
            raise ConfigError(f"caps.lifetime must be within 1..{MAX_CAP_LIFETIME}")
        if not 5 <= self.pop_window <= 300:
            raise ConfigError("caps.pop_window must be within 5..300 seconds")


@dataclass(frozen=True, kw_only=True)
class OidcSettings:
    """OIDC tokens for the legacy S3 backend (STS AssumeRoleWithWebIdentity)."""

    audience: str = "agentkeys-s3"
    token_lifetime: int = 900

    def __post_init__(self) -> None:
        if not 30 <= self.token_lifetime <= 3600:
            raise ConfigError("oidc.token_lifetime must be within 30..3600 seconds")


@dataclass(frozen=True, kw_only=True)
class RelaySettings:
    """Hosted-relay mode: off unless enabled with a relay wallet key file."""

    enabled: bool = False
    key_file: Path | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.enabled and self.key_file is None:
            raise ConfigError("relay.enabled needs relay.key_file")


@dataclass(frozen=True, kw_only=True)
class SignerLink:
    """Mutual TLS to the signer (all four set, or none)."""

    url: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        values = (self.url, self.ca, self.cert, self.key)
        if any(v is not None for v in values) and not all(v is not None for v in values):
            raise ConfigError("signer.url, signer.ca, signer.cert and signer.key go together")

    @property
    def configured(self) -> bool:
        """Whether a signer is configured."""
        return self.url is not None


@dataclass(frozen=True)
class BrokerConfig:
    """The whole broker configuration."""

    broker: ServerSettings
    state: StateSettings
    site: SiteSettings
    chain: ChainSettings
    email: EmailSettings = field(default_factory=EmailSettings)
    caps: CapSettings = field(default_factory=CapSettings)
    oidc: OidcSettings = field(default_factory=OidcSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    signer: SignerLink = field(default_factory=SignerLink)
    keys: KeySettings = field(default_factory=KeySettings)

    def __post_init__(self) -> None:
        if self.state.backend == "postgres" and self.keys.source == "files":
            raise ConfigError(
                "keys.source = files with a PostgreSQL state: replicas would each sign with "
                "their own keys; use keys.source = store"
            )

    @property
    def keys_in_store(self) -> bool:
        """Whether the keys are the shared set in the state store."""
        if self.keys.source is not None:
            return self.keys.source == "store"
        return self.state.backend == "postgres"

    @property
    def seal_key_file(self) -> Path:
        """The seal key file of the shared key set."""
        return self.keys.seal_key_file or self.state.dir / "keys" / "seal.key"

    def key_lifetimes(self) -> dict[str, int]:
        """Per key purpose, the longest lifetime of what it signs (cap, token, session)."""
        return {
            "cap": self.caps.lifetime,
            "oidc": self.oidc.token_lifetime,
            "session": max(self.site.j0_lifetime, self.site.j1_lifetime, self.site.device_lifetime),
        }
