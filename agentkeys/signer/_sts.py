"""STS AssumeRoleWithWebIdentity through boto3 in a worker thread (SPEC.md section 7).

boto3 is blocking: every call runs in ``trio.to_thread.run_sync`` under a
bounded ``CapacityLimiter``. The request is unsigned (web-identity exchange),
retries are off (the caller decides), and botocore's exceptions are
translated at this boundary into :class:`StsExchangeFailed` carrying only the
error code (never the token).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import trio

from agentkeys.clients.signer import AwsCredentials
from agentkeys.signer.errors import StsExchangeFailed

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient

__all__ = ["StsExchanger"]


@contextmanager
def _map_botocore_errors() -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "unknown")
        raise StsExchangeFailed(f"STS refused the web identity token ({code})") from None
    except BotoCoreError as exc:
        raise StsExchangeFailed(f"STS unreachable ({type(exc).__name__})") from None


class StsExchanger:
    """Exchanges web-identity tokens at one STS endpoint for one role.

    Args:
        endpoint: STS endpoint URL (SeaweedFS: its S3 endpoint).
        role_arn: the role to assume.
        region: signing region name.
        duration_seconds: credential lifetime asked for.
        limiter: bounds concurrent boto3 calls.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        role_arn: str,
        region: str,
        duration_seconds: int,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._role_arn = role_arn
        self._region = region
        self._duration = duration_seconds
        self._limiter = limiter or trio.CapacityLimiter(4)
        self._client: STSClient | None = None
        self._lock = trio.Lock()

    def _make_client(self) -> STSClient:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        client: STSClient = boto3.session.Session().client(
            "sts",
            endpoint_url=self._endpoint,
            region_name=self._region,
            config=Config(
                signature_version=UNSIGNED,
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=5,
                read_timeout=15,
            ),
        )
        return client

    async def _sts(self) -> STSClient:
        async with self._lock:
            if self._client is None:
                self._client = await trio.to_thread.run_sync(
                    self._make_client, limiter=self._limiter
                )
            return self._client

    async def exchange(self, token: str, *, session_name: str) -> AwsCredentials:
        """AssumeRoleWithWebIdentity with ``token``.

        Raises:
            StsExchangeFailed: refused, unreachable, or an answer without credentials.
        """
        client = await self._sts()

        def call() -> Any:
            with _map_botocore_errors():
                return client.assume_role_with_web_identity(
                    RoleArn=self._role_arn,
                    RoleSessionName=session_name,
                    WebIdentityToken=token,
                    DurationSeconds=self._duration,
                )

        answer = await trio.to_thread.run_sync(call, limiter=self._limiter)
        try:
            creds = answer["Credentials"]
            return AwsCredentials(
                access_key_id=creds["AccessKeyId"],
                secret_access_key=creds["SecretAccessKey"],
                session_token=creds["SessionToken"],
                expiration=creds["Expiration"],
            )
        except (KeyError, TypeError):
            raise StsExchangeFailed("STS answered without credentials") from None
