"""Abuse of the real broker (anvil with the contracts, SMTP sink, broker on a socket).

Each attack is refused, and the refusal is in the broker's audit sink with its error code:
concurrent and cross-route PoP replays, caps for another operator's actors, wildcard and
``${`` injection in every identifier field, oversized and chunked bodies, and a slow-loris
client dribbling its headers (bounded by the broker's keep-alive timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from agentkeys.cap import CapOp
from agentkeys.omni import agent_omni
from tests.broker._flow import bearer, j1_for
from tests.broker.conftest import Chain, Operator, RunningBroker, register_operator
from tests.broker.test_cap_mint import add_agent, mint, proof_for, set_scope

INJECTIONS = [
    "*",
    "?",
    "${aws:username}",
    "${jwt:sub}",
    "a/b",
    "{x}",
    "a*",
    "$",
    "openai*",
    "${aws:PrincipalTag/agentkeys_actor_omni}",
]


def _events_for(broker: RunningBroker, before: int, route: str) -> list[Any]:
    return [e for e in broker.audit.events[before:] if e.route == route]


async def test_concurrent_replay_of_one_pop_mints_at_most_once(
    broker: RunningBroker, operator: Operator
) -> None:
    j1 = await j1_for(broker, operator)
    proof = proof_for(CapOp.FETCH, operator.omni, operator.omni, "openai", operator.master)
    statuses: list[int] = []

    async def attempt() -> None:
        response = await mint(
            broker,
            j1,
            CapOp.FETCH,
            operator=operator.omni,
            actor=operator.omni,
            service="openai",
            device=operator.master,
            pop=proof,
        )
        statuses.append(response.status_code)

    before = len(broker.audit.events)
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(attempt)
    assert sorted(statuses) == [200] + [401] * 7
    denials = [e for e in broker.audit.events[before:] if e.error == "replayed_nonce"]
    assert len(denials) == 7
    assert all(e.outcome == "denied" and e.route == "cap_fetch" for e in denials)


async def test_pop_replayed_on_another_route_is_refused(
    broker: RunningBroker, operator: Operator
) -> None:
    j1 = await j1_for(broker, operator)
    proof = proof_for(CapOp.FETCH, operator.omni, operator.omni, "openai", operator.master)
    ok = await mint(
        broker,
        j1,
        CapOp.FETCH,
        operator=operator.omni,
        actor=operator.omni,
        service="openai",
        device=operator.master,
        pop=proof,
    )
    assert ok.status_code == 200
    before = len(broker.audit.events)
    for op in (CapOp.LIST, CapOp.STORE, CapOp.TEARDOWN):
        response = await mint(
            broker,
            j1,
            op,
            operator=operator.omni,
            actor=operator.omni,
            service="openai",
            device=operator.master,
            pop=proof,
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"] in ("pop_rejected", "replayed_nonce")
    rows = broker.audit.events[before:]
    assert [e.outcome for e in rows] == ["denied"] * 3
    assert {e.route for e in rows} == {"cap_list", "cap_store", "cap_teardown"}


async def test_caps_for_another_operators_actor_are_refused(
    broker: RunningBroker, chain: Chain, operator: Operator
) -> None:
    victim = await register_operator(chain, chain.accounts[2])
    victim_agent = await add_agent(chain, victim, "victim-bot")
    await set_scope(chain, victim, agent_omni(victim.omni, "victim-bot"), ["openai"])
    j1 = await j1_for(broker, operator)
    attempts: list[dict[str, Any]] = [
        # the attacker's own operator and device, the victim's agent as actor
        {
            "operator": operator.omni,
            "actor": agent_omni(victim.omni, "victim-bot"),
            "device": operator.master,
        },
        # the victim's operator, actor and device (the attacker cannot sign its K10 PoP)
        {
            "operator": victim.omni,
            "actor": agent_omni(victim.omni, "victim-bot"),
            "device": victim_agent,
        },
        # the victim's own vault
        {"operator": victim.omni, "actor": victim.omni, "device": victim.master},
    ]
    before = len(broker.audit.events)
    for attempt in attempts:
        response = await mint(broker, j1, CapOp.FETCH, service="openai", **attempt)
        assert response.status_code in (401, 403), response.text
        assert set(response.json()) == {"error", "reason"}
    rows = _events_for(broker, before, "cap_fetch")
    assert len(rows) == len(attempts)
    assert all(e.outcome == "denied" and e.error for e in rows)
    assert not any(e.status == 200 for e in broker.audit.events[before:])


@pytest.mark.parametrize("value", INJECTIONS)
async def test_injection_in_every_identifier_field_is_refused_and_audited(
    broker: RunningBroker, operator: Operator, value: str
) -> None:
    j1 = await j1_for(broker, operator)
    before = len(broker.audit.events)
    answers: list[tuple[str, httpx.Response]] = []
    for field in ("operator_omni", "actor_omni", "service", "device_key_hash"):
        body = {
            "operator_omni": operator.omni,
            "actor_omni": operator.omni,
            "service": "openai",
            "device_key_hash": operator.master.hash,
            "pop": proof_for(CapOp.FETCH, operator.omni, operator.omni, "openai", operator.master),
        }
        body[field] = value if field == "service" else operator.omni[: -len(value)] + value
        answers.append(
            (field, await broker.http.post("/v1/cap/cred-fetch", json=body, headers=bearer(j1)))
        )
    answers.append(
        (
            "email",
            await broker.http.post("/v1/auth/email/start", json={"email": f"{value}@example.com"}),
        )
    )
    answers.append(
        (
            "email-domain",
            await broker.http.post("/v1/auth/email/start", json={"email": f"a@{value}"}),
        )
    )
    answers.append(
        (
            "pop",
            await broker.http.post(
                "/v1/cap/cred-fetch",
                headers=bearer(j1),
                json={
                    "operator_omni": operator.omni,
                    "actor_omni": operator.omni,
                    "service": "openai",
                    "device_key_hash": operator.master.hash,
                    "pop": value,
                },
            ),
        )
    )
    for field, response in answers:
        assert 400 <= response.status_code < 500, (field, response.text)
        assert set(response.json()) == {"error", "reason"}, field
        assert value not in response.json()["reason"] or len(value) < 2, field
    rows = broker.audit.events[before:]
    assert [e.status for e in rows] == [r.status_code for _, r in answers]
    assert all(e.error for e in rows)
    for row in rows:  # nothing injected reaches an audit identifier
        assert not any(
            isinstance(v, str) and value in v and len(value) > 1 for v in row.fields.values()
        ), row


async def test_injection_in_siwe_wallet_and_relay_fields(
    broker: RunningBroker, operator: Operator
) -> None:
    j1 = await j1_for(broker, operator)
    before = len(broker.audit.events)
    answers = []
    for value in INJECTIONS:
        answers.append(
            await broker.http.post(
                "/v1/relay/scope",
                headers=bearer(j1),
                json={
                    "operator_omni": operator.omni,
                    "agent_omni": value,
                    "device_key_hash": value,
                    "k10_signature": value,
                    "assertion": {},
                    "services": [value],
                },
            )
        )
    for response in answers:
        assert 400 <= response.status_code < 500, response.text
    assert [e.status for e in broker.audit.events[before:]] == [r.status_code for r in answers]


async def test_oversized_bodies_are_refused_before_the_handler(broker: RunningBroker) -> None:
    async def chunks() -> Any:
        for _ in range(80):
            yield b"a" * 1024

    bodies: list[Any] = [
        b'{"email": "' + b"a" * (64 * 1024) + b'@example.com"}',  # declared length
        chunks(),  # chunked, no length
        b"{" + b",".join(b'"k%d":1' % i for i in range(9000)) + b"}",  # wide
    ]
    before = len(broker.audit.events)
    for body in bodies:
        # one connection per request: the server closes it after refusing an unread body
        async with httpx.AsyncClient(base_url=broker.url, trust_env=False) as client:
            response = await client.post(
                "/v1/auth/email/start", content=body, headers={"content-type": "application/json"}
            )
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "body_too_large"
    rows = broker.audit.events[before:]
    assert [e.error for e in rows] == ["body_too_large"] * 3
    # the broker still answers
    assert (await broker.http.get("/v1/health")).status_code == 200


async def _dribble(
    url: str,
    *,
    payload: bytes,
    interval: float,
    limit: float,
    first_sent: Callable[[], object] = lambda: None,
) -> tuple[int, bool]:
    """Send ``payload`` one byte per ``interval`` (``first_sent()`` after the first); return
    (bytes sent, closed by server)."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    sent = 0
    closed = False
    with trio.move_on_after(limit):
        try:
            for byte in payload:
                await stream.send_all(bytes([byte]))
                sent += 1
                if sent == 1:
                    first_sent()
                with trio.move_on_after(interval):
                    data = await stream.receive_some(4096)
                    if not data or data.startswith(b"HTTP/1.1 4"):
                        closed = True
                        break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            closed = True
    await stream.aclose()
    return sent, closed


async def test_slow_loris_headers_are_cut_off(broker: RunningBroker) -> None:
    """A client that never finishes its headers is disconnected (keep-alive timeout, 5 s)."""
    headers = b"POST /v1/auth/email/start HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 400
    started = time.monotonic()
    sent, closed = await _dribble(broker.url, payload=headers, interval=0.05, limit=20)
    assert closed, f"connection still open after {sent} bytes"
    assert sent < len(headers)
    # the server is still there for everyone else
    assert (await broker.http.get("/v1/health")).status_code == 200
    del started


async def test_slow_loris_many_connections_do_not_starve_the_broker(
    broker: RunningBroker,
) -> None:
    results: list[bool] = []
    opened_send, opened = trio.open_memory_channel[None](20)

    async def slow() -> None:
        _, closed = await _dribble(
            broker.url,
            payload=b"GET /v1/health HTTP/1.1\r\nHost:" + b"x" * 300,
            interval=0.1,
            limit=20,
            first_sent=lambda: opened_send.send_nowait(None),
        )
        results.append(closed)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(slow)
        for _ in range(20):  # every slow client is connected and mid-request
            await opened.receive()
        assert (await broker.http.get("/v1/health")).status_code == 200
    assert results == [True] * 20


async def test_slow_loris_body_is_cut_off_and_audited(broker: RunningBroker) -> None:
    """Headers complete, body dribbled: refused when the body deadline passes, with a row.

    The deadline is the app's BODY_TIMEOUT (30 s in production), shortened here so the
    test stays bounded.
    """
    broker.service.app.quart.config["BODY_TIMEOUT"] = 1
    before = len(broker.audit.events)
    request = (
        b"POST /v1/auth/email/start HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    )
    host, port = broker.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    answer = b""
    with trio.fail_after(20):
        await stream.send_all(request)
        try:
            for _ in range(400):
                await stream.send_all(b" ")
                with trio.move_on_after(0.1):
                    answer += await stream.receive_some(4096)
                if answer:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    rows = [e for e in broker.audit.events[before:] if e.route == "email_start"]
    assert [e.error for e in rows] == ["bad_request"]
    assert "not received" in (rows[0].reason or "")
