"""K3 sealed by the TPM backend (real swtpm): survives a signer restart, useless elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from agentkeys.b64url import b64url_decode
from agentkeys.devstack import Swtpm, start_swtpm
from agentkeys.signer import KeyStore
from agentkeys.signer.errors import KeyStoreError
from attest.seal import open_sealer
from tests.service.conftest import Pki
from tests.signer.conftest import Chain, kek_vectors, seed_state, start_signer

V2 = kek_vectors()["v2"][0]


@pytest.fixture
async def other_swtpm(tmp_path: Path) -> AsyncIterator[Swtpm]:
    async with start_swtpm(run_dir=tmp_path / "other-swtpm") as tpm:
        yield tpm


async def test_tpm_sealed_k3_survives_restart_and_stays_on_its_tpm(
    nursery: trio.Nursery,
    pki: Pki,
    chain: Chain,
    tmp_path: Path,
    swtpm: Swtpm,
    other_swtpm: Swtpm,
) -> None:
    state_dir = tmp_path / "tpm-state"
    sealer = await open_sealer("tpm", tcti=swtpm.tcti)
    try:
        await seed_state(state_dir, sealer)
        running = await start_signer(
            nursery, pki=pki, chain=chain, state_dir=state_dir, sealer=sealer
        )
        await chain.advance_epoch()
        async with running.client(pki, "worker") as worker:
            body = {"version": 2, "actor_omni": V2["actor_omni"], "epoch": 2, "purpose": "encrypt"}
            r = await worker.post("/derive-cred-kek", json=body)
            assert r.status_code == 200, r.text
        epoch2_kek = r.json()["kek"]
        running.service.shutdown()
    finally:
        await sealer.aclose()
    assert (state_dir / "k3-2.sealed").read_bytes()[:5] == b"aks1\x01"  # the TPM backend

    # restart: a new connection to the same TPM unseals everything
    sealer = await open_sealer("tpm", tcti=swtpm.tcti)
    try:
        keys = await KeyStore.open(state_dir, sealer)
    finally:
        await sealer.aclose()
    assert keys.epochs() == (1, 2)
    from agentkeys.kek import v2_kek

    k3_1, k3_2 = keys.k3(1), keys.k3(2)
    assert k3_1 is not None
    assert k3_2 is not None
    assert v2_kek(k3_1, V2["actor_omni"]).hex() == V2["kek_hex"]
    assert v2_kek(k3_2, V2["actor_omni"]) == b64url_decode(epoch2_kek)

    # another TPM cannot unseal the same files
    other = await open_sealer("tpm", tcti=other_swtpm.tcti)
    try:
        with pytest.raises(KeyStoreError, match="cannot unseal"):
            await KeyStore.open(state_dir, other)
    finally:
        await other.aclose()
