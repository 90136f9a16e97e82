"""P-256 public keys as the 64-byte point X ‖ Y, and the ``device_key_hash`` of a K10 key.

SPEC.md section 2: a K10 public key travels as its uncompressed point without the 0x04
prefix (X ‖ Y, 32 bytes each, big-endian), and a device is named by
``device_key_hash = keccak256(X ‖ Y)`` as 64 lowercase hex. The K11 passkey points use the
same 64-byte form. This module is the one definition; ``agentkeys.omni`` exposes it to
agentkeys with its own error (``InvalidKeyMaterial``).

Every function is pure; every rejection raises :class:`~attest.errors.AttestationMalformed`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from eth_hash.auto import keccak

from attest.errors import AttestationMalformed

__all__ = ["device_key_hash", "device_key_hash_from_point", "point_bytes", "public_key_from_point"]


def point_bytes(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 64-byte uncompressed point X ‖ Y (no 0x04 prefix) of a P-256 public key.

    Raises:
        AttestationMalformed: not a P-256 public key.
    """
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise AttestationMalformed("expected a P-256 public key")
    numbers = public_key.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def public_key_from_point(xy: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key with the 64-byte uncompressed point X ‖ Y (no 0x04 prefix).

    Raises:
        AttestationMalformed: not 64 bytes, or not a point on P-256.
    """
    if not isinstance(xy, bytes) or len(xy) != 64:
        raise AttestationMalformed("expected the 64-byte P-256 point X || Y")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)
    except ValueError:
        raise AttestationMalformed("not a point on P-256") from None


def device_key_hash(public_key: ec.EllipticCurvePublicKey) -> str:
    """``device_key_hash`` of a K10 key: keccak256(X ‖ Y) as 64 lowercase hex (SPEC section 2).

    Raises:
        AttestationMalformed: not a P-256 public key.
    """
    return bytes(keccak(point_bytes(public_key))).hex()


def device_key_hash_from_point(xy: bytes) -> str:
    """``device_key_hash`` from the 64-byte point X ‖ Y; the point must lie on P-256.

    Raises:
        AttestationMalformed: not 64 bytes, or not a point on P-256.
    """
    public_key_from_point(xy)
    return bytes(keccak(xy)).hex()
