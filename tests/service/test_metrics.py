"""/metrics, /healthz and /readyz of the service base (every signer, broker and worker app)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest
import trio

from agentkeys.pki import Role
from agentkeys.service import (
    BoundAddress,
    MemoryAudit,
    Peer,
    Route,
    ServerSettings,
    ServiceApp,
    ServiceMetrics,
    allow,
    serve_http,
)
from agentkeys.service.errors import RouteTableError
from tests.metrics_scrape import grew, parse, scrape, value
from tests.service._app_fixture import AUTHORIZATION, ROUTES, make_app, whoami


def client_as(app: ServiceApp, role: Role | None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app.with_peer(Peer(role=role)))
    return httpx.AsyncClient(transport=transport, base_url="http://svc")


async def test_a_denial_increments_its_counter_by_exactly_one() -> None:
    app = make_app(MemoryAudit())
    async with client_as(app, Role.WORKER) as client:
        before = await scrape(client)
        assert (await client.get("/broker-only")).json()["error"] == "forbidden"
        after = await scrape(client)
    assert grew(before, after, "agentkeys_denials_total", error="forbidden") == pytest.approx(1.0)
    assert value(
        after, "agentkeys_http_requests_total", route="broker_only", status="403"
    ) == pytest.approx(1.0)
    # the scrape itself is counted as a request, never as a denial
    assert value(after, "agentkeys_denials_total", error="forbidden") == pytest.approx(1.0)


async def test_requests_are_counted_by_route_name_status_and_timed() -> None:
    app = make_app(MemoryAudit())
    async with client_as(app, Role.BROKER) as client:
        for _ in range(3):
            assert (await client.post("/echo", json={"text": "a"})).status_code == 200
        assert (await client.get("/conflict")).status_code == 409
        samples = await scrape(client)
    assert value(
        samples, "agentkeys_http_requests_total", route="echo", status="200"
    ) == pytest.approx(3)
    assert value(samples, "agentkeys_http_request_duration_seconds_count", route="echo") == 3
    assert value(samples, "agentkeys_denials_total", error="test_conflict") == pytest.approx(1)
    assert value(samples, "agentkeys_service_info", service="testsvc") == 1
    assert ("agentkeys_heartbeat_age_seconds", frozenset()) not in samples  # the daemon's only


async def test_a_raw_path_never_becomes_a_label() -> None:
    app = make_app(MemoryAudit())
    async with client_as(app, Role.BROKER) as client:
        assert (await client.get("/v1/actor-0xdeadbeef/token-abc")).status_code == 404
        response = await client.get("/metrics")
    assert "deadbeef" not in response.text
    assert "token-abc" not in response.text
    samples = parse(response.text)
    assert value(
        samples, "agentkeys_http_requests_total", route="unmatched", status="404"
    ) == pytest.approx(1)
    assert value(samples, "agentkeys_denials_total", error="not_found") == pytest.approx(1)


async def test_two_services_in_one_process_keep_separate_counts() -> None:
    first, second = make_app(MemoryAudit()), make_app(MemoryAudit())
    async with client_as(first, Role.WORKER) as one, client_as(second, Role.WORKER) as two:
        await one.get("/broker-only")
        assert value(await scrape(one), "agentkeys_denials_total", error="forbidden") == 1
        assert value(await scrape(two), "agentkeys_denials_total", error="forbidden") == 0


async def test_health_and_readiness() -> None:
    problems: list[str] = []

    async def readiness() -> Sequence[str]:
        return problems

    app = ServiceApp("testsvc", ROUTES, AUTHORIZATION, audit=MemoryAudit(), readiness=readiness)
    async with client_as(app, None) as client:  # ROUTES has a public route: so are these
        assert (await client.get("/healthz")).json() == {"status": "alive"}
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "problems": []})
        problems.append("chain_unreachable")
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not_ready", "problems": ["chain_unreachable"]}


async def test_operations_routes_of_an_mtls_only_service_need_a_certificate() -> None:
    routes = (Route("whoami", "GET", "/whoami", whoami),)
    app = ServiceApp("mtls", routes, {"whoami": allow(Role.BROKER)}, audit=MemoryAudit())
    async with client_as(app, None) as anonymous, client_as(app, Role.BROKER) as broker:
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await anonymous.get(path)).status_code == 401
            assert (await broker.get(path)).status_code == 200


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_the_operations_routes_are_the_bases_own(path: str) -> None:
    routes = (*ROUTES, Route("mine", "GET", path, whoami))
    with pytest.raises(RouteTableError):
        ServiceApp("testsvc", routes, {**AUTHORIZATION, "mine": AUTHORIZATION["public"]},
                   audit=MemoryAudit())  # fmt: skip


async def test_scraping_over_a_real_server(nursery: trio.Nursery) -> None:
    app = make_app(MemoryAudit())
    bound: BoundAddress = await nursery.start(
        lambda task_status: serve_http(app, ServerSettings(), tls=None, task_status=task_status)
    )
    async with httpx.AsyncClient(base_url=bound.url) as client:
        assert (await client.get("/broker-only")).status_code == 401
        samples = await scrape(client)
    assert value(samples, "agentkeys_denials_total", error="unauthenticated") == pytest.approx(1)
    nursery.cancel_scope.cancel()


def test_gauges_read_at_scrape_time_exist_only_where_a_source_is_set() -> None:
    metrics = ServiceMetrics("testsvc")
    lag: list[int | None] = [None]
    assert ("agentkeys_chain_head_lag_blocks", frozenset()) not in parse(metrics.render().decode())
    metrics.chain_lag_from(lambda: lag[0])
    assert value(parse(metrics.render().decode()), "agentkeys_chain_head_lag_blocks") == -1
    lag[0] = 3
    assert value(parse(metrics.render().decode()), "agentkeys_chain_head_lag_blocks") == 3
