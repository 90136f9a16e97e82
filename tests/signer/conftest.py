"""Signer fixtures: a deployment PKI, real anvil with the contracts, a real sealer, the signer.

The signer runs in-process on a real 127.0.0.1 mTLS socket; callers use real
role certificates. The chain is a real anvil with the agentkeys contracts
deployed (one governance member, threshold 1) so tests can advance the K3
epoch on chain. The starting helpers live in tests/services.py (shared with the
worker, broker and daemon tests); they are re-exported here for the test modules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from attest.seal import SoftwareSealer
from tests.service.conftest import Pki
from tests.services import (
    VECTORS,
    Chain,
    RunningSigner,
    chain,
    kek_vectors,
    pki,
    seed_state,
    start_signer,
    vector_k3,
    vector_master_secret,
)

__all__ = [
    "VECTORS",
    "Chain",
    "RunningSigner",
    "chain",
    "kek_vectors",
    "pki",
    "seed_state",
    "start_signer",
    "vector_k3",
    "vector_master_secret",
]


@pytest.fixture
def sealer(tmp_path: Path) -> SoftwareSealer:
    return SoftwareSealer.open(tmp_path / "seal" / "seal.key")


@pytest.fixture
async def signer(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, sealer: SoftwareSealer
) -> RunningSigner:
    state_dir = tmp_path / "signer-state"
    await seed_state(state_dir, sealer)
    return await start_signer(nursery, pki=pki, chain=chain, state_dir=state_dir, sealer=sealer)
