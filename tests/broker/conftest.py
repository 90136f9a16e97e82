"""Broker fixtures: a real anvil with the contracts, a real SMTP sink, the broker on a socket.

The broker runs in-process on a real 127.0.0.1 port with its real SQLite store, real keys,
the real chain client and watcher, and SMTP delivery into the sink (built by
tests/services.py's ``build_broker``, shared with the daemon tests). Its clock is the wall
clock plus an offset the tests may move (expiry paths).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account.signers.local import LocalAccount

from agentkeys.broker import (
    BrokerKeys,
    BrokerService,
    CachedChainView,
    CapSettings,
    PostgresStateStore,
    SqliteStateStore,
)
from agentkeys.broker._relay import Relay
from agentkeys.chain import challenge as ch
from agentkeys.chain.client import ChainClient, account_from_key
from agentkeys.chain.deploy import Deployment, deploy_all
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer
from agentkeys.chain.watcher import ChainWatcher
from agentkeys.devstack import Anvil, Postgres, pick_port
from agentkeys.devstack.smtp_sink import SmtpSink, run_smtp_sink
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet
from agentkeys.service import BoundAddress, MemoryAudit
from tests.broker._answers import AnswerCheck
from tests.services import ORIGIN as ORIGIN
from tests.services import RP_ID as RP_ID
from tests.services import build_broker, chainless_client

ALL_ROLES = 7
BACKENDS = ("sqlite", "postgres")

StoreOpener = Callable[[], Any]


@pytest.fixture(params=BACKENDS)
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: Postgres
) -> AsyncIterator[StoreOpener]:
    """Opens state stores on one fresh database of the parametrised backend (each call is
    another connection to the same state, as another replica would have); all are closed
    afterwards."""
    opened: list[SqliteStateStore | PostgresStateStore] = []
    name = ""
    if request.param == "postgres":
        name = f"t_{secrets.token_hex(6)}"
        dsn = await postgres.create_database(name)

    async def open_one() -> SqliteStateStore | PostgresStateStore:
        store: SqliteStateStore | PostgresStateStore
        if request.param == "sqlite":
            store = await SqliteStateStore.open(tmp_path / "state" / "broker.sqlite3")
        else:
            store = await PostgresStateStore.open(dsn, password=postgres.password)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.aclose()
    if name:
        await postgres.drop_database(name)


@pytest.fixture
async def state_store(open_store: StoreOpener) -> Any:
    """One store of the parametrised backend (``open_store``)."""
    return await open_store()


class Clock:
    """Wall clock plus an adjustable offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Chain:
    anvil: Anvil
    client: ChainClient
    deployment: Deployment
    accounts: list[LocalAccount]


@dataclass
class Device:
    """A K10 key we hold the private half of."""

    key: ec.EllipticCurvePrivateKey
    signer: SoftwareK10Signer

    @classmethod
    def generate(cls) -> Device:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(key, SoftwareK10Signer(key))

    @property
    def point(self) -> bytes:
        return self.signer.public_point

    @property
    def hash(self) -> str:
        return self.signer.device_key_hash.hex()


@dataclass
class Operator:
    wallet: LocalAccount
    omni: str
    master: Device
    passkey: SoftAuthenticator

    @property
    def authority(self) -> MasterAuthority:
        return MasterAuthority(self.master.signer.device_key_hash, self.master.signer, self.passkey)


def new_master(device: Device, passkey: SoftAuthenticator, roles: int = ALL_ROLES) -> Any:
    import hashlib

    return ch.NewMaster(
        k10_point=device.point,
        k11_credential_id_hash=hashlib.sha256(passkey.credential_id).digest(),
        k11_point=passkey.public_point,
        rp_id_hash=passkey.rp_id_hash,
        roles=roles,
    )


async def register_operator(chain: Chain, wallet: LocalAccount) -> Operator:
    """First-master registration of ``wallet``'s operator (sovereign)."""
    device = Device.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    mutation = await chain.client.prepare_register_first_master(
        wallet.address, new_master(device, passkey), device.signer, passkey
    )
    await chain.client.submit(mutation, wallet)
    return Operator(wallet, actor_omni_for_wallet(wallet.address), device, passkey)


@pytest.fixture
async def chain(anvil: Anvil) -> AsyncIterator[Chain]:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        client = ChainClient(http, anvil.rpc_url)
        accounts = [account_from_key(a.private_key) for a in anvil.accounts]
        deployment = await deploy_all(
            client, accounts[0], governance=[accounts[0].address], threshold=1
        )
        yield Chain(anvil, client, deployment, accounts)


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    async with run_smtp_sink() as sink:
        yield sink


@dataclass
class RunningBroker:
    service: BrokerService
    bound: BoundAddress
    audit: MemoryAudit
    clock: Clock
    http: httpx.AsyncClient
    state_dir: Path
    view: CachedChainView
    answers: AnswerCheck
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.bound.url

    def denials(self, error: str) -> list[Any]:
        return [e for e in self.audit.events if e.error == error and e.outcome == "denied"]


StartBroker = Callable[..., Any]


@pytest.fixture
async def start_broker(
    nursery: trio.Nursery, tmp_path: Path, smtp: SmtpSink
) -> AsyncIterator[StartBroker]:
    """A factory: start a broker against ``rpc_url`` / ``deployment`` (watcher optional)."""
    clients: list[httpx.AsyncClient] = []
    stores: list[SqliteStateStore] = []
    running: list[tuple[trio.CancelScope, trio.Event]] = []
    counter = [0]

    async def start(
        *,
        chain: Chain | None,
        rpc_url: str | None = None,
        relay_account: LocalAccount | None = None,
        caps: CapSettings | None = None,
    ) -> RunningBroker:
        counter[0] += 1
        port = pick_port()
        state_dir = tmp_path / f"broker-{counter[0]}"
        keys = await trio.to_thread.run_sync(BrokerKeys.load_or_create, state_dir)
        store = await SqliteStateStore.open(state_dir / "broker.sqlite3")
        stores.append(store)
        rpc_http = httpx.AsyncClient(trust_env=False, timeout=5)
        clients.append(rpc_http)
        if chain is not None:
            client = ChainClient(rpc_http, chain.anvil.rpc_url, chain.deployment.addresses)
        else:
            assert rpc_url is not None
            client = chainless_client(rpc_http, rpc_url)
        view = CachedChainView(client)
        follow = None
        if chain is not None:
            watcher = ChainWatcher(
                client.rpc,
                chain.deployment.addresses,
                start_block=chain.deployment.block_number,
                poll_interval=0.05,
            )

            async def follow(*, task_status: trio.TaskStatus[None]) -> None:
                await view.follow(watcher, poll_interval=0.05, task_status=task_status)

        relay = Relay(client, relay_account) if relay_account is not None else None
        audit = MemoryAudit()
        clock = Clock()
        chain_id = await client.chain_id() if chain is not None else 31337
        service = build_broker(
            port=port, keys=keys, store=store, smtp=smtp, chain=view, chain_id=chain_id,
            caps=caps, audit=audit, follow=follow, relay=relay, clock=clock,
        )  # fmt: skip

        async def run(*, task_status: trio.TaskStatus[BoundAddress]) -> None:
            done = trio.Event()
            with trio.CancelScope() as scope:
                running.append((scope, done))
                try:
                    await service.serve(task_status=task_status)
                finally:
                    done.set()

        bound: BoundAddress = await nursery.start(run)
        answers = AnswerCheck()
        http = httpx.AsyncClient(
            base_url=bound.url,
            trust_env=False,
            timeout=30,
            event_hooks={"response": [answers]},
        )
        clients.append(http)
        return RunningBroker(service, bound, audit, clock, http, state_dir, view, answers)

    yield start
    for scope, done in running:
        scope.cancel()
        await done.wait()
    for client in clients:
        await client.aclose()
    for store in stores:
        await store.aclose()


@pytest.fixture
async def broker(chain: Chain, start_broker: StartBroker) -> RunningBroker:
    running: RunningBroker = await start_broker(chain=chain)
    return running


@pytest.fixture
async def operator(chain: Chain) -> Operator:
    """Operator A (dev account 1) with its first master device registered."""
    return await register_operator(chain, chain.accounts[1])
