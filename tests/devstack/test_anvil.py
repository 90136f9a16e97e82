"""anvil launcher: deploy and call a contract, hardfork precompile difference, restarts."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from eth_abi.abi import decode, encode
from eth_account import Account
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from agentkeys.devstack import (
    Anvil,
    BinaryNotFound,
    ComponentStartFailed,
    repo_root,
    start_anvil,
)
from tests.stack_fixtures import live_processes

P256_PRECOMPILE = "0x" + "00" * 18 + "0100"

BOX_SOURCE = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;
contract Box {
    uint256 public value;
    constructor(uint256 v) { value = v; }
    function set(uint256 v) external { value = v; }
}
"""

_COMPILE_JS = (
    "const solc = require('solc');"
    "const input = require('fs').readFileSync(0, 'utf8');"
    "process.stdout.write(solc.compile(input));"
)


async def compile_box() -> str:
    """Init bytecode of Box, compiled by the repo's pinned solc (standard JSON)."""
    request = {
        "language": "Solidity",
        "sources": {"Box.sol": {"content": BOX_SOURCE}},
        "settings": {
            "evmVersion": "cancun",
            "outputSelection": {"*": {"*": ["evm.bytecode.object"]}},
        },
    }
    result = await trio.run_process(
        ["node", "-e", _COMPILE_JS],
        stdin=json.dumps(request).encode(),
        capture_stdout=True,
        cwd=repo_root(),
    )
    output = json.loads(result.stdout)
    assert not [e for e in output.get("errors", []) if e["severity"] == "error"]
    bytecode: str = output["contracts"]["Box.sol"]["Box"]["evm"]["bytecode"]["object"]
    return bytecode


async def rpc(client: httpx.AsyncClient, node: Anvil, method: str, *params: Any) -> Any:
    response = await client.post(
        node.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    )
    body = response.json()
    assert "error" not in body, body
    return body["result"]


async def send_signed(
    client: httpx.AsyncClient, node: Anvil, *, to: str | None, data: bytes
) -> dict[str, Any]:
    address, key = node.accounts[0]
    nonce = int(await rpc(client, node, "eth_getTransactionCount", address, "pending"), 16)
    tx: dict[str, Any] = {
        "chainId": node.chain_id,
        "nonce": nonce,
        "gas": 1_000_000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "data": data,
        "value": 0,
    }
    if to is not None:
        tx["to"] = to_checksum_address(to)
    signed = Account.sign_transaction(tx, key)
    tx_hash = await rpc(client, node, "eth_sendRawTransaction", "0x" + signed.raw_transaction.hex())
    return await wait_receipt(client, node, tx_hash)


async def wait_receipt(client: httpx.AsyncClient, node: Anvil, tx_hash: str) -> dict[str, Any]:
    """The receipt once mined (anvil mines each transaction, but asynchronously)."""
    with trio.fail_after(10):
        while True:
            receipt = await rpc(client, node, "eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                break
            await trio.sleep(0.01)
    assert receipt["status"] == "0x1"
    result: dict[str, Any] = receipt
    return result


async def read_value(client: httpx.AsyncClient, node: Anvil, contract: str) -> int:
    selector = function_signature_to_4byte_selector("value()")
    call = {"to": contract, "data": "0x" + selector.hex()}
    raw = await rpc(client, node, "eth_call", call, "latest")
    (value,) = decode(["uint256"], bytes.fromhex(raw[2:]))
    return int(value)


async def test_deploy_and_call_a_contract(anvil: Anvil) -> None:
    assert anvil.rpc_url == f"http://127.0.0.1:{anvil.port}"
    assert len(anvil.accounts) == 10
    assert Account.from_key(anvil.accounts[0].private_key).address.lower() == (
        anvil.accounts[0].address.lower()
    )
    init_code = bytes.fromhex(await compile_box()) + encode(["uint256"], [41])
    async with httpx.AsyncClient() as client:
        assert int(await rpc(client, anvil, "eth_chainId"), 16) == anvil.chain_id
        receipt = await send_signed(client, anvil, to=None, data=init_code)
        contract = receipt["contractAddress"]
        assert await read_value(client, anvil, contract) == 41
        set_call = function_signature_to_4byte_selector("set(uint256)") + encode(["uint256"], [42])
        await send_signed(client, anvil, to=contract, data=set_call)
        assert await read_value(client, anvil, contract) == 42


def p256_verify_input() -> str:
    """hash ‖ r ‖ s ‖ qx ‖ qy for a valid P-256 signature (EIP-7951 input)."""
    key = ec.generate_private_key(ec.SECP256R1())
    message = b"agentkeys devstack"
    digest = hashes.Hash(hashes.SHA256())
    digest.update(message)
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    public = key.public_key().public_numbers()
    parts = [digest.finalize()] + [n.to_bytes(32, "big") for n in (r, s, public.x, public.y)]
    return "0x" + b"".join(parts).hex()


async def test_prague_lacks_the_p256_precompile(anvil: Anvil, anvil_prague: Anvil) -> None:
    call = {"to": P256_PRECOMPILE, "data": p256_verify_input()}
    async with httpx.AsyncClient() as client:
        present = await rpc(client, anvil, "eth_call", call, "latest")
        absent = await rpc(client, anvil_prague, "eth_call", call, "latest")
    assert present == "0x" + "00" * 31 + "01"
    assert absent == "0x"
    assert anvil_prague.hardfork == "prague"


async def test_restart_on_the_same_port_keeps_state(tmp_path: Path) -> None:
    state = tmp_path / "chain-state.json"
    async with start_anvil(state_path=state, run_dir=tmp_path / "run") as first:
        async with httpx.AsyncClient() as client:
            receipt = await send_signed(client, first, to=first.accounts[1].address, data=b"")
        port = first.port
    assert state.exists()
    async with start_anvil(state_path=state, port=port, run_dir=tmp_path / "run") as second:
        assert second.rpc_url == first.rpc_url
        async with httpx.AsyncClient() as client:
            block = int(await rpc(client, second, "eth_blockNumber"), 16)
            tx_hash = receipt["transactionHash"]
            mined = await rpc(client, second, "eth_getTransactionReceipt", tx_hash)
    assert block >= int(receipt["blockNumber"], 16) == 1
    assert mined is not None
    assert mined["status"] == "0x1"


async def test_missing_binary_names_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTKEYS_NODE_MODULES", str(tmp_path))
    with pytest.raises(BinaryNotFound, match="make setup"):
        async with start_anvil():
            pytest.fail("must not start")


async def test_node_wrapper_is_used_without_the_platform_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only node_modules/.bin/anvil (the npm wrapper, which spawns the native
    # binary as its child): it must start, and stopping must end both.
    wrapper = repo_root() / "node_modules" / ".bin" / "anvil"
    modules = tmp_path / "node_modules"
    (modules / ".bin").mkdir(parents=True)
    (modules / ".bin" / "anvil").symlink_to(wrapper.resolve())
    monkeypatch.setenv("AGENTKEYS_NODE_MODULES", str(modules))
    async with start_anvil(run_dir=tmp_path / "run") as node:
        members = [p for p in live_processes() if p.session == node.pid]
        assert {p.name for p in members} >= {"node", "anvil"}
        async with httpx.AsyncClient() as client:
            assert int(await rpc(client, node, "eth_chainId"), 16) == node.chain_id
    assert [p for p in live_processes() if p.session == node.pid and p.state != "Z"] == []


async def test_unknown_hardfork_fails_with_the_log_tail(tmp_path: Path) -> None:
    with pytest.raises(ComponentStartFailed, match="anvil exited") as info:
        async with start_anvil(hardfork="no-such-fork", run_dir=tmp_path):
            pytest.fail("must not start")
    assert "no-such-fork" in info.value.reason


async def test_busy_fixed_port_fails_without_retry(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ComponentStartFailed, match=r"(?i)address already in use"):
            async with start_anvil(port=port, run_dir=tmp_path):
                pytest.fail("must not start")
