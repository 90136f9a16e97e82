"""TPMT_PUBLIC of an ECC P-256 key, and TPM object names (TPM 2.0 Part 2, 12.2).

Pure parsing: no TPM needed. Used to check that a key is what a quote,
certification or pin says it is, and to take its public point out.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from attest._reader import Reader
from attest.errors import AttestationMalformed
from attest.p256 import public_key_from_point

ALG_ECC = 0x0023
ALG_SHA256 = 0x000B
ALG_NULL = 0x0010
ALG_ECDSA = 0x0018
ECC_NIST_P256 = 0x0003


class ObjectAttr(enum.IntFlag):
    """TPMA_OBJECT bits this package checks."""

    FIXED_TPM = 0x00000002
    FIXED_PARENT = 0x00000010
    SENSITIVE_DATA_ORIGIN = 0x00000020
    USER_WITH_AUTH = 0x00000040
    RESTRICTED = 0x00010000
    DECRYPT = 0x00020000
    SIGN = 0x00040000


@dataclass(frozen=True, slots=True)
class TpmPublic:
    """An ECC P-256 TPMT_PUBLIC.

    Attributes:
        raw: the marshaled TPMT_PUBLIC, exactly as the TPM produced it.
        attributes: TPMA_OBJECT.
        point: X ‖ Y, 64 bytes.
    """

    raw: bytes
    attributes: ObjectAttr
    point: bytes

    @property
    def name(self) -> bytes:
        """The TPM name: nameAlg (SHA-256) ‖ sha256(TPMT_PUBLIC)."""
        return ALG_SHA256.to_bytes(2, "big") + hashlib.sha256(self.raw).digest()

    def public_key(self) -> ec.EllipticCurvePublicKey:
        try:
            return public_key_from_point(self.point)
        except AttestationMalformed as exc:
            raise AttestationMalformed("the TPM public key is not a P-256 point") from exc

    def has(self, attrs: ObjectAttr) -> bool:
        return attrs & self.attributes == attrs


# A key that can only have been made inside one TPM and never left it.
RESIDENT = ObjectAttr.FIXED_TPM | ObjectAttr.FIXED_PARENT | ObjectAttr.SENSITIVE_DATA_ORIGIN
# A signing key that signs only TPM-made structures (quotes, certifications).
ATTESTATION_KEY = RESIDENT | ObjectAttr.RESTRICTED | ObjectAttr.SIGN


def parse_tpm_public(raw: bytes) -> TpmPublic:
    """Parse a marshaled TPMT_PUBLIC of an ECC P-256 key with SHA-256 name.

    Raises:
        AttestationMalformed: truncated, trailing bytes, or another type/curve/alg.
    """
    r = Reader(raw, "TPMT_PUBLIC")
    if r.u16() != ALG_ECC:
        raise AttestationMalformed("TPMT_PUBLIC: not an ECC key")
    if r.u16() != ALG_SHA256:
        raise AttestationMalformed("TPMT_PUBLIC: name algorithm is not SHA-256")
    attributes = ObjectAttr(r.u32())
    r.sized()  # authPolicy
    if r.u16() != ALG_NULL:  # symmetric
        r.u16()
        r.u16()
    scheme = r.u16()
    if scheme == ALG_ECDSA:
        if r.u16() != ALG_SHA256:
            raise AttestationMalformed("TPMT_PUBLIC: ECDSA with a hash other than SHA-256")
    elif scheme != ALG_NULL:
        raise AttestationMalformed("TPMT_PUBLIC: signing scheme is not ECDSA")
    if r.u16() != ECC_NIST_P256:
        raise AttestationMalformed("TPMT_PUBLIC: curve is not P-256")
    if r.u16() != ALG_NULL:  # kdf
        r.u16()
    x, y = r.sized(), r.sized()
    r.end()
    if len(x) > 32 or len(y) > 32:
        raise AttestationMalformed("TPMT_PUBLIC: coordinate longer than 32 bytes")
    return TpmPublic(
        raw=bytes(raw), attributes=attributes, point=x.rjust(32, b"\0") + y.rjust(32, b"\0")
    )
