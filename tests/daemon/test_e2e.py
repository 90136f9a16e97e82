"""End to end with the real components: anvil + contracts, SeaweedFS with STS, the signer,
the worker, the broker, the daemon with its only credential source (cap mint with K10 PoP,
worker fetch with worker PoP) and the real chain watcher.

One start of the stack (:func:`tests.daemon.conftest.open_real_parts`: the worker's stack
with legacy v1 data written before the transition, the broker on the same chain, a worker
front end trusting the broker's cap keys, an agent whose chain scope is ``["openai"]``)
serves every scenario below, in this order:

1. v1 data through the sidecar: the operator's credentials, written by the legacy S3
   backend as 0x01, are served with ``identity.legacy_identity_omni`` and copied lazily
   to v2 as 0x04; without it (or with a wrong identity) there is no credential;
2. :class:`BrokerWorkerSource` alone: in scope → the stored secret, out of scope → refused;
   behind the daemon's cache, a credential torn down at the worker stops being served at
   its next revalidation (issue 16: it used to be served until the cache expired);
3. ``agentkeys daemon`` as its own process (software K10), stopped by SIGTERM;
4. ``run_daemon`` with K10 created in swtpm at first start, then registered on chain;
5. ``run_daemon`` with its chain watcher: a revocation on chain wipes the cache (last: it
   revokes the agent).
"""

from __future__ import annotations

import dataclasses
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agentkeys._files import write_private
from agentkeys.chain.challenge import NewAgent
from agentkeys.config import load_config
from agentkeys.daemon import BrokerWorkerSource, DaemonAddress, DaemonConfig
from agentkeys.daemon.cache import CredentialCache
from agentkeys.daemon.config import (
    ChainSection,
    CredentialsSection,
    DeviceSection,
    IdentitySection,
)
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable
from agentkeys.daemon.run import run_daemon
from agentkeys.devstack import Swtpm
from agentkeys.devstack.upstream import DemoUpstream
from agentkeys.omni import agent_omni, identity_omni
from agentkeys.worker.layout import v1_key, v2_key
from attest import Backend, open_device_key
from attest.device_key import DeviceKey
from tests.daemon.conftest import (
    DAEMON_MAIN,
    REAL_KEY,
    RealParts,
    make_config,
    open_real_parts,
    policy_text,
    signed_in,
    wait_ready,
    wait_until,
    write_daemon_toml,
)
from tests.service.conftest import Pki
from tests.signer.conftest import Chain
from tests.worker.conftest import revoke, write_legacy

LEGACY = {"openai": REAL_KEY.encode(), "github": b"ghp_legacy_token"}


async def test_real_stack_end_to_end(
    nursery: trio.Nursery,
    tmp_path: Path,
    upstream: DemoUpstream,
    pki: Pki,
    chain: Chain,
    swtpm: Swtpm,
) -> None:
    hook = write_legacy(pki, LEGACY)
    async with open_real_parts(
        nursery, pki, chain, tmp_path, services=["openai"], pre_transition=hook
    ) as real:
        await v1_credential_is_served_and_copied_to_v2(
            tmp_path / "legacy", upstream, real.as_master(tmp_path)
        )
        await the_real_source_against_broker_and_worker(real)
        await daemon_process_serves_and_stops_on_sigterm(tmp_path / "proc", upstream, real)
        await k10_is_created_in_the_tpm_at_first_start(tmp_path / "tpm", upstream, real, swtpm)
        await the_daemon_over_the_real_path(tmp_path / "watch", upstream, real)


async def v1_credential_is_served_and_copied_to_v2(
    tmp_path: Path, upstream: DemoUpstream, real: RealParts
) -> None:
    """The daemon as the operator's master on its own vault, written as 0x01 (SPEC 9)."""
    ws, op = real.ws, real.ws.operator
    assert (real.operator_omni, real.actor_omni) == (op.omni, op.omni)
    old, new = v1_key(op.wallet_address, "openai"), v2_key(op.omni, "openai")
    v1_before = await ws.admin_get(old)
    assert v1_before is not None
    assert v1_before[0] == 1
    async with (
        httpx.AsyncClient(base_url=real.broker.url, trust_env=False) as b_http,
        httpx.AsyncClient(base_url=real.worker_url, trust_env=False) as w_http,
    ):
        # without the identity the worker cannot open 0x01: no credential, no copy
        async with signed_in(real.source(b_http, w_http)) as source:
            with pytest.raises(CredentialUnavailable) as info:
                await source.fetch("openai")
        assert "legacy_identity_required" in info.value.reason
        # a wrong identity: the signer refuses to derive the v1 KEK for this wallet
        mallory = identity_omni("email", "mallory@example.com")
        async with signed_in(real.source(b_http, w_http, legacy_identity_omni=mallory)) as source:
            with pytest.raises(CredentialUnavailable):
                await source.fetch("github")
    assert await ws.admin_get(new) is None
    assert await ws.admin_get(v2_key(op.omni, "github")) is None

    base = make_config(tmp_path, real.broker.url)
    config = dataclasses.replace(
        base,
        credentials=CredentialsSection(worker_url=real.worker_url),
        identity=IdentitySection(
            operator_omni=op.omni, actor_omni=op.omni, legacy_identity_omni=op.identity_omni
        ),
        device=DeviceSection(backend="software", key_path=real.key_path),
    )
    write_private(config.policy_path, policy_text(upstream.url))
    async with trio.open_nursery() as inner:
        address: DaemonAddress = await inner.start(run_daemon, config)
        transport = httpx.AsyncHTTPTransport(uds=address.socket_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
            await wait_ready(client)
            response = await client.get("/openai/v1/models")
        inner.cancel_scope.cancel()
    assert response.status_code == 200, response.text
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {REAL_KEY}"
    copy = await ws.admin_get(new)
    assert copy is not None
    assert copy[0] == 4  # the lazy copy, under the current K3 epoch
    assert int.from_bytes(copy[1:5], "big") == await ws.chain.client.current_epoch()
    assert await ws.admin_get(old) == v1_before  # the v1 object stays


async def the_real_source_against_broker_and_worker(real: RealParts) -> None:
    """BrokerWorkerSource alone: in scope → the stored secret; out of scope → refused."""
    async with (
        httpx.AsyncClient(base_url=real.broker.url, trust_env=False) as broker,
        httpx.AsyncClient(base_url=real.worker_url, trust_env=False) as worker,
    ):
        source = real.source(broker, worker)
        with pytest.raises(CredentialUnavailable) as unsigned:
            await source.fetch("openai")  # no session yet: nothing is minted
        assert unsigned.value.error == "session_unavailable"
        async with signed_in(source):
            await the_source_fetches_in_scope_only(real, source)


async def the_source_fetches_in_scope_only(real: RealParts, source: BrokerWorkerSource) -> None:
    """In scope → the stored secret; out of scope → refused; torn down → gone at revalidation."""
    credential = await source.fetch("openai")
    assert credential.secret == REAL_KEY.encode()
    assert credential.expires_at > time.time()
    with pytest.raises(CredentialRefused) as info:
        await source.fetch("budget")
    assert REAL_KEY not in info.value.reason

    clock = [time.time()]
    cache = CredentialCache(ttl=300, revalidate=30, clock=lambda: clock[0])
    assert (await cache.get("openai", source.fetch)).secret == REAL_KEY.encode()
    ws, op = real.ws, real.ws.operator
    torn = await ws.request(op.master, "teardown", {}, service="openai",
                            actor_omni=real.actor_omni)  # fmt: skip
    assert torn.status == 200, torn.body
    clock[0] += 31
    with pytest.raises(CredentialRefused) as gone:
        await cache.get("openai", source.fetch)
    assert (gone.value.answer_status, gone.value.answer_code) == (404, "credential_not_found")
    restored = await ws.store_credential(
        op.master, "openai", REAL_KEY.encode(), actor_omni=real.actor_omni
    )
    assert restored.status == 200, restored.body


async def the_daemon_over_the_real_path(
    tmp_path: Path, upstream: DemoUpstream, real: RealParts
) -> None:
    ws = real.ws
    base = make_config(tmp_path, real.broker.url)
    config = dataclasses.replace(
        base,
        credentials=CredentialsSection(worker_url=real.worker_url),
        identity=IdentitySection(operator_omni=real.operator_omni, actor_omni=real.actor_omni),
        device=DeviceSection(backend="software", key_path=real.key_path),
        chain=ChainSection(
            rpc_url=ws.chain.anvil.rpc_url,
            deployment=ws.chain.deployment_path,
            poll_interval=0.05,
        ),
    )
    write_private(config.policy_path, policy_text(upstream.url))
    async with trio.open_nursery() as inner:
        address: DaemonAddress = await inner.start(run_daemon, config)
        transport = httpx.AsyncHTTPTransport(uds=address.socket_path)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://d", timeout=30
        ) as client:
            await wait_ready(client)  # until the first heartbeat succeeded
            ok = await client.post(
                "/openai/v1/chat/completions",
                json={"model": "m", "messages": []},
                headers={"authorization": "Bearer agentkeys-placeholder"},
            )
            assert ok.status_code == 200, ok.text
            assert upstream.requests[-1].headers["authorization"] == f"Bearer {REAL_KEY}"
            # outside the chain scope (["openai"]) although the local policy allows it: the
            # broker refuses the cap, or the daemon already knows the scope from the ScopeSet
            # event its watcher read: either way the code says it was never granted
            outside = await client.post("/budget/v1/chat/completions", json={"model": "m"})
            assert outside.status_code == 403
            assert outside.json()["error"] == "service_not_in_scope"
            # revoked on chain: the watcher's event wipes the cached credential and the next
            # request is refused by the daemon itself, well before the cache TTL
            await revoke(ws.chain, ws.operator, real.device)
            with trio.move_on_after(30):  # a hang guard: the assertions below say what failed
                while True:
                    refused = await client.post("/openai/v1/chat/completions", json={"model": "m"})
                    if refused.status_code != 200:
                        break
                    await trio.sleep(0.05)
        inner.cancel_scope.cancel()
    assert refused.status_code == 403
    assert refused.json()["error"] == "scope_revoked"


async def daemon_process_serves_and_stops_on_sigterm(
    tmp_path: Path, upstream: DemoUpstream, real: RealParts
) -> None:
    config = write_daemon_toml(
        tmp_path, real.broker.url, worker_url=real.worker_url,
        operator=real.operator_omni, actor=real.actor_omni,
    )  # fmt: skip
    write_private(tmp_path / "device" / "k10.pem", real.key_path.read_text())
    write_private(tmp_path / "etc" / "policy.toml", policy_text(upstream.url))
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", DAEMON_MAIN, "daemon", "--config", str(config)],
        stderr=subprocess.PIPE,
    )
    sock = tmp_path / "run" / "agentkeys-proxy.sock"
    try:
        await wait_until(sock.exists)
        transport = httpx.AsyncHTTPTransport(uds=str(sock))
        async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
            await wait_ready(client)
            response = await client.get("/openai/v1/models")
        assert response.status_code == 200
        assert upstream.requests[-1].headers["authorization"] == f"Bearer {REAL_KEY}"
        # K10 stays a 0600 software key (no TPM configured here)
        key = tmp_path / "device" / "k10.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            code = await proc.wait()
        assert code == 0
        assert proc.stderr is not None
        log = (await proc.stderr.receive_some(1 << 20)).decode()
        assert "stopped" in log
        assert REAL_KEY not in log
        assert "device session signed in" in log
        assert "eyJ" not in log  # no session token (a JWS) is ever logged
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class _TpmK10:
    """The chain client's K10 signer interface over a device key (here: in swtpm)."""

    def __init__(self, key: DeviceKey) -> None:
        self._key = key
        numbers = key.public_key.public_numbers()
        self.public_point = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    async def sign_digest(self, digest: bytes) -> bytes:
        raw = await self._key.sign(digest)
        return encode_dss_signature(
            int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        )


async def k10_is_created_in_the_tpm_at_first_start(
    tmp_path: Path, upstream: DemoUpstream, real: RealParts, swtpm: Swtpm
) -> None:
    """run_daemon with device.backend = tpm (swtpm): K10 lives in the TPM, none on disk."""
    ws = real.ws
    actor = agent_omni(ws.operator.omni, "tpm-agent")
    path = write_daemon_toml(
        tmp_path, real.broker.url, worker_url=real.worker_url,
        operator=ws.operator.omni, actor=actor,
    )  # fmt: skip
    write_private(tmp_path / "etc" / "policy.toml", policy_text(upstream.url))
    config = load_config(DaemonConfig, path=path, environ={})
    config = dataclasses.replace(
        config, device=DeviceSection(backend="tpm", tcti=swtpm.tcti, key_path=None)
    )
    async with trio.open_nursery() as nursery:
        address: DaemonAddress = await nursery.start(run_daemon, config)
        key = await open_device_key("tpm", tcti=swtpm.tcti, create=False)
        try:
            assert key.backend is Backend.TPM
            # the K10 the daemon created becomes a registered agent device with a scope
            k10 = _TpmK10(key)
            proof = await ws.chain.client.k10_binding_proof(k10, ws.operator.omni, actor)
            mutation = await ws.chain.client.prepare_add_agent_device(
                ws.operator.omni, NewAgent("tpm-agent", k10.public_point, roles=1), proof,
                ws.operator.authority,
            )  # fmt: skip
            await ws.chain.client.submit(mutation, ws.operator.wallet)
            scope = await ws.chain.client.prepare_set_scope(
                ws.operator.omni, actor, ["openai"], False, ws.operator.authority
            )
            await ws.chain.client.submit(scope, ws.operator.wallet)
        finally:
            await key.aclose()
        stored = await ws.store_credential(
            ws.operator.master, "openai", REAL_KEY.encode(), actor_omni=actor
        )
        assert stored.status == 200, stored.body
        transport = httpx.AsyncHTTPTransport(uds=address.socket_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
            await wait_ready(client)
            # minted with a TPM-signed PoP, fetched with a TPM-signed worker PoP
            assert (await client.get("/openai/v1/models")).status_code == 200
        nursery.cancel_scope.cancel()
    assert not (tmp_path / "device").exists()
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {REAL_KEY}"
