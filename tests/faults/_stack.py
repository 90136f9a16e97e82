"""The real stack with the killable parts in their own processes, for fault injection and soak.

:func:`process_stack` starts, under one private directory and on free 127.0.0.1 ports:

* anvil (with the contracts) and SeaweedFS (IAM/STS trusting the broker) through the
  ``agentkeys.devstack`` launchers — already processes, stopped with SIGSTOP / SIGCONT;
* the signer, the broker and the worker as ``python -m agentkeys.<svc> --config FILE``
  children (:class:`~bench._children.Child`): each can be SIGKILLed and started again on the
  same port with the same state directory, while the others keep running; with
  ``postgres``, the broker is several replicas on one database (``bench._replicas``);
* an SMTP sink (the broker needs one configured; nothing here signs in by email);
* one operator registered on chain whose master K10 we hold (``bench._stack``'s shortcut:
  caps signed with the broker's own active K1, read from its key files or the shared key set
  in PostgreSQL); the daemon signs in with that master's K10 (its own device session);
* optionally :class:`FaultProxy` relays (``worker → signer``, ``daemon → broker``,
  ``daemon → worker``), TCP relays on 127.0.0.1 whose behaviour a test switches between
  pass, refuse, slow and truncate;
* optionally the daemon in its own process (``bench._sidecar_child``) in front of an
  upstream we serve, so its RSS and descriptors are its own.

Everything is stopped when the block ends, however it ends.
"""

from __future__ import annotations

import enum
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import trio
import trio.lowlevel
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys._files import write_private
from agentkeys.broker import BrokerConfig
from agentkeys.broker.config import KeySettings
from agentkeys.cap import CapOp
from agentkeys.chain import ChainClient, account_from_key, deploy_all, read_deployment_record
from agentkeys.chain.signing import SoftwareK10Signer
from agentkeys.devstack import (
    DEV_ROLE_NAME,
    Anvil,
    Postgres,
    SeaweedFS,
    pick_port,
    start_anvil,
    start_seaweedfs,
)
from agentkeys.devstack.deployed_iam import deployed_iam_config
from agentkeys.devstack.smtp_sink import run_smtp_sink
from agentkeys.devstack.up import broker_config
from agentkeys.pki import Role, init_ca, issue_certificate
from agentkeys.service import ServerSettings
from agentkeys.signer import ChainSettings as SignerChainSettings
from agentkeys.signer import KeysSettings, OidcSettings, SignerConfig, StsSettings
from agentkeys.worker.config import CapSettings, SignerSettings, StorageConfig, WorkerConfig
from agentkeys.worker.config import ChainSettings as WorkerChainSettings
from bench._children import START_TIMEOUT, Child, config_toml, stop_process, wait_listening
from bench._replicas import broker_keys, replica_configs, running_replicas
from bench._stack import AUDIENCE, DevStack, Signing, key_pem, worker_request
from bench.chain import register_operator

REPO = Path(__file__).resolve().parents[2]
BUCKET = "agentkeys-faults"
_STOP_GRACE = 5.0


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


# -- the fault proxy -------------------------------------------------------------------------


class Mode(enum.Enum):
    PASS = "pass"  # relay both ways
    REFUSE = "refuse"  # accept and close at once (the peer sees a reset / empty answer)
    SLOW = "slow"  # hold the request and send nothing back
    TRUNCATE = "truncate"  # relay the request, cut the answer in half and close


@dataclass
class FaultProxy:
    """A TCP relay on 127.0.0.1 in front of ``target_port``.

    :meth:`set_mode` switches it: ``REFUSE`` also drops the connections already open (so
    pooled keep-alive connections see the fault too); ``SLOW`` stalls open connections at
    their next bytes; ``TRUNCATE`` relays the request and cuts the answer in half.
    """

    target_port: int
    port: int = 0
    mode: Mode = Mode.PASS
    connections: int = 0
    _open: set[trio.CancelScope] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.REFUSE:
            for scope in self._open:
                scope.cancel()

    async def serve(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Relay until cancelled; ``task_status.started`` once listening (:attr:`port` set)."""
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._handle, listeners, task_status=task_status)

    async def _pipe(
        self, source: trio.SocketStream, sink: trio.SocketStream, *, back: bool
    ) -> None:
        try:
            while True:
                data = await source.receive_some(65536)
                if not data:
                    return
                if self.mode is Mode.SLOW:
                    await trio.sleep_forever()
                if back and self.mode is Mode.TRUNCATE:
                    await sink.send_all(data[: len(data) // 2])
                    return
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        scope = trio.CancelScope()
        self._open.add(scope)
        try:
            with scope:
                async with client:
                    if self.mode is Mode.REFUSE:
                        return
                    if self.mode is Mode.SLOW:
                        await trio.sleep_forever()
                    try:
                        upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                    except OSError:
                        return
                    async with upstream, trio.open_nursery() as nursery:

                        async def one_way(
                            src: trio.SocketStream, dst: trio.SocketStream, back: bool
                        ) -> None:
                            await self._pipe(src, dst, back=back)
                            nursery.cancel_scope.cancel()

                        nursery.start_soon(one_way, client, upstream, False)
                        nursery.start_soon(one_way, upstream, client, True)
        finally:
            self._open.discard(scope)


# -- the stack -------------------------------------------------------------------------------


@dataclass
class ProcessStack:
    """What :func:`process_stack` started."""

    directory: Path
    anvil: Anvil
    s3: SeaweedFS
    signer: Child
    broker: Child
    worker: Child
    signing: Signing
    dev: DevStack
    http: httpx.AsyncClient
    brokers: list[Child] = field(default_factory=list)
    broker_configs: list[BrokerConfig] = field(default_factory=list)
    proxies: dict[str, FaultProxy] = field(default_factory=dict)
    daemon_broker_url: str = ""
    daemon_worker_url: str = ""

    @property
    def children(self) -> dict[str, Child]:
        return {"signer": self.signer, "broker": self.broker, "worker": self.worker}

    def worker_request(self, op: CapOp, service: str, secret: bytes = b"") -> bytes:
        host = f"127.0.0.1:{self.worker.port}"
        return worker_request(self.signing, op, host=host, service=service, secret=secret)

    async def worker_call(
        self, op: CapOp, service: str, secret: bytes = b"", *, url: str | None = None
    ) -> httpx.Response:
        """One worker request (fresh cap and PoP) over httpx; transport errors propagate."""
        raw = self.worker_request(op, service, secret)
        head, body = raw.split(b"\r\n\r\n", 1)
        lines = head.decode("ascii").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers.pop("Content-Length", None)
        headers.pop("Host", None)
        return await self.http.post((url or self.worker.url) + path, content=body, headers=headers)


async def _operator(
    anvil: Anvil, record: Path, http: httpx.AsyncClient, broker: BrokerConfig
) -> Signing:
    """One operator registered on chain (a fresh funded wallet, a software master K10 we
    hold, all roles), with the broker's active K1 to sign its caps (bench's shortcut)."""

    deployment = await trio.to_thread.run_sync(read_deployment_record, record)
    client = ChainClient(http, anvil.rpc_url, deployment.addresses)
    wallet_key = os.urandom(32).hex()
    wallet = account_from_key(wallet_key)
    await client.rpc.call("anvil_setBalance", wallet.address, hex(10**20))
    k10 = ec.generate_private_key(ec.SECP256R1())
    operator, device_key_hash = await register_operator(client, wallet_key, SoftwareK10Signer(k10))
    keys = await broker_keys(broker)
    return Signing(
        k1=keys.cap.active,
        kid=keys.cap.active_kid,
        operator=operator,
        wallet=wallet.address.lower(),
        device_key_hash=device_key_hash,
        k10=k10,
        epoch=await client.current_epoch(),
    )


def _pki(directory: Path) -> dict[str, tuple[Path, Path]]:
    init_ca(directory)
    out = {"ca": (directory / "ca.crt", directory / "ca.key")}
    for role in (Role.SIGNER, Role.BROKER, Role.WORKER):
        issued = issue_certificate(directory, role)
        out[role.value] = (issued.cert_path, issued.key_path)
    return out


async def _signal_group(pid: int, signum: signal.Signals) -> None:
    os.killpg(pid, signum)
    await trio.lowlevel.checkpoint()


async def freeze(pid: int) -> None:
    """SIGSTOP a launched component's process group: it stops answering, sockets stay open."""
    await _signal_group(pid, signal.SIGSTOP)


async def thaw(pid: int) -> None:
    """SIGCONT the group again."""
    await _signal_group(pid, signal.SIGCONT)


@asynccontextmanager
async def process_stack(
    directory: Path,
    *,
    proxies: bool = False,
    postgres: Postgres | None = None,
    replicas: int = 1,
    keys: KeySettings | None = None,
) -> AsyncIterator[ProcessStack]:
    """Run the stack described in the module docstring under ``directory``.

    Args:
        proxies: put a :class:`FaultProxy` between the worker and the signer (``"signer"``)
            and in front of the broker and the worker for the daemon (``"broker"``,
            ``"worker"``).
        postgres: run the broker on a fresh database of this server, as ``replicas``
            processes (:func:`bench._replicas.replica_configs`, ``keys`` their key
            settings); replica 0 is :attr:`ProcessStack.broker`, the issuer and the
            worker's JWKS source.
    """
    directory = _private_dir(directory)
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30, trust_env=False))
        anvil_dir = _private_dir(directory / "anvil")
        anvil = await stack.enter_async_context(
            start_anvil(state_path=anvil_dir / "state.json", run_dir=anvil_dir)
        )
        chain = ChainClient(http, anvil.rpc_url)
        record = directory / "deployment.json"
        deployer = account_from_key(anvil.accounts[0].private_key)
        await deploy_all(
            chain, deployer, governance=[deployer.address], threshold=1, record_path=record
        )
        pki = await trio.to_thread.run_sync(_pki, _private_dir(directory / "pki"))
        ports = {name: pick_port() for name in ("signer", "broker", "worker")}
        issuer = f"http://127.0.0.1:{ports['broker']}"
        iam = deployed_iam_config(bucket=BUCKET, issuer=issuer)
        s3 = await stack.enter_async_context(
            start_seaweedfs(iam=iam, bucket=BUCKET, run_dir=_private_dir(directory / "seaweedfs"))
        )
        sink = await stack.enter_async_context(
            run_smtp_sink(maildir=_private_dir(directory / "mail"))
        )
        logs = _private_dir(directory / "logs")

        fault_proxies: dict[str, FaultProxy] = {}
        if proxies:
            for name in ("signer", "broker", "worker"):
                proxy = FaultProxy(target_port=ports[name])
                await nursery.start(proxy.serve)
                fault_proxies[name] = proxy

        def link(name: str) -> str:
            port = fault_proxies[name].port if name in fault_proxies else ports[name]
            return f"http://127.0.0.1:{port}"

        signer_home = _private_dir(directory / "signer")
        signer_config = SignerConfig(
            signer=ServerSettings(
                port=ports["signer"],
                tls_cert=pki["signer"][0],
                tls_key=pki["signer"][1],
                tls_client_ca=pki["ca"][0],
                audit_log=signer_home / "audit.jsonl",
            ),
            keys=KeysSettings(
                state_dir=signer_home / "keys",
                seal_backend="software",
                seal_key_file=signer_home / "seal" / "seal.key",
            ),
            chain=SignerChainSettings(rpc_url=anvil.rpc_url, deployment=record),
            oidc=OidcSettings(issuer=issuer),
            sts=StsSettings(endpoint=s3.s3_endpoint, role_arn=iam.role(DEV_ROLE_NAME).arn),
        )
        signer_url = f"https://127.0.0.1:{ports['signer']}"
        broker_cfg = broker_config(
            state=directory,
            port=ports["broker"],
            chain_id=anvil.chain_id,
            rpc_url=anvil.rpc_url,
            record=record,
            smtp=(str(sink.host), int(sink.port)),
            signer_url=signer_url,
            pki=pki,
            passkey_port=pick_port(),
        )
        broker_cfgs = [broker_cfg]
        if postgres is not None:
            database = f"faults_{secrets.token_hex(6)}"
            dsn = await postgres.create_database(database)
            stack.push_async_callback(postgres.drop_database, database)
            broker_cfgs = replica_configs(
                broker_cfg, count=replicas, directory=directory / "replicas", dsn=dsn,
                password_file=postgres.password_file, keys=keys,
            )  # fmt: skip
        worker_signer = signer_url
        if "signer" in fault_proxies:
            worker_signer = f"https://127.0.0.1:{fault_proxies['signer'].port}"
        worker_cfg = WorkerConfig(
            worker=ServerSettings(
                port=ports["worker"], audit_log=_private_dir(directory / "worker") / "audit.jsonl"
            ),
            caps=CapSettings(audience=AUDIENCE, jwks_url=f"{issuer}/v1/cap/jwks.json"),
            chain=WorkerChainSettings(rpc_url=anvil.rpc_url, deployment=record),
            signer=SignerSettings(
                url=worker_signer, ca=pki["ca"][0], cert=pki["worker"][0], key=pki["worker"][1]
            ),
            storage=StorageConfig(bucket=BUCKET, endpoint=s3.s3_endpoint),
        )
        children: dict[str, Child] = {}
        for name, module, cfg in (
            ("signer", "agentkeys.signer", signer_config),
            ("worker", "agentkeys.worker", worker_cfg),
        ):
            path = directory / "config" / f"{name}.toml"
            write_private(path, config_toml(cfg))
            children[name] = Child(name, module, path, ports[name], logs / f"{name}.log")

        async def stop_children() -> None:
            with trio.CancelScope(shield=True):
                for child in reversed(children.values()):
                    await child.stop()

        stack.push_async_callback(stop_children)
        await children["signer"].start()
        brokers = await stack.enter_async_context(
            running_replicas(broker_cfgs, _private_dir(directory / "brokers"))
        )
        await children["worker"].start()
        signing = await _operator(anvil, record, http, broker_cfgs[0])
        dev = DevStack(
            state_dir=directory,
            rpc_url=anvil.rpc_url,
            deployment_record=record,
            broker_url=issuer,
            worker_url=children["worker"].url,
            signing=signing,
        )
        yield ProcessStack(
            directory=directory,
            anvil=anvil,
            s3=s3,
            signer=children["signer"],
            broker=brokers[0],
            worker=children["worker"],
            brokers=brokers,
            broker_configs=broker_cfgs,
            signing=signing,
            dev=dev,
            http=http,
            proxies=fault_proxies,
            daemon_broker_url=link("broker"),
            daemon_worker_url=link("worker"),
        )


# -- the daemon and its upstream --------------------------------------------------------------

UPSTREAM_PATH = "/v1/ping"
_UPSTREAM_BODY = b'{"ok":true}'


async def upstream_handler(stream: trio.SocketStream) -> None:
    """A minimal HTTP/1.1 keep-alive upstream: 200 with a small JSON body per request."""
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_UPSTREAM_BODY), _UPSTREAM_BODY)
    )
    pending = b""
    async with stream:
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                pending += data
                while b"\r\n\r\n" in pending:
                    head, pending = pending.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        key, _, value = line.partition(b":")
                        if key.strip().lower() == b"content-length":
                            length = int(value.strip())
                    while len(pending) < length:
                        more = await stream.receive_some(65536)
                        if not more:
                            return
                        pending += more
                    pending = pending[length:]
                    await stream.send_all(response)
                if len(pending) > 65536:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


def daemon_policy(upstreams: Mapping[str, str], exes: Sequence[str]) -> str:
    """Policy: each of ``exes`` (this uid) may ``GET`` :data:`UPSTREAM_PATH` of each service
    of ``upstreams`` ({service: upstream base URL})."""
    names = ", ".join(json.dumps(name) for name in upstreams)
    lines: list[str] = []
    for index, exe in enumerate(exes):
        lines += [
            "[[caller]]",
            f'name = "client{index}"',
            f"uid = {os.getuid()}",
            f"exe = {json.dumps(exe)}",
            f"services = [{names}]",
            "",
        ]
    for name, upstream in upstreams.items():
        lines += [
            f"[service.{name}]",
            f'upstream = "{upstream}"',
            f'allow = ["GET {UPSTREAM_PATH}"]',
            "",
        ]
    return "\n".join(lines)


@dataclass
class Daemon:
    """The daemon child (:mod:`bench._sidecar_child`) and its addresses."""

    process: trio.Process
    socket_path: Path
    tcp: tuple[str, int]
    upstream_port: int

    @property
    def url(self) -> str:
        return f"http://{self.tcp[0]}:{self.tcp[1]}"


async def store_credentials(stack: ProcessStack, services: Sequence[str]) -> dict[str, bytes]:
    """Store one credential per service through the worker; {service: secret}."""
    stored: dict[str, bytes] = {}
    for name in services:
        secret = f"sk-{name}-{os.urandom(8).hex()}".encode()
        response = await stack.worker_call(CapOp.STORE, name, secret)
        assert response.status_code == 200, response.text
        stored[name] = secret
    return stored


@asynccontextmanager
async def running_daemon(
    stack: ProcessStack,
    *,
    services: Sequence[str],
    exes: Sequence[str],
    routed: Mapping[str, str] | None = None,
) -> AsyncIterator[Daemon]:
    """The daemon in its own process, for ``services`` served by an upstream of ours
    (:attr:`Daemon.upstream_port`) and ``routed`` services reached at another URL
    ({service: base URL}, e.g. a :class:`FaultProxy` in front of our upstream)."""
    home = _private_dir(stack.directory / "daemon")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, upstream_handler, 0, host="127.0.0.1")
        )
        served_port = int(listeners[0].socket.getsockname()[1])
        upstreams = {name: f"http://127.0.0.1:{served_port}" for name in services}
        upstreams.update(routed or {})
        secrets_dir = _private_dir(home / "secrets")
        write_private(secrets_dir / "k10.pem", key_pem(stack.signing.k10))
        write_private(home / "policy.toml", daemon_policy(upstreams, exes))
        run_dir = Path(tempfile.mkdtemp(prefix="ak-faults-", dir="/tmp"))  # short AF_UNIX path
        setup = {
            "socket": str(run_dir / "agentkeys-proxy.sock"),
            "policy": str(home / "policy.toml"),
            "audit": str(home / "audit.log"),
            "broker_url": stack.daemon_broker_url,
            "worker_url": stack.daemon_worker_url,
            "operator": stack.signing.operator,
            "key_path": str(secrets_dir / "k10.pem"),
            "rpc_url": stack.anvil.rpc_url,
            "deployment": str(stack.dev.deployment_record),
            "fault_timeouts": True,
        }
        log = (stack.directory / "logs" / "daemon.log").open("ab")
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "bench._sidecar_child", json.dumps(setup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO,
        )
        try:
            assert process.stdout is not None
            line = b""
            with trio.fail_after(START_TIMEOUT):
                while b"\n" not in line:
                    chunk = await process.stdout.receive_some(4096)
                    if not chunk:
                        raise RuntimeError("the daemon exited before it was ready (daemon.log)")
                    line += chunk
            address = json.loads(line.split(b"\n", 1)[0])
            tcp = httpx.URL(str(address["tcp_url"]))
            yield Daemon(
                process,
                Path(address["socket"]),
                (str(tcp.host), int(tcp.port or 0)),
                served_port,
            )
        finally:
            with trio.CancelScope(shield=True):
                if process.stdin is not None:
                    await process.stdin.aclose()
                with trio.move_on_after(_STOP_GRACE):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                log.close()
                shutil.rmtree(run_dir, ignore_errors=True)
            nursery.cancel_scope.cancel()


# -- launched components (anvil, SeaweedFS): kill and relaunch with the same argv -------------


@dataclass
class Relaunched:
    """A devstack component relaunched from its own ``/proc/<pid>/cmdline`` (same ports, same
    data directory), after the launcher's process was stopped or killed."""

    argv: list[str]
    cwd: str
    log: Path
    process: trio.Process | None = None

    @classmethod
    def capture(cls, pid: int, log: Path) -> Relaunched:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        argv = [part.decode() for part in raw.split(b"\0") if part]
        return cls(argv, os.readlink(f"/proc/{pid}/cwd"), log)

    async def start(self, port: int) -> None:
        with self.log.open("ab") as log:
            self.process = await trio.lowlevel.open_process(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.cwd,
                start_new_session=True,
            )
        await wait_listening(port)

    async def stop(self) -> None:
        process, self.process = self.process, None
        await stop_process(process)


async def kill_pid(pid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to ``pid`` and wait until it is gone (it is not our child: poll)."""
    os.kill(pid, signum)
    with trio.fail_after(_STOP_GRACE * 2):
        while True:
            try:
                stat = await trio.Path(f"/proc/{pid}/stat").read_text(errors="replace")
            except FileNotFoundError:
                return
            if ") Z " in stat:
                return  # a zombie awaiting its launcher's wait(): gone for our purposes
            await trio.sleep(0.05)
