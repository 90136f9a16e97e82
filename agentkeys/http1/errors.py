"""Errors of the listeners (agentkeys.http1).

AgentkeysError
└── ListenerError                 500  listener_error
    ├── TooManyConnections        503  too_many_connections  a listener holds its maximum of
    │                                                          open connections
    └── LifespanFailed            500  lifespan_failed       an app failed its ASGI lifespan
                                                             startup or shutdown
"""

from __future__ import annotations

from typing import ClassVar

from agentkeys.errors import AgentkeysError

__all__ = ["LifespanFailed", "ListenerError", "TooManyConnections"]


class ListenerError(AgentkeysError):
    """Branch: a listener refused a connection or could not serve its app."""

    error: ClassVar[str] = "listener_error"
    status: ClassVar[int] = 500


class TooManyConnections(ListenerError):
    """The listener holds its maximum of open connections; the new one is refused."""

    error: ClassVar[str] = "too_many_connections"
    status: ClassVar[int] = 503


class LifespanFailed(ListenerError):
    """The app reported a failed ASGI lifespan startup or shutdown, or did not complete it."""

    error: ClassVar[str] = "lifespan_failed"
