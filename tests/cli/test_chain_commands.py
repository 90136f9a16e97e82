"""agent create, scope add|remove|show, device revoke|list against a real anvil (SPEC 6, 7).

The operator is registered through the real contracts; mutations are approved with the
development passkey (``--dev-authenticator``), except where a test drives the passkey page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentkeys.cli._errors import (
    EXIT_CHAIN_UNREACHABLE,
    EXIT_FAILED,
    EXIT_NO_STATE,
    EXIT_OK,
    EXIT_PASSKEY,
    EXIT_REJECTED,
)
from agentkeys.devstack import pick_port
from agentkeys.omni import agent_omni, service_hash
from tests.cli.operator_env import OperatorEnv, cli, dev_operator, dev_passkey, write_private

DEV = ["--dev-authenticator"]


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out = capsys.readouterr().out.strip().splitlines()
    assert out, "no output"
    data = json.loads(out[-1])
    assert isinstance(data, dict)
    return data


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # exactly one clear line
    return err[0]


async def test_agent_scope_and_device_lifecycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with dev_operator(tmp_path) as op:
        args = [*op.wallet_args, *DEV]
        assert await cli(["agent", "create", "bot", *args, "--json"]) == EXIT_OK
        created = _json_out(capsys)
        actor = agent_omni(op.state.operator_omni, "bot")
        assert created["agent_omni"] == actor
        assert created["registered"] is True
        assert str(created["tx_hash"]).startswith("0x")
        agent_device = str(created["device_key_hash"])
        entry = await op.client.get_device(agent_device)
        assert entry is not None
        assert entry.actor_omni == actor
        assert not entry.revoked

        assert await cli(["scope", "add", "bot", "openai", "github", *args, "--json"]) == 0
        scope = _json_out(capsys)
        assert scope["services"] == ["github", "openai"]
        assert scope["read_only"] is False
        assert await op.client.is_service_in_scope(op.state.operator_omni, actor, "openai")

        # the same grant again changes nothing: refused with one line, exit 6
        assert await cli(["scope", "add", "bot", "openai", *args]) == EXIT_REJECTED
        assert "already in" in _err(capsys)

        assert await cli(["scope", "add", "bot", "anthropic", "--read-only", *args]) == 0
        text = capsys.readouterr().out
        assert "anthropic" in text
        assert "read-only" in text
        on_chain = await op.client.get_scope(op.state.operator_omni, actor)
        assert on_chain is not None
        assert on_chain.read_only is True
        assert len(on_chain.services) == 3

        assert await cli(["scope", "remove", "bot", "github", *args, "--json"]) == 0
        assert not await op.client.is_service_in_scope(op.state.operator_omni, actor, "github")
        assert (
            service_hash("openai").hex()
            in (
                await op.client.get_scope(op.state.operator_omni, actor)  # type: ignore[union-attr]
            ).services
        )
        capsys.readouterr()
        # names, not keccak hashes (the CLI keeps the names it granted: services.json)
        assert await cli(["scope", "show", "bot", "--home", str(op.home), "--json"]) == 0
        assert _json_out(capsys)["services"] == ["anthropic", "openai"]
        assert await cli(["scope", "show", "bot", "--home", str(op.home)]) == 0
        assert capsys.readouterr().out == "scope of bot: anthropic, openai (read-only)\n"

        assert await cli(["scope", "remove", "bot", "github", *args]) == EXIT_REJECTED
        assert "not in" in _err(capsys)

        assert await cli(["scope", "remove", "bot", "--all", *args, "--json"]) == 0
        assert _json_out(capsys)["services"] == []
        assert await op.client.get_scope(op.state.operator_omni, actor) is None

        assert await cli(["scope", "remove", "bot", "--all", *args]) == EXIT_REJECTED
        assert "no scope" in _err(capsys)

        assert await cli(["device", "list", "--home", str(op.home), "--json"]) == 0
        devices = _json_out(capsys)["devices"]
        assert isinstance(devices, list)
        assert {d["tier"] for d in devices} == {"master", "agent"}

        assert await cli(["device", "revoke", agent_device, *args, "--json"]) == 0
        assert _json_out(capsys)["revoked"] is True
        assert await cli(["device", "revoke", agent_device, *args]) == EXIT_REJECTED
        assert "already revoked" in _err(capsys)

        # the agent has no live device any more
        assert await cli(["scope", "add", "bot", "openai", *args]) == EXIT_REJECTED
        assert "unknown agent" in _err(capsys)


async def test_unknown_agent_and_own_device_guard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with dev_operator(tmp_path) as op:
        args = [*op.wallet_args, *DEV]
        nonce = await op.client.operator_nonce(op.state.operator_omni)
        assert await cli(["scope", "add", "ghost", "openai", *args]) == EXIT_REJECTED
        line = _err(capsys)
        assert "unknown agent" in line
        assert "agent create" in line

        assert await cli(["device", "revoke", op.state.device_key_hash, *args]) == EXIT_REJECTED
        assert "--this-device" in _err(capsys)
        assert await cli(["device", "revoke", "ab" * 32, *args]) == EXIT_REJECTED
        assert "device list" in _err(capsys)
        with pytest.raises(SystemExit) as usage:  # a usage error of argparse: exit 2
            await cli(["agent", "create", "Bad_Label", *args])
        assert usage.value.code == 2
        capsys.readouterr()
        # nothing reached the chain
        assert await op.client.operator_nonce(op.state.operator_omni) == nonce


async def test_wrong_passkey_is_refused_by_the_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with dev_operator(tmp_path) as op:
        args = [*op.wallet_args, *DEV]
        assert await cli(["agent", "create", "bot", *args]) == 0
        capsys.readouterr()
        # replace the development passkey by another key: the state and key agree, the chain not
        _, other = dev_passkey(op.home)
        from dataclasses import replace

        replace(op.state, passkey=other).write(op.home)
        assert await cli(["scope", "add", "bot", "openai", *args]) == EXIT_PASSKEY
        line = _err(capsys)
        assert "K11AssertionInvalid" in line
        assert "passkey" in line
        assert (
            await op.client.get_scope(
                op.state.operator_omni, agent_omni(op.state.operator_omni, "bot")
            )
            is None
        )


async def test_wallet_must_be_the_master_wallet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with dev_operator(tmp_path) as op:
        other = tmp_path / "other.key"
        write_private(other, op.anvil.accounts[2].private_key.encode())
        code = await cli(
            [
                "agent",
                "create",
                "bot",
                "--home",
                str(op.home),
                "--wallet-key-file",
                str(other),
                *DEV,
            ]
        )
        assert code == EXIT_FAILED
        assert "not the operator's master wallet" in _err(capsys)

        # no wallet at all
        assert await cli(["agent", "create", "bot", "--home", str(op.home), *DEV]) == EXIT_FAILED
        assert "--wallet-key-file" in _err(capsys)

        # a key file others can read is refused
        op.wallet_key_file.chmod(0o644)
        assert await cli(["agent", "create", "bot", *op.wallet_args, *DEV]) != EXIT_OK
        assert "chmod 600" in _err(capsys)


async def test_no_state_and_unreachable_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    assert await cli(["scope", "add", "bot", "openai", "--home", str(empty), *DEV]) == (
        EXIT_NO_STATE
    )
    assert "agentkeys init" in _err(capsys)

    async with dev_operator(tmp_path) as op:
        home: Path = op.home
        env: OperatorEnv = op
    # anvil is gone now; point the profile at a closed port to be sure
    monkeypatch.setenv("AGENTKEYS_CHAIN_RPC_URL", f"http://127.0.0.1:{pick_port()}")
    code = await cli(["scope", "add", "bot", "openai", *env.wallet_args, *DEV])
    assert code == EXIT_CHAIN_UNREACHABLE
    line = _err(capsys)
    assert "unreachable" in line
    assert "dev up" in line
    assert await cli(["device", "list", "--home", str(home), "--json"]) == (EXIT_CHAIN_UNREACHABLE)
    assert json.loads(capsys.readouterr().err)["error"] == "chain_unavailable"


async def test_scope_add_through_the_passkey_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --dev-authenticator the CLI serves the page; a client posts the assertion."""
    from tests.passkey_page.browser_sim import soft_browser

    async with dev_operator(tmp_path) as op:
        assert op.soft_passkey is not None
        browser = soft_browser(op.soft_passkey)
        assert (
            await cli(
                ["agent", "create", "bot", *op.wallet_args, "--no-browser"], passkey_opener=browser
            )
            == EXIT_OK
        )
        code = await cli(
            ["scope", "add", "bot", "openai", *op.wallet_args, "--no-browser", "--json"],
            passkey_opener=browser,
        )
        assert code == EXIT_OK
        assert _json_out(capsys)["services"] == ["openai"]
        actor = agent_omni(op.state.operator_omni, "bot")
        assert await op.client.is_service_in_scope(op.state.operator_omni, actor, "openai")

        # nobody answers the page: it expires, nothing is submitted
        async def ignore(url: str) -> None:
            return None

        nonce = await op.client.operator_nonce(op.state.operator_omni)
        code = await cli(
            ["scope", "add", "bot", "github", *op.wallet_args, "--passkey-timeout", "0.5"],
            passkey_opener=ignore,
        )
        assert code == EXIT_PASSKEY
        assert "run the command again" in _err(capsys)
        assert await op.client.operator_nonce(op.state.operator_omni) == nonce


async def test_whoami(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with dev_operator(tmp_path) as op:
        assert await cli(["whoami", "--home", str(op.home), "--json"]) == EXIT_OK
        data = _json_out(capsys)
        assert data["wallet"] == op.wallet.address.lower()
        assert data["agentkeys_actor_omni"] == op.state.operator_omni
        assert data["device_on_chain"] == "registered master, roles 7"
        assert (
            await cli(
                [
                    "device",
                    "revoke",
                    op.state.device_key_hash,
                    "--this-device",
                    *op.wallet_args,
                    *DEV,
                ]
            )
            == EXIT_OK
        )
        capsys.readouterr()
        assert await cli(["whoami", "--home", str(op.home)]) == EXIT_OK
        assert "device revoked" in capsys.readouterr().out
        # a revoked master can no longer authorise anything
        assert await cli(["agent", "create", "bot", *op.wallet_args, *DEV]) == EXIT_REJECTED
        assert "DeviceNotAuthorised" in _err(capsys)
    assert await cli(["whoami", "--home", str(op.home), "--offline"]) == EXIT_OK
    assert op.state.device_key_hash in capsys.readouterr().out


async def test_keystore_wallet_and_no_secret_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from eth_account import Account

    from tests.cli.operator_env import build_parser

    # a secret can never be given on the command line, not even by an abbreviated option
    for argv in (
        ["agent", "create", "bot", "--wallet-key", "0x01"],
        ["agent", "create", "bot", "--password", "hunter2"],
    ):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(argv)
        assert info.value.code == 2
    capsys.readouterr()

    async with dev_operator(tmp_path) as op:
        keystore = tmp_path / "keystore.json"
        keystore.write_text(
            json.dumps(Account.encrypt(op.wallet.key, "pw", kdf="pbkdf2", iterations=1000))
        )
        password = tmp_path / "pw.txt"
        write_private(password, b"pw\n")
        base = ["agent", "create", "bot", "--home", str(op.home), *DEV]
        wrong = tmp_path / "wrong.txt"
        write_private(wrong, b"nope\n")
        assert (
            await cli([*base, "--wallet-keystore", str(keystore), "--password-file", str(wrong)])
            == EXIT_FAILED
        )
        line = _err(capsys)
        assert "wrong password" in line
        assert "nope" not in line
        code = await cli(
            [*base, "--wallet-keystore", str(keystore), "--password-file", str(password), "--json"]
        )
        assert code == EXIT_OK
        assert _json_out(capsys)["registered"] is True


async def test_agent_list_and_revoke_by_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with dev_operator(tmp_path) as op:
        args = [*op.wallet_args, *DEV]
        home = ["--home", str(op.home)]
        assert await cli(["agent", "list", *home]) == EXIT_OK
        assert "no agents" in capsys.readouterr().out
        assert await cli(["agent", "create", "coder", *args]) == EXIT_OK
        assert await cli(["scope", "add", "coder", "openai", *args]) == EXIT_OK
        capsys.readouterr()
        assert await cli(["agent", "list", *home, "--json"]) == EXIT_OK
        (agent,) = _json_out(capsys)["agents"]
        assert agent["label"] == "coder"
        assert agent["services"] == ["openai"]
        assert len(agent["live_devices"]) == 1
        assert await cli(["agent", "list", *home]) == EXIT_OK
        assert capsys.readouterr().out == "coder  live  scope: openai\n"

        assert await cli(["agent", "revoke", "coder", *args, "--json"]) == EXIT_OK
        revoked = _json_out(capsys)
        assert [d["revoked"] for d in revoked["devices"]] == [True]
        entry = await op.client.get_device(agent["live_devices"][0])
        assert entry is not None
        assert entry.revoked
        assert await cli(["agent", "list", *home]) == EXIT_OK
        assert capsys.readouterr().out == "coder  revoked  scope: openai\n"
        assert await cli(["agent", "revoke", "coder", *args]) == EXIT_REJECTED
        assert "already revoked" in _err(capsys)
        assert await cli(["agent", "revoke", "ghost", *args]) == EXIT_REJECTED
        assert "unknown" in _err(capsys)
