"""Device attestation bundle: the value behind the registry's ``attestation`` field (SPEC.md 6, 7).

A bundle says "this K10 public key is held by this device", and for the TPM
backend "inside a TPM, never exportable". JSON form (all binary fields
lowercase hex)::

    {"v": 1, "backend": "tpm" | "software",
     "public_key": X ‖ Y (64 bytes), "device_key_hash": keccak256(X ‖ Y),
     "nonce": the verifier's challenge (or 32 random bytes chosen by the device),
     "signature": K10 r ‖ s over sha256("agentkeys.attest.bundle.v1" ‖ nonce ‖ X ‖ Y),
     "tpm": null | {"k10_public": TPMT_PUBLIC, "ak_public": TPMT_PUBLIC,
                    "certify_attest": TPMS_ATTEST, "certify_signature": r ‖ s,
                    "quote_attest": TPMS_ATTEST, "quote_signature": r ‖ s,
                    "pcrs": [PCR indices, SHA-256 bank]}}

The registry stores :meth:`AttestationBundle.digest` (sha256 of the RFC 8785
canonical JSON, 64 hex). What verification proves and does not prove is in
docs/attest.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import rfc8785

from attest._json import get_hex, get_pcrs, get_str, loads_object
from attest.device_key import Backend
from attest.errors import AttestationMalformed, KeyNotTrusted, NonceMismatch, SignatureInvalid
from attest.k10_signature import verify_k10
from attest.p256 import device_key_hash_from_point, point_bytes, public_key_from_point
from attest.quote import normalise_pcrs, verify_certify, verify_quote
from attest.tpm_public import RESIDENT, ObjectAttr, parse_tpm_public

if TYPE_CHECKING:
    from attest.device_key import DeviceKey

BUNDLE_DOMAIN = b"agentkeys.attest.bundle.v1"
_WHAT = "attestation bundle"


@dataclass(frozen=True, slots=True)
class TpmEvidence:
    k10_public: bytes
    ak_public: bytes
    certify_attest: bytes
    certify_signature: bytes
    quote_attest: bytes
    quote_signature: bytes
    pcrs: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "k10_public": self.k10_public.hex(),
            "ak_public": self.ak_public.hex(),
            "certify_attest": self.certify_attest.hex(),
            "certify_signature": self.certify_signature.hex(),
            "quote_attest": self.quote_attest.hex(),
            "quote_signature": self.quote_signature.hex(),
            "pcrs": list(self.pcrs),
        }

    @classmethod
    def from_json(cls, obj: Any) -> TpmEvidence:
        if not isinstance(obj, dict):
            raise AttestationMalformed(f"{_WHAT}: 'tpm' must be an object")
        return cls(
            k10_public=get_hex(obj, "k10_public", _WHAT),
            ak_public=get_hex(obj, "ak_public", _WHAT),
            certify_attest=get_hex(obj, "certify_attest", _WHAT),
            certify_signature=get_hex(obj, "certify_signature", _WHAT, size=64),
            quote_attest=get_hex(obj, "quote_attest", _WHAT),
            quote_signature=get_hex(obj, "quote_signature", _WHAT, size=64),
            pcrs=get_pcrs(obj, "pcrs", _WHAT),
        )


@dataclass(frozen=True, slots=True)
class AttestationBundle:
    backend: Backend
    public_key: bytes
    nonce: bytes
    signature: bytes
    tpm: TpmEvidence | None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "backend": self.backend.value,
            "public_key": self.public_key.hex(),
            "device_key_hash": device_key_hash_from_point(self.public_key),
            "nonce": self.nonce.hex(),
            "signature": self.signature.hex(),
            "tpm": None if self.tpm is None else self.tpm.to_json(),
        }

    def canonical(self) -> bytes:
        """RFC 8785 canonical JSON bytes."""
        return rfc8785.dumps(self.to_json())

    def digest(self) -> str:
        """sha256 of :meth:`canonical`, 64 lowercase hex: the registry's attestation digest."""
        return hashlib.sha256(self.canonical()).hexdigest()

    @classmethod
    def from_json(cls, text: str | bytes) -> AttestationBundle:
        """Parse the JSON form.

        Raises:
            AttestationMalformed: wrong shape, version or field encoding.
        """
        obj = loads_object(text, _WHAT)
        if type(obj.get("v")) is not int or obj["v"] != 1:  # not true, not 1.0
            raise AttestationMalformed(f"{_WHAT}: unsupported version")
        try:
            backend = Backend(get_str(obj, "backend", _WHAT))
        except ValueError as exc:
            raise AttestationMalformed(f"{_WHAT}: unknown backend") from exc
        tpm = obj.get("tpm")
        return cls(
            backend=backend,
            public_key=get_hex(obj, "public_key", _WHAT, size=64),
            nonce=get_hex(obj, "nonce", _WHAT, size=32),
            signature=get_hex(obj, "signature", _WHAT, size=64),
            tpm=None if tpm is None else TpmEvidence.from_json(tpm),
        )


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """What a verified bundle establishes (see docs/attest.md for what it does not)."""

    backend: Backend
    device_key_hash: str
    tpm_resident: bool
    ak_name: str | None
    pcr_selection: tuple[int, ...]
    pcr_digest: str | None
    digest: str


def _pop_digest(nonce: bytes, point: bytes) -> bytes:
    return hashlib.sha256(BUNDLE_DOMAIN + nonce + point).digest()


async def make_bundle(key: DeviceKey, nonce: bytes | None = None) -> AttestationBundle:
    """Attest ``key``: proof of possession, plus TPM certification and quote for TPM keys.

    Args:
        key: the device key.
        nonce: the verifier's 32-byte challenge; a fresh random one when None.
    """
    nonce = secrets.token_bytes(32) if nonce is None else nonce
    if len(nonce) != 32:
        raise AttestationMalformed("the bundle nonce is 32 bytes")
    point = point_bytes(key.public_key)
    signature = await key.sign(_pop_digest(nonce, point))
    return AttestationBundle(
        backend=key.backend,
        public_key=point,
        nonce=nonce,
        signature=signature,
        tpm=await key.tpm_evidence(nonce),
    )


def verify_bundle(
    bundle: AttestationBundle,
    *,
    expected_nonce: bytes | None,
    trusted_aks: Collection[bytes] | None = None,
    require_tpm: bool = False,
) -> VerifiedBundle:
    """Verify a device attestation bundle.

    Args:
        bundle: the parsed bundle.
        expected_nonce: the challenge the verifier issued; None accepts the
            device's own nonce (no freshness: only for stored bundles).
        trusted_aks: TPM names of attestation keys the verifier trusts (e.g.
            enrolled or endorsed out of band); None skips the check.
        require_tpm: refuse software bundles.

    Raises:
        NonceMismatch, SignatureInvalid, KeyNotTrusted, PcrMismatch, AttestationMalformed.
    """
    if expected_nonce is not None and not hmac.compare_digest(bundle.nonce, expected_nonce):
        raise NonceMismatch("the bundle answers another challenge")
    try:
        k10 = public_key_from_point(bundle.public_key)
    except AttestationMalformed as exc:
        raise AttestationMalformed(f"{_WHAT}: public key is not a P-256 point") from exc
    if not verify_k10(k10, bundle.signature, digest=_pop_digest(bundle.nonce, bundle.public_key)):
        raise SignatureInvalid("the bundle is not signed by its device key")
    ak_name: str | None = None
    selection: tuple[int, ...] = ()
    digest: str | None = None
    if bundle.backend is Backend.SOFTWARE:
        if bundle.tpm is not None:
            raise AttestationMalformed(f"{_WHAT}: software bundle carries TPM evidence")
        if require_tpm:
            raise KeyNotTrusted("a TPM-resident device key is required")
    else:
        ev = bundle.tpm
        if ev is None:
            raise AttestationMalformed(f"{_WHAT}: TPM bundle without TPM evidence")
        k10_area = parse_tpm_public(ev.k10_public)
        ak = parse_tpm_public(ev.ak_public)
        if not hmac.compare_digest(k10_area.point, bundle.public_key):
            raise KeyNotTrusted("the certified TPM key is not the bundle's device key")
        if not k10_area.has(RESIDENT | ObjectAttr.SIGN):
            raise KeyNotTrusted("the device key is not a TPM-resident, non-exportable key")
        if trusted_aks is not None and ak.name not in trusted_aks:
            raise KeyNotTrusted("the attestation key is not trusted")
        verify_certify(
            ev.certify_attest,
            ev.certify_signature,
            ak=ak,
            certified=k10_area,
            expected_nonce=bundle.nonce,
        )
        quote = verify_quote(
            ev.quote_attest,
            ev.quote_signature,
            ak=ak,
            expected_nonce=bundle.nonce,
            expected_pcrs=normalise_pcrs(ev.pcrs),
            expected_pcr_digest=None,
        )
        ak_name, selection, digest = ak.name.hex(), quote.pcr_selection, quote.pcr_digest.hex()
    return VerifiedBundle(
        backend=bundle.backend,
        device_key_hash=device_key_hash_from_point(bundle.public_key),
        tpm_resident=bundle.backend is Backend.TPM,
        ak_name=ak_name,
        pcr_selection=selection,
        pcr_digest=digest,
        digest=bundle.digest(),
    )
