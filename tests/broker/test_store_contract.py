"""The StateStore contract on both backends: single use under concurrency, across stores
sharing one database (replicas), sign counts never backwards, signing keys, migrations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from agentkeys.broker import PostgresStateStore, SqliteStateStore, StateStore
from agentkeys.broker._email import hash_secret
from agentkeys.broker._store import PasskeyCredential, SigningKeyRecord
from agentkeys.broker._store_postgres import MIGRATIONS as PG_MIGRATIONS
from agentkeys.broker._store_sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from agentkeys.broker.errors import StoreError
from agentkeys.devstack import Postgres
from tests.broker.conftest import StoreOpener

ATTEMPTS = 16


async def race(attempts: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run every attempt at once; their results in order."""
    results: list[Any] = [None] * len(attempts)

    async def one(index: int) -> None:
        results[index] = await attempts[index]()

    async with trio.open_nursery() as nursery:
        for index in range(len(attempts)):
            nursery.start_soon(one, index)
    return results


async def replicas(open_store: StoreOpener, count: int = 3) -> list[StateStore]:
    return [await open_store() for _ in range(count)]


async def test_a_nonce_raced_on_every_replica_is_spent_once(open_store: StoreOpener) -> None:
    stores = await replicas(open_store)
    attempts = [
        partial(s.consume_nonce, b"raced", expires_at=1000, now=10)
        for s in stores * (ATTEMPTS // len(stores))
    ]
    assert sum(await race(attempts)) == 1
    for store in stores:  # spent everywhere until its window ends, then free again
        assert not await store.consume_nonce(b"raced", expires_at=1000, now=999)
    assert await stores[1].consume_nonce(b"raced", expires_at=3000, now=1001)
    assert not await stores[2].consume_nonce(b"raced", expires_at=3000, now=1002)


async def test_an_email_link_is_followed_and_collected_once(open_store: StoreOpener) -> None:
    a, b, c = await replicas(open_store)
    await a.add_email_request(
        token_hash=hash_secret("t"), request_hash=hash_secret("h"), email="x@y.z",
        identity_omni="11" * 32, expires_at=1000,
    )  # fmt: skip
    followed = await race(
        [partial(s.follow_email_link, hash_secret("t"), now=5) for s in (a, b, c) * 4]
    )
    assert len([f for f in followed if f is not None]) == 1
    request = await c.get_email_request(hash_secret("h"))
    assert request is not None
    assert request.verified  # followed on one replica, verified for all
    collected = await race(
        [partial(s.collect_email_request, hash_secret("h")) for s in (a, b, c) * 4]
    )
    assert [r.identity_omni for r in collected if r is not None] == ["11" * 32]


async def test_an_expired_link_is_spent_but_not_verified(state_store: StateStore) -> None:
    await state_store.add_email_request(
        token_hash=hash_secret("t"), request_hash=hash_secret("h"), email="x@y.z",
        identity_omni="11" * 32, expires_at=100,
    )  # fmt: skip
    followed = await state_store.follow_email_link(hash_secret("t"), now=101)
    assert followed is not None
    assert followed.expires_at == 100
    assert not followed.verified
    assert await state_store.collect_email_request(hash_secret("h")) is None


async def test_a_challenge_is_taken_once(open_store: StoreOpener) -> None:
    stores = await replicas(open_store)
    await stores[0].add_challenge(
        challenge_id="c", purpose="siwe", session_jti="j", payload={"nonce": "n"},
        expires_at=100,
    )  # fmt: skip
    taken = await race(
        [
            partial(s.take_challenge, challenge_id="c", purpose="siwe", session_jti="j", now=1)
            for s in stores * 4
        ]
    )
    assert [t for t in taken if t is not None] == [{"nonce": "n"}]


async def test_a_device_challenge_is_taken_once_and_only_by_its_device(
    open_store: StoreOpener,
) -> None:
    stores = await replicas(open_store)
    device, other = "0d" * 32, "0e" * 32
    assert await stores[0].add_device_challenge(
        b"c" * 32, device_key_hash=device, expires_at=100, now=1, limit=3
    )
    # another device's attempt neither takes it nor spends it
    assert not await stores[1].take_device_challenge(b"c" * 32, device_key_hash=other, now=2)
    taken = await race(
        [
            partial(s.take_device_challenge, b"c" * 32, device_key_hash=device, now=2)
            for s in stores * 4
        ]
    )
    assert sum(taken) == 1
    assert not await stores[2].take_device_challenge(b"c" * 32, device_key_hash=device, now=3)


async def test_an_expired_device_challenge_is_spent_but_refused(state_store: StateStore) -> None:
    assert await state_store.add_device_challenge(
        b"e" * 32, device_key_hash="0d" * 32, expires_at=100, now=1, limit=3
    )
    taken = await state_store.take_device_challenge(b"e" * 32, device_key_hash="0d" * 32, now=101)
    assert not taken
    assert not await state_store.take_device_challenge(b"e" * 32, device_key_hash="0d" * 32, now=1)


async def test_pending_device_challenges_are_bounded_per_device(open_store: StoreOpener) -> None:
    stores = await replicas(open_store)
    device = "0d" * 32

    def add(store: StateStore, index: int, *, now: int = 1) -> Any:
        return store.add_device_challenge(
            bytes([index]) * 32, device_key_hash=device, expires_at=100, now=now, limit=2
        )

    assert await add(stores[0], 1)
    assert await add(stores[1], 2)
    assert not await add(stores[2], 3)  # the bound holds across replicas
    assert await stores[0].add_device_challenge(
        b"\x09" * 32, device_key_hash="0e" * 32, expires_at=100, now=1, limit=2
    )  # another device has its own bound
    assert await stores[2].take_device_challenge(b"\x01" * 32, device_key_hash=device, now=2)
    assert await add(stores[2], 3)  # a taken one frees its place
    assert await add(stores[0], 4, now=101)  # expired ones do not count


async def test_sign_counts_move_forward_once(open_store: StoreOpener) -> None:
    stores = await replicas(open_store)
    await stores[0].add_credential(PasskeyCredential("i", b"id", b"k", 3, b"\0" * 64, "rp", 1))
    moved = await race([partial(s.update_sign_count, b"id", old=3, new=4) for s in stores * 4])
    assert sum(moved) == 1
    assert not await stores[1].update_sign_count(b"id", old=4, new=2)  # never backwards
    assert not await stores[1].update_sign_count(b"id", old=4, new=4)
    assert not await stores[2].update_sign_count(b"id", old=4, new=0)
    assert (await stores[2].credentials_of("i"))[0].sign_count == 4
    await stores[0].add_credential(PasskeyCredential("i", b"zero", b"k", 0, b"\0" * 64, "rp", 2))
    assert await stores[1].update_sign_count(b"zero", old=0, new=0)  # no counter: 0 stays 0
    assert await stores[2].update_sign_count(b"zero", old=0, new=7)


async def test_revocation_is_seen_by_every_replica(open_store: StoreOpener) -> None:
    from agentkeys.broker._store import SessionRecord

    a, b, c = await replicas(open_store)
    await a.add_session(SessionRecord("j1", "j1", "sub", 1000, False))
    await a.add_session(SessionRecord("j2", "j1", "sub", 1000, False))
    assert await b.revoke_session("j1")
    assert not await b.revoke_session("missing")
    record = await c.get_session("j1")
    assert record is not None
    assert record.revoked
    assert await c.revoke_subject("sub") == 1  # j2 only: j1 already was


def key_record(purpose: str, generation: int, *, activates_at: int = 0) -> SigningKeyRecord:
    return SigningKeyRecord(
        purpose=purpose, generation=generation, kid=f"{purpose}-{generation}",
        sealed=b"sealed", created_at=1, activates_at=activates_at, retires_at=None,
    )  # fmt: skip


async def test_signing_keys_insert_once_and_retire_their_predecessors(
    open_store: StoreOpener,
) -> None:
    a, b = await replicas(open_store, 2)
    first = key_record("cap", 1)
    attempts = [partial(s.add_signing_key, first, retire_others_at=None) for s in [a, b] * 4]
    added = await race(attempts)
    assert sum(added) == 1
    assert await a.add_signing_key(key_record("oidc", 1), retire_others_at=None)
    # two rotations racing for generation 2: one wins, and retires generation 1 only
    rotated = await race(
        [
            partial(s.add_signing_key, key_record("cap", 2, activates_at=50), retire_others_at=500)
            for s in (a, b)
        ]
    )
    assert sorted(rotated) == [False, True]
    keys = await b.signing_keys("cap")
    assert [(k.generation, k.retires_at) for k in keys] == [(1, 500), (2, None)]
    assert (await a.signing_keys("oidc"))[0].retires_at is None  # another purpose
    same_kid = SigningKeyRecord("cap", 3, "cap-2", b"x", 1, 60, None)
    assert not await a.add_signing_key(same_kid, retire_others_at=600)  # kid is unique
    assert [k.retires_at for k in await a.signing_keys("cap")] == [500, None]
    await a.purge_expired(501)
    assert [k.generation for k in await b.signing_keys("cap")] == [2]


async def test_opening_again_migrates_nothing(open_store: StoreOpener) -> None:
    first = await open_store()
    await first.consume_nonce(b"kept", expires_at=10**9, now=1)
    again = await open_store()
    assert not await again.consume_nonce(b"kept", expires_at=10**9, now=2)
    versions = await schema_versions(again)
    assert versions == sorted(m.version for m in SQLITE_MIGRATIONS)
    assert versions == sorted(m.version for m in PG_MIGRATIONS)


async def schema_versions(store: Any) -> list[int]:
    result = await store._db.execute("SELECT version FROM schema_migrations ORDER BY version")
    return [int(row[0]) for row in result.rows]


async def test_a_schema_from_a_newer_broker_is_refused(open_store: StoreOpener) -> None:
    store = await open_store()
    await store._db.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (99, 1)
    )
    with pytest.raises(StoreError, match="schema version 99"):
        await open_store()


async def test_sqlite_adopts_a_database_from_before_migrations(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state" / "broker.sqlite3"
    path.parent.mkdir(mode=0o700)
    legacy = sqlite3.connect(path)
    for statement in SQLITE_MIGRATIONS[0].statements:
        legacy.execute(statement)
    legacy.execute("INSERT INTO nonces VALUES (?, ?)", (b"old", 10**9))
    legacy.commit()
    legacy.close()
    path.chmod(0o600)
    store = await SqliteStateStore.open(path)
    try:
        assert not await store.consume_nonce(b"old", expires_at=10**9, now=1)  # data kept
        assert await schema_versions(store) == [1, 2, 3]
        assert await store.add_signing_key(key_record("cap", 1), retire_others_at=None)
    finally:
        await store.aclose()


async def test_postgres_refuses_a_wrong_password_without_echoing_it(
    postgres: Postgres, postgres_database: str
) -> None:
    wrong = "not-the-password-0123456789"
    with pytest.raises(StoreError) as caught:
        await PostgresStateStore.open(postgres_database, password=wrong, connect_timeout=3)
    assert "password authentication failed" in caught.value.reason
    assert wrong not in caught.value.reason
    assert postgres.password not in caught.value.reason


async def test_postgres_unreachable_is_a_store_error(postgres: Postgres) -> None:
    from agentkeys.devstack import pick_port

    dsn = f"host=127.0.0.1 port={pick_port()} user=agentkeys dbname=postgres"
    with pytest.raises(StoreError, match="cannot open the PostgreSQL state store"):
        await PostgresStateStore.open(dsn, password="x", connect_timeout=1)
