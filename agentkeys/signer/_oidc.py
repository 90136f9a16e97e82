"""The web-identity token the signer exchanges at STS (SPEC.md sections 7 and 9.3).

A compact JWS (ES256, ``kid`` = RFC 7638 thumbprint of the signer's OIDC key)
with claims::

    iss, aud, sub (= actor_omni), iat, nbf, exp, jti,
    agentkeys_actor_omni, agentkeys_user_wallet (when the actor has a wallet),
    "https://aws.amazon.com/tags": {"principal_tags": {tag: [value]},
                                    "transitive_tag_keys": [tags]},
    "https://aws.amazon.com/tags/principal_tags": {tag: [value]}

The flat last claim is what SeaweedFS 4.48 reads (FACTS.md; AWS reads the
nested one); both carry the same values. Tag values are substituted into S3
policy variables, so they are checked against strict canonical patterns
(64 lowercase hex; ``0x`` + 40 lowercase hex) right before signing: no
wildcard, empty or ``${`` value is ever minted.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.jwks import b64url_encode, es256_sign, jwk_from_public_key
from agentkeys.signer.errors import UnsafeTagValue

__all__ = [
    "ACTOR_TAG",
    "AWS_TAGS_CLAIM",
    "FLAT_TAGS_CLAIM",
    "WALLET_TAG",
    "check_tag_value",
    "mint_web_identity_token",
    "public_jwks",
]

ACTOR_TAG = "agentkeys_actor_omni"
WALLET_TAG = "agentkeys_user_wallet"
AWS_TAGS_CLAIM = "https://aws.amazon.com/tags"
FLAT_TAGS_CLAIM = AWS_TAGS_CLAIM + "/principal_tags"

_PATTERNS = {
    ACTOR_TAG: re.compile(r"[0-9a-f]{64}", re.ASCII),
    WALLET_TAG: re.compile(r"0x[0-9a-f]{40}", re.ASCII),
}


def check_tag_value(tag: str, value: object) -> str:
    """``value`` if it is the canonical form for ``tag``.

    Raises:
        UnsafeTagValue: anything else (wrong type, empty, wildcard, mixed case, …).
    """
    pattern = _PATTERNS.get(tag)
    if pattern is None or not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise UnsafeTagValue(f"refusing to mint a token with a non-canonical {tag}")
    return value


def mint_web_identity_token(
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: str,
    audience: str,
    actor_omni: str,
    wallet: str | None,
    now: int,
    lifetime: int,
) -> str:
    """Sign the token for ``actor_omni`` (see the module docstring).

    Raises:
        UnsafeTagValue: a tag value is not canonical.
    """
    tags = {ACTOR_TAG: check_tag_value(ACTOR_TAG, actor_omni)}
    if wallet is not None:
        tags[WALLET_TAG] = check_tag_value(WALLET_TAG, wallet)
    listed = {k: [v] for k, v in tags.items()}
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": tags[ACTOR_TAG],
        "iat": now,
        "nbf": now - 5,
        "exp": now + lifetime,
        "jti": secrets.token_hex(16),
        **tags,
        AWS_TAGS_CLAIM: {"principal_tags": listed, "transitive_tag_keys": sorted(tags)},
        FLAT_TAGS_CLAIM: listed,
    }
    header = {"alg": "ES256", "typ": "JWT", "kid": jwk_from_public_key(key.public_key())["kid"]}
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = es256_sign(key, signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def public_jwks(key: ec.EllipticCurvePrivateKey) -> dict[str, list[dict[str, str]]]:
    """The JWKS document publishing the token-signing key (for the OIDC issuer to serve)."""
    return {"keys": [jwk_from_public_key(key.public_key())]}
