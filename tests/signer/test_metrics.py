"""The signer's /metrics, /healthz and /readyz over mutual TLS."""

from __future__ import annotations

import pytest

from tests.metrics_scrape import grew, scrape, value
from tests.service.conftest import Pki
from tests.signer.conftest import RunningSigner


async def test_scrape_health_and_a_denial_counted_once(signer: RunningSigner, pki: Pki) -> None:
    async with signer.client(pki, "broker") as broker, signer.client(pki, "worker") as worker:
        assert (await broker.get("/healthz")).json() == {"status": "alive"}
        ready = await broker.get("/readyz")
        assert (ready.status_code, ready.json()["problems"]) == (200, [])
        before = await scrape(broker)
        refused = await worker.post("/k4/address", json={"email": "a@example.com"})
        assert refused.json()["error"] == "forbidden"
        after = await scrape(worker)
    assert grew(before, after, "agentkeys_denials_total", error="forbidden") == pytest.approx(1)
    assert value(
        after, "agentkeys_http_requests_total", route="k4_address", status="403"
    ) == pytest.approx(1)
    assert value(after, "agentkeys_service_info", service="signer") == 1
