"""The SeaweedFS development IAM document, built from the deployed AWS policies.

:func:`deployed_iam_config` renders deploy/aws (through :mod:`agentkeys.worker.iam`) into
the :class:`agentkeys.devstack.iam.IamConfig` given to ``weed mini``, so what is tested is
what is deployed, with the spellings SeaweedFS 4.48 needs:

* the actor role's identity policy is ``actor-role-policy.json`` (``_v1_wallet_keyed`` and
  ``_v2_omni_keyed`` statements side by side, and the deny for keys containing ``${``),
  with one spelling adapted (:func:`seaweed_identity_policy`): AWS writes a literal ``$``
  in a policy as ``${$}``, so the AWS documents deny ``…/*${$}{*``; SeaweedFS 4.48 has no
  such escape (measured here: with ``${$}`` a key containing ``${`` is allowed, and a
  session without the wallet tag can read the literal ``bots/${aws:PrincipalTag/…}/``
  key its unresolved variable leaves behind) while it keeps a ``${`` that opens no
  variable literally, so for SeaweedFS every ``${$}`` is written ``$`` (``…/*${*``);
* the role's trust policy is ``role-trust-policy.json`` (the actor tag required non-empty;
  the wallet tag either ``0x…`` or absent: the operator's own sessions carry it, an
  agent's do not),
  with the two adaptations SeaweedFS 4.48 needs (measured here): it refuses
  ``sts:TagSession`` as a trust-policy action (AWS requires it for session tags from a
  web identity) and it denies every AssumeRoleWithWebIdentity when the trust statement has
  a ``Condition`` (``<host>:aud``, ``aws:RequestTag/…`` with StringLike or Null,
  ``aws:PrincipalTag/…`` and ``jwt:…`` were each tried). So for SeaweedFS that action and
  the conditions are dropped (:func:`seaweed_trust_policy`); in development the non-empty
  tags rest on the token minters (the signer and the broker refuse to sign an empty or
  non-canonical tag) and on the policy's deny for keys containing ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any, Literal

from agentkeys.devstack.iam import (
    DEV_ACTOR_POLICY_NAME,
    DEV_CLIENT_ID,
    DEV_PROVIDER_NAME,
    DEV_ROLE_NAME,
    IamConfig,
    IamPolicy,
    IamRole,
    OidcProvider,
    StsSettings,
)
from agentkeys.worker.iam import POLICY_DIR, V2_SID, render_policy

__all__ = [
    "SEAWEED_UNSUPPORTED_TRUST_ACTIONS",
    "TrustPolicyRole",
    "deployed_iam_config",
    "seaweed_identity_policy",
    "seaweed_trust_policy",
]

SEAWEED_UNSUPPORTED_TRUST_ACTIONS = frozenset({"sts:TagSession"})
AWS_LITERAL_DOLLAR = "${$}"


def seaweed_trust_policy(document: Mapping[str, Any]) -> dict[str, Any]:
    """The AWS trust policy adapted for SeaweedFS 4.48 (see the module docstring)."""
    statements = []
    for statement in document.get("Statement", []):
        adapted = {k: v for k, v in statement.items() if k != "Condition"}
        actions = adapted.get("Action", [])
        if isinstance(actions, list):
            adapted["Action"] = [a for a in actions if a not in SEAWEED_UNSUPPORTED_TRUST_ACTIONS]
        statements.append(adapted)
    return {**document, "Statement": statements}


def _seaweed_resource(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(AWS_LITERAL_DOLLAR, "$")
    if isinstance(value, list):
        return [_seaweed_resource(item) for item in value]
    return value


def seaweed_identity_policy(document: Mapping[str, Any]) -> dict[str, Any]:
    """An AWS identity policy with AWS's ``${$}`` (literal ``$``) spelled ``$`` for SeaweedFS.

    SeaweedFS 4.48 does not know the ``${$}`` escape and leaves a ``${`` that opens no
    variable as literal text (see the module docstring), so ``…/*${$}{*`` (AWS: keys
    containing ``${``) becomes ``…/*${*``, which SeaweedFS reads the same way.
    """
    statements = []
    for statement in document.get("Statement", []):
        adapted = dict(statement)
        for element in ("Resource", "NotResource"):
            if element in adapted:
                adapted[element] = _seaweed_resource(adapted[element])
        statements.append(adapted)
    return {**document, "Statement": statements}


@dataclass(frozen=True)
class TrustPolicyRole(IamRole):
    """An :class:`IamRole` whose trust policy is a rendered document, not the default."""

    trust_policy: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        document = super().to_json()
        if self.trust_policy is not None:
            document["trustPolicy"] = dict(self.trust_policy)
        return document


def deployed_iam_config(
    *,
    bucket: str,
    issuer: str,
    jwks_uri: str | None = None,
    client_id: str = DEV_CLIENT_ID,
    sts: StsSettings | None = None,
    policy_dir: Traversable = POLICY_DIR,
    stage: Literal["v1", "v2"] = "v2",
) -> IamConfig:
    """The SeaweedFS IAM document built from ``deploy/aws`` (see the module docstring).

    Args:
        bucket: the credential bucket.
        issuer: the OIDC issuer exactly as tokens carry it in ``iss``.
        jwks_uri: its JWKS; default ``<issuer>/.well-known/jwks.json``.
        client_id: the audience tokens carry.
        sts: SeaweedFS STS settings; default fresh random ones.
        stage: ``"v2"`` (both statement families, SPEC section 9 step 4 done) or ``"v1"``
            (the policy before that step: the ``_v2_omni_keyed`` statements left out).
    """
    provider = OidcProvider(
        name=DEV_PROVIDER_NAME,
        issuer=issuer,
        client_id=client_id,
        jwks_uri=jwks_uri or issuer.rstrip("/") + "/.well-known/jwks.json",
    )
    host = re.sub(r"^https?://", "", issuer).rstrip("/")
    trust = render_policy(
        "role-trust-policy",
        {"oidc_provider_arn": DEV_PROVIDER_NAME, "oidc_host": host, "audience": client_id},
        policy_dir=policy_dir,
    )
    role = TrustPolicyRole(
        DEV_ROLE_NAME, provider.name, (DEV_ACTOR_POLICY_NAME,),
        trust_policy=seaweed_trust_policy(trust),
    )  # fmt: skip
    actor_policy = render_policy("actor-role-policy", {"bucket": bucket}, policy_dir=policy_dir)
    if stage == "v1":
        actor_policy["Statement"] = [
            st for st in actor_policy["Statement"] if not st.get("Sid", "").startswith(V2_SID)
        ]
    return IamConfig(
        sts=sts or StsSettings.generate(),
        providers=(provider,),
        roles=(role,),
        policies=(IamPolicy(DEV_ACTOR_POLICY_NAME, seaweed_identity_policy(actor_policy)),),
    )
