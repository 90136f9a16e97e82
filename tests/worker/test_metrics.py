"""The worker's /metrics, /healthz and /readyz: requests, denials, the STS credential cache."""

from __future__ import annotations

import httpx
import pytest

from tests.metrics_scrape import grew, scrape, value
from tests.worker.conftest import Stack

SECRET = b"sk-metrics-test"


async def test_scrape_health_a_denial_and_cache_hits(stack: Stack) -> None:
    master = stack.operator.master
    async with httpx.AsyncClient(base_url=stack.worker_url, trust_env=False) as http:
        assert (await http.get("/healthz")).json() == {"status": "alive"}
        assert (await http.get("/readyz")).status_code == 200
        before = await scrape(http)
        no_proof = await stack.fetch(master, with_proof=False)
        assert (no_proof.status, no_proof.body["error"]) == (401, "pop_missing")
        middle = await scrape(http)
        assert (await stack.store_credential(master, "openai", SECRET)).status == 200
        assert (await stack.fetch(master)).status == 200
        after = await scrape(http)
        text = (await http.get("/metrics")).text
    denials = "agentkeys_denials_total"
    assert grew(before, middle, denials, error="pop_missing") == pytest.approx(1)
    assert value(after, denials, error="pop_missing") == value(middle, denials, error="pop_missing")
    ok = ("agentkeys_http_requests_total", "cred_fetch", "200")
    assert value(after, ok[0], route=ok[1], status=ok[2]) == pytest.approx(1)
    # one actor, one STS exchange: the store misses, the fetch that follows hits
    lookups = "agentkeys_cache_lookups_total"
    for result, expected in (("miss", 1), ("hit", 1)):
        counted = grew(middle, after, lookups, cache="sts_credentials", result=result)
        assert counted == pytest.approx(expected)
    # nothing that names an actor or a secret
    assert stack.operator.omni not in text
    assert SECRET.decode() not in text
