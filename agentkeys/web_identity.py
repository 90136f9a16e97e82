"""The OIDC web-identity token exchanged at STS, and the session tags it carries (SPEC 7, 9.3).

Both issuers mint it here: the broker (``/v1/mint-oidc-jwt``, K2) and the signer (STS for the
worker, its OIDC key). A compact JWS (``agentkeys.es256.es256_jws``: ES256, ``kid`` = RFC
7638 thumbprint of the signing key) with claims::

    iss, aud, sub (= actor_omni), iat, nbf (= iat - 5), exp, jti,
    agentkeys_actor_omni, agentkeys_user_wallet (when the actor has a wallet),
    "https://aws.amazon.com/tags": {"principal_tags": {tag: [value]},
                                    "transitive_tag_keys": [the tags, sorted]},
    "https://aws.amazon.com/tags/principal_tags": {tag: [value]}

AWS reads the nested claim; SeaweedFS 4.48 reads the flat one (FACTS.md); both carry the
same values. The tag values are substituted into S3 policy variables
(``${aws:PrincipalTag/agentkeys_actor_omni}``), so each is checked against its strict
canonical pattern right before signing (64 lowercase hex; ``0x`` + 40 lowercase hex): no
wildcard, empty, mixed-case or ``${`` value is ever minted (``unsafe_tag_value``).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.errors import UnsafeTagValue
from agentkeys.es256 import es256_jws

__all__ = [
    "ACTOR_TAG",
    "AWS_TAGS_CLAIM",
    "FLAT_TAGS_CLAIM",
    "SESSION_TAGS",
    "WALLET_TAG",
    "check_tag_value",
    "web_identity_claims",
    "web_identity_token",
]

ACTOR_TAG = "agentkeys_actor_omni"
"""Session tag (and claim) naming the actor whose prefix a policy opens."""

WALLET_TAG = "agentkeys_user_wallet"
"""Session tag (and claim) naming the actor's wallet (legacy v1 prefixes)."""

SESSION_TAGS = (ACTOR_TAG, WALLET_TAG)
"""Every session tag a token may carry (the IAM documents allow exactly these keys)."""

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


def web_identity_claims(
    *,
    issuer: str,
    audience: str,
    actor_omni: object,
    wallet: object | None,
    now: int,
    lifetime: int,
) -> dict[str, Any]:
    """The claims of a token for ``actor_omni`` (and ``wallet`` unless None), checked.

    Raises:
        UnsafeTagValue: a tag value is not canonical.
    """
    tags = {ACTOR_TAG: check_tag_value(ACTOR_TAG, actor_omni)}
    if wallet is not None:
        tags[WALLET_TAG] = check_tag_value(WALLET_TAG, wallet)
    listed = {key: [value] for key, value in tags.items()}
    return {
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


def web_identity_token(
    key: ec.EllipticCurvePrivateKey,
    kid: str,
    *,
    issuer: str,
    audience: str,
    actor_omni: object,
    wallet: object | None,
    now: int,
    lifetime: int,
) -> str:
    """Sign the token (see the module docstring) with ``key`` under ``kid``.

    Raises:
        UnsafeTagValue: a tag value is not canonical.
    """
    claims = web_identity_claims(
        issuer=issuer, audience=audience, actor_omni=actor_omni, wallet=wallet, now=now,
        lifetime=lifetime,
    )  # fmt: skip
    return es256_jws(claims, key, kid)
