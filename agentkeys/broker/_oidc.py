"""The broker's OIDC issuer: discovery, the token-signing JWKS, and web-identity tokens.

SPEC sections 7 (broker) and 9 step 3. Tokens are compact JWS (ES256, ``kid`` = RFC 7638
thumbprint of K2) with claims::

    iss (the broker's public URL), aud, sub (= actor_omni), iat, nbf, exp, jti,
    agentkeys_actor_omni, agentkeys_user_wallet,
    "https://aws.amazon.com/tags": {"principal_tags": {tag: [value]},
                                    "transitive_tag_keys": [both tags]},
    "https://aws.amazon.com/tags/principal_tags": {tag: [value]}

AWS reads the nested claim; SeaweedFS reads the flat one (FACTS.md); both carry the same
values. The values are substituted into S3 policy variables, so both must be non-empty and
canonical (64 lowercase hex; ``0x`` + 40 lowercase hex) or nothing is minted.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from agentkeys.broker._jwt import encode_jwt
from agentkeys.broker._keys import KeyRing
from agentkeys.broker.errors import OidcRefused

__all__ = [
    "ACTOR_TAG",
    "AWS_TAGS_CLAIM",
    "FLAT_TAGS_CLAIM",
    "WALLET_TAG",
    "discovery_document",
    "mint_oidc_token",
]

ACTOR_TAG = "agentkeys_actor_omni"
WALLET_TAG = "agentkeys_user_wallet"
AWS_TAGS_CLAIM = "https://aws.amazon.com/tags"
FLAT_TAGS_CLAIM = AWS_TAGS_CLAIM + "/principal_tags"
_ACTOR = re.compile(r"[0-9a-f]{64}", re.ASCII)
_WALLET = re.compile(r"0x[0-9a-f]{40}", re.ASCII)


def mint_oidc_token(
    keys: KeyRing,
    *,
    issuer: str,
    audience: str,
    actor_omni: object,
    wallet: object,
    now: int,
    lifetime: int,
) -> str:
    """Sign a web-identity token for (actor_omni, wallet) with K2.

    Raises:
        OidcRefused: a tag value is missing, empty or not in canonical form.
    """
    if not isinstance(actor_omni, str) or _ACTOR.fullmatch(actor_omni) is None:
        raise OidcRefused("agentkeys_actor_omni must be 64 lowercase hex digits")
    if not isinstance(wallet, str) or _WALLET.fullmatch(wallet) is None:
        raise OidcRefused("agentkeys_user_wallet must be 0x followed by 40 lowercase hex digits")
    tags = {ACTOR_TAG: actor_omni, WALLET_TAG: wallet}
    listed = {key: [value] for key, value in tags.items()}
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": actor_omni,
        "iat": now,
        "nbf": now - 5,
        "exp": now + lifetime,
        "jti": secrets.token_hex(16),
        **tags,
        AWS_TAGS_CLAIM: {"principal_tags": listed, "transitive_tag_keys": sorted(tags)},
        FLAT_TAGS_CLAIM: listed,
    }
    return encode_jwt(claims, keys.active, keys.active_kid)


def discovery_document(issuer: str) -> dict[str, Any]:
    """``/.well-known/openid-configuration`` for ``issuer``."""
    return {
        "issuer": issuer,
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", ACTOR_TAG,
                             WALLET_TAG, AWS_TAGS_CLAIM, FLAT_TAGS_CLAIM],
    }
