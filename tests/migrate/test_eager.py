"""``agentkeys-migrate-s3-prefix`` against the real stack (SPEC.md section 9 step 11)."""

from __future__ import annotations

import random
import signal
import subprocess

import trio

from agentkeys.envelope import parse_header
from agentkeys.worker._vault import Vault
from agentkeys.worker.layout import v1_key, v2_key
from tests.migrate.conftest import LEGACY, REPO, run_tool, tool_command
from tests.worker.conftest import Stack


async def readable(stack: Stack) -> dict[str, bytes]:
    """Every credential as a reader finds it (v2 key first, then v1), without migrating."""
    op = stack.operator
    found: dict[str, bytes] = {}
    async with stack.core.vault(
        operator_omni=op.omni, actor_omni=op.omni, wallet=op.wallet_address,
        current_epoch=await stack.chain.client.current_epoch(), identity_omni=op.identity_omni,
    ) as vault:  # fmt: skip
        assert isinstance(vault, Vault)
        for service in LEGACY:
            for key, actor in ((v2_key(op.omni, service), op.omni),
                               (v1_key(op.wallet_address, service), op.omni)):  # fmt: skip
                data = await stack.admin_get(key)
                if data is not None:
                    opened = await vault.open(key, data, service, aad_actor=actor)
                    found[service] = opened.plaintext
                    break
    return found


async def versions(stack: Stack, prefix: str) -> dict[str, int]:
    out = {}
    for key in await stack.admin_keys(prefix):
        data = await stack.admin_get(key)
        assert data is not None
        out[key] = int(parse_header(data).version)
    return out


async def test_dry_run_migrate_delete_and_rerun(legacy_stack: Stack) -> None:
    s = legacy_stack
    op = s.operator
    v1_prefix, v2_prefix = f"bots/{op.wallet_address}/", f"bots/{op.omni}/"

    dry = await run_tool(s, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert {r["action"] for r in dry.reports} == {"would_migrate"}
    assert len(dry.reports) == len(LEGACY)
    assert await s.admin_keys(v2_prefix) == []

    # One credential is read through the worker first: lazy migration already made its copy.
    first = await s.request(
        op.master, "fetch", {"legacy_identity_omni": op.identity_omni}, service="svc-00"
    )
    assert first.body["migration"] == {"migrated": True}

    done = await run_tool(s)
    assert done.returncode == 0, done.stderr
    actions = {r["service"]: r["action"] for r in done.reports}
    assert actions.pop("svc-00") == "already_migrated"
    assert set(actions.values()) == {"migrated"}
    assert all(r["v1_deleted"] is False for r in done.reports)
    assert "[8/8]" in done.stderr
    assert set((await versions(s, v2_prefix)).values()) == {4}
    assert set((await versions(s, v1_prefix)).values()) == {1}
    assert await readable(s) == LEGACY

    deleted = await run_tool(s, "--delete-v1")
    assert deleted.returncode == 0, deleted.stderr
    assert {(r["action"], r["v1_deleted"]) for r in deleted.reports} == {("already_migrated", True)}
    assert await s.admin_keys(v1_prefix) == []
    assert await readable(s) == LEGACY

    before = {k: await s.admin_get(k) for k in await s.admin_keys("bots/")}
    again = await run_tool(s, "--delete-v1")
    assert again.returncode == 0, again.stderr
    assert {(r["action"], r["v1_deleted"]) for r in again.reports} == {("already_migrated", False)}
    after = {k: await s.admin_get(k) for k in await s.admin_keys("bots/")}
    assert after == before  # a re-run is a no-op


async def test_a_differing_v2_credential_keeps_its_v1_object(legacy_stack: Stack) -> None:
    s = legacy_stack
    op = s.operator
    assert (await s.store_credential(op.master, "svc-03", b"rotated")).status == 200
    run = await run_tool(s, "--delete-v1", "--quiet")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    by_service = {r["service"]: r for r in run.reports}
    assert (by_service["svc-03"]["action"], by_service["svc-03"]["v1_deleted"]) == (
        "v2_differs",
        False,
    )
    assert await s.admin_get(v1_key(op.wallet_address, "svc-03")) is not None
    assert await s.admin_keys(f"bots/{op.wallet_address}/") == [v1_key(op.wallet_address, "svc-03")]


async def _run_and_kill(stack: Stack, flags: list[str], after_reports: int, delay: float) -> int:
    """Start the tool, SIGKILL it ``delay`` s after its ``after_reports``-th report line."""
    process = await trio.lowlevel.open_process(
        tool_command(stack, *flags), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO
    )
    assert process.stdout is not None
    seen, buffer = 0, b""
    with trio.move_on_after(30):
        while seen < after_reports:
            chunk = await process.stdout.receive_some()
            if not chunk:
                break
            buffer += chunk
            seen = buffer.count(b"\n")
        await trio.sleep(delay)
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    returncode = await process.wait()
    await process.stdout.aclose()
    return returncode


async def test_sigkill_at_random_points_never_loses_a_credential(legacy_stack: Stack) -> None:
    s = legacy_stack
    rng = random.Random(7)  # fixed seed: the kill points are reproducible
    killed = 0
    for round_ in range(6):
        flags = ["--quiet"] + (["--delete-v1"] if round_ % 2 else [])
        returncode = await _run_and_kill(
            s, flags, after_reports=rng.randrange(len(LEGACY)), delay=rng.uniform(0, 0.08)
        )
        killed += returncode == -signal.SIGKILL
        assert await readable(s) == LEGACY
    assert killed >= 4  # the runs really died mid-way
    final = await run_tool(s, "--delete-v1")
    assert final.returncode == 0, final.stderr
    assert await readable(s) == LEGACY
    assert await s.admin_keys(f"bots/{s.operator.wallet_address}/") == []
