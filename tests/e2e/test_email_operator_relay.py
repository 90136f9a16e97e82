"""An email-only operator (``init --email``, no wallet) changes scope from the CLI through the
broker's relay on the real dev stack: K10 + a fresh K11 assertion, verified by the broker and
again by the contract; the relay wallet pays (SPEC 6, issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from eth_account import Account

from agentkeys.chain import ChainClient, MasterAuthority, load_chain_profile
from agentkeys.chain import challenge as ch
from agentkeys.cli._common import (
    EXIT_OK,
    DeviceK10Signer,
    _dev_passkey,
    load_operator_state,
)
from agentkeys.omni import agent_omni, service_hash
from attest.device_key import SoftwareDeviceKey
from tests.e2e.conftest import Cli, DevStack


async def _register_agent(home: Path, label: str) -> str:
    """Test setup (agent create has no relay yet): the operator's own K10 and passkey
    authorise the agent device; a freshly funded stranger wallet sends it."""
    state = load_operator_state(home)
    profile = load_chain_profile(path=None)
    assert profile.addresses is not None
    master = SoftwareDeviceKey.open(home / "device" / "k10.pem", create=False)
    agent_key = SoftwareDeviceKey.open(home / "agents" / label / "k10.pem")
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        chain = ChainClient(http, profile.rpc_url, profile.addresses)
        payer = Account.create()
        await chain.rpc.call("anvil_setBalance", payer.address, hex(10**18))
        authority = MasterAuthority(
            bytes.fromhex(state.device_key_hash),
            DeviceK10Signer(master),
            _dev_passkey(state.passkey),
        )
        agent_signer = DeviceK10Signer(agent_key)
        actor = agent_omni(state.operator_omni, label)
        proof = await chain.k10_binding_proof(agent_signer, state.operator_omni, actor)
        mutation = await chain.prepare_add_agent_device(
            state.operator_omni,
            ch.NewAgent(label=label, k10_point=agent_signer.public_point, roles=1),
            proof,
            authority,
        )
        await chain.submit(mutation, payer)
    return actor


async def _scope(operator: str, actor: str) -> tuple[set[str], bool] | None:
    profile = load_chain_profile(path=None)
    assert profile.addresses is not None
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        entry = await ChainClient(http, profile.rpc_url, profile.addresses).get_scope(
            operator, actor
        )
    return None if entry is None else (set(entry.services), entry.read_only)


async def test_email_only_operator_changes_scope_through_the_relay(
    dev_stack: DevStack, tmp_path: Path, cli: Cli
) -> None:
    home = tmp_path / "home"
    code, out, err = await cli(
        "init", "--email", "relay-only@example.com", "--home", str(home),
        "--dev-authenticator", "--json",
    )  # fmt: skip
    assert code == EXIT_OK, err
    operator = json.loads(out)["agentkeys_actor_omni"]
    actor = await _register_agent(home, "bot")
    common = ["--home", str(home), "--dev-authenticator", "--json"]

    code, out, err = await cli("scope", "add", "bot", "openai", "github", *common)
    assert code == EXIT_OK, err
    assert json.loads(out)["tx_hash"].startswith("0x")
    openai, github = service_hash("openai").hex(), service_hash("github").hex()
    assert await _scope(operator, actor) == ({openai, github}, False)

    # a merge keeps the services the chain holds only as hashes
    code, out, err = await cli("scope", "add", "bot", "anthropic", "--read-only", *common)
    assert code == EXIT_OK, err
    anthropic = service_hash("anthropic").hex()
    assert await _scope(operator, actor) == ({openai, github, anthropic}, True)

    code, out, err = await cli("scope", "remove", "bot", "github", *common)
    assert code == EXIT_OK, err
    assert await _scope(operator, actor) == ({openai, anthropic}, True)
    code, out, err = await cli("scope", "remove", "bot", "--all", *common)
    assert code == EXIT_OK, err
    assert await _scope(operator, actor) is None
