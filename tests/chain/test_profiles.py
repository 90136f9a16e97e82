"""Chain profiles and deployment records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agentkeys.chain.artifacts import ARTIFACT_DIR
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.chain.errors import ChainConfigError
from agentkeys.chain.profiles import load_chain_profile
from tests.chain.conftest import Chain


def test_anvil_is_the_default_profile() -> None:
    profile = load_chain_profile(environ={})
    assert (profile.name, profile.rpc_url, profile.chain_id, profile.confirmations) == (
        "anvil",
        "http://127.0.0.1:8545",
        31337,
        0,
    )
    assert profile.addresses is None


def test_heima_needs_explicit_endpoint() -> None:
    with pytest.raises(ChainConfigError):
        load_chain_profile(environ={"AGENTKEYS_CHAIN_PROFILE": "heima"})
    profile = load_chain_profile(
        environ={
            "AGENTKEYS_CHAIN_PROFILE": "heima-paseo",
            "AGENTKEYS_CHAIN_RPC_URL": "https://rpc.example",
            "AGENTKEYS_CHAIN_CHAIN_ID": "4242",
        }
    )
    assert (profile.rpc_url, profile.chain_id, profile.confirmations) == (
        "https://rpc.example",
        4242,
        3,
    )


@pytest.mark.parametrize(
    "environ",
    [
        {"AGENTKEYS_CHAIN_PROFILE": "mainnet-of-nowhere"},
        {"AGENTKEYS_CHAIN_REGISTRY": "0x" + "11" * 20},
        {"AGENTKEYS_CHAIN_RPC_URL": "file:///etc/passwd"},
        {"AGENTKEYS_CHAIN_CONFIRMATIONS": "-1"},
    ],
)
def test_bad_profiles_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ChainConfigError):
        load_chain_profile(environ=environ)


async def test_deployment_record_round_trips_into_a_profile(
    chain_default: Chain, tmp_path: Path
) -> None:
    chain = chain_default
    record_path = tmp_path / "deployment.json"
    chain.deployment.write(record_path)
    record = read_deployment_record(record_path)
    assert record == chain.deployment
    for name, digest in record.artifact_sha256.items():
        assert hashlib.sha256((ARTIFACT_DIR / f"{name}.json").read_bytes()).hexdigest() == digest
    for address in (
        record.addresses.registry,
        record.addresses.scope,
        record.addresses.epoch_counter,
    ):
        code = await chain.client.rpc.call("eth_getCode", address, "latest")
        assert len(code) > 2

    config = tmp_path / "agentkeys.toml"
    config.write_text(
        f'[chain]\nrpc_url = "{chain.anvil.rpc_url}"\ndeployment = "deployment.json"\n'
    )
    profile = load_chain_profile(path=config, environ={})
    assert profile.addresses == record.addresses
    assert profile.start_block == record.block_number
    await chain.client.check_chain_id(profile.chain_id)

    with pytest.raises(ChainConfigError):
        load_chain_profile(path=config, environ={"AGENTKEYS_CHAIN_CHAIN_ID": "1"})
    data = json.loads(record_path.read_text())
    data["version"] = 99
    record_path.write_text(json.dumps(data))
    with pytest.raises(ChainConfigError):
        read_deployment_record(record_path)
