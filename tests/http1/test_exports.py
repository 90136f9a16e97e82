"""The public surface of ``agentkeys.http1`` is deliberate: pin it."""

from __future__ import annotations

from agentkeys import http1
from agentkeys.errors import AgentkeysError


def test_exported_names() -> None:
    assert sorted(http1.__all__) == [
        "LifespanFailed",
        "ListenerError",
        "Refusal",
        "ServeConfig",
        "TooManyConnections",
        "serve_attested",
        "serve_connections",
    ]


def test_errors_subclass_the_root() -> None:
    assert issubclass(http1.ListenerError, AgentkeysError)
    assert issubclass(http1.TooManyConnections, http1.ListenerError)
    assert issubclass(http1.LifespanFailed, http1.ListenerError)
