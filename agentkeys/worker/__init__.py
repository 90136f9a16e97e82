"""The credentials-service worker (SPEC.md sections 4, 5, 7 worker and 9).

One core (:class:`WorkerCore`) behind two front ends: the Hypercorn/Quart-Trio
microservice (:class:`WorkerService`, :func:`run_worker`) and the AWS Lambda handler
(:func:`lambda_handler`, API Gateway HTTP API v2 events). docs/worker.md has the wire
format, the checks in order and the storage rules.
"""

from agentkeys.worker._checks import ChainFacts, check_chain, require_device
from agentkeys.worker._core import (
    CAP_HEADER,
    MAX_CREDENTIAL_BYTES,
    POP_HEADER,
    StorageSettings,
    WorkerCore,
)
from agentkeys.worker._lambda import handle_event
from agentkeys.worker._lambda import handler as lambda_handler
from agentkeys.worker._ports import (
    CapKeySource,
    CapKeysUnavailable,
    ChainReader,
    FetchedCapKeys,
    StaticCapKeys,
)
from agentkeys.worker._run import open_worker_core, run_worker
from agentkeys.worker._s3 import ObjectStore
from agentkeys.worker._service import AUTHORIZATION, ROUTES, WorkerService
from agentkeys.worker._vault import (
    Fetched,
    MigrationAction,
    MigrationReport,
    Opened,
    Source,
    Vault,
)
from agentkeys.worker.config import WorkerConfig

__all__ = [
    "AUTHORIZATION",
    "CAP_HEADER",
    "MAX_CREDENTIAL_BYTES",
    "POP_HEADER",
    "ROUTES",
    "CapKeySource",
    "CapKeysUnavailable",
    "ChainFacts",
    "ChainReader",
    "Fetched",
    "FetchedCapKeys",
    "MigrationAction",
    "MigrationReport",
    "ObjectStore",
    "Opened",
    "Source",
    "StaticCapKeys",
    "StorageSettings",
    "Vault",
    "WorkerConfig",
    "WorkerCore",
    "WorkerService",
    "check_chain",
    "handle_event",
    "lambda_handler",
    "open_worker_core",
    "require_device",
    "run_worker",
]
