"""The worker spends a K10 proof nonce only after every chain check passed,
and one device cannot fill the process-wide nonce registry (real chain, signer, SeaweedFS)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from agentkeys.cap import CapOp
from agentkeys.clients.signer import SignerClient
from agentkeys.errors import AgentkeysError, PopNonceRegistryFull, PopNonceReused
from agentkeys.pop import NonceRegistry
from agentkeys.worker import StorageSettings, WorkerCore
from tests.stack_fixtures import TEST_BUCKET
from tests.worker.conftest import AUDIENCE, Device, Stack, add_agent, revoke


@asynccontextmanager
async def another_core(
    s: Stack, nonces: NonceRegistry, *, shared_nonces: bool = False
) -> AsyncIterator[WorkerCore]:
    """A second worker process over the same chain, signer and bucket."""
    async with s.signer.client(s.pki, "worker") as http:
        yield WorkerCore(
            audience=AUDIENCE,
            cap_keys=s.core._cap_keys,
            chain=s.chain.client,
            signer=SignerClient(http),
            storage=StorageSettings(
                bucket=TEST_BUCKET, endpoint=s.store.s3_endpoint, shared_nonces=shared_nonces
            ),
            nonces=nonces,
        )


async def signed_request(
    s: Stack, device: Device, op: CapOp, body: dict[str, Any], **cap: Any
) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    token, payload = await s.cap(device, op, **cap)
    headers = {
        "authorization": f"Cap {token}",
        "agentkeys-pop": s.proof(payload, op, raw, device.key),
    }
    return headers, raw


def owned(core: WorkerCore, device: Device) -> int:
    return core._nonces.owned(bytes.fromhex(device.device_key_hash))


async def test_a_refused_device_spends_no_nonce(stack: Stack) -> None:
    s = stack
    agent = await add_agent(s.chain, s.operator, "bot", ["openai"], read_only=False)
    stored = await s.store_credential(
        s.operator.master, "openai", b"agent-copy", actor_omni=agent.actor_omni
    )
    assert stored.status == 200, stored.body
    before = len(s.core._nonces)

    # An agent device naming the operator's own vault: binding refused, nothing spent.
    crossed = await s.fetch(agent, actor_omni=s.operator.omni)
    assert (crossed.status, crossed.body["error"]) == (403, "binding_mismatch")
    # A revoked device whose cap has not expired yet: refused, nothing spent.
    await revoke(s.chain, s.operator, agent)
    revoked = await s.fetch(agent)
    assert (revoked.status, revoked.body["error"]) == (403, "device_revoked")
    assert len(s.core._nonces) == before
    assert owned(s.core, agent) == 0

    # A request that passes every check does spend its nonce.
    spent = owned(s.core, s.operator.master)
    ok = await s.fetch(s.operator.master, "openai", actor_omni=agent.actor_omni)
    assert ok.status == 200, ok.body
    assert owned(s.core, s.operator.master) == spent + 1
    assert len(s.core._nonces) == before + 1


async def test_a_replay_is_still_refused_even_when_racing(stack: Stack) -> None:
    s = stack
    master = s.operator.master
    assert (await s.store_credential(master, "openai", b"secret")).status == 200
    headers, raw = await signed_request(s, master, CapOp.FETCH, {})
    outcomes: list[str] = []

    async def attempt() -> None:
        try:
            await s.core.execute(CapOp.FETCH, headers, raw, {})
            outcomes.append("ok")
        except AgentkeysError as exc:
            outcomes.append(exc.error)

    async with trio.open_nursery() as nursery:  # both pass the checks, one spends the nonce
        nursery.start_soon(attempt)
        nursery.start_soon(attempt)
    assert sorted(outcomes) == ["ok", "pop_nonce_reused"]
    with pytest.raises(PopNonceReused):
        await s.core.execute(CapOp.FETCH, headers, raw, {})


async def test_one_device_cannot_fill_the_registry_for_everybody(stack: Stack) -> None:
    s = stack
    master = s.operator.master
    agent = await add_agent(s.chain, s.operator, "bot", ["openai"], read_only=False)
    assert (await s.store_credential(master, "openai", b"m")).status == 200
    for_agent = await s.store_credential(master, "openai", b"a", actor_omni=agent.actor_omni)
    assert for_agent.status == 200
    async with another_core(s, NonceRegistry(capacity=100, per_owner_capacity=2)) as core:
        for _ in range(2):
            await core.execute(CapOp.FETCH, *await signed_request(s, master, CapOp.FETCH, {}), {})
        with pytest.raises(PopNonceRegistryFull, match="this device"):
            await core.execute(CapOp.FETCH, *await signed_request(s, master, CapOp.FETCH, {}), {})
        # another device is not affected by the first one's flood
        answer = await core.execute(
            CapOp.FETCH, *await signed_request(s, agent, CapOp.FETCH, {}), {}
        )
        assert answer["actor_omni"] == agent.actor_omni
        assert (owned(core, master), owned(core, agent)) == (2, 1)
