"""K3EpochCounter: epoch 1 at deployment, M-of-N governance for advance and set changes."""

from __future__ import annotations

from dataclasses import replace

from agentkeys.chain.events import EpochAdvanced, GovernanceChanged
from tests.chain.conftest import Chain
from tests.chain.helpers import reverts


async def test_advance_needs_m_of_n(chain_default: Chain) -> None:
    chain = chain_default
    client = chain.client
    g1, g2, g3 = chain.governance
    assert await client.current_epoch() == 1

    with reverts("NotEnoughApprovals"):
        await client.submit(await client.prepare_advance_epoch(2, [g1]), chain.deployer)
    with reverts("NotEnoughApprovals"):  # two approvals by non-members
        await client.submit(
            await client.prepare_advance_epoch(2, chain.accounts[1:3]), chain.deployer
        )
    duplicate = await client.prepare_advance_epoch(2, [g1])
    doubled = replace(duplicate, args=(2, duplicate.args[1] * 2))
    with reverts("NotEnoughApprovals"):
        await client.submit(doubled, chain.deployer)
    with reverts("EpochNotNext"):
        await client.submit(await client.prepare_advance_epoch(3, [g1, g2]), chain.deployer)

    receipt = await client.submit(await client.prepare_advance_epoch(2, [g2, g3]), chain.deployer)
    assert await client.current_epoch() == 2
    (event,) = client.receipt_events(receipt)
    assert event == EpochAdvanced(event.position, 2, chain.deployer.address.lower())


async def test_governance_change_is_m_of_n_and_voids_old_approvals(chain_default: Chain) -> None:
    chain = chain_default
    client = chain.client
    g1, g2, g3 = chain.governance
    newcomer = chain.accounts[4]
    stale = await client.prepare_advance_epoch(2, [g1, g2])

    with reverts("NotEnoughApprovals"):
        await client.submit(
            await client.prepare_set_governance([g1.address, newcomer.address], 2, [g1]),
            chain.deployer,
        )
    change = await client.prepare_set_governance([g1.address, newcomer.address], 2, [g1, g3])
    receipt = await client.submit(change, chain.deployer)
    (event,) = client.receipt_events(receipt)
    assert isinstance(event, GovernanceChanged)
    assert set(event.members) == {g1.address.lower(), newcomer.address.lower()}

    with reverts("NotEnoughApprovals"):  # signed under the old nonce
        await client.submit(stale, chain.deployer)
    with reverts("NotEnoughApprovals"):  # g2 is no longer a member
        await client.submit(await client.prepare_advance_epoch(2, [g1, g2]), chain.deployer)
    await client.submit(await client.prepare_advance_epoch(2, [g1, newcomer]), chain.deployer)
    assert await client.current_epoch() == 2
