"""The HTTP servers the ``http`` scenario compares, all answering ``GET /bench``.

Each serves the same 11-byte JSON body ``{"ok":true}`` with a Content-Length on
its own Unix socket (mode 0600 in a private directory):

* ``raw-trio``: the floor — ``trio.serve_listeners`` and a handler that answers
  every request head it sees with a fixed response (no HTTP parser at all).
* ``hypercorn-asgi``: stock ``hypercorn.trio.serve`` and a bare ASGI callable.
* ``attested-asgi``: :func:`agentkeys.http1.serve_attested` (E1 per connection, then the lean
  h11 server) and a bare ASGI callable that reads the attested caller: the daemon's
  stack without the proxy.
* ``hypercorn-quart``: stock Hypercorn and a Quart-Trio app (the services' stack).
* ``attested-quart``: :func:`agentkeys.http1.serve_attested` and a Quart-Trio app whose route
  reads the attested caller.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from quart_trio import QuartTrio

from agentkeys.http1 import ServeConfig, serve_attested
from attest import caller_from_scope, create_unix_listener

__all__ = ["BODY", "SERVER_NAMES", "Servers", "running_servers"]

BODY = b'{"ok":true}'
_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
SERVER_NAMES = ("raw-trio", "hypercorn-asgi", "attested-asgi", "hypercorn-quart", "attested-quart")
_MAX_HEAD = 64 * 1024


async def raw_handler(stream: trio.SocketStream) -> None:
    pending = b""
    async with stream:
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                pending += data
                heads = pending.count(b"\r\n\r\n")
                if heads:
                    pending = pending[pending.rfind(b"\r\n\r\n") + 4 :]
                    await stream.send_all(_RESPONSE * heads)
                elif len(pending) > _MAX_HEAD:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _bare(scope, receive, send, attested=False)


async def _attested_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _bare(scope, receive, send, attested=True)


async def _bare(scope: dict[str, Any], receive: Any, send: Any, *, attested: bool) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if attested:
        caller_from_scope(scope)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def _quart_app(*, attested: bool) -> QuartTrio:
    from quart import request

    app = QuartTrio(f"bench-{'attested' if attested else 'plain'}")

    @app.get("/bench")
    async def bench_route() -> dict[str, bool]:
        if attested:
            caller_from_scope(request.scope)
        return {"ok": True}

    return app


def _hypercorn_config(bind: str) -> Config:
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    quiet = logging.getLogger("bench.hypercorn")
    quiet.setLevel(logging.WARNING)
    config.errorlog = quiet
    config.graceful_timeout = 1.0
    return config


@dataclass(frozen=True)
class Servers:
    """The socket path of each running server, by name."""

    sockets: dict[str, Path]


@asynccontextmanager
async def running_servers(directory: Path) -> AsyncIterator[Servers]:
    """Start every server under ``directory`` (a private dir); stop them all on exit.

    Stopping is a graceful shutdown (one second to drain), cancelled if it has not
    finished five seconds later.
    """
    paths = {name: directory / name / "http.sock" for name in SERVER_NAMES}
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        raw_sock = create_unix_listener(paths["raw-trio"])
        await nursery.start(_serve_raw, raw_sock, shutdown)
        stock: dict[str, Any] = {
            "hypercorn-asgi": _bare_asgi,
            "hypercorn-quart": _quart_app(attested=False),
        }
        for name, app in stock.items():
            paths[name].parent.mkdir(mode=0o700)
            config = _hypercorn_config(f"unix:{paths[name]}")
            await nursery.start(
                partial(hypercorn_serve, app, config, shutdown_trigger=shutdown.wait)
            )
        attested = {"attested-asgi": _attested_asgi, "attested-quart": _quart_app(attested=True)}
        for name, app in attested.items():
            await nursery.start(
                partial(
                    serve_attested,
                    app,
                    [create_unix_listener(paths[name])],
                    config=ServeConfig(graceful_timeout=1.0),
                    shutdown_trigger=shutdown.wait,
                )
            )
        try:
            yield Servers(sockets=paths)
        finally:
            shutdown.set()
            nursery.cancel_scope.deadline = trio.current_time() + 5


async def _serve_raw(
    sock: socket.socket,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with listener, trio.open_nursery() as handlers:
        await handlers.start(trio.serve_listeners, raw_handler, [listener])
        task_status.started()
        await shutdown.wait()
        handlers.cancel_scope.cancel()
