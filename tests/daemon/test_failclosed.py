"""Fail closed (broker heartbeat), chain revocations, policy reload, audit verification."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from agentkeys.chain.events import (
    DeviceRevoked,
    EpochAdvanced,
    EventPosition,
    ScopeRevoked,
    ScopeSet,
)
from agentkeys.cli import audit as audit_cli
from agentkeys.omni import service_hash
from tests.daemon.conftest import ACTOR, OPERATOR, Stack, policy_text, wait_until, write_private


def H(name: str) -> str:
    return service_hash(name).hex()


POSITION = EventPosition(block_number=1, log_index=0, block_hash="00" * 32, tx_hash="00" * 32)
SENDER = "0x" + "22" * 20


@pytest.mark.parametrize("unreachable_after", [1.0])
async def test_broker_unreachable_then_recovers(stack: Stack) -> None:
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
    row = [r for r in stack.audit_rows() if r["reason"] == "broker_unreachable"]
    assert len(row) == 1
    assert row[0]["decision"] == "deny"


async def test_scope_revocation_drops_the_cache_and_refuses(stack: Stack) -> None:
    async with stack.client() as client:
        assert (await client.get("/openai/v1/models")).status_code == 200
        assert len(stack.daemon.cache) == 1
        # an event for another agent changes nothing
        await stack.events.send(ScopeRevoked(POSITION, OPERATOR, "0d" * 32, SENDER))
        await stack.events.send(
            ScopeSet(POSITION, OPERATOR, ACTOR, (H("openai"), H("minutely")), False, 1, SENDER)
        )
        await wait_until(lambda: stack.daemon.revocations.scope is not None)
        assert (await client.get("/openai/v1/models")).status_code == 200
        # budget is outside the chain scope even though the local policy allows it
        outside = await client.post("/budget/v1/chat/completions", json={"model": "m"})
        assert outside.status_code == 403
        assert outside.json()["error"] == "scope_revoked"
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


async def test_device_revocation_refuses_everything(stack: Stack) -> None:
    async with stack.client() as client:
        assert (await client.get("/openai/v1/models")).status_code == 200
        await stack.events.send(EpochAdvanced(POSITION, 2, SENDER))
        await wait_until(lambda: len(stack.daemon.cache) == 0)
        assert (await client.get("/openai/v1/models")).status_code == 200
        await stack.events.send(DeviceRevoked(POSITION, OPERATOR, ACTOR, "0c" * 32, SENDER))
        await wait_until(lambda: stack.daemon.revocations.device_revoked)
        refused = await client.get("/openai/v1/models")
    assert refused.status_code == 403
    assert len(stack.daemon.cache) == 0


async def test_policy_reload_and_bad_policy_kept_out(stack: Stack) -> None:
    async with stack.client() as client:
        assert (await client.get("/openai/v1/models")).status_code == 200
        first = stack.daemon.policy
        stack.config.policy_path.write_text("this is not toml [")
        await trio.sleep(0.3)
        assert stack.daemon.policy is first  # a broken file never replaces a good policy
        assert (await client.get("/openai/v1/models")).status_code == 200
        write_private(
            stack.config.policy_path, policy_text(stack.upstream.url, exe="/usr/bin/other")
        )
        await wait_until(lambda: stack.daemon.policy is not first)
        refused = await client.get("/openai/v1/models")
    assert refused.status_code == 403
    assert refused.json()["error"] == "caller_not_allowed"


def _verify(path: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    audit_cli.register(sub)
    args = parser.parse_args(["audit", "verify", "--log", path])
    code: int = args.func(args)
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_audit_verify_cli_names_the_edited_row(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async with stack.client() as client:
        for _ in range(3):
            await client.get("/openai/v1/models")
        await client.get("/openai/v1/forbidden")
    path = stack.config.audit_path
    code, text = _verify(str(path), capsys)
    assert code == 0, text
    assert "4 rows" in text
    lines = path.read_bytes().splitlines()
    row: dict[str, Any] = json.loads(lines[3])
    row["decision"] = "allow"
    lines[3] = json.dumps(row).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, text = _verify(str(path), capsys)
    assert code == 1
    assert "row 4" in text
