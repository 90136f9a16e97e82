"""Hosted-relay mode: the broker verifies K10 + K11 itself, then submits from its relay wallet."""

from __future__ import annotations

from typing import Any

from agentkeys.chain import challenge as ch
from agentkeys.chain.signing import k10_digest
from agentkeys.omni import agent_omni, service_hash
from attest.k10_signature import k10_raw_from_der
from tests.broker._flow import bearer, j1_for
from tests.broker.conftest import Chain, Device, Operator, RunningBroker, StartBroker
from tests.broker.test_cap_mint import add_agent, add_master


async def _signed_request(
    chain: Chain,
    operator: Operator,
    agent: str,
    services: list[str],
    *,
    k10: Device | None = None,
    revoke: bool = False,
) -> dict[str, Any]:
    raw_agent = bytes.fromhex(agent)
    if revoke:
        op_tag, params = ch.OP_REVOKE_SCOPE, ch.revoke_scope_params(raw_agent)
    else:
        hashes = ch.sorted_services([service_hash(s) for s in services])
        op_tag, params = ch.OP_SET_SCOPE, ch.set_scope_params(raw_agent, hashes, False)
    challenge = await chain.client.challenge_for(op_tag, "ScopeContract", operator.omni, params)
    signer = (k10 or operator.master).signer
    der = await signer.sign_digest(k10_digest(challenge))
    return {
        "operator_omni": operator.omni,
        "agent_omni": agent,
        "device_key_hash": operator.master.hash,
        "k10_signature": k10_raw_from_der(der).hex(),
        "assertion": operator.passkey.get(challenge).to_json(),
        "services": services,
        "read_only": False,
        "revoke": revoke,
    }


async def test_relay_submits_a_verified_scope_change(
    chain: Chain, operator: Operator, start_broker: StartBroker
) -> None:
    relay_wallet = chain.accounts[5]
    broker: RunningBroker = await start_broker(chain=chain, relay_account=relay_wallet)
    j1 = await j1_for(broker, operator)
    agent = agent_omni(operator.omni, "bot")
    await add_agent(chain, operator, "bot")  # scope is only for registered agents
    body = await _signed_request(chain, operator, agent, ["openai"])
    response = await broker.http.post("/v1/relay/scope", json=body, headers=bearer(j1))
    assert response.status_code == 200, response.text
    scope = await chain.client.get_scope(operator.omni, agent)
    assert scope is not None
    assert scope.services == (service_hash("openai").hex(),)
    tx = await chain.client.rpc.call("eth_getTransactionByHash", response.json()["tx_hash"])
    assert str(tx["from"]).lower() == relay_wallet.address.lower()

    revoke = await _signed_request(chain, operator, agent, [], revoke=True)
    response = await broker.http.post("/v1/relay/scope", json=revoke, headers=bearer(j1))
    assert response.status_code == 200, response.text
    assert await chain.client.get_scope(operator.omni, agent) is None


async def test_relay_refuses_a_bad_k10_before_paying_gas(
    chain: Chain, operator: Operator, start_broker: StartBroker
) -> None:
    broker: RunningBroker = await start_broker(chain=chain, relay_account=chain.accounts[5])
    j1 = await j1_for(broker, operator)
    agent = agent_omni(operator.omni, "bot")
    nonce = await chain.client.operator_nonce(operator.omni)
    body = await _signed_request(chain, operator, agent, ["openai"], k10=Device.generate())
    response = await broker.http.post("/v1/relay/scope", json=body, headers=bearer(j1))
    assert response.status_code == 403
    assert response.json()["error"] == "relay_k10_invalid"
    assert await chain.client.operator_nonce(operator.omni) == nonce


async def test_relay_refuses_a_replayed_passkey_assertion(
    chain: Chain, operator: Operator, start_broker: StartBroker
) -> None:
    broker: RunningBroker = await start_broker(chain=chain, relay_account=chain.accounts[5])
    j1 = await j1_for(broker, operator)
    agent = agent_omni(operator.omni, "bot")
    body = await _signed_request(chain, operator, agent, ["openai"])
    body["assertion"] = operator.passkey.get(b"\x00" * 32, sign_count=0).to_json()
    response = await broker.http.post("/v1/relay/scope", json=body, headers=bearer(j1))
    assert response.json()["error"] == "relay_k11_invalid"


async def test_relay_is_off_unless_configured(broker: RunningBroker, operator: Operator) -> None:
    j1 = await j1_for(broker, operator)
    response = await broker.http.post("/v1/relay/scope", json={}, headers=bearer(j1))
    assert response.status_code == 404
    assert response.json()["error"] == "relay_disabled"


async def _revoke_request(
    chain: Chain, operator: Operator, target: str, *, approver: Device | None = None
) -> dict[str, Any]:
    params = ch.revoke_device_params(bytes.fromhex(target))
    challenge = await chain.client.challenge_for(
        ch.OP_REVOKE_DEVICE, "SidecarRegistry", operator.omni, params
    )
    device = approver or operator.master
    der = await device.signer.sign_digest(k10_digest(challenge))
    return {
        "operator_omni": operator.omni,
        "device_key_hash": device.hash,
        "k10_signature": k10_raw_from_der(der).hex(),
        "assertion": operator.passkey.get(challenge).to_json(),
        "revoke_device_key_hash": target,
    }


async def test_relay_revokes_a_device_once(
    chain: Chain, operator: Operator, start_broker: StartBroker
) -> None:
    relay_wallet = chain.accounts[5]
    broker: RunningBroker = await start_broker(chain=chain, relay_account=relay_wallet)
    j1 = await j1_for(broker, operator)
    agent = await add_agent(chain, operator, "bot")
    body = await _revoke_request(chain, operator, agent.hash)
    response = await broker.http.post("/v1/relay/device-revoke", json=body, headers=bearer(j1))
    assert response.status_code == 200, response.text
    entry = await chain.client.get_device(agent.hash)
    assert entry is not None
    assert entry.revoked
    tx = await chain.client.rpc.call("eth_getTransactionByHash", response.json()["tx_hash"])
    assert str(tx["from"]).lower() == relay_wallet.address.lower()
    again = await _revoke_request(chain, operator, agent.hash)
    response = await broker.http.post("/v1/relay/device-revoke", json=again, headers=bearer(j1))
    assert (response.status_code, response.json()["error"]) == (403, "relay_rejected")


async def test_relay_refuses_an_approver_the_contract_would_refuse(
    chain: Chain, operator: Operator, start_broker: StartBroker
) -> None:
    broker: RunningBroker = await start_broker(chain=chain, relay_account=chain.accounts[5])
    j1 = await j1_for(broker, operator)
    agent = await add_agent(chain, operator, "bot")
    scope_only = await add_master(chain, operator, roles=4)  # a master without RECOVERY
    nonce = await chain.client.operator_nonce(operator.omni)
    for approver in (scope_only, agent):  # ... and an agent device approving
        body = await _revoke_request(chain, operator, agent.hash, approver=approver)
        response = await broker.http.post("/v1/relay/device-revoke", json=body, headers=bearer(j1))
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "relay_device_not_authorised"
    assert await chain.client.operator_nonce(operator.omni) == nonce
    entry = await chain.client.get_device(agent.hash)
    assert entry is not None
    assert not entry.revoked
