"""The HTTP/1.1 server behind ``serve_attested`` (agentkeys/http1/_server.py), over real sockets.

Clients are raw sockets (requests written byte for byte, responses parsed with h11 as a
client), so framing, pipelining, timeouts and refusals are observed as a client sees
them. The caller is this test process, attested by E1 like any other.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from agentkeys.http1 import (
    LifespanFailed,
    Refusal,
    ServeConfig,
    TooManyConnections,
    serve_attested,
)
from attest.caller import CallerIdentity
from attest.serve import (
    CallerAttestor,
    caller_from_scope,
    create_loopback_listener,
    create_unix_listener,
)

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
GUARD = 20  # seconds: a hung test fails instead of hanging


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        kind = message["type"].rsplit(".", 1)[-1]
        await send({"type": f"{message['type']}.complete"})
        if kind == "shutdown":
            return


def make_app(handler: App) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        else:
            await handler(scope, receive, send)

    return app


async def respond(send: Any, body: bytes = b"ok", status: int = 200, **extra: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    headers += [(k.replace("_", "-").encode(), v) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any) -> tuple[bytes, int]:
    """The whole request body and the number of messages it came in."""
    body, messages = b"", 0
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body += message["body"]
        messages += 1
        if not message["more_body"]:
            return body, messages


class Client:
    """One raw connection: requests written as bytes, responses parsed by h11 (client role)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = self._parser(b"GET")

    def _parser(self, method: bytes, leftover: bytes = b"") -> h11.Connection:
        # h11 frames a response by the request it answers: tell it one was sent
        parser = h11.Connection(h11.CLIENT)
        parser.send(h11.Request(method=method, target="/", headers=[("host", "agentkeys")]))
        parser.send(h11.EndOfMessage())
        if leftover:
            parser.receive_data(leftover)
        return parser

    async def write(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.stream.receive_some(65536))

    async def response(self) -> tuple[h11.Response, bytes]:
        """The next final response and its body (interim 1xx responses are skipped)."""
        while True:
            head = await self.event()
            if isinstance(head, h11.Response):
                break
            assert isinstance(head, h11.InformationalResponse)
        body = b""
        while True:
            event = await self.event()
            if isinstance(event, h11.EndOfMessage):
                break
            body += bytes(event.data)
        self.h11 = self._parser(b"GET", self.h11.trailing_data[0])
        return head, body

    async def raw_until_close(self) -> bytes:
        data = b""
        while chunk := await self.stream.receive_some(65536):
            data += chunk
        return data


@asynccontextmanager
async def serving(
    handler: App, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[Callable[[], Awaitable[Client]], trio.Event, list[Refusal]]]:
    """Serve ``handler`` (on a Unix socket, or loopback TCP with ``tcp=True``); yield a
    connect function, the shutdown trigger and the refusals."""
    tcp = settings.pop("tcp", False)
    path = tmp_path / "run" / "s.sock"
    sock = create_loopback_listener(0) if tcp else create_unix_listener(path)
    port = sock.getsockname()[1] if tcp else 0
    stop = trio.Event()
    refused: list[Refusal] = []
    config = ServeConfig(**{"graceful_timeout": 5.0, **settings})

    async def connect() -> Client:
        if tcp:
            return Client(await trio.open_tcp_stream("127.0.0.1", port))
        return Client(await trio.open_unix_socket(str(path)))

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve_attested,
                    make_app(handler),
                    [sock],
                    config=config,
                    shutdown_trigger=stop.wait,
                    on_refused=refused.append,
                )
            )
            yield connect, stop, refused
            stop.set()


def header(response: h11.Response, name: bytes) -> bytes | None:
    values = [v for n, v in response.headers if n == name]
    return values[0] if values else None


def get(path: str = "/", *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "host: agentkeys", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def test_keep_alive_and_pipelined_requests_share_one_attested_connection(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, int]] = []

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        caller = caller_from_scope(scope)
        seen.append((scope["path"], id(caller)))
        await respond(send, scope["path"].encode() + b"?" + scope["query_string"])

    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(get("/a?x=1") + get("/b%20c"))  # two requests in one write
        first, second = await client.response(), await client.response()
        await client.write(get("/d"))
        third = await client.response()
    assert [b for _, b in (first, second, third)] == [b"/a?x=1", b"/b c?", b"/d?"]
    assert [p for p, _ in seen] == ["/a", "/b c", "/d"]
    assert len({conn for _, conn in seen}) == 1  # one connection, attested once
    head = first[0]
    assert head.status_code == 200
    assert head.reason == b"OK"
    assert header(head, b"date") is not None
    assert header(head, b"server") is None


async def test_request_bodies_whole_chunked_and_after_100_continue(tmp_path: Path) -> None:
    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, messages = await read_body(receive)
        await respond(send, json.dumps({"len": len(body), "messages": messages}).encode())

    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello")
        whole = json.loads((await client.response())[1])
        await client.write(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"3\r\nabc\r\n", b"4\r\ndefg\r\n", b"0\r\n\r\n"):
            await client.write(piece)
            await trio.sleep(0.05)  # separate arrivals
        chunked = json.loads((await client.response())[1])
        await client.write(
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        interim = await client.event()
        await client.write(b"hi")
        continued = json.loads((await client.response())[1])
    assert whole == {"len": 5, "messages": 1}  # a body that arrived whole: one message
    assert chunked["len"] == 7
    assert chunked["messages"] >= 2
    assert isinstance(interim, h11.InformationalResponse)
    assert interim.status_code == 100
    assert continued == {"len": 2, "messages": 1}


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"GET / HTTP/1.1\r\nhost: a\r\nbad header\r\n\r\n", 400, "bad_request"),
        (b"NOT-HTTP\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nhost: a\r\nx: " + b"a" * 40_000 + b"\r\n\r\n", 431, None),
    ],
)
async def test_malformed_or_oversized_heads_are_refused_and_closed(
    tmp_path: Path, request_bytes: bytes, status: int, error: str | None
) -> None:
    hits: list[str] = []

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        hits.append(scope["path"])
        await respond(send)

    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(request_bytes)
        raw = await client.raw_until_close()  # the server closes after answering
    assert raw.startswith(b"HTTP/1.1 %d " % status)
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == (error or "request_head_too_large")
    assert hits == []


async def test_head_responses_carry_no_body(tmp_path: Path) -> None:
    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await respond(send, b"twelve bytes")

    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(get("/").replace(b"GET", b"HEAD") + get("/"))
        raw = b""
        while raw.count(b"twelve bytes") < 1:
            raw += await client.stream.receive_some(65536)
    head, rest = raw.split(b"\r\n\r\n", 1)
    assert b"content-length: 12" in head
    # the HEAD response has no body: the next bytes are the GET's status line
    assert rest.startswith(b"HTTP/1.1 200 OK")


async def test_streamed_response_is_chunked_and_disconnect_reaches_the_app(
    tmp_path: Path,
) -> None:
    gone = trio.Event()

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        if scope["path"] == "/forever":
            assert (await receive())["type"] == "http.request"  # the (empty) body
            message = await receive()  # then nothing until the client leaves
            assert message["type"] == "http.disconnect"
            gone.set()
            return
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": False})

    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(get("/two"))
        head, body = await client.response()
        assert header(head, b"transfer-encoding") == b"chunked"
        assert body == b"data: 1\n\ndata: 2\n\n"
        await client.write(get("/forever"))
        await client.event()  # the head
        await client.event()  # the first chunk
        await client.stream.aclose()
        await gone.wait()


async def test_failing_or_unfinished_apps(tmp_path: Path) -> None:
    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/raise":
            raise KeyError("boom")
        if scope["path"] == "/bad-header":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"\n")]})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        # returns without finishing the response

    async with serving(handler, tmp_path) as (connect, _, _):
        for path in ("/raise", "/bad-header"):
            client = await connect()
            await client.write(get(path))
            raw = await client.raw_until_close()
            assert raw.startswith(b"HTTP/1.1 500 "), path
            assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"] == "internal_error"
        client = await connect()
        await client.write(get("/unfinished"))
        raw = await client.raw_until_close()
    # the head and the chunk went out; then the connection closed (no terminating chunk)
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in raw
    assert not raw.endswith(b"0\r\n\r\n")


async def test_unread_request_bodies(tmp_path: Path) -> None:
    """A body that fully arrived is skipped and the connection kept; one still on its
    way closes the connection after the response (it is never mistaken for a request)."""

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await respond(send, b"refused", status=403)

    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc")
        assert (await client.response())[0].status_code == 403
        await client.write(get())
        assert (await client.response())[0].status_code == 403  # same connection
        client = await connect()
        await client.write(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\nGET ")
        raw = await client.raw_until_close()
    assert raw.count(b"HTTP/1.1 ") == 1
    assert raw.startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
async def test_an_early_answer_survives_a_body_still_being_sent(tmp_path: Path, tcp: bool) -> None:
    """The server answers without reading a large upload; a client still sending must be
    able to finish and then read the whole answer: the server reads and drops the rest for
    a moment before it closes (closing with unread data resets the connection, and the
    client's next write fails)."""

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await respond(send, b'{"error":"request_too_large"}', status=413, connection=b"close")

    size = 512 * 1024
    async with serving(handler, tmp_path, tcp=tcp) as (connect, _, _):
        client = await connect()
        await client.write(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n" % size)

        # a simple client (httpx is one): the whole upload first, only then the answer; a
        # failed write would end it without the answer
        for _ in range(size // 4096):
            await client.write(b"x" * 4096)
        await client.stream.send_eof()
        head, body = await client.response()
    assert head.status_code == 413
    assert body == b'{"error":"request_too_large"}'


async def test_idle_and_slow_clients_time_out(tmp_path: Path) -> None:
    outcome: list[dict[str, Any]] = []

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            outcome.append(message)
            if not message.get("more_body"):
                break
        await respond(send)

    async with serving(handler, tmp_path, keep_alive_timeout=0.3, read_timeout=0.3) as (
        connect,
        _,
        _,
    ):
        idle = await connect()
        assert await idle.raw_until_close() == b""  # never sent a request: closed
        slow_head = await connect()
        await slow_head.write(b"GET / HTTP/1.1\r\n")  # and never the rest
        assert await slow_head.raw_until_close() == b""
        slow_body = await connect()
        await slow_body.write(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")
        raw = await slow_body.raw_until_close()
    # the app got what came, then learnt that the rest never would
    assert outcome == [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert raw == b""  # the client is treated as gone: the response is not written


async def test_connections_beyond_the_maximum_get_503_and_are_reported(tmp_path: Path) -> None:
    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await respond(send)

    async with serving(handler, tmp_path, max_connections=1) as (connect, _, refused):
        first = await connect()
        await first.write(get())
        assert (await first.response())[0].status_code == 200  # the first stays open
        second = await connect()
        raw = await second.raw_until_close()
        await first.stream.aclose()
    assert raw.startswith(b"HTTP/1.1 503 ")
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"] == "too_many_connections"
    assert len(refused) == 1
    assert isinstance(refused[0], TooManyConnections)


async def test_shutdown_closes_idle_connections_and_finishes_requests(tmp_path: Path) -> None:
    entered, release = trio.Event(), trio.Event()

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            entered.set()
            await release.wait()
        await respond(send)

    async with serving(handler, tmp_path) as (connect, stop, _):
        idle = await connect()
        await idle.write(get())
        assert (await idle.response())[0].status_code == 200
        busy = await connect()
        await busy.write(get("/slow"))
        await entered.wait()
        stop.set()
        assert await idle.raw_until_close() == b""  # the idle one is closed at once
        release.set()
        head, _ = await busy.response()  # the one in progress completes ...
        assert header(head, b"connection") == b"close"  # ... and is told it is the last
        assert await busy.raw_until_close() == b""


async def test_lifespan_failure_stops_serving(tmp_path: Path) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    sock = create_unix_listener(tmp_path / "run" / "s.sock")
    with trio.fail_after(GUARD), pytest.raises(LifespanFailed, match="no database"):
        await serve_attested(app, [sock])
    assert sock.fileno() == -1


async def test_apps_without_lifespan_support_are_served(tmp_path: Path) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("http only")
        await respond(send, b"served")

    path = tmp_path / "run" / "s.sock"
    sock = create_unix_listener(path)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_attested, app, [sock]))
            client = Client(await trio.open_unix_socket(str(path)))
            await client.write(get())
            assert (await client.response())[1] == b"served"
            nursery.cancel_scope.cancel()


async def test_a_body_in_tiny_chunks_reaches_the_app_in_few_messages(tmp_path: Path) -> None:
    seen: list[tuple[bytes, int]] = []

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(await read_body(receive))
        await respond(send)

    body = bytes(range(65, 91)) * 40  # 1,040 bytes
    framed = b"".join(b"1\r\n%s\r\n" % body[i : i + 1] for i in range(len(body)))
    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
            + framed
            + b"0\r\n\r\n"
        )
        assert (await client.response())[0].status_code == 200
    [(received, messages)] = seen
    assert received == body
    assert messages <= 3  # not one per chunk: what already arrived goes on together


async def test_two_framings_are_refused(tmp_path: Path) -> None:
    hits: list[str] = []

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        hits.append(scope["path"])
        await respond(send)

    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n"
            b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n" + get("/smuggled")
        )
        raw = await client.raw_until_close()
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert hits == []


async def test_an_app_breaking_its_own_framing_gets_a_500(tmp_path: Path) -> None:
    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"more than two"})

    async with serving(handler, tmp_path) as (connect, _, _):
        client = await connect()
        await client.write(get())
        raw = await client.raw_until_close()
    assert raw.startswith(b"HTTP/1.1 500 ")  # nothing of the broken response went out


async def test_a_connection_serves_at_most_max_requests(tmp_path: Path) -> None:
    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await respond(send)

    async with serving(handler, tmp_path, max_requests_per_connection=2) as (connect, _, _):
        client = await connect()
        await client.write(get())
        first, _ = await client.response()
        await client.write(get())
        last, _ = await client.response()
        assert await client.raw_until_close() == b""
    assert header(first, b"connection") is None
    assert header(last, b"connection") == b"close"


async def test_a_client_that_stops_reading_ends_the_stream(tmp_path: Path) -> None:
    """A streamed response whose client stops reading: once a write times out, the
    app's disconnect watcher is woken (the upstream stream can then be abandoned)."""
    noticed = trio.Event()

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

        async def watch(cancel: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            noticed.set()
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            while True:
                chunk = {"type": "http.response.body", "body": b"x" * 65536, "more_body": True}
                await send(chunk)

    async with serving(handler, tmp_path, send_timeout=0.3) as (connect, _, _):
        client = await connect()
        await client.write(get())  # and never reads the answer
        await noticed.wait()
        await client.stream.aclose()


async def test_connections_being_attested_count_toward_the_maximum(tmp_path: Path) -> None:
    path = tmp_path / "run" / "s.sock"
    sock = create_unix_listener(path)
    refused: list[Refusal] = []
    attesting, attested = threading.Event(), threading.Event()

    class Slow(CallerAttestor):
        def identify_blocking(
            self, sock: socket.socket, accepted_at: int, accepted_ns: int | None = None
        ) -> CallerIdentity:
            attesting.set()
            attested.wait(GUARD)  # in the attestor's worker thread, until the test lets it go
            return super().identify_blocking(sock, accepted_at, accepted_ns)

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await respond(send)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve_attested,
                    make_app(handler),
                    [sock],
                    config=ServeConfig(max_connections=1),
                    attestor=Slow(),
                    on_refused=refused.append,
                )
            )
            first = Client(await trio.open_unix_socket(str(path)))
            assert await trio.to_thread.run_sync(attesting.wait, GUARD)  # still being attested
            second = Client(await trio.open_unix_socket(str(path)))
            assert (await second.raw_until_close()).startswith(b"HTTP/1.1 503 ")
            attested.set()
            await first.write(get())
            assert (await first.response())[0].status_code == 200
            nursery.cancel_scope.cancel()
    assert [type(r) for r in refused] == [TooManyConnections]


async def test_an_app_that_never_starts_up_is_not_served(tmp_path: Path) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await trio.sleep_forever()

    sock = create_unix_listener(tmp_path / "run" / "s.sock")
    config = ServeConfig(startup_timeout=0.2)
    with trio.fail_after(GUARD), pytest.raises(LifespanFailed, match="did not complete"):
        await serve_attested(app, [sock], config=config)
