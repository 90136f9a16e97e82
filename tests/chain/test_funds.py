"""A wallet that cannot pay the gas gets an error naming the address to fund."""

from __future__ import annotations

import pytest
from eth_account import Account

from agentkeys.chain import InsufficientFunds
from tests.chain.conftest import Chain, register_operator


async def test_an_unfunded_wallet_is_told_which_address_to_fund(chain_default: Chain) -> None:
    chain = chain_default
    fresh = Account.create()
    with pytest.raises(InsufficientFunds) as caught:
        await register_operator(chain, fresh)
    assert caught.value.address == fresh.address
    assert f"fund {fresh.address}" in str(caught.value)
    assert await chain.client.rpc.call("eth_getTransactionCount", fresh.address, "latest") == "0x0"
    await chain.client.rpc.call("anvil_setBalance", fresh.address, hex(10**18))
    operator = await register_operator(chain, fresh)
    assert await chain.client.get_device(operator.authority.device_key_hash) is not None
