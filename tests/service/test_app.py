"""ServiceApp behaviour over a real plain-HTTP server: JSON errors, limits, audit, route table."""

from __future__ import annotations

import json
from functools import partial

import httpx
import pytest
import trio

from agentkeys.pki import Role
from agentkeys.service import (
    BoundAddress,
    Call,
    JsonObject,
    MemoryAudit,
    Peer,
    Route,
    ServerSettings,
    ServiceApp,
    allow,
    serve_http,
)
from agentkeys.service.errors import RouteTableError
from attest.errors import UnsealFailed
from tests.service._app_fixture import AUTHORIZATION, ROUTES, make_app, whoami

Served = tuple[httpx.AsyncClient, MemoryAudit]


@pytest.fixture
async def served(nursery: trio.Nursery) -> Served:
    """The test app served in-process, every request made as the broker (ASGITransport)."""
    audit = MemoryAudit()
    app = make_app(audit)
    transport = httpx.ASGITransport(app=app.with_peer(Peer(role=Role.BROKER)))
    client = httpx.AsyncClient(transport=transport, base_url="http://svc")
    return client, audit


async def _post_raw(
    client: httpx.AsyncClient, body: bytes, ctype: str = "application/json"
) -> httpx.Response:
    return await client.post("/echo", content=body, headers={"content-type": ctype})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "malformed_json"),
        (b"{", "malformed_json"),
        (b"[1]", "malformed_json"),
        (b'{"text": "a", "text": "b"}', "malformed_json"),
        (b'{"text": NaN}', "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "malformed_json"),
        (b'{"text": 5}', "wrong_type"),
        (b'{"text": "a", "count": true}', "wrong_type"),
        (b'{"text": "a", "count": 1.5}', "wrong_type"),
        (b'{"text": "a", "tags": ["x", 1]}', "wrong_type"),
        (b'{"count": 1}', "missing_field"),
        (b'{"text": "a", "admin": true}', "unknown_field"),
    ],
)
async def test_invalid_json_bodies_get_400(served: Served, body: bytes, error: str) -> None:
    client, audit = served
    r = await _post_raw(client, body)
    assert r.status_code == 400
    assert r.json()["error"] == error
    assert set(r.json()) == {"error", "reason"}
    assert audit.events[-1].error == error
    assert audit.events[-1].outcome == "error"


async def test_non_json_body_gets_415(served: Served) -> None:
    client, _ = served
    r = await _post_raw(client, b"text=a", "application/x-www-form-urlencoded")
    assert r.status_code == 415
    assert r.json()["error"] == "unsupported_media_type"


async def test_unknown_route_and_wrong_method_are_json(served: Served) -> None:
    client, audit = served
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    r = await client.get("/echo")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"
    assert [e.status for e in audit.events] == [404, 405]


async def test_domain_error_maps_to_its_status(served: Served) -> None:
    client, _ = served
    r = await client.get("/conflict")
    assert r.status_code == 409
    assert r.json() == {"error": "test_conflict", "reason": "already there"}


async def test_an_attest_error_keeps_its_code_and_status() -> None:
    # attest has its own exception root: a route whose sealed secret does not unseal answers
    # attest's code and status, audited as such, never a bare 500
    async def unseal(call: Call) -> JsonObject:
        raise UnsealFailed("the sealed key does not open here")

    audit = MemoryAudit()
    app = ServiceApp(
        "t", (Route("unseal", "GET", "/unseal", unseal),), {"unseal": allow(Role.BROKER)},
        audit=audit,
    )  # fmt: skip
    transport = httpx.ASGITransport(app=app.with_peer(Peer(role=Role.BROKER)))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        r = await client.get("/unseal")
    assert r.status_code == 500
    assert r.json() == {"error": "unseal_failed", "reason": "the sealed key does not open here"}
    assert (audit.events[-1].status, audit.events[-1].error) == (500, "unseal_failed")


async def test_unexpected_exception_is_a_bare_500(served: Served) -> None:
    client, audit = served
    r = await client.get("/crash")
    assert r.status_code == 500
    assert r.json()["error"] == "internal_error"
    assert "secret" not in r.text
    assert "secret" not in json.dumps(audit.events[-1].to_json())


async def test_anonymous_caller_is_refused_before_the_body_is_read(nursery: trio.Nursery) -> None:
    audit = MemoryAudit()
    app = make_app(audit, max_body_bytes=64)
    bound: BoundAddress = await nursery.start(
        partial(serve_http, app, ServerSettings(max_body_bytes=64), tls=None)
    )
    async with httpx.AsyncClient(base_url=bound.url, trust_env=False) as client:
        r = await client.post("/echo", json={"text": "x" * 200})
    assert r.status_code == 401
    assert audit.events[-1].outcome == "denied"


def test_route_without_authorization_fails_at_start_up() -> None:
    routes = (*ROUTES, Route("extra", "GET", "/extra", whoami))
    with pytest.raises(RouteTableError, match="extra"):
        ServiceApp("t", routes, AUTHORIZATION, audit=MemoryAudit())


def test_authorization_without_route_fails_at_start_up() -> None:
    table = {**AUTHORIZATION, "ghost": allow(Role.BROKER)}
    with pytest.raises(RouteTableError, match="ghost"):
        ServiceApp("t", ROUTES, table, audit=MemoryAudit())


def test_duplicate_routes_fail_at_start_up() -> None:
    routes = (*ROUTES, Route("public2", "GET", "/public", whoami))
    table = {**AUTHORIZATION, "public2": allow(Role.BROKER)}
    with pytest.raises(RouteTableError):
        ServiceApp("t", routes, table, audit=MemoryAudit())


def test_allow_needs_a_role() -> None:
    with pytest.raises(RouteTableError):
        allow()
