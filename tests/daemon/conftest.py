"""Daemon fixtures: a real upstream HTTP server, the real broker (heartbeat target), the daemon.

* ``upstream``: tests/daemon/upstream.py on a real 127.0.0.1 port, checking the real key.
* The broker: the real :class:`agentkeys.broker.BrokerService` (real keys, SQLite store,
  SMTP sink) on a fixed free port, so a test can stop it and start it again at the same
  address. It runs without a chain (the heartbeat needs only ``/v1/health``).
* Credentials: the INTERIM :class:`FileCredentialSource` (a 0600 file holding the real
  key) keeps these request-path tests fast; test_e2e.py runs the real path (broker cap
  mint + worker fetch on anvil, SeaweedFS and the signer).
* The daemon listens on the Unix socket under ``$XDG_RUNTIME_DIR`` and on a loopback port.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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
from agentkeys.chain.client import ChainClient, ContractAddresses
from agentkeys.daemon import Daemon, DaemonAddress, FileCredentialSource, HttpBrokerProbe
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
from agentkeys.devstack import pick_port
from agentkeys.service import MemoryAudit, ServerSettings
from agentkeys.smtp_sink import SmtpSink, run_smtp_sink
from tests.daemon.upstream import REAL_KEY, Upstream, running

OPERATOR = "0a" * 32
ACTOR = "0b" * 32
SELF_EXE = os.readlink("/proc/self/exe")


def policy_text(upstream_url: str, *, exe: str = SELF_EXE, uid: int | None = None) -> str:
    uid = os.getuid() if uid is None else uid
    services = ["openai", "minutely", "hourly", "budget"]
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
default = {{ prompt = 1.0, completion = 2.0 }}
"""


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    os.chmod(path, 0o600)


@dataclass
class Broker:
    """The real broker on a fixed port; ``stop``/``start`` keep its address and state."""

    nursery: trio.Nursery
    state_dir: Path
    smtp: SmtpSink
    port: int = field(default_factory=pick_port)
    rpc_url: str = "http://127.0.0.1:9"
    addresses: ContractAddresses | None = None
    caps: CapSettings = field(default_factory=CapSettings)
    service: BrokerService | None = None
    _scope: trio.CancelScope | None = None
    _done: trio.Event | None = None
    _closers: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        keys = await trio.to_thread.run_sync(BrokerKeys.load_or_create, self.state_dir)
        store = await SqliteStateStore.open(self.state_dir / "broker.sqlite3")
        rpc = httpx.AsyncClient(trust_env=False, timeout=5)
        zero = "0x" + "11" * 20
        addresses = self.addresses or ContractAddresses(zero, zero, zero)
        chain = ChainClient(rpc, self.rpc_url, addresses)
        service = BrokerService(
            settings=ServerSettings(port=self.port, graceful_timeout=0.5),
            site=SiteSettings(
                public_url=self.url,
                rp_id="agentkeys.localhost",
                origin="https://agentkeys.localhost",
                chain_id=31337,
            ),
            email=EmailSettings(smtp_port=self.smtp.port),
            caps=self.caps,
            oidc=OidcSettings(),
            keys=keys,
            store=store,
            mailer=SmtpMailer(host=self.smtp.host, port=self.smtp.port, sender="b@test"),
            chain=CachedChainView(chain),
            audit=MemoryAudit(),
        )
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


@dataclass
class Stack:
    daemon: Daemon
    address: DaemonAddress
    upstream: Upstream
    broker: Broker
    config: DaemonConfig
    events: trio.MemorySendChannel[Any]
    tmp: Path

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


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = Upstream()
    async with running(app) as url:
        app.url = url
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
        ),
        policy=PolicySection(path=config_home / "agentkeys" / "policy.toml", reload_interval=0.05),
        broker=BrokerSection(
            url=broker_url,
            heartbeat_interval=0.05,
            heartbeat_timeout=2.0,
            unreachable_after=unreachable_after,
        ),
        credentials=CredentialsSection(source="file", file=tmp / "secrets" / "credentials.toml"),
        identity=IdentitySection(operator_omni=OPERATOR, actor_omni=ACTOR),
        cache=CacheSection(ttl=300, negative_ttl=0.01),
        audit=AuditSection(path=tmp / "state" / "audit.log"),
        env=EnvSection(path=config_home / "agentkeys" / "env"),
    )


@pytest.fixture
def unreachable_after() -> float:
    return 60.0


@pytest.fixture
async def stack(
    nursery: trio.Nursery,
    tmp_path: Path,
    upstream: Upstream,
    broker: Broker,
    unreachable_after: float,
) -> AsyncIterator[Stack]:
    config = make_config(tmp_path, broker.url, unreachable_after=unreachable_after)
    write_private(config.policy_path, policy_text(upstream.url))
    assert config.credentials.file is not None
    write_private(
        config.credentials.file,
        f'[credentials]\nopenai = "{REAL_KEY}"\n'
        f'minutely = "{REAL_KEY}"\nhourly = "{REAL_KEY}"\nbudget = "{REAL_KEY}"\n',
    )
    send, receive = trio.open_memory_channel[Any](16)
    async with httpx.AsyncClient(base_url=broker.url, trust_env=False, timeout=5) as probe_http:
        daemon = Daemon(
            config=config,
            source=FileCredentialSource(config.credentials.file),
            probe=HttpBrokerProbe(probe_http),
            device_key_hash="0c" * 32,
            events=receive,
        )
        done = trio.Event()

        async def run(*, task_status: trio.TaskStatus[DaemonAddress]) -> None:
            try:
                await daemon.serve(task_status=task_status)
            finally:
                done.set()

        address: DaemonAddress = await nursery.start(run)
        await wait_until(daemon.liveness.reachable)
        yield Stack(daemon, address, upstream, broker, config, send, tmp_path)
        daemon.stop()
        with trio.fail_after(15):
            await done.wait()
