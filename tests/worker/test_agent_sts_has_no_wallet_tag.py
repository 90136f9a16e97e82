"""An agent's S3 session carries no master wallet tag, so it cannot reach the
master's v1 prefix, and the worker does no v1 fallback for agents (real SeaweedFS STS)."""

from __future__ import annotations

import pytest

from agentkeys.worker.errors import StorageDenied
from agentkeys.worker.layout import v1_key, v1_prefix, v2_key
from tests.worker.conftest import Stack, add_agent

UNRESOLVED_WALLET_KEY = "bots/${aws:PrincipalTag/agentkeys_user_wallet}/credentials/openai.enc"


async def test_agent_sts_credentials_cannot_read_the_master_v1_prefix(stack: Stack) -> None:
    s = stack
    op = s.operator
    agent = await add_agent(s.chain, op, "bot", ["openai"])
    master_v1 = v1_key(op.wallet_address, "openai")
    await s.admin_put(master_v1, b"\x01" + bytes(40))
    # What an absent tag leaves behind in SeaweedFS' resource pattern, written literally.
    await s.admin_put(UNRESOLVED_WALLET_KEY, b"\x01" + bytes(40))

    # The session the worker opens for the agent's vault: the actor tag alone.
    agent_store = await s.core._object_store(agent.actor_omni, None)
    with pytest.raises(StorageDenied, match="AccessDenied"):
        await agent_store.get(master_v1)
    with pytest.raises(StorageDenied):
        await agent_store.put(master_v1, b"overwrite")
    with pytest.raises(StorageDenied):
        await agent_store.list_keys(v1_prefix(op.wallet_address))
    with pytest.raises(StorageDenied):
        await agent_store.get(UNRESOLVED_WALLET_KEY)
    # ...while the agent's own v2 prefix works.
    await agent_store.put(v2_key(agent.actor_omni, "probe"), b"ok")
    assert await agent_store.get(v2_key(agent.actor_omni, "probe")) == b"ok"

    # The master's own session still reaches its v1 prefix (the wallet tag is set there).
    master_store = await s.core._object_store(op.omni, op.wallet_address)
    assert await master_store.get(master_v1) == b"\x01" + bytes(40)


async def test_agent_reads_never_fall_back_to_v1(stack: Stack) -> None:
    s = stack
    op = s.operator
    agent = await add_agent(s.chain, op, "bot", ["openai"], read_only=False)
    await s.admin_put(v1_key(op.wallet_address, "openai"), b"\x01" + bytes(40))

    refused = await s.fetch(agent)
    assert (refused.status, refused.body["error"]) == (404, "credential_not_found")
    assert "`agentkeys store openai --credential-backend sidecar --agent" in refused.body["reason"]
    assert "credential" not in refused.body
    # The master acting for the agent's vault is confined the same way.
    for_agent = await s.fetch(op.master, actor_omni=agent.actor_omni)
    assert for_agent.body["error"] == "credential_not_found"
    # Every session the worker opened for the agent's vault is untagged by the wallet.
    sessions = set(s.core._stores)
    assert (agent.actor_omni, None) in sessions
    assert (agent.actor_omni, op.wallet_address) not in sessions

    # The master stores into the agent's vault; the agent reads it from its v2 prefix.
    stored = await s.store_credential(
        op.master, "openai", b"agent-copy", actor_omni=agent.actor_omni
    )
    assert stored.status == 200, stored.body
    fetched = await s.fetch(agent)
    assert (fetched.status, fetched.body["source"]) == (200, "v2")

    # The operator's own vault keeps its v1 fallback (the worker read the v1 object: its
    # 0x01 header asks for the legacy identity, it is not reported missing).
    own = await s.fetch(op.master)
    assert (own.status, own.body["error"]) == (409, "legacy_identity_required")
    assert (op.omni, op.wallet_address) in set(s.core._stores)
