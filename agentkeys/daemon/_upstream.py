"""A lean pooled HTTP/1.1 client for forwarding to upstream APIs (the daemon's hot path).

httpx costs about 0.5 ms per request here and tops out near 850 requests/s (FACTS.md);
the sidecar needs far less of a client: one request at a time per connection, bodies
streamed both ways, nothing else. This is that client, built on ``h11`` (the HTTP/1.1
state machine) over Trio streams:

* a bounded keep-alive pool per ``(scheme, host, port)``: at most ``max_connections``
  requests in flight, at most as many idle connections, an idle one is dropped after
  ``keepalive_expiry`` seconds or when its socket turned readable (closed by the peer);
* ``https`` through :class:`trio.SSLStream` with a verifying default SSL context
  (``ssl.create_default_context()``: certificate chain and host name checked);
* timeouts are cancel scopes: ``connect`` (TCP + TLS), ``pool`` (waiting for a slot),
  ``write`` (each send), ``read`` (each receive);
* no redirects, no proxies from the environment, no cookies, no content decoding.

Failures raise :class:`agentkeys.daemon.errors.UpstreamTimeout` (504) or
:class:`~agentkeys.daemon.errors.UpstreamFailed` (502), also while a response body is
being read. The client does not log and never sees anything but what it forwards.
"""

from __future__ import annotations

import select
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urlsplit

import h11
import trio

from agentkeys.daemon.errors import BadProxyRequest, UpstreamFailed, UpstreamTimeout

__all__ = ["Origin", "UpstreamPool", "UpstreamResponse", "UpstreamTimeouts", "parse_origin"]

_READ_SIZE = 64 * 1024
_MAX_HEAD_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Seconds each step may take (None: unbounded)."""

    connect: float | None = 10.0
    read: float | None = 300.0
    write: float | None = 10.0
    pool: float | None = 10.0


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a service's upstream lives: scheme, host, port, and the path prefix."""

    scheme: str
    host: str
    port: int
    host_header: bytes
    base_path: str

    @property
    def key(self) -> tuple[str, str, int]:
        """The pool key."""
        return self.scheme, self.host, self.port


@lru_cache(maxsize=256)
def parse_origin(upstream: str) -> Origin:
    """Split a policy ``upstream`` URL (already validated by the policy parser).

    Raises:
        BadProxyRequest: not an http(s) URL with a host.
    """
    try:
        parts = urlsplit(upstream)
        port = parts.port
    except ValueError as exc:
        raise BadProxyRequest("the service's upstream URL is malformed") from exc
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise BadProxyRequest("the service's upstream URL is malformed")
    host = parts.hostname
    default = _DEFAULT_PORTS[parts.scheme]
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != default:
        shown = f"{shown}:{port}"
    base = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
    try:
        host_header = shown.encode("idna")
    except UnicodeError as exc:
        raise BadProxyRequest("the service's upstream host name is malformed") from exc
    return Origin(
        scheme=parts.scheme,
        host=host,
        port=port or default,
        host_header=host_header,
        base_path=base,
    )


class _Connection:
    """One keep-alive connection: a Trio stream and its h11 state machine."""

    __slots__ = ("h11", "idle_since", "key", "raw", "stream")

    def __init__(
        self, key: tuple[str, str, int], stream: trio.abc.Stream, raw: trio.socket.SocketType
    ) -> None:
        self.key = key
        self.stream = stream
        self.raw = raw
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_BYTES)
        self.idle_since = 0.0

    def looks_alive(self) -> bool:
        """An idle connection is reusable while its socket has nothing to read.

        Readable means the peer closed it (EOF) or sent something unasked; either way
        it must not carry the next request.
        """
        poller = select.poll()
        try:
            poller.register(self.raw.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)


class UpstreamResponse:
    """The head of an upstream response; :meth:`chunks` streams its raw body once."""

    __slots__ = ("_conn", "_read_timeout", "complete", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        conn: _Connection,
        read_timeout: float | None,
    ) -> None:
        self.status = status
        #: header names lowercased, in the upstream's order
        self.headers = headers
        self._conn = conn
        self._read_timeout = read_timeout
        self.complete = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of the (lowercase) header ``name``."""
        return next((v for n, v in self.headers if n == name), None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (no decoding), chunk by chunk.

        Raises:
            UpstreamTimeout: nothing arrived within the read timeout.
            UpstreamFailed: the upstream broke the connection or the protocol.
        """
        conn = self._conn
        while True:
            event = await _next_event(conn, self._read_timeout)
            if isinstance(event, h11.Data):
                if event.data:
                    yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamFailed("the upstream closed the connection mid-response")


async def _next_event(conn: _Connection, limit: float | None) -> h11.Event:
    while True:
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise UpstreamFailed("the upstream broke the HTTP protocol") from exc
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:
            raise UpstreamFailed("the upstream sent more than one response")
        data = b""
        try:
            with _deadline(limit) as scope:
                data = bytes(await conn.stream.receive_some(_READ_SIZE))
        except (trio.BrokenResourceError, OSError, ssl.SSLError) as exc:
            raise UpstreamFailed("the upstream connection broke") from exc
        if scope.cancelled_caught:
            raise UpstreamTimeout("the upstream did not answer in time")
        try:
            conn.h11.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise UpstreamFailed("the upstream broke the HTTP protocol") from exc


def _deadline(limit: float | None) -> trio.CancelScope:
    """A cancel scope ending ``limit`` seconds from now (a plain scope is cheaper per call
    than ``trio.fail_after``; the caller checks ``cancelled_caught``)."""
    if limit is None:
        return trio.CancelScope()
    return trio.CancelScope(deadline=trio.current_time() + limit)


def _encode(conn: _Connection, event: h11.Event) -> bytes:
    try:
        return conn.h11.send(event) or b""
    except h11.LocalProtocolError as exc:
        raise BadProxyRequest("the request cannot be forwarded as HTTP/1.1") from exc


async def _write(conn: _Connection, data: bytes, limit: float | None) -> None:
    if not data:
        return
    try:
        with _deadline(limit) as scope:
            await conn.stream.send_all(data)
    except (trio.BrokenResourceError, OSError, ssl.SSLError) as exc:
        raise UpstreamFailed("the upstream connection broke") from exc
    if scope.cancelled_caught:
        raise UpstreamTimeout("the upstream did not accept the request in time")


class UpstreamPool:
    """A bounded keep-alive connection pool and the requests made through it.

    Args:
        timeouts: the step timeouts.
        max_connections: requests in flight at once (and idle connections kept), all
            origins together; further requests wait up to ``timeouts.pool``.
        keepalive_expiry: seconds an idle connection is kept.
        ssl_context: for https origins; default a verifying
            ``ssl.create_default_context()``.

    The owner calls :meth:`aclose` when done (closes the idle connections).
    """

    def __init__(
        self,
        *,
        timeouts: UpstreamTimeouts | None = None,
        max_connections: int = 100,
        keepalive_expiry: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeouts = timeouts or UpstreamTimeouts()
        self._slots = trio.Semaphore(max_connections)
        self._max_idle = max_connections
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _checkout(self, origin: Origin) -> _Connection:
        idle = self._idle.get(origin.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if now - conn.idle_since < self._expiry and conn.looks_alive():
                return conn
            await conn.close()
        return await self._connect(origin)

    async def _connect(self, origin: Origin) -> _Connection:
        timeout = self._timeouts.connect
        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                tcp = await trio.open_tcp_stream(origin.host, origin.port)
                stream: trio.abc.Stream = tcp
                if origin.scheme == "https":
                    tls = trio.SSLStream(
                        tcp,
                        self._ssl_context(),
                        server_hostname=origin.host,
                        https_compatible=True,
                    )
                    stream = tls
                    try:
                        await tls.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(tcp)
                        raise
        except trio.TooSlowError as exc:
            raise UpstreamTimeout("connecting to the upstream timed out") from exc
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise UpstreamFailed(f"cannot connect to the upstream: {type(exc).__name__}") from exc
        return _Connection(origin.key, stream, tcp.socket)

    async def _checkin(self, conn: _Connection, reusable: bool) -> None:
        state = conn.h11
        if (
            reusable
            and state.our_state is h11.DONE
            and state.their_state is h11.DONE
            and self._idle_count < self._max_idle
        ):
            state.start_next_cycle()
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.key, []).append(conn)
            self._idle_count += 1
            return
        await conn.close()

    @asynccontextmanager
    async def request(
        self,
        method: str,
        origin: Origin,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send one request and yield the response head; the body streams from it.

        Args:
            method: the HTTP method.
            origin: from :func:`parse_origin`.
            target: the path (with ``origin.base_path`` already prefixed) and query.
            headers: lowercase names; ``host`` is added here. Without a
                ``content-length``, a body is sent chunked.
            body: the request body, streamed (None: no body).

        The connection goes back to the pool only if the response was read to its end;
        otherwise (an error, an abandoned stream) it is closed.

        Raises:
            UpstreamTimeout, UpstreamFailed: as the module docstring says.
            BadProxyRequest: the request cannot be expressed in HTTP/1.1.
        """
        timeouts = self._timeouts
        head: list[tuple[bytes, bytes]] = [(b"host", origin.host_header), *headers]
        if body is not None and not any(n == b"content-length" for n, _ in headers):
            head.append((b"transfer-encoding", b"chunked"))
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            with _deadline(timeouts.pool) as scope:
                await self._slots.acquire()
            if scope.cancelled_caught:
                raise UpstreamTimeout("no upstream connection became free in time") from None
        try:
            conn = await self._checkout(origin)
            response: UpstreamResponse | None = None
            try:
                # The head goes out with the first body chunk, each chunk with the next
                # one's arrival, the last with the end: one write for a one-piece body.
                pending = _encode(conn, h11.Request(method=method, target=target, headers=head))
                if body is not None:
                    holding = False
                    async for chunk in body:
                        if holding:
                            await _write(conn, pending, timeouts.write)
                            pending = b""
                        pending += _encode(conn, h11.Data(data=chunk))
                        holding = True
                await _write(conn, pending + _encode(conn, h11.EndOfMessage()), timeouts.write)
                while True:
                    event = await _next_event(conn, timeouts.read)
                    if isinstance(event, h11.Response):
                        break
                    if isinstance(event, h11.ConnectionClosed):
                        raise UpstreamFailed("the upstream closed the connection")
                response = UpstreamResponse(
                    event.status_code,
                    [(n.lower(), v) for n, v in event.headers.raw_items()],
                    conn,
                    timeouts.read,
                )
                yield response
            finally:
                with trio.CancelScope(shield=True):
                    await self._checkin(conn, response is not None and response.complete)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for conns in idle.values():
            for conn in conns:
                await conn.close()
