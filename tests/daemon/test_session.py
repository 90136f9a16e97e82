"""The daemon's own device session over the real stack (SPEC section 8; issue 15).

The broker gives device sessions a lifetime of :data:`LIFETIME` seconds, so that the
daemon renews many times within one test. One start of the real parts serves, in order:

0. a daemon configured for another actor than its device is bound to on chain gets no
   session it would use (logged), rather than minting refusals;
1. renewals across more than three lifetimes: ``/readyz`` stays ready, the session the
   daemon holds is always one the broker accepts, credentials keep being served;
2. the broker goes away: ``/readyz`` says ``session_expiring`` then ``session_invalid``,
   credentials (even cached ones) are refused with 503 ``session_unavailable``; the broker
   comes back and the daemon signs in again by itself;
3. the device is revoked on chain (the daemon is given no chain events: it learns it from
   the broker): at its next renewal ``/readyz`` says ``device_revoked``, nothing is served
   (403 ``device_revoked``), no session is obtained again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
import trio

from agentkeys.daemon.session import DeviceSession, SessionProblem
from agentkeys.devstack.upstream import DemoUpstream
from attest.device_key import SoftwareDeviceKey
from tests.daemon.conftest import REAL_KEY, Stack, open_daemon, open_real_parts, wait_until
from tests.service.conftest import Pki
from tests.services import Chain
from tests.worker.conftest import revoke

LIFETIME = 3


async def test_the_daemon_keeps_its_own_session(
    nursery: trio.Nursery,
    tmp_path: Path,
    upstream: DemoUpstream,
    pki: Pki,
    chain: Chain,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentkeys.daemon")
    async with (
        open_real_parts(
            nursery, pki, chain, tmp_path, services=["openai"], device_lifetime=LIFETIME
        ) as real,
        open_daemon(nursery, tmp_path, upstream, real) as stack,
    ):
        await a_misconfigured_identity_is_not_used(stack)
        await renews_across_lifetimes(stack)
        await broker_away_then_back(stack)
        await revoked_device_stops_the_daemon(stack)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "agentkeys.daemon")
    assert "device session renewed" in logged
    assert "not the configured identity.actor_omni " + "0b" * 32 in logged
    assert "the broker refused: HTTP 403 device_revoked" in logged
    assert "eyJ" not in logged  # no session token (a JWS) in the log
    assert REAL_KEY not in logged


async def ready(stack: Stack) -> tuple[int, list[str]]:
    async with stack.client() as client:
        answer = await client.get("/readyz")
    return answer.status_code, answer.json()["problems"]


async def readyz_says(stack: Stack, problem: str) -> None:
    """Poll ``/readyz`` until it answers 503 naming ``problem`` (a hang guard, not a timer)."""
    with trio.fail_after(LIFETIME * 3):
        while True:
            status, problems = await ready(stack)
            if problem in problems:
                assert status == 503
                return
            await trio.sleep(0.02)


async def a_misconfigured_identity_is_not_used(stack: Stack) -> None:
    assert stack.real is not None
    key = SoftwareDeviceKey.open(stack.real.key_path, create=False)
    async with httpx.AsyncClient(base_url=stack.broker.url, trust_env=False) as http:
        wrong = DeviceSession(
            broker=http, device_key=key, operator_omni=stack.real.operator_omni,
            actor_omni="0b" * 32,
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(wrong.run)
            assert wrong.problem() is SessionProblem.INVALID
            nursery.cancel_scope.cancel()
    await key.aclose()


async def renews_across_lifetimes(stack: Stack) -> None:
    session = stack.daemon.session
    assert session is not None
    broker = stack.broker.service
    assert broker is not None
    first = session.sign_ins
    held: set[bytes] = set()
    async with stack.client() as client:
        # every renewal: still ready, and the token held is one the broker accepts now
        while session.sign_ins < first + 3 * 2 + 1:  # renewed at half-life: > 3 lifetimes
            assert await ready(stack) == (200, [])
            token = session.token()
            held.add(token)
            now = time.time()
            info = await broker.sessions.verify(token.decode(), now=int(now), stages=("device",))
            assert info.expires_at > now
            assert info.claims["device_key_hash"] == session.device_key_hash
            answer = await client.get("/openai/v1/models")
            assert answer.status_code == 200, answer.text
            await wait_until(lambda t=token: session.token() != t, limit=LIFETIME * 2)
    assert len(held) >= 7


async def broker_away_then_back(stack: Stack) -> None:
    session = stack.daemon.session
    assert session is not None
    await stack.broker.stop()
    await readyz_says(stack, "session_expiring")  # renewals fail: the session runs out
    await readyz_says(stack, "session_invalid")
    assert session.problem() is SessionProblem.INVALID
    async with stack.client() as client:
        refused = await client.get("/openai/v1/models")  # cached, yet refused
    assert refused.status_code == 503
    assert refused.json()["error"] == "session_unavailable"
    signed = session.sign_ins
    await stack.broker.start()
    await wait_until(lambda: session.sign_ins > signed, limit=60)
    await wait_until(stack.daemon.liveness.reachable)
    assert await ready(stack) == (200, [])


async def revoked_device_stops_the_daemon(stack: Stack) -> None:
    session = stack.daemon.session
    assert session is not None
    assert stack.real is not None
    ws = stack.real.ws
    await revoke(ws.chain, ws.operator, stack.real.device)
    signed = session.sign_ins
    # learnt at the next renewal, within one lifetime (the limit is only a hang guard)
    await wait_until(lambda: session.problem() is SessionProblem.REVOKED, limit=LIFETIME)
    assert session.sign_ins == signed  # no session after the revocation
    status, problems = await ready(stack)
    assert (status, problems) == (503, ["device_revoked"])
    async with stack.client() as client:
        refused = await client.get("/openai/v1/models")
    assert refused.status_code == 403
    assert refused.json()["error"] == "device_revoked"
