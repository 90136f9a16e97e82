"""Every answer a test broker gives, checked against the answer type its route declares.

:class:`AnswerCheck` is an httpx response hook on the broker fixture's client: a 200 (or a
202) of a route that declares a response dataclass is decoded into it with the strict
request decoder (every field without a default present, no other member, ``bool`` not an
integer); an answer declared as a union of dataclasses must decode into exactly one of
them (the ``oneOf`` the OpenAPI document publishes). So a route answering another shape
than its declaration (hence its OpenAPI schema) fails the test that made the request.
``seen`` records the routes checked.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from types import UnionType
from typing import Any
from urllib.parse import urlsplit

import httpx

from agentkeys.broker import ROUTES, BrokerRoute
from agentkeys.service._json import decode
from agentkeys.service.errors import BadRequest


def declared_answer(route: BrokerRoute, status: int) -> type[Any] | UnionType | None:
    """The answer type ``route`` declares for ``status`` (None: none declared)."""
    return {200: route.response, 202: route.accepted}.get(status)


def decode_answer(answer: type[Any] | UnionType, body: dict[str, Any]) -> None:
    """Raises the decoder's BadRequest (MissingField, UnknownField, WrongType) when ``body``
    is not ``answer``, or AssertionError when it is more than one member of a union."""
    if isinstance(answer, type):
        decode(answer, body)
        return
    matched, refusals = [], []
    for member in typing.get_args(answer):
        try:
            decode(member, body)
        except BadRequest as exc:
            refusals.append(exc)
        else:
            matched.append(member)
    if not matched:
        raise refusals[0]
    assert len(matched) == 1, (answer, body)


@dataclass
class AnswerCheck:
    routes: dict[tuple[str, str], BrokerRoute] = field(
        default_factory=lambda: {(r.method, r.path): r for r in ROUTES}
    )
    seen: set[tuple[str, int]] = field(default_factory=set)

    def check(self, method: str, path: str, status: int, body: object) -> None:
        """Raises AssertionError, or the decoder's BadRequest, when ``body`` is not the
        answer ``route`` declares for ``status``."""
        route = self.routes.get((method, path))
        answer = None if route is None else declared_answer(route, status)
        if route is None or answer is None:
            return
        assert isinstance(body, dict), (route.name, body)
        decode_answer(answer, body)  # MissingField, UnknownField, WrongType: shapes differ
        self.seen.add((route.name, status))

    async def __call__(self, response: httpx.Response) -> None:
        request = response.request
        route = self.routes.get((request.method, urlsplit(str(request.url)).path))
        if route is None or declared_answer(route, response.status_code) is None:
            return
        await response.aread()
        self.check(route.method, route.path, response.status_code, response.json())
