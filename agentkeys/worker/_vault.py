"""One actor's credentials in S3: dual read, 0x04 writes, lazy and eager migration.

SPEC.md sections 4 and 9 (steps 5, 10, 11). A :class:`Vault` is built per request (or per
migration run) from an :class:`~agentkeys.worker._s3.ObjectStore` holding the actor's own
STS credentials, the signer client, and the facts the caller has already checked against
the chain (operator, actor, master wallet, current epoch).

Rules kept here, in one place, for the worker and the eager tool alike:

* reads try the v2 key ``bots/<actor>/…`` first, then (the operator's own vault only) the
  v1 key ``bots/<wallet>/…``; an agent's vault has no v1 fallback: its S3 session is not
  tagged with the master wallet, and a credential missing at the agent's v2 key is
  ``credential_not_found`` (its reason names the ``agentkeys store`` command to run);
* 0x01 and 0x02 open with the v1 KEK (the signer re-derives it from the identity omni
  behind the master wallet, ``identity_omni``), 0x04 with the v2 KEK of its epoch;
* a migrated copy is written as 0x04 under the current epoch, read back and compared
  with the plaintext before anything reports it migrated; a copy that does not verify is
  removed (or the original bytes restored) so it never shadows the good v1 object;
* v1 objects are deleted only by the eager tool with ``delete_v1`` and only after the v2
  copy verified in the same step.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from agentkeys.clients.signer import SignerClient
from agentkeys.envelope import EnvelopeVersion, open_envelope, parse_header, seal_v4
from agentkeys.errors import EnvelopeError
from agentkeys.worker._s3 import ObjectStore
from agentkeys.worker._signer import signer_failures
from agentkeys.worker.errors import (
    CredentialNotFound,
    LegacyIdentityRequired,
    MigrationFailed,
    StoredEnvelopeInvalid,
    WorkerError,
)
from agentkeys.worker.layout import service_of_key, v1_key, v1_prefix, v2_key, v2_prefix

__all__ = [
    "Fetched",
    "MigrationAction",
    "MigrationReport",
    "Opened",
    "Source",
    "Vault",
]


class Source(StrEnum):
    """Which key a credential was read from."""

    V2 = "v2"
    V1 = "v1"


@dataclass(frozen=True)
class Opened:
    """A decrypted envelope: the plaintext and what it was."""

    plaintext: bytes
    version: EnvelopeVersion
    epoch: int | None


@dataclass(frozen=True)
class Fetched:
    """The result of a dual read, with what lazy migration did."""

    opened: Opened
    source: Source
    key: str
    migrated: bool
    migration_error: str | None = None
    migration_reason: str | None = None


class MigrationAction(StrEnum):
    """What the eager tool did (or would do) with one credential."""

    MIGRATED = "migrated"  # 0x04 written to the v2 key and verified
    UPGRADED = "upgraded"  # legacy envelope at the v2 key rewritten as 0x04, verified
    ALREADY_MIGRATED = "already_migrated"  # v2 holds a verified 0x04 of the same plaintext
    V2_DIFFERS = "v2_differs"  # v2 holds another credential: v2 wins, v1 kept
    WOULD_MIGRATE = "would_migrate"  # dry run
    FAILED = "failed"


@dataclass(frozen=True)
class MigrationReport:
    """One object's outcome (no plaintext, no KEK)."""

    service: str
    v1_key: str | None
    v2_key: str
    action: MigrationAction
    v1_deleted: bool = False
    error: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, str | bool | None]:
        """The per-object report line."""
        return {
            "service": self.service,
            "v1_key": self.v1_key,
            "v2_key": self.v2_key,
            "action": self.action.value,
            "v1_deleted": self.v1_deleted,
            "error": self.error,
            "reason": self.reason,
        }


class Vault:
    """One actor's credential envelopes (see the module docstring).

    Args:
        store: the bucket through the actor's STS credentials.
        signer: KEK source.
        operator_omni: the operator (its master wallet's actor_omni).
        actor_omni: the actor whose v2 prefix this is.
        wallet: the operator's master wallet (checked against the chain by the caller).
        current_epoch: the chain's K3 epoch (new envelopes are sealed under it).
        identity_omni: the identity behind the master wallet's K4, needed only to open
            legacy 0x01 / 0x02 envelopes; ``None`` refuses them with LegacyIdentityRequired.
        legacy_access: whether reads fall back to the v1 key (the operator's own vault,
            whose S3 session carries the wallet tag); ``False`` for an agent's vault.
    """

    def __init__(
        self,
        *,
        store: ObjectStore,
        signer: SignerClient,
        operator_omni: str,
        actor_omni: str,
        wallet: str,
        current_epoch: int,
        identity_omni: str | None,
        legacy_access: bool = True,
    ) -> None:
        self._store = store
        self.legacy_access = legacy_access
        self._signer = signer
        self.operator_omni = operator_omni
        self.actor_omni = actor_omni
        self.wallet = wallet
        self.current_epoch = current_epoch
        self._identity = identity_omni

    @property
    def store_object(self) -> ObjectStore:
        """The bucket through this vault's STS session (for the worker's nonce markers)."""
        return self._store

    # -- envelopes --------------------------------------------------------------------

    async def open(self, key: str, data: bytes, service: str, *, aad_actor: str) -> Opened:
        """Open the envelope stored at ``key``.

        Args:
            aad_actor: the actor_omni a 0x02 / 0x04 envelope at this key is bound to.

        Raises:
            StoredEnvelopeInvalid: truncated, unknown version, tampered, 0x04 at a v1 key.
            LegacyIdentityRequired: a 0x01 / 0x02 envelope without ``identity_omni``.
            SignerFailed: the signer refused the KEK (e.g. an unknown epoch).
        """
        try:
            header = parse_header(data)
        except EnvelopeError as exc:
            raise StoredEnvelopeInvalid(f"envelope at {key} is invalid ({exc.error})") from None
        if header.version is EnvelopeVersion.V2:
            assert header.epoch is not None
            with signer_failures():
                kek = await self._signer.v2_kek(aad_actor, header.epoch, "decrypt")
        else:
            if self._identity is None:
                raise LegacyIdentityRequired(
                    f"envelope at {key} is 0x{header.version:02x} (v1 KEK): the request must "
                    "name legacy_identity_omni, the identity behind the master wallet"
                )
            with signer_failures():
                kek = await self._signer.v1_kek(self._identity, self.wallet, service)
        try:
            plaintext = open_envelope(
                data, kek=kek, service=service, wallet=self.wallet, actor_omni=aad_actor
            )
        except EnvelopeError as exc:
            raise StoredEnvelopeInvalid(f"envelope at {key} does not open ({exc.error})") from None
        return Opened(plaintext, header.version, header.epoch)

    async def seal(self, plaintext: bytes, service: str) -> bytes:
        """A fresh 0x04 envelope for this actor under the current epoch."""
        with signer_failures():
            kek = await self._signer.v2_kek(self.actor_omni, self.current_epoch, "encrypt")
        return seal_v4(
            plaintext, kek=kek, actor_omni=self.actor_omni, service=service,
            epoch=self.current_epoch,
        )  # fmt: skip

    async def write_verified(
        self, service: str, plaintext: bytes, *, previous: bytes | None
    ) -> None:
        """Write ``plaintext`` as 0x04 at the v2 key, read it back, open and compare.

        Args:
            previous: the bytes at the v2 key before the write (``None``: absent); put
                back if the copy does not verify, so a bad copy never shadows good data.

        Raises:
            MigrationFailed: the read-back is missing or differs (after the undo).
            StorageDenied, StorageFailed, SignerFailed.
        """
        key = v2_key(self.actor_omni, service)
        envelope = await self.seal(plaintext, service)
        await self._store.put(key, envelope)
        back = await self._store.get(key)
        verified = False
        if back is not None and hmac.compare_digest(back, envelope):
            opened = await self.open(key, back, service, aad_actor=self.actor_omni)
            verified = hmac.compare_digest(opened.plaintext, plaintext)
        if verified:
            return
        if previous is None:
            await self._store.delete(key)
        else:
            await self._store.put(key, previous)
        raise MigrationFailed(f"the 0x04 copy at {key} did not read back identical; undone")

    # -- worker operations -------------------------------------------------------------

    async def fetch(self, service: str) -> Fetched:
        """Dual read with lazy migration (SPEC section 9 steps 5 and 10).

        Raises:
            CredentialNotFound, StoredEnvelopeInvalid,
            LegacyIdentityRequired, StorageDenied, StorageFailed, SignerFailed.
        """
        key2 = v2_key(self.actor_omni, service)
        data = await self._store.get(key2)
        if data is not None:
            opened = await self.open(key2, data, service, aad_actor=self.actor_omni)
            if opened.version is EnvelopeVersion.V2:
                return Fetched(opened, Source.V2, key2, migrated=False)
            return await self._lazy(opened, Source.V2, key2, service, previous=data)
        if not self.legacy_access:
            raise CredentialNotFound(
                f"nothing stored for {service!r} in this agent's vault ({key2}); the operator "
                f"stores it with `agentkeys store {service} --credential-backend sidecar "
                "--agent <label>` (an agent never reads the master's v1 data: if the "
                "credential exists only there, `agentkeys read` on the master migrates it)"
            )
        key1 = v1_key(self.wallet, service)
        data = await self._store.get(key1)
        if data is None:
            raise CredentialNotFound(f"no credential for {service!r} at {key2} or {key1}")
        opened = await self.open(key1, data, service, aad_actor=self.operator_omni)
        if opened.version is EnvelopeVersion.V2:
            raise StoredEnvelopeInvalid(f"envelope at {key1} is 0x04, which has no place there")
        return await self._lazy(opened, Source.V1, key1, service, previous=None)

    async def _lazy(
        self, opened: Opened, source: Source, key: str, service: str, *, previous: bytes | None
    ) -> Fetched:
        try:
            await self.write_verified(service, opened.plaintext, previous=previous)
        except WorkerError as exc:
            return Fetched(opened, source, key, False, exc.error, exc.reason)
        return Fetched(opened, source, key, migrated=True)

    async def store(self, service: str, plaintext: bytes) -> str:
        """Write ``plaintext`` as 0x04 at the v2 key; returns the key."""
        key = v2_key(self.actor_omni, service)
        await self._store.put(key, await self.seal(plaintext, service))
        return key

    async def list_services(self, *, include_v1: bool) -> dict[str, Source]:
        """Services stored for this actor, v2 winning over v1 (v1 only if ``include_v1``)."""
        found: dict[str, Source] = {}
        if include_v1:
            prefix1 = v1_prefix(self.wallet)
            for key in await self._store.list_keys(prefix1):
                service = service_of_key(prefix1, key)
                if service is not None:
                    found[service] = Source.V1
        prefix2 = v2_prefix(self.actor_omni)
        for key in await self._store.list_keys(prefix2):
            service = service_of_key(prefix2, key)
            if service is not None:
                found[service] = Source.V2
        return dict(sorted(found.items()))

    async def teardown(self, service: str, *, include_v1: bool) -> dict[str, int]:
        """Delete ``service``'s credential: its v2 key (and its v1 key), nothing else.

        A cap names one service (SPEC section 5), so a teardown cap removes exactly the
        objects of that service; other services of the actor are never touched. Returns
        how many objects went (0 or 1 per key).
        """
        deleted = {"v2": 0, "v1": 0}
        keys = [("v2", v2_key(self.actor_omni, service))]
        if include_v1:
            keys.append(("v1", v1_key(self.wallet, service)))
        for name, key in keys:
            if await self._store.get(key) is not None:
                await self._store.delete(key)
                deleted[name] += 1
        return deleted

    # -- eager migration ---------------------------------------------------------------

    async def legacy_services(self) -> list[str]:
        """Services with a v1 object, or with a legacy envelope at the v2 key (sorted)."""
        return sorted(await self.list_services(include_v1=True))

    async def migrate(self, service: str, *, delete_v1: bool, dry_run: bool) -> MigrationReport:
        """Migrate one service's credential (SPEC section 9 step 11), idempotently.

        Every decision is re-derived from what S3 holds now, so a run killed at any point
        is finished by the next one: a v2 copy is always written before, and verified
        before, the v1 object is deleted; each PUT is atomic.
        """
        key1 = v1_key(self.wallet, service)
        key2 = v2_key(self.actor_omni, service)
        data1 = await self._store.get(key1)
        data2 = await self._store.get(key2)

        def report(action: MigrationAction, deleted: bool = False) -> MigrationReport:
            return MigrationReport(service, key1 if data1 is not None else None, key2,
                                   action, deleted)  # fmt: skip

        plain1 = None
        if data1 is not None:
            opened1 = await self.open(key1, data1, service, aad_actor=self.operator_omni)
            if opened1.version is EnvelopeVersion.V2:
                raise StoredEnvelopeInvalid(f"envelope at {key1} is 0x04, which has no place there")
            plain1 = opened1.plaintext
        if data2 is None:
            if plain1 is None:
                raise CredentialNotFound(f"no credential for {service!r} at {key2} or {key1}")
            if dry_run:
                return report(MigrationAction.WOULD_MIGRATE)
            await self.write_verified(service, plain1, previous=None)
            action = MigrationAction.MIGRATED
        else:
            opened2 = await self.open(key2, data2, service, aad_actor=self.actor_omni)
            if opened2.version is not EnvelopeVersion.V2:
                if dry_run:
                    return report(MigrationAction.WOULD_MIGRATE)
                await self.write_verified(service, opened2.plaintext, previous=data2)
                action = MigrationAction.UPGRADED
            else:
                action = MigrationAction.ALREADY_MIGRATED
            if plain1 is not None and not hmac.compare_digest(plain1, opened2.plaintext):
                return report(MigrationAction.V2_DIFFERS)
        if delete_v1 and data1 is not None and not dry_run:
            await self._store.delete(key1)
            return report(action, deleted=True)
        return report(action)
