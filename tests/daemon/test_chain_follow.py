"""The daemon following real anvil: its chain head lag on ``/metrics``, and reorgs.

The daemon is the ``gate`` daemon (real broker for the heartbeat, no worker reached) with
the real :class:`ChainWatcher` as its ``chain-watcher`` duty and event source, as
``run_daemon`` wires it. Credentials are put in its cache through the cache's own ``get``
(no fetch can succeed here): they stand for credentials fetched while the chain said so.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from agentkeys.chain.client import account_from_key
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.chain.watcher import ChainWatcher
from agentkeys.daemon.config import IdentitySection
from agentkeys.daemon.credentials import Credential
from agentkeys.devstack.upstream import DemoUpstream
from agentkeys.omni import agent_omni, service_hash
from tests.broker.conftest import Chain as OperatorChain
from tests.broker.conftest import Operator, register_operator
from tests.broker.test_cap_mint import add_agent, revoke_scope, set_scope
from tests.daemon.conftest import REAL_KEY, Broker, Stack, open_gate, wait_until
from tests.metrics_scrape import scrape, value
from tests.services import Chain

LAG = "agentkeys_chain_head_lag_blocks"


def _operator_chain(chain: Chain) -> OperatorChain:
    accounts = [account_from_key(a.private_key) for a in chain.anvil.accounts]
    deployment = read_deployment_record(chain.deployment_path)
    return OperatorChain(chain.anvil, chain.client, deployment, accounts)


async def _next_block(chain: Chain) -> int:
    return await chain.client.block_number() + 1


def _watcher(chain: Chain, start_block: int, **options: Any) -> ChainWatcher:
    deployment = read_deployment_record(chain.deployment_path)
    return ChainWatcher(chain.client.rpc, deployment.addresses, start_block=start_block, **options)


async def test_the_head_lag_on_metrics_follows_real_blocks(
    nursery: trio.Nursery, tmp_path: Any, upstream: DemoUpstream, broker: Broker, chain: Chain
) -> None:
    # driven by the test, two blocks per poll, so that a lag can be seen between polls
    watcher = _watcher(chain, await _next_block(chain), batch_blocks=2)
    async with (
        open_gate(nursery, tmp_path, upstream, broker, chain_lag=watcher.head_lag) as stack,
        stack.client() as client,
    ):
        assert value(await scrape(client), LAG) == -1  # not following yet
        await chain.client.rpc.call("anvil_mine", hex(5))
        lags = []
        while await watcher.poll_once():
            lags.append(value(await scrape(client), LAG))
        assert lags == [3, 1, 0]  # 5 new blocks, 2 scanned per poll
        await chain.client.rpc.call("evm_mine")
        assert await watcher.poll_once()
        assert value(await scrape(client), LAG) == 0


@asynccontextmanager
async def _following(
    nursery: trio.Nursery,
    tmp_path: Any,
    upstream: DemoUpstream,
    broker: Broker,
    chain: Chain,
    operator: Operator,
    agent: str,
) -> AsyncIterator[Stack]:
    """The agent's daemon, its watcher following from the next block on.

    Its credentials are put in its cache by the test (this broker follows no chain, so no
    device could sign in to it): the daemon runs without a device session."""
    watcher = _watcher(chain, await _next_block(chain), poll_interval=0.02)
    async with open_gate(
        nursery,
        tmp_path,
        upstream,
        broker,
        identity=IdentitySection(operator_omni=operator.omni, actor_omni=agent),
        events=watcher.subscribe(),
        chain_watcher=watcher.run,
        chain_lag=watcher.head_lag,
        session=None,
    ) as stack:
        yield stack


def _hashes(*services: str) -> frozenset[str]:
    return frozenset(service_hash(s).hex() for s in services)


async def _cache(stack: Stack, service: str) -> None:
    """A credential of ``service`` in the daemon's cache, as a fetch would have put it."""

    async def fetched(name: str) -> Credential:
        return Credential(secret=REAL_KEY.encode(), expires_at=time.time() + 300)

    await stack.daemon.cache.get(service, fetched)


async def _get(stack: Stack, service: str) -> tuple[int, str | None]:
    async with stack.client() as client:
        response = await client.get(f"/{service}/v1/models")
    error = None if response.status_code == 200 else response.json()["error"]
    return response.status_code, error


async def _reorg(chain: Chain, snapshot: Any, blocks: int = 3) -> None:
    """Replace everything after ``snapshot`` by a longer branch of empty blocks."""
    assert await chain.client.rpc.call("evm_revert", snapshot) is True
    await chain.client.rpc.call("anvil_mine", hex(blocks))


async def test_a_reorg_drops_what_rolled_back_events_allowed_and_a_re_seen_revocation_evicts(
    nursery: trio.Nursery, tmp_path: Any, upstream: DemoUpstream, broker: Broker, chain: Chain
) -> None:
    on_chain = _operator_chain(chain)
    operator = await register_operator(on_chain, on_chain.accounts[1])
    await add_agent(on_chain, operator, "bot")
    agent = agent_omni(operator.omni, "bot")
    async with _following(nursery, tmp_path, upstream, broker, chain, operator, agent) as stack:
        daemon = stack.daemon
        await set_scope(on_chain, operator, agent, ["openai"])
        await wait_until(lambda: daemon.revocations.scope == _hashes("openai"))
        await _cache(stack, "openai")

        # a grant on a branch that a reorg replaces
        before_grant = await chain.client.rpc.call("evm_snapshot")
        await set_scope(on_chain, operator, agent, ["openai", "minutely"])
        await wait_until(lambda: daemon.revocations.scope == _hashes("openai", "minutely"))
        await _cache(stack, "minutely")
        assert await _get(stack, "minutely") == (200, None)  # served from the cache
        await _reorg(chain, before_grant)
        await wait_until(lambda: not daemon.cache.services())  # every credential dropped
        assert daemon.revocations.scope == _hashes("openai")  # the state before the fork
        assert await _get(stack, "minutely") == (403, "service_not_in_scope")

        # a revocation on a branch that a reorg replaces, then mined again
        await _cache(stack, "openai")
        before_revoke = await chain.client.rpc.call("evm_snapshot")
        await revoke_scope(on_chain, operator, agent)
        await wait_until(lambda: not daemon.cache.services())
        assert await _get(stack, "openai") == (403, "scope_revoked")
        await _reorg(chain, before_revoke)
        await wait_until(lambda: daemon.revocations.scope == _hashes("openai"))  # rolled back
        await _cache(stack, "openai")  # fetched again: the revocation is gone from the chain
        assert await _get(stack, "openai") == (200, None)
        await revoke_scope(on_chain, operator, agent)  # the revocation, included again
        await wait_until(lambda: not daemon.cache.services())
        assert await _get(stack, "openai") == (403, "scope_revoked")
        async with stack.client() as client:
            assert value(await scrape(client), LAG) >= 0  # following
