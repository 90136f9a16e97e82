"""The broker's configuration (built once with agentkeys.config.load_config).

TOML sections and their environment overlay (``AGENTKEYS_<SECTION>_<OPTION>``)::

    [broker]  listening (agentkeys.service.ServerSettings); plain HTTP on loopback, put a TLS
              terminating proxy in front in production
    [state]   dir: keys (K1, K2, session key) and the SQLite state database
    [site]    public_url (this broker's external base URL; also the OIDC issuer),
              rp_id, rp_name, origin (WebAuthn), siwe_domain, siwe_uri, chain_id,
              j0_lifetime, j1_lifetime, challenge_lifetime
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
from urllib.parse import urlsplit

from agentkeys.cap import MAX_CAP_LIFETIME
from agentkeys.config import ConfigError
from agentkeys.service import ServerSettings

__all__ = [
    "BrokerConfig",
    "CapSettings",
    "ChainSettings",
    "EmailSettings",
    "OidcSettings",
    "RelaySettings",
    "SignerLink",
    "SiteSettings",
    "StateSettings",
]


@dataclass(frozen=True, kw_only=True)
class StateSettings:
    """Where the broker keeps its keys and state database."""

    dir: Path


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
