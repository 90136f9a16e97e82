"""Serve an ASGI app over HTTP/1.1, attesting every connection's caller first.

The sidecar listener: :func:`agentkeys.http1.serve_connections` accepts, attest's
:class:`~attest.serve.CallerAttestor` identifies the peer of each connection (E1 for Unix
sockets, E2 for loopback TCP) *before* a byte is read from it, and the lean server of
:mod:`agentkeys.http1._server` (h11, one task per connection) serves HTTP/1.1 on the
stream. Every HTTP scope of that connection carries the identity as
``scope["extensions"]["agentkeys.caller"]``; read it with
:func:`attest.serve.caller_from_scope`. A connection whose caller cannot be attested gets
a 403 and is closed; the app never sees it. Beyond ``ServeConfig.max_connections`` open
connections, a new one gets a 503 and is closed before it is attested.

Order of events: lifespan startup, then serving; once the shutdown trigger fires,
accepting stops, idle connections close, requests in progress get
``config.graceful_timeout`` seconds, then lifespan shutdown.

Why not Hypercorn here (the services use it): the sidecar daemon's request path must
add well under a millisecond, and Hypercorn's per-connection server (a reader task,
a task and timers per request, separate writes for head and body) costs ~0.35-0.4 ms
per request on the 2-core reference machine, most of that budget; this server ~0.1 ms
(docs/performance.md, ``http c=*`` rows).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from agentkeys.http1._accept import serve_connections
from agentkeys.http1._server import (
    BUSY_RESPONSE,
    Http1Server,
    ServeConfig,
    lifespan,
    serve_refusing,
)
from agentkeys.http1.errors import TooManyConnections
from attest.errors import CallerUnidentified
from attest.serve import SCOPE_KEY, CallerAttestor

__all__ = ["Refusal", "serve_attested"]

Refusal = CallerUnidentified | TooManyConnections
"""Why a connection was refused before the app saw it."""

_log = logging.getLogger("agentkeys.http1")
_REFUSAL_BODY = b'{"error":"caller_unidentified","reason":"the caller could not be attested"}'
_REFUSAL = (
    b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


async def serve_attested(
    app: Any,
    sockets: Sequence[socket.socket],
    *,
    config: ServeConfig | None = None,
    attestor: CallerAttestor | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    on_refused: Callable[[Refusal], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on listening ``sockets``, attesting every caller.

    Args:
        app: an ASGI 3 application (e.g. a ``quart_trio.QuartTrio``, or the daemon's
            bare proxy app).
        sockets: listening sockets (from :func:`attest.serve.create_unix_listener`, or a
            TCP socket bound to 127.0.0.1). Ownership passes here: they are closed
            when serving ends.
        config: bounds and timeouts.
        attestor: how callers are attested; a default one when None.
        shutdown_trigger: when it returns, stop accepting, close idle connections, let
            requests in progress finish for ``config.graceful_timeout`` seconds, run
            lifespan shutdown and return. Cancelling the call stops at once instead.
        on_refused: told of every connection refused before the app saw it
            (:class:`~attest.errors.CallerUnidentified` or a leaf,
            :class:`~agentkeys.http1.errors.TooManyConnections`), e.g. to audit it; it
            must not block.
        task_status: ``started()`` once the app's startup ran and sockets accept.

    Raises:
        LifespanFailed: the app's lifespan startup failed.
    """
    config = config or ServeConfig()
    attestor = attestor or CallerAttestor()
    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]

    async def refuse(stream: trio.SocketStream, refusal: Refusal) -> None:
        _log.warning("refused a connection: %s", refusal.reason)
        if on_refused is not None:
            on_refused(refusal)
        response = BUSY_RESPONSE if isinstance(refusal, TooManyConnections) else _REFUSAL
        await serve_refusing(stream, response)

    async def refuse_busy(stream: trio.SocketStream) -> None:
        await refuse(stream, TooManyConnections("too many open connections"))

    try:
        async with lifespan(
            app, startup_timeout=config.startup_timeout, shutdown_timeout=config.graceful_timeout
        ) as state:
            server = Http1Server(app, config, state)

            async def handle(stream: trio.SocketStream) -> None:
                try:
                    try:
                        caller = await attestor.identify(stream.socket)  # type: ignore[arg-type]
                    except CallerUnidentified as exc:
                        await refuse(stream, exc)
                        return
                    except Exception:
                        # fail closed, and one connection never ends serving
                        _log.exception("attesting a connection failed")
                        await refuse(stream, CallerUnidentified("attestation failed"))
                        return
                    await server.serve(stream, {SCOPE_KEY: caller})
                except Exception:
                    _log.exception("serving a connection failed")

            async def drain() -> None:
                server.drain()

            await serve_connections(
                handle,
                listeners,
                max_connections=config.max_connections,
                refuse=refuse_busy,
                drain=drain,
                graceful_timeout=config.graceful_timeout,
                shutdown_trigger=shutdown_trigger,
                started=task_status.started,
            )
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()
