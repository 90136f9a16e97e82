"""Schema-driven fuzzing of the broker's HTTP API against a real running broker.

The requests are generated from the broker's own ``GET /openapi.json`` (see
tests/fuzz/openapi_strategies.py) and sent over a real socket, anonymous and with real J0,
J1 and device sessions. For every request: no 5xx and no crash; every refusal is a 4xx whose body is
exactly ``{error, reason}``; and the audit sink holds one row per request with the same
status (denials as ``denied``). Examples are drawn deterministically in ``make test``
(``derandomize``), randomly and many more under ``--hypothesis-profile=fuzz``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from agentkeys.broker import J0, ROUTES, SESSION_REQUIREMENTS
from agentkeys.broker._email_signin import EmailSignIn, EmailStarted, EmailStartRequest
from agentkeys.broker._shell import check_handler
from agentkeys.cap import CapOp
from agentkeys.pop import PopProof, new_mint_pop_claims, sign_pop
from agentkeys.service import OPENAPI_PATH
from agentkeys.service.errors import RouteTableError
from tests.broker._flow import j1_for, sign_in
from tests.broker.conftest import Operator, RunningBroker
from tests.fuzz import openapi_strategies as oas

QUICK_REQUESTS = 120


def collect(doc: dict[str, Any], bearer: list[str], known: list[str]) -> list[oas.Request]:
    """Draw the requests up front (the broker lives in this test's Trio run)."""
    drawn: list[oas.Request] = []
    fuzz = settings.get_current_profile_name() == "fuzz"

    @settings(
        max_examples=2_000 if fuzz else QUICK_REQUESTS,
        derandomize=not fuzz,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=oas.requests(doc, bearer, known))
    def draw(request: oas.Request) -> None:
        drawn.append(request)

    draw()
    # revoking one of the sessions ends its usefulness: do that last
    return sorted(drawn, key=lambda r: r.path == "/v1/auth/session/revoke")


async def test_openapi_document_lists_every_broker_route(broker: RunningBroker) -> None:
    response = await broker.http.get(OPENAPI_PATH)
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"] == "3.1.0"
    listed = {op["operationId"] for _, _, op in oas.operations(doc)}
    assert listed == set(SESSION_REQUIREMENTS) | {"openapi", "healthz", "readyz", "metrics"}
    assert all(op["security"] == [] for _, _, op in oas.operations(doc))  # sessions, not mTLS
    # the document is generated from the one declaration: each route at its method and path,
    # with a request schema exactly when it decodes a body
    operations = {(method, path): op for method, path, op in oas.operations(doc)}
    for route in ROUTES:
        operation = operations[(route.method, route.path)]
        assert operation["operationId"] == route.name
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        assert ("$ref" in body.get("schema", {})) == (route.request is not None), route.name
        query = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        assert tuple(query) == check_handler(route), route.name
    verify = operations[("GET", "/v1/auth/email/verify")]
    assert verify["parameters"] == [
        {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}}
    ]


def test_each_route_declares_the_body_its_handler_decodes() -> None:
    """ROUTES is read by the OpenAPI document and by the shell, which gives each core method
    the body decoded into the declared type: a handler whose ``request`` (or answer, or
    session) annotation names another type than its declaration fails the check the broker
    runs at start-up (here: cap_fetch served by a method that decodes an email request),
    and a declaration naming another request or answer is caught the same way."""
    for route in ROUTES:
        check_handler(route)
    mint = next(route for route in ROUTES if route.name == "cap_fetch")
    with pytest.raises(RouteTableError):
        check_handler(dataclasses.replace(mint, handler=EmailSignIn.start))
    with pytest.raises(RouteTableError):
        check_handler(dataclasses.replace(mint, request=EmailStartRequest))
    with pytest.raises(RouteTableError):
        check_handler(dataclasses.replace(mint, request=None))
    with pytest.raises(RouteTableError):
        check_handler(dataclasses.replace(mint, response=EmailStarted))


def test_the_api_reference_lists_every_broker_route() -> None:
    """docs/api.md names each route by method and path (a route added without docs fails)."""
    text = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    missing = [
        f"{route.method} {route.path}"
        for route in ROUTES
        if not re.search(rf"\| {route.method} \| `{re.escape(route.path)}[`?]", text)
    ]
    assert not missing


async def test_broker_api_survives_schema_driven_fuzzing(
    broker: RunningBroker, operator: Operator
) -> None:
    doc = (await broker.http.get(OPENAPI_PATH)).json()
    j1 = await j1_for(broker, operator)
    j0, _ = await broker.service.sessions.issue(
        stage=J0, subject="ab" * 32, now=int(time.time()), lifetime=600, extra={"email": "a@b.c"}
    )
    claims = new_mint_pop_claims(
        op=CapOp.FETCH,
        operator_omni=operator.omni,
        actor_omni=operator.omni,
        service="openai",
        device_key_hash=operator.master.hash,
        now=int(time.time()),
    )
    proof = PopProof(claims.timestamp, claims.nonce, sign_pop(claims, operator.master.key))
    device = await sign_in(broker, operator.master)
    assert device.status_code == 200, device.text
    known = [
        operator.omni,
        operator.master.hash,
        proof.to_header_value(),
        "openai",
        operator.wallet.address,
        operator.passkey.public_point.hex(),
    ]
    drawn = collect(doc, [j0, j1, device.json()["session"]], known)
    before = len(broker.audit.events)
    statuses: list[int] = []
    for request in drawn:
        response = await broker.http.request(
            request.method, request.path, headers=request.headers, content=request.content
        )
        statuses.append(response.status_code)
        where = request.describe()
        assert response.status_code < 500, (where, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error", "reason"}, where
            assert isinstance(body["error"], str), where
            assert isinstance(body["reason"], str), where
    events = broker.audit.events[before:]
    assert [e.status for e in events] == statuses
    for event in events:
        if event.status in (401, 403):
            assert event.outcome == "denied", event
            assert event.error, event
        elif event.status is not None and event.status >= 400:
            assert event.outcome in ("error", "denied"), event
            assert event.error, event
    # the run reached past the front door: some requests were decoded and judged
    assert any(400 <= s < 500 and s not in (401, 404, 405, 415) for s in statuses)
