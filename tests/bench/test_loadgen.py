"""The C load generator: builds, speaks HTTP/1.1 over Unix and TCP, fails loudly."""

from __future__ import annotations

import os
from functools import partial

import pytest
import trio

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
