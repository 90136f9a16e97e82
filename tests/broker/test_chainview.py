"""CachedChainView with ``max_staleness``: hits without asking the node, bounded staleness.

Against real anvil with the real client and watcher. The reader is wrapped only to count
the calls that reach the node.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from agentkeys.broker import CachedChainView
from agentkeys.broker.config import ChainSettings
from agentkeys.chain.client import ChainClient
from agentkeys.chain.watcher import ChainWatcher
from agentkeys.config import ConfigError
from agentkeys.omni import agent_omni
from tests.broker.conftest import Chain, Operator, register_operator
from tests.broker.test_cap_mint import add_agent, revoke_scope, set_scope


class CountingReader:
    """The real chain client, counting the reads that go to the node."""

    def __init__(self, client: ChainClient) -> None:
        self._client = client
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def counted(*args: Any) -> Any:
            self.calls += 1
            return await method(*args)

        return counted


@pytest.fixture
async def operator(chain: Chain) -> Operator:
    return await register_operator(chain, chain.accounts[1])


@pytest.fixture
async def counting(chain: Chain) -> CountingReader:
    return CountingReader(chain.client)


def _watcher(chain: Chain) -> ChainWatcher:
    return ChainWatcher(
        chain.client.rpc, chain.deployment.addresses, start_block=chain.deployment.block_number
    )


@pytest.fixture
async def following(
    chain: Chain, counting: CountingReader, nursery: trio.Nursery
) -> CachedChainView:
    view = CachedChainView(counting, max_staleness=5.0)
    await nursery.start(partial(view.follow, _watcher(chain), poll_interval=0.02))
    return view


async def _synced(view: CachedChainView, chain: Chain) -> None:
    head = await chain.client.block_number()
    with trio.fail_after(30):
        # applied through ``head``, by a poll that read the head it reached (lag 0): from then
        # on the cache is trusted
        while True:
            synced = view.synced_through
            if synced is not None and synced >= head and view.head_lag() == 0:
                break
            await trio.sleep(0.01)


async def test_a_hit_does_not_ask_the_node(
    chain: Chain, operator: Operator, following: CachedChainView, counting: CountingReader
) -> None:
    await _synced(following, chain)
    first = await following.device(operator.master.hash)
    assert first is not None
    await following.epoch()
    calls = counting.calls
    for _ in range(5):
        assert await following.device(operator.master.hash) == first
        await following.epoch()
    assert counting.calls == calls  # no block_number, no eth_call
    assert following.hits == 10


async def test_a_revocation_event_drops_the_scope_within_the_staleness_bound(
    chain: Chain, operator: Operator, following: CachedChainView
) -> None:
    agent = agent_omni(operator.omni, "bot")
    await add_agent(chain, operator, "bot")
    await set_scope(chain, operator, agent, ["openai"])
    await _synced(following, chain)
    assert await following.scope(operator.omni, agent) is not None
    assert await following.scope(operator.omni, agent) is not None
    assert following.hits >= 1
    await revoke_scope(chain, operator, agent)
    await _synced(following, chain)
    scope = await following.scope(operator.omni, agent)
    assert scope is None or not scope.services


async def test_the_cache_is_not_trusted_once_the_bound_passed(
    chain: Chain, operator: Operator, counting: CountingReader, nursery: trio.Nursery
) -> None:
    clock = [100.0]
    view = CachedChainView(counting, max_staleness=0.01, now=lambda: clock[0])
    watcher = _watcher(chain)
    while await watcher.poll_once():  # caught up: ``follow`` polls once, then waits a minute
        pass
    # its one poll (at 100.0) reached the head: the cache is trusted until 100.01
    await nursery.start(partial(view.follow, watcher, poll_interval=60))
    clock[0] = 100.005  # within the bound: a miss, then a hit without asking the node
    calls = counting.calls
    await view.device(operator.master.hash)
    await view.device(operator.master.hash)
    assert (counting.calls, view.hits) == (calls + 1, 1)
    clock[0] = 100.02  # past it: every read asks the node again
    await view.device(operator.master.hash)
    await view.device(operator.master.hash)
    assert (counting.calls, view.hits) == (calls + 3, 1)


async def test_a_view_not_following_never_trusts_its_cache(
    operator: Operator, counting: CountingReader
) -> None:
    view = CachedChainView(counting, max_staleness=60)
    await view.device(operator.master.hash)
    await view.device(operator.master.hash)
    assert counting.calls == 2
    assert view.hits == 0


async def test_a_negative_staleness_is_refused(counting: CountingReader) -> None:
    with pytest.raises(ValueError, match="max_staleness"):
        CachedChainView(counting, max_staleness=-1)


async def test_a_reorg_the_watcher_rewound_over_drops_the_cache(
    chain: Chain, operator: Operator, following: CachedChainView
) -> None:
    agent = agent_omni(operator.omni, "bot")
    await add_agent(chain, operator, "bot")
    snapshot = await chain.client.rpc.call("evm_snapshot")
    await set_scope(chain, operator, agent, ["openai"])  # on a branch that will be replaced
    await _synced(following, chain)
    assert await following.scope(operator.omni, agent) is not None
    assert await following.scope(operator.omni, agent) is not None  # cached
    hits = following.hits
    await chain.client.rpc.call("evm_revert", snapshot)
    for _ in range(3):  # the new branch, without the scope, is longer
        await chain.client.rpc.call("evm_mine")
    await _synced(following, chain)
    assert await following.scope(operator.omni, agent) is None  # no event said so: the reorg did
    assert following.hits == hits


def test_the_configured_staleness_must_exceed_the_poll_interval(tmp_path: Path) -> None:
    record = tmp_path / "deployment.json"
    with pytest.raises(ConfigError, match="cache_staleness"):
        ChainSettings(rpc_url="http://x", deployment=record, poll_interval=1, cache_staleness=1)
    with pytest.raises(ConfigError, match="max_log_range"):
        ChainSettings(rpc_url="http://x", deployment=record, max_log_range=0)
    assert ChainSettings(rpc_url="http://x", deployment=record, cache_staleness=2.5)
