"""The request path over the real Unix socket: attest, policy, quotas, inject, stream, audit;
fail closed (broker heartbeat), chain revocations, policy reload, audit verification.

``stack`` runs the whole real stack (broker cap mint + worker fetch), so one test drives
every scenario that needs a credential; ``gate`` (the same real source, whose mints the
real broker refuses) serves the refusals that happen before any credential is fetched.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agentkeys._files import write_private
from agentkeys.chain.events import (
    DeviceRevoked,
    EpochAdvanced,
    EventPosition,
    ScopeRevoked,
    ScopeSet,
)
from agentkeys.cli import audit as audit_cli
from agentkeys.daemon.auditlog import verify_log
from agentkeys.devstack.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY, DemoUpstream
from agentkeys.omni import service_hash
from tests.daemon.conftest import (
    REAL_KEY,
    SELF_EXE,
    Broker,
    Stack,
    open_daemon,
    open_gate,
    policy_text,
    wait_until,
)
from tests.metrics_scrape import grew, parse, scrape, value

CLIENT = Path(__file__).with_name("sdk_client.py")
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
PLACEHOLDER = {"authorization": "Bearer agentkeys-placeholder", "x-api-key": "placeholder"}


async def test_request_path_and_fail_closed_with_real_credentials(
    nursery: trio.Nursery,
    stack: Stack,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One real stack start, many requests: each call below is one behaviour of the path.

    The order matters: the graceful shutdown stops the first daemon; a second daemon over
    the same real stack (1 s broker window) then runs the fail-closed, revocation, reload
    and audit scenarios, where device revocation is final.
    """
    caplog.set_level(logging.DEBUG)
    await openai_sdk_via_env_file(stack, caplog)  # first: it counts every request
    await chat_injects_the_real_key_and_audits(stack)
    await stream_arrives_incrementally(stack)
    await cache_hits_are_counted(stack)
    await quotas(stack)
    await body_limit_and_header_validation(stack)
    await slow_bodies_time_out(stack)
    await audit_log_verifies_after_traffic(stack)
    await other_uid_is_refused_and_audited(stack)
    await a_stream_whose_caller_left_is_abandoned(stack)
    await graceful_shutdown_finishes_a_stream(stack)  # it stops the first daemon
    with trio.fail_after(15):
        await stack.stopped.wait()  # its socket path is free for the second one
    assert stack.real is not None
    async with open_daemon(
        nursery, stack.tmp / "second", stack.upstream, stack.real, unreachable_after=1.0
    ) as again:
        await broker_unreachable_then_recovers(again)
        await scope_revocation_drops_the_cache_and_refuses(again)
        await policy_reload_and_bad_policy_kept_out(again, caplog)
        await audit_verify_cli_names_the_edited_row(again, capsys)
        await device_revocation_refuses_everything(again)


async def openai_sdk_via_env_file(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """The official openai SDK, configured only by the env file, through the E2 listener."""
    env_path = stack.config.env_path
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    env_text = env_path.read_text()
    assert stack.address.tcp_url is not None
    assert f"OPENAI_BASE_URL={stack.address.tcp_url}/openai/v1" in env_text
    assert "OPENAI_API_KEY=agentkeys-placeholder" in env_text
    assert "AGENTKEYS_BUDGET_BASE_URL=" in env_text
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    result = await trio.run_process(
        ["bash", "-c", f'source "{env_path}" && exec "{sys.executable}" "{CLIENT}"'],
        env=clean,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    report = json.loads(out)
    assert report["chat"] == REPLY
    assert report["stream"] == REPLY
    assert report["stream_usage"] == COMPLETION_TOKENS
    assert report["env"]["OPENAI_API_KEY"] == "agentkeys-placeholder"
    # the upstream saw the real key on both calls; the client never did
    assert [r.headers["authorization"] for r in stack.upstream.requests] == [
        f"Bearer {REAL_KEY}"
    ] * 2
    assert REAL_KEY not in out + err
    assert REAL_KEY not in env_text
    assert REAL_KEY not in caplog.text
    assert REAL_KEY not in stack.config.audit_path.read_text()
    rows = stack.audit_rows()
    assert [r["decision"] for r in rows] == ["allow", "allow"]
    assert {r["caller_exe"] for r in rows} == {os.readlink("/proc/self/exe")}
    assert all(r["caller_pid"] != os.getpid() for r in rows)


async def chat_injects_the_real_key_and_audits(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post("/openai/v1/chat/completions", json=CHAT, headers=PLACEHOLDER)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    seen = stack.upstream.requests[-1]
    assert seen.headers["authorization"] == f"Bearer {REAL_KEY}"
    assert "x-api-key" not in seen.headers
    assert seen.path == "/v1/chat/completions"
    assert json.loads(seen.body) == CHAT
    assert REAL_KEY not in response.text
    assert all(REAL_KEY not in v for v in response.headers.values())
    row = stack.audit_rows()[-1]
    assert row["decision"] == "allow"
    assert row["service"] == "openai"
    assert row["caller_uid"] == os.getuid()
    assert row["caller_pid"] == os.getpid()
    assert row["caller_exe"] == os.readlink("/proc/self/exe")
    assert row["upstream_status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert REAL_KEY not in stack.config.audit_path.read_text()


async def stream_arrives_incrementally(stack: Stack) -> None:
    stack.upstream.gate = trio.Event()
    body = dict(CHAT, stream=True)
    async with (
        stack.client() as client,
        client.stream(
            "POST", "/openai/v1/chat/completions", json=body, headers=PLACEHOLDER
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        chunks = response.aiter_raw()
        first = await chunks.__anext__()
        # the upstream holds the rest until we saw the first chunk through the daemon
        assert b'"content": "hello"' in first
        stack.upstream.gate.set()
        rest = b"".join([c async for c in chunks])
    assert rest.endswith(b"data: [DONE]\n\n")
    assert REAL_KEY.encode() not in first + rest
    row = stack.audit_rows()[-1]
    assert (row["decision"], row["prompt_tokens"], row["completion_tokens"]) == (
        "allow",
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )


async def test_other_executable_is_refused_and_audited(gate: Stack) -> None:
    stack = gate
    result = await trio.run_process(
        [
            "curl",
            "-s",
            "--unix-socket",
            stack.address.socket_path,
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            json.dumps(CHAT),
            "http://agentkeys/openai/v1/chat/completions",
            "-w",
            "\n%{http_code}",
        ],
        capture_stdout=True,
        check=False,
    )
    body, _, status = result.stdout.decode().rpartition("\n")
    assert status == "403"
    refusal = json.loads(body)
    assert refusal["error"] == "caller_not_allowed"
    assert f"uid {os.getuid()}, exe '/usr/bin/curl'" in refusal["reason"]
    assert not stack.upstream.requests
    row = stack.audit_rows()[-1]
    assert (row["decision"], row["reason"], row["caller_exe"]) == (
        "deny",
        "caller_not_allowed",
        "/usr/bin/curl",
    )


async def other_uid_is_refused_and_audited(stack: Stack) -> None:
    # the policy names curl for our uid; curl runs as nobody over the loopback listener (E2)
    write_private(stack.config.policy_path, policy_text(stack.upstream.url, exe="/usr/bin/curl"))
    await wait_until(lambda: stack.daemon.policy.callers[0].exe == "/usr/bin/curl")
    assert stack.address.tcp_url is not None
    result = await trio.run_process(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            stack.address.tcp_url + "/openai/v1/models",
            "-w",
            "\n%{http_code}",
        ],
        capture_stdout=True,
        check=False,
    )
    body, _, status = result.stdout.decode().rpartition("\n")
    assert status == "403", body
    assert json.loads(body)["error"] == "caller_not_allowed"
    row = stack.audit_rows()[-1]
    assert (row["decision"], row["caller_uid"], row["caller_exe"]) == (
        "deny",
        65534,
        "/usr/bin/curl",
    )
    # the same binary as our uid is allowed
    result = await trio.run_process(
        ["curl", "-s", stack.address.tcp_url + "/openai/v1/models", "-w", "\n%{http_code}"],
        capture_stdout=True,
        check=False,
    )
    assert result.stdout.decode().rpartition("\n")[2] == "200"
    # back to the policy naming this interpreter, for the scenarios that follow
    write_private(stack.config.policy_path, policy_text(stack.upstream.url))
    await wait_until(lambda: stack.daemon.policy.callers[0].exe == SELF_EXE)


async def raw_request(stack: Stack, method: str, path: str) -> tuple[int, dict[str, object]]:
    """Send the request line exactly as given (httpx would normalise the path)."""
    stream = await trio.open_unix_socket(stack.address.socket_path)
    async with stream:
        await stream.send_all(
            f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/openai/v1/chat/completions", 403, "route_not_allowed"),
        ("POST", "/openai/v1/files", 403, "route_not_allowed"),
        ("GET", "/nosuch/v1/models", 404, "unknown_service"),
        ("GET", "/openai/v1/models/..%2F..%2Fadmin", 400, "bad_request"),
        ("GET", "/openai/v1/../v1/models", 400, "bad_request"),
        ("GET", "/", 400, "bad_request"),
    ],
)
async def test_outside_the_allowlist(
    gate: Stack, method: str, path: str, status: int, error: str
) -> None:
    stack = gate
    got_status, doc = await raw_request(stack, method, path)
    assert got_status == status
    assert doc["error"] == error
    assert not stack.upstream.requests
    row = stack.audit_rows()[-1]
    assert row["reason"] == error
    assert row["decision"] == ("error" if status == 400 else "deny")


async def quotas(stack: Stack) -> None:
    async with stack.client() as client:
        for service in ("minutely", "hourly"):
            for _ in range(2):
                assert (await client.get(f"/{service}/v1/models")).status_code == 200
            refused = await client.get(f"/{service}/v1/models")
            assert refused.status_code == 429
            assert refused.json()["error"] == "quota_exceeded"
            assert int(refused.headers["retry-after"]) >= 1
        # dollars: each call costs (12 * 100 + 5 * 160) / 1e6 = 0.002 of a 0.003 budget
        for _ in range(2):
            ok = await client.post("/budget/v1/chat/completions", json=CHAT)
            assert ok.status_code == 200
        refused = await client.post("/budget/v1/chat/completions", json=CHAT)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        # other services are unaffected
        assert (await client.get("/openai/v1/models")).status_code == 200
    denials = [r for r in stack.audit_rows() if r["reason"] == "quota_exceeded"]
    assert [r["service"] for r in denials] == ["minutely", "hourly", "budget"]
    paid = [
        r["cost_nano_usd"]
        for r in stack.audit_rows()
        if r["service"] == "budget" and r["decision"] == "allow"
    ]
    assert paid == [2_000_000] * 2  # 0.002 USD


async def body_limit_and_header_validation(stack: Stack) -> None:
    before = len(stack.audit_rows())
    async with stack.client() as client:
        big = await client.post(
            "/openai/v1/chat/completions",
            content=b"x" * (300 * 1024),
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(300):
                yield b"y" * 1024

        # refused mid-upload: the daemon answers 413 and closes while we may still send
        try:
            streamed = await client.post("/openai/v1/chat/completions", content=chunks())
            assert streamed.status_code == 413
        except httpx.TransportError:
            pass
    assert all(len(r.body) < 256 * 1024 for r in stack.upstream.requests)
    await wait_until(lambda: len(stack.audit_rows()) == before + 2)
    reasons = [r["reason"] for r in stack.audit_rows()[before:]]
    assert reasons == ["request_too_large", "request_too_large"], reasons


async def slow_bodies_time_out(stack: Stack) -> None:
    """A body that does not arrive whole within listen.body_timeout gets 408, whether it
    is read before the upstream is contacted (declared small) or streamed to it."""
    before = len(stack.audit_rows())
    for declared in (100, 200_000):
        async with await trio.open_unix_socket(stack.address.socket_path) as conn:
            await conn.send_all(
                b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n{" % declared
            )
            answer = b""
            with trio.fail_after(20):
                while chunk := await conn.receive_some(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), (declared, answer[:200])
        assert b'"request_timeout"' in answer
    await wait_until(lambda: len(stack.audit_rows()) == before + 2)
    reasons = [r["reason"] for r in stack.audit_rows()[before:]]
    assert reasons == ["request_timeout", "request_timeout"]


async def test_health_endpoints(gate: Stack) -> None:
    """Alive, but not ready: the gate's device is registered nowhere, so it has no session."""
    stack = gate
    async with stack.client() as client:
        assert (await client.get("/healthz")).json()["status"] == "alive"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"] == ["session_invalid"]
        refused = await client.get("/openai/v1/models")
    assert refused.status_code == 503
    assert refused.json()["error"] == "session_unavailable"


async def test_metrics_count_a_denial_once_and_name_no_path(gate: Stack) -> None:
    stack = gate
    async with stack.client() as client:
        before = await scrape(client)
        assert (await client.get("/nosuch/v1/secret-abc")).status_code == 404
        response = await client.get("/metrics")
    assert "secret-abc" not in response.text
    assert "nosuch" not in response.text
    after = parse(response.text)
    denials = "agentkeys_denials_total"
    assert grew(before, after, denials, error="unknown_service") == pytest.approx(1)
    assert grew(
        before, after, "agentkeys_http_requests_total", route="proxy", status="404"
    ) == pytest.approx(1)
    assert value(after, "agentkeys_http_requests_total", route="metrics", status="200") >= 1
    assert value(after, "agentkeys_service_info", service="daemon") == 1
    assert 0 <= value(after, "agentkeys_heartbeat_age_seconds") <= 60  # the broker answered


async def cache_hits_are_counted(stack: Stack) -> None:
    """The credential is cached by the earlier requests: two more calls are two hits."""
    async with stack.client() as client:
        before = await scrape(client)
        for _ in range(2):
            assert (await client.get("/openai/v1/models")).status_code == 200
        after = await scrape(client)
    lookups = "agentkeys_cache_lookups_total"
    for result, expected in (("hit", 2), ("miss", 0)):
        counted = grew(before, after, lookups, cache="credentials", result=result)
        assert counted == pytest.approx(expected)
    assert value(after, lookups, cache="credentials", result="miss") >= 1  # the first fetch


async def audit_log_verifies_after_traffic(stack: Stack) -> None:
    before = len(stack.audit_rows())
    async with stack.client() as client:
        assert (await client.get("/openai/v1/models")).status_code == 200
        await client.get("/openai/v1/nope")
    verified = verify_log(stack.config.audit_path)
    assert verified.rows == before + 2


async def graceful_shutdown_finishes_a_stream(stack: Stack) -> None:
    stack.upstream.gate = trio.Event()
    async with (
        stack.client() as client,
        client.stream(
            "POST", "/openai/v1/chat/completions", json=dict(CHAT, stream=True)
        ) as response,
    ):
        chunks = response.aiter_raw()
        await chunks.__anext__()
        stack.daemon.stop()
        await refuses_new_connections(stack)  # the drain began with this stream in flight
        stack.upstream.gate.set()
        rest = b"".join([c async for c in chunks])
    assert rest.endswith(b"data: [DONE]\n\n")
    with pytest.raises(httpx.TransportError):
        async with stack.client() as client:
            await client.get("/healthz")


async def refuses_new_connections(stack: Stack) -> None:
    """Poll until the daemon's socket refuses a connection (a hang guard, not a timer)."""
    with trio.fail_after(10):
        while True:
            try:
                stream = await trio.open_unix_socket(stack.address.socket_path)
            except OSError:
                return
            await stream.aclose()
            await trio.sleep(0.02)


def test_curl_is_where_the_tests_expect_it() -> None:
    assert subprocess.run(["curl", "--version"], capture_output=True, check=False).returncode == 0


async def a_stream_whose_caller_left_is_abandoned(stack: Stack) -> None:
    before = len(stack.audit_rows())
    stack.upstream.gate = trio.Event()
    async with (
        stack.client() as client,
        client.stream(
            "POST", "/openai/v1/chat/completions", json=dict(CHAT, stream=True)
        ) as response,
    ):
        await response.aiter_raw().__anext__()
    # the caller is gone while the upstream still holds its stream open
    await wait_until(lambda: len(stack.audit_rows()) == before + 1)
    row = stack.audit_rows()[before]
    assert (row["decision"], row["reason"], row["upstream_status"]) == (
        "error",
        "client_disconnected",
        200,
    )
    assert not stack.upstream.gate.is_set()
    stack.upstream.gate.set()


async def test_an_unattestable_connection_is_refused_and_audited(gate: Stack) -> None:
    stack = gate
    # Blocking on purpose: the daemon (same Trio loop) accepts only after the client
    # process connected and exited, so its pid cannot be attested (CallerGone).
    code = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
        "s.sendall(b'GET /healthz HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n')"
    )
    subprocess.run([sys.executable, "-c", code, stack.address.socket_path], check=True)  # noqa: ASYNC221
    await wait_until(lambda: len(stack.audit_rows()) == 1)
    row = stack.audit_rows()[0]
    assert (row["decision"], row["status"], row["method"]) == ("deny", 403, "-")
    assert row["reason"] in ("caller_gone", "caller_unidentified")


async def test_connections_beyond_the_maximum_are_refused_and_audited(
    nursery: trio.Nursery, tmp_path: Path, upstream: DemoUpstream, broker: Broker
) -> None:
    async with (
        open_gate(nursery, tmp_path, upstream, broker, max_connections=1) as stack,
        stack.client() as first,
    ):
        assert (await first.get("/healthz")).status_code == 200  # holds the only slot
        async with stack.client() as second:
            refused = await second.get("/healthz")
    assert refused.status_code == 503
    assert refused.json()["error"] == "too_many_connections"
    row = stack.audit_rows()[-1]
    assert (row["decision"], row["status"], row["reason"]) == (
        "deny",
        503,
        "too_many_connections",
    )


# -- fail closed, revocations, reload, audit (the second daemon) --------------------------


def H(name: str) -> str:
    return service_hash(name).hex()


POSITION = EventPosition(block_number=1, log_index=0, block_hash="00" * 32, tx_hash="00" * 32)
SENDER = "0x" + "22" * 20


def _ids(stack: Stack) -> tuple[str, str, str]:
    assert stack.real is not None
    return stack.real.operator_omni, stack.real.actor_omni, stack.real.device.device_key_hash


async def broker_unreachable_then_recovers(stack: Stack) -> None:
    async with stack.client() as client:
        assert (await client.get("/openai/v1/models")).status_code == 200
        await stack.broker.stop()
        await wait_until(lambda: not stack.daemon.liveness.reachable())
        refused = await client.get("/openai/v1/models")
        assert refused.status_code == 503
        assert refused.json()["error"] == "broker_unreachable"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"] == ["broker_unreachable"]
        # the broker comes back at the same address: service resumes, no daemon restart
        await stack.broker.start()
        await wait_until(stack.daemon.liveness.reachable)
        assert (await client.get("/openai/v1/models")).status_code == 200
    assert len(stack.daemon.cache) == 1  # served from the cache, yet refused while down
    row = [r for r in stack.audit_rows() if r["reason"] == "broker_unreachable"]
    assert len(row) == 1
    assert row[0]["decision"] == "deny"


async def scope_revocation_drops_the_cache_and_refuses(stack: Stack) -> None:
    OPERATOR, ACTOR, _ = _ids(stack)
    async with stack.client() as client:
        assert (await client.get("/openai/v1/models")).status_code == 200
        assert len(stack.daemon.cache) == 1
        # an event for another agent changes nothing
        await stack.events.send(ScopeRevoked(POSITION, OPERATOR, "0d" * 32, SENDER))
        await stack.events.send(
            ScopeSet(POSITION, OPERATOR, ACTOR, (H("openai"), H("minutely")), False, 1, SENDER)
        )
        await wait_until(lambda: stack.daemon.revocations.scope is not None)
        assert len(stack.daemon.cache) == 1  # openai is still in scope: its entry stays
        assert (await client.get("/openai/v1/models")).status_code == 200
        assert (await client.get("/minutely/v1/models")).status_code == 200
        assert stack.daemon.cache.services() == frozenset({"openai", "minutely"})
        # narrowed: the service that left is wiped from the cache and refused
        await stack.events.send(
            ScopeSet(POSITION, OPERATOR, ACTOR, (H("openai"),), False, 2, SENDER)
        )
        await wait_until(lambda: stack.daemon.cache.services() == frozenset({"openai"}))
        left = await client.get("/minutely/v1/models")
        assert (left.status_code, left.json()["error"]) == (403, "scope_revoked")
        assert (await client.get("/openai/v1/models")).status_code == 200
        # budget is outside the chain scope even though the local policy allows it; never
        # granted, so it is not "revoked" (issue 16)
        outside = await client.post("/budget/v1/chat/completions", json={"model": "m"})
        assert outside.status_code == 403
        assert outside.json()["error"] == "service_not_in_scope"
        assert "agentkeys scope add" in outside.json()["reason"]
        await stack.events.send(ScopeRevoked(POSITION, OPERATOR, ACTOR, SENDER))
        await wait_until(lambda: len(stack.daemon.cache) == 0)
        refused = await client.get("/openai/v1/models")
        assert refused.status_code == 403
        assert refused.json()["error"] == "scope_revoked"
        fetches = stack.daemon.cache.fetches
        # a new grant serves again (with a fresh fetch)
        await stack.events.send(
            ScopeSet(POSITION, OPERATOR, ACTOR, (H("openai"),), False, 2, SENDER)
        )
        await wait_until(lambda: stack.daemon.revocations.scope == frozenset({H("openai")}))
        assert (await client.get("/openai/v1/models")).status_code == 200
        assert stack.daemon.cache.fetches == fetches + 1


async def device_revocation_refuses_everything(stack: Stack) -> None:
    OPERATOR, ACTOR, dkh = _ids(stack)
    async with stack.client() as client:
        assert (await client.get("/openai/v1/models")).status_code == 200
        await stack.events.send(EpochAdvanced(POSITION, 2, SENDER))
        await wait_until(lambda: len(stack.daemon.cache) == 0)
        assert (await client.get("/openai/v1/models")).status_code == 200
        await stack.events.send(DeviceRevoked(POSITION, OPERATOR, ACTOR, "0c" * 32, SENDER))
        assert (await client.get("/openai/v1/models")).status_code == 200  # another device
        await stack.events.send(DeviceRevoked(POSITION, OPERATOR, ACTOR, dkh, SENDER))
        await wait_until(lambda: stack.daemon.revocations.device_revoked)
        refused = await client.get("/openai/v1/models")
    assert refused.status_code == 403
    assert len(stack.daemon.cache) == 0


async def policy_reload_and_bad_policy_kept_out(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    async with stack.client() as client:
        assert (await client.get("/openai/v1/models")).status_code == 200
        first = stack.daemon.policy
        stack.config.policy_path.write_text("this is not toml [")
        # wait for the reload to have read the broken file, not for a guessed time
        await wait_until(lambda: "policy reload refused" in caplog.text)
        assert stack.daemon.policy is first  # a broken file never replaces a good policy
        assert (await client.get("/openai/v1/models")).status_code == 200
        write_private(
            stack.config.policy_path, policy_text(stack.upstream.url, exe="/usr/bin/other")
        )
        await wait_until(lambda: stack.daemon.policy is not first)
        refused = await client.get("/openai/v1/models")
    assert refused.status_code == 403
    assert refused.json()["error"] == "caller_not_allowed"
    write_private(stack.config.policy_path, policy_text(stack.upstream.url))
    await wait_until(lambda: stack.daemon.policy.callers[0].exe == SELF_EXE)


def _verify(path: str, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str]:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    audit_cli.register(sub)
    args = parser.parse_args(["audit", "verify", "--log", path, *more])
    code: int = args.func(args)
    out = capsys.readouterr()
    return code, out.out + out.err


async def audit_verify_cli_names_the_edited_row(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async with stack.client() as client:
        for _ in range(3):
            await client.get("/openai/v1/models")
        await client.get("/openai/v1/forbidden")
    path = stack.config.audit_path
    total = len(stack.audit_rows())
    code, text = _verify(str(path), capsys)
    assert code == 0, text
    assert f"{total} rows" in text
    code, text = _verify(str(path), capsys, "--json")
    ok = json.loads(text)
    assert (code, ok["ok"], ok["rows"], ok["log"]) == (0, True, total, str(path))
    lines = path.read_bytes().splitlines()
    edited = total - 4  # the first of the four rows above, so later rows follow it
    row: dict[str, Any] = json.loads(lines[edited])
    assert row["decision"] == "allow"
    row["decision"] = "deny"
    lines[edited] = json.dumps(row).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, text = _verify(str(path), capsys)
    assert code == 1
    assert f"row {edited + 1}" in text
    code, text = _verify(str(path), capsys, "--json")
    broken = json.loads(text)
    assert (code, broken["error"], broken["row"]) == (1, "audit_chain_broken", edited + 1)


async def test_a_stopping_daemon_leaves_a_socket_it_did_not_create(gate: Stack) -> None:
    """Its socket path was re-bound by another process meanwhile: that file stays."""
    path = trio.Path(gate.address.socket_path)
    await path.unlink()
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        gate.daemon.stop()
        with trio.fail_after(15):
            await gate.stopped.wait()
        assert await path.is_socket()
