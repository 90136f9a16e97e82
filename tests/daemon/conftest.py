"""Daemon fixtures: a real upstream HTTP server, the real broker, worker, signer, chain, S3.

* ``upstream``: the devstack's stand-in OpenAI API on a real 127.0.0.1 port, checking
  ``REAL_KEY``.
* :class:`Broker` (tests/services.py's ``RestartableBroker``): the real broker (real keys,
  SQLite store, SMTP sink) on a fixed free port, so a test can stop it and start it again
  at the same address.
* ``stack``: the daemon with its only credential source, :class:`BrokerWorkerSource`, over
  the whole real stack (:func:`open_real_parts`): anvil + contracts, SeaweedFS with STS,
  the signer, a worker trusting the broker's cap keys, the broker on the same chain, and an
  agent whose chain scope holds the policy's services, each with :data:`REAL_KEY` stored.
  It is the expensive fixture: tests using it drive many scenarios per start, and
  :func:`open_daemon` starts further (cheap) daemons over the same running parts.
* ``gate``: the daemon with the same real source pointed at the real broker (no chain: its
  device is registered nowhere, so it never gets a session) and at a worker that is never
  reached: for refusals that happen before any credential is fetched (caller, route, size,
  header checks). A fetch through it is refused (503 ``session_unavailable``).
* Each daemon signs in with its own K10 (:class:`DeviceSession`), never an operator J1.
* Either daemon listens on the Unix socket under ``$XDG_RUNTIME_DIR`` and a loopback port.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agentkeys._files import write_private
from agentkeys.broker import CapSettings
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.clients.signer import SignerClient
from agentkeys.daemon import BrokerWorkerSource, Daemon, DaemonAddress, HttpBrokerProbe
from agentkeys.daemon.config import (
    AuditSection,
    BrokerSection,
    CacheSection,
    CredentialsSection,
    DaemonConfig,
    EnvSection,
    IdentitySection,
    ListenSection,
    PolicySection,
)
from agentkeys.daemon.session import DeviceSession
from agentkeys.devstack.smtp_sink import run_smtp_sink
from agentkeys.devstack.upstream import DemoUpstream, run_upstream
from agentkeys.jwks import JsonWebKeySet
from agentkeys.service import BoundAddress, MemoryAudit, ServerSettings
from agentkeys.worker import StaticCapKeys, StorageSettings, WorkerCore, WorkerService
from attest.device_key import SoftwareDeviceKey
from bench._stack import key_pem
from tests.service.conftest import Pki
from tests.services import Chain, RestartableBroker, chain, pki
from tests.stack_fixtures import TEST_BUCKET
from tests.worker.conftest import AUDIENCE, Device, PreTransition, add_agent, open_stack
from tests.worker.conftest import Stack as WorkerStack

SHARED_FIXTURES = (chain, pki)  # tests/services.py's fixtures, registered here
POLICY_SERVICES = ("openai", "minutely", "hourly", "budget")
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens
REAL_KEY = "sk-real-upstream-key-0123456789abcdef"  # the key the upstream accepts

OPERATOR = "0a" * 32
ACTOR = "0b" * 32
SELF_EXE = os.readlink("/proc/self/exe")


def policy_text(upstream_url: str, *, exe: str = SELF_EXE, uid: int | None = None) -> str:
    uid = os.getuid() if uid is None else uid
    services = list(POLICY_SERVICES)
    return f"""
[[caller]]
name = "tester"
uid = {uid}
exe = "{exe}"
services = {services!r}

[service.openai]
upstream = "{upstream_url}"
allow = ["POST /v1/chat/completions", "GET /v1/models"]

[service.minutely]
upstream = "{upstream_url}"
allow = ["GET /v1/models"]
per_minute = 2

[service.hourly]
upstream = "{upstream_url}"
allow = ["GET /v1/models"]
per_hour = 2

[service.budget]
upstream = "{upstream_url}"
allow = ["POST /v1/chat/completions"]
daily_usd = 0.003

[service.budget.prices]
default = {{ prompt = 100.0, completion = 160.0 }}
"""


Broker = RestartableBroker  # the real broker on a fixed port (tests/services.py)


@dataclass
class RealParts:
    """The real stack behind a daemon: chain, S3, signer, worker, broker and an agent."""

    ws: WorkerStack
    device: Device  # the daemon's K10 (an agent's, or the operator master's)
    broker: Broker
    worker_url: str
    key_path: Path  # ``device``'s key as a 0600 PEM file (the daemon's K10)

    @property
    def operator_omni(self) -> str:
        return self.device.operator_omni

    @property
    def actor_omni(self) -> str:
        return self.device.actor_omni

    def as_master(self, tmp: Path) -> RealParts:
        """The same parts, with the operator's master device as the daemon's K10."""
        master = self.ws.operator.master
        key_path = tmp / "device-master" / "k10.pem"
        write_private(key_path, key_pem(master.key))
        return dataclasses.replace(self, device=master, key_path=key_path)

    def source(
        self, broker: httpx.AsyncClient, worker: httpx.AsyncClient, **kwargs: Any
    ) -> BrokerWorkerSource:
        """The daemon's real credential source over these parts, with its own (not yet
        signed in) device session as ``source.session``; ``kwargs`` go to the source."""
        key = SoftwareDeviceKey.open(self.key_path, create=False)
        return BrokerWorkerSource(
            broker=broker,
            worker=worker,
            device_key=key,
            session=DeviceSession(
                broker=broker,
                device_key=key,
                operator_omni=self.operator_omni,
                actor_omni=self.actor_omni,
            ),
            operator_omni=self.operator_omni,
            actor_omni=self.actor_omni,
            **kwargs,
        )


@asynccontextmanager
async def signed_in(source: BrokerWorkerSource) -> AsyncIterator[BrokerWorkerSource]:
    """``source`` with its device session's duty running (after its first sign-in)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(source.session.run)
        yield source
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_real_parts(
    nursery: trio.Nursery,
    pki: Pki,
    chain: Chain,
    tmp: Path,
    *,
    services: Sequence[str] = POLICY_SERVICES,
    pre_transition: PreTransition | None = None,
    device_lifetime: int = 900,
) -> AsyncIterator[RealParts]:
    """Start the real stack and an agent with ``services`` in its chain scope.

    Each service gets :data:`REAL_KEY` stored by the master. With ``services`` empty no
    agent is made: the daemon acts as the operator's master on its own vault (the data
    ``pre_transition`` wrote, e.g. legacy v1 objects). ``device_lifetime``: the broker's
    device sessions (the daemon renews its own).
    """
    async with open_stack(nursery, pki, chain, tmp, pre_transition=pre_transition) as ws:
        device = ws.operator.master
        if services:
            device = await add_agent(ws.chain, ws.operator, "coder", list(services),
                                     read_only=False)  # fmt: skip
            for service in services:
                stored = await ws.store_credential(
                    ws.operator.master, service, REAL_KEY.encode(), actor_omni=device.actor_omni
                )
                assert stored.status == 200, stored.body
        deployment = read_deployment_record(ws.chain.deployment_path)
        async with run_smtp_sink() as smtp:
            broker = Broker(
                nursery=nursery, state_dir=tmp / "broker", smtp=smtp,
                rpc_url=ws.chain.anvil.rpc_url, addresses=deployment.addresses,
                caps=CapSettings(audience=AUDIENCE), device_lifetime=device_lifetime,
            )  # fmt: skip
            await broker.start()
            assert broker.service is not None
            broker_keys: JsonWebKeySet = broker.service.keys.cap.published
            async with ws.signer.client(ws.pki, "worker") as signer_http:
                core = WorkerCore(
                    audience=AUDIENCE,
                    cap_keys=StaticCapKeys(broker_keys),
                    chain=ws.chain.client,
                    signer=SignerClient(signer_http),
                    storage=StorageSettings(bucket=TEST_BUCKET, endpoint=ws.store.s3_endpoint),
                )
                worker = WorkerService(core=core, settings=ServerSettings(), audit=MemoryAudit())
                bound: BoundAddress = await nursery.start(worker.serve)
                key_path = tmp / "device" / "k10.pem"
                write_private(key_path, key_pem(device.key))
                yield RealParts(ws, device, broker, bound.url, key_path)
                worker.shutdown()
            await broker.stop()


@dataclass
class Stack:
    daemon: Daemon
    address: DaemonAddress
    upstream: DemoUpstream
    broker: Broker
    config: DaemonConfig
    events: trio.MemorySendChannel[Any]
    tmp: Path
    stopped: trio.Event = field(default_factory=trio.Event)  # set once serve() returned
    real: RealParts | None = None  # None: the ``gate`` daemon (no credential reachable)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client over the daemon's Unix socket (this process is the caller)."""
        transport = httpx.AsyncHTTPTransport(uds=self.address.socket_path)
        return httpx.AsyncClient(
            transport=transport,
            base_url="http://agentkeys.localhost",
            trust_env=False,
            timeout=20,
            **kwargs,
        )

    def audit_rows(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for line in self.config.audit_path.read_bytes().splitlines()]


async def wait_until(predicate: Any, *, limit: float = 20.0) -> None:
    """Poll ``predicate`` (a guard against hanging, not a timing assertion)."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 (state changes in other tasks, no event)
            await trio.sleep(0.02)


async def wait_ready(client: httpx.AsyncClient, *, limit: float = 20.0) -> None:
    """Poll the daemon's ``/readyz`` until it answers 200 (a hang guard, not a timer).

    Fails naming the last answer when it is still not ready after ``limit`` seconds.
    """
    last = "no answer"
    with trio.move_on_after(limit):
        while True:
            answer = await client.get("/readyz")
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text}"
            await trio.sleep(0.05)
    pytest.fail(f"/readyz not ready after {limit} s: {last}")


@pytest.fixture
async def upstream() -> AsyncIterator[DemoUpstream]:
    app = DemoUpstream(key=REAL_KEY)
    async with run_upstream(app):
        yield app


@pytest.fixture
async def broker(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Broker]:
    async with run_smtp_sink() as smtp:
        running_broker = Broker(nursery=nursery, state_dir=tmp_path / "broker", smtp=smtp)
        await running_broker.start()
        yield running_broker
        await running_broker.stop()


def make_config(tmp: Path, broker_url: str, *, unreachable_after: float = 60.0) -> DaemonConfig:
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    config_home = Path(os.environ["XDG_CONFIG_HOME"])
    return DaemonConfig(
        listen=ListenSection(
            socket=runtime / "agentkeys-proxy.sock",
            tcp_port=0,
            graceful_timeout=10.0,
            max_body_bytes=256 * 1024,
            body_timeout=2.0,
        ),
        policy=PolicySection(path=config_home / "agentkeys" / "policy.toml", reload_interval=0.05),
        broker=BrokerSection(
            url=broker_url,
            heartbeat_interval=0.05,
            heartbeat_timeout=2.0,
            unreachable_after=unreachable_after,
        ),
        credentials=CredentialsSection(worker_url=UNREACHABLE),
        identity=IdentitySection(operator_omni=OPERATOR, actor_omni=ACTOR),
        cache=CacheSection(ttl=300, negative_ttl=0.01),
        audit=AuditSection(path=tmp / "state" / "audit.log"),
        env=EnvSection(path=config_home / "agentkeys" / "env"),
    )


@asynccontextmanager
async def serving(
    nursery: trio.Nursery,
    config: DaemonConfig,
    source: BrokerWorkerSource,
    *,
    device_key_hash: str,
    signed_in: bool = True,
    **daemon_options: Any,
) -> AsyncIterator[tuple[Daemon, DaemonAddress, trio.MemorySendChannel[Any], trio.Event]]:
    """The daemon in-process (chain events fed by the test, unless ``daemon_options`` give
    ``events``), with the source's device session as its duty; ready once the broker
    answered and (``signed_in``) the daemon signed in."""
    send, receive = trio.open_memory_channel[Any](16)
    assert config.broker.url is not None
    async with httpx.AsyncClient(
        base_url=config.broker.url, trust_env=False, timeout=5
    ) as probe_http:
        daemon = Daemon(
            config=config,
            source=source,
            probe=HttpBrokerProbe(probe_http),
            device_key_hash=device_key_hash,
            **{"session": source.session, "events": receive, **daemon_options},
        )
        done = trio.Event()

        async def run(*, task_status: trio.TaskStatus[DaemonAddress]) -> None:
            try:
                await daemon.serve(task_status=task_status)
            finally:
                done.set()

        address: DaemonAddress = await nursery.start(run)
        await wait_until(daemon.liveness.reachable)
        if signed_in:
            await wait_until(lambda: source.session.problem() is None)
        yield daemon, address, send, done
        daemon.stop()
        with trio.fail_after(15):
            await done.wait()


@pytest.fixture
async def gate(
    nursery: trio.Nursery, tmp_path: Path, upstream: DemoUpstream, broker: Broker
) -> AsyncIterator[Stack]:
    """The daemon with its real source; the broker refuses every mint, no worker is reached."""
    async with open_gate(nursery, tmp_path, upstream, broker) as stack:
        yield stack


@asynccontextmanager
async def open_gate(
    nursery: trio.Nursery,
    tmp_path: Path,
    upstream: DemoUpstream,
    broker: Broker,
    *,
    max_connections: int = 1024,
    identity: IdentitySection | None = None,
    **daemon_options: Any,
) -> AsyncIterator[Stack]:
    """The ``gate`` daemon, with its listener's connection bound set (and, for chain tests,
    another identity and further :class:`Daemon` arguments)."""
    config = make_config(tmp_path, broker.url)
    config = dataclasses.replace(
        config,
        listen=dataclasses.replace(config.listen, max_connections=max_connections),
        identity=identity or config.identity,
    )
    write_private(config.policy_path, policy_text(upstream.url))
    async with (
        httpx.AsyncClient(base_url=broker.url, trust_env=False, timeout=5) as broker_http,
        httpx.AsyncClient(base_url=UNREACHABLE, trust_env=False, timeout=5) as worker_http,
    ):
        key = SoftwareDeviceKey.open(tmp_path / "device" / "k10.pem")
        source = BrokerWorkerSource(
            broker=broker_http,
            worker=worker_http,
            device_key=key,
            session=DeviceSession(broker=broker_http, device_key=key),
            operator_omni=OPERATOR,
            actor_omni=ACTOR,
        )
        async with serving(
            nursery,
            config,
            source,
            device_key_hash="0c" * 32,
            signed_in=False,
            **daemon_options,
        ) as (d, a, e, x):
            yield Stack(d, a, upstream, broker, config, e, tmp_path, x)


@asynccontextmanager
async def open_daemon(
    nursery: trio.Nursery,
    tmp: Path,
    upstream: DemoUpstream,
    real: RealParts,
    *,
    unreachable_after: float = 60.0,
) -> AsyncIterator[Stack]:
    """A daemon (cheap) over already running real parts (expensive); audit log under ``tmp``."""
    base = make_config(tmp, real.broker.url, unreachable_after=unreachable_after)
    config = dataclasses.replace(
        base,
        credentials=CredentialsSection(worker_url=real.worker_url),
        identity=IdentitySection(operator_omni=real.operator_omni, actor_omni=real.actor_omni),
    )
    write_private(config.policy_path, policy_text(upstream.url))
    async with (
        httpx.AsyncClient(base_url=real.broker.url, trust_env=False, timeout=10) as b_http,
        httpx.AsyncClient(base_url=real.worker_url, trust_env=False, timeout=10) as w_http,
    ):
        source = real.source(b_http, w_http)
        dkh = real.device.device_key_hash
        async with serving(nursery, config, source, device_key_hash=dkh) as (d, a, e, x):
            yield Stack(d, a, upstream, real.broker, config, e, tmp, x, real)


@pytest.fixture
async def stack(
    nursery: trio.Nursery, tmp_path: Path, upstream: DemoUpstream, pki: Pki, chain: Chain
) -> AsyncIterator[Stack]:
    """The daemon over the whole real stack: every credential is minted and fetched.

    ``stack.real`` stays up for the whole test: :func:`open_daemon` starts more daemons
    over it (e.g. with other settings) at the cost of a daemon, not of a stack.
    """
    async with (
        open_real_parts(nursery, pki, chain, tmp_path) as real,
        open_daemon(nursery, tmp_path, upstream, real) as running,
    ):
        yield running


DAEMON_MAIN = (  # `agentkeys daemon ...` as its own process
    "import argparse, sys\n"
    "from agentkeys.cli import daemon\n"
    "p = argparse.ArgumentParser(); s = p.add_subparsers(); daemon.register(s)\n"
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
)


def write_daemon_toml(
    tmp: Path,
    broker_url: str,
    *,
    worker_url: str = UNREACHABLE,
    operator: str = OPERATOR,
    actor: str = ACTOR,
) -> Path:
    """A daemon.toml under ``tmp/etc`` (policy, socket, K10 under ``tmp``; no session: the
    daemon signs in with its K10)."""
    path = tmp / "etc" / "daemon.toml"
    write_private(
        path,
        f"""
[listen]
socket = "{tmp}/run/agentkeys-proxy.sock"
[policy]
path = "{tmp}/etc/policy.toml"
reload_interval = 0.1
[broker]
url = "{broker_url}"
heartbeat_interval = 0.1
[credentials]
worker_url = "{worker_url}"
[identity]
operator_omni = "{operator}"
actor_omni = "{actor}"
[device]
backend = "software"
key_path = "{tmp}/device/k10.pem"
[audit]
path = "{tmp}/state/audit.log"
[env]
path = "{tmp}/xdg/agentkeys/env"
""",
    )
    return path
