"""An email-only operator (``init --email``, no wallet) creates and revokes agents, changes
scope and revokes devices from the CLI through the broker's relay on the real dev stack: K10 +
a fresh K11 assertion, verified by the broker and again by the contract; the relay wallet pays
(SPEC 6, issue 16). The refusals (no fresh K11, a replayed assertion, someone else's session)
change nothing on chain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx

from agentkeys.chain import ChainClient, DeviceEntry, MasterAuthority, load_chain_profile
from agentkeys.chain import challenge as ch
from agentkeys.cli._bootstrap import load_session
from agentkeys.cli._errors import EXIT_OK, EXIT_REJECTED
from agentkeys.cli._operator_session import DeviceK10Signer, RecordingAuthority, _dev_passkey
from agentkeys.cli._operator_state import load_operator_state
from agentkeys.omni import agent_omni, device_key_hash_from_point, service_hash
from attest.device_key import SoftwareDeviceKey
from tests.e2e.conftest import Cli, DevStack


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
    common = ["--home", str(home), "--dev-authenticator", "--json"]
    code, out, err = await cli("agent", "create", "bot", *common)
    assert code == EXIT_OK, err
    actor = json.loads(out)["agent_omni"]

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


async def _chain() -> tuple[httpx.AsyncClient, ChainClient]:
    profile = load_chain_profile(path=None)
    assert profile.addresses is not None
    http = httpx.AsyncClient(timeout=10, trust_env=False)
    return http, ChainClient(http, profile.rpc_url, profile.addresses)


async def _device(device_key_hash: str) -> DeviceEntry | None:
    http, chain = await _chain()
    async with http:
        return await chain.get_device(device_key_hash)


async def _init(cli: Cli, home: Path, address: str) -> str:
    code, out, err = await cli(
        "init", "--email", address, "--home", str(home), "--dev-authenticator", "--json"
    )
    assert code == EXIT_OK, err
    return str(json.loads(out)["agentkeys_actor_omni"])


async def test_email_only_operator_creates_and_revokes_agents_through_the_relay(
    dev_stack: DevStack, tmp_path: Path, cli: Cli
) -> None:
    home = tmp_path / "home"
    operator = await _init(cli, home, "agents-relay@example.com")
    common = ["--home", str(home), "--dev-authenticator", "--json"]

    code, out, err = await cli("agent", "create", "bot", *common)
    assert code == EXIT_OK, err
    created = json.loads(out)
    assert created["registered"] is True
    assert created["agent_omni"] == agent_omni(operator, "bot")
    entry = await _device(created["device_key_hash"])
    assert entry is not None
    assert (entry.operator_omni, entry.actor_omni, entry.revoked) == (
        operator, created["agent_omni"], False,
    )  # fmt: skip
    http, chain = await _chain()
    async with http:
        tx = await chain.rpc.call("eth_getTransactionByHash", created["tx_hash"])
    assert str(tx["from"]).lower() != json.loads((home / "operator.json").read_text())["wallet"]

    code, out, err = await cli("agent", "list", "--home", str(home), "--json")
    assert code == EXIT_OK, err
    assert [a["label"] for a in json.loads(out)["agents"]] == ["bot"]

    code, out, err = await cli("agent", "revoke", "bot", *common)
    assert code == EXIT_OK, err
    assert [d["revoked"] for d in json.loads(out)["devices"]] == [True]
    entry = await _device(created["device_key_hash"])
    assert entry is not None
    assert entry.revoked

    # device revoke, by hash, for a second agent
    code, out, err = await cli("agent", "create", "other", *common)
    assert code == EXIT_OK, err
    other = json.loads(out)["device_key_hash"]
    code, out, err = await cli("device", "revoke", other, *common)
    assert code == EXIT_OK, err
    assert json.loads(out)["revoked"] is True
    entry = await _device(other)
    assert entry is not None
    assert entry.revoked
    # the operator's own master device stays live
    state = load_operator_state(home)
    master = await _device(state.device_key_hash)
    assert master is not None
    assert not master.revoked


async def _agent_request(home: Path, label: str) -> dict[str, Any]:
    """What ``agent create`` sends to /v1/relay/agent: the agent's K10 binding proof and this
    master's K10 signature + passkey assertion over the current challenge."""
    state = load_operator_state(home)
    master = SoftwareDeviceKey.open(home / "device" / "k10.pem", create=False)
    agent_key = SoftwareDeviceKey.open(home / "agents" / label / "k10.pem")
    recorded = RecordingAuthority(
        DeviceK10Signer(master), _dev_passkey(state.passkey), state.passkey.credential_id
    )
    agent_signer = DeviceK10Signer(agent_key)
    http, chain = await _chain()
    async with http:
        proof = await chain.k10_binding_proof(
            agent_signer, state.operator_omni, agent_omni(state.operator_omni, label)
        )
        await chain.prepare_add_agent_device(
            state.operator_omni,
            ch.NewAgent(label=label, k10_point=agent_signer.public_point, roles=1),
            proof,
            MasterAuthority(bytes.fromhex(state.device_key_hash), recorded, recorded),
        )
    return {
        "operator_omni": state.operator_omni,
        "device_key_hash": state.device_key_hash,
        **recorded.relay_fields(),
        "label": label,
        "agent_k10_public_key": agent_signer.public_point.hex(),
        "agent_k10_proof": proof.hex(),
    }


async def _relay(home: Path, route: str, body: dict[str, Any]) -> httpx.Response:
    session = load_session(home)
    async with httpx.AsyncClient(base_url=session.broker_url, trust_env=False) as http:
        return await http.post(
            f"/v1/relay/{route}", json=body, headers={"authorization": f"Bearer {session.token}"}
        )


async def _nonce(operator: str) -> int:
    http, chain = await _chain()
    async with http:
        return await chain.operator_nonce(operator)


async def test_the_relay_refuses_without_a_fresh_k11_or_the_operators_session(
    dev_stack: DevStack, tmp_path: Path, cli: Cli
) -> None:
    home, stranger = tmp_path / "home", tmp_path / "stranger"
    operator = await _init(cli, home, "refusals@example.com")
    await _init(cli, stranger, "stranger@example.com")

    first = await _agent_request(home, "first")
    answer = await _relay(home, "agent", first)
    assert answer.status_code == 200, answer.text
    nonce = await _nonce(operator)

    # a replayed assertion: K10 signs the new challenge, the passkey answer is the old one
    replay = await _agent_request(home, "second")
    replay["assertion"] = first["assertion"]
    answer = await _relay(home, "agent", replay)
    assert (answer.status_code, answer.json()["error"]) == (403, "relay_k11_invalid")
    # K10 alone: no passkey assertion over this change
    k10_only = await _agent_request(home, "second")
    k10_only["assertion"] = {"id": first["assertion"]["id"], "type": "public-key"}
    answer = await _relay(home, "agent", k10_only)
    assert (answer.status_code, answer.json()["error"]) == (403, "relay_k11_invalid")
    # the same request sent again after it was taken
    answer = await _relay(home, "agent", first)
    assert answer.status_code == 403, answer.text
    # someone else's J1 (a valid session of another operator) presenting this one's approval
    fresh = await _agent_request(home, "second")
    answer = await _relay(stranger, "agent", fresh)
    assert (answer.status_code, answer.json()["error"]) == (403, "operator_mismatch")
    second_key = fresh["agent_k10_public_key"]
    assert await _nonce(operator) == nonce
    assert await _device(device_key_hash_from_point(bytes.fromhex(second_key))) is None
    # each denial has its audit row, naming the operator and the approving device
    rows = [json.loads(line) for line in (tmp_path / "state" / "broker" / "audit" / "broker.jsonl")
            .read_text().splitlines()]  # fmt: skip
    denied = [r for r in rows if r["route"] == "relay_agent" and r["outcome"] == "denied"]
    assert [r["error"] for r in denied] == [
        "relay_k11_invalid", "relay_k11_invalid", "relay_rejected", "operator_mismatch",
    ]  # fmt: skip
    assert {r["fields"]["approving_device"] for r in denied} == {first["device_key_hash"]}

    # the CLI with another operator's session: refused by the broker, exit 6, nothing changed
    for name in ("session.json", "session.jwt"):
        shutil.copy(stranger / name, home / name)
    code, _, err = await cli("agent", "create", "third", "--home", str(home), "--dev-authenticator")
    assert code == EXIT_REJECTED, err
    assert "operator_mismatch" in err
    code, _, err = await cli(
        "device", "revoke", _device_of(first), "--home", str(home), "--dev-authenticator",
        "--json",
    )  # fmt: skip
    assert code == EXIT_REJECTED, err
    assert json.loads(err)["error"] == "operator_mismatch"
    assert await _nonce(operator) == nonce


def _device_of(request: dict[str, Any]) -> str:
    return device_key_hash_from_point(bytes.fromhex(request["agent_k10_public_key"]))
