"""Policies as data (deploy/aws) and the SeaweedFS IAM generated from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentkeys.devstack.deployed_iam import deployed_iam_config, seaweed_identity_policy
from agentkeys.worker.iam import (
    POLICY_DIR,
    PolicyRenderError,
    render_all,
    render_policy,
)

VALUES = {
    "bucket": "agentkeys-prod",
    "account_id": "123456789012",
    "role_name": "AgentkeysActor",
    "oidc_host": "broker.example.com",
    "oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/broker.example.com",
    "audience": "agentkeys-s3",
    "worker_function": "agentkeys-worker",
}


def by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_bucket_policy_has_both_statement_families_and_the_variable_deny() -> None:
    bucket = by_sid(render_policy("bucket-policy", VALUES))
    wallet = "${aws:PrincipalTag/agentkeys_user_wallet}"
    actor = "${aws:PrincipalTag/agentkeys_actor_omni}"
    assert bucket["_v1_wallet_keyed_objects"]["Resource"] == [
        f"arn:aws:s3:::agentkeys-prod/bots/{wallet}/*"
    ]
    assert bucket["_v2_omni_keyed_objects"]["Resource"] == [
        f"arn:aws:s3:::agentkeys-prod/bots/{actor}/*"
    ]
    deny = bucket["DenyUnresolvedVariable"]
    assert (deny["Effect"], deny["Resource"]) == ("Deny", ["arn:aws:s3:::agentkeys-prod/*${$}{*"])
    # The actor role's identity policy carries exactly the same grants.
    role = by_sid(render_policy("actor-role-policy", VALUES))
    for sid in ("_v1_wallet_keyed_objects", "_v2_omni_keyed_objects", "_v1_wallet_keyed_list",
                "_v2_omni_keyed_list", "DenyUnresolvedVariable"):  # fmt: skip
        assert role[sid]["Action"] == bucket[sid]["Action"], sid
        assert role[sid]["Resource"] == bucket[sid]["Resource"], sid


def test_trust_policy_requires_both_tags_non_empty() -> None:
    both, actor_only = render_policy("role-trust-policy", VALUES)["Statement"]
    for statement in (both, actor_only):
        assert statement["Principal"] == {"Federated": VALUES["oidc_provider_arn"]}
        assert set(statement["Action"]) == {"sts:AssumeRoleWithWebIdentity", "sts:TagSession"}
        assert statement["Condition"]["StringEquals"] == {"broker.example.com:aud": "agentkeys-s3"}
    condition = both["Condition"]
    tags = ("aws:RequestTag/agentkeys_actor_omni", "aws:RequestTag/agentkeys_user_wallet")
    assert all(condition["Null"][tag] == "false" for tag in tags)
    assert all(condition["StringLike"][tag].endswith("?*") for tag in tags)
    # agents' sessions: the actor tag non-empty, the wallet tag absent (review item 7)
    assert actor_only["Condition"]["Null"] == {tags[0]: "false", tags[1]: "true"}


def test_worker_and_daemon_have_no_standing_s3_access() -> None:
    for name in ("worker-policy", "daemon-policy"):
        statements = render_policy(name, VALUES)["Statement"]
        assert not any(s["Effect"] == "Allow" and any(a.startswith("s3:") for a in s["Action"])
                       for s in statements), name  # fmt: skip
        assert any(s["Effect"] == "Deny" and s["Action"] == ["s3:*"] for s in statements), name


@pytest.mark.parametrize("value", ["*", "a?b", "${aws:username}", "a b", 'x"y', "{x}", ""])
def test_unsafe_values_are_refused(value: str) -> None:
    with pytest.raises(PolicyRenderError, match="unsafe"):
        render_policy("bucket-policy", {**VALUES, "bucket": value})


def test_unfilled_placeholders_and_unknown_documents_are_refused() -> None:
    with pytest.raises(PolicyRenderError, match="account_id"):
        render_policy("bucket-policy", {"bucket": "b", "role_name": "r"})
    with pytest.raises(PolicyRenderError, match="unknown"):
        render_policy("../secrets", VALUES)


def test_dev_iam_is_generated_from_the_same_documents() -> None:
    iam = deployed_iam_config(bucket="agentkeys-test", issuer="http://127.0.0.1:1234")
    document = iam.to_json()
    (policy,) = document["policies"]
    assert policy["document"] == seaweed_identity_policy(
        render_policy("actor-role-policy", {"bucket": "agentkeys-test"})
    )
    (role,) = document["roles"]
    for trust in role["trustPolicy"]["Statement"]:
        assert trust["Action"] == ["sts:AssumeRoleWithWebIdentity"]  # SeaweedFS: no TagSession
        assert "Condition" not in trust  # SeaweedFS denies any conditioned trust statement
    v1_only = deployed_iam_config(bucket="agentkeys-test", issuer="http://127.0.0.1:1", stage="v1")
    sids = {s["Sid"] for s in v1_only.to_json()["policies"][0]["document"]["Statement"]}
    assert sids == {"_v1_wallet_keyed_objects", "_v1_wallet_keyed_list", "DenyUnresolvedVariable"}


def test_generate_script_writes_every_document(tmp_path: Path) -> None:
    args = [f"--{k.replace('_', '-')}={v}" for k, v in VALUES.items()
            if k not in ("oidc_provider_arn", "role_name")]  # fmt: skip
    subprocess.run(
        [sys.executable, str(POLICY_DIR / "generate.py"), "--out", str(tmp_path), *args],
        check=True, capture_output=True,
    )  # fmt: skip
    written = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert written == render_all(VALUES)
