"""The C load generator: builds, speaks HTTP/1.1 over Unix and TCP, fails loudly."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from bench import _sse
from bench._errors import LoadgenError
from bench._loadgen import LoadResult, build_loadgen, run_loadgen, write_requests
from bench._servers import raw_handler


async def test_build_is_cached_by_source_hash(build_dir):
    first = await build_loadgen(build_dir)
    second = await build_loadgen(build_dir)
    assert first == second
    assert os.access(first, os.X_OK)


async def test_keep_alive_over_tcp_counts_requests(build_dir):
    binary = await build_loadgen(build_dir)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, raw_handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        result = await run_loadgen(
            binary, tcp=("127.0.0.1", port), conns=2, duration=0.1, warmup=0.0
        )
        nursery.cancel_scope.cancel()
    assert result.requests > 0
    assert result.errors == 0
    assert result.non_2xx == 0
    assert result.conns == 2


async def test_unreachable_socket_is_an_error(build_dir, tmp_path):
    binary = await build_loadgen(build_dir)
    with pytest.raises(LoadgenError, match="exited with 1"):
        await run_loadgen(
            binary, unix_path=tmp_path / "nobody.sock", conns=1, duration=0.1, warmup=0.0
        )


async def test_bad_arguments_are_refused(build_dir, tmp_path):
    binary = await build_loadgen(build_dir)
    with pytest.raises(LoadgenError, match="exited with 2"):
        await run_loadgen(
            binary, unix_path=tmp_path / "x.sock", conns=5000, duration=0.1, warmup=0.0
        )


async def test_a_target_is_required(build_dir):
    with pytest.raises(LoadgenError, match="Unix socket path or a TCP address"):
        await run_loadgen(await build_loadgen(build_dir), conns=1, duration=0.1, warmup=0.0)


@pytest.mark.parametrize("text", ["", "not json", '{"conns": 1}', "[1, 2]"])
def test_unexpected_output_is_rejected(text):
    with pytest.raises(LoadgenError):
        LoadResult.from_json(text)


async def test_prebuilt_requests_are_each_sent_once(build_dir, tmp_path):
    seen: list[bytes] = []

    async def recording(stream: trio.SocketStream) -> None:
        pending = b""
        async with stream:
            while data := await stream.receive_some(65536):
                pending += data
                while b"\r\n\r\n" in pending:
                    head, pending = pending.split(b"\r\n\r\n", 1)
                    seen.append(head.split(b"\r\n", 1)[0])
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    requests = [b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(25)]
    write_requests(tmp_path / "requests", requests)
    binary = await build_loadgen(build_dir)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, recording, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        result = await run_loadgen(
            binary,
            tcp=("127.0.0.1", port),
            conns=3,
            duration=30.0,
            warmup=0.0,
            requests_file=tmp_path / "requests",
        )
        nursery.cancel_scope.cancel()
    assert result.exhausted
    assert result.completed == 25
    assert result.errors == 0
    assert sorted(seen) == sorted(b"GET /r%d HTTP/1.1" % i for i in range(25))
    assert result.duration_s < 30.0  # the window ended at the last response


async def test_fewer_prebuilt_requests_than_connections_is_refused(build_dir, tmp_path):
    write_requests(tmp_path / "requests", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
    with pytest.raises(LoadgenError, match="exited with 2"):
        await run_loadgen(
            await build_loadgen(build_dir),
            tcp=("127.0.0.1", 9),
            conns=2,
            duration=0.1,
            warmup=0.0,
            requests_file=tmp_path / "requests",
        )


async def _serve_once(
    binary: Path, handler: Callable[[trio.SocketStream], Awaitable[None]], **options: Any
) -> LoadResult:
    """Run the generator against ``handler`` on loopback TCP and return its result."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        result = await run_loadgen(binary, tcp=("127.0.0.1", port), **options)
        nursery.cancel_scope.cancel()
    return result


async def test_a_streamed_chunked_body_is_read_to_its_last_chunk(build_dir, tmp_path):
    body_file = tmp_path / "body.json"
    body_file.write_bytes(_sse.REQUEST_BODY)
    result = await _serve_once(
        await build_loadgen(build_dir),
        _sse.sse_handler,
        conns=2,
        duration=0.2,
        warmup=0.0,
        path=_sse.PATH,
        body_file=body_file,
    )
    assert result.requests > 0
    assert (result.errors, result.non_2xx, result.timeouts) == (0, 0, 0)
    assert result.body_bytes == result.requests * len(_sse.BODY)
    assert result.chunks == result.requests * _sse.EVENTS
    assert 0 < result.ttfb_p50_us <= result.p50_us


def _responder(
    *parts: bytes, pause: float = 0.0
) -> tuple[Callable[[trio.SocketStream], Awaitable[None]], list[bytes]]:
    """A handler answering each request with ``parts`` written one by one (pausing
    ``pause`` seconds after the first), and recording the requests it received."""
    received: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        pending = b""
        async with stream:
            while data := await stream.receive_some(65536):
                pending += data
                while b"\r\n\r\n" in pending:
                    head, pending = pending.split(b"\r\n\r\n", 1)
                    match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
                    length = int(match.group(1)) if match else 0
                    while len(pending) < length:
                        pending += await stream.receive_some(65536)
                    received.append(head + b"\r\n\r\n" + pending[:length])
                    pending = pending[length:]
                    for index, part in enumerate(parts):
                        await stream.send_all(part)
                        if index == 0 and pause:
                            await trio.sleep(pause)

    return handler, received


_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_chunk_extensions_trailers_and_split_writes_are_parsed(build_dir):
    body = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n"
    # the head, then the body one byte per write: every state of the parser sees a split
    handler, _ = _responder(_CHUNKED_HEAD, *(body[i : i + 1] for i in range(len(body))))
    result = await _serve_once(
        await build_loadgen(build_dir), handler, conns=1, duration=0.2, warmup=0.0
    )
    assert result.requests > 0
    assert result.errors == 0
    assert result.body_bytes == result.requests * len(b"hello world")
    assert result.chunks == result.requests * 3


@pytest.mark.parametrize(
    "response",
    [
        _CHUNKED_HEAD + b"zz\r\nhello\r\n0\r\n\r\n",  # not a hex size
        _CHUNKED_HEAD + b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the chunk data
        b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",  # no framing at all
    ],
)
async def test_malformed_bodies_are_errors(build_dir, response):
    handler, _ = _responder(response)
    result = await _serve_once(
        await build_loadgen(build_dir), handler, conns=1, duration=0.1, warmup=0.0
    )
    assert result.errors > 0
    assert result.requests == 0


async def test_time_to_first_byte_waits_for_the_body_not_the_head(build_dir):
    # The head goes out at once, the body 50 ms later: the first body byte cannot
    # arrive before it is sent, whatever the machine's load.
    pause = 0.05
    handler, _ = _responder(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok", pause=pause)
    result = await _serve_once(
        await build_loadgen(build_dir), handler, conns=1, duration=0.3, warmup=0.0
    )
    assert result.requests > 0
    assert result.errors == 0
    assert result.ttfb_p50_us >= pause * 1e6
    assert result.body_bytes == 2 * result.requests


async def test_a_body_file_makes_every_request_a_post_of_it(build_dir, tmp_path):
    (tmp_path / "body.json").write_bytes(b'{"stream":true}')
    handler, received = _responder(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    result = await _serve_once(
        await build_loadgen(build_dir),
        handler,
        conns=1,
        duration=0.1,
        warmup=0.0,
        path="/v1/chat/completions",
        body_file=tmp_path / "body.json",
    )
    assert result.errors == 0
    assert received
    assert received[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Content-Length: 15\r\n" in received[0]
    assert received[0].endswith(b'\r\n\r\n{"stream":true}')
    assert result.body_bytes == 0  # an empty body's first byte is its end


@pytest.mark.parametrize("size", [0, 8193])
async def test_a_body_file_outside_its_bounds_is_refused(build_dir, tmp_path, size):
    (tmp_path / "body.json").write_bytes(b"x" * size)
    with pytest.raises(LoadgenError, match="exited with 2"):
        await run_loadgen(
            await build_loadgen(build_dir),
            tcp=("127.0.0.1", 9),
            conns=1,
            duration=0.1,
            warmup=0.0,
            body_file=tmp_path / "body.json",
        )


@pytest.mark.parametrize("settle", [True, False])
async def test_settle_starts_the_window_after_every_first_response(build_dir, settle):
    # Each connection's first response comes 100 ms late (as after an attestation).
    # With --settle the window opens once all three have come; without it, the 100 ms
    # window has closed before any response can arrive.
    delay = 0.1

    async def slow_first(stream: trio.SocketStream) -> None:
        first = True
        async with stream:
            pending = b""
            while data := await stream.receive_some(65536):
                pending += data
                while b"\r\n\r\n" in pending:
                    pending = pending.split(b"\r\n\r\n", 1)[1]
                    if first:
                        await trio.sleep(delay)
                        first = False
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    result = await _serve_once(
        await build_loadgen(build_dir),
        slow_first,
        conns=3,
        duration=0.1,
        warmup=0.0,
        settle=settle,
    )
    assert result.errors == 0
    assert result.completed > 0
    if settle:
        assert result.settle_s >= delay
        assert result.requests > 0
    else:
        assert result.settle_s == 0.0
        assert result.requests == 0
