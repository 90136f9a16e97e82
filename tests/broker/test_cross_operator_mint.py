"""Security review regression: no operator mints caps for another operator's actor.

A master device acts for its own vault or for an agent of its own operator. The chain no
longer accepts scope for another operator's actor, so the broker's own check is exercised
with actors that are no agent of the operator (the victim's master omni, the victim's agent)
and with legacy scope table entries, which must not open that door either.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentkeys.broker._mint import ActorNotAgentOfOperator, ScopeSource, decide_scope
from agentkeys.broker._store import LegacyScope
from agentkeys.cap import CapOp
from agentkeys.chain.client import ScopeEntry
from agentkeys.chain.errors import ContractReverted
from agentkeys.omni import agent_omni, service_hash
from tests.broker._flow import j1_for
from tests.broker.conftest import Chain, Operator, RunningBroker, register_operator
from tests.broker.test_cap_mint import add_agent, mint, set_scope

DENIAL = "actor_not_agent_of_operator"
OPERATOR = "aa" * 32
ACTOR = "bb" * 32
SCOPE = ScopeEntry((service_hash("openai").hex(),), read_only=False, updated_at=1)


@pytest.mark.parametrize("agent_operator", [None, "cc" * 32])
@pytest.mark.parametrize("source", ["chain", "legacy", "none"])
def test_decide_scope_needs_an_agent_of_the_operator(
    agent_operator: str | None, source: str
) -> None:
    legacy = LegacyScope(services=("openai",), read_only=False)
    with pytest.raises(ActorNotAgentOfOperator) as info:
        decide_scope(
            op=CapOp.FETCH, operator_omni=OPERATOR, actor_omni=ACTOR, service="openai",
            agent_operator=agent_operator,
            chain_scope=SCOPE if source == "chain" else None,
            legacy_scope=legacy if source == "legacy" else None,
        )  # fmt: skip
    assert info.value.error == DENIAL
    assert info.value.status == 403


def test_decide_scope_for_an_own_agent_and_the_own_vault() -> None:
    decision = decide_scope(
        op=CapOp.FETCH, operator_omni=OPERATOR, actor_omni=ACTOR, service="openai",
        agent_operator=OPERATOR, chain_scope=SCOPE, legacy_scope=None,
    )  # fmt: skip
    assert decision.scope_source == ScopeSource.CHAIN
    own = decide_scope(
        op=CapOp.STORE, operator_omni=OPERATOR, actor_omni=OPERATOR, service="openai",
        agent_operator=None, chain_scope=None, legacy_scope=None,
    )  # fmt: skip
    assert own.scope_source == ScopeSource.MASTER_SELF


async def _refused(broker: RunningBroker, response: Any, actor: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"] == DENIAL
    denial = broker.denials(DENIAL)[-1]
    assert denial.fields["actor"] == actor


async def test_master_cannot_mint_for_another_operators_master(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    victim = await register_operator(chain, chain.accounts[2])
    # the review's exploit step 1 is gone: the chain refuses the cross-operator scope
    mutation = await chain.client.prepare_set_scope(
        operator.omni, victim.omni, ["openai"], False, operator.authority
    )
    with pytest.raises(ContractReverted) as info:
        await chain.client.submit(mutation, operator.wallet)
    assert info.value.revert_error == "AgentOfOtherOperator"
    # a legacy table entry naming the victim does not open the door either
    await broker.service.store.set_legacy_scope(operator.omni, victim.omni, ("openai",), False)
    j1 = await j1_for(broker, operator)
    for op in (CapOp.FETCH, CapOp.STORE, CapOp.TEARDOWN, CapOp.LIST):
        response = await mint(broker, j1, op, operator=operator.omni, actor=victim.omni,
                              service="openai", device=operator.master)  # fmt: skip
        await _refused(broker, response, victim.omni)
    assert await broker.service.store.mint_records() == []


async def test_master_cannot_mint_for_another_operators_agent(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    victim = await register_operator(chain, chain.accounts[2])
    victim_agent = agent_omni(victim.omni, "bot")
    await add_agent(chain, victim, "bot")
    await set_scope(chain, victim, victim_agent, ["openai"])
    await broker.service.store.set_legacy_scope(operator.omni, victim_agent, ("openai",), False)
    j1 = await j1_for(broker, operator)
    response = await mint(broker, j1, CapOp.FETCH, operator=operator.omni, actor=victim_agent,
                          service="openai", device=operator.master)  # fmt: skip
    await _refused(broker, response, victim_agent)
    assert await broker.service.store.mint_records() == []


async def test_legacy_scope_needs_a_registered_agent(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    unregistered = agent_omni(operator.omni, "ghost")
    registered = agent_omni(operator.omni, "bot")
    await add_agent(chain, operator, "bot")
    for actor in (unregistered, registered):
        await broker.service.store.set_legacy_scope(operator.omni, actor, ("openai",), False)
    j1 = await j1_for(broker, operator)
    refused = await mint(broker, j1, CapOp.FETCH, operator=operator.omni, actor=unregistered,
                         service="openai", device=operator.master)  # fmt: skip
    await _refused(broker, refused, unregistered)
    allowed = await mint(broker, j1, CapOp.FETCH, operator=operator.omni, actor=registered,
                         service="openai", device=operator.master)  # fmt: skip
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["scope_source"] == "legacy"
