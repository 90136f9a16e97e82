"""The worker core: one request in, one JSON answer out (SPEC.md sections 5, 7 and 9).

Both front ends (the Hypercorn microservice and the Lambda handler) call
:meth:`WorkerCore.execute` with the operation, the request headers (lowercase names)
and the raw body. Per request, in order:

1. ``Authorization: Cap <token>`` and ``Agentkeys-Pop: <ts>.<nonce>.<sig>`` are present;
2. the cap verifies under the K1 key set: signature, audience, operation, validity;
3. the cap's device is registered (its K10 key is read from the chain), and the K10 proof
   verifies over sha256(canonical cap) ‖ op ‖ sha256(body) ‖ timestamp and is fresh (the
   nonce is not spent yet);
4. the binding, scope, epoch and master-wallet rules of ``_checks`` hold, read from the
   chain now (independently of the broker); only then is the proof's nonce consumed, in
   one synchronous step (a revoked or unbound device never spends registry space; a
   replay is still refused; each device holds a bounded share of the registry);
5. the operation runs on a :class:`~agentkeys.worker._vault.Vault` whose S3 credentials the
   signer issued for exactly this actor, so the bucket policy confines the request even
   if steps 1-4 were wrong. Only the operator's own vault (actor == operator) gets the
   master wallet tag (and so the v1 prefix ``bots/<wallet>/``); an agent's session is
   tagged with its actor_omni alone, and an agent never reads v1 data
   (``credential_not_found``).

STS exchanges are single-flight per (actor, wallet tag): concurrent requests for the same
session wait for one exchange, other actors are not held up by it, and at most
``_MAX_EXCHANGES`` exchanges run at once.

Any failure raises the :class:`~agentkeys.errors.AgentkeysError` leaf that names it.
Plaintext exists only in memory and in the answer; it is never logged or written to disk.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.cap import CapOp, VerifiedCap, parse_cap_token, verify_cap
from agentkeys.chain.errors import ChainError
from agentkeys.clients.signer import AwsCredentials, SignerClient
from agentkeys.errors import FormatError, InvalidEncoding, PopNonceReused
from agentkeys.omni import normalize_hex32, p256_public_key_from_point
from agentkeys.pop import (
    NonceRegistry,
    PopProof,
    VerifiedWorkerPop,
    WorkerPopClaims,
    check_worker_pop,
    consume_pop_nonce,
)
from agentkeys.service import JsonObject, decode_body
from agentkeys.worker._checks import ChainFacts, check_chain, require_device
from agentkeys.worker._ports import CapKeySource, ChainReader
from agentkeys.worker._s3 import ObjectStore
from agentkeys.worker._signer import signer_failures
from agentkeys.worker._vault import Vault
from agentkeys.worker.errors import (
    CapMissing,
    ChainUnavailable,
    PopMissing,
    RequestRefused,
)
from agentkeys.worker.layout import pop_nonce_key

__all__ = [
    "CAP_HEADER",
    "MAX_CREDENTIAL_BYTES",
    "POP_HEADER",
    "StorageSettings",
    "WorkerCore",
]

CAP_HEADER = "authorization"
CAP_SCHEME = "Cap "
POP_HEADER = "agentkeys-pop"
MAX_CREDENTIAL_BYTES = 16 * 1024
_CREDENTIAL_CACHE = 256
_CREDENTIAL_MARGIN = datetime.timedelta(seconds=60)
_MAX_EXCHANGES = 8
_StoreKey = tuple[str, str | None]


@dataclass
class _Flight:
    """One in-progress (or queued) STS exchange for a session key, and who waits on it."""

    lock: trio.Lock
    users: int = 0


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    """Where credentials live: the bucket and the S3 endpoint (``None``: AWS).

    ``shared_nonces``: also spend every K10 proof nonce as a marker object
    (``layout.pop_nonce_key``, written with ``If-None-Match: *``), so a proof replayed to
    another process or Lambda container sharing the bucket is refused too (default on).
    """

    bucket: str
    endpoint: str | None = None
    region: str = "us-east-1"
    shared_nonces: bool = True


@dataclass(frozen=True)
class FetchBody:
    """``POST /v1/cred/fetch`` body (may be empty)."""

    legacy_identity_omni: str | None = None


@dataclass(frozen=True)
class StoreBody:
    """``POST /v1/cred/store`` body: the credential as base64url (no padding)."""

    credential: str


@dataclass(frozen=True)
class EmptyBody:
    """``list`` and ``teardown`` take no fields (the body may be empty or ``{}``)."""


@contextmanager
def _chain_errors() -> Iterator[None]:
    try:
        yield
    except ChainError as exc:
        raise ChainUnavailable(f"chain read failed ({exc.error})") from None
    except httpx.HTTPError as exc:
        raise ChainUnavailable(f"chain unreachable ({type(exc).__name__})") from None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value.strip() if isinstance(value, str) else None


def _body(cls: type[Any], body: bytes) -> Any:
    return decode_body(cls, body if body.strip() else b"{}")


class WorkerCore:
    """The worker's decisions and their I/O, shared by both front ends.

    Args:
        audience: this worker's ``aud`` (caps for another audience are refused).
        cap_keys: the trusted K1 key set.
        chain: chain reads (``agentkeys.chain.ChainClient``).
        signer: the signer client (mTLS, role worker).
        storage: bucket and endpoint.
        nonces: the PoP nonce registry (one per process).
        clock: Unix seconds.
        limiter: bounds concurrent boto3 calls.
    """

    def __init__(
        self,
        *,
        audience: str,
        cap_keys: CapKeySource,
        chain: ChainReader,
        signer: SignerClient,
        storage: StorageSettings,
        nonces: NonceRegistry | None = None,
        clock: Callable[[], float] = time.time,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.audience = audience
        self._cap_keys = cap_keys
        self._chain = chain
        self._signer = signer
        self._storage = storage
        self._nonces = nonces if nonces is not None else NonceRegistry()
        self._clock = clock
        self._limiter = limiter or trio.CapacityLimiter(8)
        self._stores: OrderedDict[_StoreKey, tuple[AwsCredentials, ObjectStore]] = OrderedDict()
        #: lookups of the per-actor STS credential cache (``/metrics``)
        self.credential_cache_hits = 0
        self.credential_cache_misses = 0
        self._flights: dict[_StoreKey, _Flight] = {}
        self._exchanges = trio.CapacityLimiter(_MAX_EXCHANGES)

    @property
    def chain(self) -> ChainReader:
        """The chain reader this core re-checks caps against."""
        return self._chain

    # -- checks -------------------------------------------------------------------------

    async def authorize(
        self, op: CapOp, headers: Mapping[str, str], body: bytes, audit: dict[str, Any]
    ) -> tuple[VerifiedCap, ChainFacts, str]:
        """Steps 1-4 of the module docstring; returns (cap, chain facts, master wallet).

        Raises:
            CapMissing, PopMissing, CapError leaves, PopError leaves, ChainCheckFailed
            leaves, ChainUnavailable, CapKeysUnavailable.
        """
        cap, facts, wallet, _ = await self._authorize(op, headers, body, audit)
        return cap, facts, wallet

    async def _authorize(
        self, op: CapOp, headers: Mapping[str, str], body: bytes, audit: dict[str, Any]
    ) -> tuple[VerifiedCap, ChainFacts, str, VerifiedWorkerPop]:
        authorization = _header(headers, CAP_HEADER)
        if authorization is None or not authorization.startswith(CAP_SCHEME):
            raise CapMissing("the request carries no 'Authorization: Cap <token>' header")
        proof_text = _header(headers, POP_HEADER)
        if proof_text is None:
            raise PopMissing("a cap is only accepted with its K10 proof (Agentkeys-Pop header)")
        signed = parse_cap_token(authorization[len(CAP_SCHEME) :].strip())
        keys = await self._cap_keys.keys_for(signed.kid)
        now = self._clock()
        cap = verify_cap(signed, keys=keys, expected_aud=self.audience, now=now, expected_op=op)
        payload = cap.payload
        audit.update(operator=payload.operator_omni, actor=payload.actor_omni,
                     service=payload.service, device=payload.device_key_hash)  # fmt: skip
        proof = PopProof.from_header_value(proof_text)
        with _chain_errors():
            device = require_device(await self._chain.get_device(payload.device_key_hash))
        claims = WorkerPopClaims(
            cap_digest=cap.digest,
            op=op,
            body_sha256=hashlib.sha256(body).digest(),
            timestamp=proof.timestamp,
            nonce=proof.nonce,
        )
        verified = check_worker_pop(
            claims,
            proof.signature,
            public_key=p256_public_key_from_point(device.k10_point),
            expected_device_key_hash=payload.device_key_hash,
            now=self._clock(),
        )
        with _chain_errors():
            scope = None
            agent_operator = None
            if payload.actor_omni != payload.operator_omni:
                agent_operator = await self._chain.agent_operator(payload.actor_omni)
                scope = await self._chain.get_scope(payload.operator_omni, payload.actor_omni)
            facts = ChainFacts(
                device=device,
                scope=scope,
                current_epoch=await self._chain.current_epoch(),
                master_wallet=await self._chain.master_wallet(payload.operator_omni),
                agent_operator=agent_operator,
            )
        wallet = check_chain(payload, facts)
        # Every check passed: spend the nonce now (synchronously: no await between the
        # registry's test and its insert, so of two racing copies exactly one gets through).
        consume_pop_nonce(verified, nonces=self._nonces, now=self._clock())
        return cap, facts, wallet, verified

    # -- storage ------------------------------------------------------------------------

    def _cached_store(self, key: _StoreKey) -> ObjectStore | None:
        cached = self._stores.get(key)
        now = datetime.datetime.now(datetime.UTC)
        if cached is None or cached[0].expiration - _CREDENTIAL_MARGIN <= now:
            return None
        self._stores.move_to_end(key)
        return cached[1]

    async def _object_store(self, actor_omni: str, wallet: str | None) -> ObjectStore:
        """The bucket through STS credentials for ``actor_omni`` (and ``wallet``'s tag).

        Args:
            wallet: the master wallet to tag the session with (the operator's own vault
                only), or ``None``: a session tagged with the actor alone.
        """
        key = (actor_omni, wallet)
        store = self._cached_store(key)
        if store is not None:
            self.credential_cache_hits += 1
            return store
        self.credential_cache_misses += 1
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight(trio.Lock())
        flight.users += 1
        try:
            async with flight.lock:
                store = self._cached_store(key)
                if store is not None:
                    return store
                async with self._exchanges:
                    with signer_failures():
                        credentials = await self._signer.sts_credentials(actor_omni, wallet)
                    store = await ObjectStore.open(
                        endpoint=self._storage.endpoint,
                        region=self._storage.region,
                        bucket=self._storage.bucket,
                        credentials=credentials,
                        limiter=self._limiter,
                    )
                self._stores[key] = (credentials, store)
                while len(self._stores) > _CREDENTIAL_CACHE:
                    self._stores.popitem(last=False)
                return store
        finally:
            flight.users -= 1
            if flight.users == 0:
                del self._flights[key]

    @asynccontextmanager
    async def vault(
        self, *, operator_omni: str, actor_omni: str, wallet: str, current_epoch: int,
        identity_omni: str | None,
    ) -> AsyncIterator[Vault]:  # fmt: skip
        """A :class:`Vault` for ``actor_omni`` with its own STS credentials.

        The session carries the master wallet tag (and the vault reads v1 data) only for
        the operator's own vault; an agent's vault is v2 only (least privilege).
        """
        own_vault = actor_omni == operator_omni
        store = await self._object_store(actor_omni, wallet if own_vault else None)
        yield Vault(
            store=store,
            signer=self._signer,
            operator_omni=operator_omni,
            actor_omni=actor_omni,
            wallet=wallet,
            current_epoch=current_epoch,
            identity_omni=identity_omni,
            legacy_access=own_vault,
        )

    async def _spend_shared_nonce(self, vault: Vault, proof: VerifiedWorkerPop) -> None:
        """The proof's nonce as a create-only marker object (see :class:`StorageSettings`).

        Raises:
            PopNonceReused: the marker exists (the proof was used by another process).
            StorageDenied, StorageFailed: the marker could not be written (fail closed).
        """
        key = pop_nonce_key(vault.actor_omni, proof.device_key_hash, proof.claims.nonce)
        marker = str(proof.expires_at).encode("ascii")
        if not await vault.store_object.put_if_absent(key, marker):
            raise PopNonceReused("PoP nonce already used (shared nonce store)")

    # -- operations ---------------------------------------------------------------------

    async def execute(
        self, op: CapOp, headers: Mapping[str, str], body: bytes, audit: dict[str, Any]
    ) -> JsonObject:
        """Authorize and run one request; returns the JSON answer.

        Args:
            audit: filled with identifiers (never secrets) for the request's audit row.

        Raises:
            AgentkeysError: the leaf naming the failed check or upstream failure.
        """
        cap, facts, wallet, proof = await self._authorize(op, headers, body, audit)
        payload = cap.payload
        parsed = _body({CapOp.FETCH: FetchBody, CapOp.STORE: StoreBody}.get(op, EmptyBody), body)
        identity = None
        if isinstance(parsed, FetchBody) and parsed.legacy_identity_omni is not None:
            try:
                identity = normalize_hex32(parsed.legacy_identity_omni)
            except FormatError:
                raise RequestRefused("legacy_identity_omni must be 64 hex digits") from None
        async with self.vault(
            operator_omni=payload.operator_omni,
            actor_omni=payload.actor_omni,
            wallet=wallet,
            current_epoch=facts.current_epoch,
            identity_omni=identity,
        ) as vault:
            if self._storage.shared_nonces:
                await self._spend_shared_nonce(vault, proof)
            base: JsonObject = {"operator_omni": payload.operator_omni,
                                "actor_omni": payload.actor_omni}  # fmt: skip
            if op is CapOp.FETCH:
                fetched = await vault.fetch(payload.service)
                audit.update(source=fetched.source.value, migrated=fetched.migrated)
                migration: JsonObject = {"migrated": fetched.migrated}
                if fetched.migration_error is not None:
                    migration.update(error=fetched.migration_error,
                                     reason=fetched.migration_reason)  # fmt: skip
                return {
                    **base,
                    "service": payload.service,
                    "credential": b64url_encode(fetched.opened.plaintext),
                    "source": fetched.source.value,
                    "key": fetched.key,
                    "envelope_version": int(fetched.opened.version),
                    "k3_epoch": fetched.opened.epoch,
                    "migration": migration,
                }
            if op is CapOp.STORE:
                assert isinstance(parsed, StoreBody)
                try:
                    plaintext = b64url_decode(parsed.credential)
                except InvalidEncoding:
                    raise RequestRefused("credential must be unpadded base64url") from None
                if not 0 < len(plaintext) <= MAX_CREDENTIAL_BYTES:
                    raise RequestRefused(f"credential must be 1..{MAX_CREDENTIAL_BYTES} bytes")
                key = await vault.store(payload.service, plaintext)
                return {**base, "service": payload.service, "key": key, "envelope_version": 4,
                        "k3_epoch": facts.current_epoch}  # fmt: skip
            include_v1 = payload.actor_omni == payload.operator_omni
            if op is CapOp.LIST:
                listed = await vault.list_services(include_v1=include_v1)
                services = [{"service": s, "source": src.value} for s, src in listed.items()]
                return {**base, "services": services}
            deleted = await vault.teardown(payload.service, include_v1=include_v1)
            audit.update(deleted_v2=deleted["v2"], deleted_v1=deleted["v1"])
            return {**base, "service": payload.service, "deleted": deleted}
