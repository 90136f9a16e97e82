"""S3 access with per-actor STS credentials, boto3 confined to threads (SPEC.md section 7).

boto3 blocks, so every call runs in ``trio.to_thread.run_sync`` under the store's
``CapacityLimiter``. botocore's exceptions are translated at this one boundary
(:func:`_s3_errors`): ``AccessDenied`` (the bucket policy said no) becomes
:class:`StorageDenied`; S3 not reached (endpoint refused, connect or read timeout, the
connection closed before or during the answer) :class:`StorageUnavailable` (503, retry
later); everything else, including any answer S3 did give and a TLS failure,
:class:`StorageFailed` (502). Reasons name the operation, the key and S3's error code or
the botocore exception's class, never a credential.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import trio

from agentkeys.clients.signer import AwsCredentials
from agentkeys.worker.errors import StorageDenied, StorageFailed, StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["MAX_ENVELOPE_BYTES", "MAX_LISTED_KEYS", "ObjectStore"]

MAX_ENVELOPE_BYTES = 64 * 1024
MAX_LISTED_KEYS = 10_000
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId",
                     "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"})  # fmt: skip
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_LOST_CONDITION = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class _Missing(Exception):
    """Internal: the object does not exist (never escapes this module)."""


@contextmanager
def _s3_errors(operation: str, key: str) -> Iterator[None]:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ProxyConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    # S3 did not answer (botocore's SSLError, a certificate S3 did present, is not here)
    unreachable = (
        EndpointConnectionError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ConnectionClosedError,
        ResponseStreamingError,
        ProxyConnectionError,
    )
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))[:64]
        if code in _MISSING:
            raise _Missing from None
        if code in _DENIED:
            raise StorageDenied(f"S3 {operation} {key}: {code}") from None
        raise StorageFailed(f"S3 {operation} {key}: {code}") from None
    except unreachable as exc:
        reason = f"S3 {operation} {key}: unreachable ({type(exc).__name__})"
        raise StorageUnavailable(reason) from None
    except BotoCoreError as exc:
        raise StorageFailed(f"S3 {operation} {key}: {type(exc).__name__}") from None


class ObjectStore:
    """One bucket seen through one set of (per-actor) credentials.

    Build with :meth:`open` (creates the boto3 client in a thread).
    """

    def __init__(self, client: S3Client, bucket: str, limiter: trio.CapacityLimiter) -> None:
        self._client = client
        self.bucket = bucket
        self._limiter = limiter

    @classmethod
    async def open(
        cls,
        *,
        endpoint: str | None,
        region: str,
        bucket: str,
        credentials: AwsCredentials,
        limiter: trio.CapacityLimiter,
    ) -> ObjectStore:
        """A store for ``bucket`` at ``endpoint`` (``None``: AWS) with ``credentials``."""

        def make() -> S3Client:
            import boto3
            from botocore.config import Config

            client: S3Client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=15,
                ),
            )
            return client

        client = await trio.to_thread.run_sync(make, limiter=limiter)
        return cls(client, bucket, limiter)

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or ``None`` when it does not exist.

        Raises:
            StorageDenied, StorageFailed: including an object above MAX_ENVELOPE_BYTES;
                StorageUnavailable (a StorageFailed) when S3 was not reached.
        """

        def call() -> bytes | None:
            try:
                with _s3_errors("GetObject", key):
                    answer = self._client.get_object(Bucket=self.bucket, Key=key)
                    if answer.get("ContentLength", 0) > MAX_ENVELOPE_BYTES:
                        answer["Body"].close()
                        raise StorageFailed(f"S3 GetObject {key}: object too large")
                    data: bytes = answer["Body"].read(MAX_ENVELOPE_BYTES + 1)
            except _Missing:
                return None
            if len(data) > MAX_ENVELOPE_BYTES:
                raise StorageFailed(f"S3 GetObject {key}: object too large")
            return data

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` (one atomic PUT: readers see old or new bytes).

        Raises:
            StorageDenied, StorageFailed (StorageUnavailable: S3 not reached).
        """

        def call() -> None:
            try:
                with _s3_errors("PutObject", key):
                    self._client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=data,
                        ContentType="application/octet-stream",
                    )
            except _Missing:
                raise StorageFailed(f"S3 PutObject {key}: bucket missing") from None

        await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if no object exists there (``If-None-Match: *``).

        Returns:
            True if this call created it; False if it existed (S3 412 PreconditionFailed,
            or 409 ConditionalRequestConflict: another conditional write of the same key
            is in flight, which also means this call did not win).

        Raises:
            StorageDenied, StorageFailed (StorageUnavailable: S3 not reached).
        """
        from botocore.exceptions import ClientError

        def call() -> bool:
            try:
                with _s3_errors("PutObject", key):
                    try:
                        self._client.put_object(
                            Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*",
                            ContentType="application/octet-stream",
                        )  # fmt: skip
                    except ClientError as exc:
                        code = str(exc.response.get("Error", {}).get("Code", ""))
                        if code in _LOST_CONDITION:
                            return False
                        raise
            except _Missing:
                raise StorageFailed(f"S3 PutObject {key}: bucket missing") from None
            return True

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def delete(self, key: str) -> None:
        """Delete ``key`` (absent is fine).

        Raises:
            StorageDenied, StorageFailed (StorageUnavailable: S3 not reached).
        """

        def call() -> None:
            try:
                with _s3_errors("DeleteObject", key):
                    self._client.delete_object(Bucket=self.bucket, Key=key)
            except _Missing:
                return

        await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, all pages, at most :data:`MAX_LISTED_KEYS`.

        Raises:
            StorageDenied, StorageFailed: including more keys than the bound;
                StorageUnavailable (a StorageFailed) when S3 was not reached.
        """

        def call() -> list[str]:
            keys: list[str] = []
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            while True:
                try:
                    with _s3_errors("ListObjectsV2", prefix):
                        page = self._client.list_objects_v2(**kwargs)
                except _Missing:
                    raise StorageFailed(f"S3 ListObjectsV2 {prefix}: bucket missing") from None
                keys.extend(str(item["Key"]) for item in page.get("Contents", []))
                if len(keys) > MAX_LISTED_KEYS:
                    raise StorageFailed(f"S3 ListObjectsV2 {prefix}: more than {MAX_LISTED_KEYS}")
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return keys
                kwargs["ContinuationToken"] = token

        return await trio.to_thread.run_sync(call, limiter=self._limiter)
