"""A lean HTTP/1.1 server for ASGI 3 apps: one task per connection, h11 for the protocol.

:func:`agentkeys.http1.serve_attested` runs :meth:`Http1Server.serve` on every connection
whose caller it has attested. The daemon's request path is this module plus the app, so
it does per request only what HTTP/1.1 needs:

* one read loop per connection (no reader task, no per-request task): the request head
  is parsed by h11 from what ``receive_some`` returned; the app runs in the connection's
  task; the response head goes out together with the first body chunk (for a one-piece
  body: head, body and end in one ``send_all``);
* the app's ``receive()`` reads the request body on demand, through h11 (Content-Length
  or chunked); once the body is complete, ``receive()`` waits for the client to
  disconnect (SSE watchers use that) and returns ``http.disconnect`` once the response
  is complete, as ASGI says;
* keep-alive: after a complete exchange the next request is read from the same
  connection (pipelined bytes included); a request whose body the app left unread, a
  response the app did not finish, or ``Connection: close`` closes the connection (after
  an early answer, the rest of the body is read and dropped for a moment first, so that
  closing does not reset the connection before the client has read the answer).

Bounds (:class:`ServeConfig`): the request head (``max_head_bytes``, 431), the wait for a
request head (``keep_alive_timeout``, from the end of the previous exchange, slow heads
included), each body read (``read_timeout``), each write (``send_timeout``, a client that
stops reading: the app's ``receive()`` then reports the disconnect), requests per
connection (``max_requests_per_connection``) and open connections (``max_connections``,
counted from the accept by :func:`agentkeys.http1.serve_connections`: further ones get a
503 before attestation). Malformed requests, and requests framed twice (Content-Length
and Transfer-Encoding), get a 400 and the connection is closed; the app never sees them.
Body pieces that arrived together reach the app as one message. The server sends a
``date`` header when the app does not, and no ``server`` header. WebSocket upgrades are
not offered (HTTP only).

Shutdown (:meth:`Http1Server.drain`): connections waiting for a request are closed at
once; a request being served completes, and its connection closes after it.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import h11
import trio

from agentkeys.http1.errors import LifespanFailed

__all__ = ["BUSY_RESPONSE", "Http1Server", "ServeConfig", "lifespan", "serve_refusing"]

_log = logging.getLogger("agentkeys.http1")

_READ_SIZE = 65536
_LINGER_SECONDS = 2.0  # after an early answer: how long the rest of a body is discarded
_LINGER_BYTES = 1024 * 1024
_REASONS = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_COALESCE_BYTES = 65536  # request body pieces already read are passed on together, up to this


def _asgi() -> dict[str, str]:
    # fresh dicts for every scope and message: an app may keep or change what it gets
    return {"version": "3.0", "spec_version": "2.3"}


def _disconnect() -> dict[str, Any]:
    return {"type": "http.disconnect"}


@dataclass(frozen=True)
class ServeConfig:
    """Bounds and timeouts of :func:`agentkeys.http1.serve_attested` (seconds, bytes).

    Attributes:
        keep_alive_timeout: how long a connection may take to send a complete request
            head, counted from its accept or from the end of its previous exchange.
        read_timeout: the longest wait for each piece of a request body.
        send_timeout: the longest wait for a client to take each write.
        graceful_timeout: on shutdown, how long requests in progress may take.
        max_head_bytes: the largest request line + headers accepted (431 beyond).
        max_connections: open connections; further ones get a 503 and are closed.
        max_requests_per_connection: after this many requests a connection is closed
            (its last response says so); a client reconnects, and is attested again.
        startup_timeout: how long the app's lifespan startup may take.
    """

    keep_alive_timeout: float = 5.0
    read_timeout: float = 30.0
    send_timeout: float = 60.0
    graceful_timeout: float = 5.0
    max_head_bytes: int = 32 * 1024
    max_connections: int = 1024
    max_requests_per_connection: int = 1000
    startup_timeout: float = 60.0


def _json_response(status: int, error: str, reason: str) -> bytes:
    body = b'{"error":"%s","reason":"%s"}' % (error.encode(), reason.encode())
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
        % (status, _REASONS[status], len(body), body)
    )


BUSY_RESPONSE = _json_response(503, "too_many_connections", "too many open connections")
_BAD_REQUEST = _json_response(400, "bad_request", "malformed HTTP/1.1 request")
_HEAD_TOO_LARGE = _json_response(431, "request_head_too_large", "the request head is too large")
_APP_FAILED = _json_response(500, "internal_error", "the request could not be served")


class _Date:
    """The ``date`` header value, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = email.utils.formatdate(now, usegmt=True).encode("ascii")
        return self._value


class _Closed(Exception):
    """The connection broke while a request head was being read; stop serving it."""


class Http1Server:
    """Serves HTTP/1.1 connections to one ASGI app (see the module docstring).

    Args:
        app: the ASGI 3 application.
        config: bounds and timeouts.
        state: the lifespan state; each request's scope gets a shallow copy.
    """

    def __init__(self, app: Any, config: ServeConfig, state: Mapping[str, Any]) -> None:
        self._app = app
        self._config = config
        self._state = state
        self._date = _Date()
        self._idle: set[trio.CancelScope] = set()
        self._draining = False

    def drain(self) -> None:
        """Close idle connections now; the others after their current exchange."""
        self._draining = True
        for scope in self._idle:
            scope.cancel()

    async def serve(self, stream: trio.SocketStream, extensions: Mapping[str, Any]) -> None:
        """Serve ``stream`` until the client or the server ends it; closes the stream.

        Args:
            stream: an accepted connection.
            extensions: merged into each request's ``scope["extensions"]``.
        """
        connection = _Connection(self, stream, extensions)
        try:
            await connection.run()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


def _address(sock: Any, peer: bool) -> tuple[str, int] | None:
    try:
        name = sock.getpeername() if peer else sock.getsockname()
    except OSError:
        return None
    if isinstance(name, tuple) and len(name) >= 2:
        return (str(name[0]), int(name[1]))
    return None


class _Connection:
    """One client connection: a loop of request → app → response."""

    def __init__(
        self, server: Http1Server, stream: trio.SocketStream, extensions: Mapping[str, Any]
    ) -> None:
        self._server = server
        self._config = server._config
        self._stream = stream
        self._extensions = extensions
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._config.max_head_bytes
        )
        self._client = _address(stream.socket, peer=True)
        self._local = _address(stream.socket, peer=False)
        # per exchange
        self._body_done = False
        self._started = False  # http.response.start received
        self._head_sent = False  # the response head is written
        self._head: h11.Response | None = None
        self._complete = False
        self._broken = False
        self._is_head = False
        self._peeked: Any = None
        self._close_after = False  # this exchange is the connection's last
        self._requests = 0
        self._disconnect_wait: trio.CancelScope | None = None

    async def run(self) -> None:
        with contextlib.suppress(_Closed):
            while not self._server._draining:
                request = await self._next_request()
                if request is None:
                    return
                self._requests += 1
                self._close_after = self._requests >= self._config.max_requests_per_connection
                await self._exchange(request)
                if self._broken or not self._complete:
                    return
                if not self._request_finished():
                    await self._linger()
                    return
                if self._h11.our_state is not h11.DONE:
                    return  # MUST_CLOSE: the response said or implied "close"
                self._h11.start_next_cycle()

    async def _linger(self) -> None:
        """Close after answering a request whose body is still arriving, so the answer is read.

        Closing a socket with unread data makes the kernel send a reset, which can destroy
        the response before the client reads it. So: stop writing, then read and discard
        for a short while (bounded in time and bytes), then close.
        """
        with trio.move_on_after(_LINGER_SECONDS), contextlib.suppress(trio.BrokenResourceError):
            await self._stream.send_eof()
            discarded = 0
            while discarded < _LINGER_BYTES:
                data = await self._stream.receive_some(_READ_SIZE)
                if not data:
                    return
                discarded += len(data)

    # -- reading --------------------------------------------------------------------------

    def _request_finished(self) -> bool:
        """Consume what is left of the request from what was already read (no I/O).

        Returns:
            Whether the request is complete (a bodyless request the app never read, or a
            body that had fully arrived). A body still on its way closes the connection.
        """
        try:
            while self._h11.their_state is h11.SEND_BODY:
                if self._h11.next_event() is h11.NEED_DATA:
                    return False
        except h11.RemoteProtocolError:
            return False
        return self._h11.their_state is h11.DONE

    async def _receive_some(self) -> bytes:
        try:
            return await self._stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _Closed from exc

    async def _next_request(self) -> h11.Request | None:
        """The next request head, or None: EOF, timeout, drained while idle, or refused."""
        scope = trio.CancelScope(deadline=trio.current_time() + self._config.keep_alive_timeout)
        self._server._idle.add(scope)
        try:
            with scope:
                while True:
                    try:
                        event = self._h11.next_event()
                    except h11.RemoteProtocolError as exc:
                        too_large = exc.error_status_hint == 431
                        await self._write(_HEAD_TOO_LARGE if too_large else _BAD_REQUEST)
                        return None
                    if event is h11.NEED_DATA:
                        self._h11.receive_data(await self._receive_some())
                        continue
                    if not isinstance(event, h11.Request):
                        return None
                    # h11 bounds only a head still incomplete; one that arrived whole in a
                    # single read is measured here
                    size = len(event.target)
                    framings = set()
                    for name, value in event.headers:
                        size += len(name) + len(value) + 4
                        if name in _FRAMING:
                            framings.add(name)
                    if size > self._config.max_head_bytes:
                        await self._write(_HEAD_TOO_LARGE)
                        return None
                    if len(framings) > 1:
                        # two framings (RFC 9112 section 6.3): never guess which one counts
                        await self._write(_BAD_REQUEST)
                        return None
                    return event
        finally:
            self._server._idle.discard(scope)
        return None

    async def receive(self) -> dict[str, Any]:
        """ASGI ``receive``: the next piece of the request body, then the disconnect."""
        if self._body_done:
            return await self._wait_for_disconnect()
        if self._h11.they_are_waiting_for_100_continue:
            await self._write(
                self._h11.send(
                    h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                )
            )
        event = self._peeked or await self._read_body_event()
        self._peeked = None
        if isinstance(event, h11.EndOfMessage):
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not isinstance(event, h11.Data):
            # None (malformed, timed out, reset) or ConnectionClosed: the client is gone
            self._broken = True
            return _disconnect()
        # Pieces that already arrived go on as one message (a body sent in tiny chunks
        # costs per message, not per chunk), looking ahead without I/O; the end of the
        # body, when it is there, rides along.
        pieces = [bytes(event.data)]
        size = len(pieces[0])
        while True:
            try:
                following = self._h11.next_event()
            except h11.RemoteProtocolError:
                break  # reported by the next receive()
            if following is h11.NEED_DATA:
                break
            if isinstance(following, h11.EndOfMessage):
                self._body_done = True
                break
            if isinstance(following, h11.Data) and size < _COALESCE_BYTES:
                pieces.append(bytes(following.data))
                size += len(pieces[-1])
                continue
            self._peeked = following
            break
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return {"type": "http.request", "body": body, "more_body": not self._body_done}

    async def _read_body_event(self) -> Any:
        """The next body event (``Data`` or ``EndOfMessage``); None on any failure."""
        with trio.CancelScope(deadline=trio.current_time() + self._config.read_timeout):
            try:
                while True:
                    event = self._h11.next_event()
                    if event is not h11.NEED_DATA:
                        return event
                    self._h11.receive_data(await self._stream.receive_some(_READ_SIZE))
            except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                return None
        return None

    async def _wait_for_disconnect(self) -> dict[str, Any]:
        if self._complete or self._broken:
            return _disconnect()
        # Read on: bytes of a pipelined next request are kept for later (bounded), EOF is
        # the disconnect; so is a write that failed or timed out meanwhile (_mark_broken
        # cancels this wait). Beyond the bound, stop reading and wait to be cancelled.
        with trio.CancelScope() as self._disconnect_wait:
            while True:
                if len(self._h11.trailing_data[0]) > self._config.max_head_bytes:
                    await trio.sleep_forever()
                try:
                    data = await self._stream.receive_some(_READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    break
                self._h11.receive_data(data)
        self._disconnect_wait = None
        self._broken = True
        return _disconnect()

    def _mark_broken(self) -> None:
        """The client is gone or stopped reading: drop later writes, end the exchange."""
        self._broken = True
        if self._disconnect_wait is not None:
            self._disconnect_wait.cancel()

    # -- writing --------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        if self._broken:
            await trio.lowlevel.checkpoint()  # dropped, but still a checkpoint (no busy app)
            return
        # a bare cancel scope: this runs for every response, contextlib's wrappers cost
        with trio.CancelScope(deadline=trio.current_time() + self._config.send_timeout) as scope:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._mark_broken()
        if scope.cancelled_caught:
            self._mark_broken()

    async def send(self, message: Mapping[str, Any]) -> None:
        """ASGI ``send``: ``http.response.start`` then ``http.response.body`` messages."""
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("http.response.start sent twice")
            self._started = True
            headers = list(message.get("headers") or ())
            if not any(name.lower() == b"date" for name, _ in headers):
                headers.append((b"date", self._server._date.value()))
            if self._server._draining or self._close_after:
                headers.append((b"connection", b"close"))
            status = int(message["status"])
            self._head = h11.Response(
                status_code=status, headers=headers, reason=_REASONS.get(status, b"")
            )
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self._started or self._complete:
            raise RuntimeError("http.response.body outside a response")
        pieces: list[bytes] = []
        h11conn = self._h11
        if self._head is not None:
            pieces.append(h11conn.send(self._head))
            self._head = None
        body = message.get("body", b"")
        if body and not self._is_head:
            pieces.append(h11conn.send(h11.Data(data=body)))  # may refuse: the app failed
        complete = not message.get("more_body", False)
        if complete:
            pieces.append(h11conn.send(h11.EndOfMessage()))
        await self._write(b"".join(pieces))
        self._head_sent = True
        self._complete = complete

    # -- one exchange ---------------------------------------------------------------------

    def _scope(self, request: h11.Request) -> dict[str, Any]:
        target: bytes = request.target
        raw_path, _, query = target.partition(b"?")
        method = request.method.decode("ascii")
        return {
            "type": "http",
            "asgi": _asgi(),
            "http_version": request.http_version.decode("ascii"),
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": list(request.headers),
            "client": self._client,
            "server": self._local,
            "state": dict(self._server._state),
            "extensions": dict(self._extensions),
        }

    async def _exchange(self, request: h11.Request) -> None:
        self._body_done = self._started = self._head_sent = self._complete = False
        self._head = self._peeked = None
        self._is_head = request.method == b"HEAD"
        try:
            scope = self._scope(request)
        except UnicodeDecodeError:
            await self._write(_BAD_REQUEST)
            self._broken = True
            return
        try:
            await self._server._app(scope, self.receive, self.send)
        except Exception:
            _log.exception("the application failed on %s %r", scope["method"], scope["raw_path"])
        if not self._complete:
            # the app failed, or returned without finishing its response: say so if
            # nothing of the response is out yet, and close the connection either way
            if not self._head_sent:
                await self._write(_APP_FAILED)
            self._broken = True


async def serve_refusing(stream: trio.SocketStream, response: bytes) -> None:
    """Send ``response`` (a complete HTTP/1.1 response) within a second, then close."""
    with (
        trio.CancelScope(deadline=trio.current_time() + 1, shield=True),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(response)
    await stream.aclose()


@contextlib.asynccontextmanager
async def lifespan(
    app: Any, *, startup_timeout: float, shutdown_timeout: float
) -> AsyncIterator[dict[str, Any]]:
    """Run the app's ASGI lifespan: startup on entry, shutdown on exit.

    Args:
        app: the ASGI 3 application.
        startup_timeout: how long the app's startup may take (then LifespanFailed).
        shutdown_timeout: how long the app's shutdown may take before it is cancelled.

    Yields:
        The lifespan state (each request scope gets a shallow copy).

    Raises:
        LifespanFailed: the app reported a failed startup, did not complete it in time,
            or ended its lifespan before its startup completed. An app that raises at
            once (does not run the lifespan protocol) is served without it; a failed
            shutdown is logged.
    """
    state: dict[str, Any] = {}
    to_app_send, to_app = trio.open_memory_channel[dict[str, Any]](1)
    from_app_send, from_app = trio.open_memory_channel[dict[str, Any]](1)
    ended: dict[str, Any] = {"type": "lifespan.ended", "unsupported": False}

    async def send(message: dict[str, Any]) -> None:
        await from_app_send.send(message)

    async def run_app() -> None:
        scope = {"type": "lifespan", "asgi": _asgi(), "state": state}
        try:
            await app(scope, to_app.receive, send)
        except Exception:
            ended["unsupported"] = True
            _log.debug("the app does not run the ASGI lifespan protocol", exc_info=True)
        await from_app_send.send(ended)

    async def step(request: str, done: str) -> bool:
        """Send ``request``; whether the app is still running its lifespan."""
        await to_app_send.send({"type": request})
        answer = await from_app.receive()
        if answer is ended and (ended["unsupported"] or request == "lifespan.shutdown"):
            return False
        if answer["type"] != done:
            raise LifespanFailed(f"{request}: {answer.get('message') or answer['type']}")
        return True

    failure: LifespanFailed | None = None
    started = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_app)
        running = False
        with trio.move_on_after(startup_timeout):
            try:
                running = await step("lifespan.startup", "lifespan.startup.complete")
            except LifespanFailed as exc:
                failure = exc
            else:
                started = True
        if not started and failure is None:
            failure = LifespanFailed(f"startup did not complete within {startup_timeout} s")
        if failure is not None:
            nursery.cancel_scope.cancel()
        if failure is None:
            try:
                yield state
            finally:
                if running:
                    with trio.CancelScope(shield=True) as shielded:
                        shielded.deadline = trio.current_time() + shutdown_timeout
                        try:
                            await step("lifespan.shutdown", "lifespan.shutdown.complete")
                        except LifespanFailed as exc:
                            _log.error("the app's shutdown failed: %s", exc.reason)
                nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure  # outside the nursery: not wrapped in an exception group
