"""The worker microservice: Hypercorn + Quart-Trio over :class:`WorkerCore`.

Routes (JSON; docs/worker.md has the wire format):

=================  ======  =======  ====================================================
route              method  access   does
=================  ======  =======  ====================================================
/v1/cred/fetch     POST    public*  dual read (v2, then v1) with lazy migration
/v1/cred/store     POST    public*  write 0x04 at the v2 key (master only)
/v1/cred/list      POST    public*  services of the actor, v2 winning over v1 (master only)
/v1/cred/teardown  POST    public*  delete both prefixes, all pages (master only)
/v1/health         GET     public   liveness
=================  ======  =======  ====================================================

\\* no transport identity is needed: every request is authorised by its cap and K10 proof
inside the core, which fails closed.
"""

from __future__ import annotations

import trio

from agentkeys.cap import CapOp
from agentkeys.service import (
    PUBLIC,
    AuditSink,
    BoundAddress,
    Call,
    Handler,
    JsonObject,
    Route,
    ServerSettings,
    ServerTls,
    ServiceApp,
    serve_http,
)
from agentkeys.worker._core import WorkerCore

__all__ = ["AUTHORIZATION", "WorkerService"]

AUTHORIZATION = {
    "cred_fetch": PUBLIC,
    "cred_store": PUBLIC,
    "cred_list": PUBLIC,
    "cred_teardown": PUBLIC,
    "health": PUBLIC,
}
"""The worker's authorization table (route name → access); caps authorise inside the core."""

ROUTES: dict[str, CapOp] = {
    "/v1/cred/fetch": CapOp.FETCH,
    "/v1/cred/store": CapOp.STORE,
    "/v1/cred/list": CapOp.LIST,
    "/v1/cred/teardown": CapOp.TEARDOWN,
}
"""Path → operation, shared with the Lambda front end."""


class WorkerService:
    """The microservice front end: owns its nursery and serves :attr:`app`.

    Args:
        core: the worker core (the caller owns the clients it holds).
        settings: listening options.
        audit: one event per request.
    """

    def __init__(self, *, core: WorkerCore, settings: ServerSettings, audit: AuditSink) -> None:
        self.core = core
        self._settings = settings
        routes = [
            Route(f"cred_{op.value}", "POST", path, self._handler(op))
            for path, op in ROUTES.items()
        ]
        routes.append(Route("health", "GET", "/v1/health", self._health))
        self.app = ServiceApp(
            "worker", routes, AUTHORIZATION, audit=audit,
            max_body_bytes=settings.max_body_bytes,
        )  # fmt: skip
        self.app.metrics.cache_counts_from(
            "sts_credentials", lambda: (core.credential_cache_hits, core.credential_cache_misses)
        )
        self._stop = trio.Event()

    def _handler(self, op: CapOp) -> Handler:
        async def handle(call: Call) -> JsonObject:
            call.audit["op"] = op.value
            return await self.core.execute(op, call.headers, call.body, call.audit)

        return handle

    async def _health(self, call: Call) -> JsonObject:
        return {"status": "ok"}

    def shutdown(self) -> None:
        """Ask :meth:`serve` to stop gracefully."""
        self._stop.set()

    async def serve(
        self, *, task_status: trio.TaskStatus[BoundAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled or :meth:`shutdown`; ``task_status.started(BoundAddress)``."""
        tls = ServerTls.from_settings(self._settings)
        await serve_http(
            self.app, self._settings, tls=tls, shutdown_trigger=self._stop.wait,
            task_status=task_status,
        )  # fmt: skip
