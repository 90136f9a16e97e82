"""The broker's /metrics, /healthz and /readyz: requests, denials, the chain view's cache."""

from __future__ import annotations

import pytest

from agentkeys.broker import CachedChainView
from tests.broker.conftest import RunningBroker
from tests.metrics_scrape import grew, scrape, value


async def test_scrape_health_and_a_denial_counted_once(broker: RunningBroker) -> None:
    http = broker.http
    assert (await http.get("/healthz")).json() == {"status": "alive"}
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "problems": []})
    before = await scrape(http)
    refused = await http.get("/v1/auth/session")  # no session token
    assert refused.status_code == 401
    error = refused.json()["error"]
    after = await scrape(http)
    assert grew(before, after, "agentkeys_denials_total", error=error) == pytest.approx(1)
    assert value(
        after, "agentkeys_http_requests_total", route="session_info", status="401"
    ) == pytest.approx(1)
    assert value(after, "agentkeys_service_info", service="broker") == 1
    # the chain view's own counters, read at scrape time
    lookups = "agentkeys_cache_lookups_total"
    assert (lookups, frozenset({("cache", "chain_view"), ("result", "hit")})) in after
    assert value(after, lookups, cache="chain_view", result="hit") == broker.view.hits
    assert value(after, lookups, cache="chain_view", result="miss") == broker.view.misses


async def test_not_ready_while_the_chain_view_is_not_synced(broker: RunningBroker) -> None:
    following = broker.service.chain
    # a view the watcher has not synced yet (or lost the chain: it then records None too)
    broker.service.chain = CachedChainView(following._reader)
    try:
        ready = await broker.http.get("/readyz")
    finally:
        broker.service.chain = following
    assert ready.status_code == 503
    assert ready.json()["problems"] == ["chain_not_synced"]
    assert (await broker.http.get("/healthz")).status_code == 200
    assert (await broker.http.get("/readyz")).status_code == 200
