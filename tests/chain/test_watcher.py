"""The chain watcher: exactly once across an outage, reorg handling, revocations delivered."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from agentkeys.chain.client import ChainClient, Receipt, account_from_key
from agentkeys.chain.deploy import deploy_all
from agentkeys.chain.errors import ReorgTooDeep, RpcUnavailable
from agentkeys.chain.events import (
    ChainEvent,
    ChainReorged,
    DeviceRegistered,
    ScopeRevoked,
    ScopeSet,
    WatcherEvent,
)
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer
from agentkeys.chain.watcher import ChainWatcher
from agentkeys.devstack import start_anvil
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet, agent_omni
from tests.chain.conftest import ORIGIN, RP_ID, Chain, Operator, new_master, register_operator
from tests.chain.helpers import agent_device_mutation, register_agent

HANG_GUARD = 60  # seconds; a guard against hanging, not a timing assertion


async def _collect(
    channel: trio.MemoryReceiveChannel[WatcherEvent], into: list[ChainEvent], count: int
) -> None:
    with trio.fail_after(HANG_GUARD):
        while len(into) < count:
            event = await channel.receive()
            assert not isinstance(event, ChainReorged)  # no reorg here
            into.append(event)


async def test_every_event_exactly_once_across_anvil_restart(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    expected: list[ChainEvent] = []
    received: list[ChainEvent] = []

    def record(client: ChainClient, receipt: Receipt) -> None:
        expected.extend(client.receipt_events(receipt))

    async with httpx.AsyncClient(timeout=5) as http, trio.open_nursery() as nursery:
        async with start_anvil(state_path=state, run_dir=tmp_path / "run1") as anvil:
            port = anvil.rpc_url
            accounts = [account_from_key(a.private_key) for a in anvil.accounts]
            client = ChainClient(http, anvil.rpc_url)
            deployment = await deploy_all(
                client, accounts[0], governance=[accounts[8].address], threshold=1
            )
            watcher = ChainWatcher(
                client.rpc,
                deployment.addresses,
                start_block=deployment.block_number + 1,
                poll_interval=0.05,
                max_backoff=0.2,
            )
            events = watcher.subscribe()
            await nursery.start(watcher.run)

            wallet = accounts[1]
            k10 = SoftwareK10Signer.generate()
            passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
            registration = await client.prepare_register_first_master(
                wallet.address, new_master(k10, passkey), k10, passkey
            )
            record(client, await client.submit(registration, wallet))
            op = Operator(wallet, actor_omni_for_wallet(wallet.address), k10, passkey)
            for label in ("a", "b", "c", "d", "e"):  # scope is for the operator's own agents
                agent_device, _ = await agent_device_mutation(client, op.omni, label, op.authority)
                record(client, await client.submit(agent_device, wallet))
            for label in ("a", "b"):
                mutation = await client.prepare_set_scope(
                    op.omni, agent_omni(op.omni, label), ["openai"], False, op.authority
                )
                record(client, await client.submit(mutation, wallet))
            await _collect(events, received, len(expected))
        # anvil is down: the watcher keeps retrying
        with trio.fail_after(HANG_GUARD):
            while watcher.rpc_failures < 2:  # noqa: ASYNC110 - polls another task's counter
                await trio.sleep(0.05)
        async with start_anvil(
            state_path=state, port=int(port.rsplit(":", 1)[1]), run_dir=tmp_path / "run2"
        ) as anvil:
            assert await client.operator_nonce(op.omni) == 8  # state kept
            authority = MasterAuthority(k10.device_key_hash, k10, passkey)
            for label in ("c", "d"):
                mutation = await client.prepare_set_scope(
                    op.omni, agent_omni(op.omni, label), ["github"], True, authority
                )
                record(client, await client.submit(mutation, wallet))
            revoke = await client.prepare_revoke_scope(op.omni, agent_omni(op.omni, "a"), authority)
            record(client, await client.submit(revoke, wallet))
            await _collect(events, received, len(expected))
            # nothing more arrives: a further event is the next one, not a duplicate
            mutation = await client.prepare_set_scope(
                op.omni, agent_omni(op.omni, "e"), ["x"], True, authority
            )
            record(client, await client.submit(mutation, wallet))
            await _collect(events, received, len(expected))
            nursery.cancel_scope.cancel()

    assert received == expected
    assert len({e.position for e in received}) == len(received)
    kinds = [type(e).__name__ for e in received]
    assert kinds.count("ScopeSet") == 5
    assert kinds.count("ScopeRevoked") == 1
    assert isinstance(received[0], DeviceRegistered)


async def test_scope_revocation_reaches_subscriber(chain_default: Chain) -> None:
    chain = chain_default
    op = await register_operator(chain, chain.accounts[1])
    agent, _ = await register_agent(chain.client, op.omni, "bot", op.authority, op.wallet)
    watcher = ChainWatcher(
        chain.client.rpc,
        chain.deployment.addresses,
        start_block=await chain.client.block_number() + 1,
        poll_interval=0.05,
    )
    events = watcher.subscribe()
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        await chain.client.submit(
            await chain.client.prepare_set_scope(op.omni, agent, ["openai"], False, op.authority),
            op.wallet,
        )
        relay = chain.accounts[7]
        await chain.client.submit(
            await chain.client.prepare_revoke_scope(op.omni, agent, op.authority), relay
        )
        with trio.fail_after(HANG_GUARD):
            first = await events.receive()
            second = await events.receive()
        nursery.cancel_scope.cancel()
    assert isinstance(first, ScopeSet)
    assert isinstance(second, ScopeRevoked)
    assert (second.operator_omni, second.agent_omni) == (op.omni, agent)
    assert second.sender == relay.address.lower()
    assert await chain.client.get_scope(op.omni, agent) is None


async def _scope_for(chain: Chain, op: Operator, label: str) -> None:
    await chain.client.submit(
        await chain.client.prepare_set_scope(
            op.omni, agent_omni(op.omni, label), ["openai"], False, op.authority
        ),
        op.wallet,
    )


async def _drain(channel: trio.MemoryReceiveChannel[WatcherEvent]) -> list[WatcherEvent]:
    out = []
    while True:
        try:
            out.append(channel.receive_nowait())
        except trio.WouldBlock:
            return out


async def _reorg_setup(
    chain: Chain, labels: tuple[str, str], **options: int
) -> tuple[Operator, ChainWatcher]:
    """An operator with two agents, and a watcher from the next block on."""
    op = await register_operator(chain, chain.accounts[1])
    for label in labels:
        await register_agent(chain.client, op.omni, label, op.authority, op.wallet)
    start = await chain.client.block_number() + 1
    return op, ChainWatcher(
        chain.client.rpc, chain.deployment.addresses, start_block=start, **options
    )


async def test_reorg_inside_confirmation_window_is_never_delivered(chain_default: Chain) -> None:
    chain = chain_default
    rpc = chain.client.rpc
    op, watcher = await _reorg_setup(chain, ("orphan", "canonical"), confirmations=2)
    events = watcher.subscribe()

    snapshot = await rpc.call("evm_snapshot")
    await _scope_for(chain, op, "orphan")
    assert not await watcher.poll_once() or await _drain(events) == []
    assert await rpc.call("evm_revert", snapshot) is True
    await _scope_for(chain, op, "canonical")
    for _ in range(2):
        await rpc.call("evm_mine")
    while await watcher.poll_once():
        pass
    delivered = await _drain(events)
    assert [e.agent_omni for e in delivered if isinstance(e, ScopeSet)] == [
        agent_omni(op.omni, "canonical")
    ]


async def test_reorg_below_delivered_events_rewinds_and_rereads(chain_default: Chain) -> None:
    chain = chain_default
    rpc = chain.client.rpc
    op, watcher = await _reorg_setup(chain, ("orphan", "replacement"))
    watcher_start = watcher.cursor
    events = watcher.subscribe()
    snapshot = await rpc.call("evm_snapshot")
    await _scope_for(chain, op, "orphan")
    assert await watcher.poll_once()
    assert len(await _drain(events)) == 1
    await rpc.call("evm_revert", snapshot)
    await _scope_for(chain, op, "replacement")
    while await watcher.poll_once():
        pass
    assert watcher.reorgs == 1
    delivered = await _drain(events)
    # the notice first: everything after the block before the orphan's was rolled back
    assert delivered[0] == ChainReorged(fork_block=watcher_start - 1)
    assert [e.agent_omni for e in delivered if isinstance(e, ScopeSet)] == [
        agent_omni(op.omni, "replacement")
    ]


async def test_reorg_deeper_than_the_confirmation_depth_is_reread(chain_default: Chain) -> None:
    chain = chain_default
    rpc = chain.client.rpc
    op, watcher = await _reorg_setup(chain, ("orphan", "replacement"), confirmations=2)
    events = watcher.subscribe()
    snapshot = await rpc.call("evm_snapshot")
    await _scope_for(chain, op, "orphan")
    assert not await watcher.poll_once()  # not deep enough yet
    for _ in range(2):
        await rpc.call("evm_mine")
    assert await watcher.poll_once()
    assert [e.agent_omni for e in await _drain(events) if isinstance(e, ScopeSet)] == [
        agent_omni(op.omni, "orphan")
    ]
    await rpc.call("evm_revert", snapshot)
    await _scope_for(chain, op, "replacement")
    for _ in range(3):  # the new branch is longer, as a reorg's is
        await rpc.call("evm_mine")
    while await watcher.poll_once():
        pass
    assert watcher.reorgs == 1
    assert [e.agent_omni for e in await _drain(events) if isinstance(e, ScopeSet)] == [
        agent_omni(op.omni, "replacement")
    ]


async def test_reorg_past_everything_remembered_is_too_deep(chain_default: Chain) -> None:
    chain = chain_default
    rpc = chain.client.rpc
    # history=1: only the last scanned block is remembered, the fork point is forgotten
    op, watcher = await _reorg_setup(chain, ("orphan", "replacement"), history=1)
    snapshot = await rpc.call("evm_snapshot")
    await _scope_for(chain, op, "orphan")
    assert await watcher.poll_once()
    await rpc.call("evm_revert", snapshot)
    await _scope_for(chain, op, "replacement")
    with pytest.raises(ReorgTooDeep):
        await watcher.poll_once()


async def test_head_lag_counts_blocks_seen_but_not_scanned_and_is_unknown_after_a_failure(
    chain_default: Chain,
) -> None:
    chain = chain_default
    rpc = chain.client.rpc
    start = await chain.client.block_number() + 1
    watcher = ChainWatcher(rpc, chain.deployment.addresses, start_block=start, batch_blocks=2)
    assert watcher.head_lag() is None  # no poll yet
    await rpc.call("anvil_mine", hex(5))
    lags = []
    while await watcher.poll_once():
        lags.append(watcher.head_lag())
    assert lags == [3, 1, 0]
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        unreachable = ChainClient(http, "http://127.0.0.1:9", chain.deployment.addresses)
        lost = ChainWatcher(unreachable.rpc, chain.deployment.addresses, start_block=start)
        lost.head = 7  # as if a poll had read it before the node went away
        with pytest.raises(RpcUnavailable):
            await lost.poll_once()
    assert lost.head_lag() is None
