"""The signer's web-identity tokens for STS (SPEC.md sections 7 and 9.3), and their JWKS.

The token format (claims, session tags, canonical tag values) is
:mod:`agentkeys.web_identity`'s; the signer signs with its own OIDC key (``kid`` = its
RFC 7638 thumbprint) and mints a token without the wallet tag for an actor without one.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.jwks import jwk_from_public_key
from agentkeys.web_identity import check_tag_value, web_identity_token

__all__ = ["check_tag_value", "mint_web_identity_token", "public_jwks"]


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
    """Sign the token for ``actor_omni`` with the signer's OIDC key.

    Raises:
        UnsafeTagValue: a tag value is not canonical.
    """
    kid = jwk_from_public_key(key.public_key())["kid"]
    return web_identity_token(
        key, kid, issuer=issuer, audience=audience, actor_omni=actor_omni, wallet=wallet,
        now=now, lifetime=lifetime,
    )  # fmt: skip


def public_jwks(key: ec.EllipticCurvePrivateKey) -> dict[str, list[dict[str, str]]]:
    """The JWKS document publishing the token-signing key (for the OIDC issuer to serve)."""
    return {"keys": [jwk_from_public_key(key.public_key())]}
