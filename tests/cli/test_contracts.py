"""``agentkeys contracts deploy`` against a real anvil, the deployer from a keystore."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from eth_account import Account

from agentkeys._files import write_private
from agentkeys.chain.client import ChainClient
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.cli import main
from agentkeys.cli._errors import EXIT_FAILED, EXIT_OK, EXIT_REJECTED
from agentkeys.devstack import Anvil


async def cli(argv: list[str]) -> int:
    return await trio.to_thread.run_sync(main, argv)


def _deploy_argv(anvil: Anvil, tmp_path: Path) -> list[str]:
    """``contracts deploy`` from a funded anvil account in an encrypted keystore (its
    password in a 0600 file), to ``tmp_path/deployment.json``; the chain id is left out."""
    deployer = anvil.accounts[0]
    keystore, password = tmp_path / "deployer.json", tmp_path / "pw"
    write_private(password, "correct horse")
    key = bytes.fromhex(deployer.private_key.removeprefix("0x"))
    write_private(keystore, json.dumps(Account.encrypt(key, "correct horse")))
    return [
        "contracts", "deploy", "--rpc-url", anvil.rpc_url, "--governance", deployer.address,
        "--threshold", "1", "--record", str(tmp_path / "deployment.json"),
        "--wallet-keystore", str(keystore), "--password-file", str(password),
    ]  # fmt: skip


async def test_deploy_writes_a_record_of_live_contracts_and_never_overwrites_it(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployer = anvil.accounts[0]
    record = tmp_path / "deployment.json"
    argv = [*_deploy_argv(anvil, tmp_path), "--chain-id", "31337"]
    assert await cli([*argv, "--json"]) == EXIT_OK
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    deployment = read_deployment_record(record)
    assert printed["contracts"]["SidecarRegistry"] == deployment.addresses.registry
    assert deployment.chain_id == 31337
    assert deployment.deployer.lower() == deployer.address.lower()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        client = ChainClient(http, anvil.rpc_url, deployment.addresses)
        assert await client.current_epoch() >= 0  # the epoch counter answers: code is there
    before = record.read_bytes()
    assert await cli(argv) == EXIT_REJECTED
    assert "never overwritten" in capsys.readouterr().err
    assert record.read_bytes() == before


async def test_a_wrong_chain_id_or_password_deploys_nothing(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployer = anvil.accounts[0]
    record = tmp_path / "deployment.json"
    argv = _deploy_argv(anvil, tmp_path)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        nonce = await ChainClient(http, anvil.rpc_url).rpc.call(
            "eth_getTransactionCount", deployer.address, "latest"
        )
        assert await cli([*argv, "--chain-id", "1"]) != EXIT_OK
        assert "expected 1" in capsys.readouterr().err
        write_private(tmp_path / "pw", "wrong")
        assert await cli([*argv, "--chain-id", "31337"]) == EXIT_FAILED
        assert "wrong password" in capsys.readouterr().err
        after = await ChainClient(http, anvil.rpc_url).rpc.call(
            "eth_getTransactionCount", deployer.address, "latest"
        )
    assert after == nonce  # no transaction was sent
    assert not record.exists()
