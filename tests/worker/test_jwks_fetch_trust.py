"""The worker's trust root (the broker's cap JWKS) is fetched only over https
(plain http only to loopback), optionally with a pinned CA, and read with a byte limit.

The servers here are hostile or foreign brokers written for the test on real 127.0.0.1
sockets (a raw HTTP/1.1 responder, and one behind TLS with a certificate of our PKI)."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.config import ConfigError
from agentkeys.jwks import JsonWebKeySet
from agentkeys.worker import CapKeysUnavailable, FetchedCapKeys
from agentkeys.worker._ports import check_jwks_url, jwks_http_client
from agentkeys.worker.config import CapSettings
from tests.service.conftest import Pki, make_pki

Respond = Callable[[trio.abc.Stream], Awaitable[None]]


@pytest.mark.parametrize(
    "url",
    [
        "https://broker.example/v1/cap/jwks.json",
        "http://127.0.0.1:8080/v1/cap/jwks.json",
        "http://127.9.9.9/v1/cap/jwks.json",
        "http://[::1]:8080/v1/cap/jwks.json",
        "http://localhost/v1/cap/jwks.json",
    ],
)
def test_https_or_loopback_http_is_accepted(url: str) -> None:
    assert check_jwks_url(url) == url
    assert CapSettings(audience="a", jwks_url=url).jwks_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://broker.example/v1/cap/jwks.json",
        "http://10.0.0.1/v1/cap/jwks.json",
        "http://128.0.0.1/v1/cap/jwks.json",
        "http://localhost.evil.example/jwks.json",
        "http://[::2]/jwks.json",
        "ftp://127.0.0.1/jwks.json",
        "file:///etc/jwks.json",
        "https:///jwks.json",
        "jwks.json",
    ],
)
def test_other_schemes_and_remote_http_are_refused(url: str) -> None:
    with pytest.raises(CapKeysUnavailable):
        check_jwks_url(url)
    with pytest.raises(ConfigError, match="caps"):
        CapSettings(audience="a", jwks_url=url)


def test_a_ca_pin_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="jwks_ca"):
        CapSettings(audience="a", jwks_file=Path("k.json"), jwks_ca=Path("ca.pem"))
    pinned = CapSettings(audience="a", jwks_url="https://b.example/j", jwks_ca=Path("ca.pem"))
    assert pinned.jwks_ca == Path("ca.pem")


async def read_request(stream: trio.abc.Stream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        data += chunk


async def serve(nursery: trio.Nursery, respond: Respond, tls: ssl.SSLContext | None) -> int:
    async def handler(stream: trio.SocketStream) -> None:
        conn: trio.abc.Stream = stream
        try:
            if tls is not None:
                conn = trio.SSLStream(stream, tls, server_side=True)
                await conn.do_handshake()
            await read_request(conn)
            await respond(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await conn.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


def jwks_body() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return JsonWebKeySet.from_public_keys([key.public_key()]).to_json()


async def answer(body: bytes, stream: trio.abc.Stream) -> None:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    await stream.send_all(head.encode() + b"connection: close\r\n\r\n" + body)


async def test_an_endless_body_is_cut_off_at_the_limit(nursery: trio.Nursery) -> None:
    sent = [0]

    async def endless(stream: trio.abc.Stream) -> None:  # chunked, no length, never ends
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b" " * 4096
        while sent[0] < 64 * 1024 * 1024:
            await stream.send_all(b"1000\r\n" + chunk + b"\r\n")
            sent[0] += len(chunk)

    port = await serve(nursery, endless, None)
    async with jwks_http_client() as http:
        keys = FetchedCapKeys(http, f"http://127.0.0.1:{port}/jwks", max_bytes=16 * 1024)
        with pytest.raises(CapKeysUnavailable, match="larger than 16384"):
            await keys.keys_for("k")
    assert sent[0] < 64 * 1024 * 1024  # the worker stopped reading long before the end


async def test_a_declared_oversize_body_is_refused_unread(nursery: trio.Nursery) -> None:
    big = b"{" + b" " * 70_000 + b"}"
    port = await serve(nursery, partial(answer, big), None)
    async with jwks_http_client() as http:
        keys = FetchedCapKeys(http, f"http://127.0.0.1:{port}/jwks")
        with pytest.raises(CapKeysUnavailable, match="larger than"):
            await keys.keys_for("k")
        small = FetchedCapKeys(http, f"http://127.0.0.1:{port}/jwks", max_bytes=len(big))
        with pytest.raises(CapKeysUnavailable, match="invalid"):  # read whole, then parsed
            await small.keys_for("k")


async def test_a_redirect_is_not_followed(nursery: trio.Nursery) -> None:
    async def redirect(stream: trio.abc.Stream) -> None:
        await stream.send_all(
            b"HTTP/1.1 302 Found\r\nlocation: http://broker.example/jwks\r\n"
            b"content-length: 0\r\nconnection: close\r\n\r\n"
        )

    port = await serve(nursery, redirect, None)
    async with jwks_http_client() as http:
        with pytest.raises(CapKeysUnavailable, match="HTTP 302"):
            await FetchedCapKeys(http, f"http://127.0.0.1:{port}/jwks").keys_for("k")


async def test_the_pinned_ca_decides_which_broker_is_trusted(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # a serverAuth certificate with SAN 127.0.0.1 from our CA (the signer role has one)
    tls.load_cert_chain(pki.cert("signer"), pki.key("signer"))
    body = jwks_body()
    port = await serve(nursery, partial(answer, body), tls)
    url = f"https://127.0.0.1:{port}/v1/cap/jwks.json"
    async with jwks_http_client(ca=pki.ca) as http:
        keys = await FetchedCapKeys(http, url).keys_for("k")
        assert set(keys) == set(JsonWebKeySet.from_json(body).by_kid)
    foreign = make_pki(tmp_path / "foreign")
    async with jwks_http_client(ca=foreign.ca) as http:
        with pytest.raises(CapKeysUnavailable, match="unreachable"):
            await FetchedCapKeys(http, url).keys_for("k")
    async with jwks_http_client() as http:  # system trust store: our private CA is not in it
        with pytest.raises(CapKeysUnavailable, match="unreachable"):
            await FetchedCapKeys(http, url).keys_for("k")
