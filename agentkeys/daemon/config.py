"""The daemon's configuration (a frozen object built once by :func:`agentkeys.config.load_config`).

Every option can be set in the TOML file (``--config``) or as
``AGENTKEYS_<SECTION>_<OPTION>``, e.g. ``AGENTKEYS_LISTEN_SOCKET`` or
``AGENTKEYS_BROKER_UNREACHABLE_AFTER``. Unset paths default to the XDG locations below.
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentkeys.config import ConfigError
from agentkeys.errors import InvalidIdentifier
from agentkeys.omni import normalize_hex32

__all__ = [
    "AuditSection",
    "BrokerSection",
    "CacheSection",
    "ChainSection",
    "CredentialsSection",
    "DaemonConfig",
    "DeviceSection",
    "IdentitySection",
    "ListenSection",
    "PolicySection",
    "UpstreamSection",
    "default_audit_path",
    "default_env_path",
    "default_policy_path",
    "default_socket_path",
]

SOCKET_NAME = "agentkeys-proxy.sock"


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/agentkeys/daemon.toml``: what ``agentkeys daemon`` reads unless
    ``--config`` names another file (a missing default file means environment settings only)."""
    return _config_home() / "agentkeys" / "daemon.toml"


def default_socket_path() -> Path:
    """``$XDG_RUNTIME_DIR/agentkeys-proxy.sock``, else ``~/.agentkeys/agentkeys-proxy.sock``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / SOCKET_NAME
    return Path.home() / ".agentkeys" / SOCKET_NAME


def default_policy_path() -> Path:
    """``$XDG_CONFIG_HOME/agentkeys/policy.toml``."""
    return _config_home() / "agentkeys" / "policy.toml"


def default_env_path() -> Path:
    """``$XDG_CONFIG_HOME/agentkeys/env``."""
    return _config_home() / "agentkeys" / "env"


def default_audit_path() -> Path:
    """``$XDG_STATE_HOME/agentkeys/daemon-audit.log`` (``~/.local/state`` when unset)."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "agentkeys" / "daemon-audit.log"


@dataclass(frozen=True)
class ListenSection:
    """Where callers reach the daemon."""

    socket: Path | None = None
    tcp_port: int | None = None  # e.g. 9090 for container deployments (E2)
    tcp_host: str = "127.0.0.1"
    pod_wide: bool = False
    max_body_bytes: int = 10 * 1024 * 1024
    graceful_timeout: float = 30.0
    keep_alive_timeout: float = 75.0
    body_timeout: float = 60.0
    max_connections: int = 1024
    # a group (name or gid) whose members may connect: socket 0660 in a 0710 directory of
    # that group, and the env file 0640 of it (agentkeys sidecar setup: the agent user's)
    socket_group: str | None = None

    def __post_init__(self) -> None:
        if self.socket_group is not None and not self.socket_group.strip():
            raise ConfigError("listen.socket_group must name a group")
        if self.tcp_port is not None and not 0 <= self.tcp_port <= 65535:
            raise ConfigError("listen.tcp_port must be within 0..65535")
        positive = (self.max_body_bytes, self.graceful_timeout, self.keep_alive_timeout)
        if min(*positive, self.body_timeout) <= 0:
            raise ConfigError(
                "listen.max_body_bytes, graceful_timeout, keep_alive_timeout and body_timeout"
                " must be positive"
            )
        if self.max_connections < 1:
            raise ConfigError("listen.max_connections must be at least 1")


@dataclass(frozen=True)
class PolicySection:
    path: Path | None = None
    reload_interval: float = 2.0


@dataclass(frozen=True)
class BrokerSection:
    """The broker: heartbeat target, the daemon's device sign-in and cap minting.

    ``audience`` is the broker's session audience (its ``[site] session_audience``), which
    the K10 sign-in signature is bound to. ``session_file`` is gone: the daemon signs in
    with its own K10 and renews its session (``agentkeys.daemon.session``); a config that
    still sets it is refused, so that no operator session stays on the agent's host.
    """

    url: str | None = None
    audience: str = "agentkeys-broker"
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 5.0
    unreachable_after: float = 60.0
    session_file: Path | None = None  # refused (see the docstring)

    def __post_init__(self) -> None:
        if self.session_file is not None:
            raise ConfigError(
                "broker.session_file is no longer used: the daemon now signs in to the broker "
                "with its own K10 (device.key_path) and renews its session itself; remove "
                "session_file and the operator's session file from this host"
            )
        if min(self.heartbeat_interval, self.heartbeat_timeout, self.unreachable_after) <= 0:
            raise ConfigError("broker heartbeat settings must be positive")


@dataclass(frozen=True)
class CredentialsSection:
    """Where credentials come from: the broker (cap mint) and the worker (fetch), only.

    ``source`` accepts nothing but ``"broker"`` (kept so configs that name it still load);
    there is deliberately no local-file source, which would bypass scope, caps and worker.
    """

    source: Literal["broker"] = "broker"
    worker_url: str | None = None


@dataclass(frozen=True)
class ChainSection:
    """The chain the watcher follows for revocations (both set, or neither)."""

    rpc_url: str | None = None
    deployment: Path | None = None  # a deployment record (agentkeys.chain.deploy)
    poll_interval: float = 2.0
    confirmations: int = 0

    def __post_init__(self) -> None:
        if (self.rpc_url is None) != (self.deployment is None):
            raise ConfigError("chain.rpc_url and chain.deployment are set together")


@dataclass(frozen=True)
class IdentitySection:
    """Whose credentials the daemon serves.

    ``legacy_identity_omni`` (optional, 64 hex): the identity omni behind the operator's
    master wallet (K4); when set, every worker fetch names it so that v1 data (0x01/0x02)
    is served and lazily copied to v2 (docs/worker.md). Unset: v1-only data is refused.
    """

    operator_omni: str | None = None
    actor_omni: str | None = None
    legacy_identity_omni: str | None = None

    def __post_init__(self) -> None:
        # operator_omni / actor_omni are checked by run_daemon (deployment templates carry
        # placeholders for them); the optional legacy identity is checked here, at load
        if self.legacy_identity_omni is not None:
            try:
                normalize_hex32(self.legacy_identity_omni)
            except InvalidIdentifier:
                raise ConfigError("identity.legacy_identity_omni must be 64 hex digits") from None


@dataclass(frozen=True)
class DeviceSection:
    """K10: created at first start, TPM when present."""

    backend: Literal["auto", "tpm", "software"] = "auto"
    key_path: Path | None = None
    tcti: str | None = None


@dataclass(frozen=True)
class CacheSection:
    ttl: float = 300.0
    negative_ttl: float = 5.0
    revalidate: float = 30.0
    max_entries: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.ttl <= 300 or self.negative_ttl < 0 or self.max_entries < 1:
            raise ConfigError("cache.ttl must be within (0, 300], max_entries >= 1")
        if not 0 < self.revalidate <= self.ttl:
            raise ConfigError("cache.revalidate must be within (0, cache.ttl]")


@dataclass(frozen=True)
class AuditSection:
    path: Path | None = None
    relay_queue: int = 10_000
    relay_batch: int = 100


@dataclass(frozen=True)
class UpstreamSection:
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    write_timeout: float = 60.0
    max_connections: int = 100


@dataclass(frozen=True)
class EnvSection:
    path: Path | None = None
    write: bool = True


@dataclass(frozen=True)
class DaemonConfig:
    """The whole daemon configuration."""

    listen: ListenSection = field(default_factory=ListenSection)
    policy: PolicySection = field(default_factory=PolicySection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    credentials: CredentialsSection = field(default_factory=CredentialsSection)
    identity: IdentitySection = field(default_factory=IdentitySection)
    chain: ChainSection = field(default_factory=ChainSection)
    device: DeviceSection = field(default_factory=DeviceSection)
    cache: CacheSection = field(default_factory=CacheSection)
    audit: AuditSection = field(default_factory=AuditSection)
    upstream: UpstreamSection = field(default_factory=UpstreamSection)
    env: EnvSection = field(default_factory=EnvSection)

    @property
    def socket_path(self) -> Path:
        """The Unix socket path (configured or default)."""
        return self.listen.socket or default_socket_path()

    @property
    def socket_gid(self) -> int | None:
        """The gid of ``listen.socket_group`` (None when unset).

        Raises:
            ConfigError: no such group.
        """
        name = self.listen.socket_group
        if name is None:
            return None
        if name.isdigit():
            return int(name)
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise ConfigError(f"listen.socket_group: no group named {name!r}") from None

    @property
    def policy_path(self) -> Path:
        """The policy file (configured or default)."""
        return self.policy.path or default_policy_path()

    @property
    def audit_path(self) -> Path:
        """The audit log (configured or default)."""
        return self.audit.path or default_audit_path()

    @property
    def env_path(self) -> Path:
        """The environment file (configured or default)."""
        return self.env.path or default_env_path()
