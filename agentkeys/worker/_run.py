"""Wiring a :class:`WorkerCore` from :class:`WorkerConfig` with the real dependencies.

Used by the microservice (:func:`run_worker`), the Lambda handler and the eager migration
tool: the chain client over httpx JSON-RPC, the signer over mutual TLS (role ``worker``,
expecting role ``signer``), the cap key set from a file or the broker (https, optionally
pinned to ``[caps] jwks_ca``), boto3 for S3.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import trio

from agentkeys.chain.client import ChainClient
from agentkeys.chain.deploy import read_deployment_record
from agentkeys.clients.signer import SignerClient
from agentkeys.jwks import JsonWebKeySet
from agentkeys.pki import Role
from agentkeys.pop import NonceRegistry
from agentkeys.service import BoundAddress, JsonLinesAudit, MemoryAudit, mtls_client
from agentkeys.service._audit import AuditSink
from agentkeys.worker._core import StorageSettings, WorkerCore
from agentkeys.worker._ports import (
    CapKeySource,
    FetchedCapKeys,
    StaticCapKeys,
    jwks_http_client,
)
from agentkeys.worker._service import WorkerService
from agentkeys.worker.config import WorkerConfig

__all__ = ["open_worker_core", "run_worker"]


@asynccontextmanager
async def open_worker_core(
    config: WorkerConfig, *, nonces: NonceRegistry | None = None
) -> AsyncIterator[WorkerCore]:
    """A core with its clients open; they are closed when the context exits.

    Raises:
        ChainConfigError, PkiFileError, InvalidKeyMaterial, InvalidEncoding: start-up.
    """
    deployment = await trio.to_thread.run_sync(read_deployment_record, config.chain.deployment)
    async with AsyncExitStack() as stack:
        chain_http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=10.0, trust_env=False)
        )
        signer_http = await stack.enter_async_context(
            mtls_client(
                base_url=config.signer.url,
                ca=config.signer.ca,
                cert=config.signer.cert,
                key=config.signer.key,
                expected_role=Role.SIGNER,
            )
        )
        cap_keys: CapKeySource
        if config.caps.jwks_file is not None:
            data = await trio.Path(config.caps.jwks_file).read_bytes()
            cap_keys = StaticCapKeys(JsonWebKeySet.from_json(data))
        else:
            assert config.caps.jwks_url is not None
            broker_http = await stack.enter_async_context(jwks_http_client(ca=config.caps.jwks_ca))
            cap_keys = FetchedCapKeys(broker_http, config.caps.jwks_url)
        yield WorkerCore(
            audience=config.caps.audience,
            cap_keys=cap_keys,
            chain=ChainClient(chain_http, config.chain.rpc_url, deployment.addresses),
            signer=SignerClient(signer_http),
            storage=StorageSettings(
                bucket=config.storage.bucket,
                endpoint=config.storage.endpoint,
                region=config.storage.region,
                shared_nonces=config.storage.shared_nonces,
            ),
            nonces=nonces,
        )


async def run_worker(
    config: WorkerConfig,
    *,
    task_status: trio.TaskStatus[WorkerService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the worker microservice until cancelled; ``task_status.started(service)``."""
    file_audit = (
        JsonLinesAudit(config.worker.audit_log) if config.worker.audit_log is not None else None
    )
    audit: AuditSink = file_audit if file_audit is not None else MemoryAudit()
    try:
        async with open_worker_core(config) as core:
            service = WorkerService(core=core, settings=config.worker, audit=audit)
            async with trio.open_nursery() as nursery:
                _: BoundAddress = await nursery.start(service.serve)
                task_status.started(service)
    finally:
        if file_audit is not None:
            file_audit.close()
