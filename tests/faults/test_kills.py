"""Kill each component under load; explicit errors, nothing half-written, recovery by itself.

One stack (signer, broker, worker and the daemon each in their own process; anvil and
SeaweedFS as launched by agentkeys.devstack) under continuous load on both client paths
(worker fetches and stores as the CLI's sidecar backend makes them, and agent requests
through the daemon). For each component in turn: kill it during the load, check every
answer meanwhile is a success or an explicit ``{error, reason}`` refusal (never a 500, a
vague code or a hang), start the killed one again on the same port and state — and only
that one — and check that both paths succeed again without touching the others. At the
end every credential ever acknowledged is read back intact.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from agentkeys.cap import CapOp
from tests.faults._load import Load, Outcomes, verify_all_readable, warm
from tests.faults._stack import (
    UPSTREAM_PATH,
    ProcessStack,
    Relaunched,
    kill_pid,
    process_stack,
    running_daemon,
    store_credentials,
)

CACHED = ["svc-0", "svc-1", "svc-2"]
COMPONENTS = ["worker", "signer", "broker", "seaweedfs", "chain"]
UNDER_FAULT = 2.0  # seconds of load while the component is down
RECOVERY = 45.0  # generous: a hang guard, not a performance bound


async def _recovered(stack: ProcessStack, daemon_url: str, name: str) -> None:
    """Until a worker fetch and a daemon cache miss both succeed and the daemon is ready.

    Raises:
        AssertionError: not within :data:`RECOVERY` seconds (with the last answers).
    """
    last: list[str] = []
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        with trio.move_on_after(RECOVERY):
            while True:
                try:
                    fetch = await stack.worker_call(CapOp.FETCH, CACHED[0])
                except httpx.TransportError as exc:
                    last = [f"worker fetch: {type(exc).__name__}"]
                    await trio.sleep(0.2)
                    continue
                miss = await http.get(f"{daemon_url}/miss-{name}{UPSTREAM_PATH}")
                ready = await http.get(f"{daemon_url}/readyz")
                answers = (fetch, miss, ready)
                if all(r.status_code == 200 for r in answers):
                    return
                last = [f"{r.status_code} {r.text[:200]}" for r in answers]
                await trio.sleep(0.2)
    raise AssertionError(f"no recovery after restarting the {name}: {last}")


@dataclass
class Seen:
    """What each path answered while one component was down."""

    worker: Outcomes  # worker fetches (the sidecar backend's path)
    stores: Outcomes  # worker stores
    daemon: Outcomes  # daemon requests for cached credentials
    misses: Outcomes  # daemon requests that need a fresh fetch

    @property
    def bad(self) -> list[str]:
        return [*self.worker.bad, *self.stores.bad, *self.daemon.bad, *self.misses.bad]

    def summary(self) -> dict[str, object]:
        return {
            "worker": {**self.worker.codes, **self.worker.transport},
            "stores": {**self.stores.codes, **self.stores.transport},
            "daemon cached": (self.daemon.ok, dict(self.daemon.codes)),
            "daemon miss": dict(self.misses.codes),
            "reasons": {
                **self.worker.reasons,
                **self.stores.reasons,
                **{f"daemon {k}": v for k, v in self.misses.reasons.items()},
            },
        }


def _killer(
    stack: ProcessStack, name: str, relaunched: list[Relaunched]
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """(kill, restart) for ``name``."""
    if name in stack.children:
        child = stack.children[name]

        async def kill_child() -> None:
            assert await child.kill() == -signal.SIGKILL

        return kill_child, child.start
    if name == "seaweedfs":
        pid, port = stack.s3.pid, stack.s3.ports.s3
        how, log = signal.SIGKILL, stack.s3.log_path
    else:  # the chain: stopped (SIGTERM writes its state), as a node restart would
        pid, port = stack.anvil.pid, stack.anvil.port
        how, log = signal.SIGTERM, stack.anvil.log_path
    again = Relaunched.capture(pid, log)
    relaunched.append(again)

    async def kill_launched() -> None:
        await kill_pid(pid, how)

    async def restart() -> None:
        await again.start(port)

    return kill_launched, restart


async def test_kill_each_component_under_load(tmp_path: Path) -> None:
    relaunched: list[Relaunched] = []
    report: dict[str, Seen] = {}
    async with process_stack(tmp_path / "stack") as stack:
        misses = [f"miss-{name}" for name in COMPONENTS]
        expected = await store_credentials(stack, CACHED + misses)
        exes = [await trio.to_thread.run_sync(os.path.realpath, sys.executable)]
        try:
            async with running_daemon(stack, services=CACHED + misses, exes=exes) as daemon:
                await warm(daemon.url, CACHED)
                load = Load(stack, daemon.url, CACHED)
                async with trio.open_nursery() as nursery:
                    await nursery.start(load.run)
                    for name in COMPONENTS:
                        kill, restart = _killer(stack, name, relaunched)
                        load.reset()
                        await kill()
                        load.miss_service = f"miss-{name}"
                        await trio.sleep(UNDER_FAULT)
                        down = (load.worker, load.stores, load.daemon, load.misses)
                        load.miss_service = None
                        await restart()
                        await _recovered(stack, daemon.url, name)
                        report[name] = Seen(*down)
                    nursery.cancel_scope.cancel()
                problems = await verify_all_readable(stack, expected, load.writes)
        finally:
            with trio.CancelScope(shield=True):
                for again in relaunched:
                    await again.stop()
    for name, seen in report.items():
        print(name, seen.summary())
    for name, seen in report.items():
        assert not seen.bad, f"{name}: vague or 500 answers: {seen.bad[:3]}"
    # each fault was seen by the path that depends on it, with a code naming it
    assert report["worker"].worker.transport, report["worker"].summary()
    assert report["worker"].misses.codes, report["worker"].summary()
    for name in ("signer", "seaweedfs", "chain"):
        assert report[name].worker.codes or report[name].stores.codes, report[name].summary()
    # a dead signer or S3 is "not reached" (503 …_unavailable); a request cut by the kill
    # mid-exchange (e.g. mid TLS handshake) may still read as a wrong answer (502)
    for name, code in (("signer", "signer_unavailable"), ("seaweedfs", "storage_unavailable")):
        codes = report[name].worker.codes + report[name].stores.codes
        assert code in codes, report[name].summary()
    assert report["broker"].misses.codes, report["broker"].summary()
    # the daemon kept serving what it had cached whatever was down
    for name, seen in report.items():
        assert seen.daemon.ok > 0, f"{name}: the daemon served nothing from its cache"
        assert not seen.daemon.codes, f"{name}: cached credentials refused: {seen.daemon.codes}"
    assert problems == []
