"""The shared :class:`~agentkeys.broker._store.StateStore`: PostgreSQL, for broker replicas.

Driver: psycopg 3 (``psycopg[binary]``) with a ``psycopg_pool.ConnectionPool``. psycopg's
async API is asyncio-only, and no maintained Trio-native PostgreSQL driver exists, so the
blocking API runs in worker threads (``trio.to_thread.run_sync``) under a
``trio.CapacityLimiter`` as large as the pool: at most one thread per pooled connection, and
the loop never blocks on the network.

Connections are autocommit: a single statement is its own transaction (one round trip, and
each single-use rule is one statement: ``agentkeys.broker._store_sql``); several statements
run inside an explicit transaction. Every statement is bounded by ``statement_timeout``.

Secrets: the DSN must not carry a password (``agentkeys.broker.config.StateSettings``); the
password, if any, comes from a 0600 file and is handed to libpq as a keyword, never
formatted into a string, a log line or an error reason. Errors name the exception class only.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import trio
from psycopg_pool import ConnectionPool

from agentkeys.broker._store_sql import Migration, Result, SqlStateStore, Transaction, migrate
from agentkeys.broker.errors import StoreError

__all__ = ["MIGRATIONS", "PostgresStateStore"]

T = TypeVar("T")

#: Key of the advisory lock that serialises migrations of replicas starting at once.
_MIGRATION_LOCK = 0x61676B73  # "agks"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, (
        "CREATE TABLE email_requests ("
        " token_hash BYTEA UNIQUE, request_hash BYTEA PRIMARY KEY, email TEXT NOT NULL,"
        " identity_omni TEXT NOT NULL, expires_at BIGINT NOT NULL, verified BOOLEAN NOT NULL)",
        "CREATE INDEX email_identity ON email_requests(identity_omni)",
        "CREATE TABLE sessions ("
        " jti TEXT PRIMARY KEY, stage TEXT NOT NULL, subject TEXT NOT NULL,"
        " expires_at BIGINT NOT NULL, revoked BOOLEAN NOT NULL)",
        "CREATE INDEX sessions_subject ON sessions(subject)",
        "CREATE TABLE challenges ("
        " challenge_id TEXT PRIMARY KEY, purpose TEXT NOT NULL, session_jti TEXT NOT NULL,"
        " payload TEXT NOT NULL, expires_at BIGINT NOT NULL)",
        "CREATE TABLE credentials ("
        " credential_id BYTEA PRIMARY KEY, identity_omni TEXT NOT NULL,"
        " public_key BYTEA NOT NULL, sign_count BIGINT NOT NULL, k10_point BYTEA NOT NULL,"
        " rp_id TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "CREATE INDEX credentials_identity ON credentials(identity_omni)",
        "CREATE TABLE nonces (key BYTEA PRIMARY KEY, expires_at BIGINT NOT NULL)",
        "CREATE TABLE legacy_scope ("
        " operator_omni TEXT NOT NULL, actor_omni TEXT NOT NULL, services TEXT NOT NULL,"
        " read_only BOOLEAN NOT NULL, PRIMARY KEY (operator_omni, actor_omni))",
        "CREATE TABLE mints ("
        " seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, cap_nonce TEXT NOT NULL,"
        " op TEXT NOT NULL, operator_omni TEXT NOT NULL, actor_omni TEXT NOT NULL,"
        " service TEXT NOT NULL, device_key_hash TEXT NOT NULL, k3_epoch BIGINT NOT NULL,"
        " scope_source TEXT NOT NULL, issued_at BIGINT NOT NULL)",
    )),
    Migration(2, (
        "CREATE TABLE signing_keys ("
        " purpose TEXT NOT NULL, generation INTEGER NOT NULL, kid TEXT NOT NULL UNIQUE,"
        " sealed BYTEA NOT NULL, created_at BIGINT NOT NULL, activates_at BIGINT NOT NULL,"
        " retires_at BIGINT, PRIMARY KEY (purpose, generation))",
        "CREATE INDEX nonces_expiry ON nonces(expires_at)",
        "CREATE INDEX sessions_expiry ON sessions(expires_at)",
    )),
    Migration(3, (
        "CREATE TABLE device_challenges ("
        " challenge BYTEA PRIMARY KEY, device_key_hash TEXT NOT NULL,"
        " expires_at BIGINT NOT NULL)",
        "CREATE INDEX device_challenges_device ON device_challenges(device_key_hash)",
    )),
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """``?`` → ``%s`` (our statements hold no literal ``?`` or ``%``)."""
    return sql.replace("?", "%s")


Connection = psycopg.Connection[tuple[Any, ...]]


def _execute(connection: Connection, sql: str, params: Sequence[object]) -> Result:
    cursor = connection.execute(_placeholders(sql), tuple(params))
    rows = cursor.fetchall() if cursor.description is not None else []
    return Result(rows=rows, rowcount=cursor.rowcount)


class _PgTransaction:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> Result:
        return _execute(self._connection, sql, params)


class _PgDatabase:
    def __init__(self, pool: ConnectionPool[Connection], *, size: int) -> None:
        self._pool = pool
        self._limiter = trio.CapacityLimiter(size)

    def transaction(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in one transaction on a pooled connection (blocking)."""
        with self._pool.connection() as connection, connection.transaction():
            return fn(_PgTransaction(connection))

    def _statement(self, sql: str, params: Sequence[object]) -> Result:
        with self._pool.connection() as connection:
            return _execute(connection, sql, params)

    async def _thread(self, fn: Callable[[], T]) -> T:
        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        except psycopg.Error as exc:
            raise StoreError(f"the PostgreSQL state store failed ({type(exc).__name__})") from exc

    async def run(self, fn: Callable[[Transaction], T]) -> T:
        return await self._thread(functools.partial(self.transaction, fn))

    async def execute(self, sql: str, params: Sequence[object] = ()) -> Result:
        return await self._thread(functools.partial(self._statement, sql, params))

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._pool.close)


class PostgresStateStore(SqlStateStore):
    """:class:`~agentkeys.broker._store.StateStore` on PostgreSQL (module docstring).

    Open with :meth:`open`; close with :meth:`aclose` (closes the pool).

    Raises:
        StoreError: PostgreSQL is unreachable, refused us, or a statement failed.
    """

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        password: str | None = None,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        statement_timeout: float = 5.0,
    ) -> PostgresStateStore:
        """Connect a pool of up to ``pool_size`` connections and apply the migrations.

        Args:
            dsn: a libpq connection string or URI without a password.
            password: the role's password (from a 0600 file), or None (peer / trust auth,
                or libpq's own 0600 ``passfile``).
            pool_size: the most connections (and worker threads) used at once.
            connect_timeout: seconds to wait for the first connection.
            statement_timeout: seconds a statement may run before PostgreSQL cancels it.
        """
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout)),
            "options": f"-c statement_timeout={round(statement_timeout * 1000)}",
            "application_name": "agentkeys-broker",
        }
        if password is not None:
            kwargs["password"] = password
        pool: ConnectionPool[Connection] = ConnectionPool(
            dsn, kwargs=kwargs, min_size=1, max_size=pool_size, open=False,
            timeout=connect_timeout, name="agentkeys-broker",
        )  # fmt: skip

        def _open() -> None:
            # One direct connection first: it fails fast with libpq's reason (the pool only
            # retries and times out), and migrates before the pool serves anyone.
            with psycopg.connect(dsn, **kwargs) as connection, connection.transaction():
                tx = _PgTransaction(connection)
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                migrate(tx, MIGRATIONS, now=int(time.time()))
            pool.open(wait=True, timeout=connect_timeout)

        try:
            await trio.to_thread.run_sync(_open)
        except (psycopg.Error, StoreError) as exc:
            await trio.to_thread.run_sync(pool.close)
            if isinstance(exc, StoreError):
                raise
            # libpq's first line says why (never a password: none is in the DSN or message)
            why = (str(exc).strip().splitlines() or [""])[0][:200]
            raise StoreError(
                f"cannot open the PostgreSQL state store ({type(exc).__name__}: {why})"
            ) from exc
        return cls(_PgDatabase(pool, size=pool_size))
