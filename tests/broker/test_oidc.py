"""The broker as OIDC issuer: tokens exchanged at SeaweedFS STS reach only their own prefix.

Real SeaweedFS (``weed mini``) with an OIDC provider pointing at the running broker's
discovery URL and JWKS, one role under the v2 (actor_omni-keyed) policy and one under the v1
(wallet-keyed) policy of SPEC section 9 step 4.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import trio
from botocore.exceptions import ClientError
from eth_account import Account

from agentkeys.b64url import b64url_decode
from agentkeys.broker import J1
from agentkeys.devstack import (
    ACTOR_TAG,
    WALLET_TAG,
    IamConfig,
    IamPolicy,
    IamRole,
    OidcProvider,
    SeaweedFS,
    StsSettings,
    actor_policy_document,
    pick_port,
    s3_client,
    start_seaweedfs,
)
from agentkeys.jwks import JsonWebKeySet
from agentkeys.omni import actor_omni_for_wallet
from tests.broker._flow import bearer
from tests.broker.conftest import Chain, RunningBroker, StartBroker

BUCKET = "agentkeys-test"
_LIMITER = trio.CapacityLimiter(2)
V2_ROLE = "AgentkeysActorV2"
V1_ROLE = "AgentkeysWalletV1"


def wallet_policy_document(bucket: str) -> dict[str, Any]:
    """The v1 (wallet-keyed) policy: objects under ``bots/<wallet>/`` only."""
    wallet = "${aws:PrincipalTag/" + WALLET_TAG + "}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WalletObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/bots/{wallet}/*"],
            },
            {
                "Sid": "DenyUnresolvedVariable",
                "Effect": "Deny",
                "Action": ["s3:*"],
                "Resource": [f"arn:aws:s3:::{bucket}/*${{*"],
            },
        ],
    }


@dataclass
class Stack:
    broker: RunningBroker
    store: SeaweedFS


@pytest.fixture
async def stack(start_broker: StartBroker, chain: Chain, tmp_path: Path) -> AsyncIterator[Stack]:
    # a chain: minting reads whether the operator has a master (then a K11 is required)
    broker: RunningBroker = await start_broker(chain=chain)
    provider = OidcProvider(
        name="agentkeys-broker",
        issuer=broker.url,
        client_id="agentkeys-s3",
        jwks_uri=broker.url + "/.well-known/jwks.json",
        allowed_principal_tag_keys=(ACTOR_TAG, WALLET_TAG),
    )
    iam = IamConfig(
        sts=StsSettings.generate(),
        providers=(provider,),
        roles=(
            IamRole(V2_ROLE, provider.name, ("v2_omni_keyed",)),
            IamRole(V1_ROLE, provider.name, ("v1_wallet_keyed",)),
        ),
        policies=(
            IamPolicy("v2_omni_keyed", actor_policy_document(BUCKET)),
            IamPolicy("v1_wallet_keyed", wallet_policy_document(BUCKET)),
        ),
    )
    async with start_seaweedfs(iam=iam, bucket=BUCKET, run_dir=tmp_path / "weed") as store:
        yield Stack(broker, store)


async def _thread(function: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(function, limiter=_LIMITER)


def _assume(store: SeaweedFS, role: str, token: str) -> Any:
    assert store.iam is not None
    sts = boto3.client(
        "sts",
        endpoint_url=store.s3_endpoint,
        region_name=store.region,
        aws_access_key_id="unused",
        aws_secret_access_key="unused",
    )
    credentials = sts.assume_role_with_web_identity(
        RoleArn=store.iam.role(role).arn, RoleSessionName="broker-test", WebIdentityToken=token
    )["Credentials"]
    return s3_client(
        store.s3_endpoint,
        access_key=credentials["AccessKeyId"],
        secret_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
    )


def _put(s3: Any, key: str) -> str:
    try:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "allowed"


async def _j1(broker: RunningBroker, subject: str, wallet: str | None) -> str:
    extra = {"wallet": wallet} if wallet is not None else {}
    token, _ = await broker.service.sessions.issue(
        stage=J1, subject=subject, now=int(time.time()), lifetime=600, extra=extra
    )
    return token


async def _oidc_token(broker: RunningBroker, j1: str) -> Any:
    return await broker.http.post("/v1/mint-oidc-jwt", headers=bearer(j1))


def _claims(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


async def test_discovery_and_jwks(stack: Stack) -> None:
    broker = stack.broker
    config = (await broker.http.get("/.well-known/openid-configuration")).json()
    assert config["issuer"] == broker.url
    assert config["jwks_uri"] == broker.url + "/.well-known/jwks.json"
    jwks = await broker.http.get("/.well-known/jwks.json")
    keys = JsonWebKeySet.from_json(jwks.content)
    assert broker.service.keys.oidc.active_kid in keys.by_kid
    caps = JsonWebKeySet.from_json((await broker.http.get("/v1/cap/jwks.json")).content)
    assert set(caps.by_kid).isdisjoint(keys.by_kid)  # K1 and K2 are separate keys


async def test_token_reaches_only_its_own_actor_and_wallet_prefix(stack: Stack) -> None:
    wallet = Account.create().address.lower()
    actor = actor_omni_for_wallet(wallet)
    response = await _oidc_token(stack.broker, await _j1(stack.broker, actor, wallet))
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    claims = _claims(token)
    assert claims["iss"] == stack.broker.url
    assert claims[ACTOR_TAG] == actor
    assert claims[WALLET_TAG] == wallet
    nested = claims["https://aws.amazon.com/tags"]
    assert nested["principal_tags"] == {ACTOR_TAG: [actor], WALLET_TAG: [wallet]}
    assert sorted(nested["transitive_tag_keys"]) == sorted([ACTOR_TAG, WALLET_TAG])

    other_actor = actor_omni_for_wallet(Account.create().address)
    other_wallet = Account.create().address.lower()
    v2 = await _thread(lambda: _assume(stack.store, V2_ROLE, token))
    assert await _thread(lambda: _put(v2, f"bots/{actor}/credentials/openai.enc")) == "allowed"
    assert await _thread(lambda: _put(v2, f"bots/{other_actor}/credentials/x.enc")) == (
        "AccessDenied"
    )
    assert await _thread(lambda: _put(v2, f"bots/{wallet}/credentials/x.enc")) == "AccessDenied"

    v1 = await _thread(lambda: _assume(stack.store, V1_ROLE, token))
    assert await _thread(lambda: _put(v1, f"bots/{wallet}/credentials/openai.enc")) == "allowed"
    assert await _thread(lambda: _put(v1, f"bots/{other_wallet}/credentials/x.enc")) == (
        "AccessDenied"
    )
    assert await _thread(lambda: _put(v1, f"bots/{actor}/credentials/x.enc")) == "AccessDenied"


@pytest.mark.parametrize(
    ("subject", "wallet"),
    [
        pytest.param("", "0x" + "ab" * 20, id="empty-actor"),
        pytest.param("AB" * 32, "0x" + "ab" * 20, id="uppercase-actor"),
        pytest.param("*", "0x" + "ab" * 20, id="wildcard-actor"),
        pytest.param("ab" * 32, None, id="no-wallet"),
        pytest.param("ab" * 32, "0x" + "zz" * 20, id="non-hex-wallet"),
        pytest.param("ab" * 32, "${aws:username}", id="variable-wallet"),
    ],
)
async def test_refuses_empty_or_non_hex_tags(
    start_broker: StartBroker, subject: str, wallet: str | None
) -> None:
    broker: RunningBroker = await start_broker(
        chain=None, rpc_url=f"http://127.0.0.1:{pick_port()}"
    )
    response = await _oidc_token(broker, await _j1(broker, subject, wallet))
    assert response.status_code == 400
    assert response.json()["error"] == "oidc_refused"


async def test_oidc_minting_needs_a_j1(start_broker: StartBroker) -> None:
    broker: RunningBroker = await start_broker(
        chain=None, rpc_url=f"http://127.0.0.1:{pick_port()}"
    )
    response = await broker.http.post("/v1/mint-oidc-jwt")
    assert response.json()["error"] == "session_missing"
