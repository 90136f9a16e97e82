"""The legacy ("v1" / "#87") client-side S3 credential backend - deprecated.

SPEC.md sections 4, 7 (CLI ``--credential-backend s3``) and 9. Kept for compatibility
until the default flips (section 9 steps 12-13); it is also what produced the "existing"
data the migration reads. The client itself:

* gets S3 credentials from a web-identity token: the broker's ``POST /v1/mint-oidc-jwt``
  (J1 session; once the operator has a master on chain, also a fresh assertion by that
  master's passkey over ``/v1/mint-oidc-jwt/challenge``) exchanged at STS
  ``AssumeRoleWithWebIdentity`` (:class:`BrokerOidcCredentials`);
  the token carries both tags, so the bucket policy's ``_v1_wallet_keyed`` statements
  admit the wallet prefix and ``_v2_omni_keyed`` the actor prefix;
* gets the v1 KEK of (master wallet, service) from the signer;
* checks scope itself, on the client (the weakness stage 1 removes): services outside
  ``allowed_services`` are refused before S3 is touched;
* writes ``--envelope-version v1`` as 0x01 at the v1 key ``bots/<wallet>/…`` and
  ``--envelope-version v2`` as 0x02 at the v2 key ``bots/<actor_omni>/…``; reads the key of
  its version.

Every construction logs a deprecation warning. Plaintext stays in memory.
"""

from __future__ import annotations

import hmac
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import trio

from agentkeys.clients.broker import BrokerClient
from agentkeys.clients.errors import ClientError, PeerRefused, PeerUnreachable
from agentkeys.clients.signer import AwsCredentials, SignerClient
from agentkeys.envelope import EnvelopeVersion, open_envelope, parse_header, seal_v1, seal_v2_legacy
from agentkeys.errors import AgentkeysError, EnvelopeError
from agentkeys.omni import normalize_hex32, normalize_service, normalize_wallet
from agentkeys.worker._s3 import ObjectStore
from agentkeys.worker._signer import signer_failures
from agentkeys.worker.errors import CredentialNotFound, StoredEnvelopeInvalid
from agentkeys.worker.layout import service_of_key, v1_key, v1_prefix, v2_key, v2_prefix

__all__ = [
    "DEPRECATION_MESSAGE",
    "Assert",
    "BrokerOidcCredentials",
    "CredentialSource",
    "EnvelopeChoice",
    "LegacyBackendError",
    "LegacyS3Backend",
    "LegacyScopeDenied",
    "SignerStsCredentials",
]

DEPRECATION_MESSAGE = (
    "the s3 credential backend is deprecated: it reads S3 directly with client-side scope "
    "checks; use --credential-backend sidecar (migrate with agentkeys-migrate-s3-prefix)"
)
_log = logging.getLogger("agentkeys.legacy_s3")


class LegacyBackendError(AgentkeysError):
    """Base of the legacy backend's own errors."""

    error: ClassVar[str] = "legacy_backend_error"
    status: ClassVar[int] = 500


class LegacyScopeDenied(LegacyBackendError):
    """The client-side scope check refused the service."""

    error: ClassVar[str] = "legacy_scope_denied"
    status: ClassVar[int] = 403


class LegacyTokenRefused(LegacyBackendError):
    """The broker did not mint a web-identity token (the reason carries its code)."""

    error: ClassVar[str] = "legacy_token_refused"
    status: ClassVar[int] = 502


class EnvelopeChoice(StrEnum):
    """``--envelope-version``: which legacy envelope the backend writes."""

    V1 = "v1"  # 0x01 at the v1 key
    V2 = "v2"  # 0x02 at the v2 key


class CredentialSource(Protocol):
    """Where the backend's S3 credentials come from."""

    async def credentials(self) -> AwsCredentials:
        """Fresh temporary S3 credentials carrying the actor and wallet tags."""
        ...


class WebIdentityExchange(Protocol):
    """STS ``AssumeRoleWithWebIdentity`` (``agentkeys.signer.StsExchanger`` satisfies it)."""

    async def exchange(self, token: str, *, session_name: str) -> AwsCredentials:
        """Temporary credentials for the token's tags."""
        ...


Assert = Callable[[bytes], Awaitable[Mapping[str, Any]]]
"""A passkey: AuthenticationResponseJSON over a raw WebAuthn challenge."""


class BrokerOidcCredentials:
    """The v1 path: broker ``/v1/mint-oidc-jwt`` (J1 session) → STS web-identity exchange.

    Once the operator has a master device on chain the broker also wants a fresh assertion
    by that device's passkey (docs/broker.md, "OIDC issuer"): give ``device_key_hash`` and
    ``assert_`` (the master's passkey); without them only operators with no master yet (v1
    data, before the upgrade) get a token.

    Args:
        broker: the broker's client.
        session_token: the J1 session (sent as ``Authorization: Bearer``; never logged).
        sts: the STS exchanger.
        device_key_hash: the master device whose passkey asserts.
        assert_: that passkey.
    """

    def __init__(
        self,
        broker: BrokerClient,
        session_token: str,
        sts: WebIdentityExchange,
        *,
        device_key_hash: str | None = None,
        assert_: Assert | None = None,
    ) -> None:
        self._broker = broker
        self._session = session_token
        self._sts = sts
        self._device = device_key_hash
        self._assert = assert_

    async def _approval(self) -> dict[str, Any] | None:
        """The assertion body, when a passkey was given and the broker needs one."""
        if self._assert is None or self._device is None:
            return None
        start = await self._broker.oidc_challenge(self._session)
        if not start.required or start.challenge is None:
            return None
        return {
            "challenge_id": start.challenge_id,
            "device_key_hash": self._device,
            "assertion": dict(await self._assert(start.challenge)),
        }

    async def credentials(self) -> AwsCredentials:
        try:
            token = await self._broker.mint_oidc_token(
                self._session, approval=await self._approval()
            )
        except PeerUnreachable as exc:
            raise LegacyTokenRefused(f"broker unreachable ({exc.transport})") from None
        except PeerRefused as exc:
            detail = exc.code or f"HTTP {exc.http_status}"
            raise LegacyTokenRefused(f"broker refused {exc.path} ({detail})") from None
        except ClientError as exc:
            raise LegacyTokenRefused(exc.reason) from None
        return await self._sts.exchange(token, session_name=f"agentkeys-legacy-{int(time.time())}")


class SignerStsCredentials:
    """Per-actor credentials straight from the signer's ``/sts-credentials`` (worker role).

    The same tags as the broker's token; for tools that already hold a worker certificate.
    """

    def __init__(self, signer: SignerClient, actor_omni: str, wallet: str) -> None:
        self._signer = signer
        self._actor = normalize_hex32(actor_omni)
        self._wallet = normalize_wallet(wallet)

    async def credentials(self) -> AwsCredentials:
        with signer_failures():
            return await self._signer.sts_credentials(self._actor, self._wallet)


class LegacyS3Backend:
    """The deprecated direct-to-S3 backend (see the module docstring).

    Args:
        identity_omni: the identity whose signer-held K4 is the master ``wallet``.
        wallet: the master wallet (v1 prefix, v1 AAD and KEK).
        actor_omni: the actor (v2 prefix, 0x02 AAD).
        source: S3 credentials.
        signer: v1 KEKs.
        bucket, endpoint, region: the store.
        envelope_version: what :meth:`store` writes.
        allowed_services: the client-side scope (``None``: the master, every service).
    """

    def __init__(
        self,
        *,
        identity_omni: str,
        wallet: str,
        actor_omni: str,
        source: CredentialSource,
        signer: SignerClient,
        bucket: str,
        endpoint: str | None = None,
        region: str = "us-east-1",
        envelope_version: EnvelopeChoice = EnvelopeChoice.V1,
        allowed_services: frozenset[str] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.identity_omni = normalize_hex32(identity_omni)
        self.wallet = normalize_wallet(wallet)
        self.actor_omni = normalize_hex32(actor_omni)
        self.envelope_version = EnvelopeChoice(envelope_version)
        self._source = source
        self._signer = signer
        self._bucket = bucket
        self._endpoint = endpoint
        self._region = region
        self._allowed = None
        if allowed_services is not None:
            self._allowed = frozenset(map(normalize_service, allowed_services))
        self._store: ObjectStore | None = None
        self._lock = trio.Lock()
        (warn or _warn)(DEPRECATION_MESSAGE)

    async def _objects(self) -> ObjectStore:
        async with self._lock:
            if self._store is None:
                self._store = await ObjectStore.open(
                    endpoint=self._endpoint,
                    region=self._region,
                    bucket=self._bucket,
                    credentials=await self._source.credentials(),
                    limiter=trio.CapacityLimiter(2),
                )
            return self._store

    def _check_scope(self, service: str) -> str:
        name = normalize_service(service)
        if self._allowed is not None and name not in self._allowed:
            raise LegacyScopeDenied(f"{name!r} is not in this client's scope")
        return name

    def key_for(self, service: str) -> str:
        """Where :meth:`store` writes ``service`` for the configured envelope version."""
        if self.envelope_version is EnvelopeChoice.V1:
            return v1_key(self.wallet, service)
        return v2_key(self.actor_omni, service)

    async def store(self, service: str, plaintext: bytes) -> str:
        """Encrypt as 0x01 / 0x02 with the v1 KEK and write; returns the key."""
        name = self._check_scope(service)
        with signer_failures():
            kek = await self._signer.v1_kek(self.identity_omni, self.wallet, name)
        if self.envelope_version is EnvelopeChoice.V1:
            envelope = seal_v1(plaintext, kek=kek, wallet=self.wallet, service=name)
        else:
            envelope = seal_v2_legacy(plaintext, kek=kek, actor_omni=self.actor_omni, service=name)
        key = self.key_for(name)
        store = await self._objects()
        await store.put(key, envelope)
        back = await store.get(key)
        if back is None or not hmac.compare_digest(back, envelope):
            raise StoredEnvelopeInvalid(f"envelope at {key} did not read back identical")
        return key

    async def fetch(self, service: str) -> bytes:
        """Read and open the envelope at this version's key."""
        name = self._check_scope(service)
        key = self.key_for(name)
        data = await (await self._objects()).get(key)
        if data is None:
            raise CredentialNotFound(f"no credential for {name!r} at {key}")
        try:
            header = parse_header(data)
            if header.version is EnvelopeVersion.V2:
                raise StoredEnvelopeInvalid(f"{key} holds 0x04: read it through the worker")
            with signer_failures():
                kek = await self._signer.v1_kek(self.identity_omni, self.wallet, name)
            return open_envelope(
                data, kek=kek, service=name, wallet=self.wallet, actor_omni=self.actor_omni
            )
        except EnvelopeError as exc:
            raise StoredEnvelopeInvalid(f"envelope at {key} does not open ({exc.error})") from None

    async def list(self) -> list[str]:
        """Services stored at this version's prefix (scope-filtered)."""
        prefix = (
            v1_prefix(self.wallet)
            if self.envelope_version is EnvelopeChoice.V1
            else v2_prefix(self.actor_omni)
        )
        keys = await (await self._objects()).list_keys(prefix)
        services = [s for k in keys if (s := service_of_key(prefix, k)) is not None]
        return sorted(s for s in services if self._allowed is None or s in self._allowed)


def _warn(message: str) -> None:
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    _log.warning("%s", message)
