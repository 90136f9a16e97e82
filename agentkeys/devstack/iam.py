"""The IAM/STS document given to SeaweedFS (``weed mini -s3.iam.config=FILE``).

A typed ``IamConfig`` renders to the JSON SeaweedFS 4.48 reads:

    {"sts":       {"tokenDuration", "maxSessionLength", "issuer", "signingKey" (base64)},
     "policy":    {"defaultEffect": "Deny", "storeType": "memory"},
     "providers": [{"name", "type": "oidc", "enabled",
                    "config": {"issuer", "clientId", "jwksUri", "allowedPrincipalTagKeys"}}],
     "roles":     [{"roleName", "roleArn", "trustPolicy", "attachedPolicies"}],
     "policies":  [{"name", "document"}]}

``dev_iam_config`` builds the development document from small tables
(statement templates below); later work will build the same ``IamConfig``
from the deploy/aws policy sources instead. Static S3 identities (the admin
key) are not part of this document: see ``s3_identities_document``.

Per-actor access rests on the session principal tag
``agentkeys_actor_omni`` (SPEC section 4 key layout ``bots/<actor_omni>/...``).
"""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentkeys.devstack.errors import DevstackError
from agentkeys.web_identity import ACTOR_TAG, SESSION_TAGS

DEV_PROVIDER_NAME = "agentkeys-broker"
DEV_CLIENT_ID = "agentkeys-s3"
DEV_ROLE_NAME = "AgentkeysActor"
DEV_ACTOR_POLICY_NAME = "AgentkeysActorObjects"
POLICY_VERSION = "2012-10-17"

_ACTOR = "${aws:PrincipalTag/" + ACTOR_TAG + "}"


class IamConfigError(DevstackError):
    """The IAM document is inconsistent (e.g. a role names an unknown policy)."""

    error = "devstack_iam_config_invalid"


@dataclass(frozen=True)
class AdminCredentials:
    """A static S3 identity with every permission, for bucket setup and inspection."""

    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> AdminCredentials:
        """Fresh random credentials (20-character key id, 40-character secret)."""
        alphabet = string.ascii_uppercase + string.digits
        access_key = "AK" + "".join(secrets.choice(alphabet) for _ in range(18))
        return cls(access_key=access_key, secret_key=secrets.token_urlsafe(30))


def s3_identities_document(admin: AdminCredentials) -> dict[str, Any]:
    """The ``-s3.config`` document holding the admin identity (SeaweedFS identities format)."""
    return {
        "identities": [
            {
                "name": "agentkeys-admin",
                "credentials": [{"accessKey": admin.access_key, "secretKey": admin.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


@dataclass(frozen=True)
class StsSettings:
    """SeaweedFS' STS: who it says it is and the key it signs session tokens with."""

    signing_key: bytes = field(repr=False)
    issuer: str = "agentkeys-dev-sts"
    token_duration: str = "1h"  # noqa: S105 - a duration, not a secret
    max_session_length: str = "12h"

    @classmethod
    def generate(cls) -> StsSettings:
        """Settings with a fresh random 32-byte signing key."""
        return cls(signing_key=secrets.token_bytes(32))

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenDuration": self.token_duration,
            "maxSessionLength": self.max_session_length,
            "issuer": self.issuer,
            "signingKey": base64.b64encode(self.signing_key).decode("ascii"),
        }


@dataclass(frozen=True)
class OidcProvider:
    """An OIDC identity provider whose JWTs STS accepts (in production: the broker)."""

    name: str
    issuer: str
    client_id: str
    jwks_uri: str
    allowed_principal_tag_keys: tuple[str, ...] = SESSION_TAGS

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "oidc",
            "enabled": True,
            "config": {
                "issuer": self.issuer,
                "clientId": self.client_id,
                "jwksUri": self.jwks_uri,
                "allowedPrincipalTagKeys": list(self.allowed_principal_tag_keys),
            },
        }


@dataclass(frozen=True)
class IamPolicy:
    """A named IAM policy document (AWS policy grammar)."""

    name: str
    document: Mapping[str, Any]


@dataclass(frozen=True)
class IamRole:
    """A role assumable with ``AssumeRoleWithWebIdentity`` from one provider."""

    name: str
    trusted_provider: str
    policy_names: tuple[str, ...]

    @property
    def arn(self) -> str:
        """The role ARN clients pass as ``RoleArn``."""
        return f"arn:aws:iam::role/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "roleName": self.name,
            "roleArn": self.arn,
            "trustPolicy": {
                "Version": POLICY_VERSION,
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Federated": self.trusted_provider},
                        "Action": ["sts:AssumeRoleWithWebIdentity"],
                    }
                ],
            },
            "attachedPolicies": list(self.policy_names),
        }


@dataclass(frozen=True)
class IamConfig:
    """The whole advanced-IAM document; ``to_json`` validates cross references."""

    sts: StsSettings
    providers: tuple[OidcProvider, ...]
    roles: tuple[IamRole, ...]
    policies: tuple[IamPolicy, ...]

    def role(self, name: str) -> IamRole:
        """The role called ``name``.

        Raises:
            IamConfigError: no such role.
        """
        for role in self.roles:
            if role.name == name:
                return role
        raise IamConfigError(f"no role named {name!r} in the IAM config")

    def to_json(self) -> dict[str, Any]:
        """The document SeaweedFS reads (deny by default, in-memory stores).

        Raises:
            IamConfigError: a role names an unknown provider or policy, or names repeat.
        """
        policy_names = [p.name for p in self.policies]
        provider_names = [p.name for p in self.providers]
        role_names = [r.name for r in self.roles]
        for kind, names in (("policy", policy_names), ("provider", provider_names),
                            ("role", role_names)):  # fmt: skip
            if len(set(names)) != len(names):
                raise IamConfigError(f"duplicate {kind} names in the IAM config")
        for role in self.roles:
            if role.trusted_provider not in provider_names:
                raise IamConfigError(
                    f"role {role.name!r} trusts unknown provider {role.trusted_provider!r}"
                )
            missing = [n for n in role.policy_names if n not in policy_names]
            if missing:
                raise IamConfigError(f"role {role.name!r} attaches unknown policies {missing}")
        return {
            "sts": self.sts.to_json(),
            "policy": {"defaultEffect": "Deny", "storeType": "memory"},
            "providers": [p.to_json() for p in self.providers],
            "roles": [r.to_json() for r in self.roles],
            "policies": [{"name": p.name, "document": dict(p.document)} for p in self.policies],
        }


# Statement templates of the per-actor policy: (Sid, Effect, Actions, resource
# template, condition template). "{bucket}" and "{actor}" are filled in; "{actor}"
# becomes the session-tag variable SeaweedFS substitutes per request.
_ACTOR_STATEMENTS: tuple[tuple[str, str, tuple[str, ...], str, Mapping[str, Any] | None], ...] = (
    (
        "ActorObjects",
        "Allow",
        ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"),
        "arn:aws:s3:::{bucket}/bots/{actor}/*",
        None,
    ),
    (
        "ActorList",
        "Allow",
        ("s3:ListBucket",),
        "arn:aws:s3:::{bucket}",
        {"StringLike": {"s3:prefix": ["bots/{actor}/*"]}},
    ),
    # A missing tag leaves the literal "${...}" in the pattern above; never let
    # such a key (or any key spelling "${") match.
    ("DenyUnresolvedVariable", "Deny", ("s3:*",), "arn:aws:s3:::{bucket}/*${{*", None),
)


def _fill(template: Any, values: Mapping[str, str]) -> Any:
    if isinstance(template, str):
        return template.format_map(values)
    if isinstance(template, Mapping):
        return {key: _fill(value, values) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [_fill(item, values) for item in template]
    return template


def actor_policy_document(bucket: str) -> dict[str, Any]:
    """The per-actor policy: objects under ``bots/<actor_omni>/`` of ``bucket`` only."""
    values = {"bucket": bucket, "actor": _ACTOR}
    statements = []
    for sid, effect, actions, resource, condition in _ACTOR_STATEMENTS:
        statement: dict[str, Any] = {
            "Sid": sid,
            "Effect": effect,
            "Action": list(actions),
            "Resource": [_fill(resource, values)],
        }
        if condition is not None:
            statement["Condition"] = _fill(condition, values)
        statements.append(statement)
    return {"Version": POLICY_VERSION, "Statement": statements}


def dev_iam_config(
    *,
    bucket: str,
    issuer: str,
    jwks_uri: str | None = None,
    client_id: str = DEV_CLIENT_ID,
    sts: StsSettings | None = None,
) -> IamConfig:
    """The development IAM document: one OIDC provider, one actor role, one policy.

    Args:
        bucket: the credential bucket (``$AGENTKEYS_BUCKET``).
        issuer: the OIDC issuer URL, exactly as JWTs carry it in ``iss``.
        jwks_uri: where its JWKS is served; default ``<issuer>/.well-known/jwks.json``.
        client_id: the audience (``aud``) JWTs must carry.
        sts: STS settings; default fresh random ones.
    """
    provider = OidcProvider(
        name=DEV_PROVIDER_NAME,
        issuer=issuer,
        client_id=client_id,
        jwks_uri=jwks_uri or issuer.rstrip("/") + "/.well-known/jwks.json",
    )
    return IamConfig(
        sts=sts or StsSettings.generate(),
        providers=(provider,),
        roles=(IamRole(DEV_ROLE_NAME, provider.name, (DEV_ACTOR_POLICY_NAME,)),),
        policies=(IamPolicy(DEV_ACTOR_POLICY_NAME, actor_policy_document(bucket)),),
    )
