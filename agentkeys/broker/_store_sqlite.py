"""The embedded :class:`~agentkeys.broker._store.StateStore`: one SQLite file on one host.

One connection, one lock, each transaction ``BEGIN IMMEDIATE`` in a worker thread
(``trio.to_thread`` with a limiter of one), so the event loop never blocks on disk and
transactions never interleave. The file is 0600 inside a 0700 directory. Processes on the
same host may share the file (SQLite's own locking serialises their writers); replicas on
several hosts need :mod:`agentkeys.broker._store_postgres`.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import trio

from agentkeys.broker._store_sql import Migration, Result, SqlStateStore, Transaction, migrate
from agentkeys.broker.errors import StoreError
from agentkeys.config import InsecureFileError

__all__ = ["MIGRATIONS", "SqliteStateStore"]

T = TypeVar("T")

#: Version 1 is the schema from before migrations were numbered (``IF NOT EXISTS``, so a
#: database created then is adopted unchanged).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, (
        "CREATE TABLE IF NOT EXISTS email_requests ("
        " token_hash BLOB UNIQUE, request_hash BLOB PRIMARY KEY, email TEXT NOT NULL,"
        " identity_omni TEXT NOT NULL, expires_at INTEGER NOT NULL, verified INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS sessions ("
        " jti TEXT PRIMARY KEY, stage TEXT NOT NULL, subject TEXT NOT NULL,"
        " expires_at INTEGER NOT NULL, revoked INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS email_identity ON email_requests(identity_omni)",
        "CREATE INDEX IF NOT EXISTS sessions_subject ON sessions(subject)",
        "CREATE TABLE IF NOT EXISTS challenges ("
        " challenge_id TEXT PRIMARY KEY, purpose TEXT NOT NULL, session_jti TEXT NOT NULL,"
        " payload TEXT NOT NULL, expires_at INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS credentials ("
        " credential_id BLOB PRIMARY KEY, identity_omni TEXT NOT NULL, public_key BLOB NOT NULL,"
        " sign_count INTEGER NOT NULL, k10_point BLOB NOT NULL, rp_id TEXT NOT NULL,"
        " created_at INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS credentials_identity ON credentials(identity_omni)",
        "CREATE TABLE IF NOT EXISTS nonces (key BLOB PRIMARY KEY, expires_at INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS legacy_scope ("
        " operator_omni TEXT NOT NULL, actor_omni TEXT NOT NULL, services TEXT NOT NULL,"
        " read_only INTEGER NOT NULL, PRIMARY KEY (operator_omni, actor_omni))",
        "CREATE TABLE IF NOT EXISTS mints ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT, cap_nonce TEXT NOT NULL, op TEXT NOT NULL,"
        " operator_omni TEXT NOT NULL, actor_omni TEXT NOT NULL, service TEXT NOT NULL,"
        " device_key_hash TEXT NOT NULL, k3_epoch INTEGER NOT NULL,"
        " scope_source TEXT NOT NULL, issued_at INTEGER NOT NULL)",
    )),
    Migration(2, (
        "CREATE TABLE signing_keys ("
        " purpose TEXT NOT NULL, generation INTEGER NOT NULL, kid TEXT NOT NULL UNIQUE,"
        " sealed BLOB NOT NULL, created_at INTEGER NOT NULL, activates_at INTEGER NOT NULL,"
        " retires_at INTEGER, PRIMARY KEY (purpose, generation))",
        "CREATE INDEX nonces_expiry ON nonces(expires_at)",
        "CREATE INDEX sessions_expiry ON sessions(expires_at)",
    )),
    Migration(3, (
        "CREATE TABLE device_challenges ("
        " challenge BLOB PRIMARY KEY, device_key_hash TEXT NOT NULL,"
        " expires_at INTEGER NOT NULL)",
        "CREATE INDEX device_challenges_device ON device_challenges(device_key_hash)",
    )),
)  # fmt: skip


def _secure_directory(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)
    st = directory.stat()
    if st.st_mode & 0o077 or st.st_uid not in (os.geteuid(), 0):
        raise InsecureFileError(f"state directory {directory} must be 0700 and ours")


class _SqliteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> Result:
        cursor = self._db.execute(sql, tuple(params))
        rows = cursor.fetchall()
        return Result(rows=rows, rowcount=cursor.rowcount)


class _SqliteDatabase:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)

    def transaction(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in ``BEGIN IMMEDIATE`` … ``COMMIT`` (blocking; rolls back on error)."""
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            result = fn(_SqliteTransaction(self._connection))
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")
        return result

    async def run(self, fn: Callable[[Transaction], T]) -> T:
        async with self._lock:
            try:
                return await trio.to_thread.run_sync(self.transaction, fn, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise StoreError("the broker state database failed") from exc

    async def execute(self, sql: str, params: Sequence[object] = ()) -> Result:
        return await self.run(lambda tx: tx.execute(sql, params))

    async def aclose(self) -> None:
        async with self._lock:
            await trio.to_thread.run_sync(self._connection.close, limiter=self._limiter)


class SqliteStateStore(SqlStateStore):
    """:class:`~agentkeys.broker._store.StateStore` on one SQLite file (0600 in a 0700 dir).

    Open with :meth:`open`; close with :meth:`aclose`.

    Raises:
        InsecureFileError: the directory or file is accessible by others.
        StoreError: SQLite failed.
    """

    def __init__(self, db: _SqliteDatabase, path: Path) -> None:
        super().__init__(db)
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> SqliteStateStore:
        """Open (creating if needed) the database at ``path`` and apply its migrations."""

        def _open() -> _SqliteDatabase:
            _secure_directory(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                    raise InsecureFileError(f"state file {path} is accessible by others")
            finally:
                os.close(fd)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db = _SqliteDatabase(connection)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute("PRAGMA busy_timeout=5000")
                db.transaction(lambda tx: migrate(tx, MIGRATIONS, now=int(time.time())))
            except BaseException:
                connection.close()
                raise
            return db

        try:
            db = await trio.to_thread.run_sync(_open)
        except sqlite3.Error as exc:
            raise StoreError("cannot open the broker state database") from exc
        return cls(db, path)
