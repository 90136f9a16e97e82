"""The fault harness writes service configs that load back to the same objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeys._files import write_private
from agentkeys.broker.config import BrokerConfig
from agentkeys.config import load_config
from agentkeys.devstack.up import broker_config
from agentkeys.service import ServerSettings
from agentkeys.signer import ChainSettings as SignerChainSettings
from agentkeys.signer import KeysSettings, OidcSettings, SignerConfig, StsSettings
from agentkeys.worker.config import (
    CapSettings,
    ChainSettings,
    SignerSettings,
    StorageConfig,
    WorkerConfig,
)
from bench._children import config_toml


def _configs(tmp: Path) -> list[object]:
    pem = {name: (tmp / f"{name}.crt", tmp / f"{name}.key") for name in ("ca", "broker")}
    worker = WorkerConfig(
        worker=ServerSettings(port=4242, audit_log=tmp / "audit.jsonl"),
        caps=CapSettings(audience="agentkeys-worker", jwks_url="http://127.0.0.1:1/jwks.json"),
        chain=ChainSettings(rpc_url="http://127.0.0.1:2", deployment=tmp / "deployment.json"),
        signer=SignerSettings(
            url="https://127.0.0.1:3", ca=tmp / "ca.crt", cert=tmp / "w.crt", key=tmp / "w.key"
        ),
        storage=StorageConfig(bucket="b", endpoint="http://127.0.0.1:4"),
    )
    signer = SignerConfig(
        signer=ServerSettings(
            port=4243, tls_cert=tmp / "s.crt", tls_key=tmp / "s.key", tls_client_ca=tmp / "ca.crt"
        ),
        keys=KeysSettings(
            state_dir=tmp / "keys", seal_backend="software", seal_key_file=tmp / "seal.key"
        ),
        chain=SignerChainSettings(rpc_url="http://127.0.0.1:2", deployment=tmp / "d.json"),
        oidc=OidcSettings(issuer="http://127.0.0.1:5"),
        sts=StsSettings(endpoint="http://127.0.0.1:4", role_arn="arn:aws:iam::role/x"),
    )
    broker = broker_config(
        state=tmp,
        port=4244,
        chain_id=31337,
        rpc_url="http://127.0.0.1:2",
        record=tmp / "d.json",
        smtp=("127.0.0.1", 25),
        signer_url="https://127.0.0.1:3",
        pki=pem,
        passkey_port=4245,
    )
    return [worker, signer, broker]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["worker", "signer", "broker"])
def test_config_toml_loads_back_equal(tmp_path: Path, index: int) -> None:
    config = _configs(tmp_path)[index]
    path = tmp_path / "config.toml"
    write_private(path, config_toml(config))
    loaded = load_config(type(config), path=path)
    assert loaded == config
    assert isinstance(loaded, WorkerConfig | SignerConfig | BrokerConfig)
