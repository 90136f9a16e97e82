"""The signer's configuration (built once with agentkeys.config.load_config).

TOML sections and their environment overlay (``AGENTKEYS_<SECTION>_<OPTION>``)::

    [signer]  listening and mutual TLS (agentkeys.service.ServerSettings); the
              three tls_* paths are required: the signer serves mTLS only
    [keys]    state_dir (sealed K3 epochs, master and OIDC secrets),
              seal_backend auto|tpm|software, seal_key_file, tpm_tcti
    [chain]   rpc_url, deployment (the record agentkeys.chain.deploy writes),
              epoch_poll_interval
    [oidc]    issuer (the broker's issuer URL, exactly as ``iss``), audience,
              token_lifetime
    [sts]     endpoint, role_arn, region, duration_seconds
    [siwe]    domain, uri, chain_id, max_lifetime: the only relying party K4 signs SIWE
              messages for (default: the host:port and URL of oidc.issuer, which is the
              broker's public URL, and the deployment record's chain id; the broker's
              site.siwe_domain / siwe_uri / chain_id must match)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentkeys.config import ConfigError
from agentkeys.service import ServerSettings

__all__ = [
    "ChainSettings",
    "KeysSettings",
    "OidcSettings",
    "SignerConfig",
    "SiweSettings",
    "StsSettings",
]


@dataclass(frozen=True, kw_only=True)
class KeysSettings:
    """Where and how the signer's secrets are sealed."""

    state_dir: Path
    seal_backend: Literal["auto", "tpm", "software"] = "auto"
    seal_key_file: Path | None = None
    tpm_tcti: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChainSettings:
    """Where the K3EpochCounter is read."""

    rpc_url: str
    deployment: Path
    epoch_poll_interval: float = 2.0

    def __post_init__(self) -> None:
        if self.epoch_poll_interval <= 0:
            raise ConfigError("chain.epoch_poll_interval must be positive")


@dataclass(frozen=True, kw_only=True)
class OidcSettings:
    """The web-identity tokens the signer mints for STS."""

    issuer: str
    audience: str = "agentkeys-s3"
    token_lifetime: int = 300

    def __post_init__(self) -> None:
        if not 30 <= self.token_lifetime <= 3600:
            raise ConfigError("oidc.token_lifetime must be within 30..3600 seconds")


@dataclass(frozen=True, kw_only=True)
class StsSettings:
    """The STS endpoint and role the tokens are exchanged for."""

    endpoint: str
    role_arn: str
    region: str = "us-east-1"
    duration_seconds: int = 900

    def __post_init__(self) -> None:
        if not 900 <= self.duration_seconds <= 43200:
            raise ConfigError("sts.duration_seconds must be within 900..43200")


@dataclass(frozen=True, kw_only=True)
class SiweSettings:
    """The relying party K4 signs SIWE messages for (empty / 0: the defaults above)."""

    domain: str = ""
    uri: str = ""
    chain_id: int = 0
    max_lifetime: int = 600

    def __post_init__(self) -> None:
        if not 30 <= self.max_lifetime <= 3600:
            raise ConfigError("siwe.max_lifetime must be within 30..3600 seconds")
        if self.chain_id < 0:
            raise ConfigError("siwe.chain_id must not be negative")


@dataclass(frozen=True)
class SignerConfig:
    """The whole signer configuration."""

    signer: ServerSettings
    keys: KeysSettings
    chain: ChainSettings
    oidc: OidcSettings
    sts: StsSettings
    siwe: SiweSettings = field(default_factory=SiweSettings)

    def __post_init__(self) -> None:
        if not self.signer.tls_enabled:
            raise ConfigError(
                "the signer serves mutual TLS only: set signer.tls_cert, "
                "signer.tls_key and signer.tls_client_ca"
            )
