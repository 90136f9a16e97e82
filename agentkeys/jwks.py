"""P-256 public keys as JWK (RFC 7517) and key sets as JWKS: the broker's K1 and K2 keys.

The broker publishes its cap-signing keys K1 and OIDC keys K2 as a JWKS (SPEC section 2);
the worker and the signer consume it. ``kid`` values we generate are RFC 7638 thumbprints
(base64url sha256 over the canonical ``{"crv","kty","x","y"}`` JSON). Parsing is strict:
only ``kty`` EC, ``crv`` P-256, ``alg`` ES256 and ``use`` sig (when present), no private
member ``d``, points on the curve, unique ``kid``s, bounded sizes. base64url is
``agentkeys.b64url``'s; ES256 signatures are ``agentkeys.es256``'s.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.errors import InvalidEncoding, InvalidKeyMaterial
from agentkeys.omni import p256_point_bytes

__all__ = [
    "MAX_JWKS_BYTES",
    "MAX_JWKS_KEYS",
    "JsonWebKeySet",
    "jwk_from_public_key",
    "jwk_thumbprint",
    "public_key_from_jwk",
]

MAX_JWKS_KEYS = 16
MAX_JWKS_BYTES = 64 * 1024
_KID = re.compile(r"[A-Za-z0-9._~-]{1,128}", re.ASCII)
_JWK_MEMBERS = frozenset({"kty", "crv", "x", "y", "kid", "alg", "use", "key_ops"})


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
