"""The daemon's lean upstream client (``agentkeys.daemon._upstream``) against real servers.

Every server here is a real HTTP/1.1 server on a free 127.0.0.1 port: a raw Trio
responder scripted per test (to close mid-body, stall, redirect), or the same over TLS
with a certificate made for the test.
"""

from __future__ import annotations

import datetime
import ipaddress
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import h11
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentkeys.daemon._upstream import (
    UpstreamPool,
    UpstreamTimeouts,
    parse_origin,
)
from agentkeys.daemon.errors import BadProxyRequest, UpstreamFailed, UpstreamTimeout

Handler = Callable[[trio.abc.Stream, "Server"], Awaitable[None]]


class Server:
    """What a scripted server saw: one entry per connection, the raw requests on each."""

    def __init__(self) -> None:
        self.connections: list[list[bytes]] = []
        self.gate = trio.Event()


async def read_request(stream: trio.abc.Stream, server: Server, conn: list[bytes]) -> bytes:
    """Read one request (head + a content-length or chunked body) and record it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while not rest.endswith(b"0\r\n\r\n"):
            rest += await stream.receive_some(65536)
    elif b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += await stream.receive_some(65536)
    request = head + b"\r\n\r\n" + rest
    conn.append(request)
    return request


def response(body: bytes, *, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


async def echo_handler(stream: trio.abc.Stream, server: Server) -> None:
    """Keep-alive: answer every request with its own size and path."""
    conn: list[bytes] = []
    server.connections.append(conn)
    while True:
        request = await read_request(stream, server, conn)
        if not request:
            return
        path = request.split(b" ")[1]
        await stream.send_all(response(b'{"path":"%s","n":%d}' % (path, len(request))))


@asynccontextmanager
async def serving(
    handler: Handler, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, Server]]:
    server = Server()

    async def run(stream: trio.abc.Stream) -> None:
        try:
            await handler(stream, server)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        if tls is None:
            listeners = await nursery.start(partial(trio.serve_tcp, run, 0, host="127.0.0.1"))
        else:
            listeners = await nursery.start(
                partial(trio.serve_ssl_over_tcp, run, 0, tls, host="127.0.0.1")
            )
        sock = listeners[0].socket if tls is None else listeners[0].transport_listener.socket
        yield sock.getsockname()[1], server
        nursery.cancel_scope.cancel()


async def body_of(pool: UpstreamPool, url: str, method: str = "GET", **kw: object) -> bytes:
    origin = parse_origin(url.split("/", 3)[0] + "//" + url.split("/", 3)[2])
    target = "/" + url.split("/", 3)[3]
    async with pool.request(method, origin, target, [], kw.get("body")) as resp:  # type: ignore[arg-type]
        return b"".join([c async for c in resp.chunks()])


def test_parse_origin() -> None:
    plain = parse_origin("http://api.example.com")
    assert (plain.key, plain.host_header, plain.base_path) == (
        ("http", "api.example.com", 80),
        b"api.example.com",
        "",
    )
    based = parse_origin("https://example.com:8443/openai/v1/")
    assert (based.key, based.host_header, based.base_path) == (
        ("https", "example.com", 8443),
        b"example.com:8443",
        "/openai/v1",
    )
    six = parse_origin("http://[::1]:9000")
    assert (six.host, six.host_header) == ("::1", b"[::1]:9000")
    assert parse_origin("https://example.com:443").host_header == b"example.com"


async def test_keep_alive_reuses_one_connection_and_streams_request_bodies() -> None:
    async with serving(echo_handler) as (port, server):
        pool = UpstreamPool()
        origin = parse_origin(f"http://127.0.0.1:{port}/base")
        for index in range(3):
            async with pool.request(
                "GET", origin, origin.base_path + f"/x{index}", [(b"x-n", b"1")], None
            ) as resp:
                assert resp.status == 200
                assert resp.header(b"content-type") == b"application/json"
                assert b'"path":"/base/x%d"' % index in b"".join([c async for c in resp.chunks()])

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"ab", b"cd", b"ef"):
                yield part

        async with pool.request("POST", origin, "/up", [], chunks()) as resp:
            assert resp.status == 200
            async for _ in resp.chunks():
                pass
        sized = [(b"content-length", b"4")]

        async def four() -> AsyncIterator[bytes]:
            yield b"wxyz"

        async with pool.request("PUT", origin, "/sized", sized, four()) as resp:
            async for _ in resp.chunks():
                pass
        await pool.aclose()
    assert len(server.connections) == 1
    requests = server.connections[0]
    assert requests[0].startswith(b"GET /base/x0 HTTP/1.1\r\n")
    assert b"host: 127.0.0.1:%d\r\n" % port in requests[0].lower()
    assert b"x-n: 1\r\n" in requests[0].lower()
    chunked = requests[3]
    assert b"transfer-encoding: chunked" in chunked.lower()
    assert chunked.endswith(b"2\r\nab\r\n2\r\ncd\r\n2\r\nef\r\n0\r\n\r\n")
    assert requests[4].endswith(b"\r\n\r\nwxyz")
    assert b"transfer-encoding" not in requests[4].lower()


async def test_an_unfinished_response_closes_its_connection() -> None:
    async with serving(echo_handler) as (port, server):
        pool = UpstreamPool()
        origin = parse_origin(f"http://127.0.0.1:{port}")
        async with pool.request("GET", origin, "/a", [], None) as resp:
            assert resp.status == 200  # body never read
        assert await body_of(pool, f"http://127.0.0.1:{port}/b") != b""
        await pool.aclose()
    assert len(server.connections) == 2


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    closed = trio.Event()

    async def once(stream: trio.abc.Stream, server: Server) -> None:
        conn: list[bytes] = []
        server.connections.append(conn)
        await read_request(stream, server, conn)
        await stream.send_all(response(b"{}"))
        # the server ends the keep-alive connection right after answering
        await stream.aclose()
        closed.set()

    async with serving(once) as (port, server):
        pool = UpstreamPool()
        url = f"http://127.0.0.1:{port}/x"
        assert await body_of(pool, url) == b"{}"
        await closed.wait()  # the FIN is on its way over loopback
        assert await body_of(pool, url) == b"{}"
        await pool.aclose()
    assert len(server.connections) == 2


async def test_response_chunks_arrive_as_the_server_sends_them() -> None:
    async def sse(stream: trio.abc.Stream, server: Server) -> None:
        await read_request(stream, server, [])
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n6\r\ndata:1\r\n"
        )
        await server.gate.wait()
        await stream.send_all(b"6\r\ndata:2\r\n0\r\n\r\n")

    async with serving(sse) as (port, server):
        pool = UpstreamPool()
        async with pool.request(
            "GET", parse_origin(f"http://127.0.0.1:{port}"), "/", [], None
        ) as r:
            chunks = r.chunks()
            assert await chunks.__anext__() == b"data:1"  # before the server sent the rest
            server.gate.set()
            assert [c async for c in chunks] == [b"data:2"]
            assert r.complete
        await pool.aclose()


async def test_chunks_that_arrived_together_are_passed_on_together() -> None:
    events = [b"data: %d\n\n" % i for i in range(20)]

    async def burst(stream: trio.abc.Stream, server: Server) -> None:
        await read_request(stream, server, [])
        framed = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
        )

    async with serving(burst) as (port, _):
        pool = UpstreamPool()
        async with pool.request(
            "GET", parse_origin(f"http://127.0.0.1:{port}"), "/", [], None
        ) as r:
            received = [c async for c in r.chunks()]
            assert r.complete
        await pool.aclose()
    assert b"".join(received) == b"".join(events)
    assert len(received) < len(events)  # one write went out as far fewer than 20 pieces


async def test_no_redirect_is_followed() -> None:
    async def redirect(stream: trio.abc.Stream, server: Server) -> None:
        conn: list[bytes] = []
        server.connections.append(conn)
        await read_request(stream, server, conn)
        await stream.send_all(response(b"", status=b"302 Found", extra=b"location: /else\r\n"))

    async with serving(redirect) as (port, server):
        pool = UpstreamPool()
        async with pool.request(
            "GET", parse_origin(f"http://127.0.0.1:{port}"), "/", [], None
        ) as r:
            assert (r.status, r.header(b"location")) == (302, b"/else")
        await pool.aclose()
    assert sum(len(c) for c in server.connections) == 1


async def test_failures_map_to_upstream_errors() -> None:
    async def broken(stream: trio.abc.Stream, server: Server) -> None:
        await read_request(stream, server, [])
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")

    arrived_send, arrived = trio.open_memory_channel[None](8)

    async def stall(stream: trio.abc.Stream, server: Server) -> None:
        await read_request(stream, server, [])
        arrived_send.send_nowait(None)
        await server.gate.wait()

    async with serving(broken) as (port, _):
        pool = UpstreamPool()
        with pytest.raises(UpstreamFailed) as info:
            await body_of(pool, f"http://127.0.0.1:{port}/")
        assert info.value.error == "upstream_failed"
    async with serving(stall) as (port, server):
        pool = UpstreamPool(timeouts=UpstreamTimeouts(read=0.2))
        with pytest.raises(UpstreamTimeout):
            await body_of(pool, f"http://127.0.0.1:{port}/")
        await arrived.receive()
        # one slot, taken: the next request times out waiting for the pool
        narrow = UpstreamPool(max_connections=1, timeouts=UpstreamTimeouts(pool=0.2, read=5))
        origin = parse_origin(f"http://127.0.0.1:{port}")
        async with trio.open_nursery() as nursery:

            async def hold() -> None:
                # the stalled server finally hangs up without an answer
                with pytest.raises(UpstreamFailed):
                    async with narrow.request("GET", origin, "/", [], None):
                        pass

            nursery.start_soon(hold)
            await arrived.receive()  # the held request reached the server: the slot is taken
            with pytest.raises(UpstreamTimeout):
                await body_of(narrow, f"http://127.0.0.1:{port}/")
            server.gate.set()
        await pool.aclose()
        await narrow.aclose()
    # nothing listens on the port any more
    with pytest.raises(UpstreamFailed) as refused:
        await body_of(UpstreamPool(), f"http://127.0.0.1:{port}/")
    assert not isinstance(refused.value, UpstreamTimeout)


def _tls_files(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentkeys test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, cert_path


async def test_https_verifies_the_server_certificate(tmp_path: Path) -> None:
    server_ctx, cert = _tls_files(tmp_path)
    async with serving(echo_handler, tls=server_ctx) as (port, _):
        url = f"https://127.0.0.1:{port}/tls"
        # the default context does not trust a certificate made for this test
        with pytest.raises(UpstreamFailed):
            await body_of(UpstreamPool(), url)
        trusting = UpstreamPool(ssl_context=ssl.create_default_context(cafile=str(cert)))
        assert b'"path":"/tls"' in await body_of(trusting, url)
        assert b'"path":"/tls"' in await body_of(trusting, url)
        await trusting.aclose()


def test_a_malformed_upstream_host_is_a_bad_request() -> None:
    with pytest.raises(BadProxyRequest):
        parse_origin("https://" + "a" * 64 + ".example.com")
    with pytest.raises(BadProxyRequest):
        parse_origin("ftp://example.com")


def _h11_wire(
    host: bytes,
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes] | None,
) -> bytes:
    """What h11 itself writes for the request the pool is asked to send (the reference)."""
    conn = h11.Connection(h11.CLIENT)
    head = [(b"host", host), *headers]
    if chunks is not None and not any(n == b"content-length" for n, _ in headers):
        head.append((b"transfer-encoding", b"chunked"))
    out = conn.send(h11.Request(method=method, target=target, headers=head)) or b""
    for chunk in chunks or []:
        out += conn.send(h11.Data(data=chunk)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


async def _stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


_NAMES = [b"content-type", b"user-agent", b"x-stainless-lang", b"openai-beta", b"x!#$%&'*+.^_`|~-9"]
_VALUES = [
    b"",
    b"application/json",
    b"a  b\tc",
    b"\x01\x7f\x80\xff",
    b'q="1,2"; x',
    b"Bearer sk-" + b"x" * 48,
    b"Mixed CASE value",
]


def _wire_cases() -> list[tuple[str, str, list[tuple[bytes, bytes]], list[bytes] | None]]:
    """Requests the proxy sends (lowercase names, valid values) and some it never does."""
    rng = random.Random(8785)
    cases: list[tuple[str, str, list[tuple[bytes, bytes]], list[bytes] | None]] = []
    for index in range(120):
        headers = [(rng.choice(_NAMES), rng.choice(_VALUES)) for _ in range(rng.randrange(8))]
        chunks: list[bytes] | None = None
        if index % 3:
            chunks = [
                bytes(rng.randrange(32, 127) for _ in range(rng.randrange(40)))
                for _ in range(rng.randrange(1, 4))
            ]
            if index % 3 == 1:
                headers.insert(
                    rng.randrange(len(headers) + 1),
                    (b"content-length", b"%d" % sum(map(len, chunks))),
                )
        target = rng.choice(["/v1/chat/completions", "/a?b=c&d=%2F", "/~!$&'()*+,;=:@"])
        cases.append(
            (
                "POST" if chunks is not None else rng.choice(["GET", "DELETE"]),
                target,
                headers,
                chunks,
            )
        )
    # left to h11 (rewritten or acted on there): the bytes stay h11's
    cases += [
        ("GET", "/", [(b"X-Upper", b"1")], None),
        ("PUT", "/", [(b"content-length", b"3"), (b"content-length", b"3")], [b"abc"]),
        ("PUT", "/", [(b"content-length", b"03")], [b"abc"]),
        ("GET", "/", [(b"Transfer-Encoding", b"Chunked")], None),
        ("POST", "/", [], [b"ab", b"", b"c"]),
        ("GET", "/", [(b"connection", b"keep-alive")], None),
        ("OPTIONS", "*", [], None),
    ]
    return cases


async def test_request_bytes_on_the_wire_are_h11s() -> None:
    cases = _wire_cases()
    async with serving(echo_handler) as (port, server):
        pool = UpstreamPool()
        origin = parse_origin(f"http://127.0.0.1:{port}")
        for method, target, headers, chunks in cases:
            body = None if chunks is None else _stream(chunks)
            async with pool.request(method, origin, target, headers, body) as resp:
                assert resp.status == 200
                async for _ in resp.chunks():
                    pass
        await pool.aclose()
    sent = [request for conn in server.connections for request in conn]
    assert sent == [_h11_wire(origin.host_header, *case) for case in cases]
    assert len(server.connections) == 1  # and every response kept the connection


@pytest.mark.parametrize(
    ("method", "target", "headers", "chunks"),
    [
        pytest.param("GET", "/", [(b"x-a", b" lead")], None, id="value-leading-space"),
        pytest.param("GET", "/", [(b"x-a", b"trail\t")], None, id="value-trailing-tab"),
        pytest.param("GET", "/", [(b"x-a", b"a\r\nx-b: injected")], None, id="value-crlf"),
        pytest.param("GET", "/", [(b"x-a", b"nul\x00")], None, id="value-nul"),
        pytest.param("GET", "/", [(b"x-a: b", b"c")], None, id="name-with-colon"),
        pytest.param("GET", "/", [(b"", b"c")], None, id="empty-name"),
        pytest.param("GET", "/", [(b"host", b"elsewhere")], None, id="second-host"),
        pytest.param("GET", "/", [(b"content-length", b"1x")], None, id="bad-length"),
        pytest.param("PUT", "/", [(b"content-length", b"4")], [b"abcde"], id="body-too-long"),
        pytest.param("PUT", "/", [(b"content-length", b"4")], [b"abc"], id="body-too-short"),
        pytest.param("GET", "/", [(b"content-length", b"4")], None, id="no-body-declared"),
        pytest.param(
            "PUT",
            "/",
            [(b"content-length", b"1"), (b"content-length", b"2")],
            [b"a"],
            id="conflicting-lengths",
        ),
        pytest.param("POST", "/", [(b"transfer-encoding", b"gzip")], [b"a"], id="bad-coding"),
        pytest.param("POST", "/", [(b"transfer-encoding", b"chunked")], [b"a"], id="second-coding"),
        pytest.param("GET", "/a b", [], None, id="target-space"),
        pytest.param("GET", "/\u00e9", [], None, id="target-non-ascii"),
        pytest.param("GE T", "/", [], None, id="method-space"),
    ],
)
async def test_requests_h11_refuses_are_bad_requests_and_never_sent(
    method: str, target: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes] | None
) -> None:
    with pytest.raises((h11.LocalProtocolError, UnicodeError)):
        _h11_wire(b"127.0.0.1", method, target, headers, chunks)
    async with serving(echo_handler) as (port, server):
        pool = UpstreamPool(max_connections=1, timeouts=UpstreamTimeouts(pool=1))
        origin = parse_origin(f"http://127.0.0.1:{port}")
        body = None if chunks is None else _stream(chunks)
        with pytest.raises(BadProxyRequest):
            async with pool.request(method, origin, target, headers, body):
                pass
        # its one slot is free again
        assert await body_of(pool, f"http://127.0.0.1:{port}/after") != b""
        await pool.aclose()
    assert [request.split(b" ")[1] for conn in server.connections for request in conn] == [
        b"/after"
    ]


async def test_head_and_connection_close_keep_their_meaning() -> None:
    """h11 reads a HEAD response without a body, and closes after ``connection: close``."""

    async def head_aware(stream: trio.abc.Stream, server: Server) -> None:
        conn: list[bytes] = []
        server.connections.append(conn)
        while request := await read_request(stream, server, conn):
            answer = response(b"12345")
            if request.startswith(b"HEAD "):
                answer = answer[: -len(b"12345")]  # content-length: 5, no body
            await stream.send_all(answer)

    async with serving(head_aware) as (port, server):
        pool = UpstreamPool(timeouts=UpstreamTimeouts(read=5))
        origin = parse_origin(f"http://127.0.0.1:{port}")
        async with pool.request("HEAD", origin, "/h", [(b"accept", b"*/*")], None) as resp:
            assert resp.header(b"content-length") == b"5"
            assert [c async for c in resp.chunks()] == []
        assert await body_of(pool, f"http://127.0.0.1:{port}/g") == b"12345"
        async with pool.request("GET", origin, "/c", [(b"connection", b"close")], None) as resp:
            assert [c async for c in resp.chunks()] == [b"12345"]
        assert await body_of(pool, f"http://127.0.0.1:{port}/g") == b"12345"
        await pool.aclose()
    assert [len(c) for c in server.connections] == [3, 1]
