"""Security review regressions (SPEC section 6): scope only for one's own agents, and device
management needs the RECOVERY role without escalation.

Every test runs on anvil's default hardfork (P-256 precompile) and on prague (Solidity
fallback) through the parametrised ``chain`` fixture.
"""

from __future__ import annotations

from agentkeys.chain.challenge import NewAgent
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import agent_omni
from tests.chain.conftest import ORIGIN, RP_ID, Chain, Operator, new_master, register_operator
from tests.chain.helpers import register_agent, reverts

CAP_MINT, RECOVERY, SCOPE_MGMT = 1, 2, 4


async def _add_master(chain: Chain, op: Operator, roles: int) -> MasterAuthority:
    """A further master device of ``op`` with ``roles``, added by the first (all roles)."""
    k10 = SoftwareK10Signer.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    proof = await chain.client.k10_binding_proof(k10, op.omni, op.omni)
    await chain.client.submit(
        await chain.client.prepare_add_master_device(
            op.omni, new_master(k10, passkey, roles=roles), proof, op.authority
        ),
        op.wallet,
    )
    return MasterAuthority(k10.device_key_hash, k10, passkey)


async def test_scope_for_another_operators_actor_reverts(chain: Chain, operator: Operator) -> None:
    victim = await register_operator(chain, chain.accounts[2])
    victim_agent, _ = await register_agent(
        chain.client, victim.omni, "bot", victim.authority, victim.wallet
    )
    assert await chain.client.agent_operator(victim_agent) == victim.omni
    # the attacker names the victim's master omni, the victim's agent, an unregistered agent
    for target in (victim.omni, victim_agent, agent_omni(operator.omni, "never-registered")):
        nonce = await chain.client.operator_nonce(operator.omni)
        with reverts("AgentOfOtherOperator"):
            await chain.client.submit(
                await chain.client.prepare_set_scope(
                    operator.omni, target, ["openai"], False, operator.authority
                ),
                operator.wallet,
            )
        assert await chain.client.get_scope(operator.omni, target) is None
        assert await chain.client.operator_nonce(operator.omni) == nonce
    # the victim's own agent takes scope from the victim, and the attacker cannot revoke it
    await chain.client.submit(
        await chain.client.prepare_set_scope(
            victim.omni, victim_agent, ["openai"], False, victim.authority
        ),
        victim.wallet,
    )
    with reverts("ScopeNotFound"):
        await chain.client.submit(
            await chain.client.prepare_revoke_scope(
                operator.omni, victim_agent, operator.authority
            ),
            operator.wallet,
        )
    assert await chain.client.get_scope(victim.omni, victim_agent) is not None


async def test_agent_operator_is_recorded_once_and_kept(chain: Chain, operator: Operator) -> None:
    assert await chain.client.agent_operator(operator.omni) is None  # a master is no agent
    agent, agent_k10 = await register_agent(
        chain.client, operator.omni, "bot", operator.authority, operator.wallet
    )
    assert await chain.client.agent_operator(agent) == operator.omni
    # a second device for the same agent, a rotation and a revocation keep the record
    await register_agent(chain.client, operator.omni, "bot", operator.authority, operator.wallet)
    new_k10 = SoftwareK10Signer.generate()
    proof = await chain.client.k10_binding_proof(new_k10, operator.omni, agent)
    await chain.client.submit(
        await chain.client.prepare_rotate_k10(
            operator.omni,
            agent_k10.device_key_hash,
            new_k10.public_point,
            proof,
            operator.authority,
        ),
        operator.wallet,
    )
    await chain.client.submit(
        await chain.client.prepare_revoke_device(
            operator.omni, new_k10.device_key_hash, operator.authority
        ),
        operator.wallet,
    )
    assert await chain.client.agent_operator(agent) == operator.omni


async def test_cap_mint_only_master_cannot_manage_devices(chain: Chain, operator: Operator) -> None:
    limited = await _add_master(chain, operator, CAP_MINT)
    # cannot add a master (least of all an all-roles one)
    k10 = SoftwareK10Signer.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    proof = await chain.client.k10_binding_proof(k10, operator.omni, operator.omni)
    for roles in (7, CAP_MINT):
        with reverts("DeviceNotAuthorised"):
            await chain.client.submit(
                await chain.client.prepare_add_master_device(
                    operator.omni, new_master(k10, passkey, roles=roles), proof, limited
                ),
                operator.wallet,
            )
    # cannot add an agent device
    agent_k10 = SoftwareK10Signer.generate()
    agent_proof = await chain.client.k10_binding_proof(
        agent_k10, operator.omni, agent_omni(operator.omni, "bot")
    )
    with reverts("DeviceNotAuthorised"):
        await chain.client.submit(
            await chain.client.prepare_add_agent_device(
                operator.omni, NewAgent("bot", agent_k10.public_point), agent_proof, limited
            ),
            operator.wallet,
        )
    # cannot revoke or rotate the owner's device
    owner = operator.k10.device_key_hash
    with reverts("DeviceNotAuthorised"):
        await chain.client.submit(
            await chain.client.prepare_revoke_device(operator.omni, owner, limited),
            operator.wallet,
        )
    rotated = SoftwareK10Signer.generate()
    rotated_proof = await chain.client.k10_binding_proof(rotated, operator.omni, operator.omni)
    with reverts("DeviceNotAuthorised"):
        await chain.client.submit(
            await chain.client.prepare_rotate_k10(
                operator.omni, owner, rotated.public_point, rotated_proof, limited
            ),
            operator.wallet,
        )
    owner_entry = await chain.client.get_device(owner)
    assert owner_entry is not None
    assert not owner_entry.revoked
    assert await chain.client.get_device(k10.device_key_hash) is None
    # it may rotate its own key and revoke itself; roles carry over unchanged
    await chain.client.submit(
        await chain.client.prepare_rotate_k10(
            operator.omni, limited.device_key_hash, rotated.public_point, rotated_proof, limited
        ),
        operator.wallet,
    )
    entry = await chain.client.get_device(rotated.device_key_hash)
    assert entry is not None
    assert entry.roles == CAP_MINT
    assert not entry.revoked
    moved = MasterAuthority(rotated.device_key_hash, rotated, limited.passkey)
    await chain.client.submit(
        await chain.client.prepare_revoke_device(operator.omni, rotated.device_key_hash, moved),
        operator.wallet,
    )
    entry = await chain.client.get_device(rotated.device_key_hash)
    assert entry is not None
    assert entry.revoked


async def test_no_device_grants_roles_it_lacks(chain: Chain, operator: Operator) -> None:
    manager = await _add_master(chain, operator, CAP_MINT | RECOVERY)
    k10 = SoftwareK10Signer.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    proof = await chain.client.k10_binding_proof(k10, operator.omni, operator.omni)
    for roles in (7, SCOPE_MGMT):
        with reverts("RolesNotHeld"):
            await chain.client.submit(
                await chain.client.prepare_add_master_device(
                    operator.omni, new_master(k10, passkey, roles=roles), proof, manager
                ),
                operator.wallet,
            )
    await chain.client.submit(
        await chain.client.prepare_add_master_device(
            operator.omni, new_master(k10, passkey, roles=CAP_MINT | RECOVERY), proof, manager
        ),
        operator.wallet,
    )
    added = await chain.client.get_device(k10.device_key_hash)
    assert added is not None
    assert added.roles == CAP_MINT | RECOVERY
    # a RECOVERY-only device cannot give an agent CAP_MINT
    recovery_only = await _add_master(chain, operator, RECOVERY)
    agent_k10 = SoftwareK10Signer.generate()
    agent_proof = await chain.client.k10_binding_proof(
        agent_k10, operator.omni, agent_omni(operator.omni, "bot")
    )
    with reverts("RolesNotHeld"):
        await chain.client.submit(
            await chain.client.prepare_add_agent_device(
                operator.omni, NewAgent("bot", agent_k10.public_point), agent_proof, recovery_only
            ),
            operator.wallet,
        )
    assert await chain.client.agent_operator(agent_omni(operator.omni, "bot")) is None
