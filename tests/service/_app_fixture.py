"""A small real service used by the service-base tests (not a fake of any agentkeys service)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from agentkeys.errors import AgentkeysError
from agentkeys.pki import Role
from agentkeys.service import PUBLIC, Call, JsonObject, MemoryAudit, Route, ServiceApp, allow


class Conflict(AgentkeysError):
    error: ClassVar[str] = "test_conflict"
    status: ClassVar[int] = 409


@dataclass(frozen=True)
class EchoRequest:
    text: str
    count: int = 1
    tags: tuple[str, ...] = ()


async def echo(call: Call) -> JsonObject:
    req = call.decode(EchoRequest)
    call.audit["count"] = req.count
    return {
        "text": req.text * req.count,
        "tags": list(req.tags),
        "role": call.peer.role.value if call.peer.role else None,
    }


async def whoami(call: Call) -> JsonObject:
    return {"role": call.peer.role.value if call.peer.role else None}


async def conflict(call: Call) -> JsonObject:
    raise Conflict("already there")


async def crash(call: Call) -> JsonObject:
    raise RuntimeError("secret-material-must-not-leak")


ROUTES = (
    Route("echo", "POST", "/echo", echo),
    Route("broker_only", "GET", "/broker-only", whoami),
    Route("conflict", "GET", "/conflict", conflict),
    Route("crash", "GET", "/crash", crash),
    Route("public", "GET", "/public", whoami),
)

AUTHORIZATION = {
    "echo": allow(Role.BROKER, Role.WORKER),
    "broker_only": allow(Role.BROKER),
    "conflict": allow(Role.BROKER, Role.WORKER),
    "crash": allow(Role.BROKER, Role.WORKER),
    "public": PUBLIC,
}


def make_app(audit: MemoryAudit, *, max_body_bytes: int = 1024) -> ServiceApp:
    return ServiceApp("testsvc", ROUTES, AUTHORIZATION, audit=audit, max_body_bytes=max_body_bytes)
