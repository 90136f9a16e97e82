"""The sidecar's own identity at the broker: device sign-in by a K10 challenge, what a device
session may do, and revocation (SPEC section 8; issue 15 deliverable 1).

Every device is registered on the real chain (anvil, real contracts, K10 + K11 signed
master mutations); every request goes over HTTP to the real broker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentkeys.broker._device_signin import MAX_PENDING_DEVICE_CHALLENGES
from agentkeys.cap import CapOp
from agentkeys.clients import BrokerClient, PeerRefused
from agentkeys.omni import agent_omni
from attest.device_key import SoftwareDeviceKey
from tests.broker._flow import bearer, challenge_for, j1_for, present, sign_in, signature
from tests.broker.conftest import Chain, Device, Operator, RunningBroker
from tests.broker.test_cap_mint import add_agent, add_master, mint, revoke_device, set_scope


def denied(broker: RunningBroker, response: Any, error: str, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["reason"]
    # one audit row each (401/403 are denials, a 429 an error)
    assert any(e.error == error for e in broker.audit.events)
    if status in (401, 403):
        assert broker.denials(error)


@pytest.fixture
async def agent(chain: Chain, operator: Operator) -> tuple[str, Device]:
    """The agent ``coder`` with ``openai`` in its chain scope, and its device."""
    actor = agent_omni(operator.omni, "coder")
    device = await add_agent(chain, operator, "coder")
    await set_scope(chain, operator, actor, ["openai"])
    return actor, device


async def test_a_device_signs_in_and_mints_fetch_caps_for_itself(
    broker: RunningBroker, operator: Operator, agent: tuple[str, Device], tmp_path: Path
) -> None:
    actor, device = agent
    key = SoftwareDeviceKey(device.key, tmp_path / "k10.pem")
    client = BrokerClient(broker.http)
    grant = await client.sign_in_device(key, audience="agentkeys-broker")
    assert (grant.operator_omni, grant.actor_omni) == (operator.omni, actor)
    assert grant.device_key_hash == device.hash
    assert grant.expires_at - broker.clock() <= 900 + 1
    info = await client.session_info(grant.session)
    assert (info.stage, info.actor_omni, info.device_key_hash) == ("device", actor, device.hash)
    minted = await client.mint_cap(
        CapOp.FETCH, session=grant.session, device_key=key, operator_omni=operator.omni,
        actor_omni=actor, service="openai",
    )  # fmt: skip
    assert minted.scope_source == "chain"
    assert (minted.cap.payload.actor_omni, minted.cap.payload.service) == (actor, "openai")
    # the per-actor binding checks still run: a service outside the scope is refused
    with pytest.raises(PeerRefused) as outside:
        await client.mint_cap(
            CapOp.FETCH, session=grant.session, device_key=key, operator_omni=operator.omni,
            actor_omni=actor, service="github",
        )  # fmt: skip
    assert (outside.value.http_status, outside.value.code) == (403, "service_not_in_scope")
    assert outside.value.peer_reason
    assert broker.denials("service_not_in_scope")


async def test_a_challenge_is_single_use(broker: RunningBroker, agent: tuple[str, Device]) -> None:
    _, device = agent
    challenge = (await challenge_for(broker, device)).json()["challenge"]
    first = await present(broker, device, challenge)
    assert first.status_code == 200, first.text
    denied(broker, await present(broker, device, challenge), "challenge_unknown", 401)
    invented = await present(broker, device, "ab" * 32)
    assert invented.json()["error"] == "challenge_unknown"


async def test_a_wrong_key_or_another_device_is_refused(
    broker: RunningBroker, chain: Chain, operator: Operator, agent: tuple[str, Device]
) -> None:
    _, device = agent
    wrong_key = await sign_in(broker, device, key_of=Device.generate())
    denied(broker, wrong_key, "device_signature_rejected", 401)
    # a challenge issued for one device does not sign another in, even with its own key
    other = await add_agent(chain, operator, "other")
    challenge = (await challenge_for(broker, device)).json()["challenge"]
    denied(broker, await present(broker, other, challenge), "challenge_unknown", 401)
    # ... and the device's own challenge is still there for it
    still = await present(broker, device, challenge)
    assert still.status_code == 200, still.text
    # a signature over another audience (another broker) is refused
    challenge = (await challenge_for(broker, device)).json()["challenge"]
    elsewhere = signature(device, challenge, audience="another-broker")
    denied(
        broker, await present(broker, device, challenge, elsewhere),
        "device_signature_rejected", 401,
    )  # fmt: skip


async def test_an_unregistered_device_gets_no_challenge(broker: RunningBroker) -> None:
    answer = await challenge_for(broker, Device.generate())
    denied(broker, answer, "device_not_registered", 403)
    malformed = await broker.http.post(
        "/v1/auth/device/challenge", json={"device_key_hash": "not hex"}
    )
    assert malformed.status_code == 400, malformed.text


async def test_a_device_without_cap_mint_cannot_sign_in(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    device = await add_master(chain, operator, roles=2)  # recovery only
    denied(broker, await challenge_for(broker, device), "role_missing", 403)


async def test_pending_challenges_are_bounded(
    broker: RunningBroker, agent: tuple[str, Device]
) -> None:
    _, device = agent
    for _ in range(MAX_PENDING_DEVICE_CHALLENGES):
        assert (await challenge_for(broker, device)).status_code == 200
    denied(broker, await challenge_for(broker, device), "device_challenges_pending", 429)


async def test_a_revoked_device_is_refused_at_sign_in_mint_and_session_info(
    broker: RunningBroker, chain: Chain, operator: Operator, agent: tuple[str, Device]
) -> None:
    actor, device = agent
    session = (await sign_in(broker, device)).json()["session"]
    pending = (await challenge_for(broker, device)).json()["challenge"]
    await revoke_device(chain, operator, device)
    info = await broker.http.get("/v1/auth/session", headers=bearer(session))
    denied(broker, info, "device_revoked", 403)
    minted = await mint(
        broker, session, CapOp.FETCH, operator=operator.omni, actor=actor, service="openai",
        device=device,
    )  # fmt: skip
    denied(broker, minted, "device_revoked", 403)
    denied(broker, await challenge_for(broker, device), "device_revoked", 403)
    # a challenge fetched before the revocation signs nobody in after it
    denied(broker, await present(broker, device, pending), "device_revoked", 403)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/cap/cred-store"),
        ("POST", "/v1/cap/cred-list"),
        ("POST", "/v1/cap/cred-teardown"),
        ("POST", "/v1/relay/scope"),
        ("POST", "/v1/relay/first-master"),
        ("POST", "/v1/mint-oidc-jwt/challenge"),
        ("POST", "/v1/mint-oidc-jwt"),
        ("POST", "/v1/auth/passkey/register/options"),
        ("POST", "/v1/auth/siwe/start"),
        ("POST", "/v1/auth/siwe/k4"),
    ],
)
async def test_a_device_session_is_refused_everywhere_else(
    broker: RunningBroker, agent: tuple[str, Device], method: str, path: str
) -> None:
    _, device = agent
    session = (await sign_in(broker, device)).json()["session"]
    response = await broker.http.request(method, path, json={}, headers=bearer(session))
    denied(broker, response, "device_session_not_allowed", 403)


async def test_a_device_session_mints_for_nobody_else(
    broker: RunningBroker, chain: Chain, operator: Operator, agent: tuple[str, Device]
) -> None:
    actor, device = agent
    other_actor = agent_omni(operator.omni, "other")
    other = await add_agent(chain, operator, "other")
    await set_scope(chain, operator, other_actor, ["openai"])
    session = (await sign_in(broker, device)).json()["session"]
    for someone, theirs in (
        (other_actor, other),  # another device and actor
        (other_actor, device),  # its device, another actor
        (actor, other),  # its actor, another device
        (operator.omni, operator.master),  # the master's own vault
    ):
        response = await mint(
            broker, session, CapOp.FETCH, operator=operator.omni, actor=someone,
            service="openai", device=theirs,
        )  # fmt: skip
        denied(broker, response, "device_session_not_allowed", 403)
    # the operator's J1 is unchanged: it mints for the other agent's device as before
    j1 = await j1_for(broker, operator)
    response = await mint(
        broker, j1, CapOp.FETCH, operator=operator.omni, actor=other_actor, service="openai",
        device=other,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    info = await broker.http.get("/v1/auth/session", headers=bearer(j1))
    assert info.json()["stage"] == "j1"


async def test_a_device_session_expires_and_can_be_revoked(
    broker: RunningBroker, operator: Operator, agent: tuple[str, Device]
) -> None:
    actor, device = agent
    session = (await sign_in(broker, device)).json()["session"]
    revoked = await broker.http.post("/v1/auth/session/revoke", headers=bearer(session))
    assert revoked.status_code == 200, revoked.text
    info = await broker.http.get("/v1/auth/session", headers=bearer(session))
    denied(broker, info, "session_revoked", 401)
    session = (await sign_in(broker, device)).json()["session"]
    broker.clock.offset = 900 + 10
    minted = await mint(
        broker, session, CapOp.FETCH, operator=operator.omni, actor=actor, service="openai",
        device=device, pop=None,
    )  # fmt: skip
    assert minted.json()["error"] == "session_expired"
