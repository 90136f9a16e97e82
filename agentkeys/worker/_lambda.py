"""The worker as an AWS Lambda function behind an API Gateway HTTP API (payload v2.0).

``handler(event, context)`` is the Lambda entry point: it runs one Trio event loop per
invocation over the same :class:`~agentkeys.worker._core.WorkerCore` as the microservice.
The configuration is read once per container from the TOML file named by
``AGENTKEYS_WORKER_CONFIG`` plus the ``AGENTKEYS_<SECTION>_<OPTION>`` overlay; the K10 proof
nonce registry lives as long as the container. (In memory, nonces are single-use per
container; with ``[storage] shared_nonces`` each nonce is also spent as a create-only marker
object in the bucket, which refuses a replay to another container - see docs/worker.md.)

:func:`handle_event` is the pure mapping event → response over a given core: route and
method, body size and media type, base64 bodies, and ``{error, reason}`` answers for every
:class:`~agentkeys.errors.AgentkeysError`; anything else is a bare 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from agentkeys.config import ConfigError, load_config
from agentkeys.errors import AgentkeysError
from agentkeys.pop import NonceRegistry
from agentkeys.service.errors import (
    BodyTooLarge,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
)
from agentkeys.worker._core import WorkerCore
from agentkeys.worker._run import open_worker_core
from agentkeys.worker._service import ROUTES
from agentkeys.worker.config import WorkerConfig

__all__ = ["CONFIG_ENV", "handle_event", "handler"]

CONFIG_ENV = "AGENTKEYS_WORKER_CONFIG"
_log = logging.getLogger("agentkeys.worker.lambda")
_HEADERS = {
    "content-type": "application/json",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
_state: dict[str, Any] = {}


def _response(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": dict(_HEADERS),
        "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
        "isBase64Encoded": False,
    }


def _event_body(event: Mapping[str, Any], limit: int) -> bytes:
    raw = event.get("body")
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise UnsupportedMediaType("the event body must be a string")
    if len(raw) > 2 * limit:
        raise BodyTooLarge("request body too large")
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise UnsupportedMediaType("the event body is not valid base64") from None
    else:
        body = raw.encode("utf-8")
    if len(body) > limit:
        raise BodyTooLarge("request body too large")
    return body


async def handle_event(
    core: WorkerCore, event: Mapping[str, Any], *, max_body_bytes: int = 64 * 1024
) -> dict[str, Any]:
    """Answer one API Gateway HTTP API (v2.0) event with ``core``.

    Header names are matched case-insensitively; a body must be ``application/json``.
    """
    audit: dict[str, Any] = {}
    try:
        http = event.get("requestContext", {}).get("http", {})
        path = event.get("rawPath") or http.get("path")
        method = http.get("method")
        if not isinstance(path, str) or path not in ROUTES:
            if path == "/v1/health" and method == "GET":
                return _response(200, {"status": "ok"})
            raise NotFound("no such route")
        if method != "POST":
            raise MethodNotAllowed("method not allowed on this route")
        raw_headers = event.get("headers") or {}
        headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
        body = _event_body(event, max_body_bytes)
        if body and headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise UnsupportedMediaType("request bodies must be application/json")
        answer = await core.execute(ROUTES[path], headers, body, audit)
        _log.info("worker %s ok %s", path, json.dumps(audit, sort_keys=True, default=str))
        return _response(200, answer)
    except AgentkeysError as exc:
        fields = json.dumps(audit, sort_keys=True, default=str)
        _log.info("worker refused %s: %s", exc.error, fields)
        return _response(exc.status, exc.to_json())
    except Exception as exc:
        _log.error(
            "worker: unhandled %s\n%s",
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        return _response(500, {"error": "internal_error", "reason": "internal error"})


def _config() -> WorkerConfig:
    config = _state.get("config")
    if not isinstance(config, WorkerConfig):
        path = os.environ.get(CONFIG_ENV)
        config = load_config(WorkerConfig, path=Path(path) if path else None)
        _state["config"] = config
        _state["nonces"] = NonceRegistry()
    return config


async def _invoke(event: Mapping[str, Any], config: WorkerConfig) -> dict[str, Any]:
    async with open_worker_core(config, nonces=_state["nonces"]) as core:
        return await handle_event(core, event, max_body_bytes=config.worker.max_body_bytes)


def handler(event: Mapping[str, Any], context: object) -> dict[str, Any]:
    """The Lambda entry point (``agentkeys.worker.lambda_handler``)."""
    try:
        config = _config()
    except (ConfigError, AgentkeysError) as exc:
        _log.error("worker configuration unusable: %s", exc.reason)
        return _response(500, {"error": "config_error", "reason": "worker is misconfigured"})
    try:
        return trio.run(_invoke, event, config)
    except AgentkeysError as exc:
        _log.error("worker start-up failed: %s (%s)", exc.error, exc.reason)
        return _response(503, {"error": exc.error, "reason": exc.reason})


def reset_for_tests() -> None:
    """Forget the cached configuration and nonce registry (a fresh container)."""
    _state.clear()
