"""ES256 (ECDSA P-256 + SHA-256) helpers: base64url, raw r ‖ s signatures, JWK and JWKS.

Used for the broker's cap-signing keys K1 and OIDC keys K2 (published as JWKS, SPEC
section 2) and for K10 proofs of possession. Signatures on our wire are always the raw
64-byte r ‖ s form (JOSE style), base64url without padding; this module converts to and
from the DER form cryptography speaks.

``kid`` values we generate are RFC 7638 thumbprints (base64url sha256 over the canonical
``{"crv","kty","x","y"}`` JSON). Parsing is strict: only ``kty`` EC, ``crv`` P-256, ``alg``
ES256 and ``use`` sig (when present), no private member ``d``, points on the curve,
unique ``kid``s, bounded sizes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.errors import InvalidEncoding, InvalidKeyMaterial, SignatureMalformed
from agentkeys.omni import p256_point_bytes
from attest import k10_signature
from attest.errors import AttestationMalformed

__all__ = [
    "MAX_JWKS_BYTES",
    "MAX_JWKS_KEYS",
    "JsonWebKeySet",
    "b64url_decode",
    "b64url_encode",
    "der_to_raw_rs",
    "es256_jws",
    "es256_sign",
    "es256_verify",
    "jwk_from_public_key",
    "jwk_thumbprint",
    "public_key_from_jwk",
    "raw_rs_to_der",
]

MAX_JWKS_KEYS = 16
MAX_JWKS_BYTES = 64 * 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
_KID = re.compile(r"[A-Za-z0-9._~-]{1,128}", re.ASCII)
_JWK_MEMBERS = frozenset({"kty", "crv", "x", "y", "kid", "alg", "use", "key_ops"})


def b64url_encode(data: bytes) -> str:
    """base64url of ``data`` without ``=`` padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strictly decode unpadded base64url.

    Refuses padding, characters outside ``[A-Za-z0-9_-]``, impossible lengths and
    non-canonical encodings (non-zero unused bits), so one byte string has one text form.

    Raises:
        InvalidEncoding: anything but canonical unpadded base64url.
    """
    if not isinstance(text, str) or _B64URL.fullmatch(text) is None:
        raise InvalidEncoding("expected unpadded base64url ([A-Za-z0-9_-], no '=')")
    if len(text) % 4 == 1:
        raise InvalidEncoding("impossible base64url length")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidEncoding("invalid base64url") from None
    if b64url_encode(data) != text:
        raise InvalidEncoding("non-canonical base64url (unused bits set)")
    return data


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


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint of a P-256 key: base64url(sha256(canonical required members)).

    Raises:
        InvalidKeyMaterial: not a P-256 public key.
    """
    point = p256_point_bytes(public_key)
    required = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(point[:32]),
        "y": b64url_encode(point[32:]),
    }
    return b64url_encode(hashlib.sha256(rfc8785.dumps(required)).digest())


def jwk_from_public_key(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK of a P-256 key, ``kid`` = its RFC 7638 thumbprint.

    Raises:
        InvalidKeyMaterial: not a P-256 public key.
    """
    point = p256_point_bytes(public_key)
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(point[:32]),
        "y": b64url_encode(point[32:]),
        "alg": "ES256",
        "use": "sig",
        "kid": jwk_thumbprint(public_key),
    }


def _coordinate(jwk: Mapping[str, object], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise InvalidKeyMaterial(f"JWK member {name!r} missing or not a string")
    try:
        raw = b64url_decode(value)
    except InvalidEncoding:
        raise InvalidKeyMaterial(f"JWK member {name!r} is not base64url") from None
    if len(raw) != 32:
        raise InvalidKeyMaterial(f"JWK member {name!r} must encode 32 bytes")
    return raw


def public_key_from_jwk(jwk: Mapping[str, object]) -> ec.EllipticCurvePublicKey:
    """Parse a public ES256 JWK strictly (see the module docstring).

    Raises:
        InvalidKeyMaterial: anything but a public EC P-256 signing key for ES256.
    """
    if not isinstance(jwk, Mapping):
        raise InvalidKeyMaterial("JWK must be a JSON object")
    if "d" in jwk:
        raise InvalidKeyMaterial("JWK carries private key material")
    unknown = set(jwk) - _JWK_MEMBERS
    if unknown:
        raise InvalidKeyMaterial("JWK has unsupported members")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise InvalidKeyMaterial("JWK must be kty EC, crv P-256")
    if jwk.get("alg", "ES256") != "ES256":
        raise InvalidKeyMaterial("JWK alg must be ES256")
    if jwk.get("use", "sig") != "sig":
        raise InvalidKeyMaterial("JWK use must be sig")
    key_ops = jwk.get("key_ops", ["verify"])
    if not isinstance(key_ops, list) or key_ops != ["verify"]:
        raise InvalidKeyMaterial('JWK key_ops, when present, must be ["verify"]')
    point = _coordinate(jwk, "x") + _coordinate(jwk, "y")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + point)
    except ValueError:
        raise InvalidKeyMaterial("JWK point is not on P-256") from None


@dataclass(frozen=True)
class JsonWebKeySet:
    """A validated set of ES256 public keys by ``kid`` (read-only).

    Build with :meth:`from_public_keys` (publisher) or :meth:`from_json` /
    :meth:`from_dict` (consumer); pass :attr:`by_kid` to verifiers.
    """

    by_kid: Mapping[str, ec.EllipticCurvePublicKey]

    def __post_init__(self) -> None:
        if not 1 <= len(self.by_kid) <= MAX_JWKS_KEYS:
            raise InvalidKeyMaterial(f"a JWKS holds 1..{MAX_JWKS_KEYS} keys")
        for kid, key in self.by_kid.items():
            if not isinstance(kid, str) or _KID.fullmatch(kid) is None:
                raise InvalidKeyMaterial("kid must be 1..128 URL-safe characters")
            p256_point_bytes(key)
        object.__setattr__(self, "by_kid", MappingProxyType(dict(self.by_kid)))

    @classmethod
    def from_public_keys(cls, keys: Iterable[ec.EllipticCurvePublicKey]) -> JsonWebKeySet:
        """A set with each key under its RFC 7638 thumbprint.

        Raises:
            InvalidKeyMaterial: a non-P-256 key, duplicate keys, or too many / no keys.
        """
        by_kid: dict[str, ec.EllipticCurvePublicKey] = {}
        for key in keys:
            kid = jwk_thumbprint(key)
            if kid in by_kid:
                raise InvalidKeyMaterial("duplicate key in JWKS")
            by_kid[kid] = key
        return cls(by_kid=by_kid)

    @classmethod
    def from_dict(cls, document: Mapping[str, object]) -> JsonWebKeySet:
        """Parse a decoded JWKS document ``{"keys": [jwk, …]}``; every key must have a kid.

        Raises:
            InvalidKeyMaterial: malformed document, bad key, missing or duplicate kid.
        """
        if not isinstance(document, Mapping) or set(document) != {"keys"}:
            raise InvalidKeyMaterial('JWKS must be an object with exactly the member "keys"')
        entries = document["keys"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_JWKS_KEYS:
            raise InvalidKeyMaterial(f'JWKS "keys" must be a list of 1..{MAX_JWKS_KEYS} keys')
        by_kid: dict[str, ec.EllipticCurvePublicKey] = {}
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise InvalidKeyMaterial("JWK must be a JSON object")
            kid = entry.get("kid")
            if not isinstance(kid, str):
                raise InvalidKeyMaterial("every JWK in a JWKS needs a string kid")
            if kid in by_kid:
                raise InvalidKeyMaterial("duplicate kid in JWKS")
            by_kid[kid] = public_key_from_jwk(entry)
        return cls(by_kid=by_kid)

    @classmethod
    def from_json(cls, data: bytes) -> JsonWebKeySet:
        """Parse a JWKS from its JSON bytes (at most :data:`MAX_JWKS_BYTES`).

        Raises:
            InvalidEncoding: too large or not JSON.
            InvalidKeyMaterial: see :meth:`from_dict`.
        """
        if not isinstance(data, bytes) or len(data) > MAX_JWKS_BYTES:
            raise InvalidEncoding(f"JWKS must be at most {MAX_JWKS_BYTES} bytes")
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            raise InvalidEncoding("JWKS is not valid JSON") from None
        if not isinstance(document, dict):
            raise InvalidKeyMaterial("JWKS must be a JSON object")
        return cls.from_dict(document)

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document, keys in kid order, each with its own kid."""
        keys = []
        for kid in sorted(self.by_kid):
            jwk = jwk_from_public_key(self.by_kid[kid])
            jwk["kid"] = kid
            keys.append(jwk)
        return {"keys": keys}

    def to_json(self) -> bytes:
        """The JWKS as canonical (RFC 8785) JSON bytes."""
        return rfc8785.dumps(self.to_dict())
