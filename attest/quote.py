"""TPMS_ATTEST (quotes and certifications) and their verification (TPM 2.0 Part 2, 10.12).

Pure: verification needs only the bytes the TPM produced, the attestation
key's TPMT_PUBLIC and the caller's expectations (keyword-only). Each check is
one ``if …: raise``. The attestation key must be *restricted*: an
unrestricted key could sign a forged TPMS_ATTEST.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from attest._reader import Reader
from attest.errors import (
    AttestationMalformed,
    KeyNotTrusted,
    NonceMismatch,
    PcrMismatch,
    SignatureInvalid,
)
from attest.k10_signature import verify_k10
from attest.tpm_public import ALG_SHA256, ATTESTATION_KEY, TpmPublic

TPM_GENERATED = 0xFF544347
ST_ATTEST_CERTIFY = 0x8017
ST_ATTEST_QUOTE = 0x8018
PCR_COUNT = 24


@dataclass(frozen=True, slots=True)
class Attest:
    """A parsed TPMS_ATTEST of type quote or certify."""

    type: int
    extra_data: bytes
    reset_count: int
    restart_count: int
    # quote
    pcr_selection: tuple[int, ...] = ()
    pcr_digest: bytes = b""
    # certify
    certified_name: bytes = b""


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    pcr_selection: tuple[int, ...]
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class VerifiedCertify:
    certified_name: bytes


def _parse_pcr_selection(r: Reader) -> tuple[int, ...]:
    count = r.u32()
    if count != 1:
        raise AttestationMalformed("TPMS_ATTEST: only one PCR bank (SHA-256) is supported")
    if r.u16() != ALG_SHA256:
        raise AttestationMalformed("TPMS_ATTEST: PCR bank is not SHA-256")
    bitmap = r.take(r.u8())
    return tuple(i for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1)


def encode_pcr_selection(pcrs: Sequence[int]) -> bytes:
    """TPML_PCR_SELECTION for the SHA-256 bank (used to compare and for tests)."""
    bitmap = bytearray(3)
    for i in pcrs:
        if not 0 <= i < PCR_COUNT:
            raise AttestationMalformed(f"PCR index {i} out of range")
        bitmap[i // 8] |= 1 << (i % 8)
    return (1).to_bytes(4, "big") + ALG_SHA256.to_bytes(2, "big") + b"\x03" + bytes(bitmap)


def normalise_pcrs(pcrs: Sequence[int]) -> tuple[int, ...]:
    """Sorted, unique, in range."""
    out = tuple(sorted(set(pcrs)))
    if any(not 0 <= i < PCR_COUNT for i in out):
        raise AttestationMalformed("PCR index out of range")
    return out


def pcr_digest(values: Sequence[bytes]) -> bytes:
    """The quote's pcrDigest: sha256 of the selected PCR values in ascending index order."""
    return hashlib.sha256(b"".join(values)).digest()


def parse_attest(data: bytes) -> Attest:
    """Parse a marshaled TPMS_ATTEST of type quote or certify.

    Raises:
        AttestationMalformed: wrong magic, another type, truncated or trailing bytes.
    """
    r = Reader(data, "TPMS_ATTEST")
    if r.u32() != TPM_GENERATED:
        raise AttestationMalformed("TPMS_ATTEST: not TPM-generated (bad magic)")
    kind = r.u16()
    r.sized()  # qualifiedSigner
    extra = r.sized()
    r.u64()  # clock
    reset_count, restart_count = r.u32(), r.u32()
    r.u8()  # safe
    r.u64()  # firmwareVersion
    if kind == ST_ATTEST_QUOTE:
        selection = _parse_pcr_selection(r)
        digest = r.sized()
        r.end()
        return Attest(
            type=kind,
            extra_data=extra,
            reset_count=reset_count,
            restart_count=restart_count,
            pcr_selection=selection,
            pcr_digest=digest,
        )
    if kind == ST_ATTEST_CERTIFY:
        name = r.sized()
        r.sized()  # qualifiedName
        r.end()
        return Attest(
            type=kind,
            extra_data=extra,
            reset_count=reset_count,
            restart_count=restart_count,
            certified_name=name,
        )
    raise AttestationMalformed(f"TPMS_ATTEST: unsupported type 0x{kind:04x}")


def _check_signed(ak: TpmPublic, attest: bytes, signature: bytes) -> Attest:
    if not ak.has(ATTESTATION_KEY):
        raise KeyNotTrusted("the attestation key is not a restricted TPM-resident signing key")
    if not verify_k10(ak.public_key(), signature, message=attest):
        raise SignatureInvalid("the TPM attestation is not signed by the expected key")
    return parse_attest(attest)


def verify_quote(
    attest: bytes,
    signature: bytes,
    *,
    ak: TpmPublic,
    expected_nonce: bytes,
    expected_pcrs: Sequence[int],
    expected_pcr_digest: bytes | None,
) -> VerifiedQuote:
    """Verify a TPM2_Quote.

    Args:
        attest: the marshaled TPMS_ATTEST the TPM signed.
        signature: r ‖ s (64 bytes) over ``attest`` by ``ak``.
        ak: the attestation key (trusted by the caller: pinned or certified).
        expected_nonce: the challenge, quoted back as extraData.
        expected_pcrs: the PCR selection (SHA-256 bank) that must be quoted.
        expected_pcr_digest: the pinned digest of those PCRs, or None to only
            report it (for enrollment).

    Raises:
        KeyNotTrusted, SignatureInvalid, NonceMismatch, PcrMismatch, AttestationMalformed.
    """
    parsed = _check_signed(ak, attest, signature)
    if parsed.type != ST_ATTEST_QUOTE:
        raise AttestationMalformed("the attestation is not a quote")
    if not hmac.compare_digest(parsed.extra_data, expected_nonce):
        raise NonceMismatch("the quote answers another challenge")
    if parsed.pcr_selection != normalise_pcrs(expected_pcrs):
        raise PcrMismatch("the quote covers other PCRs than expected")
    if expected_pcr_digest is not None and not hmac.compare_digest(
        parsed.pcr_digest, expected_pcr_digest
    ):
        raise PcrMismatch("the quoted PCR values differ from the pinned ones")
    return VerifiedQuote(pcr_selection=parsed.pcr_selection, pcr_digest=parsed.pcr_digest)


def verify_certify(
    attest: bytes,
    signature: bytes,
    *,
    ak: TpmPublic,
    certified: TpmPublic,
    expected_nonce: bytes,
) -> VerifiedCertify:
    """Verify a TPM2_Certify of ``certified`` by ``ak``.

    Raises:
        KeyNotTrusted, SignatureInvalid, NonceMismatch, AttestationMalformed.
    """
    parsed = _check_signed(ak, attest, signature)
    if parsed.type != ST_ATTEST_CERTIFY:
        raise AttestationMalformed("the attestation is not a certification")
    if not hmac.compare_digest(parsed.extra_data, expected_nonce):
        raise NonceMismatch("the certification answers another challenge")
    if not hmac.compare_digest(parsed.certified_name, certified.name):
        raise KeyNotTrusted("the certification is for another key")
    return VerifiedCertify(certified_name=parsed.certified_name)
