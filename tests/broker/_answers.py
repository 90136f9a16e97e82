"""Every answer a test broker gives, checked against the answer type its route declares.

:class:`AnswerCheck` is an httpx response hook on the broker fixture's client: a 200 (or a
202) of a route that declares a response dataclass is decoded into it with the strict
request decoder (every field without a default present, no other member, ``bool`` not an
integer), so a route answering another shape than its declaration (hence its OpenAPI
schema) fails the test that made the request. ``seen`` records the routes checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from agentkeys.broker import ROUTES, BrokerRoute
from agentkeys.service._json import decode


def declared_answer(route: BrokerRoute, status: int) -> type[Any] | None:
    """The answer type ``route`` declares for ``status`` (None: none declared)."""
    return {200: route.response, 202: route.accepted}.get(status)


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
        decode(answer, body)  # MissingField, UnknownField, WrongType: the shapes differ
        self.seen.add((route.name, status))

    async def __call__(self, response: httpx.Response) -> None:
        request = response.request
        route = self.routes.get((request.method, urlsplit(str(request.url)).path))
        if route is None or declared_answer(route, response.status_code) is None:
            return
        await response.aread()
        self.check(route.method, route.path, response.status_code, response.json())
