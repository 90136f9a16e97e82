"""The worker's configuration (built once with agentkeys.config.load_config).

TOML sections and their environment overlay (``AGENTKEYS_<SECTION>_<OPTION>``)::

    [worker]   listening (agentkeys.service.ServerSettings; plain HTTP on loopback behind
               the deployment's TLS front, or mTLS when the three tls_* paths are set)
    [caps]     audience (this worker's ``aud``); jwks_file (a configured K1 key set) or
               jwks_url (the broker's /v1/cap/jwks.json: https, or http to a loopback
               host only) with an optional jwks_ca (PEM CA bundle the broker's TLS
               certificate must chain to, instead of the system trust store)
    [chain]    rpc_url, deployment (record written by agentkeys.chain.deploy)
    [signer]   url, ca, cert, key (the worker's role certificate)
    [storage]  bucket, endpoint (omit for AWS), region, shared_nonces (spend every K10 proof
               nonce as a create-only marker object too: for several processes or
               Lambda containers; docs/worker.md)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentkeys.config import ConfigError
from agentkeys.errors import AgentkeysError
from agentkeys.service import ServerSettings
from agentkeys.worker._ports import check_jwks_url

__all__ = [
    "CapSettings",
    "ChainSettings",
    "SignerSettings",
    "StorageConfig",
    "WorkerConfig",
]


@dataclass(frozen=True, kw_only=True)
class CapSettings:
    """How caps are checked: this worker's audience and the trusted K1 key set.

    Raises:
        ConfigError: not exactly one key source; a ``jwks_url`` that is not https (http
            only to a loopback host); ``jwks_ca`` without ``jwks_url``.
    """

    audience: str
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks_ca: Path | None = None

    def __post_init__(self) -> None:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ConfigError("caps: set exactly one of jwks_file and jwks_url")
        if self.jwks_ca is not None and self.jwks_url is None:
            raise ConfigError("caps: jwks_ca pins the CA of jwks_url; set jwks_url too")
        if self.jwks_url is not None:
            try:
                check_jwks_url(self.jwks_url)
            except AgentkeysError as exc:
                raise ConfigError(f"caps: {exc.reason}") from None


@dataclass(frozen=True, kw_only=True)
class ChainSettings:
    """The chain the worker re-checks caps against."""

    rpc_url: str
    deployment: Path


@dataclass(frozen=True, kw_only=True)
class SignerSettings:
    """The signer (mutual TLS; the worker presents its ``worker`` role certificate)."""

    url: str
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """The credential bucket; ``shared_nonces`` (default on) spends K10 proof nonces in it too.

    On by default so that several worker processes or Lambda containers sharing the bucket
    never leave a replay window; a single-process deployment may turn it off to save one
    conditional PUT per request.
    """

    bucket: str
    endpoint: str | None = None
    region: str = "us-east-1"
    shared_nonces: bool = True


@dataclass(frozen=True)
class WorkerConfig:
    """The whole worker configuration."""

    worker: ServerSettings
    caps: CapSettings
    chain: ChainSettings
    signer: SignerSettings
    storage: StorageConfig
