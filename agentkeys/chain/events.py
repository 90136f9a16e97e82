"""Typed events of the agentkeys contracts (SPEC.md section 6: every mutation names msg.sender).

:func:`decode_log` turns one raw JSON-RPC log of a known contract into one of the frozen event
types below; identifiers are 64-hex text (SPEC section 3), addresses lowercase ``0x`` hex.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentkeys.chain._abi import ContractAbi
from agentkeys.chain.errors import AbiError

__all__ = [
    "ChainEvent",
    "ChainReorged",
    "DeviceKeyRotated",
    "DeviceRegistered",
    "DeviceRevoked",
    "EpochAdvanced",
    "EventPosition",
    "GovernanceChanged",
    "MasterWalletBound",
    "ScopeRevoked",
    "ScopeSet",
    "WatcherEvent",
    "decode_log",
]


@dataclass(frozen=True, order=True)
class EventPosition:
    """Where an event is on chain; orders events by (block, log index)."""

    block_number: int
    log_index: int
    block_hash: str
    tx_hash: str


@dataclass(frozen=True)
class MasterWalletBound:
    position: EventPosition
    operator_omni: str
    wallet: str
    sender: str


@dataclass(frozen=True)
class DeviceRegistered:
    position: EventPosition
    operator_omni: str
    actor_omni: str
    device_key_hash: str
    tier: int
    roles: int
    sender: str


@dataclass(frozen=True)
class DeviceRevoked:
    position: EventPosition
    operator_omni: str
    actor_omni: str
    device_key_hash: str
    sender: str


@dataclass(frozen=True)
class DeviceKeyRotated:
    position: EventPosition
    operator_omni: str
    old_device_key_hash: str
    new_device_key_hash: str
    sender: str


@dataclass(frozen=True)
class ScopeSet:
    position: EventPosition
    operator_omni: str
    agent_omni: str
    services: tuple[str, ...]
    read_only: bool
    updated_at: int
    sender: str


@dataclass(frozen=True)
class ScopeRevoked:
    position: EventPosition
    operator_omni: str
    agent_omni: str
    sender: str


@dataclass(frozen=True)
class EpochAdvanced:
    position: EventPosition
    epoch: int
    sender: str


@dataclass(frozen=True)
class GovernanceChanged:
    position: EventPosition
    members: tuple[str, ...]
    threshold: int
    sender: str


@dataclass(frozen=True)
class ChainReorged:
    """Not a contract event: the watcher's notice that a reorg replaced blocks it had
    delivered events of. Everything after ``fork_block`` (the newest scanned block still
    canonical) was rolled back; the new branch's events follow this notice."""

    fork_block: int


ChainEvent = (
    MasterWalletBound
    | DeviceRegistered
    | DeviceRevoked
    | DeviceKeyRotated
    | ScopeSet
    | ScopeRevoked
    | EpochAdvanced
    | GovernanceChanged
)

WatcherEvent = ChainEvent | ChainReorged
"""What a :class:`~agentkeys.chain.watcher.ChainWatcher` subscription delivers."""


def _hexstr(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise AbiError(f"log field {key} missing")
    return value.lower()


def _int(raw: Mapping[str, Any], key: str) -> int:
    try:
        return int(_hexstr(raw, key), 16)
    except ValueError:
        raise AbiError(f"log field {key} is not a quantity") from None


def _bytes(value: str) -> bytes:
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise AbiError("log field is not hex") from None


def position_of(raw: Mapping[str, Any]) -> EventPosition:
    """The position of a raw log."""
    return EventPosition(
        block_number=_int(raw, "blockNumber"),
        log_index=_int(raw, "logIndex"),
        block_hash=_hexstr(raw, "blockHash"),
        tx_hash=_hexstr(raw, "transactionHash"),
    )


def decode_log(raw: Mapping[str, Any], abi: ContractAbi) -> ChainEvent | None:
    """The typed event of ``raw`` (a log of the contract ``abi`` describes).

    Returns None for events this layer does not type (e.g. ScopeContractBound).

    Raises:
        AbiError: the log does not decode.
    """
    topics_raw = raw.get("topics")
    if not isinstance(topics_raw, list) or not topics_raw:
        raise AbiError("log without topics")
    topics = [_bytes(str(t)) for t in topics_raw]
    event = abi.event_by_topic(topics[0])
    if event is None:
        return None
    args = event.decode(topics, _bytes(_hexstr(raw, "data")))
    pos = position_of(raw)
    sender = str(args.get("sender", "")).lower()
    name = event.name
    if name == "MasterWalletBound":
        return MasterWalletBound(
            pos, args["operatorOmni"].hex(), str(args["wallet"]).lower(), sender
        )
    if name == "DeviceRegistered":
        return DeviceRegistered(
            pos,
            args["operatorOmni"].hex(),
            args["actorOmni"].hex(),
            args["deviceKeyHash"].hex(),
            int(args["tier"]),
            int(args["roles"]),
            sender,
        )
    if name == "DeviceRevoked":
        return DeviceRevoked(
            pos,
            args["operatorOmni"].hex(),
            args["actorOmni"].hex(),
            args["deviceKeyHash"].hex(),
            sender,
        )
    if name == "DeviceKeyRotated":
        return DeviceKeyRotated(
            pos,
            args["operatorOmni"].hex(),
            args["oldDeviceKeyHash"].hex(),
            args["newDeviceKeyHash"].hex(),
            sender,
        )
    if name == "ScopeSet":
        return ScopeSet(
            pos,
            args["operatorOmni"].hex(),
            args["agentOmni"].hex(),
            tuple(s.hex() for s in args["services"]),
            bool(args["readOnly"]),
            int(args["updatedAt"]),
            sender,
        )
    if name == "ScopeRevoked":
        return ScopeRevoked(pos, args["operatorOmni"].hex(), args["agentOmni"].hex(), sender)
    if name == "EpochAdvanced":
        return EpochAdvanced(pos, int(args["epoch"]), sender)
    if name == "GovernanceChanged":
        return GovernanceChanged(
            pos, tuple(str(m).lower() for m in args["members"]), int(args["threshold"]), sender
        )
    return None
