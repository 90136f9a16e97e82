"""The broker's OIDC issuer: discovery, and web-identity tokens signed with K2.

SPEC sections 7 (broker) and 9 step 3. The token format (claims, session tags, canonical
tag values) is :mod:`agentkeys.web_identity`'s; what is the broker's own is that a token
always carries both tags (a J1 session has a wallet), and that a refusal answers
``oidc_refused`` (400).
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeys.broker._keys import KeyRing
from agentkeys.broker.errors import OidcRefused
from agentkeys.errors import UnsafeTagValue
from agentkeys.web_identity import (
    ACTOR_TAG,
    AWS_TAGS_CLAIM,
    FLAT_TAGS_CLAIM,
    WALLET_TAG,
    web_identity_token,
)

__all__ = [
    "ACTOR_TAG",
    "AWS_TAGS_CLAIM",
    "FLAT_TAGS_CLAIM",
    "WALLET_TAG",
    "OidcDiscovery",
    "discovery_document",
    "mint_oidc_token",
]


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
    if wallet is None:
        raise OidcRefused("agentkeys_user_wallet must be 0x followed by 40 lowercase hex digits")
    try:
        return web_identity_token(
            keys.active, keys.active_kid, issuer=issuer, audience=audience,
            actor_omni=actor_omni, wallet=wallet, now=now, lifetime=lifetime,
        )  # fmt: skip
    except UnsafeTagValue as exc:
        raise OidcRefused(exc.reason) from exc


@dataclass(frozen=True)
class OidcDiscovery:
    """The OpenID Connect discovery document (``/.well-known/openid-configuration``)."""

    issuer: str
    jwks_uri: str
    response_types_supported: list[str]
    subject_types_supported: list[str]
    id_token_signing_alg_values_supported: list[str]
    claims_supported: list[str]


def discovery_document(issuer: str) -> OidcDiscovery:
    """``/.well-known/openid-configuration`` for ``issuer``."""
    return OidcDiscovery(
        issuer=issuer,
        jwks_uri=issuer + "/.well-known/jwks.json",
        response_types_supported=["id_token"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=["ES256"],
        claims_supported=[
            "iss",
            "aud",
            "sub",
            "iat",
            "nbf",
            "exp",
            "jti",
            ACTOR_TAG,
            WALLET_TAG,
            AWS_TAGS_CLAIM,
            FLAT_TAGS_CLAIM,
        ],
    )
