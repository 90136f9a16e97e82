"""The broker's HTTP shell: each declared route (``_routes``) over the core method serving it.

Per request, in order: the bearer session is verified against the route's stages (its stage
and subject go into the audit row); a core the deployment lacks (:class:`Disabled`) refuses;
the body is decoded into the declared request dataclass; the core method is called with plain
values (the request, the :class:`~agentkeys.broker._sessions.Session`, the audit fields, query
strings); its answer is encoded as JSON (a declared answer type's fields, of the member it
is when a union is declared; ``None`` members with a ``None`` default are left out; the
``accepted`` type with 202). Errors, audit rows and
metrics are the service base's (``agentkeys.service._app``).

:func:`http_routes` refuses to start (``RouteTableError``) when a core method's parameters or
return type disagree with its declaration, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Any

from agentkeys.broker._routes import BrokerRoute
from agentkeys.broker._sessions import Session, SessionIssuer, bearer_token
from agentkeys.errors import AgentkeysError
from agentkeys.service import Call, JsonObject, Reply, Route
from agentkeys.service.errors import RouteTableError

__all__ = ["Disabled", "check_handler", "http_routes"]

_GIVEN = ("request", "session", "audit")


@dataclass(frozen=True)
class Disabled:
    """A core this deployment lacks: its routes answer ``error(reason)`` once the session is
    verified, before any body is read (e.g. the relay when relay mode is off)."""

    error: type[AgentkeysError]
    reason: str


def _fields_encoder(tp: type[Any]) -> Callable[[Any], JsonObject]:
    fields = dataclasses.fields(tp)
    always = tuple(f.name for f in fields if f.default is not None)
    optional = tuple(f.name for f in fields if f.default is None)

    def encode(answer: Any) -> JsonObject:
        out = {name: getattr(answer, name) for name in always}
        for name in optional:
            value = getattr(answer, name)
            if value is not None:
                out[name] = value
        return out

    return encode


def _encoder(tp: type[Any] | UnionType | None) -> Callable[[Any], JsonObject]:
    if tp is None:
        return lambda answer: typing.cast(JsonObject, answer)
    if isinstance(tp, type):
        return _fields_encoder(tp)
    by_type = {member: _fields_encoder(member) for member in typing.get_args(tp)}
    return lambda answer: by_type[type(answer)](answer)


def check_handler(route: BrokerRoute) -> tuple[str, ...]:
    """The query parameters ``route.handler`` takes, once its signature matches ``route``.

    Raises:
        RouteTableError: the handler takes a ``request`` exactly when none is declared (or
            of another type), a ``session`` when the route is public (or none when it is
            not), a non-string query parameter, or returns another type than declared.
    """
    name = route.name
    hints = typing.get_type_hints(route.handler)
    params = [p for p in inspect.signature(route.handler).parameters if p != "self"]
    if ("request" in params) != (route.request is not None):
        raise RouteTableError(f"broker: {name}: the handler's request and the declaration differ")
    if route.request is not None and hints["request"] is not route.request:
        raise RouteTableError(
            f"broker: {name}: the handler decodes {hints['request']!r}, "
            f"the declaration says {route.request.__name__}"
        )
    if ("session" in params) != bool(route.sessions) or (
        route.sessions and hints["session"] is not Session
    ):
        raise RouteTableError(f"broker: {name}: the handler's session and the declaration differ")
    query = tuple(p for p in params if p not in _GIVEN)
    if any(hints.get(p) is not str for p in query):
        raise RouteTableError(f"broker: {name}: a query parameter must be a str")
    declared: Any = JsonObject if route.response is None else route.response
    if route.accepted is not None:
        declared = declared | route.accepted
    if hints.get("return") != declared:
        raise RouteTableError(
            f"broker: {name}: the handler answers {hints.get('return')!r}, "
            f"the declaration says {declared!r}"
        )
    return query


def _owner(route: BrokerRoute, cores: Mapping[type[Any], object]) -> object:
    for cls, core in cores.items():
        if vars(cls).get(route.handler.__name__) is route.handler:
            return core
    raise RouteTableError(f"broker: {route.name}: no core serves {route.handler.__qualname__}")


def http_routes(
    routes: tuple[BrokerRoute, ...],
    cores: Mapping[type[Any], object],
    sessions: SessionIssuer,
    clock: Callable[[], float],
) -> tuple[Route, ...]:
    """The service base's routes for ``routes``, each over its core in ``cores`` (core class →
    instance, or :class:`Disabled`).

    Raises:
        RouteTableError: a name declared twice, a handler without a core, or a handler whose
            signature disagrees with its declaration (:func:`check_handler`).
    """
    names = [route.name for route in routes]
    if len(set(names)) != len(names):
        raise RouteTableError("broker: a route name is declared twice")
    return tuple(_http_route(route, cores, sessions, clock) for route in routes)


def _http_route(
    route: BrokerRoute,
    cores: Mapping[type[Any], object],
    sessions: SessionIssuer,
    clock: Callable[[], float],
) -> Route:
    query = check_handler(route)
    return Route(
        route.name,
        route.method,
        route.path,
        _serve(route, query, _owner(route, cores), sessions, clock),
        request=route.request,
        query=query,
        responses={
            status: tp
            for status, tp in ((200, route.response), (202, route.accepted))
            if tp is not None
        },
    )


def _serve(
    route: BrokerRoute,
    query: tuple[str, ...],
    core: object,
    sessions: SessionIssuer,
    clock: Callable[[], float],
) -> Callable[[Call], Awaitable[JsonObject | Reply]]:
    stages = route.sessions
    disabled = core if isinstance(core, Disabled) else None
    method: Callable[..., Awaitable[Any]] = route.handler.__get__(core)
    request_type = route.request
    optional_body = route.body_optional
    encode = _encoder(route.response)
    accepted = route.accepted
    encode_accepted = _encoder(accepted)
    params = inspect.signature(route.handler).parameters
    wants_session = "session" in params
    wants_audit = "audit" in params

    async def serve(call: Call) -> JsonObject | Reply:
        kwargs: dict[str, Any] = {}
        if stages:
            session = await sessions.verify(
                bearer_token(call.headers), now=int(clock()), stages=stages
            )
            call.audit["session_stage"] = session.stage
            call.audit["subject"] = session.subject
            if wants_session:
                kwargs["session"] = session
        if disabled is not None:
            raise disabled.error(disabled.reason)
        if request_type is not None:
            empty = optional_body and not call.body.strip()
            kwargs["request"] = request_type() if empty else call.decode(request_type)
        if wants_audit:
            kwargs["audit"] = call.audit
        for name in query:
            kwargs[name] = call.query.get(name, "")
        answer = await method(**kwargs)
        if accepted is not None and isinstance(answer, accepted):
            return Reply.json(encode_accepted(answer), status=202)
        return encode(answer)

    return serve
