"""The SeaweedFS IAM document builder (pure)."""

from __future__ import annotations

import base64
import json

import pytest

from agentkeys.devstack import (
    ACTOR_TAG,
    WALLET_TAG,
    AdminCredentials,
    IamConfig,
    IamConfigError,
    IamPolicy,
    IamRole,
    OidcProvider,
    StsSettings,
    actor_policy_document,
    dev_iam_config,
    s3_identities_document,
)

BUCKET = "agentkeys-test"
ISSUER = "http://127.0.0.1:9999"


def test_dev_config_document_shape() -> None:
    config = dev_iam_config(bucket=BUCKET, issuer=ISSUER)
    doc = config.to_json()
    assert doc["policy"] == {"defaultEffect": "Deny", "storeType": "memory"}
    assert len(base64.b64decode(doc["sts"]["signingKey"])) == 32
    (provider,) = doc["providers"]
    assert provider["type"] == "oidc"
    assert provider["config"] == {
        "issuer": ISSUER,
        "clientId": "agentkeys-s3",
        "jwksUri": ISSUER + "/.well-known/jwks.json",
        "allowedPrincipalTagKeys": [ACTOR_TAG, WALLET_TAG],
    }
    (role,) = doc["roles"]
    assert role["roleArn"] == config.role(role["roleName"]).arn
    (statement,) = role["trustPolicy"]["Statement"]
    assert statement["Principal"] == {"Federated": provider["name"]}
    assert statement["Action"] == ["sts:AssumeRoleWithWebIdentity"]
    assert role["attachedPolicies"] == [doc["policies"][0]["name"]]
    json.dumps(doc)  # serialisable as is


def test_actor_policy_scopes_objects_to_the_actor_prefix() -> None:
    statements = {s["Sid"]: s for s in actor_policy_document(BUCKET)["Statement"]}
    actor = "${aws:PrincipalTag/agentkeys_actor_omni}"
    assert statements["ActorObjects"]["Resource"] == [f"arn:aws:s3:::{BUCKET}/bots/{actor}/*"]
    assert statements["ActorList"]["Condition"] == {
        "StringLike": {"s3:prefix": [f"bots/{actor}/*"]}
    }
    deny = statements["DenyUnresolvedVariable"]
    assert deny["Effect"] == "Deny"
    assert deny["Resource"] == [f"arn:aws:s3:::{BUCKET}/*${{*"]


def test_secrets_stay_out_of_repr() -> None:
    admin = AdminCredentials.generate()
    sts = StsSettings.generate()
    assert admin.secret_key not in repr(admin)
    assert repr(sts.signing_key) not in repr(sts)
    assert AdminCredentials.generate() != admin
    identity = s3_identities_document(admin)["identities"][0]
    assert identity["credentials"] == [
        {"accessKey": admin.access_key, "secretKey": admin.secret_key}
    ]


def _config(**overrides: object) -> IamConfig:
    fields: dict[str, object] = {
        "sts": StsSettings.generate(),
        "providers": (OidcProvider("p", ISSUER, "aud", ISSUER + "/jwks"),),
        "roles": (IamRole("r", "p", ("pol",)),),
        "policies": (IamPolicy("pol", {"Version": "2012-10-17", "Statement": []}),),
    }
    fields.update(overrides)
    return IamConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"roles": (IamRole("r", "nobody", ("pol",)),)}, "unknown provider"),
        ({"roles": (IamRole("r", "p", ("missing",)),)}, "unknown policies"),
        ({"roles": (IamRole("r", "p", ("pol",)), IamRole("r", "p", ()))}, "duplicate role"),
    ],
)
def test_inconsistent_configs_are_refused(overrides: dict[str, object], message: str) -> None:
    _config().to_json()
    with pytest.raises(IamConfigError, match=message):
        _config(**overrides).to_json()


def test_unknown_role_lookup_raises() -> None:
    with pytest.raises(IamConfigError):
        _config().role("other")
