"""``agentkeys init`` against the real dev stack (bootstrap stages 0-3, then the master device
on chain), ``whoami`` with the session expiry, the sidecar backend's store|read|list|teardown,
and the errors a user can cause in them (one line each, a non-zero exit code)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx

from agentkeys.chain import account_from_key
from agentkeys.cli._errors import (
    EXIT_CHAIN_UNREACHABLE,
    EXIT_NO_STATE,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
)
from agentkeys.devstack import pick_port
from agentkeys.omni import actor_omni_for_wallet
from tests.e2e.conftest import Cli, DevStack


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


async def test_init_then_the_sidecar_backend(dev_stack: DevStack, tmp_path: Path, cli: Cli) -> None:
    env = dev_stack.status.env
    wallet = account_from_key(secrets.token_bytes(32))
    async with httpx.AsyncClient(timeout=10) as http:
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
               "params": [wallet.address, hex(10**20)]}  # fmt: skip
        assert (await http.post(env["AGENTKEYS_CHAIN_RPC_URL"], json=rpc)).status_code == 200
    home = tmp_path / "home"
    wallet_file = tmp_path / "wallet.key"
    wallet_file.write_text(wallet.key.hex())
    wallet_file.chmod(0o600)
    init = ["init", "--email", "op@example.com", "--home", str(home),
            "--wallet-key-file", str(wallet_file), "--dev-authenticator"]  # fmt: skip

    code, out, err = await cli(*init, "--json")
    assert code == EXIT_OK, err
    done = json.loads(out)
    assert done["agentkeys_actor_omni"] == actor_omni_for_wallet(wallet.address)
    assert done["session_expires_at"] > time.time()
    assert "magic link sent" in err
    assert str(dev_stack.status.controls.maildir) in err  # type: ignore[union-attr]
    for name in ("operator.json", "session.jwt", "session.json", "chain.toml"):
        assert (home / name).stat().st_mode & 0o077 == 0

    code, out, err = await cli("whoami", "--home", str(home), "--json")
    assert code == EXIT_OK, err
    who = json.loads(out)
    assert who["session"]["expires_at"] == done["session_expires_at"]
    assert who["session"]["expired"] is False
    assert who["device_on_chain"].startswith("registered master")
    code, out, _ = await cli("whoami", "--home", str(home))
    assert "J1 at http://127.0.0.1:" in out

    # a second init on this home is refused before anything is sent
    code, _, err = await cli(*init)
    assert code == EXIT_REJECTED
    assert "already exists" in _one_line(err)

    sidecar = ["--credential-backend", "sidecar", "--home", str(home), "--json"]
    code, out, err = await cli("store", "openai", "--stdin", *sidecar, stdin=b"sk-master-key\n")
    assert code == EXIT_OK, err
    assert json.loads(out)["envelope_version"] == 4
    assert "sk-master-key" not in out
    code, out, err = await cli("read", "openai", *sidecar)
    assert code == EXIT_OK, err
    assert "secret" not in json.loads(out)  # only with --show-secret
    code, out, _ = await cli("read", "openai", "--show-secret", *sidecar)
    assert json.loads(out)["secret"] == "sk-master-key"
    code, out, _ = await cli("list", *sidecar)
    assert [s["service"] for s in json.loads(out)["services"]] == ["openai"]
    # an operator set up by init defaults to the sidecar backend (it was s3: --legacy-email)
    code, out, err = await cli("list", "--home", str(home), "--json")
    assert code == EXIT_OK, err
    assert [s["service"] for s in json.loads(out)["services"]] == ["openai"]
    assert "deprecated" not in err
    for other in ("github", "anthropic"):
        code, _, err = await cli(
            "store", other, "--stdin", *sidecar, stdin=b"key-" + other.encode()
        )
        assert code == EXIT_OK, err
    # issue 16: tearing down one service deleted every credential of the vault
    code, out, err = await cli("teardown", "github", *sidecar)
    assert code == EXIT_OK, err
    assert json.loads(out)["service"] == "github"
    code, out, _ = await cli("list", *sidecar)
    assert sorted(s["service"] for s in json.loads(out)["services"]) == ["anthropic", "openai"]
    code, out, _ = await cli("read", "anthropic", "--show-secret", *sidecar)
    assert json.loads(out)["secret"] == "key-anthropic"
    code, _, err = await cli("teardown", *sidecar)  # neither a service nor --all
    assert code == EXIT_USAGE
    code, out, err = await cli("teardown", "--all", *sidecar)
    assert code == EXIT_OK, err
    assert sorted(a["service"] for a in json.loads(out)["torn_down"]) == ["anthropic", "openai"]
    code, out, _ = await cli("list", *sidecar)
    assert json.loads(out)["services"] == []

    # an agent's vault: in scope with nothing stored says which command stores it; a list
    # cap names a service of the agent's scope (it used to name the placeholder "all")
    mutate = ["--home", str(home), "--wallet-key-file", str(wallet_file), "--dev-authenticator"]
    assert (await cli("agent", "create", "coder", *mutate))[0] == EXIT_OK
    assert (await cli("scope", "add", "coder", "openai", "github", *mutate))[0] == EXIT_OK
    code, _, err = await cli("read", "github", "--agent", "coder", *sidecar)
    assert code == EXIT_REJECTED
    refusal = json.loads(_one_line(err))
    assert refusal["error"] == "credential_not_found"
    assert "`agentkeys store github --credential-backend sidecar --agent" in refusal["reason"]
    code, _, err = await cli("store", "openai", "--stdin", "--agent", "coder", *sidecar,
                             stdin=b"sk-agent-key\n")  # fmt: skip
    assert code == EXIT_OK, err
    code, out, err = await cli("list", "--agent", "coder", *sidecar)
    assert code == EXIT_OK, err
    assert [s["service"] for s in json.loads(out)["services"]] == ["openai"]
    # text output: the value alone, or one line per fact (no Python dicts)
    code, out, _ = await cli("read", "openai", "--agent", "coder", "--show-secret",
                             "--credential-backend", "sidecar", "--home", str(home))  # fmt: skip
    assert out == "sk-agent-key\n"
    code, out, _ = await cli("read", "openai", "--agent", "coder", "--credential-backend",
                             "sidecar", "--home", str(home))  # fmt: skip
    assert "{'" not in out
    assert out.startswith("openai: 12 bytes at bots/")
    code, _, err = await cli("read", "openai", "--credential-backend", "sidecar", "--home",
                             str(home))  # fmt: skip
    assert code == EXIT_REJECTED
    assert "credential_not_found" in _one_line(err)
    # an agent this operator never created: the broker refuses the cap
    code, _, err = await cli("read", "openai", "--agent", "ghost", "--credential-backend",
                             "sidecar", "--home", str(home))  # fmt: skip
    assert code == EXIT_REJECTED
    assert "refused" in _one_line(err)


async def test_errors_a_user_can_cause(dev_stack: DevStack, tmp_path: Path, cli: Cli) -> None:
    fresh = tmp_path / "fresh"
    # no session: one line that says to run init
    code, _, err = await cli("read", "openai", "--credential-backend", "sidecar",
                             "--home", str(fresh))  # fmt: skip
    assert code == EXIT_NO_STATE
    assert "agentkeys init" in _one_line(err)
    # broker unreachable
    wallet_file = tmp_path / "wallet.key"
    wallet_file.write_text(secrets.token_bytes(32).hex())
    wallet_file.chmod(0o600)
    closed = f"http://127.0.0.1:{pick_port()}"
    code, _, err = await cli("init", "--email", "a@example.com", "--home", str(fresh),
                             "--broker-url", closed, "--wallet-key-file", str(wallet_file),
                             "--dev-authenticator")  # fmt: skip
    assert code != EXIT_OK
    line = _one_line(err)
    assert "unreachable" in line
    assert "dev up" in line
    # an upgrade without the legacy identity, a store with no secret
    code, _, err = await cli("device", "register", "--upgrade-from-v1", "--home",
                             str(tmp_path / "other"), "--wallet-key-file", str(wallet_file),
                             "--dev-authenticator")  # fmt: skip
    assert code == EXIT_USAGE
    assert "--legacy-email" in _one_line(err)
    code, _, err = await cli("store", "openai", "--stdin", "--credential-backend", "sidecar",
                             "--home", str(fresh))  # fmt: skip
    assert code != EXIT_OK
    assert "empty" in _one_line(err)
    # the chain unreachable: nothing is registered, one line says what to do
    cli.monkeypatch.setenv("AGENTKEYS_CHAIN_RPC_URL", f"http://127.0.0.1:{pick_port()}")
    third = ["--home", str(tmp_path / "third"), "--wallet-key-file", str(wallet_file)]
    code, _, err = await cli("device", "register", *third, "--dev-authenticator")
    assert code == EXIT_CHAIN_UNREACHABLE
    line = _one_line(err)
    assert "unreachable" in line
    assert "dev up" in line
