"""Pure signer rules: the epoch decision table and the key store's no-overwrite rule."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agentkeys.signer import KeyStore, Purpose, check_epoch
from agentkeys.signer.errors import (
    EpochInFuture,
    EpochNotCurrent,
    EpochUnavailable,
    EpochUnknown,
    KeyStoreError,
)
from attest.seal import SoftwareSealer

E, D = Purpose.ENCRYPT, Purpose.DECRYPT


@pytest.mark.parametrize(
    ("epoch", "purpose", "current", "held", "error"),
    [
        (3, E, 3, True, None),
        (3, D, 3, True, None),
        (2, D, 3, True, None),
        (2, E, 3, True, EpochNotCurrent),
        (4, D, 3, True, EpochInFuture),
        (4, E, 3, True, EpochInFuture),
        (2, D, 3, False, EpochUnknown),
        (3, E, 3, False, EpochUnknown),
        (3, D, None, True, EpochUnavailable),
    ],
)
def test_epoch_rules(
    epoch: int, purpose: Purpose, current: int | None, held: bool, error: type[Exception] | None
) -> None:
    if error is None:
        check_epoch(epoch, purpose, current=current, held=held)
    else:
        with pytest.raises(error):
            check_epoch(epoch, purpose, current=current, held=held)


async def test_sealed_secrets_are_never_replaced(tmp_path: Path) -> None:
    sealer = SoftwareSealer.open(tmp_path / "seal" / "seal.key")
    state = tmp_path / "state"
    await KeyStore.import_k3(state, sealer, 7, b"\x01" * 32)
    with pytest.raises(KeyStoreError):
        await KeyStore.import_k3(state, sealer, 7, b"\x02" * 32)
    keys = await KeyStore.open(state, sealer)
    assert keys.k3(7) == b"\x01" * 32
    with pytest.raises(KeyStoreError):
        await KeyStore.import_master_secret(state, sealer, b"\x03" * 32)  # created by open()
    await keys.ensure_epoch(8)
    assert keys.epochs() == (7, 8)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in state.iterdir())
    reopened = await KeyStore.open(state, sealer)
    assert reopened.k3(8) == keys.k3(8)
    assert reopened.master_secret == keys.master_secret
    assert reopened.oidc_key.private_numbers() == keys.oidc_key.private_numbers()


async def test_tampered_blob_stops_the_store(tmp_path: Path) -> None:
    sealer = SoftwareSealer.open(tmp_path / "seal" / "seal.key")
    state = tmp_path / "state"
    await KeyStore.import_k3(state, sealer, 1, b"\x01" * 32)
    blob = state / "k3-1.sealed"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(KeyStoreError, match="cannot unseal"):
        await KeyStore.open(state, sealer)
