"""The typed worker client (agentkeys.clients.WorkerClient) against the real worker.

Store, fetch, list and teardown presenting real caps (signed with the stack's K1) with the
client's worker PoP; the worker's refusals arrive as PeerRefused with its status and code.
Real anvil (contracts), SeaweedFS (STS + policies) and the signer over mTLS.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentkeys.cap import CapOp, parse_cap_token
from agentkeys.clients import MintedCap, PeerRefused, WorkerClient
from attest.device_key import SoftwareDeviceKey
from tests.worker.conftest import Device, Stack

SECRET = b"sk-typed-client-0123"


async def minted(stack: Stack, device: Device, op: CapOp, service: str = "openai") -> MintedCap:
    """A cap as the broker would mint it (the stack's K1 signs it)."""
    token, _payload = await stack.cap(device, op, service)
    return MintedCap(cap=parse_cap_token(token), token=token, scope_source="master_self")


async def test_the_client_stores_fetches_lists_and_tears_down(stack: Stack, tmp_path: Path) -> None:
    master = stack.operator.master
    key = SoftwareDeviceKey(master.key, tmp_path / "k10.pem")
    async with httpx.AsyncClient(base_url=stack.worker_url, trust_env=False) as http:
        worker = WorkerClient(http)
        stored = await worker.store(await minted(stack, master, CapOp.STORE), key, SECRET)
        assert stored.envelope_version == 4
        fetched = await worker.fetch(await minted(stack, master, CapOp.FETCH), key)
        assert (fetched.credential, fetched.source, fetched.key) == (SECRET, "v2", stored.key)
        assert "credential" not in fetched.answer
        listed = await worker.list(await minted(stack, master, CapOp.LIST), key)
        assert [(s.service, s.source) for s in listed.services] == [("openai", "v2")]
        torn = await worker.teardown(await minted(stack, master, CapOp.TEARDOWN), key)
        assert torn.deleted == {"v2": 1, "v1": 0}
        with pytest.raises(PeerRefused) as gone:
            await worker.fetch(await minted(stack, master, CapOp.FETCH), key)
        assert (gone.value.http_status, gone.value.code) == (404, "credential_not_found")
        assert gone.value.peer_reason


async def test_a_cap_of_another_operation_or_key_is_the_workers_to_refuse(
    stack: Stack, tmp_path: Path
) -> None:
    master = stack.operator.master
    key = SoftwareDeviceKey(master.key, tmp_path / "k10.pem")
    other = SoftwareDeviceKey.open(tmp_path / "other" / "k10.pem")
    async with httpx.AsyncClient(base_url=stack.worker_url, trust_env=False) as http:
        worker = WorkerClient(http)
        with pytest.raises(PeerRefused) as wrong_op:
            await worker.fetch(await minted(stack, master, CapOp.LIST), key)
        assert (wrong_op.value.http_status, wrong_op.value.code) == (
            403,
            "cap_operation_mismatch",
        )
        with pytest.raises(PeerRefused) as wrong_key:
            await worker.fetch(await minted(stack, master, CapOp.FETCH), other)
        assert wrong_key.value.http_status == 401
        assert wrong_key.value.code is not None
        assert wrong_key.value.code.startswith("pop_")
