"""Deploy the contract set and keep a deployment record (SPEC.md sections 6 and 9 step 1).

Deployment order: SidecarRegistry, ScopeContract(registry), K3EpochCounter(governance,
threshold), then ``registry.bind_scope_contract(scope)`` by the deployer. The record names the
chain, the addresses, the block of the last deployment transaction and the sha256 of each
artifact file deployed, so a later reader can tell exactly which code is on chain.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from pydantic import TypeAdapter, with_config

from agentkeys.chain.artifacts import load_artifact
from agentkeys.chain.client import ChainClient, ContractAddresses
from agentkeys.chain.errors import ChainConfigError, TransactionFailed
from agentkeys.config import ConfigError, validate_document
from agentkeys.strict_json import StrictJsonError, loads_object
from agentkeys.strict_schema import STRICT

__all__ = ["DEPLOYMENT_RECORD_VERSION", "Deployment", "deploy_all", "read_deployment_record"]

DEPLOYMENT_RECORD_VERSION = 1


@with_config(STRICT)
@dataclass(frozen=True)
class _Contracts:
    SidecarRegistry: str
    ScopeContract: str
    K3EpochCounter: str


@with_config(STRICT)
@dataclass(frozen=True)
class _Record:
    """The record's JSON shape (what :meth:`Deployment.to_json` writes)."""

    version: int
    chain_id: int
    contracts: _Contracts
    block_number: int
    deployer: str
    artifact_sha256: dict[str, str]


_RECORD = TypeAdapter(_Record)


@dataclass(frozen=True)
class Deployment:
    """A deployment record: where the contracts are and which artifacts they came from."""

    chain_id: int
    addresses: ContractAddresses
    block_number: int
    deployer: str
    artifact_sha256: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data."""
        return {
            "version": DEPLOYMENT_RECORD_VERSION,
            "chain_id": self.chain_id,
            "contracts": {
                "SidecarRegistry": self.addresses.registry,
                "ScopeContract": self.addresses.scope,
                "K3EpochCounter": self.addresses.epoch_counter,
            },
            "block_number": self.block_number,
            "deployer": self.deployer,
            "artifact_sha256": dict(sorted(self.artifact_sha256.items())),
        }

    @classmethod
    def from_json(cls, data: Any) -> Deployment:
        """Parse a record (strictly: no unknown member, every value of its exact type).

        Raises:
            ChainConfigError: wrong version or missing/unknown/malformed fields.
        """
        if isinstance(data, Mapping) and data.get("version") != DEPLOYMENT_RECORD_VERSION:
            raise ChainConfigError("unsupported deployment record version")
        try:
            record = validate_document(_RECORD, data)
        except ConfigError as exc:
            raise ChainConfigError(f"deployment record is malformed: {exc.reason}") from None
        contracts = record.contracts
        return cls(
            chain_id=record.chain_id,
            addresses=ContractAddresses(
                registry=contracts.SidecarRegistry,
                scope=contracts.ScopeContract,
                epoch_counter=contracts.K3EpochCounter,
            ),
            block_number=record.block_number,
            deployer=record.deployer,
            artifact_sha256=record.artifact_sha256,
        )

    def write(self, path: Path) -> None:
        """Write the record atomically (0644; it holds no secret)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".deployment-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_json(), handle, indent=2, sort_keys=True)
                handle.write("\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_deployment_record(path: Path) -> Deployment:
    """Read a record written by :meth:`Deployment.write`.

    Raises:
        ChainConfigError: unreadable or malformed.
    """
    try:
        text = path.read_bytes()
    except OSError:
        raise ChainConfigError(f"cannot read deployment record {path}") from None
    try:
        return Deployment.from_json(loads_object(text, what="the record"))
    except (StrictJsonError, ChainConfigError) as exc:
        raise ChainConfigError(f"deployment record {path}: {exc.reason}") from None


async def _deploy_one(
    client: ChainClient, deployer: LocalAccount, name: str, args: Sequence[Any]
) -> tuple[str, int]:
    artifact = load_artifact(name)
    data = artifact.bytecode + abi_encode(list(artifact.abi.constructor_inputs), list(args))
    receipt = await client.send_transaction(deployer, None, data, context=f"deploy {name}")
    if receipt.contract_address is None:
        raise TransactionFailed(f"deploy {name}: no contract address in receipt")
    return to_checksum_address(receipt.contract_address), receipt.block_number


async def deploy_all(
    client: ChainClient,
    deployer: LocalAccount,
    *,
    governance: Sequence[str],
    threshold: int,
    record_path: Path | None = None,
) -> Deployment:
    """Deploy the set from ``deployer``, point ``client`` at it, optionally write the record.

    Args:
        governance: the K3 signer-governance member addresses (any order; sorted here).
        threshold: M of the M-of-N approvals.

    Raises:
        ChainConfigError: governance or threshold unusable.
        ContractReverted / TransactionFailed / RpcUnavailable: deployment failed.
    """
    members = sorted({to_checksum_address(m) for m in governance}, key=lambda a: int(a, 16))
    if not members or not 0 < threshold <= len(members):
        raise ChainConfigError("governance needs 1..N members and 0 < threshold <= N")
    registry, _ = await _deploy_one(client, deployer, "SidecarRegistry", [])
    scope, _ = await _deploy_one(client, deployer, "ScopeContract", [registry])
    epoch, _ = await _deploy_one(client, deployer, "K3EpochCounter", [members, threshold])
    addresses = ContractAddresses(registry=registry, scope=scope, epoch_counter=epoch)
    client.with_addresses(addresses)
    receipt = await client.transact(deployer, "SidecarRegistry", "bind_scope_contract", scope)
    deployment = Deployment(
        chain_id=await client.chain_id(),
        addresses=addresses,
        block_number=receipt.block_number,
        deployer=deployer.address,
        artifact_sha256={
            name: load_artifact(name).sha256
            for name in ("SidecarRegistry", "ScopeContract", "K3EpochCounter")
        },
    )
    if record_path is not None:
        deployment.write(record_path)
    return deployment
