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

The request head is written here, byte for byte as h11 would write it, for the common
case (lowercase, valid header names and values, at most one numeric ``content-length``,
none of the headers that steer h11's state machine); h11 is told about the request with
a small stand-in :class:`h11.Request` of the same method, which costs a fraction of
validating and encoding the full one, and still parses every response. Anything else
goes through h11 entirely.

Failures raise :class:`agentkeys.daemon.errors.UpstreamTimeout` (504) or
:class:`~agentkeys.daemon.errors.UpstreamFailed` (502), also while a response body is
being read. The client does not log and never sees anything but what it forwards.
"""

from __future__ import annotations

import re
import select
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote, urlsplit

import h11
import trio

from agentkeys.daemon.errors import BadProxyRequest, UpstreamFailed, UpstreamTimeout

__all__ = ["Origin", "UpstreamPool", "UpstreamResponse", "UpstreamTimeouts", "parse_origin"]

_READ_SIZE = 64 * 1024
_MAX_HEAD_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}

# One header line as h11 writes it: a lowercase token name, and a value of the grammar
# h11 checks (no NUL, CR, LF or other whitespace but SP/HTAB between visible bytes).
_HEADER_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-z]+): (?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?\r\n")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,20}")
# headers h11 rewrites or acts on in a request: h11's own path takes them (but for one
# content-length of digits only, which h11 writes unchanged)
_H11_STEERED = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}
)
_LAST_CHUNK = b"0\r\n\r\n"
_NOT_HTTP11 = "the request cannot be forwarded as HTTP/1.1"
_END = h11.EndOfMessage()


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

    __slots__ = ("_poller", "h11", "idle_since", "key", "raw", "stream")

    def __init__(
        self, key: tuple[str, str, int], stream: trio.abc.Stream, raw: trio.socket.SocketType
    ) -> None:
        self.key = key
        self.stream = stream
        self.raw = raw
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_BYTES)
        self.idle_since = 0.0
        self._poller: select.poll | None = None

    def looks_alive(self) -> bool:
        """An idle connection is reusable while its socket has nothing to read.

        Readable means the peer closed it (EOF) or sent something unasked; either way
        it must not carry the next request.
        """
        try:
            poller = self._poller
            if poller is None:  # one per connection: its socket never changes
                poller = self._poller = select.poll()
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
        pending: Any = None
        while True:
            event = pending or await _next_event(conn, self._read_timeout)
            pending = None
            # h11's event classes are final: ``type() is`` skips isinstance's ABC check
            if type(event) is h11.Data:
                # What already arrived goes on as one chunk (a burst of SSE events costs
                # one write to the caller, not one each); nothing waits for more.
                pieces = [bytes(event.data)]
                while True:
                    try:
                        following = conn.h11.next_event()
                    except h11.RemoteProtocolError:
                        break  # h11 is in its error state: the next read reports it
                    if type(following) is h11.Data:
                        pieces.append(bytes(following.data))
                        continue
                    if following is not h11.NEED_DATA:
                        pending = following
                    break
                data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                if data:
                    yield data
            elif type(event) is h11.EndOfMessage:
                self.complete = True
                return
            elif type(event) is h11.ConnectionClosed:
                raise UpstreamFailed("the upstream closed the connection mid-response")


async def _next_event(conn: _Connection, limit: float | None) -> h11.Event:
    while True:
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise UpstreamFailed("the upstream broke the HTTP protocol") from exc
        if event is h11.PAUSED:
            raise UpstreamFailed("the upstream sent more than one response")
        if event is not h11.NEED_DATA:
            return cast(h11.Event, event)
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
        raise BadProxyRequest(_NOT_HTTP11) from exc


def _direct_head(
    method: bytes, target: str, host: bytes, headers: Sequence[tuple[bytes, bytes]], body: bool
) -> tuple[bytes, int | None] | None:
    """The request head exactly as h11 writes it, and the declared body length.

    Only for the common case, where h11 neither rewrites nor acts on a header: every
    name a lowercase token, every value valid, ``content-length`` at most once and only
    digits, none of the other :data:`_H11_STEERED` names. Returns None otherwise (the
    caller lets h11 do it all, with h11's checks and errors).

    Returns:
        The head (request line, ``host``, ``headers`` in order, ``transfer-encoding:
        chunked`` last when a body has no declared length, blank line) and the declared
        ``content-length`` (None: chunked, or no body and none declared).
    """
    try:
        raw_target = target.encode("ascii")
    except UnicodeError:
        return None
    if _TARGET.fullmatch(raw_target) is None:
        return None
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, raw_target, host)]
    length: int | None = None
    try:
        for name, value in headers:
            line = b"%s: %s\r\n" % (name, value)
            match = _HEADER_LINE.fullmatch(line)
            # the name must end where the regex's name does (no ": " inside a name)
            if match is None or match.end(1) != len(name):
                return None
            if name in _H11_STEERED:
                if name != b"content-length" or length is not None:
                    return None
                if _CONTENT_LENGTH.fullmatch(value) is None:
                    return None
                length = int(value)
            lines.append(line)
    except TypeError:  # not bytes: h11's path converts or refuses it
        return None
    if body and length is None:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines), length


@lru_cache(maxsize=64)
def _stand_in(method: str, host: bytes) -> h11.Request:
    """The request h11 is told about when :func:`_direct_head` wrote the real one.

    h11 reads a response in the light of the request's method (HEAD, CONNECT) and of its
    ``connection``, ``upgrade`` and ``expect`` headers, which :func:`_direct_head` leaves
    to h11's own path; the framing headers only steer h11's writer, not used for these
    bytes. So the stand-in has the method and ``host`` only and announces no body
    (:func:`_send_direct` holds the body to the real ``content-length`` as h11 would).
    Events are immutable: one per method and host serves every connection.

    Raises:
        BadProxyRequest: the method is not an HTTP token.
    """
    try:
        return h11.Request(method=method, target=b"/", headers=[(b"host", host)])
    except (h11.LocalProtocolError, UnicodeError):
        raise BadProxyRequest(_NOT_HTTP11) from None


async def _send_direct(
    conn: _Connection,
    stand_in: h11.Request,
    head: bytes,
    length: int | None,
    body: AsyncIterator[bytes] | None,
    limit: float | None,
) -> None:
    """Write a head from :func:`_direct_head` and the body, framed as h11 frames it.

    Like h11: a body longer or shorter than the declared ``content-length`` is refused
    (the excess before it is sent), and an empty chunk is not written when chunked.
    """
    _encode(conn, stand_in)
    sent = 0

    def frame(chunk: bytes) -> bytes:
        nonlocal sent
        sent += len(chunk)
        if length is None:
            return b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b""
        if sent > length:
            raise BadProxyRequest(_NOT_HTTP11)
        return chunk

    pending = await _stream_body(conn, head, body, frame, limit)
    if body is not None and length is None:
        pending += _LAST_CHUNK
    if length is not None and sent != length:
        raise BadProxyRequest(_NOT_HTTP11)
    _encode(conn, _END)
    await _write(conn, pending, limit)


def _h11_request(
    method: str,
    origin: Origin,
    target: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: AsyncIterator[bytes] | None,
) -> h11.Request:
    """The full request event, for h11 to check and encode (the uncommon case).

    Raises:
        BadProxyRequest: h11 refuses the method, target or a header.
    """
    head: list[tuple[bytes, bytes]] = [(b"host", origin.host_header), *headers]
    if body is not None and not any(n == b"content-length" for n, _ in headers):
        head.append((b"transfer-encoding", b"chunked"))
    try:
        return h11.Request(method=method, target=target, headers=head)
    except (h11.LocalProtocolError, UnicodeError):
        # not chained: h11's message quotes the offending value (maybe the credential)
        raise BadProxyRequest(_NOT_HTTP11) from None


async def _send_h11(
    conn: _Connection,
    request: h11.Request,
    body: AsyncIterator[bytes] | None,
    limit: float | None,
) -> None:
    """Write ``request`` and its body through h11."""

    def frame(chunk: bytes) -> bytes:
        return _encode(conn, h11.Data(data=chunk))

    pending = await _stream_body(conn, _encode(conn, request), body, frame, limit)
    await _write(conn, pending + _encode(conn, _END), limit)


async def _stream_body(
    conn: _Connection,
    head: bytes,
    body: AsyncIterator[bytes] | None,
    frame: Callable[[bytes], bytes],
    limit: float | None,
) -> bytes:
    """Write ``head`` and the body framed by ``frame``, one chunk behind the body.

    The head goes out with the first chunk, each chunk with the next one's arrival.

    Returns:
        What is not written yet (the head, or the last chunk): the caller writes it with
        the end of the request, so a one-piece body costs one write.
    """
    pending = head
    if body is None:
        return pending
    holding = False
    async for chunk in body:
        if holding:
            await _write(conn, pending, limit)
            pending = b""
        pending += frame(chunk)
        holding = True
    return pending


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

    async def _acquire(self) -> None:
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            with _deadline(self._timeouts.pool) as scope:
                await self._slots.acquire()
            if scope.cancelled_caught:
                raise UpstreamTimeout("no upstream connection became free in time") from None

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

    def _checkin(self, conn: _Connection, reusable: bool) -> bool:
        """Keep ``conn`` for the next request if it can be; False: the caller closes it."""
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
            return True
        return False

    def request(
        self,
        method: str,
        origin: Origin,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """Send one request and yield the response head; the body streams from it.

        Used as ``async with pool.request(...) as response:``.

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
        return _Exchange(self, method, origin, target, headers, body)

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for conns in idle.values():
            for conn in conns:
                await conn.close()


class _Exchange:
    """One request through an :class:`UpstreamPool` (see :meth:`UpstreamPool.request`).

    A plain async context manager rather than an ``asynccontextmanager`` generator: it
    is entered once per proxied request, and this is cheaper to run.
    """

    __slots__ = (
        "_body",
        "_conn",
        "_headers",
        "_method",
        "_origin",
        "_pool",
        "_response",
        "_target",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        method: str,
        origin: Origin,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> None:
        self._pool = pool
        self._method = method
        self._origin = origin
        self._target = target
        self._headers = headers
        self._body = body
        self._conn: _Connection | None = None
        self._response: UpstreamResponse | None = None

    async def __aenter__(self) -> UpstreamResponse:
        pool = self._pool
        timeouts = pool._timeouts
        origin = self._origin
        body = self._body
        # the request is checked (and its head written) before a connection is taken
        stand_in = _stand_in(self._method, origin.host_header)
        direct = _direct_head(
            stand_in.method, self._target, origin.host_header, self._headers, body is not None
        )
        request = None
        if direct is None:
            request = _h11_request(self._method, origin, self._target, self._headers, body)
        await pool._acquire()
        try:
            conn = self._conn = await pool._checkout(origin)
            if direct is not None:
                await _send_direct(conn, stand_in, *direct, body, timeouts.write)
            else:
                assert request is not None
                await _send_h11(conn, request, body, timeouts.write)
            while True:
                event = await _next_event(conn, timeouts.read)
                if type(event) is h11.Response:
                    break
                if type(event) is h11.ConnectionClosed:
                    raise UpstreamFailed("the upstream closed the connection")
        except BaseException:
            await self._release()
            raise
        response = self._response = UpstreamResponse(
            event.status_code,
            [(n.lower(), v) for n, v in event.headers.raw_items()],
            conn,
            timeouts.read,
        )
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._release()

    async def _release(self) -> None:
        pool = self._pool
        conn, self._conn = self._conn, None
        try:
            response = self._response
            if conn is not None and not pool._checkin(
                conn, response is not None and response.complete
            ):
                # shielded only here: keeping a connection does not wait (and a cancel
                # scope per request is measurable on the hot path)
                with trio.CancelScope(shield=True):
                    await conn.close()
        finally:
            pool._slots.release()
