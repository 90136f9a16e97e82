"""The shared key set on both backends: one set for every replica, rotation without a window
in which a cap minted by one replica fails against the JWKS a worker fetched from another."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agentkeys.broker._keys import KeySeal, Rotation, SharedKeySet
from agentkeys.broker._store import SigningKeyRecord
from agentkeys.broker.config import StateSettings
from agentkeys.broker.errors import StoreError
from agentkeys.cap import CapOp, new_cap_payload, sign_cap, verify_cap
from agentkeys.config import ConfigError
from agentkeys.errors import InvalidKeyMaterial
from agentkeys.jwks import JsonWebKeySet
from tests.broker.conftest import StoreOpener
from tests.broker.test_store_contract import race

LEAD = 100
LIFETIME = 50
REFRESH = 5
WORKER_TTL = 60  # how stale a worker's JWKS may be: must stay below LEAD - REFRESH
AUD = "agentkeys-worker"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def key_sets(
    open_store: StoreOpener, seal: KeySeal, clock: Clock, count: int
) -> list[SharedKeySet]:
    stores = [await open_store() for _ in range(count)]
    opens = [
        partial(SharedKeySet.open, store, seal, publish_lead=LEAD, refresh_interval=REFRESH,
                overlap={"cap": LIFETIME, "oidc": LIFETIME, "session": LIFETIME}, clock=clock)
        for store in stores
    ]  # fmt: skip
    result: list[SharedKeySet] = await race(opens)  # replicas starting at once
    return result


@pytest.fixture
async def seal(tmp_path: Path) -> KeySeal:
    return await KeySeal.open(tmp_path / "seal" / "seal.key")


def mint(keys: SharedKeySet, now: float) -> str:
    payload = new_cap_payload(
        op=CapOp.FETCH, operator_omni="aa" * 32, actor_omni="aa" * 32, service="openai",
        device_key_hash="bb" * 32, k3_epoch=1, aud=AUD, now=int(now), lifetime=LIFETIME,
    )  # fmt: skip
    key, kid = keys.keys.cap.signing_key()
    return sign_cap(payload, key, kid).to_token()


async def test_replicas_starting_at_once_share_one_key_set(
    open_store: StoreOpener, seal: KeySeal
) -> None:
    a, b, c = await key_sets(open_store, seal, Clock(), 3)
    for purpose in ("cap", "oidc", "session"):
        kids = {s.keys.ring(purpose).active_kid for s in (a, b, c)}
        assert len(kids) == 1
        assert {tuple(s.keys.ring(purpose).published.by_kid) for s in (a, b, c)} == {tuple(kids)}
    assert len({a.keys.cap.active_kid, a.keys.oidc.active_kid, a.keys.session.active_kid}) == 3


async def test_rotation_leaves_no_window_for_any_replica(
    open_store: StoreOpener, seal: KeySeal
) -> None:
    clock = Clock()
    a, b = await key_sets(open_store, seal, clock, 2)
    old = a.keys.cap.active_kid
    rotation = await b.rotate("cap")
    assert rotation.activates_at == int(clock.now) + LEAD
    assert rotation.previous_retire_at == rotation.activates_at + LIFETIME + REFRESH + 60
    start = clock.now
    # a worker's view: the JWKS it fetched from replica B at most WORKER_TTL seconds ago
    fetched: list[tuple[float, JsonWebKeySet]] = []
    minted: list[tuple[float, str]] = []
    signers_seen = set()
    while clock.now <= rotation.previous_retire_at + 2 * REFRESH:
        await a.refresh()
        await b.refresh()
        fetched.append((clock.now, b.keys.cap.published))
        cache = next(jwks for at, jwks in reversed(fetched) if at <= clock.now - WORKER_TTL) \
            if clock.now - WORKER_TTL >= start else fetched[0][1]  # fmt: skip
        token = mint(a, clock.now)
        signers_seen.add(a.keys.cap.active_kid)
        verify_cap(token, keys=cache.by_kid, expected_aud=AUD, now=clock.now)  # no window
        minted.append((clock.now, token))
        for at, earlier in minted:  # every cap still unexpired verifies against B's JWKS
            if clock.now < at + LIFETIME:
                verify_cap(earlier, keys=b.keys.cap.published.by_kid, expected_aud=AUD,
                           now=clock.now)  # fmt: skip
        if clock.now < rotation.activates_at:
            assert a.keys.cap.active_kid == old  # published first, not yet signing
            assert rotation.kid in b.keys.cap.published.by_kid
        clock.now += REFRESH
    assert signers_seen == {old, rotation.kid}
    assert a.keys.cap.active_kid == rotation.kid
    assert set(a.keys.cap.published.by_kid) == {rotation.kid}  # the old key retired
    assert a.keys.oidc.active_kid != rotation.kid  # other purposes untouched


async def test_concurrent_rotations_store_one_key(open_store: StoreOpener, seal: KeySeal) -> None:
    a, b = await key_sets(open_store, seal, Clock(), 2)
    outcomes: list[Any] = []

    async def rotate(keys: SharedKeySet) -> None:
        try:
            outcomes.append(await keys.rotate("oidc"))
        except StoreError as exc:
            outcomes.append(exc)

    await race([partial(rotate, a), partial(rotate, b)])
    await a.refresh()
    stored = [o for o in outcomes if isinstance(o, Rotation)]
    # Overlapping rotations claim one generation: exactly one stores it, the other is told
    # to run again. Two rotations that happen not to overlap both store, one after another;
    # never two keys of one generation.
    assert len({r.generation for r in stored}) == len(stored)
    assert len(a.keys.oidc.published.by_kid) == 1 + len(stored)
    if len(stored) == 1:
        assert [type(o).__name__ for o in outcomes if o not in stored] == ["StoreError"]


async def test_the_store_keeps_one_key_per_generation(
    open_store: StoreOpener, seal: KeySeal
) -> None:
    """The rule under concurrent rotations, without relying on timing: a second key of a
    generation already stored is refused by the store's one atomic insert."""
    await key_sets(open_store, seal, Clock(), 1)
    store = await open_store()
    (current,) = await store.signing_keys("oidc")
    nxt = SigningKeyRecord("oidc", current.generation + 1, "kid-a", current.sealed,
                           current.created_at, current.activates_at, None)  # fmt: skip
    twin = SigningKeyRecord("oidc", current.generation + 1, "kid-b", current.sealed,
                            current.created_at, current.activates_at, None)  # fmt: skip
    assert await store.add_signing_key(nxt, retire_others_at=current.activates_at + 10)
    assert not await store.add_signing_key(twin, retire_others_at=current.activates_at + 10)
    assert [r.kid for r in await store.signing_keys("oidc") if r.generation == nxt.generation] == [
        "kid-a"
    ]


async def test_a_key_sealed_elsewhere_or_moved_is_refused(
    open_store: StoreOpener, seal: KeySeal, tmp_path: Path
) -> None:
    (shared,) = await key_sets(open_store, seal, Clock(), 1)
    store = await open_store()
    other_seal = await KeySeal.open(tmp_path / "other" / "seal.key")
    with pytest.raises(InvalidKeyMaterial, match="same file"):
        await SharedKeySet.open(store, other_seal, publish_lead=LEAD,
                                overlap={"cap": 1, "oidc": 1, "session": 1})  # fmt: skip
    (cap,) = await store.signing_keys("cap")
    moved = SigningKeyRecord("oidc", cap.generation, cap.kid, cap.sealed, cap.created_at,
                             cap.activates_at, cap.retires_at)  # fmt: skip
    with pytest.raises(InvalidKeyMaterial, match="another purpose"):
        await seal.unseal(moved)
    (session,) = await store.signing_keys("session")
    swapped = SigningKeyRecord("cap", 1, cap.kid, session.sealed, 1, 1, None)
    with pytest.raises(InvalidKeyMaterial):
        await seal.unseal(swapped)
    assert shared.keys.cap.active_kid == cap.kid


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "postgres"}, "needs state.dsn"),
        ({"backend": "postgres", "dsn": "host=db user=b password=hunter2"}, "password"),
        ({"backend": "postgres", "dsn": "postgresql://b:hunter2@db/agentkeys"}, "password"),
        ({"backend": "postgres", "dsn": "host='unclosed"}, "not a libpq"),
        ({"dsn": "host=db"}, "need backend = postgres"),
    ],
)
def test_state_settings_refuse_unsafe_or_incomplete_postgres(
    tmp_path: Path, fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        StateSettings(dir=tmp_path, **fields)  # type: ignore[arg-type]


def test_state_settings_accept_a_dsn_without_password(tmp_path: Path) -> None:
    settings = StateSettings(dir=tmp_path, backend="postgres", dsn="host=/run/pg dbname=ak")
    assert settings.dsn == "host=/run/pg dbname=ak"
