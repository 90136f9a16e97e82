"""End to end with the real components: anvil + contracts, SeaweedFS with STS, the signer,
the worker, the broker, the daemon with its real credential source (cap mint with K10 PoP,
worker fetch with worker PoP) and the real chain watcher.

The worker stack comes from tests/worker/conftest.py (operator registered on chain, signer,
SeaweedFS); the broker runs on the same chain, and a second worker front end trusts the
broker's cap keys (the stack's own worker trusts a test K1 the master uses to store).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from agentkeys.broker import J1
from agentkeys.broker.config import CapSettings
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.daemon import BrokerWorkerSource, DaemonAddress
from agentkeys.daemon.config import (
    ChainSection,
    CredentialsSection,
    DeviceSection,
    IdentitySection,
)
from agentkeys.daemon.errors import CredentialRefused
from agentkeys.daemon.run import run_daemon
from agentkeys.jwks import JsonWebKeySet
from agentkeys.service import BoundAddress, MemoryAudit, ServerSettings
from agentkeys.smtp_sink import run_smtp_sink
from agentkeys.worker import StaticCapKeys, StorageSettings, WorkerCore, WorkerService
from agentkeys.worker._signer import SignerClient
from attest.device_key import SoftwareDeviceKey
from tests.daemon.conftest import Broker, make_config, policy_text, write_private
from tests.daemon.upstream import REAL_KEY, Upstream
from tests.stack_fixtures import TEST_BUCKET
from tests.worker.conftest import AUDIENCE, add_agent, chain, pki, revoke  # noqa: F401
from tests.worker.conftest import Stack as WorkerStack
from tests.worker.conftest import stack as worker_stack  # noqa: F401


@pytest.fixture
async def e2e(
    nursery: trio.Nursery,
    tmp_path: Path,
    worker_stack: WorkerStack,  # noqa: F811 (the imported fixture)
    upstream: Upstream,
) -> AsyncIterator[dict[str, Any]]:
    ws = worker_stack
    agent = await add_agent(ws.chain, ws.operator, "coder", ["openai"], read_only=False)
    stored = await ws.store_credential(
        ws.operator.master, "openai", REAL_KEY.encode(), actor_omni=agent.actor_omni
    )
    assert stored.status == 200, stored.body
    deployment = read_deployment_record(ws.chain.deployment_path)
    async with run_smtp_sink() as smtp:
        broker = Broker(
            nursery=nursery, state_dir=tmp_path / "broker", smtp=smtp,
            rpc_url=ws.chain.anvil.rpc_url, addresses=deployment.addresses,
            caps=CapSettings(audience=AUDIENCE),
        )  # fmt: skip
        await broker.start()
        assert broker.service is not None
        broker_keys: JsonWebKeySet = broker.service.keys.cap.published
        async with ws.signer.client(ws.pki, "worker") as signer_http:
            core = WorkerCore(
                audience=AUDIENCE,
                cap_keys=StaticCapKeys(broker_keys),
                chain=ws.chain.client,
                signer=SignerClient(signer_http),
                storage=StorageSettings(bucket=TEST_BUCKET, endpoint=ws.store.s3_endpoint),
            )
            worker = WorkerService(core=core, settings=ServerSettings(), audit=MemoryAudit())
            bound: BoundAddress = await nursery.start(worker.serve)
            session, _ = await broker.service.sessions.issue(
                stage=J1, subject=ws.operator.omni, now=int(time.time()), lifetime=600,
                extra={"wallet": ws.operator.wallet_address},
            )  # fmt: skip
            session_file = tmp_path / "secrets" / "session"
            write_private(session_file, session)
            key_path = tmp_path / "device" / "k10.pem"
            write_private(
                key_path,
                agent.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
            )
            base = make_config(tmp_path, broker.url)
            config = dataclasses.replace(
                base,
                broker=dataclasses.replace(base.broker, session_file=session_file),
                credentials=CredentialsSection(source="broker", worker_url=bound.url),
                identity=IdentitySection(
                    operator_omni=ws.operator.omni, actor_omni=agent.actor_omni
                ),
                device=DeviceSection(backend="software", key_path=key_path),
                chain=ChainSection(
                    rpc_url=ws.chain.anvil.rpc_url,
                    deployment=ws.chain.deployment_path,
                    poll_interval=0.05,
                ),
            )
            write_private(config.policy_path, policy_text(upstream.url))
            done = trio.Event()

            async def run(*, task_status: trio.TaskStatus[DaemonAddress]) -> None:
                try:
                    await run_daemon(config, task_status=task_status)
                finally:
                    done.set()

            address: DaemonAddress = await nursery.start(run)
            yield {
                "address": address, "ws": ws, "agent": agent, "upstream": upstream,
                "session": session, "broker_url": broker.url, "worker_url": bound.url,
                "key_path": key_path,
            }  # fmt: skip
            if not done.is_set():  # run_daemon's signal receiver is active: graceful stop
                os.kill(os.getpid(), signal.SIGTERM)
            with trio.fail_after(20):
                await done.wait()
            worker.shutdown()
        await broker.stop()


async def test_real_broker_worker_chain(e2e: dict[str, Any]) -> None:
    address: DaemonAddress = e2e["address"]
    upstream: Upstream = e2e["upstream"]
    ws: WorkerStack = e2e["ws"]
    transport = httpx.AsyncHTTPTransport(uds=address.socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://d", timeout=30) as client:
        for _ in range(400):  # until the first heartbeat succeeded
            if (await client.get("/readyz")).status_code == 200:
                break
            await trio.sleep(0.05)
        ok = await client.post(
            "/openai/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={"authorization": "Bearer agentkeys-placeholder"},
        )
        assert ok.status_code == 200, ok.text
        assert upstream.requests[-1]["headers"]["authorization"] == f"Bearer {REAL_KEY}"
        # outside the chain scope (["openai"]) although the local policy allows it: the
        # broker refuses the cap (credential_refused), or the daemon already knows the
        # scope from the ScopeSet event its watcher read (scope_revoked)
        outside = await client.post("/budget/v1/chat/completions", json={"model": "m"})
        assert outside.status_code == 403
        assert outside.json()["error"] in ("credential_refused", "scope_revoked")
        # revoked on chain: the watcher's event wipes the cached credential and the next
        # request is refused by the daemon itself, well before the cache TTL
        await revoke(ws.chain, ws.operator, e2e["agent"])
        for _ in range(600):
            refused = await client.post("/openai/v1/chat/completions", json={"model": "m"})
            if refused.status_code != 200:
                break
            await trio.sleep(0.05)
    assert refused.status_code == 403
    assert refused.json()["error"] == "scope_revoked"


async def test_the_real_source_against_broker_and_worker(e2e: dict[str, Any]) -> None:
    """BrokerWorkerSource alone: in scope → the stored secret; out of scope → refused."""
    agent = e2e["agent"]
    async with httpx.AsyncClient(base_url=e2e["broker_url"], trust_env=False) as broker, \
            httpx.AsyncClient(base_url=e2e["worker_url"], trust_env=False) as worker:  # fmt: skip
        source = BrokerWorkerSource(
            broker=broker, worker=worker,
            device_key=SoftwareDeviceKey.open(e2e["key_path"], create=False),
            session=e2e["session"].encode(), operator_omni=agent.operator_omni,
            actor_omni=agent.actor_omni,
        )  # fmt: skip
        credential = await source.fetch("openai")
        assert credential.secret == REAL_KEY.encode()
        assert credential.expires_at > time.time()
        with pytest.raises(CredentialRefused) as info:
            await source.fetch("budget")
    assert REAL_KEY not in info.value.reason
