"""The challenges master mutations sign, byte for byte as the contracts rebuild them.

SPEC.md section 6; layouts documented in docs/contracts.md. Pure functions over plain values.

Every master mutation signs the 32-byte challenge
``keccak256(abi.encode(bytes32 op_tag, uint256 chain_id, address target, bytes32 operator_omni,
uint256 nonce, bytes32 params_hash))`` where ``op_tag = keccak256(ASCII tag)``, ``target`` is the
contract executing the mutation and ``nonce`` the operator's nonce in SidecarRegistry. The K10 key
signs the 32 challenge bytes as an ES256 message (ECDSA digest ``sha256(challenge)``); the
passkey's WebAuthn challenge is the same 32 bytes (base64url in clientDataJSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from agentkeys.chain.errors import AbiError

__all__ = [
    "OP_ADD_AGENT_DEVICE",
    "OP_ADD_MASTER_DEVICE",
    "OP_REGISTER_FIRST_MASTER",
    "OP_REVOKE_DEVICE",
    "OP_REVOKE_SCOPE",
    "OP_ROTATE_K10",
    "OP_SET_SCOPE",
    "NewAgent",
    "NewMaster",
    "add_agent_params",
    "add_master_params",
    "first_master_params",
    "k10_binding",
    "master_challenge",
    "register_first_master_typed_data",
    "revoke_device_params",
    "revoke_scope_params",
    "rotate_k10_params",
    "set_scope_params",
    "sorted_services",
]

OP_REGISTER_FIRST_MASTER = keccak(b"agentkeys.v1.register_first_master")
OP_ADD_MASTER_DEVICE = keccak(b"agentkeys.v1.add_master_device")
OP_ADD_AGENT_DEVICE = keccak(b"agentkeys.v1.add_agent_device")
OP_REVOKE_DEVICE = keccak(b"agentkeys.v1.revoke_device")
OP_ROTATE_K10 = keccak(b"agentkeys.v1.rotate_k10")
OP_SET_SCOPE = keccak(b"agentkeys.v1.set_scope")
OP_REVOKE_SCOPE = keccak(b"agentkeys.v1.revoke_scope")
K10_BINDING_TAG = keccak(b"agentkeys.v1.k10_binding")


def _b32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise AbiError(f"{what} must be 32 bytes")
    return value


def _point(value: bytes, what: str) -> tuple[bytes, bytes]:
    if not isinstance(value, bytes) or len(value) != 64:
        raise AbiError(f"{what} must be the 64-byte point X || Y")
    return value[:32], value[32:]


@dataclass(frozen=True)
class NewMaster:
    """A master device to register (SidecarRegistry.NewMaster).

    ``k10_point`` and ``k11_point`` are 64-byte X ‖ Y; the other byte fields are 32 bytes.
    """

    k10_point: bytes
    k11_credential_id_hash: bytes
    k11_point: bytes
    rp_id_hash: bytes
    roles: int
    attestation_digest: bytes = bytes(32)

    def abi_tuple(self) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes, int, bytes]:
        """The struct as the ABI tuple (bytes32 ×6, uint8, bytes32)."""
        k10x, k10y = _point(self.k10_point, "k10_point")
        k11x, k11y = _point(self.k11_point, "k11_point")
        return (
            k10x,
            k10y,
            _b32(self.k11_credential_id_hash, "k11_credential_id_hash"),
            k11x,
            k11y,
            _b32(self.rp_id_hash, "rp_id_hash"),
            self.roles,
            _b32(self.attestation_digest, "attestation_digest"),
        )


_NEW_MASTER = "(bytes32,bytes32,bytes32,bytes32,bytes32,bytes32,uint8,bytes32)"


@dataclass(frozen=True)
class NewAgent:
    """An agent device to register (SidecarRegistry.NewAgent); actor = agent_omni(op, label)."""

    label: str
    k10_point: bytes
    roles: int = 1
    attestation_digest: bytes = bytes(32)

    def abi_tuple(self) -> tuple[str, bytes, bytes, int, bytes]:
        """The struct as the ABI tuple (string, bytes32, bytes32, uint8, bytes32)."""
        x, y = _point(self.k10_point, "k10_point")
        return (self.label, x, y, self.roles, _b32(self.attestation_digest, "attestation_digest"))


def _encode(types: list[str], values: list[object]) -> bytes:
    try:
        return abi_encode(types, values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AbiError(f"challenge parameters do not encode: {type(exc).__name__}") from None


def master_challenge(
    *,
    op_tag: bytes,
    chain_id: int,
    target: str,
    operator_omni: bytes,
    nonce: int,
    params_hash: bytes,
) -> bytes:
    """The 32-byte challenge of one master mutation (see the module docstring)."""
    return keccak(
        _encode(
            ["bytes32", "uint256", "address", "bytes32", "uint256", "bytes32"],
            [
                _b32(op_tag, "op_tag"),
                chain_id,
                target,
                _b32(operator_omni, "operator_omni"),
                nonce,
                _b32(params_hash, "params_hash"),
            ],
        )
    )


def k10_binding(
    *, chain_id: int, registry: str, operator_omni: bytes, actor_omni: bytes, k10_point: bytes
) -> bytes:
    """What a new K10 signs to consent to being bound to (operator, actor) on this registry.

    keccak256(abi.encode(keccak256("agentkeys.v1.k10_binding"), chain_id, registry,
    operator_omni, actor_omni, X, Y)); the K10 signs it like a challenge (digest = sha256).
    """
    x, y = _point(k10_point, "k10_point")
    return keccak(
        _encode(
            ["bytes32", "uint256", "address", "bytes32", "bytes32", "bytes32", "bytes32"],
            [
                K10_BINDING_TAG,
                chain_id,
                registry,
                _b32(operator_omni, "operator_omni"),
                _b32(actor_omni, "actor_omni"),
                x,
                y,
            ],
        )
    )


def first_master_params(wallet: str, device: NewMaster) -> bytes:
    """keccak256(abi.encode(address wallet, NewMaster device))."""
    return keccak(_encode(["address", _NEW_MASTER], [wallet, device.abi_tuple()]))


def add_master_params(device: NewMaster) -> bytes:
    """keccak256(abi.encode(NewMaster device))."""
    return keccak(_encode([_NEW_MASTER], [device.abi_tuple()]))


def add_agent_params(agent: NewAgent) -> bytes:
    """keccak256(abi.encode(keccak256(label), k10X, k10Y, uint8 roles, attestation_digest))."""
    label, x, y, roles, digest = agent.abi_tuple()
    return keccak(
        _encode(
            ["bytes32", "bytes32", "bytes32", "uint8", "bytes32"],
            [keccak(label.encode("ascii", errors="replace")), x, y, roles, digest],
        )
    )


def revoke_device_params(device_key_hash: bytes) -> bytes:
    """keccak256(abi.encode(bytes32 device_key_hash))."""
    return keccak(_encode(["bytes32"], [_b32(device_key_hash, "device_key_hash")]))


def rotate_k10_params(old_device_key_hash: bytes, new_k10_point: bytes) -> bytes:
    """keccak256(abi.encode(bytes32 old_device_key_hash, bytes32 new X, bytes32 new Y))."""
    x, y = _point(new_k10_point, "new_k10_point")
    return keccak(
        _encode(["bytes32", "bytes32", "bytes32"], [_b32(old_device_key_hash, "device"), x, y])
    )


def sorted_services(service_hashes: Sequence[bytes]) -> tuple[bytes, ...]:
    """Service hashes in the canonical on-chain order: ascending, without duplicates."""
    return tuple(sorted({_b32(h, "service hash") for h in service_hashes}))


def set_scope_params(agent_omni: bytes, service_hashes: Sequence[bytes], read_only: bool) -> bytes:
    """keccak256(abi.encode(agent_omni, keccak256(services packed), bool read_only)).

    ``service_hashes`` must already be canonical (see :func:`sorted_services`).
    """
    packed = b"".join(_b32(h, "service hash") for h in service_hashes)
    return keccak(
        _encode(
            ["bytes32", "bytes32", "bool"],
            [_b32(agent_omni, "agent_omni"), keccak(packed), read_only],
        )
    )


def revoke_scope_params(agent_omni: bytes) -> bytes:
    """keccak256(abi.encode(bytes32 agent_omni))."""
    return keccak(_encode(["bytes32"], [_b32(agent_omni, "agent_omni")]))


def register_first_master_typed_data(
    *, chain_id: int, registry: str, operator_omni: bytes, challenge: bytes
) -> dict[str, Any]:
    """The EIP-712 ``RegisterFirstMaster`` message a master wallet signs in relay mode.

    Domain ``{name: "agentkeys.SidecarRegistry", version: "1", chainId, verifyingContract:
    registry}``; message ``{operatorOmni, challenge}`` (both bytes32). What
    ``SidecarRegistry.register_first_master`` checks ``wallet_sig`` against.
    """
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "RegisterFirstMaster": [
                {"name": "operatorOmni", "type": "bytes32"},
                {"name": "challenge", "type": "bytes32"},
            ],
        },
        "primaryType": "RegisterFirstMaster",
        "domain": {
            "name": "agentkeys.SidecarRegistry",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": registry,
        },
        "message": {"operatorOmni": operator_omni, "challenge": challenge},
    }
