"""nginx launcher: a real proxy injecting Authorization, logging, unprivileged, removed."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from agentkeys.devstack import DevstackError, start_nginx

_SECRET = "Bearer sk-nginx-test-secret"


async def _echo_authorization(stream: trio.SocketStream) -> None:
    """An upstream that answers each request with the Authorization header it received."""
    data = b""
    async with stream:
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        found = [
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")[1:]
            if line.lower().startswith("authorization:")
        ]
        body = ("|".join(found)).encode()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (len(body), body)
        )


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _text(path: Path) -> str:
    return path.read_text()


def _exists(path: Path) -> bool:
    return path.exists()


async def test_proxies_with_the_injected_header_and_logs(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, _echo_authorization, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with start_nginx(f"http://127.0.0.1:{port}", authorization=_SECRET) as proxy:
            async with httpx.AsyncClient() as client:
                response = await client.get(
                    f"{proxy.url}/v1/models", headers={"Authorization": "Bearer caller-own"}
                )
            assert response.status_code == 200
            assert response.text == _SECRET  # replaced, not added beside the caller's
            pids = proxy.pids()
            assert len(pids) >= 2  # master and one worker
            if os.geteuid() == 0:
                assert all(_uid(pid) != 0 for pid in pids)
            for pid in pids:
                assert _SECRET.encode() not in _cmdline(pid)
            assert "GET /v1/models" in _text(proxy.access_log)
            home = proxy.access_log.parent
        assert not _exists(home)
        assert all(not _exists(Path(f"/proc/{pid}")) for pid in pids)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("upstream", "authorization"),
    [
        ("https://127.0.0.1:1", "Bearer x"),
        ("http://127.0.0.1:1/base", "Bearer x"),
        ("http://127.0.0.1:1", 'Bearer x"; return 200'),
        ("http://127.0.0.1:1", "Bearer ${x}"),
    ],
)
async def test_refuses_what_the_config_cannot_hold(upstream: str, authorization: str) -> None:
    with pytest.raises(DevstackError):
        async with start_nginx(upstream, authorization=authorization):
            pass
