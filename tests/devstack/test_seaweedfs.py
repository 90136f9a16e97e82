"""SeaweedFS launcher: PUT/GET with the admin identity, refusals, restarts, bad IAM."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from botocore.exceptions import ClientError

from agentkeys.devstack import (
    ComponentStartFailed,
    IamConfig,
    IamPolicy,
    IamRole,
    OidcProvider,
    SeaweedFS,
    StsSettings,
    s3_client,
    start_seaweedfs,
)
from tests.stack_fixtures import TEST_BUCKET

_LIMITER = trio.CapacityLimiter(2)


def _put_get(store: SeaweedFS, key: str, body: bytes) -> bytes:
    client = store.admin_client()
    client.put_object(Bucket=TEST_BUCKET, Key=key, Body=body)
    return client.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read()


def _error_code(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    raise AssertionError("the call must be refused")


async def test_admin_put_get(seaweedfs: SeaweedFS) -> None:
    assert seaweedfs.s3_endpoint == f"http://127.0.0.1:{seaweedfs.ports.s3}"
    assert seaweedfs.bucket == TEST_BUCKET
    body = b"sealed envelope bytes"
    got = await trio.to_thread.run_sync(
        _put_get, seaweedfs, "bots/" + "ab" * 32 + "/credentials/openai.enc", body,
        limiter=_LIMITER,
    )  # fmt: skip
    assert got == body


async def test_wrong_secret_and_anonymous_are_refused(seaweedfs: SeaweedFS) -> None:
    await trio.to_thread.run_sync(_put_get, seaweedfs, "k", b"v", limiter=_LIMITER)
    forged = s3_client(
        seaweedfs.s3_endpoint, access_key=seaweedfs.admin.access_key, secret_key="not-the-secret"
    )
    code = await trio.to_thread.run_sync(
        _error_code, lambda: forged.get_object(Bucket=TEST_BUCKET, Key="k"), limiter=_LIMITER
    )
    assert code == "SignatureDoesNotMatch"
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{seaweedfs.s3_endpoint}/{TEST_BUCKET}/k")
    assert response.status_code == 403


async def test_restart_with_the_same_run_dir_keeps_objects(tmp_path: Path) -> None:
    run = tmp_path / "weed"
    async with start_seaweedfs(bucket=TEST_BUCKET, run_dir=run) as first:
        await trio.to_thread.run_sync(_put_get, first, "kept", b"still here", limiter=_LIMITER)
    async with start_seaweedfs(bucket=TEST_BUCKET, run_dir=run) as second:
        assert second.admin != first.admin

        def get() -> bytes:
            obj = second.admin_client().get_object(Bucket=TEST_BUCKET, Key="kept")
            return obj["Body"].read()

        assert await trio.to_thread.run_sync(get, limiter=_LIMITER) == b"still here"


async def test_iam_entries_seaweedfs_rejects_fail_the_start(tmp_path: Path) -> None:
    # SeaweedFS only logs a warning for a provider it cannot build (here: an
    # issuer that is not an http(s) URL); the launcher must refuse to go on.
    config = IamConfig(
        sts=StsSettings.generate(),
        providers=(OidcProvider("broken", "ftp://issuer", "aud", "ftp://issuer/jwks"),),
        roles=(IamRole("r", "broken", ("p",)),),
        policies=(IamPolicy("p", {"Version": "2012-10-17", "Statement": []}),),
    )
    with pytest.raises(ComponentStartFailed, match=r"(?i)provider"):
        async with start_seaweedfs(iam=config, run_dir=tmp_path):
            pytest.fail("must not start")
