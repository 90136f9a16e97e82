"""``agentkeys dev up``: the whole embedded stack in one nursery under one state directory.

SPEC.md section 10. Started in order, each by the project's own launchers on free 127.0.0.1
ports, and stopped in reverse order however the run ends (Ctrl-C, ``dev down``'s SIGTERM, a
crash of any part):

1. anvil (chain state kept in ``anvil/state.json``, so registrations survive a restart);
2. the contracts, deployed once (``deployment.json``; redeployed when the chain lost them);
3. the development PKI (``pki/``: CA and signer/broker/worker certificates, made once);
4. swtpm when installed (TPM state kept in ``swtpm/tpm-state``), used by the signer to seal;
5. SeaweedFS with IAM/STS trusting the broker's OIDC issuer, and the bucket;
6. the signer (mutual TLS);
7. the SMTP sink (mail kept in ``mail/``), the broker (restartable: see
   :class:`StackControls`), the worker;
8. the daemon, when an operator and an agent exist (``daemon/setup.json``, written by
   ``agentkeys dev demo`` or given as :attr:`DevUpOptions.daemon`); it writes the agent's
   env file ``daemon/agent.env``. When the daemon stops by itself (SIGTERM), the stack stops.

The state directory holds ``dev-up.pid`` (the running ``dev up``), ``status.json`` (what runs
where) and ``env.sh`` (the ``export`` lines to ``source``). Every file is 0600 in 0700 dirs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import httpx
import trio

from agentkeys._files import write_private
from agentkeys.broker import run_broker
from agentkeys.broker.config import (
    BrokerConfig,
    EmailSettings,
    RelaySettings,
    SignerLink,
    SiteSettings,
    StateSettings,
)
from agentkeys.broker.config import ChainSettings as BrokerChainSettings
from agentkeys.chain import (
    ChainClient,
    ChainConfigError,
    Deployment,
    account_from_key,
    deploy_all,
    read_deployment_record,
)
from agentkeys.daemon import DaemonAddress
from agentkeys.daemon.config import (
    SOCKET_NAME,
    AuditSection,
    BrokerSection,
    CredentialsSection,
    DaemonConfig,
    DeviceSection,
    EnvSection,
    IdentitySection,
    ListenSection,
    PolicySection,
)
from agentkeys.daemon.config import ChainSection as DaemonChainSection
from agentkeys.daemon.run import run_daemon
from agentkeys.devstack import (
    DEV_ROLE_NAME,
    BinaryNotFound,
    pick_port,
    start_anvil,
    start_seaweedfs,
    start_swtpm,
    swtpm_binary,
)
from agentkeys.devstack.deployed_iam import deployed_iam_config
from agentkeys.devstack.smtp_sink import run_smtp_sink
from agentkeys.devstack.upstream import DemoUpstream, serve_upstream
from agentkeys.errors import AgentkeysError
from agentkeys.omni import normalize_hex32
from agentkeys.pki import Role, init_ca, issue_certificate
from agentkeys.service import ServerSettings
from agentkeys.worker import run_worker
from agentkeys.worker.config import CapSettings, SignerSettings, StorageConfig, WorkerConfig
from agentkeys.worker.config import ChainSettings as WorkerChainSettings

__all__ = [
    "DEFAULT_STATE_DIR",
    "DEV_BUCKET",
    "DevDaemonSetup",
    "DevStackError",
    "DevStackRunning",
    "DevUpOptions",
    "Restartable",
    "StackControls",
    "StackStatus",
    "daemon_config",
    "read_status",
    "run_dev_stack",
    "running_pid",
    "stop_dev_stack",
]

DEFAULT_STATE_DIR = Path(".agentkeys-state")
DEV_BUCKET = "agentkeys-dev"
PID_FILE = "dev-up.pid"
STATUS_FILE = "status.json"
ENV_FILE = "env.sh"
AGENT_ENV_FILE = "agent.env"
MAX_SOCKET_PATH = 100  # AF_UNIX paths are at most 107 bytes
DAEMON_SETUP_FILE = "setup.json"


class DevStackError(AgentkeysError):
    """The development stack cannot start or be controlled."""

    error: ClassVar[str] = "dev_stack_error"
    status: ClassVar[int] = 500


class DevStackRunning(DevStackError):
    """Another ``dev up`` already runs on this state directory."""

    error = "dev_stack_running"


@dataclass(frozen=True)
class DevUpOptions:
    """How to run the stack.

    Args:
        state_dir: everything the stack keeps (default ``./.agentkeys-state``).
        swtpm: start swtpm when installed (``False``: software sealing only).
        hardfork: anvil ``--hardfork`` (``prague`` lacks the P-256 precompile).
        daemon: start the daemon for this operator/agent (else ``daemon/setup.json``).
        legacy_master_secret: the K4 master secret of a legacy (v1) signer, imported into a
            new dev signer (``KeyStore.import_master_secret``) before it first starts, as an
            operator migrating from the v1 design does, so that the K4 wallets (and the v1
            data under them) stay the same; ignored once the signer has keys. Nothing needs
            the secret outside the signer: an email operator's master registration is
            approved by K4 inside the signer (``/v1/relay/first-master``).
        daemon_unreachable_after, daemon_heartbeat_interval: override the fail-closed
            window and heartbeat of a daemon set up by ``sidecar setup --dev-stack`` (the
            demo shortens them to show fail-closed quickly).
        device_lifetime: the broker's device session lifetime in seconds (default 900; a
            short one shows the daemon renewing its own session).
    """

    state_dir: Path = DEFAULT_STATE_DIR
    swtpm: bool = True
    hardfork: str | None = None
    daemon: DevDaemonSetup | None = None
    legacy_master_secret: bytes | None = field(default=None, repr=False)
    daemon_unreachable_after: float | None = None
    device_lifetime: int = 900
    daemon_heartbeat_interval: float | None = None


@dataclass
class StackStatus:
    """What runs where (``status.json``) and the environment for clients (``env.sh``)."""

    state_dir: Path
    pid: int
    components: dict[str, dict[str, str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    agent_env: Path | None = None
    controls: StackControls | None = field(default=None, repr=False)

    def add(self, name: str, state: str, **details: str) -> None:
        """Record a component (``running``, ``waiting``, ``not installed``, ``off``, …)."""
        self.components[name] = {"state": state, **details}

    def to_json(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "pid": self.pid,
            "components": self.components,
            "env": self.env,
        }

    def env_script(self) -> str:
        """``export`` lines (shell-quoted)."""
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(self.env.items()))

    @property
    def source_line(self) -> str:
        return f"source {shlex.quote(str(self.state_dir / ENV_FILE))}"

    @property
    def agent_source_line(self) -> str | None:
        """``source <state>/daemon/agent.env`` once the daemon runs (for the agent's shell)."""
        if self.agent_env is None:
            return None
        return f"source {shlex.quote(str(self.agent_env))}"


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(state_dir: Path) -> int | None:
    """The pid of the ``dev up`` running on ``state_dir``, or None."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The last ``status.json`` of ``state_dir`` (None when absent or unreadable)."""
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


async def stop_dev_stack(state_dir: Path, *, grace: float = 60.0) -> int | None:
    """SIGTERM the running ``dev up`` and wait for it to finish; its pid, or None.

    Raises:
        DevStackError: it did not stop within ``grace`` seconds.
    """
    pid = running_pid(state_dir)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    with trio.move_on_after(grace):
        # another process: nothing to wait on but its pid and pid file
        while _pid_alive(pid) and (state_dir / PID_FILE).exists():  # noqa: ASYNC110
            await trio.sleep(0.1)
        return pid
    raise DevStackError(f"dev up (pid {pid}) did not stop within {grace:.0f} s")


def _claim_pid_file(state_dir: Path) -> Path:
    path = state_dir / PID_FILE
    other = running_pid(state_dir)
    if other is not None and other != os.getpid():
        raise DevStackRunning(
            f"a dev stack already runs on {state_dir} (pid {other}); run `agentkeys dev down` first"
        )
    path.unlink(missing_ok=True)
    write_private(path, f"{os.getpid()}\n", exclusive=True)
    return path


async def _deployment(client: ChainClient, record: Path, deployer_key: str) -> Deployment:
    """The recorded deployment when the chain still has it, else a fresh one."""
    if await trio.Path(record).exists():
        try:
            existing = await trio.to_thread.run_sync(read_deployment_record, record)
        except ChainConfigError:
            existing = None
        if existing is not None and existing.chain_id == await client.chain_id():
            code = await client.rpc.call("eth_getCode", existing.addresses.registry, "latest")
            if isinstance(code, str) and len(code) > 2:
                client.with_addresses(existing.addresses)
                return existing
    deployer = account_from_key(deployer_key)
    return await deploy_all(
        client, deployer, governance=[deployer.address], threshold=1, record_path=record
    )


def _dev_pki(directory: Path) -> dict[str, tuple[Path, Path]]:
    """CA + one certificate per role, made once; {role: (cert, key)} and "ca"."""
    if not (directory / "ca.crt").exists():
        init_ca(directory)
    out: dict[str, tuple[Path, Path]] = {"ca": (directory / "ca.crt", directory / "ca.key")}
    for role in (Role.SIGNER, Role.BROKER, Role.WORKER):
        cert, key = directory / f"{role.value}.crt", directory / f"{role.value}.key"
        if not cert.exists():
            issued = issue_certificate(directory, role)
            cert, key = issued.cert_path, issued.key_path
        out[role.value] = (cert, key)
    return out


async def _start_signer(
    nursery: trio.Nursery,
    status: StackStatus,
    *,
    state: Path,
    pki: Mapping[str, tuple[Path, Path]],
    rpc_url: str,
    record: Path,
    issuer: str,
    s3_endpoint: str,
    role_arn: str,
    tcti: str | None,
    legacy_master_secret: bytes | None = None,
) -> str:
    from agentkeys.signer import (
        ChainSettings,
        KeysSettings,
        OidcSettings,
        SignerConfig,
        StsSettings,
        run_signer,
    )

    home = _private_dir(state / "signer")
    config = SignerConfig(
        signer=ServerSettings(
            tls_cert=pki["signer"][0],
            tls_key=pki["signer"][1],
            tls_client_ca=pki["ca"][0],
            audit_log=home / "audit" / "signer.jsonl",
        ),
        keys=KeysSettings(
            state_dir=home / "keys",
            seal_backend="tpm" if tcti is not None else "software",
            seal_key_file=None if tcti is not None else home / "seal" / "seal.key",
            tpm_tcti=tcti,
        ),
        chain=ChainSettings(rpc_url=rpc_url, deployment=record),
        oidc=OidcSettings(issuer=issuer),
        sts=StsSettings(endpoint=s3_endpoint, role_arn=role_arn),
    )
    if legacy_master_secret is not None and not (config.keys.state_dir / "master.sealed").exists():
        from agentkeys.signer._keystore import KeyStore
        from attest.seal import open_sealer

        sealer = await open_sealer(
            config.keys.seal_backend, key_path=config.keys.seal_key_file, tcti=tcti
        )
        try:
            await KeyStore.import_master_secret(config.keys.state_dir, sealer, legacy_master_secret)
        finally:
            await sealer.aclose()
    service = await nursery.start(partial(run_signer, config))
    bound = service.bound
    url = bound.url if bound is not None else ""
    status.add("signer", "running", url=url, tls="mutual", seal=config.keys.seal_backend)
    return str(url)


async def _start_smtp_sink(
    stack: AsyncExitStack, status: StackStatus, state: Path
) -> tuple[str, int]:
    sink = await stack.enter_async_context(run_smtp_sink(maildir=_private_dir(state / "mail")))
    host, port = str(sink.host), int(sink.port)
    status.add("smtp-sink", "running", url=f"smtp://{host}:{port}", maildir=str(state / "mail"))
    return host, port


class Restartable:
    """One component run in its own cancel scope, so it can be stopped and started again.

    The demo stops the broker to show the daemon failing closed, then starts it again on the
    same port with the same state. ``start`` runs ``runner`` in ``nursery`` (the stack's).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        runner: Callable[..., Any],
        *,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._nursery = nursery
        self._runner = runner
        self._on_exit = on_exit
        self._scope: trio.CancelScope | None = None
        self._done: trio.Event | None = None

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def start(self) -> Any:
        """Start the component; returns what its ``task_status.started`` gave."""
        scope, done = trio.CancelScope(), trio.Event()
        runner = self._runner

        async def run(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await runner(task_status=task_status)
            finally:
                done.set()
            if not scope.cancelled_caught and self._on_exit is not None:
                self._on_exit()  # stopped by itself (e.g. the daemon on SIGTERM)

        started = await self._nursery.start(run)
        self._scope, self._done = scope, done
        return started

    async def stop(self) -> None:
        """Cancel the component and wait until it has stopped."""
        if self._scope is not None and self._done is not None:
            self._scope.cancel()
            await self._done.wait()
        self._scope = self._done = None


def broker_config(
    *,
    state: Path,
    port: int,
    chain_id: int,
    rpc_url: str,
    record: Path,
    smtp: tuple[str, int],
    signer_url: str,
    pki: Mapping[str, tuple[Path, Path]],
    passkey_port: int,
    relay_key: Path | None = None,
    device_lifetime: int = 900,
) -> BrokerConfig:
    """The dev broker: issuer ``http://127.0.0.1:<port>``; WebAuthn rpId ``localhost`` and
    origin ``http://localhost:<passkey_port>``. The broker checks one configured origin, so
    the stack reserves the port on which ``agentkeys init`` serves its passkey page
    (``AGENTKEYS_DEV_PASSKEY_ORIGIN``) and configures the broker with it. With ``relay_key``
    (a 0600 file holding a funded dev account's key) hosted-relay mode is on: email-only
    operators register their first master through it (``/v1/relay/first-master``).
    ``device_lifetime`` is a sidecar's device session (the daemon renews it itself)."""
    url = f"http://127.0.0.1:{port}"
    return BrokerConfig(
        broker=ServerSettings(port=port, audit_log=state / "broker" / "audit" / "broker.jsonl"),
        state=StateSettings(dir=_private_dir(state / "broker") / "state"),
        site=SiteSettings(
            public_url=url,
            rp_id="localhost",
            origin=f"http://localhost:{passkey_port}",
            chain_id=chain_id,
            device_lifetime=device_lifetime,
        ),
        chain=BrokerChainSettings(rpc_url=rpc_url, deployment=record, poll_interval=0.5),
        email=EmailSettings(smtp_host=smtp[0], smtp_port=smtp[1]),
        signer=SignerLink(
            url=signer_url, ca=pki["ca"][0], cert=pki["broker"][0], key=pki["broker"][1]
        ),
        relay=RelaySettings(enabled=relay_key is not None, key_file=relay_key),
    )


@dataclass(frozen=True)
class DevDaemonSetup:
    """Who the dev stack's daemon acts for and what its host-local policy allows.

    Written to ``<state>/daemon/setup.json`` (0600) so a later ``dev up`` starts the same
    daemon. ``policy`` is the TOML text of docs/daemon.md; ``unreachable_after`` is the
    fail-closed window (60 s by default; the demo shortens it to show fail-closed quickly).

    Args:
        operator_omni, actor_omni: 64 hex.
        key_path: the actor's K10 key file (software, 0600): the daemon signs in to the
            broker with it (its own device session; no operator session is involved).
    """

    operator_omni: str
    actor_omni: str
    key_path: Path
    policy: str
    unreachable_after: float = 60.0
    heartbeat_interval: float = 2.0

    def to_json(self) -> dict[str, Any]:
        return {
            "operator_omni": self.operator_omni,
            "actor_omni": self.actor_omni,
            "key_path": str(self.key_path),
            "policy": self.policy,
            "unreachable_after": self.unreachable_after,
            "heartbeat_interval": self.heartbeat_interval,
        }

    @classmethod
    def from_json(cls, data: Any) -> DevDaemonSetup:
        """Parse ``setup.json``.

        Raises:
            DevStackError: malformed.
        """
        try:
            return cls(
                operator_omni=normalize_hex32(str(data["operator_omni"])),
                actor_omni=normalize_hex32(str(data["actor_omni"])),
                key_path=Path(str(data["key_path"])),
                policy=str(data["policy"]),
                unreachable_after=float(data.get("unreachable_after", 60.0)),
                heartbeat_interval=float(data.get("heartbeat_interval", 2.0)),
            )
        except (KeyError, TypeError, ValueError, AgentkeysError):
            raise DevStackError("daemon/setup.json is malformed; delete it") from None


WAITING_NOTE = (
    "no agent yet: after `agentkeys init` and `agentkeys agent create <agent>`, "
    "`agentkeys sidecar setup <agent> --dev-stack` starts it here"
)


async def _wait_for_setup(path: Path, *, interval: float = 0.5) -> DevDaemonSetup:
    """``daemon/setup.json`` once it exists (written by ``sidecar setup --dev-stack``, or
    left by an earlier run), parsed."""
    # another process writes it: nothing to wait on but the file
    while not await trio.Path(path).exists():  # noqa: ASYNC110
        await trio.sleep(interval)
    text = await trio.Path(path).read_text("utf-8")
    return DevDaemonSetup.from_json(json.loads(text))


def _overridden(setup: DevDaemonSetup, options: DevUpOptions) -> DevDaemonSetup:
    """``setup`` with the fail-closed window and heartbeat ``options`` override."""
    if options.daemon_unreachable_after is not None:
        setup = dataclasses.replace(setup, unreachable_after=options.daemon_unreachable_after)
    if options.daemon_heartbeat_interval is not None:
        setup = dataclasses.replace(setup, heartbeat_interval=options.daemon_heartbeat_interval)
    return setup


def daemon_config(
    state: Path,
    setup: DevDaemonSetup,
    *,
    broker_url: str,
    worker_url: str,
    rpc_url: str,
    record: Path,
    socket_dir: Path | None = None,
) -> DaemonConfig:
    """The dev daemon: socket, policy, audit log and agent env file under ``<state>/daemon``,
    a loopback TCP listener on a free port (for SDKs that speak TCP), the real broker +
    worker credential source, and the chain watcher for revocations."""
    home = _private_dir(state / "daemon")
    run_dir = socket_dir if socket_dir is not None else _private_dir(home / "run")
    return DaemonConfig(
        listen=ListenSection(socket=run_dir / SOCKET_NAME, tcp_port=0),
        policy=PolicySection(path=home / "policy.toml", reload_interval=0.5),
        broker=BrokerSection(
            url=broker_url,
            heartbeat_interval=setup.heartbeat_interval,
            heartbeat_timeout=2.0,
            unreachable_after=setup.unreachable_after,
        ),
        credentials=CredentialsSection(source="broker", worker_url=worker_url),
        identity=IdentitySection(operator_omni=setup.operator_omni, actor_omni=setup.actor_omni),
        chain=DaemonChainSection(rpc_url=rpc_url, deployment=record, poll_interval=0.5),
        device=DeviceSection(backend="software", key_path=setup.key_path),
        audit=AuditSection(path=home / "audit.log"),
        env=EnvSection(path=home / AGENT_ENV_FILE),
    )


@dataclass
class StackControls:
    """Handles on the running stack for in-process callers (the demo): the broker can be
    stopped and started again; the daemon is started once an operator and agent exist."""

    state_dir: Path
    status: StackStatus
    broker: Restartable
    broker_url: str
    worker_url: str
    rpc_url: str
    record: Path
    maildir: Path
    worker_config: WorkerConfig
    passkey_origin: str
    pki_dir: Path
    nursery: trio.Nursery
    on_daemon_exit: Callable[[], None]
    daemon: Restartable | None = None
    daemon_address: DaemonAddress | None = None
    cleanup: list[Path] = field(default_factory=list)

    async def start_daemon(self, setup: DevDaemonSetup) -> DaemonAddress:
        """Write the policy and ``setup.json``, start the daemon; returns where it listens.

        The daemon writes the agent env file (``<state>/daemon/agent.env``). Its socket is
        ``<state>/daemon/run/agentkeys-proxy.sock``, or a short private directory under /tmp
        when that path is too long for AF_UNIX (removed when the stack stops).
        """
        socket_dir: Path | None = None
        if len(str(self.state_dir / "daemon" / "run" / SOCKET_NAME)) > MAX_SOCKET_PATH:
            socket_dir = Path(tempfile.mkdtemp(prefix="ak-daemon-", dir="/tmp"))
            self.cleanup.append(socket_dir)
        config = daemon_config(
            self.state_dir,
            setup,
            broker_url=self.broker_url,
            worker_url=self.worker_url,
            rpc_url=self.rpc_url,
            record=self.record,
            socket_dir=socket_dir,
        )
        write_private(config.policy_path, setup.policy)
        write_private(
            self.state_dir / "daemon" / DAEMON_SETUP_FILE, json.dumps(setup.to_json(), indent=2)
        )
        self.daemon = Restartable(
            self.nursery, partial(run_daemon, config), on_exit=self.on_daemon_exit
        )
        address: DaemonAddress = await self.daemon.start()
        self.daemon_address = address
        self.status.add(
            "daemon",
            "running",
            socket=address.socket_path,
            url=address.tcp_url or "",
            actor=setup.actor_omni,
        )
        env_path = self.state_dir / "daemon" / AGENT_ENV_FILE
        self.status.env["AGENTKEYS_DEV_AGENT_ENV"] = str(env_path)
        self.status.agent_env = env_path
        self.save()
        return address

    def save(self) -> None:
        """Rewrite ``status.json`` and ``env.sh``."""
        write_private(self.state_dir / ENV_FILE, self.status.env_script())
        write_private(
            self.state_dir / STATUS_FILE, json.dumps(self.status.to_json(), indent=2) + "\n"
        )


async def _start_worker(
    nursery: trio.Nursery,
    status: StackStatus,
    *,
    state: Path,
    broker_url: str,
    rpc_url: str,
    record: Path,
    signer_url: str,
    pki: Mapping[str, tuple[Path, Path]],
    s3_endpoint: str,
) -> tuple[str, WorkerConfig]:
    port = pick_port()
    config = WorkerConfig(
        worker=ServerSettings(port=port, audit_log=_private_dir(state / "worker") / "audit.jsonl"),
        caps=CapSettings(audience="agentkeys-worker", jwks_url=f"{broker_url}/v1/cap/jwks.json"),
        chain=WorkerChainSettings(rpc_url=rpc_url, deployment=record),
        signer=SignerSettings(
            url=signer_url, ca=pki["ca"][0], cert=pki["worker"][0], key=pki["worker"][1]
        ),
        storage=StorageConfig(bucket=DEV_BUCKET, endpoint=s3_endpoint),
    )
    await nursery.start(partial(run_worker, config))
    url = f"http://127.0.0.1:{port}"
    status.add("worker", "running", url=url)
    return url, config


async def run_dev_stack(
    options: DevUpOptions,
    *,
    task_status: trio.TaskStatus[StackStatus] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the stack until cancelled; ``task_status.started`` gets the :class:`StackStatus`.

    Raises:
        DevStackRunning: another ``dev up`` owns the state directory.
        DevstackError / ChainError / PkiError / signer errors: a component failed to start.
    """
    state = _private_dir(options.state_dir.resolve())
    pid_file = _claim_pid_file(state)
    status = StackStatus(state_dir=state, pid=os.getpid())
    try:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            anvil_dir = _private_dir(state / "anvil")
            anvil = await stack.enter_async_context(
                start_anvil(
                    hardfork=options.hardfork,
                    state_path=anvil_dir / "state.json",
                    run_dir=anvil_dir,
                )
            )
            status.add("anvil", "running", url=anvil.rpc_url, chain_id=str(anvil.chain_id))
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=15))
            client = ChainClient(http, anvil.rpc_url)
            record = state / "deployment.json"
            deployment = await _deployment(client, record, anvil.accounts[0].private_key)
            status.add(
                "contracts",
                "deployed",
                registry=deployment.addresses.registry,
                scope=deployment.addresses.scope,
                epoch_counter=deployment.addresses.epoch_counter,
                record=str(record),
            )
            pki = await trio.to_thread.run_sync(_dev_pki, state / "pki")
            status.add("pki", "ready", dir=str(state / "pki"))

            tcti: str | None = None
            if not options.swtpm:
                status.add("swtpm", "off")
            else:
                try:
                    swtpm_binary()
                except BinaryNotFound:
                    status.add("swtpm", "not installed")
                else:
                    swtpm_dir = _private_dir(state / "swtpm")
                    tpm = await stack.enter_async_context(
                        start_swtpm(tpm_state_dir=swtpm_dir / "tpm-state", run_dir=swtpm_dir)
                    )
                    tcti = tpm.tcti
                    status.add("swtpm", "running", tcti=tpm.tcti)

            broker_port = pick_port()
            issuer = f"http://127.0.0.1:{broker_port}"
            iam = deployed_iam_config(bucket=DEV_BUCKET, issuer=issuer)
            s3 = await stack.enter_async_context(
                start_seaweedfs(
                    iam=iam, bucket=DEV_BUCKET, run_dir=_private_dir(state / "seaweedfs")
                )
            )
            status.add("seaweedfs", "running", url=s3.s3_endpoint, bucket=DEV_BUCKET)

            signer_url = await _start_signer(
                nursery,
                status,
                state=state,
                pki=pki,
                rpc_url=anvil.rpc_url,
                record=record,
                issuer=issuer,
                s3_endpoint=s3.s3_endpoint,
                role_arn=iam.role(DEV_ROLE_NAME).arn,
                tcti=tcti,
                legacy_master_secret=options.legacy_master_secret,
            )
            smtp = await _start_smtp_sink(stack, status, state)
            passkey_port = pick_port()
            passkey_origin = f"http://localhost:{passkey_port}"
            # the relay pays for email-only operators' registrations: the last dev account
            relay_key = _private_dir(state / "broker") / "relay.key"
            write_private(relay_key, anvil.accounts[-1].private_key + "\n")
            broker = Restartable(
                nursery,
                partial(
                    run_broker,
                    broker_config(
                        state=state,
                        port=broker_port,
                        chain_id=anvil.chain_id,
                        rpc_url=anvil.rpc_url,
                        record=record,
                        smtp=smtp,
                        signer_url=signer_url,
                        pki=pki,
                        passkey_port=passkey_port,
                        relay_key=relay_key,
                        device_lifetime=options.device_lifetime,
                    ),
                ),
            )
            await broker.start()
            status.add("broker", "running", url=issuer, passkey_origin=passkey_origin)
            worker_url, worker_config = await _start_worker(
                nursery,
                status,
                state=state,
                broker_url=issuer,
                rpc_url=anvil.rpc_url,
                record=record,
                signer_url=signer_url,
                pki=pki,
                s3_endpoint=s3.s3_endpoint,
            )
            controls = StackControls(
                state_dir=state,
                status=status,
                broker=broker,
                broker_url=issuer,
                worker_url=worker_url,
                rpc_url=anvil.rpc_url,
                record=record,
                maildir=state / "mail",
                worker_config=worker_config,
                passkey_origin=passkey_origin,
                pki_dir=state / "pki",
                nursery=nursery,
                on_daemon_exit=nursery.cancel_scope.cancel,
            )
            status.controls = controls
            status.env.update(
                {
                    "AGENTKEYS_DEV_STATE_DIR": str(state),
                    "AGENTKEYS_CHAIN_PROFILE": "anvil",
                    "AGENTKEYS_CHAIN_RPC_URL": anvil.rpc_url,
                    "AGENTKEYS_CHAIN_CHAIN_ID": str(anvil.chain_id),
                    "AGENTKEYS_CHAIN_DEPLOYMENT": str(record),
                    "AGENTKEYS_DEV_S3_ENDPOINT": s3.s3_endpoint,
                    "AGENTKEYS_DEV_BUCKET": DEV_BUCKET,
                    "AGENTKEYS_DEV_SIGNER_URL": signer_url,
                    "AGENTKEYS_DEV_PKI_DIR": str(state / "pki"),
                }
            )
            status.env["AGENTKEYS_DEV_BROKER_URL"] = issuer
            status.env["AGENTKEYS_DEV_WORKER_URL"] = worker_url
            status.env["AGENTKEYS_DEV_MAILDIR"] = str(state / "mail")
            status.env["AGENTKEYS_DEV_PASSKEY_ORIGIN"] = passkey_origin
            status.env["AGENTKEYS_DEV_ROLE_ARN"] = iam.role(DEV_ROLE_NAME).arn
            upstream_key = "sk-dev-" + secrets.token_urlsafe(24)
            upstream_url = await nursery.start(serve_upstream, DemoUpstream(key=upstream_key))
            status.add("openai-stand-in", "running", url=upstream_url)
            status.env["AGENTKEYS_DEV_OPENAI_UPSTREAM"] = upstream_url
            status.env["AGENTKEYS_DEV_OPENAI_KEY"] = upstream_key
            setup_file = state / "daemon" / DAEMON_SETUP_FILE
            setup = options.daemon
            if setup is None and setup_file.exists():  # left by an earlier run
                setup = _overridden(await _wait_for_setup(setup_file), options)
            if setup is not None:
                await controls.start_daemon(setup)
            else:
                status.add("daemon", "waiting", note=WAITING_NOTE)
            controls.save()
            task_status.started(status)
            if setup is None:
                await controls.start_daemon(_overridden(await _wait_for_setup(setup_file), options))
            await trio.sleep_forever()
    finally:
        # synchronous on purpose: runs even while cancelled
        status.components = {name: {"state": "stopped"} for name in status.components}
        if (state / STATUS_FILE).exists():
            write_private(state / STATUS_FILE, json.dumps(status.to_json(), indent=2) + "\n")
        pid_file.unlink(missing_ok=True)
        if status.controls is not None:
            for directory in status.controls.cleanup:
                shutil.rmtree(directory, ignore_errors=True)


async def serve_until_signalled(
    options: DevUpOptions, on_started: Callable[[StackStatus], None]
) -> None:
    """Run the stack until SIGINT (Ctrl-C) or SIGTERM (``dev down``), then stop everything.

    A signal during start-up aborts the start (what was started is stopped). Must run in the
    main thread (signal handling).
    """
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def watch() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)

            async def stack(*, task_status: trio.TaskStatus[StackStatus]) -> None:
                await run_dev_stack(options, task_status=task_status)
                nursery.cancel_scope.cancel()  # the stack ended by itself (daemon stopped)

            status: StackStatus = await nursery.start(stack)
            on_started(status)
            await trio.sleep_forever()  # keeps the signal receiver open
