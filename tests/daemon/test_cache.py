"""The credential cache: TTL, cap expiry, bound, single flight, negative cache, wipes."""

from __future__ import annotations

import pytest
import trio

from agentkeys.daemon.cache import CredentialCache
from agentkeys.daemon.credentials import Credential
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable, ScopeRevoked
from attest.errors import TpmUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A counting credential source over a dict (the real sources are tested elsewhere)."""

    def __init__(self, clock: Clock, lifetime: float = 1000.0) -> None:
        self.calls: list[str] = []
        self.clock = clock
        self.lifetime = lifetime
        self.gate: trio.Event | None = None
        self.refuse = False

    async def fetch(self, service: str) -> Credential:
        self.calls.append(service)
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse:
            raise CredentialRefused("no")
        return Credential(
            secret=f"sk-{service}-{len(self.calls)}".encode(),
            expires_at=self.clock() + self.lifetime,
        )


async def test_ttl_and_cap_expiry() -> None:
    clock = Clock()
    source = Source(clock)
    cache = CredentialCache(ttl=300, clock=clock)
    first = await cache.get("openai", source.fetch)
    assert await cache.get("openai", source.fetch) is first
    clock.now += 301
    assert (await cache.get("openai", source.fetch)).secret == b"sk-openai-2"
    short = Source(clock, lifetime=10)
    cache2 = CredentialCache(ttl=300, clock=clock)
    await cache2.get("x", short.fetch)
    clock.now += 11
    await cache2.get("x", short.fetch)
    assert len(short.calls) == 2


async def test_concurrent_misses_fetch_once() -> None:
    clock = Clock()
    source = Source(clock)
    source.gate = trio.Event()
    cache = CredentialCache(clock=clock)
    results: list[bytes] = []

    async def one() -> None:
        results.append((await cache.get("openai", source.fetch)).secret)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        source.gate.set()
    assert source.calls == ["openai"]
    assert results == [b"sk-openai-1"] * 5


async def test_negative_cache() -> None:
    clock = Clock()
    source = Source(clock)
    source.refuse = True
    cache = CredentialCache(negative_ttl=5, clock=clock)
    for _ in range(3):
        with pytest.raises(CredentialRefused):
            await cache.get("openai", source.fetch)
    assert len(source.calls) == 1
    clock.now += 6
    source.refuse = False
    assert (await cache.get("openai", source.fetch)).secret == b"sk-openai-2"


async def test_a_device_key_failure_is_negative_cached_like_any_refusal() -> None:
    # attest's errors have their own root; the K10 failing to sign a PoP is still a refusal
    clock = Clock()
    calls = 0

    async def no_tpm(service: str) -> Credential:
        nonlocal calls
        calls += 1
        raise TpmUnavailable("no TPM reachable")

    cache = CredentialCache(negative_ttl=5, clock=clock)
    for _ in range(2):
        with pytest.raises(TpmUnavailable, match="no TPM reachable"):
            await cache.get("openai", no_tpm)
    assert calls == 1


async def test_bounded_and_wiped() -> None:
    clock = Clock()
    source = Source(clock)
    cache = CredentialCache(max_entries=2, clock=clock)
    for name in ("a", "b", "c"):
        await cache.get(name, source.fetch)
    assert len(cache) == 2
    cache.drop(frozenset({"b"}))
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


async def test_revocation_during_fetch_refuses_waiters() -> None:
    clock = Clock()
    source = Source(clock)
    source.gate = trio.Event()
    cache = CredentialCache(clock=clock)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await cache.get("openai", source.fetch)
            outcomes.append("served")
        except ScopeRevoked:
            outcomes.append("refused")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        cache.drop(frozenset({"openai"}))
        source.gate.set()
    assert outcomes == ["refused", "refused"]
    assert len(cache) == 0


async def test_dropping_another_service_spares_a_fetch_in_flight() -> None:
    clock = Clock()
    source = Source(clock)
    cache = CredentialCache(clock=clock)
    await cache.get("b", source.fetch)
    source.gate = trio.Event()
    served: list[bytes] = []

    async def one() -> None:
        served.append((await cache.get("openai", source.fetch)).secret)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert cache.services() == frozenset({"openai", "b"})
        cache.drop(frozenset({"b"}))  # e.g. "b" left the chain scope
        source.gate.set()
    assert served == [b"sk-openai-2"]
    assert cache.services() == frozenset({"openai"})


def test_credential_rejects_non_header_safe_secrets() -> None:
    with pytest.raises(CredentialUnavailable) as info:
        Credential(secret=b"sk-bad\r\nx: y", expires_at=0)
    assert "sk-bad" not in info.value.reason
    assert "sk-real" not in repr(Credential(secret=b"sk-real", expires_at=0))


async def test_a_refused_revalidation_purges_the_entry() -> None:
    """After ``revalidate`` seconds a hit fetches again; a refusal (the worker's
    credential_not_found after a teardown) replaces the entry: the key is no longer served."""
    clock = Clock()
    source = Source(clock)
    cache = CredentialCache(ttl=300, revalidate=30, negative_ttl=5, clock=clock)
    first = await cache.get("openai", source.fetch)
    clock.now += 29
    assert await cache.get("openai", source.fetch) is first
    assert source.calls == ["openai"]
    clock.now += 2
    source.refuse = True
    with pytest.raises(CredentialRefused):
        await cache.get("openai", source.fetch)
    source.refuse = False
    with pytest.raises(CredentialRefused):  # remembered for negative_ttl, never the old key
        await cache.get("openai", source.fetch)
    clock.now += 6
    assert (await cache.get("openai", source.fetch)).secret == b"sk-openai-3"


async def test_a_failed_revalidation_keeps_serving_until_the_ttl() -> None:
    clock = Clock()
    source = Source(clock)
    cache = CredentialCache(ttl=300, revalidate=30, negative_ttl=5, clock=clock)
    first = await cache.get("openai", source.fetch)

    async def down(service: str) -> Credential:
        source.calls.append(service)
        raise CredentialUnavailable("worker unreachable: ConnectError")

    clock.now += 31
    assert await cache.get("openai", down) is first
    assert await cache.get("openai", down) is first  # no retry within negative_ttl
    assert len(source.calls) == 2
    clock.now += 6
    assert await cache.get("openai", down) is first
    assert len(source.calls) == 3
    clock.now += 300
    with pytest.raises(CredentialUnavailable):
        await cache.get("openai", down)
