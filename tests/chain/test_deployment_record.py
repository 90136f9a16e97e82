"""The deployment record file: what Deployment.write writes reads back; anything else is refused
strictly (unknown members, wrong types, duplicate keys), naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentkeys.chain.client import ContractAddresses
from agentkeys.chain.deploy import Deployment, read_deployment_record
from agentkeys.chain.errors import ChainConfigError

_DEPLOYMENT = Deployment(
    chain_id=31337,
    addresses=ContractAddresses(
        registry="0x" + "11" * 20, scope="0x" + "22" * 20, epoch_counter="0x" + "33" * 20
    ),
    block_number=7,
    deployer="0x" + "44" * 20,
    artifact_sha256={"ScopeContract": "ab" * 32, "SidecarRegistry": "cd" * 32},
)


def test_a_written_record_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "deployment.json"
    _DEPLOYMENT.write(path)
    assert read_deployment_record(path) == _DEPLOYMENT


def _record(**changes: object) -> dict[str, object]:
    return {**_DEPLOYMENT.to_json(), **changes}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (json.dumps(_record(comment="x")), "unknown option(s) in [top level]: comment"),
        (json.dumps(_record(chain_id=True)), "chain_id:"),  # bool is not int
        (json.dumps(_record(block_number="7")), "block_number:"),
        (json.dumps(_record(contracts={"SidecarRegistry": "0x"})), "contracts.ScopeContract is"),
        (json.dumps(_record(artifact_sha256={"x": 1})), "artifact_sha256.x:"),
        (json.dumps(_record(version=2)), "unsupported deployment record version"),
        (json.dumps(_record())[:-1] + ', "chain_id": 1}', "duplicate key 'chain_id'"),
        ("[1]", "the record must be a JSON object"),
        ('{"version": NaN}', "NaN is not allowed"),
    ],
)
def test_a_malformed_record_is_refused_naming_the_file(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "deployment.json"
    path.write_text(text)
    with pytest.raises(ChainConfigError) as caught:
        read_deployment_record(path)
    assert caught.value.reason.startswith(f"deployment record {path}: ")
    assert reason in caught.value.reason


def test_a_missing_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ChainConfigError, match="cannot read deployment record"):
        read_deployment_record(tmp_path / "nothing.json")
