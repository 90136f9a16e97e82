"""K4: the secp256k1 wallet the signer derives for an identity, and EIP-191 signing.

Implements the derivation fixed by issue 2 (SPEC section 2, K4): HKDF-SHA256 with salt
``agentkeys-signer-v0``, ikm = the signer's master secret, info = ``0x01 ‖
"agentkeys-evm-wallet" ‖ identity omni raw 32 bytes``, 32 bytes out. If that is not a
valid secp256k1 scalar (0 or ≥ n) the derivation is repeated with one extra byte 1, 2, …,
15 appended to info; the 16th failure raises :class:`KeyDerivationExhausted`.

Signatures are deterministic (RFC 6979, low-s, via eth_keys) and returned as 65 bytes
r ‖ s ‖ v with v ∈ {0, 1}. Private keys are ``bytes`` and never appear in reasons.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_hash.auto import keccak
from eth_keys.datatypes import PrivateKey, Signature
from eth_keys.exceptions import BadSignature
from eth_utils.exceptions import ValidationError

from agentkeys.errors import (
    InvalidKeyMaterial,
    KeyDerivationExhausted,
    SignatureInvalid,
    SignatureMalformed,
)
from agentkeys.kek import v1_kek_from_signature, v1_kek_message
from agentkeys.omni import hex32_to_bytes

__all__ = [
    "K4_INFO_PREFIX",
    "K4_MAX_RETRIES",
    "K4_SALT",
    "SECP256K1_N",
    "address_for_private_key",
    "derive_k4",
    "derive_k4_private_key",
    "recover_eip191",
    "sign_eip191",
    "v1_kek_for_identity",
]

K4_SALT = b"agentkeys-signer-v0"
K4_INFO_PREFIX = b"\x01agentkeys-evm-wallet"
K4_MAX_RETRIES = 15
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_MIN_MASTER_SECRET = 32


@contextmanager
def _eth_keys_errors() -> Iterator[None]:
    """Translate eth_keys' exceptions at the boundary into our leaves."""
    try:
        yield
    except BadSignature as exc:
        raise SignatureInvalid("signature does not recover to a public key") from exc
    except ValidationError as exc:
        raise SignatureMalformed("signature or key rejected by secp256k1 validation") from exc


def derive_k4(master_secret: bytes, identity_omni: str) -> tuple[bytes, int]:
    """Derive the K4 private key and report which attempt produced it.

    Returns:
        ``(private_key, retry)``: the 32-byte key and the extra info byte used (0 when the
        first attempt, without an extra byte, was a valid scalar).

    Raises:
        InvalidKeyMaterial: master secret shorter than 32 bytes.
        InvalidIdentifier: identity_omni is not a 32-byte identifier.
        KeyDerivationExhausted: no valid scalar in 16 attempts.
    """
    if not isinstance(master_secret, bytes) or len(master_secret) < _MIN_MASTER_SECRET:
        raise InvalidKeyMaterial("signer master secret must be at least 32 bytes")
    base_info = K4_INFO_PREFIX + hex32_to_bytes(identity_omni)
    for retry in range(K4_MAX_RETRIES + 1):
        info = base_info if retry == 0 else base_info + bytes([retry])
        candidate = HKDF(algorithm=hashes.SHA256(), length=32, salt=K4_SALT, info=info).derive(
            master_secret
        )
        if 0 < int.from_bytes(candidate, "big") < SECP256K1_N:
            return candidate, retry
    raise KeyDerivationExhausted("no valid secp256k1 scalar for this identity")


def derive_k4_private_key(master_secret: bytes, identity_omni: str) -> bytes:
    """The 32-byte K4 secp256k1 private key for an identity omni (see :func:`derive_k4`)."""
    return derive_k4(master_secret, identity_omni)[0]


def _private_key(key: bytes) -> PrivateKey:
    if not isinstance(key, bytes) or len(key) != 32:
        raise InvalidKeyMaterial("secp256k1 private key must be 32 bytes")
    if not 0 < int.from_bytes(key, "big") < SECP256K1_N:
        raise InvalidKeyMaterial("not a valid secp256k1 private key")
    return PrivateKey(key)


def address_for_private_key(key: bytes) -> str:
    """The EVM address of a secp256k1 private key, lowercase ``0x`` hex.

    Raises:
        InvalidKeyMaterial: not a valid 32-byte secp256k1 scalar.
    """
    return str(_private_key(key).public_key.to_address()).lower()


def _eip191_hash(message: bytes) -> bytes:
    if not isinstance(message, bytes):
        raise SignatureMalformed("EIP-191 messages are bytes")
    # EIP-191 version 0x45 ("personal_sign"): the prefix and the decimal message length.
    prefix = b"\x19Ethereum Signed Message:\n" + str(len(message)).encode("ascii")
    return bytes(keccak(prefix + message))


def sign_eip191(private_key: bytes, message: bytes) -> bytes:
    """EIP-191 ``personal_sign`` of ``message``: 65 bytes r ‖ s ‖ v, v ∈ {0, 1}, RFC 6979.

    Raises:
        InvalidKeyMaterial: not a valid secp256k1 private key.
    """
    key = _private_key(private_key)
    digest = _eip191_hash(message)
    with _eth_keys_errors():
        return bytes(key.sign_msg_hash(digest).to_bytes())


def recover_eip191(message: bytes, sig65: bytes) -> str:
    """The lowercase ``0x`` address whose key made this EIP-191 signature.

    ``v`` may be 0/1 or the legacy 27/28.

    Raises:
        SignatureMalformed: not 65 bytes, v out of range, r or s out of range.
        SignatureInvalid: the signature recovers to no key.
    """
    if not isinstance(sig65, bytes) or len(sig65) != 65:
        raise SignatureMalformed("EIP-191 signature must be 65 bytes r || s || v")
    v = sig65[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise SignatureMalformed("EIP-191 signature v must be 0, 1, 27 or 28")
    r = int.from_bytes(sig65[:32], "big")
    s = int.from_bytes(sig65[32:64], "big")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SignatureMalformed("EIP-191 signature r or s out of range")
    digest = _eip191_hash(message)
    with _eth_keys_errors():
        signature = Signature(sig65[:64] + bytes([v]))
        public_key = signature.recover_public_key_from_msg_hash(digest)
    return str(public_key.to_address()).lower()


def v1_kek_for_identity(master_secret: bytes, identity_omni: str, service: str) -> bytes:
    """The v1 KEK for (identity, service): derive K4, sign :func:`v1_kek_message`, hash.

    Raises:
        InvalidKeyMaterial, InvalidIdentifier, InvalidServiceName, KeyDerivationExhausted.
    """
    private_key = derive_k4_private_key(master_secret, identity_omni)
    wallet = address_for_private_key(private_key)
    sig65 = sign_eip191(private_key, v1_kek_message(wallet, service))
    return v1_kek_from_signature(sig65)
