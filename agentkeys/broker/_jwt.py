"""Compact JWS (ES256) decoding for the broker's sessions (encoding: ``es256.es256_jws``).

``header.claims.signature``: base64url (no padding) of the JSON header ``{"alg": "ES256",
"kid", "typ": "JWT"}``, of the JSON claims, and of the raw 64-byte r ‖ s signature over the
ASCII ``header.claims``. Decoding is strict: exactly three parts, canonical base64url, a JSON
object header with ``alg`` ES256 and a ``kid`` from the trusted set, a JSON object body
without duplicate members, bounded size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_decode
from agentkeys.broker.errors import SessionInvalid
from agentkeys.errors import FormatError
from agentkeys.es256 import es256_verify
from agentkeys.strict_json import StrictJsonError, loads_object

__all__ = ["MAX_JWT_CHARS", "decode_jwt"]

MAX_JWT_CHARS = 8192


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        return loads_object(b64url_decode(part), what=f"token {what}")
    except FormatError:
        raise SessionInvalid(f"token {what} is not base64url JSON") from None
    except StrictJsonError as exc:  # duplicate members, NaN, too deep, not an object
        raise SessionInvalid(exc.reason) from None


def decode_jwt(
    token: str, keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> tuple[str, dict[str, Any]]:
    """Verify the signature of ``token`` against ``keys`` (by kid); return (kid, claims).

    Claims (issuer, audience, expiry) are the caller's to check.

    Raises:
        SessionInvalid: malformed, unknown kid, or a signature that does not verify.
    """
    if not isinstance(token, str) or len(token) > MAX_JWT_CHARS or not token.isascii():
        raise SessionInvalid("token must be a compact JWS of bounded size")
    parts = token.split(".")
    if len(parts) != 3:
        raise SessionInvalid("token must have three parts")
    header = _json_object(parts[0], "header")
    if header.get("alg") != "ES256" or set(header) - {"alg", "kid", "typ"}:
        raise SessionInvalid("token header must be ES256 with kid")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise SessionInvalid("token kid is not a trusted key")
    try:
        signature = b64url_decode(parts[2])
        valid = es256_verify(keys[kid], (parts[0] + "." + parts[1]).encode("ascii"), signature)
    except FormatError:
        raise SessionInvalid("token signature is malformed") from None
    if not valid:
        raise SessionInvalid("token signature does not verify")
    return kid, _json_object(parts[1], "claims")
