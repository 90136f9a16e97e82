"""The request path over the real Unix socket: attest, policy, quotas, inject, stream, audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from agentkeys.daemon.auditlog import verify_log
from tests.daemon.conftest import Stack, policy_text, wait_until, write_private
from tests.daemon.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, REAL_KEY

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
PLACEHOLDER = {"authorization": "Bearer agentkeys-placeholder", "x-api-key": "placeholder"}


async def test_chat_injects_the_real_key_and_audits(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post("/openai/v1/chat/completions", json=CHAT, headers=PLACEHOLDER)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello there"
    seen = stack.upstream.requests[-1]
    assert seen["headers"]["authorization"] == f"Bearer {REAL_KEY}"
    assert "x-api-key" not in seen["headers"]
    assert seen["path"] == "/v1/chat/completions"
    assert json.loads(seen["body"]) == CHAT
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


async def test_stream_arrives_incrementally(stack: Stack) -> None:
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
        assert b'"content": "hel"' in first
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


async def test_other_executable_is_refused_and_audited(stack: Stack) -> None:
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
    assert json.loads(body)["error"] == "caller_not_allowed"
    assert stack.upstream.requests == []
    row = stack.audit_rows()[-1]
    assert (row["decision"], row["reason"], row["caller_exe"]) == (
        "deny",
        "caller_not_allowed",
        "/usr/bin/curl",
    )


async def test_other_uid_is_refused_and_audited(stack: Stack) -> None:
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
    stack: Stack, method: str, path: str, status: int, error: str
) -> None:
    got_status, doc = await raw_request(stack, method, path)
    assert got_status == status
    assert doc["error"] == error
    assert stack.upstream.requests == []
    row = stack.audit_rows()[-1]
    assert row["reason"] == error
    assert row["decision"] == ("error" if status == 400 else "deny")


async def test_quotas(stack: Stack) -> None:
    async with stack.client() as client:
        for service in ("minutely", "hourly"):
            for _ in range(2):
                assert (await client.get(f"/{service}/v1/models")).status_code == 200
            refused = await client.get(f"/{service}/v1/models")
            assert refused.status_code == 429
            assert refused.json()["error"] == "quota_exceeded"
            assert int(refused.headers["retry-after"]) >= 1
        # dollars: each call costs (1000 * 1 + 500 * 2) / 1e6 = 0.002 of a 0.003 budget
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


async def test_body_limit_and_header_validation(stack: Stack) -> None:
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
    assert all(len(r["body"]) < 256 * 1024 for r in stack.upstream.requests)
    await wait_until(lambda: len(stack.audit_rows()) == 2)
    reasons = [r["reason"] for r in stack.audit_rows()]
    assert reasons == ["request_too_large", "request_too_large"], reasons


async def test_health_endpoints(stack: Stack) -> None:
    async with stack.client() as client:
        assert (await client.get("/healthz")).json()["status"] == "alive"
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["problems"] == []


async def test_audit_log_verifies_after_traffic(stack: Stack) -> None:
    async with stack.client() as client:
        await client.get("/openai/v1/models")
        await client.get("/openai/v1/nope")
    verified = verify_log(stack.config.audit_path)
    assert verified.rows == 2


async def test_graceful_shutdown_finishes_a_stream(stack: Stack) -> None:
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
        await trio.sleep(0.1)
        stack.upstream.gate.set()
        rest = b"".join([c async for c in chunks])
    assert rest.endswith(b"data: [DONE]\n\n")
    with pytest.raises(httpx.TransportError):
        async with stack.client() as client:
            await client.get("/healthz")


def test_curl_is_where_the_tests_expect_it() -> None:
    assert subprocess.run(["curl", "--version"], capture_output=True, check=False).returncode == 0


async def test_a_stream_whose_caller_left_is_abandoned(stack: Stack) -> None:
    stack.upstream.gate = trio.Event()
    async with (
        stack.client() as client,
        client.stream(
            "POST", "/openai/v1/chat/completions", json=dict(CHAT, stream=True)
        ) as response,
    ):
        await response.aiter_raw().__anext__()
    # the caller is gone while the upstream still holds its stream open
    await wait_until(lambda: len(stack.audit_rows()) == 1)
    row = stack.audit_rows()[0]
    assert (row["decision"], row["reason"], row["upstream_status"]) == (
        "error",
        "client_disconnected",
        200,
    )
    assert not stack.upstream.gate.is_set()
    stack.upstream.gate.set()


async def test_an_unattestable_connection_is_refused_and_audited(stack: Stack) -> None:
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
