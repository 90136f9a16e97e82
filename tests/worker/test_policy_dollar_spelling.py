"""The deny for keys containing ``${`` in the AWS spelling (``${$}`` is AWS'
literal ``$``) and the SeaweedFS spelling the dev IAM generator emits; the text of both and
what SeaweedFS 4.48 does with each (measured on a real ``weed mini``)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from agentkeys.clients.signer import SignerClient
from agentkeys.devstack import IamPolicy, s3_client, start_seaweedfs
from agentkeys.devstack.deployed_iam import deployed_iam_config, seaweed_identity_policy
from agentkeys.devstack.iam import DEV_ACTOR_POLICY_NAME
from agentkeys.worker.errors import StorageDenied
from agentkeys.worker.iam import (
    DOCUMENTS,
    POLICY_DIR,
    render_policy,
)
from agentkeys.worker.layout import v2_key
from tests.service.conftest import Pki
from tests.services import Chain, serve_issuer, start_sts_signer
from tests.stack_fixtures import TEST_BUCKET
from tests.worker.conftest import Stack, add_agent

VALUES = {
    "bucket": "agentkeys-prod",
    "account_id": "123456789012",
    "role_name": "AgentkeysActor",
    "oidc_host": "broker.example.com",
    "oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/broker.example.com",
    "audience": "agentkeys-s3",
    "worker_function": "agentkeys-worker",
}
AWS_DENY = "arn:aws:s3:::agentkeys-prod/*${$}{*"
# In an AWS document every "${" opens a variable we mean, or is the "${$}" escape.
_AWS_DOLLAR_USE = re.compile(r"\$\{(\$\}|aws:PrincipalTag/agentkeys_(actor_omni|user_wallet)\})")


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def deny_resources(document: dict[str, Any]) -> list[str]:
    (deny,) = [st for st in document["Statement"] if st["Sid"] == "DenyUnresolvedVariable"]
    assert (deny["Effect"], deny["Action"]) == ("Deny", ["s3:*"])
    resources: list[str] = deny["Resource"]
    return resources


def test_aws_documents_spell_the_literal_dollar_the_aws_way() -> None:
    for name in ("bucket-policy", "actor-role-policy"):
        assert deny_resources(render_policy(name, VALUES)) == [AWS_DENY], name
    for name in DOCUMENTS:
        for text in strings(render_policy(name, VALUES)):
            # no "${" that AWS would read as an unknown or malformed variable
            assert text.count("${") == len(_AWS_DOLLAR_USE.findall(text)), (name, text)
    raw = (POLICY_DIR / "bucket-policy.json").read_text()
    assert "*${*" not in raw  # the malformed spelling is gone from the source


def test_the_dev_iam_uses_the_seaweedfs_spelling_of_the_same_deny() -> None:
    document = deployed_iam_config(bucket="agentkeys-test", issuer="http://127.0.0.1:1").to_json()
    (policy,) = document["policies"]
    assert deny_resources(policy["document"]) == ["arn:aws:s3:::agentkeys-test/*${*"]
    assert "${$}" not in str(policy["document"])
    # Apart from that spelling the dev policy is the deployed document.
    aws = render_policy("actor-role-policy", {"bucket": "agentkeys-test"})
    assert policy["document"] == seaweed_identity_policy(aws)
    assert [st for st in policy["document"]["Statement"] if st["Sid"] != "DenyUnresolvedVariable"] \
        == [st for st in aws["Statement"] if st["Sid"] != "DenyUnresolvedVariable"]  # fmt: skip


def test_trust_policy_admits_actor_only_sessions_and_wallet_sessions_only() -> None:
    statements = {s["Sid"]: s for s in render_policy("role-trust-policy", VALUES)["Statement"]}
    both = statements["AgentkeysWebIdentityWithBothTags"]["Condition"]
    actor_only = statements["AgentkeysWebIdentityActorOnly"]["Condition"]
    for condition in (both, actor_only):
        assert condition["StringEquals"] == {"broker.example.com:aud": "agentkeys-s3"}
        assert condition["Null"]["aws:RequestTag/agentkeys_actor_omni"] == "false"
        assert condition["StringLike"]["aws:RequestTag/agentkeys_actor_omni"] == "?*"
    assert both["Null"]["aws:RequestTag/agentkeys_user_wallet"] == "false"
    assert both["StringLike"]["aws:RequestTag/agentkeys_user_wallet"] == "0x?*"
    # an empty wallet tag matches neither statement; an absent one only the actor-only one
    assert actor_only["Null"]["aws:RequestTag/agentkeys_user_wallet"] == "true"


async def test_seaweedfs_denies_keys_with_the_variable_opener(stack: Stack) -> None:
    s = stack
    op = s.operator
    agent = await add_agent(s.chain, op, "bot", ["openai"])
    own_dollar = f"bots/{op.omni}/credentials/x${{y.enc"
    unresolved = "bots/${aws:PrincipalTag/agentkeys_user_wallet}/credentials/openai.enc"
    for key in (own_dollar, unresolved):
        await s.admin_put(key, b"planted")
    master_store = await s.core._object_store(op.omni, op.wallet_address)
    with pytest.raises(StorageDenied, match="AccessDenied"):
        await master_store.get(own_dollar)  # inside its own prefix, but contains "${"
    with pytest.raises(StorageDenied):
        await master_store.put(own_dollar, b"x")
    agent_store = await s.core._object_store(agent.actor_omni, None)
    with pytest.raises(StorageDenied):
        await agent_store.get(unresolved)
    assert await master_store.get(v2_key(op.omni, "nothing")) is None  # the prefix works


async def test_seaweedfs_does_not_know_the_aws_escape(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path
) -> None:
    """Why the generator adapts the spelling: SeaweedFS 4.48 reads ``${$}`` literally.

    If this test starts failing after a SeaweedFS upgrade, the adaptation in
    agentkeys.devstack.deployed_iam.seaweed_identity_policy may be dropped.
    """
    issuer = await serve_issuer(nursery)
    generated = deployed_iam_config(bucket=TEST_BUCKET, issuer=issuer.url)
    aws_spelling = render_policy("actor-role-policy", {"bucket": TEST_BUCKET})
    iam = dataclasses.replace(generated, policies=(IamPolicy(DEV_ACTOR_POLICY_NAME, aws_spelling),))
    actor = "ab" * 32
    dollar_key = f"bots/{actor}/credentials/x${{y.enc"
    async with start_seaweedfs(iam=iam, bucket=TEST_BUCKET, run_dir=tmp_path / "w") as store:
        signer = await start_sts_signer(nursery, pki, chain, tmp_path, store, issuer, iam)
        async with signer.client(pki, "worker") as http:
            creds = await SignerClient(http).sts_credentials(actor, None)

        def read_back() -> bytes:
            store.admin_client().put_object(Bucket=TEST_BUCKET, Key=dollar_key, Body=b"p")
            client = s3_client(
                store.s3_endpoint, access_key=creds.access_key_id,
                secret_key=creds.secret_access_key, session_token=creds.session_token,
            )  # fmt: skip
            body: bytes = client.get_object(Bucket=TEST_BUCKET, Key=dollar_key)["Body"].read()
            return body

        assert await trio.to_thread.run_sync(read_back) == b"p"  # the AWS spelling misses it
        signer.service.shutdown()
