"""SeaweedFS (``weed mini``): the development S3 object store with IAM/STS (SPEC section 10).

``start_seaweedfs`` runs master, volume, filer, S3 (with STS on the S3 port)
and the admin server in one ``weed mini`` process, all on 127.0.0.1. Every
HTTP port p needs p + 10000 free too (SeaweedFS' gRPC ports). Authentication:

* a static admin identity (random per run unless given) in ``-s3.config``;
* optionally an advanced IAM document (``IamConfig``, see ``iam.py``) in
  ``-s3.iam.config``: OIDC provider, STS, roles and per-actor policies.

Both files hold secrets and are written 0600 in the run directory; nothing
secret is put on the command line. SeaweedFS only warns about IAM entries it
cannot load; the launcher turns such warnings into a start failure.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import trio
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from agentkeys._files import write_private
from agentkeys.devstack._binaries import weed_binary
from agentkeys.devstack._ports import LOOPBACK, pick_ports
from agentkeys.devstack._process import LaunchPlan, launch, log_tail
from agentkeys.devstack._rundir import run_directory
from agentkeys.devstack.errors import ComponentStartFailed
from agentkeys.devstack.iam import AdminCredentials, IamConfig, s3_identities_document

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

GRPC_OFFSET = 10000
REGION = "us-east-1"
_GRACE = 10.0
_ATTEMPTS = 3
_IAM_LOAD_WARNINGS = (
    "failed to create provider",
    "failed to register provider",
    "skipping provider",
    "validation failed for provider",
    "failed to create policy",
    "failed to create role",
)


@dataclass(frozen=True)
class SeaweedPorts:
    """The HTTP ports of one ``weed mini``; each gRPC port is the HTTP port + 10000."""

    master: int
    volume: int
    filer: int
    s3: int
    admin: int


@dataclass(frozen=True)
class SeaweedFS:
    """A running ``weed mini``.

    Attributes:
        s3_endpoint: S3 (and STS) endpoint, ``http://127.0.0.1:<s3 port>``.
        filer_url: the filer's HTTP endpoint.
        ports: all HTTP ports.
        admin: the static admin identity (full access; for setup and inspection).
        region: the region name clients should sign with.
        bucket: the bucket created at startup, or None.
        iam: the advanced IAM document in force, or None (static identities only).
        data_dir: SeaweedFS' data (reuse the run directory to keep objects).
        log_path: SeaweedFS' log.
    """

    s3_endpoint: str
    filer_url: str
    ports: SeaweedPorts
    admin: AdminCredentials
    region: str
    bucket: str | None
    iam: IamConfig | None
    data_dir: Path
    log_path: Path
    _process: trio.Process = field(repr=False, compare=False)

    @property
    def pid(self) -> int:
        """Process id of the launched program (the leader of its process group)."""
        return self._process.pid

    def admin_client(self) -> S3Client:
        """A boto3 S3 client with the admin identity (blocking: use it in a thread)."""
        return s3_client(
            self.s3_endpoint,
            access_key=self.admin.access_key,
            secret_key=self.admin.secret_key,
            region=self.region,
        )


def s3_client(
    endpoint: str,
    *,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    region: str = REGION,
) -> S3Client:
    """A path-style boto3 S3 client for ``endpoint`` (blocking: use it in a thread)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=session_token,
        region_name=region,
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def _write_private_json(path: Path, document: dict[str, Any]) -> None:
    write_private(path, json.dumps(document, indent=1))


@contextmanager
def _socket_directory() -> Iterator[Path]:
    # Unix socket paths must stay short (108 bytes); run dirs under pytest's
    # tmp_path can be long, so the filer/S3 sockets get their own short dir.
    path = Path(tempfile.mkdtemp(prefix="ak-weed-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_grpc_sockets(ports: SeaweedPorts) -> None:
    # weed puts its gRPC Unix sockets in /tmp (not configurable) and leaves them.
    roles = {"master": ports.master, "volume": ports.volume, "filer": ports.filer,
             "s3": ports.s3, "admin": ports.admin}  # fmt: skip
    for role, port in roles.items():
        stale = Path(f"/tmp/seaweedfs-{role}-grpc-{port + GRPC_OFFSET}.sock")  # noqa: S108
        if stale.is_socket():
            stale.unlink(missing_ok=True)


async def _answers(client: httpx.AsyncClient, url: str, *, want_ok: bool) -> bool:
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 if want_ok else response.status_code < 500


def _create_bucket(client: S3Client, bucket: str) -> None:
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    client.head_bucket(Bucket=bucket)


async def _ensure_bucket(store: SeaweedFS, bucket: str, limiter: trio.CapacityLimiter) -> None:
    last = ""
    while True:
        try:
            await trio.to_thread.run_sync(
                lambda: _create_bucket(store.admin_client(), bucket), limiter=limiter
            )
            return
        except (ClientError, BotoCoreError) as exc:
            last = type(exc).__name__
        if store._process.returncode is not None:
            raise ComponentStartFailed(
                f"SeaweedFS exited while creating bucket {bucket!r} ({last}):\n"
                + log_tail(store.log_path)
            )
        await trio.sleep(0.1)


def _check_iam_loaded(log_path: Path, offset: int) -> None:
    tail = log_tail(log_path, start=offset, lines=400)
    bad = [line for line in tail.splitlines() if any(w in line.lower() for w in _IAM_LOAD_WARNINGS)]
    if bad:
        raise ComponentStartFailed(
            "SeaweedFS rejected parts of the IAM config:\n" + "\n".join(bad[-10:])
        )


@asynccontextmanager
async def start_seaweedfs(
    *,
    iam: IamConfig | None = None,
    bucket: str | None = None,
    admin: AdminCredentials | None = None,
    run_dir: Path | None = None,
    startup_timeout: float = 30.0,
) -> AsyncIterator[SeaweedFS]:
    """Run ``weed mini`` until the block ends; it is stopped however the block is left.

    Args:
        iam: the advanced IAM/STS document (e.g. ``dev_iam_config(...)``); None
            runs with the static admin identity only.
        bucket: a bucket to create (with the admin identity) before yielding.
        admin: the admin identity; None generates a random one.
        run_dir: holds ``weed.log``, the two config files and ``data/`` (reuse it
            to keep objects across restarts); None uses a temporary directory
            removed afterwards.
        startup_timeout: seconds for S3 and the filer to answer and the bucket
            to exist.

    Raises:
        BinaryNotFound: weed is not installed.
        ComponentStartFailed: weed exited, was not ready in time, or ignored part
            of the IAM config (with log tail).
        IamConfigError: ``iam`` is inconsistent.
    """
    binary = weed_binary()
    admin = admin or AdminCredentials.generate()
    iam_document = iam.to_json() if iam is not None else None
    with run_directory(run_dir, "seaweedfs") as directory, _socket_directory() as sockets:
        data_dir = directory / "data"
        data_dir.mkdir(mode=0o700, exist_ok=True)
        # weed mini saves its options here and reloads them; ours are all explicit.
        (data_dir / "mini.options").unlink(missing_ok=True)
        config_dir = directory / "weed-config"  # empty: no stray security.toml etc.
        config_dir.mkdir(mode=0o700, exist_ok=True)
        log_path = directory / "weed.log"
        identities_path = directory / "s3-identities.json"
        _write_private_json(identities_path, s3_identities_document(admin))
        iam_path = directory / "s3-iam.json"
        if iam_document is not None:
            _write_private_json(iam_path, iam_document)
        start_offset = log_path.stat().st_size if log_path.exists() else 0
        used: list[SeaweedPorts] = []

        def plan() -> LaunchPlan[SeaweedPorts]:
            ports = SeaweedPorts(*pick_ports(5, offsets=(0, GRPC_OFFSET)))
            used.append(ports)
            argv = [
                str(binary), "-logtostderr=true", f"-config_dir={config_dir}",
                "mini",
                f"-dir={data_dir}",
                f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
                f"-master.port={ports.master}", f"-volume.port={ports.volume}",
                f"-filer.port={ports.filer}", f"-s3.port={ports.s3}",
                f"-admin.port={ports.admin}",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0",
                f"-s3.config={identities_path}",
                f"-s3.localSocket={sockets / 's3.sock'}",
                f"-filer.localSocket={sockets / 'filer.sock'}",
            ]  # fmt: skip
            if iam_document is not None:
                argv.append(f"-s3.iam.config={iam_path}")
            return LaunchPlan(ports=ports, argv=tuple(argv))

        try:
            async with httpx.AsyncClient(timeout=2.0) as http:

                async def ready(ports: SeaweedPorts) -> bool:
                    return await _answers(
                        http, f"http://{LOOPBACK}:{ports.s3}/", want_ok=False
                    ) and await _answers(http, f"http://{LOOPBACK}:{ports.filer}/", want_ok=True)

                async with launch(
                    "SeaweedFS",
                    plan=plan,
                    ready=ready,
                    log_path=log_path,
                    startup_timeout=startup_timeout,
                    grace=_GRACE,
                    attempts=_ATTEMPTS,
                ) as (ports, process):
                    store = SeaweedFS(
                        s3_endpoint=f"http://{LOOPBACK}:{ports.s3}",
                        filer_url=f"http://{LOOPBACK}:{ports.filer}",
                        ports=ports,
                        admin=admin,
                        region=REGION,
                        bucket=bucket,
                        iam=iam,
                        data_dir=data_dir,
                        log_path=log_path,
                        _process=process,
                    )
                    if iam_document is not None:
                        _check_iam_loaded(log_path, start_offset)
                    if bucket is not None:
                        try:
                            with trio.fail_after(startup_timeout):
                                await _ensure_bucket(store, bucket, trio.CapacityLimiter(1))
                        except trio.TooSlowError:
                            raise ComponentStartFailed(
                                f"SeaweedFS did not create bucket {bucket!r} within "
                                f"{startup_timeout:g} s:\n{log_tail(log_path)}"
                            ) from None
                    yield store
        finally:
            for ports in used:
                _remove_grpc_sockets(ports)
