"""ES256 (ECDSA P-256 + SHA-256): signatures as raw 64-byte r ‖ s, and the compact JWS.

Used for the broker's cap-signing keys K1 and OIDC keys K2 (SPEC section 2) and for K10
proofs of possession. Signatures on our wire are always the raw 64-byte r ‖ s form (JOSE
style); the conversions to and from the DER form cryptography speaks are
``attest.k10_signature``'s, raising agentkeys' :class:`~agentkeys.errors.SignatureMalformed`
here. Signing is deterministic (RFC 6979) and keeps ``s`` as produced; the K10 rule (low-S)
is applied where the chain needs it (``attest.k10_signature``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_encode
from agentkeys.errors import InvalidKeyMaterial, SignatureMalformed
from agentkeys.omni import p256_point_bytes
from attest import k10_signature
from attest.errors import AttestationMalformed

__all__ = ["der_to_raw_rs", "es256_jws", "es256_sign", "es256_verify", "raw_rs_to_der"]


def der_to_raw_rs(der: bytes) -> bytes:
    """Convert a DER ECDSA P-256 signature to the 64-byte r ‖ s form (``s`` as given).

    :func:`attest.k10_signature.der_to_raw_rs`, raising agentkeys' error.

    Raises:
        SignatureMalformed: not DER, or r / s outside 1..n-1.
    """
    try:
        return k10_signature.der_to_raw_rs(der)
    except AttestationMalformed as exc:
        raise SignatureMalformed(exc.reason) from None


def raw_rs_to_der(raw: bytes) -> bytes:
    """Convert a 64-byte r ‖ s P-256 signature to DER (``s`` as given).

    :func:`attest.k10_signature.raw_rs_to_der`, raising agentkeys' error.

    Raises:
        SignatureMalformed: not 64 bytes, or r / s outside 1..n-1.
    """
    try:
        return k10_signature.raw_rs_to_der(raw)
    except AttestationMalformed as exc:
        raise SignatureMalformed(exc.reason) from None


def _require_p256_private(key: ec.EllipticCurvePrivateKey) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidKeyMaterial("expected a P-256 private key")


def es256_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ES256-sign ``data`` deterministically (RFC 6979); returns raw r ‖ s (64 bytes).

    Raises:
        InvalidKeyMaterial: not a P-256 private key.
    """
    _require_p256_private(key)
    der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    return der_to_raw_rs(der)


def es256_jws(claims: Mapping[str, object], key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    """A compact JWS ``header.claims.signature`` signing ``claims`` with ``key`` under ``kid``.

    The header is ``{"alg": "ES256", "kid", "typ": "JWT"}``; header and claims are compact
    JSON with sorted members, each base64url without padding, and the signature is the raw
    r ‖ s over the ASCII ``header.claims`` (the broker's sessions and every OIDC token).

    Raises:
        InvalidKeyMaterial: not a P-256 private key.
    """
    header = {"alg": "ES256", "kid": kid, "typ": "JWT"}
    signing_input = b64url_encode(_compact(header)) + "." + b64url_encode(_compact(claims))
    signature = es256_sign(key, signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def _compact(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")


def es256_verify(public_key: ec.EllipticCurvePublicKey, data: bytes, raw_rs: bytes) -> bool:
    """Whether ``raw_rs`` (64 bytes r ‖ s) is a valid ES256 signature over ``data``.

    Raises:
        InvalidKeyMaterial: not a P-256 public key.
        SignatureMalformed: not 64 bytes or r / s out of range.
    """
    p256_point_bytes(public_key)  # type and curve check
    der = raw_rs_to_der(raw_rs)
    try:
        public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
