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
7. the SMTP sink, broker, worker and daemon: each is started when its package provides its
   entry point, and listed as "not yet" otherwise (nothing is faked in its place).

The state directory holds ``dev-up.pid`` (the running ``dev up``), ``status.json`` (what runs
where) and ``env.sh`` (the ``export`` lines to ``source``). Every file is 0600 in 0700 dirs.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import signal
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import httpx
import trio

from agentkeys.chain import (
    ChainClient,
    ChainConfigError,
    Deployment,
    account_from_key,
    deploy_all,
    read_deployment_record,
)
from agentkeys.devstack import (
    DEV_ROLE_NAME,
    BinaryNotFound,
    pick_port,
    start_anvil,
    start_seaweedfs,
    start_swtpm,
    swtpm_binary,
)
from agentkeys.errors import AgentkeysError
from agentkeys.pki import Role, init_ca, issue_certificate
from agentkeys.service import ServerSettings
from agentkeys.worker.iam import dev_iam_config

__all__ = [
    "DEFAULT_STATE_DIR",
    "DEV_BUCKET",
    "DevStackError",
    "DevStackRunning",
    "DevUpOptions",
    "StackStatus",
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
    """

    state_dir: Path = DEFAULT_STATE_DIR
    swtpm: bool = True
    hardfork: str | None = None


@dataclass
class StackStatus:
    """What runs where (``status.json``) and the environment for clients (``env.sh``)."""

    state_dir: Path
    pid: int
    components: dict[str, dict[str, str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, state: str, **details: str) -> None:
        """Record a component (``running``, ``not yet``, ``not installed``, …)."""
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


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()}\n")
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


def _optional_entry(module: str, name: str) -> Callable[..., Any] | None:
    """``module.name`` when that package already provides it, else None (shown "not yet")."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if callable(found) else None


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
    service = await nursery.start(partial(run_signer, config))
    bound = service.bound
    url = bound.url if bound is not None else ""
    status.add("signer", "running", url=url, tls="mutual", seal=config.keys.seal_backend)
    return str(url)


async def _start_smtp_sink(
    stack: AsyncExitStack, status: StackStatus, state: Path
) -> tuple[str, int] | None:
    runner = _optional_entry("agentkeys.smtp_sink", "run_smtp_sink")
    if runner is None:
        status.add("smtp-sink", "not yet")
        return None
    sink = await stack.enter_async_context(runner(maildir=_private_dir(state / "mail")))
    host, port = str(sink.host), int(sink.port)
    status.add("smtp-sink", "running", url=f"smtp://{host}:{port}", maildir=str(state / "mail"))
    return host, port


async def _start_broker(
    nursery: trio.Nursery,
    status: StackStatus,
    *,
    state: Path,
    port: int,
    chain_id: int,
    rpc_url: str,
    record: Path,
    smtp: tuple[str, int] | None,
    signer_url: str,
    pki: Mapping[str, tuple[Path, Path]],
) -> None:
    run_broker = _optional_entry("agentkeys.broker", "run_broker")
    if run_broker is None or smtp is None:
        status.add("broker", "not yet")
        return
    from agentkeys.broker.config import (
        BrokerConfig,
        ChainSettings,
        EmailSettings,
        SignerLink,
        SiteSettings,
        StateSettings,
    )

    url = f"http://127.0.0.1:{port}"
    config = BrokerConfig(
        broker=ServerSettings(port=port, audit_log=state / "broker" / "audit" / "broker.jsonl"),
        state=StateSettings(dir=_private_dir(state / "broker") / "state"),
        site=SiteSettings(
            public_url=url, rp_id="localhost", origin=f"http://localhost:{port}", chain_id=chain_id
        ),
        chain=ChainSettings(rpc_url=rpc_url, deployment=record, poll_interval=0.5),
        email=EmailSettings(smtp_host=smtp[0], smtp_port=smtp[1]),
        signer=SignerLink(
            url=signer_url, ca=pki["ca"][0], cert=pki["broker"][0], key=pki["broker"][1]
        ),
    )
    await nursery.start(partial(run_broker, config))
    status.add("broker", "running", url=url)


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
) -> None:
    run_worker = _optional_entry("agentkeys.worker", "run_worker")
    if run_worker is None or status.components.get("broker", {}).get("state") != "running":
        status.add("worker", "not yet")
        return
    from agentkeys.worker.config import (
        CapSettings,
        ChainSettings,
        SignerSettings,
        StorageConfig,
        WorkerConfig,
    )

    port = pick_port()
    config = WorkerConfig(
        worker=ServerSettings(port=port, audit_log=_private_dir(state / "worker") / "audit.jsonl"),
        caps=CapSettings(audience="agentkeys-worker", jwks_url=f"{broker_url}/v1/cap/jwks.json"),
        chain=ChainSettings(rpc_url=rpc_url, deployment=record),
        signer=SignerSettings(
            url=signer_url, ca=pki["ca"][0], cert=pki["worker"][0], key=pki["worker"][1]
        ),
        storage=StorageConfig(bucket=DEV_BUCKET, endpoint=s3_endpoint),
    )
    await nursery.start(partial(run_worker, config))
    status.add("worker", "running", url=f"http://127.0.0.1:{port}")


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
            iam = dev_iam_config(bucket=DEV_BUCKET, issuer=issuer)
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
            )
            smtp = await _start_smtp_sink(stack, status, state)
            await _start_broker(
                nursery,
                status,
                state=state,
                port=broker_port,
                chain_id=anvil.chain_id,
                rpc_url=anvil.rpc_url,
                record=record,
                smtp=smtp,
                signer_url=signer_url,
                pki=pki,
            )
            await _start_worker(
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
            if _optional_entry("agentkeys.daemon", "run_daemon") is None:
                status.add("daemon", "not yet")
            else:
                status.add("daemon", "not yet", note="entry point found; wiring pending")

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
            if status.components.get("broker", {}).get("state") == "running":
                status.env["AGENTKEYS_DEV_BROKER_URL"] = issuer
            worker_url = status.components.get("worker", {}).get("url")
            if worker_url:
                status.env["AGENTKEYS_DEV_WORKER_URL"] = worker_url
            _write_private(state / ENV_FILE, status.env_script())
            _write_private(state / STATUS_FILE, json.dumps(status.to_json(), indent=2) + "\n")
            task_status.started(status)
            await trio.sleep_forever()
    finally:
        # synchronous on purpose: runs even while cancelled
        status.components = {name: {"state": "stopped"} for name in status.components}
        if (state / STATUS_FILE).exists():
            _write_private(state / STATUS_FILE, json.dumps(status.to_json(), indent=2) + "\n")
        pid_file.unlink(missing_ok=True)


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
            status: StackStatus = await nursery.start(run_dev_stack, options)
            on_started(status)
            await trio.sleep_forever()
