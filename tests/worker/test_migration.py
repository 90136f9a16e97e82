"""v1 → v2 through the worker: dual read, lazy migration, list merge, 0x02 upgrade, isolation.

The "existing" data is written by the legacy client-side backend while SeaweedFS runs the
policy from before SPEC section 9 step 4; SeaweedFS then restarts on the same data with
both statement families (the transition) and the worker reads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from agentkeys.b64url import b64url_decode
from agentkeys.clients.signer import SignerClient
from agentkeys.legacy_s3 import EnvelopeChoice
from agentkeys.worker.errors import StorageDenied
from agentkeys.worker.layout import v1_key, v2_key
from tests.service.conftest import Pki
from tests.signer.conftest import Chain
from tests.worker.conftest import (
    Stack,
    legacy_backend,
    open_stack,
    register_operator,
    write_legacy,
)

LEGACY = {"openai": b"sk-legacy-openai", "github": b"ghp_legacy", "anthropic": b"sk-ant-legacy"}


@pytest.fixture(params=["service", "lambda"])
async def legacy_stack(
    request: pytest.FixtureRequest,
    nursery: trio.Nursery,
    pki: Pki,
    chain: Chain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Stack]:
    from agentkeys.worker import _lambda

    hook = write_legacy(pki, LEGACY, v2={"mistral": b"x"})
    async with open_stack(nursery, pki, chain, tmp_path, pre_transition=hook) as stack:
        stack.frontend = request.param
        monkeypatch.setenv(_lambda.CONFIG_ENV, str(stack.config_path))
        _lambda.reset_for_tests()
        yield stack


async def test_v1_data_reads_through_the_worker_and_migrates_lazily(legacy_stack: Stack) -> None:
    s = legacy_stack
    op = s.operator
    master = op.master
    identity = {"legacy_identity_omni": op.identity_omni}
    key1, key2 = v1_key(op.wallet_address, "openai"), v2_key(op.omni, "openai")
    v1_before = await s.admin_get(key1)
    assert v1_before is not None
    assert v1_before[0] == 1

    needs_identity = await s.request(master, "fetch", {})
    assert (needs_identity.status, needs_identity.body["error"]) == (
        409,
        "legacy_identity_required",
    )
    assert await s.admin_get(key2) is None

    first = await s.request(master, "fetch", identity)
    assert first.status == 200, first.body
    assert b64url_decode(first.body["credential"]) == LEGACY["openai"]
    assert (first.body["source"], first.body["envelope_version"]) == ("v1", 1)
    assert first.body["migration"] == {"migrated": True}
    copy = await s.admin_get(key2)
    assert copy is not None
    assert copy[0] == 4
    assert int.from_bytes(copy[1:5], "big") == await s.chain.client.current_epoch()
    assert await s.admin_get(key1) == v1_before  # the v1 object stays

    second = await s.request(master, "fetch", {})
    assert second.status == 200, second.body
    assert (second.body["source"], second.body["envelope_version"]) == ("v2", 4)
    assert b64url_decode(second.body["credential"]) == LEGACY["openai"]
    assert second.body["migration"] == {"migrated": False}

    # After the transition the legacy backend may write 0x02 at the v2 key; the worker
    # opens it and rewrites it in place as 0x04.
    warned: list[str] = []
    async with s.signer.client(s.pki, "worker") as http:
        legacy2 = legacy_backend(SignerClient(http), s.store, op, EnvelopeChoice.V2, warned)
        await legacy2.store("mistral", b"mistral-key")
    assert (await s.admin_get(v2_key(op.omni, "mistral")) or b"")[:1] == b"\x02"
    upgraded = await s.request(master, "fetch", identity, service="mistral")
    assert upgraded.status == 200, upgraded.body
    assert (upgraded.body["source"], upgraded.body["envelope_version"]) == ("v2", 2)
    assert upgraded.body["migration"] == {"migrated": True}
    assert (await s.admin_get(v2_key(op.omni, "mistral")) or b"")[:1] == b"\x04"

    listed = await s.request(master, "list", {})
    assert listed.body["services"] == [
        {"service": "anthropic", "source": "v1"},
        {"service": "github", "source": "v1"},
        {"service": "mistral", "source": "v2"},
        {"service": "openai", "source": "v2"},
    ]

    # A newer v2 credential wins over the v1 one.
    assert (await s.store_credential(master, "github", b"ghp_new")).status == 200
    newer = await s.request(master, "fetch", identity, service="github")
    assert b64url_decode(newer.body["credential"]) == b"ghp_new"

    deleted = {"v2": 0, "v1": 0}
    for service in ("anthropic", "github", "mistral", "openai"):
        torn = await s.request(master, "teardown", {}, service=service)
        assert torn.status == 200, torn.body
        deleted = {k: deleted[k] + torn.body["deleted"][k] for k in deleted}
    assert deleted == {"v2": 3, "v1": 3}
    assert await s.admin_keys("bots/") == []


async def test_sts_credentials_confine_a_bypassed_worker(stack: Stack) -> None:
    """Actor A's S3 credentials cannot touch actor B's objects, whatever the worker decides."""
    s = stack
    alice = s.operator
    bob = await register_operator(s.chain, "bob@example.com")
    assert (await s.store_credential(bob.master, "openai", b"bob-secret")).status == 200
    await s.admin_put(v1_key(bob.wallet_address, "openai"), b"\x01" + bytes(40))

    # The worker's checks bypassed: take alice's per-actor store and aim it at bob's keys.
    store = await s.core._object_store(alice.omni, alice.wallet_address)
    for key in (v2_key(bob.omni, "openai"), v1_key(bob.wallet_address, "openai")):
        with pytest.raises(StorageDenied, match="AccessDenied"):
            await store.get(key)
        with pytest.raises(StorageDenied):
            await store.put(key, b"overwrite")
    with pytest.raises(StorageDenied):
        await store.list_keys(f"bots/{bob.omni}/")
    with pytest.raises(StorageDenied):
        await store.get(f"bots/{alice.omni}-x/credentials/openai.enc")
    # ...while alice's own prefixes work.
    await store.put(v2_key(alice.omni, "openai"), b"ok")
    assert await store.get(v2_key(alice.omni, "openai")) == b"ok"

    # Through the worker, alice's device cannot name bob as the actor either.
    crossed = await s.fetch(alice.master, actor_omni=bob.omni)
    assert (crossed.status, crossed.body["error"]) == (403, "actor_not_agent_of_operator")
    assert "credential" not in crossed.body
