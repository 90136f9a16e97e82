"""The one accept loop every listener runs: bounded connections and a graceful drain.

The daemon's sidecar listener (:func:`agentkeys.http1.serve_attested`, the lean h11
server) and the services' listeners (:func:`agentkeys.service.serve_http`, Hypercorn's
per-connection server) accept their connections here, each with its own per-connection
handler. Order of events, after ``hypercorn/trio/run.py::worker_serve``:

1. accept on every listener (``trio.serve_listeners``), one handler task per connection
   in a nursery of its own; ``started()`` once accepting;
2. a connection beyond ``max_connections`` open ones (counted from its accept) goes to
   ``refuse`` instead of the handler;
3. when ``shutdown_trigger`` returns: accepting stops and the listeners close, ``drain``
   tells the server to close its idle connections, and the handlers still running get
   ``graceful_timeout`` seconds (a deadline on their nursery) before they are cancelled.

Cancelling the call stops at once. The listeners are closed however it ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import trio

__all__ = ["serve_connections"]

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve_connections(
    handler: Handler,
    listeners: Sequence[trio.SocketListener],
    *,
    max_connections: int,
    refuse: Handler,
    drain: Callable[[], Awaitable[None]],
    graceful_timeout: float,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    started: Callable[[], None] = lambda: None,
) -> None:
    """Serve every connection accepted on ``listeners`` with ``handler`` until shutdown.

    Args:
        handler: serves one accepted connection; it owns (and closes) the stream.
        listeners: ownership passes here: they are closed when serving ends.
        max_connections: open connections served at once (counted from the accept).
        refuse: takes, and closes, a connection beyond ``max_connections``.
        drain: called once accepting stopped, to close idle connections.
        graceful_timeout: how long handlers may run on after the shutdown trigger.
        shutdown_trigger: when it returns, shut down gracefully and return (None:
            serve until cancelled).
        started: called once the listeners accept (the caller's ``task_status.started``
            with what it reports).
    """
    slots = trio.Semaphore(max_connections)

    async def admit(stream: trio.SocketStream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await refuse(stream)
            return
        try:
            await handler(stream)
        finally:
            slots.release()

    try:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                serve = partial(trio.serve_listeners, handler_nursery=connections)
                accepting.start_soon(serve, admit, listeners)
                started()
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            await _close(listeners)
            await drain()
            connections.cancel_scope.deadline = trio.current_time() + graceful_timeout
    finally:
        await _close(listeners)


async def _close(listeners: Sequence[trio.SocketListener]) -> None:
    with trio.CancelScope(shield=True):
        for listener in listeners:
            await listener.aclose()
