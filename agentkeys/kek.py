"""Key-encryption keys for credential envelopes (SPEC section 4).

* v1 KEK (per wallet and service) = sha256("agentkeys.kek-derive.v1" ‖ sig65), where sig65
  is the deterministic EIP-191 signature (r ‖ s ‖ v, v ∈ {0, 1}) by the wallet's K4 over
  :func:`v1_kek_message`. Producing sig65 needs the K4 key: see
  :func:`agentkeys.wallet.v1_kek_for_identity`.
* v2 KEK (per actor and K3 epoch) = HKDF-SHA256(salt "agentkeys.kek-salt.v2", ikm K3[epoch],
  info "agentkeys.user.v1" ‖ actor_omni raw 32 bytes, length 32).

KEKs are secrets: they are returned as ``bytes`` and never appear in reasons.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agentkeys.errors import InvalidKeyMaterial, SignatureMalformed
from agentkeys.omni import hex32_to_bytes, normalize_service, normalize_wallet

__all__ = [
    "KEK_LENGTH",
    "V1_KEK_DERIVE_PREFIX",
    "V2_KEK_INFO_PREFIX",
    "V2_KEK_SALT",
    "v1_kek_from_signature",
    "v1_kek_message",
    "v2_kek",
]

KEK_LENGTH = 32
V1_KEK_DERIVE_PREFIX = b"agentkeys.kek-derive.v1"
V2_KEK_SALT = b"agentkeys.kek-salt.v2"
V2_KEK_INFO_PREFIX = b"agentkeys.user.v1"


def v1_kek_message(wallet: str, service: str) -> bytes:
    """The ASCII message ``agentkeys.kek.v1:<wallet 0x lowercase>:<service>`` K4 signs.

    Raises:
        InvalidIdentifier: invalid wallet.
        InvalidServiceName: invalid service name.
    """
    return f"agentkeys.kek.v1:{normalize_wallet(wallet)}:{normalize_service(service)}".encode(
        "ascii"
    )


def v1_kek_from_signature(sig65: bytes) -> bytes:
    """The v1 KEK from the 65-byte K4 signature r ‖ s ‖ v (v ∈ {0, 1}).

    Raises:
        SignatureMalformed: not 65 bytes, or v not 0 or 1 (27/28 forms are refused: the
            KEK hashes the exact bytes, so only one form may exist).
    """
    if not isinstance(sig65, bytes) or len(sig65) != 65:
        raise SignatureMalformed("v1 KEK needs a 65-byte signature r || s || v")
    if sig65[64] not in (0, 1):
        raise SignatureMalformed("v1 KEK signature must have v in {0, 1}")
    return hashlib.sha256(V1_KEK_DERIVE_PREFIX + sig65).digest()


def v2_kek(k3: bytes, actor_omni: str) -> bytes:
    """The v2 KEK for one actor under one K3 epoch secret.

    Args:
        k3: the 32-byte K3 secret of the epoch the envelope names.
        actor_omni: the actor's omni in any accepted 32-byte hex form.

    Raises:
        InvalidKeyMaterial: k3 is not 32 bytes.
        InvalidIdentifier: actor_omni is not a 32-byte identifier.
    """
    if not isinstance(k3, bytes) or len(k3) != 32:
        raise InvalidKeyMaterial("K3 must be 32 bytes")
    info = V2_KEK_INFO_PREFIX + hex32_to_bytes(actor_omni)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEK_LENGTH, salt=V2_KEK_SALT, info=info)
    return hkdf.derive(k3)
