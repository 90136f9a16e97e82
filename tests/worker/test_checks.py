"""The worker's chain re-check as a pure function over chain facts (one failure per rule)."""

from __future__ import annotations

import dataclasses

import pytest

from agentkeys.cap import CapOp, CapPayload
from agentkeys.chain.client import DeviceEntry, ScopeEntry, Tier
from agentkeys.errors import AgentkeysError
from agentkeys.omni import actor_omni_for_wallet, agent_omni, service_hash
from agentkeys.worker import ChainFacts, check_chain, require_device
from agentkeys.worker.errors import DeviceNotRegistered

WALLET = "0x" + "ab" * 20
OPERATOR = actor_omni_for_wallet(WALLET)
AGENT = agent_omni(OPERATOR, "bot")
DEVICE = "dd" * 32


def device(**changes: object) -> DeviceEntry:
    base = DeviceEntry(
        device_key_hash=DEVICE, operator_omni=OPERATOR, actor_omni=OPERATOR, tier=Tier.MASTER,
        roles=7, revoked=False, sign_count=0, registered_at=1, k10_point=bytes(64),
        k11_credential_id_hash="00" * 32, k11_point=bytes(64), rp_id_hash="00" * 32,
        attestation_digest="00" * 32,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def cap(op: CapOp = CapOp.FETCH, actor: str = OPERATOR, epoch: int = 3) -> CapPayload:
    return CapPayload(
        op=op, operator_omni=OPERATOR, actor_omni=actor, service="openai",
        device_key_hash=DEVICE, k3_epoch=epoch, issued_at=100, expires_at=400,
        nonce="00" * 16, aud="worker",
    )  # fmt: skip


def facts(**changes: object) -> ChainFacts:
    base = ChainFacts(
        device=device(), scope=None, current_epoch=3, master_wallet=WALLET, agent_operator=OPERATOR
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


SCOPE = ScopeEntry((service_hash("openai").hex(),), read_only=True, updated_at=5)
AGENT_DEVICE = device(actor_omni=AGENT, tier=Tier.AGENT, roles=1)


def test_master_on_its_own_vault_passes() -> None:
    assert check_chain(cap(), facts()) == WALLET
    assert check_chain(cap(CapOp.STORE), facts()) == WALLET


def test_agent_in_scope_passes() -> None:
    assert check_chain(cap(actor=AGENT), facts(device=AGENT_DEVICE, scope=SCOPE)) == WALLET


@pytest.mark.parametrize(
    ("payload", "chain_facts", "error"),
    [
        (cap(), facts(device=device(revoked=True)), "device_revoked"),
        (cap(), facts(device=device(operator_omni="ee" * 32)), "binding_mismatch"),
        (cap(), facts(device=device(actor_omni=AGENT)), "binding_mismatch"),
        (cap(actor=AGENT), facts(device=device(actor_omni="ee" * 32, tier=Tier.AGENT)),
         "binding_mismatch"),
        (cap(), facts(device=device(roles=2)), "role_missing"),
        (cap(CapOp.LIST, AGENT), facts(device=AGENT_DEVICE, scope=SCOPE), "master_only"),
        (cap(actor=AGENT), facts(device=AGENT_DEVICE), "service_not_in_scope"),
        (cap(actor=AGENT), facts(device=AGENT_DEVICE, scope=dataclasses.replace(
            SCOPE, services=(service_hash("github").hex(),))), "service_not_in_scope"),
        (cap(CapOp.STORE, AGENT), facts(scope=SCOPE), "read_only_scope"),
        (cap(epoch=2), facts(), "epoch_not_current"),
        (cap(epoch=4), facts(), "epoch_not_current"),
        (cap(), facts(master_wallet=None), "master_wallet_invalid"),
        (cap(), facts(master_wallet="0x" + "cd" * 20), "master_wallet_invalid"),
    ],
)  # fmt: skip
def test_each_rule_refuses_with_its_reason(
    payload: CapPayload, chain_facts: ChainFacts, error: str
) -> None:
    with pytest.raises(AgentkeysError) as info:
        check_chain(payload, chain_facts)
    assert info.value.error == error


def test_unregistered_device() -> None:
    with pytest.raises(DeviceNotRegistered):
        require_device(None)
    assert require_device(device()) == device()
