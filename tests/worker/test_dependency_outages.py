"""A dependency that is not reached answers 503 ``…_unavailable``; a wrong answer stays 502.

Through both front ends (microservice and Lambda handler), with the real signer and
SeaweedFS: an S3 endpoint that refuses connections gives 503 ``storage_unavailable``, a
stopped signer 503 ``signer_unavailable``; the signer refusing the worker (a certificate of
another role: its 403), a signer certificate from a CA the worker does not trust, and an
object S3 serves that is too large stay 502 ``signer_failed`` / ``storage_failed``. The
signer client is also driven directly against real sockets that refuse, close or stall.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio

import agentkeys.worker.errors as worker_errors
from agentkeys.clients.signer import SignerClient
from agentkeys.config import load_config
from agentkeys.errors import BindingDenied
from agentkeys.jwks import JsonWebKeySet
from agentkeys.service import MemoryAudit, ServerSettings, mtls_client
from agentkeys.worker import WorkerConfig, WorkerService, open_worker_core
from agentkeys.worker import _lambda as worker_lambda
from agentkeys.worker._signer import signer_failures
from agentkeys.worker.errors import (
    SignerFailed,
    SignerUnavailable,
    StorageFailed,
    StorageUnavailable,
    WorkerError,
)
from agentkeys.worker.layout import v2_key
from tests.service.conftest import Pki, make_pki
from tests.worker.conftest import Stack, write_worker_config

SECRET = b"sk-outage-0123456789abcdef"
OMNI = "11" * 32
HANG_GUARD = 60.0  # a hang guard only: the clients' own timeouts end each request


def test_unavailable_leaves_are_503_children_of_the_502_parents() -> None:
    assert issubclass(SignerUnavailable, SignerFailed)
    assert issubclass(StorageUnavailable, StorageFailed)
    assert (SignerFailed.error, SignerFailed.status) == ("signer_failed", 502)
    assert (SignerUnavailable.error, SignerUnavailable.status) == ("signer_unavailable", 503)
    assert (StorageFailed.error, StorageFailed.status) == ("storage_failed", 502)
    assert (StorageUnavailable.error, StorageUnavailable.status) == ("storage_unavailable", 503)
    assert {"SignerUnavailable", "StorageUnavailable"} <= set(worker_errors.__all__)
    # every leaf the worker answers is its own, or a device-binding refusal (agentkeys.binding)
    codes = [getattr(worker_errors, name) for name in worker_errors.__all__]
    assert all(issubclass(c, WorkerError | BindingDenied) for c in codes)
    assert len({c.error for c in codes}) == len(codes)


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@asynccontextmanager
async def reconfigured(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    *,
    s3: str | None = None,
    replace: tuple[tuple[str, str], ...] = (),
) -> AsyncIterator[Stack]:
    """``stack`` answering through a worker built from a changed config (same front end)."""
    jwks = JsonWebKeySet.from_public_keys([stack.k1.public_key()]).to_json()
    config = write_worker_config(
        tmp_path / name, pki=stack.pki, chain=stack.chain, signer_url=stack.signer.bound.url,
        s3=s3 or stack.store.s3_endpoint, jwks=jwks,
    )  # fmt: skip
    text = config.read_text()
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    other = dataclasses.replace(stack, config_path=config)
    if stack.frontend == "lambda":
        monkeypatch.setenv(worker_lambda.CONFIG_ENV, str(config))
        worker_lambda.reset_for_tests()
        yield other
        return
    settings = load_config(WorkerConfig, path=config)
    async with open_worker_core(settings) as core, trio.open_nursery() as nursery:
        service = WorkerService(core=core, settings=ServerSettings(), audit=MemoryAudit())
        bound = await nursery.start(service.serve)
        other.worker_url = bound.url
        yield other
        service.shutdown()


async def test_dead_dependencies_answer_503_unavailable(
    frontend: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master = frontend.operator.master
    stored = await frontend.store_credential(master, "openai", SECRET)
    assert stored.status == 200, stored.body

    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}"
        async with reconfigured(frontend, tmp_path, monkeypatch, "s3-refused", s3=url) as down:
            with trio.fail_after(HANG_GUARD):
                answer = await down.fetch(master)
    assert (answer.status, answer.body["error"]) == (503, "storage_unavailable"), answer.body
    assert "unreachable" in answer.body["reason"]

    # the same worker reaches S3 again: the signer is what goes next
    if frontend.frontend == "lambda":
        monkeypatch.setenv(worker_lambda.CONFIG_ENV, str(frontend.config_path))
        worker_lambda.reset_for_tests()
    again = await frontend.fetch(master)
    assert again.status == 200, again.body

    frontend.signer.service.shutdown()
    with trio.fail_after(HANG_GUARD):
        while True:  # a kept-alive connection is served until the signer's drain deadline
            answer = await frontend.fetch(master)
            if answer.status != 200:
                break
            await trio.sleep(0.2)
    assert answer.status == 503, answer.body
    assert answer.body["error"] == "signer_unavailable", answer.body
    assert "signer unreachable" in answer.body["reason"]


async def test_wrong_answers_stay_502_failed(
    frontend: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pki: Pki,
) -> None:
    master = frontend.operator.master
    # S3 answers with an object larger than any envelope
    await frontend.admin_put(v2_key(master.actor_omni, "openai"), b"\0" * (64 * 1024 + 1))
    answer = await frontend.fetch(master)
    assert (answer.status, answer.body["error"]) == (502, "storage_failed"), answer.body
    assert "too large" in answer.body["reason"]

    # the signer answers, with a refusal: a broker certificate may not ask for credentials
    broker = ((str(pki.cert("worker")), str(pki.cert("broker"))),
              (str(pki.key("worker")), str(pki.key("broker"))))  # fmt: skip
    async with reconfigured(frontend, tmp_path, monkeypatch, "as-broker", replace=broker) as w:
        answer = await w.fetch(master)
    assert (answer.status, answer.body["error"]) == (502, "signer_failed"), answer.body
    assert "signer refused" in answer.body["reason"]

    # the signer's certificate does not verify against the worker's trust anchor
    foreign = await trio.to_thread.run_sync(make_pki, tmp_path / "foreign-pki")
    ca = ((f'ca = "{pki.ca}"', f'ca = "{foreign.ca}"'),)
    async with reconfigured(frontend, tmp_path, monkeypatch, "foreign-ca", replace=ca) as w:
        answer = await w.fetch(master)
    assert (answer.status, answer.body["error"]) == (502, "signer_failed"), answer.body


# -- the signer client against real sockets ---------------------------------------------------


async def _accept_then(nursery: trio.Nursery, *, close: bool) -> int:
    """A loopback listener that closes each connection at once, or holds it silent."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = int(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            if not close:
                await trio.sleep_forever()

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return port


@pytest.mark.parametrize("peer", ["refusing", "closing", "silent"])
async def test_signer_client_not_reached_is_unavailable(
    peer: str, pki: Pki, nursery: trio.Nursery
) -> None:
    with refusing_port() as refused:
        if peer == "refusing":
            port = refused
        else:
            port = await _accept_then(nursery, close=peer == "closing")
        http = mtls_client(
            base_url=f"https://127.0.0.1:{port}", ca=pki.ca, cert=pki.cert("worker"),
            key=pki.key("worker"), timeout=0.5,
        )  # fmt: skip
        async with http:
            with pytest.raises(SignerUnavailable, match="signer unreachable"), signer_failures():
                await SignerClient(http).v2_kek(OMNI, 1, "decrypt")
