"""Cap minting against the real chain (SPEC section 5; issue 6 denial reasons).

Each denial is produced by setting up exactly its condition on anvil through the real
contracts (K10 + K11 signed master mutations), then asking the broker over HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from agentkeys.cap import CapOp, verify_cap
from agentkeys.chain import challenge as ch
from agentkeys.clients import BrokerClient
from agentkeys.devstack import pick_port
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.jwks import JsonWebKeySet as Jwks
from agentkeys.omni import agent_omni
from agentkeys.pop import PopProof, new_mint_pop_claims, sign_pop
from attest.device_key import SoftwareDeviceKey
from tests.broker._flow import bearer, j1_for
from tests.broker.conftest import (
    ORIGIN,
    RP_ID,
    Chain,
    Device,
    Operator,
    RunningBroker,
    StartBroker,
    new_master,
    register_operator,
)


def proof_for(
    op: CapOp, operator: str, actor: str, service: str, device: Device, *, now: int | None = None
) -> str:
    claims = new_mint_pop_claims(
        op=op,
        operator_omni=operator,
        actor_omni=actor,
        service=service,
        device_key_hash=device.hash,
        now=int(time.time()) if now is None else now,
    )
    return PopProof(claims.timestamp, claims.nonce, sign_pop(claims, device.key)).to_header_value()


async def mint(
    broker: RunningBroker,
    j1: str,
    op: CapOp,
    *,
    operator: str,
    actor: str,
    service: str,
    device: Device,
    pop: str | None = None,
    **extra: Any,
) -> Any:
    path = {
        CapOp.FETCH: "/v1/cap/cred-fetch",
        CapOp.STORE: "/v1/cap/cred-store",
        CapOp.LIST: "/v1/cap/cred-list",
        CapOp.TEARDOWN: "/v1/cap/cred-teardown",
    }[op]
    body = {
        "operator_omni": operator,
        "actor_omni": actor,
        "service": service,
        "device_key_hash": device.hash,
        "pop": pop if pop is not None else proof_for(op, operator, actor, service, device),
        **extra,
    }
    return await broker.http.post(path, json=body, headers=bearer(j1))


async def add_agent(chain: Chain, operator: Operator, label: str, roles: int = 1) -> Device:
    device = Device.generate()
    proof = await chain.client.k10_binding_proof(
        device.signer, operator.omni, agent_omni(operator.omni, label)
    )
    mutation = await chain.client.prepare_add_agent_device(
        operator.omni,
        ch.NewAgent(label=label, k10_point=device.point, roles=roles),
        proof,
        operator.authority,
    )
    await chain.client.submit(mutation, operator.wallet)
    return device


async def add_master(chain: Chain, operator: Operator, roles: int) -> Device:
    device = Device.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    proof = await chain.client.k10_binding_proof(device.signer, operator.omni, operator.omni)
    mutation = await chain.client.prepare_add_master_device(
        operator.omni, new_master(device, passkey, roles), proof, operator.authority
    )
    await chain.client.submit(mutation, operator.wallet)
    return device


async def set_scope(
    chain: Chain, operator: Operator, agent: str, services: list[str], read_only: bool = False
) -> None:
    mutation = await chain.client.prepare_set_scope(
        operator.omni, agent, services, read_only, operator.authority
    )
    await chain.client.submit(mutation, operator.wallet)


async def revoke_scope(chain: Chain, operator: Operator, agent: str) -> None:
    mutation = await chain.client.prepare_revoke_scope(operator.omni, agent, operator.authority)
    await chain.client.submit(mutation, operator.wallet)


async def revoke_device(chain: Chain, operator: Operator, device: Device) -> None:
    mutation = await chain.client.prepare_revoke_device(
        operator.omni, device.hash, operator.authority
    )
    await chain.client.submit(mutation, operator.wallet)


def _error(response: Any) -> str:
    return str(response.json().get("error"))


async def _jwks(broker: RunningBroker) -> Jwks:
    response = await broker.http.get("/v1/cap/jwks.json")
    assert response.status_code == 200
    return Jwks.from_json(response.content)


async def test_master_mints_for_its_own_vault(
    broker: RunningBroker, chain: Chain, operator: Operator, tmp_path: Path
) -> None:
    j1 = await j1_for(broker, operator)
    client = BrokerClient(broker.http)
    key = SoftwareDeviceKey(operator.master.key, tmp_path / "k10.pem")
    for op in CapOp:
        minted = await client.mint_cap(
            op, session=j1, device_key=key, operator_omni=operator.omni,
            actor_omni=operator.omni, service="openai",
        )  # fmt: skip
        assert minted.scope_source == "master_self"
        assert minted.cap.payload.op is op
    keys = await _jwks(broker)
    verified = verify_cap(
        minted.token,
        keys=keys.by_kid,
        expected_aud="agentkeys-worker",
        now=time.time(),
        expected_op=op,
    )
    assert verified.payload == minted.cap.payload
    assert verified.payload.actor_omni == operator.omni
    assert verified.payload.device_key_hash == operator.master.hash
    assert verified.payload.k3_epoch == await chain.client.current_epoch()
    records = await broker.service.store.mint_records()
    assert [r.scope_source for r in records] == ["master_self"] * 4


async def test_agent_in_scope_gets_a_fetch_cap_decided_by_the_chain(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    agent = agent_omni(operator.omni, "bot")
    device = await add_agent(chain, operator, "bot")
    await set_scope(chain, operator, agent, ["openai", "github"])
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="OpenAI",
        device=device,
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope_source"] == "chain"
    assert response.json()["cap"]["payload"]["service"] == "openai"


async def _denied(response: Any, broker: RunningBroker, error: str, status: int = 403) -> None:
    assert response.status_code == status, response.text
    assert _error(response) == error
    assert broker.denials(error) or broker.audit.events[-1].error == error


async def test_device_not_registered(broker: RunningBroker, operator: Operator) -> None:
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=Device.generate(),
    )
    await _denied(response, broker, "device_not_registered")


async def test_device_revoked(broker: RunningBroker, chain: Chain, operator: Operator) -> None:
    agent = agent_omni(operator.omni, "bot")
    device = await add_agent(chain, operator, "bot")
    await set_scope(chain, operator, agent, ["openai"])
    j1 = await j1_for(broker, operator)
    ok = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=device,
    )
    assert ok.status_code == 200
    await revoke_device(chain, operator, device)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=device,
    )
    await _denied(response, broker, "device_revoked")


async def test_binding_mismatch(broker: RunningBroker, chain: Chain, operator: Operator) -> None:
    device = await add_agent(chain, operator, "bot")
    other = agent_omni(operator.omni, "other")
    await add_agent(chain, operator, "other")  # scope is only for registered agents
    await set_scope(chain, operator, other, ["openai"])
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=other,
        service="openai",
        device=device,
    )
    await _denied(response, broker, "binding_mismatch")


async def test_device_of_another_operator_is_a_binding_mismatch(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    other = await register_operator(chain, chain.accounts[2])
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=other.master,
    )
    await _denied(response, broker, "binding_mismatch")


async def test_role_missing(broker: RunningBroker, chain: Chain, operator: Operator) -> None:
    recovery_only = await add_master(chain, operator, roles=2)
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=recovery_only,
    )
    await _denied(response, broker, "role_missing")


async def test_service_not_in_scope(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    agent = agent_omni(operator.omni, "bot")
    device = await add_agent(chain, operator, "bot")
    await set_scope(chain, operator, agent, ["openai"])
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="github",
        device=device,
    )
    await _denied(response, broker, "service_not_in_scope")
    assert broker.audit.events[-1].fields["scope_source"] == "chain"


async def test_read_only_scope(broker: RunningBroker, chain: Chain, operator: Operator) -> None:
    agent = agent_omni(operator.omni, "bot")
    await add_agent(chain, operator, "bot")  # scope is only for registered agents
    await set_scope(chain, operator, agent, ["openai"], read_only=True)
    j1 = await j1_for(broker, operator)
    # the master writes into the agent's vault: a read-only scope refuses it
    response = await mint(
        broker,
        j1,
        CapOp.STORE,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=operator.master,
    )
    await _denied(response, broker, "read_only_scope")
    fetch = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=operator.master,
    )
    assert fetch.status_code == 200


async def test_store_is_master_only(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    agent = agent_omni(operator.omni, "bot")
    device = await add_agent(chain, operator, "bot")
    await set_scope(chain, operator, agent, ["openai"])
    j1 = await j1_for(broker, operator)
    for op in (CapOp.STORE, CapOp.TEARDOWN, CapOp.LIST):
        response = await mint(
            broker, j1, op, operator=operator.omni, actor=agent, service="openai", device=device
        )
        await _denied(response, broker, "master_only")


async def test_stale_pop(broker: RunningBroker, operator: Operator) -> None:
    j1 = await j1_for(broker, operator)
    stale = proof_for(
        CapOp.FETCH,
        operator.omni,
        operator.omni,
        "openai",
        operator.master,
        now=int(time.time()) - 3600,
    )
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=operator.master,
        pop=stale,
    )
    await _denied(response, broker, "stale_pop", 401)


async def test_replayed_pop_nonce(broker: RunningBroker, operator: Operator) -> None:
    j1 = await j1_for(broker, operator)
    proof = proof_for(CapOp.FETCH, operator.omni, operator.omni, "openai", operator.master)
    kwargs: dict[str, Any] = {
        "operator": operator.omni,
        "actor": operator.omni,
        "service": "openai",
        "device": operator.master,
        "pop": proof,
    }
    assert (await mint(broker, j1, CapOp.FETCH, **kwargs)).status_code == 200
    response = await mint(broker, j1, CapOp.FETCH, **kwargs)
    await _denied(response, broker, "replayed_nonce", 401)


async def test_pop_for_other_fields_is_rejected(broker: RunningBroker, operator: Operator) -> None:
    j1 = await j1_for(broker, operator)
    proof = proof_for(CapOp.FETCH, operator.omni, operator.omni, "github", operator.master)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=operator.master,
        pop=proof,
    )
    await _denied(response, broker, "pop_rejected", 401)


async def test_session_of_another_operator(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    other = await register_operator(chain, chain.accounts[2])
    j1 = await j1_for(broker, other)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=operator.master,
    )
    await _denied(response, broker, "operator_mismatch")


async def test_epoch_must_be_current(broker: RunningBroker, operator: Operator) -> None:
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=operator.master,
        k3_epoch=99,
    )
    await _denied(response, broker, "epoch_mismatch")


async def test_scope_revoked_on_chain_is_refused_at_the_next_mint(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    agent = agent_omni(operator.omni, "bot")
    device = await add_agent(chain, operator, "bot")
    await set_scope(chain, operator, agent, ["openai"])
    j1 = await j1_for(broker, operator)
    await _wait_synced(broker, chain)
    for _ in range(2):  # the second mint is served from the cache
        ok = await mint(
            broker,
            j1,
            CapOp.FETCH,
            operator=operator.omni,
            actor=agent,
            service="openai",
            device=device,
        )
        assert ok.status_code == 200, ok.text
    assert broker.view.hits > 0
    await revoke_scope(chain, operator, agent)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=device,
    )
    await _denied(response, broker, "service_not_in_scope")


async def _wait_synced(broker: RunningBroker, chain: Chain) -> None:
    with trio.fail_after(30):
        while True:
            head = await chain.client.block_number()
            synced = broker.view.synced_through
            if synced is not None and synced >= head:
                return
            await trio.sleep(0.02)


async def test_scope_revocation_event_drops_the_cached_scope(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    agent = agent_omni(operator.omni, "bot")
    device = await add_agent(chain, operator, "bot")
    await set_scope(chain, operator, agent, ["openai"])
    j1 = await j1_for(broker, operator)
    await _wait_synced(broker, chain)
    for _ in range(2):
        ok = await mint(
            broker,
            j1,
            CapOp.FETCH,
            operator=operator.omni,
            actor=agent,
            service="openai",
            device=device,
        )
        assert ok.status_code == 200, ok.text
    hits = broker.view.hits
    assert hits > 0
    await revoke_scope(chain, operator, agent)
    await _wait_synced(broker, chain)  # the cache is trusted again: only the event can help
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=device,
    )
    await _denied(response, broker, "service_not_in_scope")


async def test_legacy_scope_is_used_only_without_a_chain_entry(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    agent = agent_omni(operator.omni, "bot")
    device = await add_agent(chain, operator, "bot")
    await broker.service.store.set_legacy_scope(operator.omni, agent, ("openai",), False)
    j1 = await j1_for(broker, operator)
    legacy = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=device,
    )
    assert legacy.status_code == 200, legacy.text
    assert legacy.json()["scope_source"] == "legacy"
    await set_scope(chain, operator, agent, ["github"])  # the chain now has an entry: it decides
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=device,
    )
    await _denied(response, broker, "service_not_in_scope")
    chain_ok = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="github",
        device=device,
    )
    assert chain_ok.json()["scope_source"] == "chain"
    sources = [r.scope_source for r in await broker.service.store.mint_records()]
    assert sources == ["chain", "legacy"]


async def test_no_scope_anywhere(broker: RunningBroker, chain: Chain, operator: Operator) -> None:
    agent = agent_omni(operator.omni, "bot")
    device = await add_agent(chain, operator, "bot")
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=agent,
        service="openai",
        device=device,
    )
    await _denied(response, broker, "service_not_in_scope")
    assert broker.audit.events[-1].fields["scope_source"] == "none"


async def test_chain_unavailable_fails_closed(
    chain: Chain, operator: Operator, start_broker: StartBroker
) -> None:
    dead = await start_broker(chain=None, rpc_url=f"http://127.0.0.1:{pick_port()}")
    j1 = await j1_for(dead, operator)
    response = await mint(
        dead,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=operator.master,
    )
    await _denied(response, dead, "chain_unavailable", 503)


async def test_cap_routes_need_a_j1(broker: RunningBroker, operator: Operator) -> None:
    response = await broker.http.post("/v1/cap/cred-fetch", json={})
    assert _error(response) == "session_missing"


async def test_no_credential_endpoints(broker: RunningBroker) -> None:
    for path in ("/credential/fetch", "/v1/credential/store", "/credential"):
        response = await broker.http.post(path, json={})
        assert response.status_code == 404
    assert all("credential/" not in r.path for r in broker.service.app.routes)
