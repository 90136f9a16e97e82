"""Device mutations of SidecarRegistry: agent devices, K10 rotation, revocation (SPEC section 6)."""

from __future__ import annotations

from agentkeys.chain.challenge import NewAgent
from agentkeys.chain.events import DeviceKeyRotated, DeviceRegistered, DeviceRevoked
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer
from agentkeys.omni import agent_omni
from tests.chain.conftest import Chain, Operator, register_operator
from tests.chain.helpers import register_agent, reverts


async def test_agent_device_is_bound_to_its_agent_omni(chain: Chain, operator: Operator) -> None:
    agent_k10 = SoftwareK10Signer.generate()
    proof = await chain.client.k10_binding_proof(
        agent_k10, operator.omni, agent_omni(operator.omni, "bot-1")
    )
    mutation = await chain.client.prepare_add_agent_device(
        operator.omni, NewAgent("bot-1", agent_k10.public_point, roles=1), proof, operator.authority
    )
    receipt = await chain.client.submit(mutation, operator.wallet)
    device = await chain.client.get_device(agent_k10.device_key_hash)
    assert device is not None
    assert device.actor_omni == agent_omni(operator.omni, "bot-1")
    assert (device.operator_omni, device.tier, device.roles, device.revoked) == (
        operator.omni,
        2,
        1,
        False,
    )
    (event,) = chain.client.receipt_events(receipt)
    assert isinstance(event, DeviceRegistered)
    assert event.device_key_hash == agent_k10.device_key_hash.hex()

    # an agent device cannot authorise master mutations, even with a passkey
    agent_authority = MasterAuthority(agent_k10.device_key_hash, agent_k10, operator.passkey)
    with reverts("DeviceNotAuthorised"):
        await chain.client.submit(
            await chain.client.prepare_set_scope(
                operator.omni,
                agent_omni(operator.omni, "bot-1"),
                ["openai"],
                True,
                agent_authority,
            ),
            operator.wallet,
        )


async def test_agent_roles_and_label_are_checked(chain: Chain, operator: Operator) -> None:
    k10 = SoftwareK10Signer.generate()
    with reverts("InvalidRoles"):
        await chain.client.submit(
            await chain.client.prepare_add_agent_device(
                operator.omni, NewAgent("bot", k10.public_point, roles=4), b"", operator.authority
            ),
            operator.wallet,
        )
    with reverts("InvalidLabel"):
        await chain.client.submit(
            await chain.client.prepare_add_agent_device(
                operator.omni, NewAgent("Bot!", k10.public_point), b"", operator.authority
            ),
            operator.wallet,
        )


async def test_rotate_k10_moves_the_entry(chain: Chain, operator: Operator) -> None:
    agent, _ = await register_agent(
        chain.client, operator.omni, "bot", operator.authority, operator.wallet
    )
    new_k10 = SoftwareK10Signer.generate()
    old_hash = operator.k10.device_key_hash
    proof = await chain.client.k10_binding_proof(new_k10, operator.omni, operator.omni)
    mutation = await chain.client.prepare_rotate_k10(
        operator.omni, old_hash, new_k10.public_point, proof, operator.authority
    )
    receipt = await chain.client.submit(mutation, operator.wallet)
    kinds = [type(e) for e in chain.client.receipt_events(receipt)]
    assert kinds == [DeviceRevoked, DeviceRegistered, DeviceKeyRotated]
    old = await chain.client.get_device(old_hash)
    new = await chain.client.get_device(new_k10.device_key_hash)
    assert old is not None
    assert new is not None
    assert old.revoked
    assert not new.revoked
    assert (new.k11_point, new.tier, new.sign_count) == (old.k11_point, 1, old.sign_count)

    # the old key no longer authorises; the new one (same passkey) does
    with reverts("DeviceNotAuthorised"):
        await chain.client.submit(
            await chain.client.prepare_set_scope(
                operator.omni, agent, ["openai"], False, operator.authority
            ),
            operator.wallet,
        )
    rotated = MasterAuthority(new_k10.device_key_hash, new_k10, operator.passkey)
    await chain.client.submit(
        await chain.client.prepare_set_scope(operator.omni, agent, ["openai"], False, rotated),
        operator.wallet,
    )


async def test_revoking_twice_and_foreign_devices(chain: Chain, operator: Operator) -> None:
    agent_k10 = SoftwareK10Signer.generate()
    proof = await chain.client.k10_binding_proof(
        agent_k10, operator.omni, agent_omni(operator.omni, "bot")
    )
    await chain.client.submit(
        await chain.client.prepare_add_agent_device(
            operator.omni, NewAgent("bot", agent_k10.public_point), proof, operator.authority
        ),
        operator.wallet,
    )
    revoke = await chain.client.prepare_revoke_device(
        operator.omni, agent_k10.device_key_hash, operator.authority
    )
    receipt = await chain.client.submit(revoke, operator.wallet)
    (event,) = chain.client.receipt_events(receipt)
    assert isinstance(event, DeviceRevoked)
    with reverts("DeviceAlreadyRevoked"):
        await chain.client.submit(
            await chain.client.prepare_revoke_device(
                operator.omni, agent_k10.device_key_hash, operator.authority
            ),
            operator.wallet,
        )
    with reverts("DeviceNotFound"):
        await chain.client.submit(
            await chain.client.prepare_revoke_device(operator.omni, bytes(32), operator.authority),
            operator.wallet,
        )


async def test_device_keys_cannot_be_squatted(chain: Chain, operator: Operator) -> None:
    """Registering someone else's K10 needs that key's consent to exactly this binding."""
    squatter = await register_operator(chain, chain.accounts[2])
    victim_k10 = SoftwareK10Signer.generate()
    victim_proof = await chain.client.k10_binding_proof(
        victim_k10, operator.omni, agent_omni(operator.omni, "bot")
    )
    for label, proof in [
        ("bot", victim_proof),  # the victim's proof, replayed under another operator
        ("bot", b""),
        ("bot", bytes(64)),
    ]:
        with reverts("K10ProofInvalid"):
            await chain.client.submit(
                await chain.client.prepare_add_agent_device(
                    squatter.omni,
                    NewAgent(label, victim_k10.public_point),
                    proof,
                    squatter.authority,
                ),
                squatter.wallet,
            )
    # nor under the right operator for another agent
    with reverts("K10ProofInvalid"):
        await chain.client.submit(
            await chain.client.prepare_add_agent_device(
                operator.omni,
                NewAgent("other", victim_k10.public_point),
                victim_proof,
                operator.authority,
            ),
            operator.wallet,
        )
    await chain.client.submit(
        await chain.client.prepare_add_agent_device(
            operator.omni,
            NewAgent("bot", victim_k10.public_point),
            victim_proof,
            operator.authority,
        ),
        operator.wallet,
    )
