"""Cap key sources: a configured JWKS, and the broker's JWKS fetched over HTTP and cached."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.jwks import JsonWebKeySet
from agentkeys.service import (
    PUBLIC,
    BoundAddress,
    Call,
    JsonObject,
    MemoryAudit,
    Route,
    ServerSettings,
    ServiceApp,
    serve_http,
)
from agentkeys.worker import CapKeysUnavailable, FetchedCapKeys, StaticCapKeys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwks_of(*keys: ec.EllipticCurvePrivateKey) -> JsonWebKeySet:
    return JsonWebKeySet.from_public_keys([k.public_key() for k in keys])


async def test_static_keys() -> None:
    keys = jwks_of(ec.generate_private_key(ec.SECP256R1()))
    assert await StaticCapKeys(keys).keys_for("any") == keys.by_kid


async def test_fetched_keys_refresh_on_rotation_and_are_rate_limited(
    nursery: trio.Nursery,
) -> None:
    served: dict[str, JsonObject] = {}
    hits = [0]

    async def jwks(call: Call) -> JsonObject:
        hits[0] += 1
        return served["jwks"]

    app = ServiceApp("test-broker", (Route("jwks", "GET", "/v1/cap/jwks.json", jwks),),
                     {"jwks": PUBLIC}, audit=MemoryAudit())  # fmt: skip
    bound: BoundAddress = await nursery.start(partial(serve_http, app, ServerSettings(), tls=None))
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    served["jwks"] = jwks_of(old).to_dict()
    (old_kid,) = jwks_of(old).by_kid
    (new_kid,) = jwks_of(new).by_kid
    clock = Clock()
    async with httpx.AsyncClient(base_url=bound.url, trust_env=False) as http:
        source = FetchedCapKeys(http, "/v1/cap/jwks.json", ttl=300, min_refetch=10, clock=clock)
        assert set(await source.keys_for(old_kid)) == {old_kid}
        assert set(await source.keys_for(old_kid)) == {old_kid}
        assert hits[0] == 1  # cached

        served["jwks"] = jwks_of(old, new).to_dict()  # K1 rotation at the broker
        assert new_kid not in await source.keys_for(new_kid)  # too soon to refetch
        clock.now += 11
        assert set(await source.keys_for(new_kid)) == {old_kid, new_kid}
        assert hits[0] == 2
        clock.now += 11
        await source.keys_for("unknown-kid")
        assert hits[0] == 3
        await source.keys_for("unknown-kid")
        assert hits[0] == 3  # unknown kids cannot make the worker hammer the broker

        served["jwks"] = {"keys": "broken"}
        clock.now += 301
        assert set(await source.keys_for(old_kid)) == {old_kid, new_kid}  # keeps the last good
        await source.keys_for(old_kid)
        assert hits[0] == 4  # a failed refresh is retried after min_refetch, not per call

        empty = FetchedCapKeys(http, "/v1/cap/jwks.json", clock=clock)
        with pytest.raises(CapKeysUnavailable, match="invalid"):
            await empty.keys_for(old_kid)
