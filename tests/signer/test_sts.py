"""/sts-credentials end to end: signer token → SeaweedFS STS → per-actor S3 credentials.

The OIDC issuer documents (discovery + JWKS) are served by a real HTTP server
built on agentkeys.service; its JWKS is what the signer publishes at
/oidc/jwks, fetched over mTLS with the broker certificate, as the broker (the
deployment's issuer) will aggregate it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError

from agentkeys.devstack import (
    dev_iam_config,
    s3_client,
    start_seaweedfs,
)
from agentkeys.signer import check_tag_value
from agentkeys.signer.errors import UnsafeTagValue
from tests.service.conftest import Pki
from tests.services import serve_issuer, start_sts_signer
from tests.signer.conftest import Chain, RunningSigner
from tests.stack_fixtures import TEST_BUCKET

ACTOR_A = "a1" * 32
ACTOR_B = "b2" * 32
WALLET_A = "0x" + "cd" * 20
_LIMITER = trio.CapacityLimiter(2)


@dataclass
class StsStack:
    signer: RunningSigner
    s3_endpoint: str


@pytest.fixture
async def sts_stack(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path
) -> AsyncIterator[StsStack]:
    issuer = await serve_issuer(nursery)
    iam = dev_iam_config(bucket=TEST_BUCKET, issuer=issuer.url)
    async with start_seaweedfs(iam=iam, bucket=TEST_BUCKET, run_dir=tmp_path / "weed") as store:
        signer = await start_sts_signer(nursery, pki, chain, tmp_path, store, issuer, iam)
        yield StsStack(signer=signer, s3_endpoint=store.s3_endpoint)


async def _credentials(stack: StsStack, pki: Pki, body: dict[str, object]) -> Any:
    async with stack.signer.client(pki, "worker") as worker:
        return await worker.post("/sts-credentials", json=body)


def _s3(stack: StsStack, creds: dict[str, str]) -> Any:
    return s3_client(
        stack.s3_endpoint,
        access_key=creds["access_key_id"],
        secret_key=creds["secret_access_key"],
        session_token=creds["session_token"],
    )


async def _put(client: Any, key: str) -> str:
    def put() -> str:
        try:
            client.put_object(Bucket=TEST_BUCKET, Key=key, Body=b"envelope")
            got = client.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read()
            return "ok" if got == b"envelope" else "mismatch"
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])

    return await trio.to_thread.run_sync(put, limiter=_LIMITER)


async def test_actor_credentials_are_confined_to_the_actor_prefix(
    sts_stack: StsStack, pki: Pki
) -> None:
    r = await _credentials(sts_stack, pki, {"actor_omni": ACTOR_A, "wallet": WALLET_A})
    assert r.status_code == 200, r.text
    assert r.json()["actor_omni"] == ACTOR_A
    client = _s3(sts_stack, r.json()["credentials"])
    assert await _put(client, f"bots/{ACTOR_A}/credentials/openai.enc") == "ok"
    assert await _put(client, f"bots/{ACTOR_B}/credentials/openai.enc") == "AccessDenied"
    assert await _put(client, f"bots/{ACTOR_A}-x/credentials/openai.enc") == "AccessDenied"
    row = sts_stack.signer.audit.events[-1]
    assert row.route == "sts_credentials"
    assert row.fields == {"actor": ACTOR_A}
    assert r.json()["credentials"]["secret_access_key"] not in json.dumps(row.to_json())


async def test_wildcard_actor_is_never_minted(sts_stack: StsStack, pki: Pki) -> None:
    bad = ["*", "a1" * 31 + "*", "", "${aws:username}", "a1" * 31 + "?", "bots/" + "a1" * 30]
    for actor in bad:
        r = await _credentials(sts_stack, pki, {"actor_omni": actor})
        assert r.status_code == 400, actor
        assert r.json()["error"] == "invalid_identifier", actor
    r = await _credentials(sts_stack, pki, {"actor_omni": ACTOR_A, "wallet": "0x*"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_identifier"


async def test_broker_cannot_get_s3_credentials(sts_stack: StsStack, pki: Pki) -> None:
    async with sts_stack.signer.client(pki, "broker") as broker:
        r = await broker.post("/sts-credentials", json={"actor_omni": ACTOR_A})
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        ("agentkeys_actor_omni", "*"),
        ("agentkeys_actor_omni", ""),
        ("agentkeys_actor_omni", "A1" * 32),
        ("agentkeys_actor_omni", "0x" + "a1" * 32),
        ("agentkeys_user_wallet", "0x" + "CD" * 20),
        ("agentkeys_user_wallet", "cd" * 20),
        ("agentkeys_user_wallet", None),
        ("other_tag", "a1" * 32),
    ],
)
def test_tag_values_must_be_canonical(tag: str, value: object) -> None:
    with pytest.raises(UnsafeTagValue):
        check_tag_value(tag, value)


def test_canonical_tag_values_pass() -> None:
    assert check_tag_value("agentkeys_actor_omni", ACTOR_A) == ACTOR_A
    assert check_tag_value("agentkeys_user_wallet", WALLET_A) == WALLET_A
