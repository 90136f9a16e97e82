"""The Quart-Trio application of a service: routes, one authorization table, JSON errors.

A service declares its routes (:class:`Route`: name, method, path, handler)
and, separately, ONE authorization table mapping every route name to the
:class:`Access` it needs. :class:`ServiceApp` refuses to start when a route
has no entry (or an entry names no route), so no route is ever reachable
without a decision. Per request, in order:

1. the caller (:class:`Peer`, set per connection by the server from the TLS
   client certificate) is checked against the route's access: no role → 401,
   wrong role → 403, before the body is read;
2. a body, if any, must be ``application/json`` (415) and at most
   ``max_body_bytes`` (413);
3. the handler gets a :class:`Call` and returns a JSON object or a
   :class:`Reply`; a domain error (:data:`~agentkeys.errors.DOMAIN_ERRORS`: agentkeys'
   or attest's) becomes ``{error, reason}`` with its status, anything else a bare 500;
4. one :class:`~agentkeys.service.AuditEvent` is recorded, whatever happened.

Every app also serves, with one access rule (public when any route is public, otherwise
for every role some route allows):

* ``GET /openapi.json`` (route ``openapi``), its OpenAPI 3.1 document built from the same
  tables (``agentkeys.service._openapi``);
* ``GET /healthz`` (the process answers), ``GET /readyz`` (the service's
  :data:`ReadinessCheck` finds no problem: 200, else 503 with the problems) and
  ``GET /metrics`` (Prometheus text, ``agentkeys.service._metrics``): every request is
  counted by route name and status, timed, and a failure counted by its error code.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Literal, TypeVar

from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from agentkeys.errors import DOMAIN_ERRORS, AgentkeysError, DomainError
from agentkeys.pki import Role
from agentkeys.service._audit import AuditEvent, AuditSink, AuditValue
from agentkeys.service._json import JsonObject, decode_body, parse_json_object
from agentkeys.service._metrics import METRICS_CONTENT_TYPE, UNMATCHED_ROUTE, ServiceMetrics
from agentkeys.service._openapi import OPENAPI_PATH, openapi_document
from agentkeys.service.errors import (
    BadRequest,
    BodyTooLarge,
    Forbidden,
    MalformedJson,
    MethodNotAllowed,
    NotFound,
    RouteTableError,
    ServiceError,
    Unauthenticated,
    UnsupportedMediaType,
)

__all__ = [
    "PEER_SCOPE_KEY",
    "PUBLIC",
    "Access",
    "Call",
    "Handler",
    "Peer",
    "ReadinessCheck",
    "Reply",
    "Route",
    "ServiceApp",
    "allow",
]

_log = logging.getLogger("agentkeys.service")

OPENAPI_ROUTE = "openapi"
"""Name of the route every ServiceApp adds: ``GET /openapi.json`` (see ``_openapi``)."""

OPERATIONS_ROUTES = {"healthz": "/healthz", "readyz": "/readyz", "metrics": "/metrics"}
"""The routes every ServiceApp adds beside ``openapi`` (name → path), with its access."""

ReadinessCheck = Callable[[], Awaitable[Sequence[str]]]
"""Returns the problems keeping a service from being ready (empty: ready); see ``/readyz``."""

PEER_SCOPE_KEY = "agentkeys.peer"
"""Key in the ASGI ``scope["extensions"]`` under which the server puts the :class:`Peer`."""

T = TypeVar("T")


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as established by the transport.

    ``role`` is set only from a client certificate verified against the
    deployment CA; ``None`` means anonymous (plain HTTP, or no certificate).
    """

    role: Role | None
    address: str | None = None
    certificate_sha256: str | None = None


ANONYMOUS = Peer(role=None)


@dataclass(frozen=True)
class Access:
    """What a route needs: one of ``roles``, or nothing at all when ``public``."""

    roles: frozenset[Role] = frozenset()
    public: bool = False


def allow(*roles: Role) -> Access:
    """Access for callers holding any of ``roles``."""
    if not roles:
        raise RouteTableError("allow() needs at least one role; use PUBLIC for open routes")
    return Access(roles=frozenset(roles))


PUBLIC = Access(public=True)
"""Access for any caller, authenticated or not (e.g. discovery documents)."""


@dataclass(frozen=True)
class Reply:
    """A handler's answer when a plain 200 JSON object is not enough."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, obj: JsonObject, status: int = 200) -> Reply:
        """A JSON reply."""
        return cls(body=_dumps(obj), status=status)


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it.

    ``audit`` collects identifiers (never secrets) the handler wants in the
    request's audit row, e.g. ``call.audit["actor"] = actor_omni``.
    """

    peer: Peer
    route: str
    method: str
    path: str
    path_params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    audit: dict[str, AuditValue] = field(default_factory=dict)

    def json(self) -> JsonObject:
        """The body as one JSON object.

        Raises:
            MalformedJson: empty or malformed body.
        """
        if not self.body:
            raise MalformedJson("a JSON object body is required")
        return parse_json_object(self.body)

    def decode(self, cls: type[T]) -> T:
        """The body decoded into the request dataclass ``cls`` (see ``_json.decode_body``).

        Raises:
            BadRequest: malformed JSON, missing/unknown field or wrong type.
        """
        if not self.body:
            raise MalformedJson("a JSON object body is required")
        return decode_body(cls, self.body)


Handler = Callable[[Call], Awaitable[JsonObject | Reply]]


@dataclass(frozen=True)
class Route:
    """A route: ``name`` is its key in the authorization table and in audit rows.

    ``request`` is the dataclass the handler decodes its body into (``call.decode``),
    ``query`` the query parameters it reads (strings) and ``responses`` the dataclass (or
    union of dataclasses) it answers with per status (200: its JSON object); they only
    document the route (in ``GET /openapi.json``).
    """

    name: str
    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    handler: Handler
    request: type[Any] | None = None
    query: tuple[str, ...] = ()
    responses: Mapping[int, type[Any] | UnionType] = field(default_factory=dict)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")


_SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
)


class ServiceApp:
    """The ASGI application of one service (a thin Quart-Trio mapping).

    Args:
        name: service name (audit rows, logs).
        routes: the routes.
        authorization: route name → :class:`Access`; must cover exactly the routes.
        audit: where every request is recorded.
        max_body_bytes: request body bound (413 beyond it).
        readiness: what ``/readyz`` checks (``None``: ready once serving).

    Raises:
        RouteTableError: a route without an authorization entry, an entry
            without a route, or two routes with one name or method+path.
    """

    def __init__(
        self,
        name: str,
        routes: Sequence[Route],
        authorization: Mapping[str, Access],
        *,
        audit: AuditSink,
        max_body_bytes: int = 64 * 1024,
        readiness: ReadinessCheck | None = None,
    ) -> None:
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise RouteTableError(f"{name}: duplicate route names")
        keys = {(r.method, r.path) for r in routes}
        if len(keys) != len(routes):
            raise RouteTableError(f"{name}: duplicate method and path")
        missing = sorted(set(names) - set(authorization))
        if missing:
            raise RouteTableError(f"{name}: routes without an authorization entry: {missing}")
        stale = sorted(set(authorization) - set(names))
        if stale:
            raise RouteTableError(f"{name}: authorization entries without a route: {stale}")
        if max_body_bytes <= 0:
            raise RouteTableError(f"{name}: max_body_bytes must be positive")
        own = {OPENAPI_ROUTE: OPENAPI_PATH, **OPERATIONS_ROUTES}
        if set(own) & set(names) or set(own.values()) & {r.path for r in routes}:
            raise RouteTableError(f"{name}: {sorted(own.values())} are the base's own routes")
        self.name = name
        self.audit = audit
        self.metrics = ServiceMetrics(name)
        self._readiness = readiness
        # GET /openapi.json: public when any route is, else for every role some route allows
        public = any(access.public for access in authorization.values())
        roles = frozenset().union(*(access.roles for access in authorization.values()))
        docs_access = PUBLIC if public or not roles else Access(roles=roles)
        base_routes = (
            Route(OPENAPI_ROUTE, "GET", OPENAPI_PATH, self._openapi),
            Route("healthz", "GET", OPERATIONS_ROUTES["healthz"], self._healthz),
            Route("readyz", "GET", OPERATIONS_ROUTES["readyz"], self._readyz),
            Route("metrics", "GET", OPERATIONS_ROUTES["metrics"], self._metrics),
        )
        self.authorization: Mapping[str, Access] = {
            **authorization,
            **{route.name: docs_access for route in base_routes},
        }
        self.routes: tuple[Route, ...] = (*routes, *base_routes)
        try:
            self.openapi: JsonObject = openapi_document(name, self.routes, self.authorization)
        except TypeError as exc:
            raise RouteTableError(f"{name}: a request type cannot be documented: {exc}") from exc
        quart = QuartTrio(f"agentkeys.{name}", static_folder=None)
        quart.config.update(
            MAX_CONTENT_LENGTH=max_body_bytes,
            BODY_TIMEOUT=30,
            RESPONSE_TIMEOUT=60,
            PROVIDE_AUTOMATIC_OPTIONS=False,
        )
        for route in self.routes:
            quart.add_url_rule(
                route.path,
                endpoint=route.name,
                view_func=self._view(route),
                methods=[route.method],
                provide_automatic_options=False,
                strict_slashes=True,
            )
        quart.register_error_handler(HTTPException, self._http_exception)
        self.quart = quart

    async def _openapi(self, call: Call) -> JsonObject:
        return self.openapi

    async def _healthz(self, call: Call) -> JsonObject:
        return {"status": "alive"}

    async def _readyz(self, call: Call) -> Reply:
        problems = list(await self._readiness()) if self._readiness is not None else []
        doc: JsonObject = {"status": "not_ready" if problems else "ready", "problems": problems}
        return Reply.json(doc, status=503 if problems else 200)

    async def _metrics(self, call: Call) -> Reply:
        return Reply(body=self.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI entry point."""
        await self.quart(scope, receive, send)

    def with_peer(self, peer: Peer) -> Callable[[Any, Any, Any], Awaitable[None]]:
        """An ASGI app that serves every request as from ``peer``.

        For in-process wiring (``httpx.ASGITransport``) where there is no TLS
        connection; the network server always sets the peer from the
        connection itself.
        """

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") in ("http", "websocket"):
                scope = dict(scope)
                scope["extensions"] = {**(scope.get("extensions") or {}), PEER_SCOPE_KEY: peer}
            await self.quart(scope, receive, send)

        return app

    # -- per request ---------------------------------------------------------

    def _response(self, reply: Reply) -> Any:
        response = self.quart.response_class(
            reply.body, status=reply.status, content_type=reply.content_type
        )
        for key, value in (*_SECURITY_HEADERS, *reply.headers):
            response.headers[key] = value
        return response

    def _view(self, route: Route) -> Callable[..., Awaitable[Any]]:
        access = self.authorization[route.name]

        async def view(**path_params: str) -> Any:
            from quart import request

            started = time.perf_counter()
            peer = _peer_of(request.scope)
            call_audit: dict[str, AuditValue] = {}
            try:
                _authorize(access, peer)
                body = await _read_body(request)
                call = Call(
                    peer=peer,
                    route=route.name,
                    method=request.method,
                    path=request.path,
                    path_params=path_params,
                    query={k: v for k, v in request.args.items()},
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    audit=call_audit,
                )
                result = await route.handler(call)
                reply = result if isinstance(result, Reply) else Reply.json(result)
                error: DomainError | None = None
            except DOMAIN_ERRORS as exc:
                error = exc
                reply = Reply.json(exc.to_json(), status=exc.status)
            except Exception as exc:
                _log.error(
                    "%s: unhandled %s in route %s\n%s",
                    self.name,
                    type(exc).__name__,
                    route.name,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
                error = AgentkeysError("internal error")
                reply = Reply.json(error.to_json(), status=500)
            await self._audit_request(
                peer,
                route=route.name,
                method=request.method,
                path=request.path,
                status=reply.status,
                error=error,
                fields=call_audit,
            )
            self.metrics.request(
                route.name,
                reply.status,
                time.perf_counter() - started,
                error.error if error else None,
            )
            return self._response(reply)

        view.__name__ = f"view_{route.name}"
        return view

    async def _http_exception(self, exc: HTTPException) -> Any:
        from quart import request

        code = exc.code or 500
        if code < 400:
            return exc
        mapped: ServiceError
        if code == 404:
            mapped = NotFound("no such route")
        elif code == 405:
            mapped = MethodNotAllowed("method not allowed on this route")
        elif code == 413:
            mapped = BodyTooLarge("request body too large")
        else:
            mapped = BadRequest(f"bad request ({code})")
        await self._audit_request(
            _peer_of(request.scope),
            route=None,
            method=request.method,
            path=request.path,
            status=mapped.status,
            error=mapped,
            fields={},
        )
        self.metrics.request(UNMATCHED_ROUTE, mapped.status, None, mapped.error)
        return self._response(Reply.json(mapped.to_json(), status=mapped.status))

    async def _audit_request(
        self,
        peer: Peer,
        *,
        route: str | None,
        method: str,
        path: str,
        status: int,
        error: DomainError | None,
        fields: Mapping[str, AuditValue],
    ) -> None:
        if error is None:
            outcome = "ok"
        elif error.status in (401, 403):
            outcome = "denied"
        else:
            outcome = "error"
        await self.audit.record(
            AuditEvent(
                service=self.name,
                kind="request",
                outcome=outcome,
                peer_role=peer.role.value if peer.role else None,
                peer_address=peer.address,
                route=route,
                method=method,
                path=path[:256],
                status=status,
                error=error.error if error else None,
                reason=error.reason if error else None,
                fields=dict(fields),
            )
        )


def _peer_of(scope: Mapping[str, Any]) -> Peer:
    extensions = scope.get("extensions") or {}
    peer = extensions.get(PEER_SCOPE_KEY)
    return peer if isinstance(peer, Peer) else ANONYMOUS


def _authorize(access: Access, peer: Peer) -> None:
    if access.public:
        return
    if peer.role is None:
        raise Unauthenticated("this route requires a client certificate")
    if peer.role not in access.roles:
        raise Forbidden(f"role {peer.role.value!r} may not use this route")


async def _read_body(request: Any) -> bytes:
    announced = bool(request.content_length) or "transfer-encoding" in request.headers
    if announced and request.mimetype != "application/json":
        raise UnsupportedMediaType("request bodies must be application/json")
    try:
        body: bytes = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    except RequestEntityTooLarge as exc:
        raise BodyTooLarge("request body too large") from exc
    except HTTPException as exc:  # e.g. 408 when the body does not arrive in time
        raise BadRequest(f"request body not received ({exc.code})") from exc
    if body and request.mimetype != "application/json":
        raise UnsupportedMediaType("request bodies must be application/json")
    return body
