"""The broker's state: one small interface, and its SQLite implementation.

Everything the broker must remember between requests lives behind :class:`StateStore`, so a
shared store can replace SQLite when several broker replicas run. Each method is one atomic
step (single-use semantics are enforced by the store, not by the caller):

* email sign-in requests: the magic-link token and the poll handle, both stored as sha256;
* sessions (J0/J1): jti → subject, stage, expiry, revoked;
* challenges (WebAuthn, SIWE nonces): single use, bound to a session, expiring;
* passkey credentials and their sign counts (compare-and-set);
* PoP nonces (single use until their window ends);
* the legacy local scope table (SPEC section 9, dual mode);
* mint records (which scope source decided).

:class:`SqliteStateStore` keeps one connection guarded by a lock and runs every statement in
a worker thread (``trio.to_thread`` with a limiter of one). The database file is 0600 inside a
0700 directory. Secrets are never stored in the clear: tokens only as hashes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import trio

from agentkeys.broker.errors import StoreError
from agentkeys.config import InsecureFileError

__all__ = [
    "EmailRequest",
    "LegacyScope",
    "MintRecord",
    "PasskeyCredential",
    "SessionRecord",
    "SqliteStateStore",
    "StateStore",
]

T = TypeVar("T")


@dataclass(frozen=True)
class EmailRequest:
    """A pending email sign-in: who, until when, and whether the link was followed."""

    email: str
    identity_omni: str
    expires_at: int
    verified: bool


@dataclass(frozen=True)
class SessionRecord:
    """What the store knows of a session."""

    jti: str
    stage: str
    subject: str
    expires_at: int
    revoked: bool


@dataclass(frozen=True)
class PasskeyCredential:
    """An enrolled WebAuthn credential, bound to the K10 key it was enrolled with."""

    identity_omni: str
    credential_id: bytes
    public_key: bytes  # COSE_Key
    sign_count: int
    k10_point: bytes
    rp_id: str
    created_at: int


@dataclass(frozen=True)
class LegacyScope:
    """A legacy local scope entry (used only where the chain has none)."""

    services: tuple[str, ...]
    read_only: bool


@dataclass(frozen=True)
class MintRecord:
    """One minted cap: identifiers only, and which scope source decided."""

    cap_nonce: str
    op: str
    operator_omni: str
    actor_omni: str
    service: str
    device_key_hash: str
    k3_epoch: int
    scope_source: str
    issued_at: int


class StateStore(Protocol):
    """The broker's persistent state (see the module docstring). Methods are atomic."""

    async def add_email_request(
        self, *, token_hash: bytes, request_hash: bytes, email: str, identity_omni: str,
        expires_at: int,
    ) -> None:
        """Record a new sign-in request."""
        ...

    async def pending_email_requests(self, identity_omni: str, *, now: int) -> int:
        """How many unexpired, uncollected requests the identity has."""
        ...

    async def follow_email_link(self, token_hash: bytes, *, now: int) -> EmailRequest | None:
        """Forget the token (single use) and, unless expired, mark its request verified.

        Returns the request as it was before, or ``None`` for an unknown or used token.
        """
        ...

    async def get_email_request(self, request_hash: bytes) -> EmailRequest | None:
        """The request for a poll handle, or ``None``."""
        ...

    async def collect_email_request(self, request_hash: bytes) -> EmailRequest | None:
        """Delete and return a *verified* request (its J0 is issued once), else ``None``."""
        ...

    async def add_session(self, record: SessionRecord) -> None:
        """Record an issued session."""
        ...

    async def get_session(self, jti: str) -> SessionRecord | None:
        """The session record, or ``None``."""
        ...

    async def revoke_session(self, jti: str) -> bool:
        """Revoke one session; True when it existed."""
        ...

    async def revoke_subject(self, subject: str) -> int:
        """Revoke every session of ``subject``; returns how many."""
        ...

    async def add_challenge(
        self, *, challenge_id: str, purpose: str, session_jti: str, payload: dict[str, str],
        expires_at: int,
    ) -> None:
        """Record a single-use challenge."""
        ...

    async def take_challenge(
        self, *, challenge_id: str, purpose: str, session_jti: str, now: int
    ) -> dict[str, str] | None:
        """Delete and return the payload if it exists for this purpose and session, unexpired."""
        ...

    async def add_credential(self, credential: PasskeyCredential) -> None:
        """Store an enrolled credential (replacing none: ids are unique)."""
        ...

    async def credentials_of(self, identity_omni: str) -> list[PasskeyCredential]:
        """The identity's credentials."""
        ...

    async def update_sign_count(self, credential_id: bytes, *, old: int, new: int) -> bool:
        """Set the sign count to ``new`` if it is still ``old`` (compare-and-set)."""
        ...

    async def consume_nonce(self, key: bytes, *, expires_at: int, now: int) -> bool:
        """Record ``key`` until ``expires_at``; False when it is already held (a replay)."""
        ...

    async def set_legacy_scope(
        self, operator_omni: str, actor_omni: str, services: tuple[str, ...], read_only: bool
    ) -> None:
        """Write a legacy scope entry."""
        ...

    async def get_legacy_scope(self, operator_omni: str, actor_omni: str) -> LegacyScope | None:
        """The legacy scope entry, or ``None``."""
        ...

    async def delete_legacy_scope(self, operator_omni: str, actor_omni: str) -> bool:
        """Remove a legacy scope entry; True when it existed."""
        ...

    async def add_mint_record(self, record: MintRecord) -> None:
        """Record a minted cap."""
        ...

    async def mint_records(self, limit: int = 100) -> list[MintRecord]:
        """The most recent mint records, newest first."""
        ...

    async def purge_expired(self, now: int) -> None:
        """Drop expired requests, challenges, nonces and sessions."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS email_requests (
    token_hash BLOB UNIQUE, request_hash BLOB PRIMARY KEY, email TEXT NOT NULL,
    identity_omni TEXT NOT NULL, expires_at INTEGER NOT NULL, verified INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    jti TEXT PRIMARY KEY, stage TEXT NOT NULL, subject TEXT NOT NULL,
    expires_at INTEGER NOT NULL, revoked INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS email_identity ON email_requests(identity_omni);
CREATE INDEX IF NOT EXISTS sessions_subject ON sessions(subject);
CREATE TABLE IF NOT EXISTS challenges (
    challenge_id TEXT PRIMARY KEY, purpose TEXT NOT NULL, session_jti TEXT NOT NULL,
    payload TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (
    credential_id BLOB PRIMARY KEY, identity_omni TEXT NOT NULL, public_key BLOB NOT NULL,
    sign_count INTEGER NOT NULL, k10_point BLOB NOT NULL, rp_id TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS credentials_identity ON credentials(identity_omni);
CREATE TABLE IF NOT EXISTS nonces (key BLOB PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS legacy_scope (
    operator_omni TEXT NOT NULL, actor_omni TEXT NOT NULL, services TEXT NOT NULL,
    read_only INTEGER NOT NULL, PRIMARY KEY (operator_omni, actor_omni));
CREATE TABLE IF NOT EXISTS mints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, cap_nonce TEXT NOT NULL, op TEXT NOT NULL,
    operator_omni TEXT NOT NULL, actor_omni TEXT NOT NULL, service TEXT NOT NULL,
    device_key_hash TEXT NOT NULL, k3_epoch INTEGER NOT NULL, scope_source TEXT NOT NULL,
    issued_at INTEGER NOT NULL);
"""


def _secure_directory(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)
    st = directory.stat()
    if st.st_mode & 0o077 or st.st_uid not in (os.geteuid(), 0):
        raise InsecureFileError(f"state directory {directory} must be 0700 and ours")


class SqliteStateStore:
    """:class:`StateStore` on one SQLite file (0600 in a 0700 directory).

    Open with :meth:`open`; close with :meth:`aclose`. One connection, one lock; statements run
    in a worker thread so the event loop never blocks on disk.

    Raises:
        InsecureFileError: the directory or file is accessible by others.
        StoreError: SQLite failed.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> SqliteStateStore:
        """Open (creating if needed) the database at ``path``."""

        def _open() -> sqlite3.Connection:
            _secure_directory(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                    raise InsecureFileError(f"state file {path} is accessible by others")
            finally:
                os.close(fd)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
            except sqlite3.Error:
                connection.close()
                raise
            return connection

        try:
            connection = await trio.to_thread.run_sync(_open)
        except sqlite3.Error as exc:
            raise StoreError("cannot open the broker state database") from exc
        return cls(connection, path)

    async def aclose(self) -> None:
        """Close the connection."""
        async with self._lock:
            await trio.to_thread.run_sync(self._db.close, limiter=self._limiter)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def transaction() -> T:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

        async with self._lock:
            try:
                return await trio.to_thread.run_sync(transaction, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise StoreError("the broker state database failed") from exc

    # -- email -------------------------------------------------------------------------------

    async def add_email_request(
        self, *, token_hash: bytes, request_hash: bytes, email: str, identity_omni: str,
        expires_at: int,
    ) -> None:
        """See :class:`StateStore`."""
        await self._run(
            lambda db: db.execute(
                "INSERT INTO email_requests VALUES (?, ?, ?, ?, ?, 0)",
                (token_hash, request_hash, email, identity_omni, expires_at),
            )
        )

    async def pending_email_requests(self, identity_omni: str, *, now: int) -> int:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT COUNT(*) FROM email_requests WHERE identity_omni = ? AND expires_at >= ?",
                (identity_omni, now),
            ).fetchone()
            return int(row[0])

        return await self._run(fn)

    async def follow_email_link(self, token_hash: bytes, *, now: int) -> EmailRequest | None:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> EmailRequest | None:
            row = db.execute(
                "SELECT email, identity_omni, expires_at, verified FROM email_requests"
                " WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE email_requests SET token_hash = NULL,"
                " verified = (expires_at >= ?) WHERE token_hash = ?",
                (now, token_hash),
            )
            return EmailRequest(row[0], row[1], int(row[2]), bool(row[3]))

        return await self._run(fn)

    async def get_email_request(self, request_hash: bytes) -> EmailRequest | None:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> EmailRequest | None:
            row = db.execute(
                "SELECT email, identity_omni, expires_at, verified FROM email_requests"
                " WHERE request_hash = ?",
                (request_hash,),
            ).fetchone()
            return None if row is None else EmailRequest(row[0], row[1], int(row[2]), bool(row[3]))

        return await self._run(fn)

    async def collect_email_request(self, request_hash: bytes) -> EmailRequest | None:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> EmailRequest | None:
            row = db.execute(
                "SELECT email, identity_omni, expires_at, verified FROM email_requests"
                " WHERE request_hash = ? AND verified = 1",
                (request_hash,),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM email_requests WHERE request_hash = ?", (request_hash,))
            return EmailRequest(row[0], row[1], int(row[2]), True)

        return await self._run(fn)

    # -- sessions ----------------------------------------------------------------------------

    async def add_session(self, record: SessionRecord) -> None:
        """See :class:`StateStore`."""
        await self._run(
            lambda db: db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (record.jti, record.stage, record.subject, record.expires_at, int(record.revoked)),
            )
        )

    async def get_session(self, jti: str) -> SessionRecord | None:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> SessionRecord | None:
            row = db.execute(
                "SELECT jti, stage, subject, expires_at, revoked FROM sessions WHERE jti = ?",
                (jti,),
            ).fetchone()
            return None if row is None else SessionRecord(
                row[0], row[1], row[2], int(row[3]), bool(row[4])
            )

        return await self._run(fn)

    async def revoke_session(self, jti: str) -> bool:
        """See :class:`StateStore`."""
        return await self._run(
            lambda db: db.execute("UPDATE sessions SET revoked = 1 WHERE jti = ?", (jti,)).rowcount
            > 0
        )

    async def revoke_subject(self, subject: str) -> int:
        """See :class:`StateStore`."""
        return await self._run(
            lambda db: db.execute(
                "UPDATE sessions SET revoked = 1 WHERE subject = ? AND revoked = 0", (subject,)
            ).rowcount
        )

    # -- challenges --------------------------------------------------------------------------

    async def add_challenge(
        self, *, challenge_id: str, purpose: str, session_jti: str, payload: dict[str, str],
        expires_at: int,
    ) -> None:
        """See :class:`StateStore`."""
        text = json.dumps(payload, sort_keys=True)
        await self._run(
            lambda db: db.execute(
                "INSERT INTO challenges VALUES (?, ?, ?, ?, ?)",
                (challenge_id, purpose, session_jti, text, expires_at),
            )
        )

    async def take_challenge(
        self, *, challenge_id: str, purpose: str, session_jti: str, now: int
    ) -> dict[str, str] | None:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> dict[str, str] | None:
            row = db.execute(
                "SELECT purpose, session_jti, payload, expires_at FROM challenges"
                " WHERE challenge_id = ?",
                (challenge_id,),
            ).fetchone()
            if row is None or row[0] != purpose or row[1] != session_jti:
                return None
            db.execute("DELETE FROM challenges WHERE challenge_id = ?", (challenge_id,))
            if int(row[3]) < now:
                return None
            payload: dict[str, str] = json.loads(row[2])
            return payload

        return await self._run(fn)

    # -- credentials -------------------------------------------------------------------------

    async def add_credential(self, credential: PasskeyCredential) -> None:
        """See :class:`StateStore`."""
        await self._run(
            lambda db: db.execute(
                "INSERT INTO credentials VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    credential.credential_id,
                    credential.identity_omni,
                    credential.public_key,
                    credential.sign_count,
                    credential.k10_point,
                    credential.rp_id,
                    credential.created_at,
                ),
            )
        )

    async def credentials_of(self, identity_omni: str) -> list[PasskeyCredential]:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> list[PasskeyCredential]:
            rows = db.execute(
                "SELECT identity_omni, credential_id, public_key, sign_count, k10_point, rp_id,"
                " created_at FROM credentials WHERE identity_omni = ? ORDER BY created_at",
                (identity_omni,),
            ).fetchall()
            return [
                PasskeyCredential(r[0], bytes(r[1]), bytes(r[2]), int(r[3]), bytes(r[4]), r[5],
                                  int(r[6]))
                for r in rows
            ]

        return await self._run(fn)

    async def update_sign_count(self, credential_id: bytes, *, old: int, new: int) -> bool:
        """See :class:`StateStore`."""
        return await self._run(
            lambda db: db.execute(
                "UPDATE credentials SET sign_count = ? WHERE credential_id = ? AND sign_count = ?",
                (new, credential_id, old),
            ).rowcount
            == 1
        )

    # -- nonces ------------------------------------------------------------------------------

    async def consume_nonce(self, key: bytes, *, expires_at: int, now: int) -> bool:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT expires_at FROM nonces WHERE key = ?", (key,)).fetchone()
            if row is not None and int(row[0]) >= now:
                return False
            db.execute("INSERT OR REPLACE INTO nonces VALUES (?, ?)", (key, expires_at))
            return True

        return await self._run(fn)

    # -- legacy scope ------------------------------------------------------------------------

    async def set_legacy_scope(
        self, operator_omni: str, actor_omni: str, services: tuple[str, ...], read_only: bool
    ) -> None:
        """See :class:`StateStore`."""
        text = json.dumps(sorted(set(services)))
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO legacy_scope VALUES (?, ?, ?, ?)",
                (operator_omni, actor_omni, text, int(read_only)),
            )
        )

    async def get_legacy_scope(self, operator_omni: str, actor_omni: str) -> LegacyScope | None:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> LegacyScope | None:
            row = db.execute(
                "SELECT services, read_only FROM legacy_scope"
                " WHERE operator_omni = ? AND actor_omni = ?",
                (operator_omni, actor_omni),
            ).fetchone()
            if row is None:
                return None
            return LegacyScope(tuple(json.loads(row[0])), bool(row[1]))

        return await self._run(fn)

    async def delete_legacy_scope(self, operator_omni: str, actor_omni: str) -> bool:
        """See :class:`StateStore`."""
        return await self._run(
            lambda db: db.execute(
                "DELETE FROM legacy_scope WHERE operator_omni = ? AND actor_omni = ?",
                (operator_omni, actor_omni),
            ).rowcount
            > 0
        )

    # -- mints -------------------------------------------------------------------------------

    async def add_mint_record(self, record: MintRecord) -> None:
        """See :class:`StateStore`."""
        await self._run(
            lambda db: db.execute(
                "INSERT INTO mints (cap_nonce, op, operator_omni, actor_omni, service,"
                " device_key_hash, k3_epoch, scope_source, issued_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.cap_nonce,
                    record.op,
                    record.operator_omni,
                    record.actor_omni,
                    record.service,
                    record.device_key_hash,
                    record.k3_epoch,
                    record.scope_source,
                    record.issued_at,
                ),
            )
        )

    async def mint_records(self, limit: int = 100) -> list[MintRecord]:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> list[MintRecord]:
            rows = db.execute(
                "SELECT cap_nonce, op, operator_omni, actor_omni, service, device_key_hash,"
                " k3_epoch, scope_source, issued_at FROM mints ORDER BY seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                MintRecord(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7], int(r[8]))
                for r in rows
            ]

        return await self._run(fn)

    async def purge_expired(self, now: int) -> None:
        """See :class:`StateStore`."""

        def fn(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM email_requests WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM challenges WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))

        await self._run(fn)
