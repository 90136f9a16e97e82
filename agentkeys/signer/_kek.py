"""KEK decisions of the signer (SPEC.md section 4 KEKs, section 7 epoch rule). Pure.

* v2: the epoch must be the chain's current one; for ``decrypt`` a past epoch
  the signer holds a K3 for is accepted too. A future epoch is always refused,
  and so is any epoch while the chain's epoch is not known.
* v1: the wallet must be the identity's K4 wallet (otherwise the "KEK" would be
  a signature by the wrong key, i.e. garbage that looks valid).
"""

from __future__ import annotations

import enum

from agentkeys.kek import v1_kek_from_signature, v1_kek_message, v2_kek
from agentkeys.omni import normalize_hex32, normalize_wallet
from agentkeys.signer._keystore import KeyStore
from agentkeys.signer.errors import (
    EpochInFuture,
    EpochNotCurrent,
    EpochUnavailable,
    EpochUnknown,
    WalletMismatch,
)
from agentkeys.wallet import address_for_private_key, derive_k4_private_key, sign_eip191

__all__ = ["Purpose", "check_epoch", "derive_v1", "derive_v2", "k4_wallet"]


class Purpose(enum.StrEnum):
    """What the caller will do with the KEK."""

    ENCRYPT = "encrypt"
    DECRYPT = "decrypt"


def check_epoch(epoch: int, purpose: Purpose, *, current: int | None, held: bool) -> None:
    """Raise unless ``epoch`` may serve ``purpose`` when the chain is at ``current``.

    Args:
        epoch: the epoch the request names.
        purpose: encrypt or decrypt.
        current: the chain's current epoch (``None``: not known yet).
        held: whether the signer holds K3 for ``epoch``.

    Raises:
        EpochUnavailable, EpochInFuture, EpochNotCurrent, EpochUnknown.
    """
    if current is None:
        raise EpochUnavailable("the signer has not read the chain's K3 epoch yet")
    if epoch > current:
        raise EpochInFuture(f"epoch {epoch} is ahead of the chain's epoch {current}")
    if epoch < current and purpose is Purpose.ENCRYPT:
        raise EpochNotCurrent(f"encryption must use the current epoch {current}, not {epoch}")
    if not held:
        raise EpochUnknown(f"the signer holds no K3 for epoch {epoch}")


def derive_v2(
    keys: KeyStore, actor_omni: str, epoch: int, purpose: Purpose, *, current: int | None
) -> bytes:
    """The v2 KEK of ``actor_omni`` under K3[epoch], after :func:`check_epoch`."""
    actor = normalize_hex32(actor_omni)
    k3 = keys.k3(epoch)
    check_epoch(epoch, purpose, current=current, held=k3 is not None)
    assert k3 is not None
    return v2_kek(k3, actor)


def k4_wallet(keys: KeyStore, identity_omni: str) -> tuple[bytes, str]:
    """``(K4 private key, wallet address)`` of an identity omni."""
    private_key = derive_k4_private_key(keys.master_secret, normalize_hex32(identity_omni))
    return private_key, address_for_private_key(private_key)


def derive_v1(keys: KeyStore, identity_omni: str, wallet: str, service: str) -> bytes:
    """The v1 KEK of (wallet, service), signed by the identity's K4.

    Raises:
        WalletMismatch: ``wallet`` is not the identity's K4 wallet.
        InvalidIdentifier / InvalidServiceName: malformed inputs.
    """
    private_key, address = k4_wallet(keys, identity_omni)
    if normalize_wallet(wallet) != address:
        raise WalletMismatch("the wallet is not the K4 wallet of this identity")
    return v1_kek_from_signature(sign_eip191(private_key, v1_kek_message(address, service)))
