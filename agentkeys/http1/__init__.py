"""The listeners: one accept loop, and the lean HTTP/1.1 server of the sidecar's hot path.

Every listener of agentkeys accepts through :func:`serve_connections` (bounded open
connections, graceful drain on shutdown): the daemon's sidecar listener
(:func:`serve_attested`: attest's E1/E2 per connection, then the h11 server of
:mod:`agentkeys.http1._server`) and the services' listeners
(:func:`agentkeys.service.serve_http`: mutual TLS, then Hypercorn per connection).
Attesting a caller is attest's (:mod:`attest.serve`); serving HTTP is this package's.

Public API (pinned by tests/http1/test_exports.py): :func:`serve_connections`,
:func:`serve_attested`, :class:`ServeConfig`, :data:`Refusal`, and the errors
:class:`ListenerError`, :class:`TooManyConnections`, :class:`LifespanFailed`.
"""

from agentkeys.http1._accept import serve_connections
from agentkeys.http1._attested import Refusal, serve_attested
from agentkeys.http1._server import ServeConfig
from agentkeys.http1.errors import LifespanFailed, ListenerError, TooManyConnections

__all__ = [
    "LifespanFailed",
    "ListenerError",
    "Refusal",
    "ServeConfig",
    "TooManyConnections",
    "serve_attested",
    "serve_connections",
]
