"""serve_http over real sockets: mutual TLS, roles per route, refusals, shutdown.

This is also the regression test for running Hypercorn's internal per-connection
server (hypercorn.trio.tcp_server.TCPServer) behind our own TLS accept loop.
"""

from __future__ import annotations

import importlib.metadata
import ssl
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from agentkeys.pki import CertificateRejected, Role
from agentkeys.service import (
    AuditEvent,
    BoundAddress,
    MemoryAudit,
    ServerSettings,
    ServerTls,
    mtls_client,
    serve_http,
)
from tests.service._app_fixture import make_app
from tests.service.conftest import Pki, self_signed_certificate


def test_hypercorn_version_is_the_pinned_one() -> None:
    # _serve.py drives Hypercorn's internal TCPServer; re-check it on any upgrade.
    assert importlib.metadata.version("hypercorn") == "0.18.0"


async def _start(
    nursery: trio.Nursery, pki: Pki, audit: MemoryAudit, **overrides: object
) -> BoundAddress:
    settings = ServerSettings(
        tls_cert=pki.cert("signer"),
        tls_key=pki.key("signer"),
        tls_client_ca=pki.ca,
        **overrides,  # type: ignore[arg-type]
    )
    app = make_app(audit)
    bound: BoundAddress = await nursery.start(
        partial(serve_http, app, settings, tls=ServerTls.from_settings(settings))
    )
    return bound


def _client(bound: BoundAddress, pki: Pki, name: str) -> httpx.AsyncClient:
    return mtls_client(base_url=bound.url, ca=pki.ca, cert=pki.cert(name), key=pki.key(name))


async def test_broker_and_worker_reach_their_routes(nursery: trio.Nursery, pki: Pki) -> None:
    audit = MemoryAudit()
    bound = await _start(nursery, pki, audit)
    assert bound.tls
    assert bound.host == "127.0.0.1"
    async with _client(bound, pki, "broker") as broker, _client(bound, pki, "worker") as worker:
        r = await broker.post("/echo", json={"text": "ab", "count": 2, "tags": ["x"]})
        assert r.status_code == 200
        assert r.json() == {"text": "abab", "tags": ["x"], "role": "broker"}
        assert r.headers["cache-control"] == "no-store"
        r = await worker.post("/echo", json={"text": "z"})
        assert r.json()["role"] == "worker"
        r = await broker.get("/broker-only")
        assert r.status_code == 200
        assert r.json() == {"role": "broker"}
    rows = [e for e in audit.events if e.route == "echo"]
    assert [e.peer_role for e in rows] == ["broker", "worker"]
    assert rows[0].outcome == "ok"
    assert rows[0].fields == {"count": 2}


async def test_body_over_the_bound_gets_413(nursery: trio.Nursery, pki: Pki) -> None:
    audit = MemoryAudit()
    bound = await _start(nursery, pki, audit)  # the test app bounds bodies at 1024 bytes
    async with _client(bound, pki, "worker") as worker:
        r = await worker.post("/echo", json={"text": "x" * 2000})
        assert r.status_code == 413
        assert r.json()["error"] == "body_too_large"
        small = await worker.post("/echo", json={"text": "x" * 900})
        assert small.status_code == 200


async def test_worker_is_forbidden_on_a_broker_only_route(nursery: trio.Nursery, pki: Pki) -> None:
    audit = MemoryAudit()
    bound = await _start(nursery, pki, audit)
    async with _client(bound, pki, "worker") as worker:
        r = await worker.get("/broker-only")
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    denial = audit.events[-1]
    assert (denial.outcome, denial.peer_role, denial.route) == ("denied", "worker", "broker_only")


async def _refused(url: str, context: ssl.SSLContext) -> None:
    async with httpx.AsyncClient(verify=context, trust_env=False) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(url + "/public")


def _client_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    return ctx


async def test_connection_without_client_certificate_is_refused(
    nursery: trio.Nursery, pki: Pki
) -> None:
    audit = WatchedAudit()
    bound = await _start(nursery, pki, audit)
    await _refused(bound.url, _client_context(pki.ca))
    await _wait_for(audit, "connection_refused")
    refusal = next(e for e in audit.events if e.kind == "connection_refused")
    assert refusal.outcome == "denied"
    assert refusal.peer_role is None
    assert not [e for e in audit.events if e.kind == "request"]


async def test_self_signed_client_certificate_is_refused(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    audit = WatchedAudit()
    bound = await _start(nursery, pki, audit)
    cert, key = self_signed_certificate(tmp_path, "broker")
    ctx = _client_context(pki.ca)
    ctx.load_cert_chain(str(cert), str(key))
    await _refused(bound.url, ctx)
    await _wait_for(audit, "connection_refused")


async def test_certificate_from_another_ca_is_refused(
    nursery: trio.Nursery, pki: Pki, foreign_pki: Pki
) -> None:
    audit = WatchedAudit()
    bound = await _start(nursery, pki, audit)
    ctx = _client_context(pki.ca)
    ctx.load_cert_chain(str(foreign_pki.cert("broker")), str(foreign_pki.key("broker")))
    await _refused(bound.url, ctx)
    await _wait_for(audit, "connection_refused")


async def test_server_certificate_cannot_be_used_as_a_client(
    nursery: trio.Nursery, pki: Pki
) -> None:
    audit = MemoryAudit()
    bound = await _start(nursery, pki, audit)
    ctx = _client_context(pki.ca)
    ctx.load_cert_chain(str(pki.cert("signer")), str(pki.key("signer")))
    await _refused(bound.url, ctx)


async def test_client_refuses_a_server_of_another_role(nursery: trio.Nursery, pki: Pki) -> None:
    audit = MemoryAudit()
    bound = await _start(nursery, pki, audit)
    async with mtls_client(
        base_url=bound.url,
        ca=pki.ca,
        cert=pki.cert("broker"),
        key=pki.key("broker"),
        expected_role=Role.BROKER,
    ) as client:
        with pytest.raises(CertificateRejected):
            await client.get("/public")


async def test_client_refuses_a_server_from_another_ca(
    nursery: trio.Nursery, pki: Pki, foreign_pki: Pki
) -> None:
    audit = MemoryAudit()
    bound = await _start(nursery, foreign_pki, audit)
    async with _client(bound, pki, "broker") as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/public")


async def test_plain_http_callers_are_anonymous(nursery: trio.Nursery) -> None:
    audit = MemoryAudit()
    app = make_app(audit)
    bound: BoundAddress = await nursery.start(partial(serve_http, app, ServerSettings(), tls=None))
    assert bound.url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=bound.url, trust_env=False) as client:
        assert (await client.get("/public")).json() == {"role": None}
        r = await client.get("/broker-only")
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"


async def test_graceful_shutdown_returns(pki: Pki) -> None:
    audit = MemoryAudit()
    stop = trio.Event()
    app = make_app(audit)
    settings = ServerSettings()
    async with trio.open_nursery() as nursery:
        bound: BoundAddress = await nursery.start(
            partial(serve_http, app, settings, tls=None, shutdown_trigger=stop.wait)
        )
        async with httpx.AsyncClient(base_url=bound.url, trust_env=False) as client:
            assert (await client.get("/public")).status_code == 200
        stop.set()
    # the nursery exited by itself: the server returned after the trigger
    async with httpx.AsyncClient(base_url=bound.url, trust_env=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/public")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.1", "localhost"])
def test_only_loopback_addresses_are_accepted(host: str) -> None:
    from agentkeys.config import ConfigError

    with pytest.raises(ConfigError):
        ServerSettings(host=host)


def test_partial_tls_settings_are_refused(pki: Pki) -> None:
    from agentkeys.config import ConfigError

    with pytest.raises(ConfigError):
        ServerSettings(tls_cert=pki.cert("signer"), tls_key=pki.key("signer"))


class WatchedAudit(MemoryAudit):
    """Records events and signals the first refused connection."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = trio.Event()

    async def record(self, event: AuditEvent) -> None:
        await super().record(event)
        if event.kind == "connection_refused":
            self.refused.set()


async def _wait_for(audit: MemoryAudit, kind: str) -> None:
    # the server records the refusal concurrently with the client's error
    assert isinstance(audit, WatchedAudit)
    assert kind == "connection_refused"
    with trio.fail_after(5):
        await audit.refused.wait()


async def test_connections_beyond_the_bound_are_refused(nursery: trio.Nursery) -> None:
    audit = WatchedAudit()
    settings = ServerSettings(max_connections=1, keep_alive_timeout=60)
    bound: BoundAddress = await nursery.start(
        partial(serve_http, make_app(audit), settings, tls=None)
    )
    holder = await trio.open_tcp_stream(bound.host, bound.port)
    try:
        await holder.send_all(b"GET /public HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in await holder.receive_some(4096)  # the one slot is taken and kept
        async with httpx.AsyncClient(base_url=bound.url, trust_env=False) as client:
            with pytest.raises(httpx.TransportError):
                await client.get("/public")
        await _wait_for(audit, "connection_refused")
        refusal = next(e for e in audit.events if e.kind == "connection_refused")
        assert refusal.reason == "too many connections"
    finally:
        await holder.aclose()
