"""``agentkeys session status|renew|revoke`` on the real dev stack: the broker's word on the
home's J1, a revoked session refused by the relay (exit 3), and a renewal the way each kind of
operator signs in (email link + passkey with K4 for an email-only operator, with the
operator's own wallet's SIWE for a wallet operator) that the relay and the broker then take.
A wallet operator's mutations go through the relay only when it opts in (``submit``)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx

from agentkeys.chain import account_from_key
from agentkeys.cli._errors import EXIT_NO_STATE, EXIT_OK, EXIT_REJECTED
from agentkeys.omni import actor_omni_for_wallet
from tests.e2e.conftest import Cli, DevStack


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


async def test_email_only_operator_checks_revokes_and_renews_its_session(
    dev_stack: DevStack, tmp_path: Path, cli: Cli
) -> None:
    home = tmp_path / "home"
    common = ["--home", str(home), "--json"]
    code, out, err = await cli(
        "init", "--email", "renew@example.com", "--home", str(home), "--dev-authenticator",
        "--json",
    )  # fmt: skip
    assert code == EXIT_OK, err
    operator = json.loads(out)["agentkeys_actor_omni"]

    code, out, err = await cli("session", "status", *common)
    assert code == EXIT_OK, err
    status = json.loads(out)
    assert (status["status"], status["stage"], status["actor_omni"]) == ("valid", "j1", operator)
    assert (status["email"], status["signs_in_with"]) == ("renew@example.com", "email")
    assert 0 < status["seconds_left"] <= status["expires_at"] - time.time() + 1
    code, out, err = await cli("session", "status", "--home", str(home))
    assert code == EXIT_OK, err
    assert out.splitlines()[0] == "session     valid (j1)"
    assert "email link + passkey (K4 wallet)" in out

    code, out, err = await cli("session", "revoke", *common)
    assert code == EXIT_OK, err
    code, out, err = await cli("session", "status", *common)
    assert code == EXIT_NO_STATE
    assert json.loads(out)["status"] == "revoked"
    assert "session renew" in _one_line(err)
    # the relay refuses the revoked session before any passkey prompt matters: exit 3
    code, _, err = await cli("agent", "create", "bot", *common, "--dev-authenticator")
    assert code == EXIT_NO_STATE, err
    assert json.loads(_one_line(err))["error"] == "session_revoked"

    old_token = (home / "session.jwt").read_text()
    code, out, err = await cli("session", "renew", *common, "--dev-authenticator")
    assert code == EXIT_OK, err
    renewed = json.loads(out)
    assert (renewed["status"], renewed["actor_omni"]) == ("valid", operator)
    assert (home / "session.jwt").read_text() != old_token
    assert (home / "session.jwt").stat().st_mode & 0o077 == 0
    code, out, err = await cli("session", "status", *common)
    assert code == EXIT_OK, err
    assert json.loads(out)["status"] == "valid"
    code, out, err = await cli("agent", "create", "bot", *common, "--dev-authenticator")
    assert code == EXIT_OK, err
    assert json.loads(out)["registered"] is True


async def test_wallet_operator_renews_with_its_wallet(
    dev_stack: DevStack, tmp_path: Path, cli: Cli
) -> None:
    wallet = account_from_key(secrets.token_bytes(32))
    async with httpx.AsyncClient(timeout=10) as http:
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
               "params": [wallet.address, hex(10**20)]}  # fmt: skip
        rpc_url = dev_stack.status.env["AGENTKEYS_CHAIN_RPC_URL"]
        assert (await http.post(rpc_url, json=rpc)).status_code == 200
    home, wallet_file = tmp_path / "home", tmp_path / "wallet.key"
    wallet_file.write_text(wallet.key.hex())
    wallet_file.chmod(0o600)
    code, _, err = await cli(
        "init", "--email", "wallet-renew@example.com", "--home", str(home),
        "--wallet-key-file", str(wallet_file), "--dev-authenticator",
    )  # fmt: skip
    assert code == EXIT_OK, err
    common = ["--home", str(home), "--json", "--dev-authenticator"]

    # this operator's own wallet signs in: without it, a usage-level refusal before any mail
    code, _, err = await cli("session", "renew", *common)
    assert code != EXIT_OK
    assert "--wallet-key-file" in _one_line(err)
    code, out, err = await cli("session", "renew", *common, "--wallet-key-file", str(wallet_file))
    assert code == EXIT_OK, err
    renewed = json.loads(out)
    assert renewed["actor_omni"] == actor_omni_for_wallet(wallet.address)
    assert renewed["signs_in_with"] == "wallet"
    code, out, err = await cli("session", "status", "--home", str(home), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["wallet"] == wallet.address.lower()

    # mutations: this operator's wallet sends them, unless it opts into hosted relay
    code, _, err = await cli("agent", "create", "bot", *common)
    assert code != EXIT_OK
    assert "--wallet-key-file" in _one_line(err)
    state = json.loads((home / "operator.json").read_text())
    (home / "operator.json").write_text(json.dumps({**state, "submit": "relay"}))
    code, out, err = await cli("agent", "create", "bot", *common)
    assert code == EXIT_OK, err
    async with httpx.AsyncClient(timeout=10) as http:
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionByHash",
               "params": [json.loads(out)["tx_hash"]]}  # fmt: skip
        sent = (await http.post(rpc_url, json=rpc)).json()["result"]
    assert str(sent["from"]).lower() != wallet.address.lower()

    # another email signs in as another operator: refused, the stored session kept
    before = (home / "session.jwt").read_text()
    code, _, err = await cli(
        "session", "renew", *common, "--email", "someone-else@example.com",
        "--wallet-key-file", str(wallet_file),
    )  # fmt: skip
    assert code != EXIT_OK
    assert (home / "session.jwt").read_text() == before
    # a home that does not say how it signs in tries K4: that is another operator (the
    # email's K4 wallet), refused, its session ended at the broker, the stored one kept
    state = json.loads((home / "operator.json").read_text())
    del state["master_wallet"]
    (home / "operator.json").write_text(json.dumps(state))
    code, _, err = await cli("session", "renew", *common)
    assert code == EXIT_REJECTED, err
    assert "another operator" in err.strip().splitlines()[-1]  # after "magic link sent"
    assert (home / "session.jwt").read_text() == before
    audit = tmp_path / "state" / "broker" / "audit" / "broker.jsonl"
    rows = [json.loads(line) for line in audit.read_text().splitlines()]
    ended = [r["fields"]["subject"] for r in rows if r["route"] == "session_revoke"]
    assert len(ended) == 1
    assert ended[0] != renewed["actor_omni"]
