"""STS through SeaweedFS: a JWT from an OIDC issuer becomes per-actor S3 credentials.

The issuer is tests/devstack/oidc_issuer.py (the real one is the broker). The
session's ``agentkeys_actor_omni`` principal tag confines it to
``bots/<actor_omni>/`` (SPEC section 4) through the dev IAM document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import trio
from botocore.exceptions import ClientError

from agentkeys.devstack import (
    ACTOR_TAG,
    DEV_CLIENT_ID,
    DEV_ROLE_NAME,
    WALLET_TAG,
    SeaweedFS,
    dev_iam_config,
    s3_client,
    start_seaweedfs,
)
from tests.devstack.oidc_issuer import SigningKey, TestIssuer, run_test_issuer
from tests.stack_fixtures import TEST_BUCKET

ACTOR_A = "a1" * 32
ACTOR_B = "b2" * 32
WALLET = "0x" + "cd" * 20
_LIMITER = trio.CapacityLimiter(2)


@dataclass(frozen=True)
class StsStack:
    issuer: TestIssuer
    store: SeaweedFS

    @property
    def role_arn(self) -> str:
        assert self.store.iam is not None
        return self.store.iam.role(DEV_ROLE_NAME).arn


@pytest.fixture
async def sts_stack(tmp_path: Path) -> AsyncIterator[StsStack]:
    async with run_test_issuer() as issuer:
        iam = dev_iam_config(bucket=TEST_BUCKET, issuer=issuer.url, jwks_uri=issuer.jwks_uri)
        async with start_seaweedfs(iam=iam, bucket=TEST_BUCKET, run_dir=tmp_path) as store:
            yield StsStack(issuer, store)


def _assume(stack: StsStack, token: str) -> dict[str, Any]:
    sts = boto3.client(
        "sts",
        endpoint_url=stack.store.s3_endpoint,
        region_name=stack.store.region,
        aws_access_key_id="unused",
        aws_secret_access_key="unused",
    )
    response = sts.assume_role_with_web_identity(
        RoleArn=stack.role_arn, RoleSessionName="devstack-test", WebIdentityToken=token
    )
    credentials: dict[str, Any] = dict(response["Credentials"])
    return credentials


def _session_client(stack: StsStack, credentials: dict[str, Any]) -> Any:
    return s3_client(
        stack.store.s3_endpoint,
        access_key=credentials["AccessKeyId"],
        secret_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
    )


def _refused(call: Callable[[], object]) -> str:
    try:
        call()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "allowed"


def _token(stack: StsStack, actor: str | None, **kwargs: Any) -> str:
    tags = {ACTOR_TAG: actor, WALLET_TAG: WALLET} if actor is not None else None
    return stack.issuer.mint(audience=DEV_CLIENT_ID, subject=f"actor:{actor}", tags=tags, **kwargs)


async def _in_thread(function: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(function, limiter=_LIMITER)


async def test_session_is_confined_to_its_actor_prefix(sts_stack: StsStack) -> None:
    credentials = await _in_thread(lambda: _assume(sts_stack, _token(sts_stack, ACTOR_A)))
    s3 = _session_client(sts_stack, credentials)
    own = f"bots/{ACTOR_A}/credentials/openai.enc"

    def own_round_trip() -> bytes:
        s3.put_object(Bucket=TEST_BUCKET, Key=own, Body=b"mine")
        return bytes(s3.get_object(Bucket=TEST_BUCKET, Key=own)["Body"].read())

    assert await _in_thread(own_round_trip) == b"mine"
    admin = sts_stack.store.admin_client()
    other = f"bots/{ACTOR_B}/x"
    await _in_thread(lambda: admin.put_object(Bucket=TEST_BUCKET, Key=other, Body=b"b"))

    def put(key: str) -> Callable[[], object]:
        return lambda: s3.put_object(Bucket=TEST_BUCKET, Key=key, Body=b"x")

    def get(key: str) -> Callable[[], object]:
        return lambda: s3.get_object(Bucket=TEST_BUCKET, Key=key)

    def listing(prefix: str) -> Callable[[], object]:
        return lambda: s3.list_objects_v2(Bucket=TEST_BUCKET, Prefix=prefix)

    assert await _in_thread(lambda: _refused(put(f"bots/{ACTOR_B}/x"))) == "AccessDenied"
    assert await _in_thread(lambda: _refused(get(f"bots/{ACTOR_B}/x"))) == "AccessDenied"
    assert await _in_thread(lambda: _refused(put(f"bots/{ACTOR_A}-x/y"))) == "AccessDenied"
    assert await _in_thread(lambda: _refused(put(f"bots/{ACTOR_A}"))) == "AccessDenied"
    assert await _in_thread(lambda: _refused(listing(f"bots/{ACTOR_A}/"))) == "allowed"
    assert await _in_thread(lambda: _refused(listing(f"bots/{ACTOR_B}/"))) == "AccessDenied"
    assert await _in_thread(lambda: _refused(listing("bots/"))) == "AccessDenied"


async def test_session_without_actor_tag_cannot_use_the_literal_variable(
    sts_stack: StsStack,
) -> None:
    # A missing tag leaves "${aws:PrincipalTag/...}" unsubstituted in the policy;
    # the explicit deny on keys containing "${" must stop that key from matching.
    credentials = await _in_thread(lambda: _assume(sts_stack, _token(sts_stack, None)))
    s3 = _session_client(sts_stack, credentials)
    literal = "bots/${aws:PrincipalTag/" + ACTOR_TAG + "}/x"
    code = await _in_thread(
        lambda: _refused(lambda: s3.put_object(Bucket=TEST_BUCKET, Key=literal, Body=b"x"))
    )
    assert code == "AccessDenied"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"audience": "someone-else"}, id="wrong-audience"),
        pytest.param({"lifetime": -60}, id="expired"),
    ],
)
async def test_bad_tokens_are_refused(sts_stack: StsStack, change: dict[str, Any]) -> None:
    claims: dict[str, Any] = {
        "audience": DEV_CLIENT_ID,
        "subject": "actor:x",
        "tags": {ACTOR_TAG: ACTOR_A},
    }
    claims.update(change)
    token = sts_stack.issuer.mint(**claims)
    outcome = await _in_thread(lambda: _refused(lambda: _assume(sts_stack, token)))
    assert outcome != "allowed"


async def test_token_signed_by_an_unknown_key_is_refused(sts_stack: StsStack) -> None:
    stranger = TestIssuer(url=sts_stack.issuer.url, key=SigningKey.generate("test-key-1"))
    token = stranger.mint(audience=DEV_CLIENT_ID, subject="actor:x", tags={ACTOR_TAG: ACTOR_A})
    outcome = await _in_thread(lambda: _refused(lambda: _assume(sts_stack, token)))
    assert outcome != "allowed"
