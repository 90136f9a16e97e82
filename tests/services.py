"""Helpers and fixtures that start our own services, for real, for any test directory.

One place for what tests/signer, tests/worker, tests/broker and tests/daemon each used to
start by themselves:

* :class:`Chain` and the ``chain`` fixture: a real anvil (``anvil`` from
  tests/stack_fixtures.py) with the agentkeys contracts deployed (one governance member,
  threshold 1, so tests can advance the K3 epoch), recorded in ``deployment.json``;
* ``pki``: a deployment PKI (CA and role certificates) for the mTLS services;
* :func:`seed_state` and :func:`start_signer`: the signer on a real 127.0.0.1 mTLS socket
  over a real sealer, seeded with the test-vector master secret and K3;
  :func:`start_sts_signer`: the same, issuing S3 credentials through SeaweedFS's STS;
* :func:`serve_issuer`: the OIDC issuer documents (discovery + JWKS) STS trusts, served
  by a real HTTP server built on agentkeys.service;
* :func:`build_broker` and :class:`RestartableBroker`: the real broker (real keys, SQLite
  store, SMTP delivery), the latter on a fixed port so a test can stop it and start it
  again at the same address.

The fixtures are plain functions here: a conftest.py registers one by importing it
(``from tests.services import chain, pki``), or tests/conftest.py may list this module in
``pytest_plugins``. Nothing here is a stand-in: every helper starts the real component.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agentkeys.broker import (
    BrokerKeys,
    BrokerService,
    CachedChainView,
    CapSettings,
    EmailSettings,
    OidcSettings,
    SiteSettings,
    SmtpMailer,
    SqliteStateStore,
)
from agentkeys.chain.client import ChainClient, ContractAddresses, account_from_key
from agentkeys.chain.deploy import deploy_all
from agentkeys.devstack import DEV_CLIENT_ID, DEV_ROLE_NAME, Anvil, IamConfig, SeaweedFS, pick_port
from agentkeys.devstack.smtp_sink import SmtpSink
from agentkeys.service import (
    PUBLIC,
    AuditSink,
    BoundAddress,
    Call,
    JsonObject,
    MemoryAudit,
    Route,
    ServerSettings,
    ServiceApp,
    mtls_client,
    serve_http,
)
from agentkeys.signer import KeyStore, Sealer, SignerService, SiwePin, StsExchanger
from agentkeys.signer import OidcSettings as SignerOidcSettings
from attest.seal import SoftwareSealer
from tests.service.conftest import Pki, make_pki

VECTORS = Path(__file__).resolve().parent / "vectors"
SIWE_PIN = SiwePin(domain="app.example", uri="https://app.example/login", chain_id=1)
"""The SIWE relying party test signers sign for (tests/signer/test_signer.py uses it)."""
RP_ID = "agentkeys.localhost"
ORIGIN = "https://agentkeys.localhost"
NO_CONTRACT = "0x" + "11" * 20  # a broker without a chain: addresses nothing answers at


# -- the chain ---------------------------------------------------------------------------


@dataclass
class Chain:
    """anvil with the agentkeys contracts; ``deployment_path`` is the deployment record."""

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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "deployment")


# -- the signer --------------------------------------------------------------------------


def kek_vectors() -> dict[str, list[dict[str, str]]]:
    data: dict[str, list[dict[str, str]]] = json.loads((VECTORS / "kek.json").read_text())
    return data


def vector_master_secret() -> bytes:
    return bytes.fromhex(kek_vectors()["v1_chain"][0]["master_secret_hex"])


def vector_k3() -> bytes:
    return bytes.fromhex(kek_vectors()["v2"][0]["k3_hex"])


async def seed_state(state_dir: Path, sealer: Sealer) -> None:
    """The vector master secret, and the vector K3 as epoch 1 (the chain's first epoch)."""
    await KeyStore.import_master_secret(state_dir, sealer, vector_master_secret())
    await KeyStore.import_k3(state_dir, sealer, 1, vector_k3())


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
    siwe: SiwePin | None = SIWE_PIN,
) -> RunningSigner:
    """The signer in ``nursery`` on a real mTLS socket (stopped with the nursery)."""
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
        oidc=SignerOidcSettings(issuer=issuer, audience=audience),
        audit=audit,
        epoch_poll_interval=epoch_poll_interval,
        siwe=siwe,
    )
    bound: BoundAddress = await nursery.start(service.serve)
    return RunningSigner(service, bound, audit, state_dir, sealer)


async def start_sts_signer(
    nursery: trio.Nursery,
    pki: Pki,
    chain: Chain,
    tmp_path: Path,
    store: SeaweedFS,
    issuer: Issuer,
    iam: IamConfig,
) -> RunningSigner:
    """The signer issuing S3 credentials through ``store``'s STS for ``issuer``'s tokens.

    Its state (seeded once under ``tmp_path``) and sealer survive a restart against a new
    store; the issuer's JWKS document becomes the signer's ``/oidc/jwks``.
    """
    sealer = SoftwareSealer.open(tmp_path / "seal" / "seal.key")
    state_dir = tmp_path / "signer-state"
    if not state_dir.exists():
        await seed_state(state_dir, sealer)
    signer = await start_signer(
        nursery,
        pki=pki,
        chain=chain,
        state_dir=state_dir,
        sealer=sealer,
        sts_endpoint=store.s3_endpoint,
        role_arn=iam.role(DEV_ROLE_NAME).arn,
        issuer=issuer.url,
        audience=DEV_CLIENT_ID,
    )
    async with signer.client(pki, "broker") as broker:
        issuer.documents["jwks"] = (await broker.get("/oidc/jwks")).json()
    return signer


# -- the OIDC issuer documents STS trusts ------------------------------------------------


@dataclass
class Issuer:
    url: str
    documents: dict[str, JsonObject]


async def serve_issuer(nursery: trio.Nursery) -> Issuer:
    """Discovery + JWKS of the issuer; the test puts the signer's JWKS into ``documents``."""
    documents: dict[str, JsonObject] = {}

    async def discovery(call: Call) -> JsonObject:
        return documents["discovery"]

    async def jwks(call: Call) -> JsonObject:
        return documents["jwks"]

    app = ServiceApp(
        "test-issuer",
        (
            Route("discovery", "GET", "/.well-known/openid-configuration", discovery),
            Route("jwks", "GET", "/.well-known/jwks.json", jwks),
        ),
        {"discovery": PUBLIC, "jwks": PUBLIC},
        audit=MemoryAudit(),
    )
    bound: BoundAddress = await nursery.start(partial(serve_http, app, ServerSettings(), tls=None))
    documents["discovery"] = {
        "issuer": bound.url,
        "jwks_uri": bound.url + "/.well-known/jwks.json",
        "id_token_signing_alg_values_supported": ["ES256"],
    }
    return Issuer(url=bound.url, documents=documents)


# -- the broker --------------------------------------------------------------------------


def chainless_client(http: httpx.AsyncClient, rpc_url: str) -> ChainClient:
    """A chain client for a broker run without contracts (heartbeat and sessions only)."""
    return ChainClient(http, rpc_url, ContractAddresses(NO_CONTRACT, NO_CONTRACT, NO_CONTRACT))


def build_broker(
    *,
    port: int,
    keys: BrokerKeys,
    store: SqliteStateStore,
    smtp: SmtpSink,
    chain: CachedChainView,
    chain_id: int = 31337,
    caps: CapSettings | None = None,
    audit: AuditSink | None = None,
    graceful_timeout: float | None = None,
    device_lifetime: int = 900,
    **extra: Any,
) -> BrokerService:
    """The real broker service for ``http://127.0.0.1:<port>`` (serve it in a nursery).

    ``device_lifetime``: the sidecars' device sessions (a test of renewals makes it short).
    ``extra`` goes to :class:`BrokerService` as is (``follow``, ``relay``, ``clock``).
    """
    settings = ServerSettings(port=port)
    if graceful_timeout is not None:
        settings = ServerSettings(port=port, graceful_timeout=graceful_timeout)
    return BrokerService(
        settings=settings,
        site=SiteSettings(
            public_url=f"http://127.0.0.1:{port}",
            rp_id=RP_ID,
            origin=ORIGIN,
            chain_id=chain_id,
            device_lifetime=device_lifetime,
        ),
        email=EmailSettings(smtp_port=smtp.port),
        caps=caps or CapSettings(),
        oidc=OidcSettings(),
        keys=keys,
        store=store,
        mailer=SmtpMailer(host=smtp.host, port=smtp.port, sender="broker@agentkeys.test"),
        chain=chain,
        audit=audit if audit is not None else MemoryAudit(),
        **extra,
    )


@dataclass
class RestartableBroker:
    """The real broker on a fixed port; ``stop``/``start`` keep its address and state."""

    nursery: trio.Nursery
    state_dir: Path
    smtp: SmtpSink
    port: int = field(default_factory=pick_port)
    rpc_url: str = "http://127.0.0.1:9"
    addresses: ContractAddresses | None = None
    caps: CapSettings = field(default_factory=CapSettings)
    device_lifetime: int = 900
    service: BrokerService | None = None
    _scope: trio.CancelScope | None = None
    _done: trio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        keys = await trio.to_thread.run_sync(BrokerKeys.load_or_create, self.state_dir)
        store = await SqliteStateStore.open(self.state_dir / "broker.sqlite3")
        rpc = httpx.AsyncClient(trust_env=False, timeout=5)
        if self.addresses is None:
            client = chainless_client(rpc, self.rpc_url)
        else:
            client = ChainClient(rpc, self.rpc_url, self.addresses)
        service = build_broker(
            port=self.port, keys=keys, store=store, smtp=self.smtp,
            chain=CachedChainView(client), caps=self.caps, graceful_timeout=0.5,
            device_lifetime=self.device_lifetime,
        )  # fmt: skip
        done = trio.Event()
        scope = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[Any]) -> None:
            with scope:
                try:
                    await service.serve(task_status=task_status)
                finally:
                    done.set()
                    await store.aclose()
                    await rpc.aclose()

        await self.nursery.start(run)
        self._scope, self._done = scope, done
        self.service = service

    async def stop(self) -> None:
        if self._scope is not None and self._done is not None:
            self._scope.cancel()
            await self._done.wait()
            self._scope = self._done = None
