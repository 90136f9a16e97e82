"""run_signer from a TOML configuration with the real wiring (chain record, sealer, audit file)."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pytest
import trio

from agentkeys.config import ConfigError, load_config
from agentkeys.service import mtls_client
from agentkeys.signer import SignerConfig, SignerService, run_signer
from tests.service.conftest import Pki
from tests.signer.conftest import Chain


def _write_config(tmp_path: Path, pki: Pki, chain: Chain, *, tls: bool = True) -> Path:
    tls_lines = (
        f'tls_cert = "{pki.cert("signer")}"\n'
        f'tls_key = "{pki.key("signer")}"\n'
        f'tls_client_ca = "{pki.ca}"\n'
        if tls
        else ""
    )
    text = (
        "[signer]\n"
        + tls_lines
        + 'audit_log = "audit/signer.jsonl"\n'
        + "[keys]\n"
        + 'state_dir = "state"\n'
        + 'seal_backend = "software"\n'
        + 'seal_key_file = "seal/seal.key"\n'
        + "[chain]\n"
        + f'rpc_url = "{chain.anvil.rpc_url}"\n'
        + f'deployment = "{chain.deployment_path}"\n'
        + "[oidc]\n"
        + 'issuer = "http://127.0.0.1:9/issuer"\n'
        + "[sts]\n"
        + 'endpoint = "http://127.0.0.1:9"\n'
        + 'role_arn = "arn:aws:iam::role/none"\n'
    )
    path = tmp_path / "signer.toml"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


async def test_run_signer_from_config(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path
) -> None:
    home = tmp_path / "signer-home"
    home.mkdir(mode=0o700)
    path = _write_config(home, pki, chain)
    config = load_config(
        SignerConfig, path=path, environ={"AGENTKEYS_CHAIN_EPOCH_POLL_INTERVAL": "60"}
    )
    assert config.chain.epoch_poll_interval == 60
    service: SignerService = await nursery.start(partial(run_signer, config))
    assert service.current_epoch == 1
    # the state was created sealed, and its files are private
    state = home / "state"
    assert sorted(p.name for p in state.iterdir()) == [
        "k3-1.sealed",
        "master.sealed",
        "oidc.sealed",
    ]
    assert all((p.stat().st_mode & 0o077) == 0 for p in state.iterdir())
    assert service.bound is not None
    async with mtls_client(
        base_url=service.bound.url, ca=pki.ca, cert=pki.cert("worker"), key=pki.key("worker")
    ) as worker:
        r = await worker.get("/status")
    assert r.json() == {"current_epoch": 1, "epochs": [1]}
    rows = [json.loads(x) for x in (home / "audit" / "signer.jsonl").read_text().splitlines()]
    assert rows[-1]["route"] == "status"
    assert rows[-1]["peer_role"] == "worker"


def test_config_without_tls_is_refused(pki: Pki, tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    text = (
        '[keys]\nstate_dir = "s"\n[chain]\nrpc_url = "x"\ndeployment = "d"\n'
        '[oidc]\nissuer = "i"\n[sts]\nendpoint = "e"\nrole_arn = "r"\n'
    )
    path = home / "signer.toml"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="mutual TLS"):
        load_config(SignerConfig, path=path, environ={})
