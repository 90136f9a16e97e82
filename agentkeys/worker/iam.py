"""Policies as data: deploy/aws/*.json rendered for AWS, and the SeaweedFS dev IAM from them.

SPEC.md section 9 step 4 and section 10. The JSON documents in ``deploy/aws/`` are the one
source; placeholders are written ``{{name}}`` (never ``${…}``, which is IAM's own variable
syntax and stays as is). :func:`render_policy` substitutes them, refusing values that could
change a pattern (``* ? $ { } "`` or whitespace) and any placeholder left unfilled.
:func:`dev_iam_config` builds the :class:`agentkeys.devstack.iam.IamConfig` given to
``weed mini`` from the same documents, so what is tested is what is deployed:

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

``bucket-lifecycle.json`` expires the worker's spent-nonce markers (``pop-nonces/``, written
only with ``[storage] shared_nonces``) after a day; they matter for 65 s.

``bucket-policy.json`` carries the same statements for AWS, where the principal is the
role's ARN; SeaweedFS' development store has no account to name there, so the role's
identity policy is what it enforces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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
from agentkeys.errors import AgentkeysError

__all__ = [
    "DOCUMENTS",
    "POLICY_DIR",
    "SEAWEED_UNSUPPORTED_TRUST_ACTIONS",
    "V1_SID",
    "V2_SID",
    "PolicyRenderError",
    "TrustPolicyRole",
    "dev_iam_config",
    "render_all",
    "render_policy",
    "seaweed_identity_policy",
    "seaweed_trust_policy",
]

POLICY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "aws"
DOCUMENTS = (
    "actor-role-policy",
    "bucket-policy",
    "role-trust-policy",
    "worker-policy",
    "daemon-policy",
    "bucket-lifecycle",
)
V1_SID = "_v1_wallet_keyed"
V2_SID = "_v2_omni_keyed"
SEAWEED_UNSUPPORTED_TRUST_ACTIONS = frozenset({"sts:TagSession"})
AWS_LITERAL_DOLLAR = "${$}"
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/@+=,-]{1,256}", re.ASCII)


class PolicyRenderError(AgentkeysError):
    """A policy document could not be rendered (unsafe value, missing value, bad JSON)."""

    error = "policy_render_error"
    status = 500


def render_policy(
    name: str, values: Mapping[str, str], *, policy_dir: Path = POLICY_DIR
) -> dict[str, Any]:
    """Render ``deploy/aws/<name>.json`` with ``values``.

    Raises:
        PolicyRenderError: unknown document, unsafe or missing value, invalid JSON.
    """
    if name not in DOCUMENTS:
        raise PolicyRenderError(f"unknown policy document {name!r}")
    for key, value in values.items():
        if not isinstance(value, str) or _SAFE_VALUE.fullmatch(value) is None:
            raise PolicyRenderError(f"unsafe value for placeholder {key!r}")
    try:
        text = (policy_dir / f"{name}.json").read_text(encoding="utf-8")
    except OSError:
        raise PolicyRenderError(f"cannot read policy document {name!r}") from None
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise PolicyRenderError(f"{name}: no value for placeholders {missing}")
    rendered = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    try:
        document = json.loads(rendered)
    except ValueError:
        raise PolicyRenderError(f"{name}: not valid JSON after rendering") from None
    if not isinstance(document, dict):
        raise PolicyRenderError(f"{name}: not a JSON object")
    return document


def render_all(
    values: Mapping[str, str], *, policy_dir: Path = POLICY_DIR
) -> dict[str, dict[str, Any]]:
    """Every document of :data:`DOCUMENTS`, rendered (for ``deploy/aws/generate.py``)."""
    return {name: render_policy(name, values, policy_dir=policy_dir) for name in DOCUMENTS}


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


def dev_iam_config(
    *,
    bucket: str,
    issuer: str,
    jwks_uri: str | None = None,
    client_id: str = DEV_CLIENT_ID,
    sts: StsSettings | None = None,
    policy_dir: Path = POLICY_DIR,
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
