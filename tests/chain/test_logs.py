"""Chunked eth_getLogs on real anvil, directly and behind a provider that caps ranges.

The capping provider is an httpx transport in front of the real anvil that refuses an
``eth_getLogs`` wider than its cap the way hosted providers do (JSON-RPC -32005), and
records the ranges it was asked for.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from agentkeys.chain._rpc import JsonRpc
from agentkeys.chain.errors import ChainConfigError, RpcError
from agentkeys.chain.logs import LogReader, is_range_refusal
from agentkeys.chain.watcher import ChainWatcher
from tests.chain.conftest import Chain, register_operator
from tests.chain.helpers import register_agent


class CappingProvider(httpx.AsyncBaseTransport):
    """Forwards to anvil; refuses getLogs over more than ``cap`` blocks."""

    def __init__(self, cap: int) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.cap = cap
        self.ranges: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(await request.aread())
        if body["method"] == "eth_getLogs":
            query = body["params"][0]
            width = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
            self.ranges.append(width)
            if width > self.cap:
                error = {"code": -32005, "message": f"query exceeds max block range {self.cap}"}
                return httpx.Response(
                    200, json={"jsonrpc": "2.0", "id": body["id"], "error": error}
                )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
async def busy_chain(chain_default: Chain) -> Chain:
    """A dozen blocks with events of our contracts, and empty blocks between them."""
    op = await register_operator(chain_default, chain_default.accounts[1])
    for label in ("a", "b", "c"):
        await register_agent(chain_default.client, op.omni, label, op.authority, op.wallet)
        for _ in range(2):
            await chain_default.client.rpc.call("evm_mine")
    return chain_default


def _addresses(chain: Chain) -> list[str]:
    a = chain.deployment.addresses
    return [a.registry, a.scope, a.epoch_counter]


async def test_chunked_logs_equal_one_call_over_the_whole_range(busy_chain: Chain) -> None:
    head = await busy_chain.client.block_number()
    whole = await busy_chain.client.rpc.call(
        "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(head), "address": _addresses(busy_chain)}
    )
    assert len(whole) >= 6
    chunked = await LogReader(busy_chain.client.rpc, max_range=3).get_logs(
        0, head, _addresses(busy_chain)
    )
    assert chunked == whole


@pytest.fixture
async def capped(busy_chain: Chain) -> AsyncIterator[tuple[JsonRpc, CappingProvider]]:
    provider = CappingProvider(cap=4)
    async with httpx.AsyncClient(transport=provider, trust_env=False, timeout=30) as http:
        yield JsonRpc(http, busy_chain.anvil.rpc_url), provider


async def test_a_capped_provider_is_read_in_halved_chunks(
    busy_chain: Chain, capped: tuple[JsonRpc, CappingProvider]
) -> None:
    rpc, provider = capped
    head = await busy_chain.client.block_number()
    whole = await busy_chain.client.rpc.call(
        "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(head), "address": _addresses(busy_chain)}
    )
    reader = LogReader(rpc, max_range=1000)
    assert await reader.get_logs(0, head, _addresses(busy_chain)) == whole
    assert reader.max_range <= 4  # learned, and kept for the next call
    assert provider.ranges[0] > 4
    provider.ranges.clear()
    await reader.get_logs(0, head, _addresses(busy_chain))
    assert max(provider.ranges) <= 4  # no refused call the second time


async def test_a_provider_refusing_one_block_is_an_error(
    busy_chain: Chain, capped: tuple[JsonRpc, CappingProvider]
) -> None:
    rpc, provider = capped
    provider.cap = 0
    with pytest.raises(RpcError, match="max block range"):
        await LogReader(rpc, max_range=8).get_logs(0, 5, _addresses(busy_chain))


async def test_other_errors_are_not_halved(busy_chain: Chain) -> None:
    reader = LogReader(busy_chain.client.rpc, max_range=8)
    with pytest.raises(RpcError):
        await reader.get_logs(0, 5, ["not-an-address"])
    assert reader.max_range == 8


def test_range_refusals_of_known_providers() -> None:
    for message in (
        "query returned more than 10000 results",
        "block range too large",
        "Log response size exceeded.",
        "eth_getLogs is limited to a 10,000 range",
    ):
        assert is_range_refusal(RpcError(message)), message
    assert is_range_refusal(RpcError("whatever", code=-32005))
    assert not is_range_refusal(RpcError("invalid params"))
    with pytest.raises(ChainConfigError):
        LogReader(None, max_range=0)  # type: ignore[arg-type]


async def test_the_watcher_reads_through_a_capped_provider(
    busy_chain: Chain, capped: tuple[JsonRpc, CappingProvider]
) -> None:
    rpc, provider = capped
    watcher = ChainWatcher(rpc, busy_chain.deployment.addresses, start_block=0, batch_blocks=1000)
    events = watcher.subscribe(buffer=1000)
    while await watcher.poll_once():
        pass
    direct = ChainWatcher(busy_chain.client.rpc, busy_chain.deployment.addresses, start_block=0)
    expected = direct.subscribe(buffer=1000)
    while await direct.poll_once():
        pass
    delivered = [events.receive_nowait() for _ in range(expected.statistics().current_buffer_used)]
    assert delivered == [expected.receive_nowait() for _ in delivered]
    assert len(delivered) >= 6
    assert events.statistics().current_buffer_used == 0
    assert max(provider.ranges) > provider.cap  # it was refused, and read on in chunks
