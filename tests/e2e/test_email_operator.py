"""An email-only operator through the CLI on the real dev stack: ``agentkeys init`` without a
wallet signs in with the signer-held K4 and registers the master device through the broker's
relay (K4 approves inside the signer); ``device register --upgrade-from-v1`` does the same for
a legacy operator, whose master wallet is the K4 of its v1 identity."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from agentkeys.chain import ChainClient, account_from_key, load_chain_profile
from agentkeys.cli._errors import EXIT_OK, EXIT_USAGE
from agentkeys.omni import actor_omni_for_wallet, identity_omni
from agentkeys.wallet import derive_k4_private_key
from tests.e2e.conftest import Cli, DevStack


async def _master_wallet(operator: str) -> str | None:
    profile = load_chain_profile(path=None)
    assert profile.addresses is not None
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        return await ChainClient(http, profile.rpc_url, profile.addresses).master_wallet(operator)


async def test_email_only_init_and_v1_upgrade(
    dev_stack: DevStack, tmp_path: Path, cli: Cli
) -> None:
    # init without a wallet option: the master wallet is the identity's K4
    home = tmp_path / "home"
    init = ["init", "--email", "mail-only@example.com", "--home", str(home),
            "--dev-authenticator", "--json"]  # fmt: skip
    code, out, err = await cli(*init)
    assert code == EXIT_OK, err
    done = json.loads(out)
    wallet = done["wallet"]
    assert done["agentkeys_actor_omni"] == actor_omni_for_wallet(wallet)
    assert await _master_wallet(done["agentkeys_actor_omni"]) == wallet
    code, out, err = await cli("whoami", "--home", str(home), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["device_on_chain"].startswith("registered master")

    # the same email on another machine (its mailbox alone) cannot even enrol a passkey:
    # a further passkey of the identity needs the enrolled one's approval (review finding 2),
    # and the other machine's passkey is not the enrolled one
    code, _, err = await cli(*init[:4], str(tmp_path / "other"), *init[5:])
    assert code != EXIT_OK
    assert "/v1/auth/passkey/register/verify (passkey_assertion_rejected" in err

    # a v1 operator upgrades without ever holding its K4 key
    legacy_email = "v1-mail@example.com"
    legacy = tmp_path / "legacy"
    code, out, err = await cli(
        "device", "register", "--upgrade-from-v1", "--legacy-email", legacy_email,
        "--home", str(legacy), "--dev-authenticator", "--json",
    )  # fmt: skip
    assert code == EXIT_OK, err
    upgraded = json.loads(out)
    identity = identity_omni("email", legacy_email)
    k4 = account_from_key(derive_k4_private_key(dev_stack.legacy_master_secret, identity))
    assert upgraded["legacy_identity_omni"] == identity
    assert upgraded["wallet"] == k4.address.lower()
    assert await _master_wallet(upgraded["operator_omni"]) == k4.address.lower()

    # without a wallet the email is needed to sign in
    code, _, err = await cli(
        "device", "register", "--legacy-identity-omni", identity,
        "--home", str(tmp_path / "x"), "--dev-authenticator",
    )  # fmt: skip
    assert code == EXIT_USAGE
    assert "--legacy-email" in err
