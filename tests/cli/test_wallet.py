"""A wallet operator's gas: ``wallet create``, ``dev fund`` and the error naming the address."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from eth_account import Account

from agentkeys.cli import main
from agentkeys.cli._errors import EXIT_FAILED, EXIT_NO_STATE, EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from tests.cli.operator_env import dev_operator, write_private


async def _agentkeys(*argv: str) -> int:
    return await trio.to_thread.run_sync(lambda: main(list(argv)))


async def test_wallet_create_writes_a_keystore_that_opens_with_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "pw"
    write_private(password, b"correct horse\n")
    keystore = tmp_path / "wallets" / "operator.json"
    argv = ["wallet", "create", "--keystore", str(keystore), "--password-file", str(password)]
    assert await _agentkeys(*argv, "--json") == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert keystore.stat().st_mode & 0o777 == 0o600
    key = Account.decrypt(json.loads(keystore.read_text()), "correct horse")
    assert Account.from_key(key).address == out["address"]
    before = keystore.read_bytes()
    # never over an existing keystore: refused, the old wallet kept
    assert await _agentkeys(*argv) == EXIT_REJECTED
    assert "exists" in capsys.readouterr().err
    assert keystore.read_bytes() == before


async def test_an_unfunded_wallet_is_named_and_dev_fund_funds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with dev_operator(tmp_path) as op:
        address = op.wallet.address
        await op.client.rpc.call("anvil_setBalance", address, "0x0")
        create = ["agent", "create", "bot", *op.wallet_args, "--dev-authenticator"]
        assert await _agentkeys(*create) == EXIT_FAILED
        err = capsys.readouterr().err
        assert f"fund {address}" in err
        assert f"agentkeys dev fund {address}" in err

        rpc = ["--rpc-url", op.anvil.rpc_url]
        assert await _agentkeys("dev", "fund", address.lower(), "--eth", "3", *rpc) == EXIT_OK
        assert f"{address} holds 3 ETH" in capsys.readouterr().out
        assert await op.client.rpc.call("eth_getBalance", address, "latest") == hex(3 * 10**18)
        assert await _agentkeys(*create) == EXIT_OK

        assert await _agentkeys("dev", "fund", "0x1234", *rpc) == EXIT_USAGE
        no_stack = ["--state-dir", str(tmp_path / "none")]
        assert await _agentkeys("dev", "fund", address, *no_stack) == EXIT_NO_STATE
        assert "agentkeys dev up" in capsys.readouterr().err
