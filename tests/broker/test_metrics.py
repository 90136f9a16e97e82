"""The broker's /metrics, /healthz and /readyz: requests, denials, the chain view's cache."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from agentkeys.broker import CachedChainView
from agentkeys.chain.watcher import ChainWatcher
from tests.broker.conftest import Chain, RunningBroker
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


async def test_the_chain_head_lag_is_the_newest_head_read_minus_the_last_block_applied(
    broker: RunningBroker, chain: Chain, nursery: trio.Nursery
) -> None:
    lag = "agentkeys_chain_head_lag_blocks"
    following = broker.service.chain
    assert value(await scrape(broker.http), lag) >= 0  # the broker's own view follows
    # a view whose watcher, once caught up, waits an hour before it polls again
    view = CachedChainView(following._reader)
    watcher = ChainWatcher(
        chain.client.rpc, chain.deployment.addresses, start_block=chain.deployment.block_number
    )
    broker.service.chain = view
    try:
        assert value(await scrape(broker.http), lag) == -1  # not following yet
        await nursery.start(partial(view.follow, watcher, poll_interval=3600))
        head = await chain.client.block_number()
        with trio.fail_after(30):  # a guard against hanging, not a timing assertion
            while view.synced_through is None or view.synced_through < head:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert value(await scrape(broker.http), lag) == 0
        await chain.client.rpc.call("anvil_mine", hex(5))
        await view.epoch()  # a mint's read asks the node for its head: 5 blocks unapplied
        assert value(await scrape(broker.http), lag) == 5
    finally:
        broker.service.chain = following
