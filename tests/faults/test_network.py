"""Network faults on loopback between the components: refused, slow, truncated.

A :class:`~tests.faults._stack.FaultProxy` (a TCP relay on 127.0.0.1) sits on each link a
client-facing answer depends on: worker → signer (mutual TLS), daemon → broker, daemon →
worker, daemon → an agent's upstream API. For each link and each fault the client gets an
explicit ``{error, reason}`` answer naming the cause within the configured timeouts (the
``fail_after`` guards catch hangs; they time nothing), and once the link is healthy again
the same request succeeds with nothing restarted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import trio

from agentkeys.cap import CapOp
from tests.faults._load import explicit_error, warm
from tests.faults._stack import (
    UPSTREAM_PATH,
    FaultProxy,
    Mode,
    ProcessStack,
    process_stack,
    running_daemon,
    store_credentials,
)

HANG_GUARD = 40.0  # the links' own timeouts are 10 s (service clients) and 3 s (upstream)
LINKS = ("signer", "broker", "worker", "upstream")
FAULTS = (Mode.REFUSE, Mode.TRUNCATE, Mode.SLOW)
CACHED = "svc-cached"
UPSTREAM_SERVICE = "svc-upstream"

# codes each link's faults must produce (the reason then names the peer and the failure)
EXPECTED = {
    "signer": {"signer_unavailable"},  # worker → signer (not reached: 503), as a client sees it
    "broker": {"credential_unavailable", "broker_unreachable"},  # daemon → broker
    "worker": {"credential_unavailable"},  # daemon → worker
    "upstream": {"upstream_failed", "upstream_timeout"},  # daemon → upstream
}


def _miss(link: str, mode: Mode, attempt: str = "") -> str:
    return f"net-{link}-{mode.value}{attempt}"


async def _ask(
    stack: ProcessStack, http: httpx.AsyncClient, daemon_url: str, link: str, service: str
) -> httpx.Response:
    """The request that crosses ``link``."""
    if link == "signer":
        return await stack.worker_call(CapOp.FETCH, CACHED)
    return await http.get(f"{daemon_url}/{service}{UPSTREAM_PATH}")


async def test_network_faults_are_explicit_and_heal(tmp_path: Path) -> None:
    seen: dict[tuple[str, str], tuple[int, str, str]] = {}
    healed: dict[tuple[str, str], int] = {}
    async with process_stack(tmp_path / "stack", proxies=True) as stack:
        misses = [
            _miss(link, mode, after)
            for link in ("broker", "worker")
            for mode in FAULTS
            for after in ("", "-after")
        ]
        await store_credentials(stack, [CACHED, UPSTREAM_SERVICE, *misses])
        exes = [await trio.to_thread.run_sync(os.path.realpath, sys.executable)]
        upstream_proxy = FaultProxy(target_port=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(upstream_proxy.serve)
            async with running_daemon(
                stack,
                services=[CACHED, *misses],
                exes=exes,
                routed={UPSTREAM_SERVICE: upstream_proxy.url},
            ) as daemon:
                upstream_proxy.target_port = daemon.upstream_port
                proxies = {**stack.proxies, "upstream": upstream_proxy}
                await warm(daemon.url, [CACHED, UPSTREAM_SERVICE])
                async with httpx.AsyncClient(timeout=60, trust_env=False) as http:

                    async def one(link: str, mode: Mode) -> None:
                        service = UPSTREAM_SERVICE if link == "upstream" else _miss(link, mode)
                        with trio.fail_after(HANG_GUARD):
                            response = await _ask(stack, http, daemon.url, link, service)
                        seen[link, mode.value] = (
                            response.status_code,
                            explicit_error(response) or f"NOT EXPLICIT: {response.text[:200]}",
                            response.text[:300],
                        )

                    async def heal(link: str, service: str) -> int:
                        """Until the request succeeds again; its status. (A service whose fetch
                        just failed stays refused for the daemon's negative TTL, 5 s: the
                        daemon paths heal with a service not asked during the fault, and
                        one negative-cached service is shown to heal by itself below.)"""
                        with trio.move_on_after(HANG_GUARD):
                            while True:
                                response = await _ask(stack, http, daemon.url, link, service)
                                if response.status_code == 200:
                                    break
                                await trio.sleep(0.5)
                        return response.status_code

                    # refused and truncated: one link at a time
                    for link in LINKS:
                        for mode in (Mode.REFUSE, Mode.TRUNCATE):
                            proxies[link].set_mode(mode)
                            await one(link, mode)
                            proxies[link].set_mode(Mode.PASS)
                            service = _miss(link, mode, "-after")
                            if link == "upstream":
                                service = UPSTREAM_SERVICE
                            healed[link, mode.value] = await heal(link, service)
                    # slow: the independent links at once (the daemon → worker request needs
                    # a healthy broker, so it runs in a second round)
                    for group in (("signer", "broker", "upstream"), ("worker",)):
                        for link in group:
                            proxies[link].set_mode(Mode.SLOW)
                        async with trio.open_nursery() as slow:
                            for link in group:
                                slow.start_soon(one, link, Mode.SLOW)
                        for link in group:
                            proxies[link].set_mode(Mode.PASS)
                        for link in group:
                            service = (
                                UPSTREAM_SERVICE
                                if link == "upstream"
                                else _miss(link, Mode.SLOW, "-after")
                            )
                            healed[link, Mode.SLOW.value] = await heal(link, service)
                    negative = await heal("broker", _miss("broker", Mode.REFUSE))
            nursery.cancel_scope.cancel()
    assert negative == 200
    for key, value in sorted(seen.items()):
        print(key, value)
    for (link, fault), (status, code, text) in seen.items():
        assert code in EXPECTED[link], f"{link}/{fault}: {status} {text}"
        if link == "signer":  # a transport failure is "retry later", not a wrong answer
            assert status == 503, f"{link}/{fault}: {status} {text}"
    assert healed == {key: 200 for key in seen}, healed
