"""P-256 ECDSA signatures as fixed 64-byte r ‖ s, low-s (what the contracts verify)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from attest.errors import AttestationMalformed

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def rs_to_bytes(r: int, s: int) -> bytes:
    """r ‖ s, 32 bytes each, with s normalised to the lower half of the group order."""
    if s > P256_N // 2:
        s = P256_N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def der_to_rs(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return rs_to_bytes(r, s)


def rs_to_der(rs: bytes) -> bytes:
    if len(rs) != 64:
        raise AttestationMalformed("a P-256 signature is 64 bytes (r ‖ s)")
    return encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))


def verify_digest(public_key: ec.EllipticCurvePublicKey, rs: bytes, digest: bytes) -> bool:
    """True iff ``rs`` is a valid ECDSA P-256 signature over the SHA-256 ``digest``."""
    try:
        public_key.verify(rs_to_der(rs), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, AttestationMalformed):
        return False
    return True


def verify_message(public_key: ec.EllipticCurvePublicKey, rs: bytes, message: bytes) -> bool:
    """True iff ``rs`` is a valid ECDSA P-256/SHA-256 signature over ``message``."""
    try:
        public_key.verify(rs_to_der(rs), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, AttestationMalformed):
        return False
    return True
