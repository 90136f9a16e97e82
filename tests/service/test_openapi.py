"""GET /openapi.json: the OpenAPI 3.1 document generated from the route and authorization tables."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

import httpx
import pytest

from agentkeys.pki import Role
from agentkeys.service import (
    OPENAPI_PATH,
    PUBLIC,
    Call,
    JsonObject,
    MemoryAudit,
    Peer,
    Route,
    ServiceApp,
    allow,
    decode,
)
from agentkeys.service.errors import BadRequest, RouteTableError


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    n: int


@dataclass(frozen=True)
class Body:
    name: str
    count: int
    ratio: float
    flag: bool
    kind: Literal["a", "b"]
    colour: Colour
    tags: list[str]
    inner: Inner
    extra: dict[str, object]
    maybe: str | None = None


async def _ok(call: Call) -> JsonObject:
    return {"ok": True}


def _app(*routes: Route, access: dict[str, object] | None = None) -> ServiceApp:
    table = access or {r.name: PUBLIC for r in routes}
    return ServiceApp("demo", routes, table, audit=MemoryAudit())  # type: ignore[arg-type]


def test_document_describes_routes_bodies_and_access() -> None:
    app = _app(
        Route("make", "POST", "/v1/make", _ok, request=Body),
        Route("item", "GET", "/v1/items/<item_id>", _ok, query=("view",)),
        access={"make": allow(Role.BROKER), "item": allow(Role.WORKER, Role.BROKER)},
    )
    doc = app.openapi
    assert doc["openapi"] == "3.1.0"
    make = doc["paths"]["/v1/make"]["post"]
    assert make["operationId"] == "make"
    assert make["security"] == [{"mutualTLS": []}]
    assert make["x-agentkeys-roles"] == ["broker"]
    assert make["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Body"
    }
    body = doc["components"]["schemas"]["Body"]
    assert body["additionalProperties"] is False
    assert body["required"] == [
        "name",
        "count",
        "ratio",
        "flag",
        "kind",
        "colour",
        "tags",
        "inner",
        "extra",
    ]
    props = body["properties"]
    assert props["count"] == {"type": "integer"}
    assert props["kind"] == {"enum": ["a", "b"]}
    assert props["colour"] == {"enum": ["red", "blue"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["inner"] == {"$ref": "#/components/schemas/Inner"}
    assert props["extra"] == {"type": "object", "additionalProperties": {}}
    assert props["maybe"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    item = doc["paths"]["/v1/items/{item_id}"]["get"]
    assert item["parameters"] == [
        {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "view", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
    assert "4XX" in item["responses"]
    # the document is only for callers holding a role some route allows
    docs = doc["paths"][OPENAPI_PATH]["get"]
    assert docs["x-agentkeys-roles"] == ["broker", "worker"]


def test_an_answer_of_two_shapes_is_one_of_them() -> None:
    app = _app(Route("either", "GET", "/v1/either", _ok, responses={200: Inner | Body}))
    answer = app.openapi["paths"]["/v1/either"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {
        "oneOf": [{"$ref": "#/components/schemas/Inner"}, {"$ref": "#/components/schemas/Body"}]
    }
    assert app.openapi["components"]["schemas"]["Inner"]["additionalProperties"] is False


def test_schema_matches_what_the_decoder_accepts() -> None:
    good = {
        "name": "x",
        "count": 1,
        "ratio": 1,
        "flag": True,
        "kind": "a",
        "colour": "red",
        "tags": ["t"],
        "inner": {"n": 2},
        "extra": {"k": [1]},
    }
    assert decode(Body, good).inner == Inner(2)
    for broken in (
        {**good, "count": True},
        {**good, "other": 1},
        {**good, "kind": "c"},
        {k: v for k, v in good.items() if k != "name"},
    ):
        with pytest.raises(BadRequest):
            decode(Body, broken)


async def test_document_is_served_public_when_any_route_is_public() -> None:
    app = _app(Route("make", "POST", "/v1/make", _ok, request=Body))
    transport = httpx.ASGITransport(app=app.with_peer(Peer(role=None)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(OPENAPI_PATH)
    assert response.status_code == 200
    assert response.json() == app.openapi
    assert response.headers["cache-control"] == "no-store"


async def test_document_of_an_mtls_service_needs_an_allowed_role() -> None:
    audit = MemoryAudit()
    app = ServiceApp(
        "demo", [Route("make", "POST", "/v1/make", _ok)], {"make": allow(Role.WORKER)}, audit=audit
    )
    for peer, status in (
        (Peer(role=None), 401),
        (Peer(role=Role.BROKER), 403),
        (Peer(role=Role.WORKER), 200),
    ):
        transport = httpx.ASGITransport(app=app.with_peer(peer))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get(OPENAPI_PATH)).status_code == status
    assert [(e.route, e.status, e.outcome) for e in audit.events] == [
        ("openapi", 401, "denied"),
        ("openapi", 403, "denied"),
        ("openapi", 200, "ok"),
    ]


def test_openapi_route_name_and_path_are_reserved() -> None:
    with pytest.raises(RouteTableError):
        _app(Route("openapi", "GET", "/x", _ok))
    with pytest.raises(RouteTableError):
        _app(Route("docs", "GET", OPENAPI_PATH, _ok))


def test_undocumentable_request_type_fails_at_start_up() -> None:
    @dataclass(frozen=True)
    class Odd:
        when: bytes

    with pytest.raises(RouteTableError):
        _app(Route("odd", "POST", "/odd", _ok, request=Odd))
