"""The :class:`~agentkeys.broker._store.StateStore` statements, written once for both backends.

:class:`SqlStateStore` holds every statement of the store, in the SQL that SQLite (3.35+) and
PostgreSQL (13+) both accept, with ``?`` placeholders (the PostgreSQL adapter turns them into
``%s``). A backend supplies a :class:`Database`: something that runs a function over one
:class:`Transaction` (committed when the function returns, rolled back when it raises).

Every single-use rule is one statement, so it holds however many processes share the store:

* a PoP nonce is spent by ``INSERT … ON CONFLICT DO UPDATE … WHERE <expired> RETURNING``;
* an email link is followed by ``UPDATE … SET token_hash = NULL … RETURNING``, a verified
  request collected by ``DELETE … RETURNING``, a challenge (also a device sign-in
  challenge, bound to its device_key_hash in the ``WHERE``) taken by ``DELETE … RETURNING``;
* a sign count moves by compare-and-set (``UPDATE … WHERE sign_count = old``), forwards only;
* a signing key is added by ``INSERT … ON CONFLICT DO NOTHING RETURNING``.

Schema migrations (:class:`Migration`) are numbered; :func:`migrate` applies, in one
transaction, those a database has not recorded in ``schema_migrations`` (so opening twice, or
from two replicas at once, changes nothing the second time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agentkeys.broker._store import (
    EmailRequest,
    LegacyScope,
    MintRecord,
    PasskeyCredential,
    SessionRecord,
    SigningKeyRecord,
)
from agentkeys.broker.errors import StoreError

__all__ = ["Database", "Migration", "Result", "SqlStateStore", "Transaction", "migrate"]

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Result:
    """What one statement gave: its rows (``SELECT`` / ``RETURNING``) and the rows changed."""

    rows: list[Row]
    rowcount: int


class Transaction(Protocol):
    """One open transaction of a backend."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> Result:
        """Run one statement (``?`` placeholders) and fetch all of its rows."""
        ...


class Database(Protocol):
    """A backend's connection(s): runs blocking work off the Trio loop."""

    async def run(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in one transaction in a worker thread.

        Raises:
            StoreError: the database failed (the transaction is rolled back).
        """
        ...

    async def execute(self, sql: str, params: Sequence[object] = ()) -> Result:
        """Run one statement as its own transaction (see :meth:`run`)."""
        ...

    async def aclose(self) -> None:
        """Close the connection(s)."""
        ...


@dataclass(frozen=True)
class Migration:
    """One numbered schema step: its statements run once, in order, in one transaction."""

    version: int
    statements: tuple[str, ...]


_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
)


def migrate(tx: Transaction, migrations: Sequence[Migration], *, now: int) -> int:
    """Apply the ``migrations`` the database has not recorded; returns the schema version.

    The caller holds whatever lock serialises migrations (SQLite: ``BEGIN IMMEDIATE``;
    PostgreSQL: an advisory transaction lock taken before this).

    Raises:
        StoreError: the database records a version this code does not know (a newer broker
            migrated it: refuse rather than run on a schema we do not understand).
    """
    tx.execute(_MIGRATIONS_TABLE)
    applied = {int(row[0]) for row in tx.execute("SELECT version FROM schema_migrations").rows}
    known = {m.version for m in migrations}
    unknown = applied - known
    if unknown:
        raise StoreError(
            f"the state database has schema version {max(unknown)}, newer than this broker "
            f"knows ({max(known)}); upgrade the broker"
        )
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version in applied:
            continue
        for statement in migration.statements:
            tx.execute(statement)
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (migration.version, now),
        )
    return max(known)


def _email(row: Row, verified: bool) -> EmailRequest:
    return EmailRequest(row[0], row[1], int(row[2]), verified)


def _signing_key(row: Row) -> SigningKeyRecord:
    return SigningKeyRecord(
        purpose=row[0], generation=int(row[1]), kid=row[2], sealed=bytes(row[3]),
        created_at=int(row[4]), activates_at=int(row[5]),
        retires_at=None if row[6] is None else int(row[6]),
    )  # fmt: skip


class SqlStateStore:
    """:class:`~agentkeys.broker._store.StateStore` over a :class:`Database` (module docstring).

    The caller that opened the database closes it with :meth:`aclose`.

    Raises:
        StoreError: the database failed.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def aclose(self) -> None:
        """Close the database."""
        await self._db.aclose()

    async def _one(self, sql: str, params: Sequence[object] = ()) -> Result:
        return await self._db.execute(sql, params)

    # -- email -------------------------------------------------------------------------------

    async def add_email_request(
        self,
        *,
        token_hash: bytes,
        request_hash: bytes,
        email: str,
        identity_omni: str,
        expires_at: int,
    ) -> None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        await self._one(
            "INSERT INTO email_requests (token_hash, request_hash, email, identity_omni,"
            " expires_at, verified) VALUES (?, ?, ?, ?, ?, FALSE)",
            (token_hash, request_hash, email, identity_omni, expires_at),
        )

    async def pending_email_requests(self, identity_omni: str, *, now: int) -> int:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "SELECT COUNT(*) FROM email_requests WHERE identity_omni = ? AND expires_at >= ?",
            (identity_omni, now),
        )
        return int(result.rows[0][0])

    async def follow_email_link(self, token_hash: bytes, *, now: int) -> EmailRequest | None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "UPDATE email_requests SET token_hash = NULL, verified = (expires_at >= ?)"
            " WHERE token_hash = ? RETURNING email, identity_omni, expires_at",
            (now, token_hash),
        )
        return _email(result.rows[0], False) if result.rows else None

    async def get_email_request(self, request_hash: bytes) -> EmailRequest | None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "SELECT email, identity_omni, expires_at, verified FROM email_requests"
            " WHERE request_hash = ?",
            (request_hash,),
        )
        return _email(result.rows[0], bool(result.rows[0][3])) if result.rows else None

    async def collect_email_request(self, request_hash: bytes) -> EmailRequest | None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "DELETE FROM email_requests WHERE request_hash = ? AND verified"
            " RETURNING email, identity_omni, expires_at",
            (request_hash,),
        )
        return _email(result.rows[0], True) if result.rows else None

    # -- sessions ----------------------------------------------------------------------------

    async def add_session(self, record: SessionRecord) -> None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        await self._one(
            "INSERT INTO sessions (jti, stage, subject, expires_at, revoked)"
            " VALUES (?, ?, ?, ?, ?)",
            (record.jti, record.stage, record.subject, record.expires_at, record.revoked),
        )

    async def get_session(self, jti: str) -> SessionRecord | None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "SELECT jti, stage, subject, expires_at, revoked FROM sessions WHERE jti = ?", (jti,)
        )
        if not result.rows:
            return None
        row = result.rows[0]
        return SessionRecord(row[0], row[1], row[2], int(row[3]), bool(row[4]))

    async def revoke_session(self, jti: str) -> bool:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one("UPDATE sessions SET revoked = TRUE WHERE jti = ?", (jti,))
        return result.rowcount > 0

    async def revoke_subject(self, subject: str) -> int:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "UPDATE sessions SET revoked = TRUE WHERE subject = ? AND NOT revoked", (subject,)
        )
        return result.rowcount

    # -- challenges --------------------------------------------------------------------------

    async def add_challenge(
        self,
        *,
        challenge_id: str,
        purpose: str,
        session_jti: str,
        payload: dict[str, str],
        expires_at: int,
    ) -> None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        await self._one(
            "INSERT INTO challenges (challenge_id, purpose, session_jti, payload, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (challenge_id, purpose, session_jti, json.dumps(payload, sort_keys=True), expires_at),
        )

    async def take_challenge(
        self, *, challenge_id: str, purpose: str, session_jti: str, now: int
    ) -> dict[str, str] | None:
        """See :class:`~agentkeys.broker._store.StateStore` (an expired one is deleted too)."""
        result = await self._one(
            "DELETE FROM challenges WHERE challenge_id = ? AND purpose = ? AND session_jti = ?"
            " RETURNING payload, expires_at",
            (challenge_id, purpose, session_jti),
        )
        if not result.rows or int(result.rows[0][1]) < now:
            return None
        payload: dict[str, str] = json.loads(result.rows[0][0])
        return payload

    async def add_device_challenge(
        self, challenge: bytes, *, device_key_hash: str, expires_at: int, now: int, limit: int
    ) -> bool:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "INSERT INTO device_challenges (challenge, device_key_hash, expires_at)"
            " SELECT ?, ?, ? WHERE (SELECT COUNT(*) FROM device_challenges"
            " WHERE device_key_hash = ? AND expires_at >= ?) < ?",
            (challenge, device_key_hash, expires_at, device_key_hash, now, limit),
        )
        return result.rowcount == 1

    async def take_device_challenge(
        self, challenge: bytes, *, device_key_hash: str, now: int
    ) -> bool:
        """See :class:`~agentkeys.broker._store.StateStore` (an expired one is deleted too)."""
        result = await self._one(
            "DELETE FROM device_challenges WHERE challenge = ? AND device_key_hash = ?"
            " RETURNING expires_at",
            (challenge, device_key_hash),
        )
        return bool(result.rows) and int(result.rows[0][0]) >= now

    # -- credentials -------------------------------------------------------------------------

    async def add_credential(self, credential: PasskeyCredential) -> None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        await self._one(
            "INSERT INTO credentials (credential_id, identity_omni, public_key, sign_count,"
            " k10_point, rp_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                credential.credential_id, credential.identity_omni, credential.public_key,
                credential.sign_count, credential.k10_point, credential.rp_id,
                credential.created_at,
            ),
        )  # fmt: skip

    async def credentials_of(self, identity_omni: str) -> list[PasskeyCredential]:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "SELECT identity_omni, credential_id, public_key, sign_count, k10_point, rp_id,"
            " created_at FROM credentials WHERE identity_omni = ?"
            " ORDER BY created_at, credential_id",
            (identity_omni,),
        )
        return [
            PasskeyCredential(r[0], bytes(r[1]), bytes(r[2]), int(r[3]), bytes(r[4]), r[5],
                              int(r[6]))
            for r in result.rows
        ]  # fmt: skip

    async def update_sign_count(self, credential_id: bytes, *, old: int, new: int) -> bool:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "UPDATE credentials SET sign_count = ? WHERE credential_id = ? AND sign_count = ?"
            " AND (sign_count < ? OR (sign_count = 0 AND ? = 0))",
            (new, credential_id, old, new, new),
        )
        return result.rowcount == 1

    # -- nonces ------------------------------------------------------------------------------

    async def consume_nonce(self, key: bytes, *, expires_at: int, now: int) -> bool:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "INSERT INTO nonces (key, expires_at) VALUES (?, ?) ON CONFLICT (key)"
            " DO UPDATE SET expires_at = excluded.expires_at WHERE nonces.expires_at < ?"
            " RETURNING key",
            (key, expires_at, now),
        )
        return bool(result.rows)

    # -- legacy scope ------------------------------------------------------------------------

    async def set_legacy_scope(
        self, operator_omni: str, actor_omni: str, services: tuple[str, ...], read_only: bool
    ) -> None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        await self._one(
            "INSERT INTO legacy_scope (operator_omni, actor_omni, services, read_only)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (operator_omni, actor_omni)"
            " DO UPDATE SET services = excluded.services, read_only = excluded.read_only",
            (operator_omni, actor_omni, json.dumps(sorted(set(services))), read_only),
        )

    async def get_legacy_scope(self, operator_omni: str, actor_omni: str) -> LegacyScope | None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "SELECT services, read_only FROM legacy_scope"
            " WHERE operator_omni = ? AND actor_omni = ?",
            (operator_omni, actor_omni),
        )
        if not result.rows:
            return None
        return LegacyScope(tuple(json.loads(result.rows[0][0])), bool(result.rows[0][1]))

    async def delete_legacy_scope(self, operator_omni: str, actor_omni: str) -> bool:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "DELETE FROM legacy_scope WHERE operator_omni = ? AND actor_omni = ?",
            (operator_omni, actor_omni),
        )
        return result.rowcount > 0

    # -- mints -------------------------------------------------------------------------------

    async def add_mint_record(self, record: MintRecord) -> None:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        await self._one(
            "INSERT INTO mints (cap_nonce, op, operator_omni, actor_omni, service,"
            " device_key_hash, k3_epoch, scope_source, issued_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.cap_nonce, record.op, record.operator_omni, record.actor_omni,
                record.service, record.device_key_hash, record.k3_epoch, record.scope_source,
                record.issued_at,
            ),
        )  # fmt: skip

    async def mint_records(self, limit: int = 100) -> list[MintRecord]:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "SELECT cap_nonce, op, operator_omni, actor_omni, service, device_key_hash,"
            " k3_epoch, scope_source, issued_at FROM mints ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [
            MintRecord(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7], int(r[8]))
            for r in result.rows
        ]

    # -- signing keys ------------------------------------------------------------------------

    async def add_signing_key(
        self, record: SigningKeyRecord, *, retire_others_at: int | None
    ) -> bool:
        """See :class:`~agentkeys.broker._store.StateStore`."""

        def fn(tx: Transaction) -> bool:
            inserted = tx.execute(
                "INSERT INTO signing_keys (purpose, generation, kid, sealed, created_at,"
                " activates_at, retires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING generation",
                (
                    record.purpose, record.generation, record.kid, record.sealed,
                    record.created_at, record.activates_at, record.retires_at,
                ),
            ).rows  # fmt: skip
            if inserted and retire_others_at is not None:
                tx.execute(
                    "UPDATE signing_keys SET retires_at = ?"
                    " WHERE purpose = ? AND generation < ? AND retires_at IS NULL",
                    (retire_others_at, record.purpose, record.generation),
                )
            return bool(inserted)

        return await self._db.run(fn)

    async def signing_keys(self, purpose: str) -> list[SigningKeyRecord]:
        """See :class:`~agentkeys.broker._store.StateStore`."""
        result = await self._one(
            "SELECT purpose, generation, kid, sealed, created_at, activates_at, retires_at"
            " FROM signing_keys WHERE purpose = ? ORDER BY generation",
            (purpose,),
        )
        return [_signing_key(row) for row in result.rows]

    async def purge_expired(self, now: int) -> None:
        """See :class:`~agentkeys.broker._store.StateStore`."""

        def fn(tx: Transaction) -> None:
            tables = ("email_requests", "challenges", "device_challenges", "nonces", "sessions")
            for table in tables:
                tx.execute(f"DELETE FROM {table} WHERE expires_at < ?", (now,))  # noqa: S608
            tx.execute("DELETE FROM signing_keys WHERE retires_at < ?", (now,))

        await self._db.run(fn)
