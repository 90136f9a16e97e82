"""The K10 signature rule, and the one home of P-256 signature forms (SPEC section 6).

A K10 signature is ECDSA P-256 / SHA-256 as 64 bytes ``r ‖ s`` (big-endian, 32 bytes each).
The chain verifies it in ``DeviceAuth.verifyK10`` through OpenZeppelin's ``P256.verify``,
which refuses, before any curve arithmetic:

1. ``r == 0`` or ``r >= n``;
2. ``s == 0`` or ``s > n // 2`` (high-S: the malleable twin ``(r, n - s)`` of a valid
   signature), hence also ``s >= n``.

Every Python path that verifies a K10 signature (the broker's and the worker's PoP, the
broker's enrollment proof and relay checks, the signer's ``/verify/k10-sig`` and
first-master check, attestation bundles) calls :func:`verify_k10`, so a signature the
chain refuses is refused everywhere; tests/core/test_k10_signature.py pins the range of
``s``. K10 signers produce low-S signatures (:func:`k10_sign`, :func:`k10_raw_from_der`)
so what they sign passes both. The rule lives in attest, which owns the device key; the
agentkeys side imports it from here.

The conversions between the DER form cryptography speaks and the raw 64-byte ``r ‖ s`` of
every signature on our wire (:func:`der_to_raw_rs`, :func:`raw_rs_to_der`) and the low-S
normalisation (:func:`low_s`) are defined here once, for attest's TPM, pin and quote
signatures and for agentkeys' ES256 helpers (which raise their own error).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from attest.errors import AttestationMalformed, DeviceKeyError

__all__ = [
    "P256_HALF_N",
    "P256_N",
    "der_to_raw_rs",
    "k10_raw_from_der",
    "k10_rs_acceptable",
    "k10_sign",
    "low_s",
    "raw_rs_to_der",
    "verify_k10",
]

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
"""The order n of the P-256 group."""

P256_HALF_N = P256_N // 2
"""The largest ``s`` the chain accepts (OpenZeppelin ``P256.HALF_N``)."""


def der_to_raw_rs(der: bytes) -> bytes:
    """The 64-byte ``r ‖ s`` of a DER ECDSA P-256 signature, ``s`` as given (not normalised).

    Raises:
        AttestationMalformed: not DER, or ``r`` / ``s`` outside 1..n-1.
    """
    try:
        r, s = decode_dss_signature(der)
    except ValueError:
        raise AttestationMalformed("not a DER ECDSA signature") from None
    if not (0 < r < P256_N and 0 < s < P256_N):
        raise AttestationMalformed("ECDSA r or s out of range")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_rs_to_der(raw_rs: bytes) -> bytes:
    """The DER form of a 64-byte ``r ‖ s`` P-256 signature (``s`` as given).

    Raises:
        AttestationMalformed: not 64 bytes, or ``r`` / ``s`` outside 1..n-1.
    """
    if not isinstance(raw_rs, bytes) or len(raw_rs) != 64:
        raise AttestationMalformed("ES256 signature must be 64 bytes r || s")
    r = int.from_bytes(raw_rs[:32], "big")
    s = int.from_bytes(raw_rs[32:], "big")
    if not (0 < r < P256_N and 0 < s < P256_N):
        raise AttestationMalformed("ECDSA r or s out of range")
    return encode_dss_signature(r, s)


def k10_rs_acceptable(raw_rs: bytes) -> bool:
    """Whether ``raw_rs`` has the form the chain accepts: 64 bytes, ``0 < r < n``,
    ``0 < s <= n // 2`` (checks 1 and 2 of the module docstring; no key is involved)."""
    if not isinstance(raw_rs, bytes) or len(raw_rs) != 64:
        return False
    r = int.from_bytes(raw_rs[:32], "big")
    s = int.from_bytes(raw_rs[32:], "big")
    return 0 < r < P256_N and 0 < s <= P256_HALF_N


def low_s(r: int, s: int) -> bytes:
    """``r ‖ s`` with ``s`` replaced by ``n - s`` when it is in the upper half (same validity)."""
    if s > P256_HALF_N:
        s = P256_N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def k10_raw_from_der(der: bytes) -> bytes:
    """The low-S ``r ‖ s`` of a DER ECDSA P-256 signature (what a K10 signer hands out).

    Raises:
        ValueError: not a DER ECDSA signature.
    """
    r, s = decode_dss_signature(der)
    return low_s(r, s)


def k10_sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ES256-sign ``message`` with a software K10 key (RFC 6979); low-S ``r ‖ s`` (64 bytes).

    Raises:
        DeviceKeyError: not a P-256 private key.
    """
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise DeviceKeyError("a K10 key is a P-256 private key")
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    return k10_raw_from_der(der)


def verify_k10(
    public_key: ec.EllipticCurvePublicKey,
    raw_rs: bytes,
    *,
    message: bytes | None = None,
    digest: bytes | None = None,
) -> bool:
    """Whether ``raw_rs`` is a K10 signature the chain accepts by ``public_key``.

    Exactly one of ``message`` (hashed with SHA-256 here) or ``digest`` (a SHA-256 digest
    already taken, 32 bytes) is given. Never raises for a bad signature: any form the chain
    refuses, or a signature that does not verify, is ``False``.

    Raises:
        TypeError: neither or both of ``message`` and ``digest`` (a programming error).
    """
    if (message is None) == (digest is None):
        raise TypeError("verify_k10 takes exactly one of message and digest")
    if not k10_rs_acceptable(raw_rs):
        return False
    der = raw_rs_to_der(raw_rs)
    try:
        if message is not None:
            public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
        else:
            assert digest is not None
            if len(digest) != 32:
                return False
            public_key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True
