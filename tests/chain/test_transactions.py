"""The production send path on real anvil: EIP-1559 fees, type-2 transactions, nonces
shared by several relay processes, and the node refusals the nonce rule relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from eth_account import Account
from eth_utils.address import to_checksum_address

from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.errors import RpcError
from agentkeys.chain.transactions import SendOutcome, classify_send_error, suggest_fees
from agentkeys.devstack import Anvil, start_anvil

HANG_GUARD = 120  # seconds; a guard against hanging, not a timing assertion
REPO = Path(__file__).resolve().parents[2]
_SINK = to_checksum_address("0x" + "ab" * 20)


@pytest.fixture(params=["automine", "block-time"])
def pooled(request: pytest.FixtureRequest) -> bool:
    """False: anvil mines on every transaction; True: every second (transactions wait pooled)."""
    return bool(request.param == "block-time")


@pytest.fixture
async def node(pooled: bool, tmp_path: Path) -> AsyncIterator[Anvil]:
    block_time = 1.0 if pooled else None
    async with start_anvil(block_time=block_time, run_dir=tmp_path / "anvil") as anvil:
        yield anvil


@pytest.fixture
async def client(node: Anvil) -> AsyncIterator[ChainClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        yield ChainClient(http, node.rpc_url)


async def test_a_sent_transaction_is_type_2_with_eip1559_fees(
    node: Anvil, client: ChainClient
) -> None:
    wallet = account_from_key(node.accounts[3].private_key)
    receipt = await client.send_transaction(wallet, _SINK, b"", context="transfer")
    tx = await client.rpc.call("eth_getTransactionByHash", receipt.tx_hash)
    assert tx["type"] == "0x2"
    assert "gasPrice" not in tx or int(tx["maxFeePerGas"], 16) > 0
    block = await client.rpc.call("eth_getBlockByNumber", hex(receipt.block_number), False)
    base_fee = int(block["baseFeePerGas"], 16)
    assert int(tx["maxFeePerGas"], 16) >= base_fee + int(tx["maxPriorityFeePerGas"], 16)
    assert int(tx["maxPriorityFeePerGas"], 16) > 0


async def test_suggested_fees_cover_two_base_fee_doublings(client: ChainClient) -> None:
    fees = await suggest_fees(client.rpc)
    history = await client.rpc.call("eth_feeHistory", "0x1", "latest", [])
    next_base_fee = int(history["baseFeePerGas"][-1], 16)
    assert fees.max_priority_fee_per_gas > 0
    assert fees.max_fee_per_gas == 2 * next_base_fee + fees.max_priority_fee_per_gas


async def _relay(
    node: Anvil, key: str, tag: str, count: int, ready: trio.Event, go: trio.Event
) -> dict[str, Any]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.chain._relay_child"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        job = json.dumps({"rpc_url": node.rpc_url, "to": _SINK, "count": count, "tag": tag})
        await process.stdin.send_all(f"{job}\n{key}\n".encode())
        out = b""
        while b"ready\n" not in out:
            chunk = await process.stdout.receive_some()
            assert chunk, "relay child exited before it was ready"
            out += chunk
        ready.set()
        await go.wait()
        await process.stdin.send_all(b"go\n")
        out = out.split(b"ready\n", 1)[1]
        while not out.endswith(b"\n"):
            chunk = await process.stdout.receive_some()
            assert chunk, "relay child exited without its result"
            out += chunk
        assert await process.wait() == 0
        result: dict[str, Any] = json.loads(out)
        return result
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_two_relay_processes_on_one_wallet_all_land(node: Anvil, client: ChainClient) -> None:
    wallet = node.accounts[4]
    address = account_from_key(wallet.private_key).address
    count = 4 if pooled else 12
    start = int(await client.rpc.call("eth_getTransactionCount", address, "latest"), 16)
    results: list[dict[str, Any]] = []
    readies = [trio.Event(), trio.Event()]
    go = trio.Event()

    async def run(tag: str, ready: trio.Event) -> None:
        results.append(await _relay(node, wallet.private_key, tag, count, ready, go))

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            for tag, ready in zip("ab", readies, strict=True):
                nursery.start_soon(run, tag, ready)
            for ready in readies:
                await ready.wait()
            go.set()
    hashes = [h for r in results for h in r["hashes"]]
    assert len(set(hashes)) == 2 * count
    mined = int(await client.rpc.call("eth_getTransactionCount", address, "latest"), 16)
    assert mined == start + 2 * count  # every transaction landed, none replaced another
    nonces = set()
    for tx_hash in hashes:
        receipt = await client.rpc.call("eth_getTransactionReceipt", tx_hash)
        assert receipt["status"] == "0x1"
        tx = await client.rpc.call("eth_getTransactionByHash", tx_hash)
        assert tx["type"] == "0x2"
        nonces.add(int(tx["nonce"], 16))
    assert nonces == set(range(start, start + 2 * count))


def _raw_transfer(node: Anvil, chain_id: int, nonce: int, *, tip: int) -> str:
    signed = Account.sign_transaction(
        {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "to": _SINK,
            "value": 0,
            "gas": 21_000,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": tip,
        },
        node.accounts[5].private_key,
    )
    return "0x" + bytes(signed.raw_transaction).hex()


async def _refusal(client: ChainClient, raw: str) -> SendOutcome:
    with pytest.raises(RpcError) as info:
        await client.rpc.call("eth_sendRawTransaction", raw)
    return classify_send_error(info.value)


async def test_the_node_refusals_map_to_retry_or_pooled(
    node: Anvil, client: ChainClient, pooled: bool
) -> None:
    chain_id = await client.chain_id()
    if not pooled:  # mined at once: the nonce is then too low
        await client.rpc.call("eth_sendRawTransaction", _raw_transfer(node, chain_id, 0, tip=10**9))
        assert await _refusal(client, _raw_transfer(node, chain_id, 0, tip=2 * 10**9)) is (
            SendOutcome.RETRY
        )
        return
    first = _raw_transfer(node, chain_id, 0, tip=10**9)
    await client.rpc.call("eth_sendRawTransaction", first)  # pooled until the next block
    assert await _refusal(client, first) is SendOutcome.POOLED  # the same transaction again
    assert await _refusal(client, _raw_transfer(node, chain_id, 0, tip=10**9 + 1)) is (
        SendOutcome.RETRY  # another transaction at that nonce, not 10 % dearer
    )


def test_other_refusals_fail() -> None:
    assert classify_send_error(RpcError("insufficient funds for gas")) is SendOutcome.FAILED
    assert classify_send_error(RpcError("nonce too low: next 5")) is SendOutcome.RETRY
