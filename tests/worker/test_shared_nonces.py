"""A (cap, K10 proof) pair replayed to another worker process or Lambda
container is refused when ``[storage] shared_nonces`` spends each nonce as a create-only
marker object (S3 ``If-None-Match: *``, honoured by SeaweedFS 4.48 and AWS S3)."""

from __future__ import annotations

import pytest

from agentkeys.cap import CapOp
from agentkeys.errors import PopNonceReused
from agentkeys.pop import NonceRegistry, PopProof
from agentkeys.worker import _lambda as worker_lambda
from agentkeys.worker.errors import StorageDenied
from agentkeys.worker.layout import pop_nonce_key
from tests.worker.conftest import Stack, add_agent
from tests.worker.test_nonce_spent_after_checks import another_core, signed_request


async def test_a_proof_replayed_to_another_process_is_refused(stack: Stack) -> None:
    s = stack
    master = s.operator.master
    assert (await s.store_credential(master, "openai", b"secret")).status == 200
    headers, raw = await signed_request(s, master, CapOp.FETCH, {})
    nonce = PopProof.from_header_value(headers["agentkeys-pop"]).nonce
    marker = pop_nonce_key(s.operator.omni, master.device_key_hash, nonce)
    async with another_core(s, NonceRegistry(), shared_nonces=True) as first, \
            another_core(s, NonceRegistry(), shared_nonces=True) as second:  # fmt: skip
        answer = await first.execute(CapOp.FETCH, headers, raw, {})
        assert answer["service"] == "openai"
        assert await s.admin_get(marker) is not None
        with pytest.raises(PopNonceReused, match="shared"):
            await second.execute(CapOp.FETCH, headers, raw, {})

    # Without the option each process only knows its own nonces (the documented limit).
    headers, raw = await signed_request(s, master, CapOp.FETCH, {})
    async with another_core(s, NonceRegistry()) as first, \
            another_core(s, NonceRegistry()) as second:  # fmt: skip
        await first.execute(CapOp.FETCH, headers, raw, {})
        assert (await second.execute(CapOp.FETCH, headers, raw, {}))["service"] == "openai"


async def test_agent_markers_stay_in_the_agent_prefix(stack: Stack) -> None:
    s = stack
    op = s.operator
    agent = await add_agent(s.chain, op, "bot", ["openai"], read_only=False)
    stored = await s.store_credential(op.master, "openai", b"a", actor_omni=agent.actor_omni)
    assert stored.status == 200
    headers, raw = await signed_request(s, agent, CapOp.FETCH, {})
    before = len(await s.admin_keys(f"pop-nonces/{agent.actor_omni}/"))  # the store's own
    async with another_core(s, NonceRegistry(), shared_nonces=True) as core:
        await core.execute(CapOp.FETCH, headers, raw, {})
    assert len(await s.admin_keys(f"pop-nonces/{agent.actor_omni}/")) == before + 1
    # An agent's session may write markers only under its own actor_omni.
    store = await s.core._object_store(agent.actor_omni, None)
    with pytest.raises(StorageDenied):
        await store.put_if_absent(pop_nonce_key(op.omni, agent.device_key_hash, bytes(16)), b"1")
    assert await store.put_if_absent(
        pop_nonce_key(agent.actor_omni, agent.device_key_hash, bytes(16)), b"1"
    )
    assert not await store.put_if_absent(
        pop_nonce_key(agent.actor_omni, agent.device_key_hash, bytes(16)), b"2"
    )


async def test_lambda_containers_share_the_nonce_store(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = stack
    s.frontend = "lambda"
    monkeypatch.setenv(worker_lambda.CONFIG_ENV, str(s.config_path))
    monkeypatch.setenv("AGENTKEYS_STORAGE_SHARED_NONCES", "true")
    worker_lambda.reset_for_tests()
    master = s.operator.master
    assert (await s.store_credential(master, "openai", b"secret")).status == 200
    headers, raw = await signed_request(s, master, CapOp.FETCH, {})
    headers["content-type"] = "application/json"
    first = await s.post("/v1/cred/fetch", headers, raw)
    assert first.status == 200, first.body
    worker_lambda.reset_for_tests()  # a fresh container: an empty in-memory registry
    replayed = await s.post("/v1/cred/fetch", headers, raw)
    assert replayed.body["error"] == "pop_nonce_reused"


async def test_nonces_are_shared_by_default(frontend: Stack) -> None:
    """A worker configured without ``shared_nonces`` (the test stack's) still spends each
    proof nonce as a marker: the replay-safe setting is the default, off only by choice."""
    s = frontend
    master = s.operator.master
    assert (await s.store_credential(master, "openai", b"secret")).status == 200
    before = set(await s.admin_keys("pop-nonces/"))
    assert (await s.fetch(master)).status == 200
    spent = set(await s.admin_keys("pop-nonces/")) - before
    assert len(spent) == 1
    (marker,) = spent
    assert marker.startswith(f"pop-nonces/{s.operator.omni}/{master.device_key_hash}/")
