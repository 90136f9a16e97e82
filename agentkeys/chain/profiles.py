"""Chain profiles: which chain, which RPC endpoint, which deployment (SPEC.md section 6).

Built-in profiles give defaults; a TOML file's ``[chain]`` section and the environment
(``AGENTKEYS_CHAIN_<OPTION>``, overlaid by :func:`agentkeys.config.load_config`) override them:

    [chain]
    profile = "heima"                   # anvil | heima | heima-paseo | base-sepolia
    rpc_url = "https://…"
    chain_id = 1234                     # checked against eth_chainId by ChainClient users
    deployment = "deployment.json"      # a record written by deploy_all, or:
    registry = "0x…"
    scope = "0x…"
    epoch_counter = "0x…"
    confirmations = 3

The Heima profiles carry no built-in RPC URL or chain id: those come from the operator's
configuration, and a profile missing them is refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentkeys.chain.client import ContractAddresses
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.chain.errors import ChainConfigError
from agentkeys.config import load_config

__all__ = [
    "BUILTIN_PROFILES",
    "ChainOptions",
    "ChainProfile",
    "ChainSettings",
    "load_chain_profile",
]


@dataclass(frozen=True)
class _Builtin:
    rpc_url: str | None
    chain_id: int | None
    confirmations: int


#: Defaults per profile name. ``base-sepolia`` is the EVM L2 fallback profile.
BUILTIN_PROFILES: Mapping[str, _Builtin] = {
    "anvil": _Builtin("http://127.0.0.1:8545", 31337, 0),
    "heima": _Builtin(None, None, 3),
    "heima-paseo": _Builtin(None, None, 3),
    "base-sepolia": _Builtin("https://sepolia.base.org", 84532, 10),
}


@dataclass(frozen=True)
class ChainOptions:
    """The ``[chain]`` section (all optional; see the module docstring)."""

    profile: str = "anvil"
    rpc_url: str | None = None
    chain_id: int | None = None
    deployment: Path | None = None
    registry: str | None = None
    scope: str | None = None
    epoch_counter: str | None = None
    confirmations: int | None = None


@dataclass(frozen=True)
class ChainSettings:
    """Configuration root holding the ``chain`` section."""

    chain: ChainOptions = field(default_factory=ChainOptions)


@dataclass(frozen=True)
class ChainProfile:
    """A resolved chain profile.

    ``addresses`` is None when no deployment is configured (e.g. before ``deploy_all``);
    ``start_block`` is the deployment record's block, where a watcher may start.
    """

    name: str
    rpc_url: str
    chain_id: int
    confirmations: int
    addresses: ContractAddresses | None
    start_block: int = 0


def load_chain_profile(
    *, path: Path | None = None, environ: Mapping[str, str] | None = None
) -> ChainProfile:
    """Resolve the chain profile from built-ins, the TOML file ``path`` and the environment.

    Raises:
        ChainConfigError: unknown profile, missing RPC URL or chain id, partial addresses,
            a deployment record for another chain, or a negative confirmation depth.
        ConfigError: the file or environment is malformed (from agentkeys.config).
    """
    options = load_config(ChainSettings, path=path, environ=environ).chain
    builtin = BUILTIN_PROFILES.get(options.profile)
    if builtin is None:
        names = ", ".join(sorted(BUILTIN_PROFILES))
        raise ChainConfigError(f"unknown chain profile {options.profile!r} (known: {names})")
    rpc_url = options.rpc_url or builtin.rpc_url
    chain_id = options.chain_id if options.chain_id is not None else builtin.chain_id
    if not rpc_url or chain_id is None:
        raise ChainConfigError(
            f"chain profile {options.profile} needs rpc_url and chain_id "
            "(AGENTKEYS_CHAIN_RPC_URL, AGENTKEYS_CHAIN_CHAIN_ID)"
        )
    if not rpc_url.startswith(("http://", "https://")):
        raise ChainConfigError("rpc_url must be an http(s) URL")
    confirmations = (
        options.confirmations if options.confirmations is not None else builtin.confirmations
    )
    if confirmations < 0:
        raise ChainConfigError("confirmations must be >= 0")

    addresses: ContractAddresses | None = None
    start_block = 0
    explicit = (options.registry, options.scope, options.epoch_counter)
    if options.deployment is not None:
        record = read_deployment_record(options.deployment)
        if record.chain_id != chain_id:
            raise ChainConfigError(
                f"deployment record is for chain {record.chain_id}, profile is {chain_id}"
            )
        addresses, start_block = record.addresses, record.block_number
    if any(a is not None for a in explicit):
        if not all(a is not None for a in explicit):
            raise ChainConfigError("give all of registry, scope and epoch_counter, or none")
        addresses = ContractAddresses(
            registry=str(options.registry),
            scope=str(options.scope),
            epoch_counter=str(options.epoch_counter),
        )
    return ChainProfile(
        name=options.profile,
        rpc_url=rpc_url,
        chain_id=chain_id,
        confirmations=confirmations,
        addresses=addresses,
        start_block=start_block,
    )
