"""Load drivers for the fault tests and the rules every answer under a fault must follow."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import trio

from agentkeys.b64url import b64url_decode
from agentkeys.cap import CapOp
from agentkeys.devstack import s3_client
from tests.faults._stack import BUCKET, UPSTREAM_PATH, ProcessStack

# codes that say nothing about what failed
VAGUE = frozenset({"internal_error", "error", "unknown", "server_error", "worker_error"})


def explicit_error(response: httpx.Response) -> str | None:
    """The error code when ``response`` is an explicit refusal, else None.

    Explicit: a 4xx/5xx other than 500, a JSON object of exactly ``error`` and ``reason``
    (non-empty strings), and a code that names the cause.
    """
    if response.status_code < 400 or response.status_code == 500:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) != {"error", "reason"}:
        return None
    code, reason = body["error"], body["reason"]
    if not (isinstance(code, str) and code and isinstance(reason, str) and reason):
        return None
    return None if code in VAGUE else code


@dataclass
class Outcomes:
    """What one path answered: successes, explicit codes, transport failures, bad answers."""

    ok: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    transport: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # first reason seen per code

    def record(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            self.ok += 1
            return
        code = explicit_error(response)
        if code is None:
            self.bad.append(f"{response.status_code} {response.text[:300]}")
        else:
            self.codes[code] += 1
            self.reasons.setdefault(code, str(response.json()["reason"]))

    @property
    def failures(self) -> int:
        return sum(self.codes.values()) + sum(self.transport.values()) + len(self.bad)


@dataclass
class Writes:
    """Every secret a store attempted per service, in order, and the last acknowledged one."""

    attempted: dict[str, list[bytes]] = field(default_factory=dict)
    acked: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Load:
    """Concurrent clients on both client paths: the worker (as the CLI's sidecar backend
    calls it: cap + K10 PoP) and the daemon (an agent through the local proxy)."""

    stack: ProcessStack
    daemon_url: str
    cached: Sequence[str]
    writes: Writes = field(default_factory=Writes)
    worker: Outcomes = field(default_factory=Outcomes)
    stores: Outcomes = field(default_factory=Outcomes)
    daemon: Outcomes = field(default_factory=Outcomes)
    misses: Outcomes = field(default_factory=Outcomes)
    miss_service: str | None = None  # asked of the daemon only once set (a cache miss)

    def reset(self) -> None:
        self.worker, self.stores, self.daemon, self.misses = (
            Outcomes(),
            Outcomes(),
            Outcomes(),
            Outcomes(),
        )

    async def _worker_fetches(self) -> None:
        while True:
            try:
                response = await self.stack.worker_call(CapOp.FETCH, random.choice(self.cached))
            except httpx.TransportError as exc:
                self.worker.transport[type(exc).__name__] += 1
                await trio.sleep(0.05)
            else:
                self.worker.record(response)

    async def _worker_stores(self, service: str) -> None:
        while True:
            secret = f"sk-load-{os.urandom(6).hex()}".encode()
            self.writes.attempted.setdefault(service, []).append(secret)
            try:
                response = await self.stack.worker_call(CapOp.STORE, service, secret)
            except httpx.TransportError as exc:
                self.stores.transport[type(exc).__name__] += 1
                await trio.sleep(0.05)
                continue
            self.stores.record(response)
            if response.status_code == 200:
                self.writes.acked[service] = secret

    async def _daemon(self, http: httpx.AsyncClient) -> None:
        while True:
            if self.miss_service is not None:
                response = await http.get(f"{self.daemon_url}/{self.miss_service}{UPSTREAM_PATH}")
                self.misses.record(response)
                if response.status_code != 200:
                    await trio.sleep(0.05)
            service = random.choice(self.cached)
            response = await http.get(f"{self.daemon_url}/{service}{UPSTREAM_PATH}")
            self.daemon.record(response)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled."""
        async with (
            httpx.AsyncClient(timeout=30, trust_env=False) as http,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._worker_fetches)
            nursery.start_soon(self._worker_stores, "load-0")
            nursery.start_soon(self._worker_stores, "load-1")
            nursery.start_soon(self._daemon, http)
            nursery.start_soon(self._daemon, http)
            task_status.started()


async def verify_all_readable(
    stack: ProcessStack, expected: dict[str, bytes], writes: Writes
) -> list[str]:
    """Fetch every credential through the worker; the problems found (empty: all good).

    A service written under load must hold its last acknowledged secret or a later
    attempted one (a store cut by a fault may or may not have landed), never anything else.
    In the bucket (read with the admin identity), the actor's prefix holds exactly one
    object per service, each a whole 0x04 envelope (no temporary or partial object).
    """
    problems: list[str] = []
    wanted: dict[str, list[bytes]] = {name: [secret] for name, secret in expected.items()}
    for name, attempts in writes.attempted.items():
        acked = writes.acked.get(name)
        start = attempts.index(acked) if acked in attempts else 0
        wanted[name] = attempts[start:]
    for name, allowed in sorted(wanted.items()):
        response = await stack.worker_call(CapOp.FETCH, name)
        if response.status_code != 200:
            problems.append(f"{name}: {response.status_code} {response.text[:200]}")
            continue
        secret = b64url_decode(json.loads(response.text)["credential"])
        if secret not in allowed:
            problems.append(f"{name}: holds a secret that was never written last")
    objects = await trio.to_thread.run_sync(_bucket_objects, stack)
    prefix = f"bots/{stack.signing.operator}/credentials/"
    want = {f"{prefix}{name}.enc" for name in wanted}
    if set(objects) != want:
        problems.append(
            f"bucket keys differ: extra {set(objects) - want}, missing {want - set(objects)}"
        )
    for key, body in sorted(objects.items()):
        if len(body) < 33 or body[0] != 0x04:
            problems.append(f"{key}: not a whole 0x04 envelope ({len(body)} bytes)")
    return problems


def _bucket_objects(stack: ProcessStack) -> dict[str, bytes]:
    """Every object under the operator's prefix: {key: bytes} (blocking)."""
    s3 = s3_client(
        stack.s3.s3_endpoint,
        access_key=stack.s3.admin.access_key,
        secret_key=stack.s3.admin.secret_key,
    )
    out: dict[str, bytes] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"bots/{stack.signing.operator}/"
    )
    for page in pages:
        for item in page.get("Contents", []):
            key = item["Key"]
            out[key] = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return out


async def warm(daemon_url: str, services: Sequence[str]) -> None:
    """One successful request per service through the daemon (its credential is cached)."""
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        for name in services:
            response = await http.get(f"{daemon_url}/{name}{UPSTREAM_PATH}")
            assert response.status_code == 200, response.text
