"""``teardown`` deletes exactly the cap's service (issue 16: it used to empty the whole prefix).

A cap names one service (SPEC.md section 5), so a teardown removes that service's v2 object
and, for the operator's own vault, its v1 object; every other object in the bucket keeps its
bytes. Real anvil, SeaweedFS (STS + policies) and the signer, through both front ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from agentkeys.worker.layout import v1_key, v2_key
from tests.service.conftest import Pki
from tests.signer.conftest import Chain
from tests.worker.conftest import Stack, add_agent, open_stack, write_legacy

SERVICES = ("openai", "github", "anthropic")
LEGACY = {"openai": b"sk-legacy-openai", "github": b"ghp_legacy", "anthropic": b"sk-ant-legacy"}


async def _snapshot(s: Stack) -> dict[str, bytes]:
    """Every object under ``bots/`` with its bytes (admin identity)."""
    found: dict[str, bytes] = {}
    for key in await s.admin_keys("bots/"):
        data = await s.admin_get(key)
        assert data is not None
        found[key] = data
    return found


def _changed(before: dict[str, bytes], after: dict[str, bytes]) -> set[str]:
    """Keys that appeared, disappeared or changed bytes."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


async def test_teardown_deletes_exactly_that_service(frontend: Stack) -> None:
    s = frontend
    op = s.operator
    agent = await add_agent(s.chain, op, "coder", list(SERVICES), read_only=False)
    for service in SERVICES:
        own = await s.store_credential(op.master, service, f"own-{service}".encode())
        assert own.status == 200, own.body
        theirs = await s.store_credential(
            op.master, service, f"agent-{service}".encode(), actor_omni=agent.actor_omni
        )
        assert theirs.status == 200, theirs.body

    # the agent's vault: only its github object goes
    before = await _snapshot(s)
    torn = await s.request(op.master, "teardown", {}, service="github",
                           actor_omni=agent.actor_omni)  # fmt: skip
    assert torn.status == 200, torn.body
    assert torn.body["deleted"] == {"v2": 1, "v1": 0}
    assert torn.body["service"] == "github"
    after = await _snapshot(s)
    assert _changed(before, after) == {v2_key(agent.actor_omni, "github")}
    assert (await s.fetch(agent, "openai")).status == 200
    assert (await s.fetch(agent, "anthropic")).status == 200
    gone = await s.fetch(agent, "github")
    assert gone.status == 404

    # the operator's own vault: only its github object goes
    before = after
    torn = await s.request(op.master, "teardown", {}, service="github")
    assert torn.status == 200, torn.body
    assert torn.body["deleted"] == {"v2": 1, "v1": 0}
    after = await _snapshot(s)
    assert _changed(before, after) == {v2_key(op.omni, "github")}
    listed = await s.request(op.master, "list", {})
    assert [x["service"] for x in listed.body["services"]] == ["anthropic", "openai"]

    # tearing down what is not there deletes nothing and is not an error
    again = await s.request(op.master, "teardown", {}, service="github")
    assert (again.status, again.body["deleted"]) == (200, {"v2": 0, "v1": 0})
    assert _changed(after, await _snapshot(s)) == set()


@pytest.fixture
async def legacy_stack(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with open_stack(
        nursery, pki, chain, tmp_path, pre_transition=write_legacy(pki, LEGACY)
    ) as stack:
        yield stack


async def test_teardown_of_the_own_vault_removes_that_services_v1_object_only(
    legacy_stack: Stack,
) -> None:
    s = legacy_stack
    op = s.operator
    # github read once: lazily copied to v2, so it now has a v1 and a v2 object
    read = await s.request(op.master, "fetch", {"legacy_identity_omni": op.identity_omni},
                           service="github")  # fmt: skip
    assert read.status == 200, read.body
    assert read.body["migration"] == {"migrated": True}
    before = await _snapshot(s)
    assert {v1_key(op.wallet_address, x) for x in SERVICES} <= before.keys()

    torn = await s.request(op.master, "teardown", {}, service="github")
    assert torn.status == 200, torn.body
    assert torn.body["deleted"] == {"v2": 1, "v1": 1}
    after = await _snapshot(s)
    assert _changed(before, after) == {v1_key(op.wallet_address, "github"),
                                       v2_key(op.omni, "github")}  # fmt: skip
    listed = await s.request(op.master, "list", {})
    assert listed.body["services"] == [
        {"service": "anthropic", "source": "v1"},
        {"service": "openai", "source": "v1"},
    ]
