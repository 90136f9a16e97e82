"""Security review regression: the worker never serves one operator's device for another
operator's actor, independently of the broker (caps here are signed with K1 directly).

The chain no longer accepts scope for another operator's actor, so the worker's own check is
exercised with actors that are no agent of the cap's operator: the victim's master omni and
the victim's agent (which does have a scope entry, under the victim).
"""

from __future__ import annotations

import dataclasses

import pytest

from agentkeys.b64url import b64url_decode
from agentkeys.cap import CapOp, CapPayload
from agentkeys.chain.client import DeviceEntry, ScopeEntry, Tier
from agentkeys.omni import actor_omni_for_wallet, agent_omni, service_hash
from agentkeys.worker import ChainFacts, check_chain
from agentkeys.worker.errors import ActorNotAgentOfOperator
from tests.worker.conftest import Stack, add_agent, register_operator

DENIAL = "actor_not_agent_of_operator"
WALLET = "0x" + "ab" * 20
OPERATOR = actor_omni_for_wallet(WALLET)
AGENT = agent_omni(OPERATOR, "bot")
SCOPE = ScopeEntry((service_hash("openai").hex(),), read_only=False, updated_at=5)


def _facts(agent_operator: str | None) -> ChainFacts:
    master = DeviceEntry(
        device_key_hash="dd" * 32, operator_omni=OPERATOR, actor_omni=OPERATOR,
        tier=Tier.MASTER, roles=7, revoked=False, sign_count=0, registered_at=1,
        k10_point=bytes(64), k11_credential_id_hash="00" * 32, k11_point=bytes(64),
        rp_id_hash="00" * 32, attestation_digest="00" * 32,
    )  # fmt: skip
    return ChainFacts(
        device=master, scope=SCOPE, current_epoch=1, master_wallet=WALLET,
        agent_operator=agent_operator,
    )  # fmt: skip


def _cap(op: CapOp, actor: str) -> CapPayload:
    return CapPayload(
        op=op, operator_omni=OPERATOR, actor_omni=actor, service="openai",
        device_key_hash="dd" * 32, k3_epoch=1, issued_at=100, expires_at=400,
        nonce="00" * 16, aud="worker",
    )  # fmt: skip


@pytest.mark.parametrize("agent_operator", [None, "cc" * 32])
@pytest.mark.parametrize("op", list(CapOp))
def test_scope_entry_alone_does_not_make_an_agent(agent_operator: str | None, op: CapOp) -> None:
    with pytest.raises(ActorNotAgentOfOperator) as info:
        check_chain(_cap(op, AGENT), _facts(agent_operator))
    assert (info.value.error, info.value.status) == (DENIAL, 403)


def test_own_agent_and_own_vault_pass() -> None:
    assert check_chain(_cap(CapOp.STORE, AGENT), _facts(OPERATOR)) == WALLET
    assert check_chain(_cap(CapOp.FETCH, OPERATOR), dataclasses.replace(
        _facts(None), scope=None)) == WALLET  # fmt: skip


async def test_master_cannot_reach_another_operators_vault(stack: Stack) -> None:
    s = stack
    alice = s.operator
    bob = await register_operator(s.chain, "bob@example.com")
    stored = await s.store_credential(bob.master, "openai", b"BOB-SECRET")
    assert stored.status == 200, stored.body
    bob_agent = await add_agent(s.chain, bob, "bot", ["openai"], read_only=False)

    for actor in (bob.omni, bob_agent.actor_omni):
        for op, body in (("fetch", {}), ("store", {"credential": "QVRUQUNLRVI"}),
                         ("list", {}), ("teardown", {})):  # fmt: skip
            answer = await s.request(alice.master, op, body, actor_omni=actor)
            assert (answer.status, answer.body["error"]) == (403, DENIAL), (op, answer.body)
            assert s.audit.events[-1].error == DENIAL

    # Bob's credential is untouched and still his
    mine = await s.fetch(bob.master)
    assert mine.status == 200, mine.body
    assert b64url_decode(mine.body["credential"]) == b"BOB-SECRET"
