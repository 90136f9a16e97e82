"""JSON-RPC failure mapping: unreachable nodes, wrong chains."""

from __future__ import annotations

import httpx
import pytest

from agentkeys.chain.client import ChainClient
from agentkeys.chain.errors import ChainConfigError, RpcError, RpcUnavailable
from agentkeys.devstack import pick_port
from tests.chain.conftest import Chain


async def test_unreachable_node_is_rpc_unavailable() -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        client = ChainClient(http, f"http://127.0.0.1:{pick_port()}")
        with pytest.raises(RpcUnavailable):
            await client.block_number()


async def test_wrong_chain_and_unknown_method(chain_default: Chain) -> None:
    chain = chain_default
    await chain.client.check_chain_id(chain.anvil.chain_id)
    with pytest.raises(ChainConfigError):
        await chain.client.check_chain_id(1)
    with pytest.raises(RpcError):
        await chain.client.rpc.call("agentkeys_noSuchMethod")
