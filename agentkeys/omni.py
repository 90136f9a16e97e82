"""Identifiers: the one normaliser for 32-byte hex, omnis, wallets, services, device keys.

Implements SPEC section 3 (identifiers); the K10 point and ``device_key_hash`` of SPEC
section 2 are defined in :mod:`attest.p256` and exposed here with agentkeys' errors.
The text form of every 32-byte identifier is 64 lowercase hex without ``0x``; inputs
may carry ``0x`` or mixed case and are normalised here, at the boundary, and nowhere
else.

Every function is pure. Every rejection raises :class:`~agentkeys.errors.InvalidIdentifier`,
:class:`~agentkeys.errors.InvalidServiceName`, :class:`~agentkeys.errors.InvalidAgentLabel`
or :class:`~agentkeys.errors.InvalidKeyMaterial`; reasons never echo long inputs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import ec
from eth_hash.auto import keccak
from eth_utils.address import is_checksum_address

from agentkeys.errors import (
    InvalidAgentLabel,
    InvalidIdentifier,
    InvalidKeyMaterial,
    InvalidServiceName,
)
from attest import p256
from attest.errors import AttestationMalformed

__all__ = [
    "IdentityType",
    "actor_omni_for_wallet",
    "agent_omni",
    "device_key_hash",
    "device_key_hash_from_point",
    "hex32_to_bytes",
    "identity_omni",
    "normalize_hex32",
    "normalize_service",
    "normalize_wallet",
    "p256_point_bytes",
    "p256_public_key_from_point",
    "service_hash",
]

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_HEX40 = re.compile(r"[0-9a-f]{40}", re.ASCII)
_SERVICE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)
_LABEL = re.compile(r"[a-z0-9-]{1,32}", re.ASCII)
# Emails are restricted to printable ASCII without spaces: a Unicode address has several
# encodings (NFC/NFD) that would hash to different omnis for what a human sees as one.
_EMAIL = re.compile(r"[!-?A-~]{1,64}@[!-?A-~]{1,253}", re.ASCII)  # printable ASCII minus '@'
_PASSKEY_MAX = 1024

_OMNI_PREFIX = b"agentkeys"
_AGENT_PREFIX = b"agentkeys-hdkd-v1"


class IdentityType(StrEnum):
    """The identity types an identity omni may be derived for (SPEC section 3)."""

    EMAIL = "email"
    EVM = "evm"
    PASSKEY = "passkey"


def normalize_hex32(value: str | bytes) -> str:
    """Normalise a 32-byte identifier to its text form: 64 lowercase hex, no ``0x``.

    Args:
        value: text (optionally ``0x``/``0X``-prefixed, any case) or exactly 32 raw bytes.
            The type decides the reading: ``bytes`` are always raw, never ASCII hex.

    Raises:
        InvalidIdentifier: anything else.
    """
    if isinstance(value, bytes):
        if len(value) != 32:
            raise InvalidIdentifier(f"expected 32 raw bytes, got {len(value)}")
        return value.hex()
    if not isinstance(value, str):
        raise InvalidIdentifier("identifier must be str or bytes")
    text = value[2:] if value[:2] in ("0x", "0X") else value
    text = text.lower() if text.isascii() else text
    if _HEX64.fullmatch(text) is None:
        raise InvalidIdentifier("expected 64 hex digits (optionally 0x-prefixed)")
    return text


def hex32_to_bytes(value: str) -> bytes:
    """The 32 raw bytes of a 32-byte identifier in any accepted text form.

    Raises:
        InvalidIdentifier: not 64 hex digits (optionally ``0x``-prefixed).
    """
    if not isinstance(value, str):
        raise InvalidIdentifier("identifier text must be str")
    return bytes.fromhex(normalize_hex32(value))


def normalize_wallet(address: str) -> str:
    """Normalise an EVM address to lowercase ``0x`` + 40 hex.

    Accepts the prefix in either case or none. A mixed-case address must carry a valid
    EIP-55 checksum (a wrong one means a typo); all-lower or all-upper input skips it.

    Raises:
        InvalidIdentifier: not 20 bytes of hex, or a mixed-case address with a bad checksum.
    """
    if not isinstance(address, str) or not address.isascii():
        raise InvalidIdentifier("wallet must be an ASCII string")
    body = address[2:] if address[:2] in ("0x", "0X") else address
    lowered = body.lower()
    if _HEX40.fullmatch(lowered) is None:
        raise InvalidIdentifier("wallet must be 40 hex digits (optionally 0x-prefixed)")
    if body not in (lowered, body.upper()) and not is_checksum_address("0x" + body):
        raise InvalidIdentifier("mixed-case wallet address has an invalid EIP-55 checksum")
    return "0x" + lowered


def _normalize_identity_value(identity_type: IdentityType, value: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdentifier("identity value must be a string")
    if identity_type is IdentityType.EVM:
        return normalize_wallet(value)
    if identity_type is IdentityType.EMAIL:
        if _EMAIL.fullmatch(value) is None:
            raise InvalidIdentifier("email must be printable ASCII of the form local@domain")
        return value.lower()
    if not value or len(value) > _PASSKEY_MAX or not value.isprintable():
        raise InvalidIdentifier(f"passkey identity must be 1..{_PASSKEY_MAX} printable chars")
    return value


def identity_omni(identity_type: str, value: str) -> str:
    """``sha256("agentkeys" ‖ identity_type ‖ identity_value)`` as 64 lowercase hex.

    Emails are lowercased; wallets are normalised to lowercase ``0x`` hex; passkey values
    (credential identifiers) are used as given, UTF-8 encoded.

    Raises:
        InvalidIdentifier: unknown type or invalid value.
    """
    try:
        kind = IdentityType(identity_type)
    except ValueError:
        raise InvalidIdentifier("identity type must be one of email, evm, passkey") from None
    normalized = _normalize_identity_value(kind, value)
    preimage = _OMNI_PREFIX + kind.value.encode("ascii") + normalized.encode("utf-8")
    return hashlib.sha256(preimage).hexdigest()


def actor_omni_for_wallet(wallet: str) -> str:
    """A master's actor_omni (= its operator_omni): the ``evm`` identity omni of its wallet.

    Raises:
        InvalidIdentifier: not a valid wallet address.
    """
    return identity_omni(IdentityType.EVM, wallet)


def agent_omni(operator_omni: str, label: str) -> str:
    """An agent's actor_omni: ``sha256("agentkeys-hdkd-v1" ‖ operator_omni raw ‖ "//" ‖ label)``.

    The label is not lowercased: it must already match ``^[a-z0-9-]{1,32}$``.

    Raises:
        InvalidIdentifier: operator_omni is not a 32-byte identifier.
        InvalidAgentLabel: the label does not match.
    """
    operator_raw = hex32_to_bytes(operator_omni)
    if not isinstance(label, str) or _LABEL.fullmatch(label) is None:
        raise InvalidAgentLabel("agent label must match ^[a-z0-9-]{1,32}$")
    preimage = _AGENT_PREFIX + operator_raw + b"//" + label.encode("ascii")
    return hashlib.sha256(preimage).hexdigest()


def normalize_service(name: str) -> str:
    """Lowercase and validate a service name against ``^[a-z0-9][a-z0-9._-]{0,63}$``.

    Non-ASCII input is refused before lowercasing (``"\\u212a".lower()`` is ``"k"``), so no
    character outside the pattern, in particular none of ``* ? $ / {``, ever gets through.

    Raises:
        InvalidServiceName: anything that does not match.
    """
    if not isinstance(name, str) or not name.isascii():
        raise InvalidServiceName("service name must be ASCII")
    lowered = name.lower()
    if _SERVICE.fullmatch(lowered) is None:
        raise InvalidServiceName("service name must match ^[a-z0-9][a-z0-9._-]{0,63}$")
    return lowered


def service_hash(name: str) -> bytes:
    """keccak256 of the normalised service name: the service's ``bytes32`` on chain.

    Raises:
        InvalidServiceName: see :func:`normalize_service`.
    """
    return bytes(keccak(normalize_service(name).encode("ascii")))


# -- K10 and K11 points, device_key_hash: defined in attest.p256 (attest owns the device key) --


@contextmanager
def _key_material() -> Iterator[None]:
    """attest's refusal of a key or point, as agentkeys' :class:`InvalidKeyMaterial`."""
    try:
        yield
    except AttestationMalformed as exc:
        raise InvalidKeyMaterial(exc.reason) from exc


def p256_point_bytes(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 64-byte uncompressed point X ‖ Y (no 0x04 prefix) of a P-256 public key.

    Raises:
        InvalidKeyMaterial: not a P-256 public key.
    """
    with _key_material():
        return p256.point_bytes(public_key)


def device_key_hash(public_key: ec.EllipticCurvePublicKey) -> str:
    """``device_key_hash`` of a K10 key: keccak256(X ‖ Y) as 64 lowercase hex (SPEC section 2).

    Raises:
        InvalidKeyMaterial: not a P-256 public key.
    """
    with _key_material():
        return p256.device_key_hash(public_key)


def p256_public_key_from_point(xy: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key with the 64-byte uncompressed point X ‖ Y (no 0x04 prefix).

    Raises:
        InvalidKeyMaterial: not 64 bytes, or not a point on P-256.
    """
    with _key_material():
        return p256.public_key_from_point(xy)


def device_key_hash_from_point(xy: bytes) -> str:
    """``device_key_hash`` from the 64-byte point X ‖ Y; the point must lie on P-256.

    Raises:
        InvalidKeyMaterial: not 64 bytes, or not a point on P-256.
    """
    with _key_material():
        return p256.device_key_hash_from_point(xy)
