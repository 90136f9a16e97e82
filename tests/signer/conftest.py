"""Signer fixtures: a deployment PKI, real anvil with the contracts, a real sealer, the signer.

The signer runs in-process on a real 127.0.0.1 mTLS socket; callers use real
role certificates. The chain is a real anvil with the agentkeys contracts
deployed (one governance member, threshold 1) so tests can advance the K3
epoch on chain.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.deploy import deploy_all
from agentkeys.devstack import Anvil
from agentkeys.service import BoundAddress, MemoryAudit, ServerSettings, mtls_client
from agentkeys.signer import KeyStore, OidcSettings, Sealer, SignerService, StsExchanger
from attest.seal import SoftwareSealer
from tests.service.conftest import Pki, make_pki

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def kek_vectors() -> dict[str, list[dict[str, str]]]:
    data: dict[str, list[dict[str, str]]] = json.loads((VECTORS / "kek.json").read_text())
    return data


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("signer-pki") / "deployment")


@dataclass
class Chain:
    client: ChainClient
    anvil: Anvil
    deployment_path: Path

    async def advance_epoch(self) -> int:
        governor = account_from_key(self.anvil.accounts[0].private_key)
        new_epoch = await self.client.current_epoch() + 1
        mutation = await self.client.prepare_advance_epoch(new_epoch, [governor])
        await self.client.submit(mutation, governor)
        return new_epoch


@pytest.fixture
async def chain(anvil: Anvil, tmp_path: Path) -> AsyncIterator[Chain]:
    record = tmp_path / "deployment.json"
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        client = ChainClient(http, anvil.rpc_url)
        deployer = account_from_key(anvil.accounts[0].private_key)
        await deploy_all(
            client, deployer, governance=[deployer.address], threshold=1, record_path=record
        )
        yield Chain(client=client, anvil=anvil, deployment_path=record)


@dataclass
class RunningSigner:
    service: SignerService
    bound: BoundAddress
    audit: MemoryAudit
    state_dir: Path
    sealer: Sealer

    def client(self, pki: Pki, role: str) -> httpx.AsyncClient:
        return mtls_client(
            base_url=self.bound.url, ca=pki.ca, cert=pki.cert(role), key=pki.key(role)
        )


def vector_master_secret() -> bytes:
    return bytes.fromhex(kek_vectors()["v1_chain"][0]["master_secret_hex"])


def vector_k3() -> bytes:
    return bytes.fromhex(kek_vectors()["v2"][0]["k3_hex"])


async def seed_state(state_dir: Path, sealer: Sealer) -> None:
    """The vector master secret, and the vector K3 as epoch 1 (the chain's first epoch)."""
    await KeyStore.import_master_secret(state_dir, sealer, vector_master_secret())
    await KeyStore.import_k3(state_dir, sealer, 1, vector_k3())


async def start_signer(
    nursery: trio.Nursery,
    *,
    pki: Pki,
    chain: Chain,
    state_dir: Path,
    sealer: Sealer,
    epoch_poll_interval: float = 3600,  # tests drive refreshes through requests
    sts_endpoint: str = "http://127.0.0.1:9",
    role_arn: str = "arn:aws:iam::role/none",
    issuer: str = "http://127.0.0.1:9/issuer",
    audience: str = "agentkeys-s3",
) -> RunningSigner:
    keys = await KeyStore.open(state_dir, sealer)
    audit = MemoryAudit()
    service = SignerService(
        settings=ServerSettings(
            tls_cert=pki.cert("signer"), tls_key=pki.key("signer"), tls_client_ca=pki.ca
        ),
        keys=keys,
        epochs=chain.client,
        sts=StsExchanger(
            endpoint=sts_endpoint, role_arn=role_arn, region="us-east-1", duration_seconds=900
        ),
        oidc=OidcSettings(issuer=issuer, audience=audience),
        audit=audit,
        epoch_poll_interval=epoch_poll_interval,
    )
    bound: BoundAddress = await nursery.start(service.serve)
    return RunningSigner(service, bound, audit, state_dir, sealer)


@pytest.fixture
def sealer(tmp_path: Path) -> SoftwareSealer:
    return SoftwareSealer.open(tmp_path / "seal" / "seal.key")


@pytest.fixture
async def signer(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, sealer: SoftwareSealer
) -> RunningSigner:
    state_dir = tmp_path / "signer-state"
    await seed_state(state_dir, sealer)
    return await start_signer(nursery, pki=pki, chain=chain, state_dir=state_dir, sealer=sealer)
