"""K10 signatures and K11 assertions in the byte forms the contracts take (docs/contracts.md).

* K10 (device key, ES256): the contracts verify a low-s (r, s) over the message "the 32
  challenge bytes", i.e. ECDSA digest ``sha256(challenge)``. Master mutations take
  ``k10_sig = device_key_hash ‖ r ‖ s`` (96 bytes); first-master registration takes ``r ‖ s``.
* K11 (passkey): ``k11_assertion = abi.encode(bytes32 r, bytes32 s, uint256 challengeIndex,
  uint256 typeIndex, bytes authenticatorData, string clientDataJSON)`` (OpenZeppelin's
  WebAuthnAuth, flat), s normalised to the low half.

ECDSA signatures whose s is in the high half are rewritten to (r, n - s): equally valid, and
the only form the contracts accept (malleability; the rule is attest.k10_signature's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from eth_abi.abi import encode as abi_encode

from agentkeys.chain.errors import AbiError
from agentkeys.errors import InvalidKeyMaterial, SignatureMalformed
from agentkeys.es256 import der_to_raw_rs
from agentkeys.omni import device_key_hash_from_point
from attest import k10_signature

__all__ = [
    "K10Signer",
    "MasterAuthority",
    "PasskeyAuthenticator",
    "SoftwareK10Signer",
    "WebAuthnAssertion",
    "encode_k10_sig",
    "encode_k11_assertion",
    "k10_digest",
]


class K10Signer(Protocol):
    """A device key (K10): software key file or TPM-resident key."""

    @property
    def public_point(self) -> bytes:
        """The public key as X ‖ Y (64 bytes)."""
        ...

    async def sign_digest(self, digest: bytes) -> bytes:
        """ECDSA P-256 over a 32-byte SHA-256 digest; DER-encoded signature."""
        ...


class WebAuthnAssertion(Protocol):
    """What the contracts need of a WebAuthn assertion (SoftAssertion provides it)."""

    @property
    def authenticator_data(self) -> bytes: ...

    @property
    def client_data_json(self) -> bytes: ...

    @property
    def signature(self) -> bytes:
        """DER ECDSA over authenticatorData ‖ sha256(clientDataJSON)."""
        ...


class PasskeyAuthenticator(Protocol):
    """A K11 passkey: asserts over a raw challenge (user presence and verification)."""

    async def get_assertion(self, challenge: bytes) -> WebAuthnAssertion: ...


class SoftwareK10Signer:
    """A K10 key held in memory by ``cryptography`` (the software fallback of SPEC section 2).

    Raises:
        InvalidKeyMaterial: not a P-256 private key.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, ec.SECP256R1
        ):
            raise InvalidKeyMaterial("K10 must be a P-256 private key")
        self._key = private_key
        numbers = private_key.public_key().public_numbers()
        self._point = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    @classmethod
    def generate(cls) -> SoftwareK10Signer:
        """A fresh random key."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_point(self) -> bytes:
        """X ‖ Y."""
        return self._point

    @property
    def device_key_hash(self) -> bytes:
        """keccak256(X ‖ Y), 32 raw bytes."""
        return bytes.fromhex(device_key_hash_from_point(self._point))

    async def sign_digest(self, digest: bytes) -> bytes:
        """DER ECDSA over the prehashed SHA-256 ``digest``."""
        if len(digest) != 32:
            raise SignatureMalformed("K10 signs 32-byte SHA-256 digests")
        try:
            return self._key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except UnsupportedAlgorithm:  # pragma: no cover - P-256 + SHA-256 always available
            raise InvalidKeyMaterial("K10 key cannot sign") from None


@dataclass(frozen=True)
class MasterAuthority:
    """What authorises master mutations: a registered master device's K10 and its passkey."""

    device_key_hash: bytes
    k10: K10Signer
    passkey: PasskeyAuthenticator


def k10_digest(challenge: bytes) -> bytes:
    """sha256(challenge): the ECDSA digest a K10 signs for a challenge."""
    return hashlib.sha256(challenge).digest()


def _low_s_rs(der: bytes) -> bytes:
    """``r ‖ s`` of a DER ECDSA signature, with s in the low half.

    Raises:
        SignatureMalformed: not DER, or r/s out of range.
    """
    raw = der_to_raw_rs(der)
    return k10_signature.low_s(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def encode_k10_sig(der: bytes, device_key_hash: bytes | None = None) -> bytes:
    """``device_key_hash ‖ r ‖ s`` (96 bytes), or ``r ‖ s`` (64 bytes) without a device."""
    raw = _low_s_rs(der)
    if device_key_hash is None:
        return raw
    if len(device_key_hash) != 32:
        raise AbiError("device_key_hash must be 32 bytes")
    return device_key_hash + raw


_TYPE_MARK = b'"type":"webauthn.get"'
_CHALLENGE_MARK = b'"challenge":"'


def encode_k11_assertion(assertion: WebAuthnAssertion, *, low_s: bool = True) -> bytes:
    """The ABI-encoded WebAuthnAuth the contracts take (see module docstring).

    ``low_s=False`` keeps a high s as produced (negative tests).

    Raises:
        SignatureMalformed: the signature is not DER.
        AbiError: clientDataJSON lacks the type or challenge member.
    """
    rs = (_low_s_rs if low_s else der_to_raw_rs)(assertion.signature)
    client_data = assertion.client_data_json
    type_index = client_data.find(_TYPE_MARK)
    challenge_index = client_data.find(_CHALLENGE_MARK)
    if challenge_index < 0:
        raise AbiError("clientDataJSON has no challenge member")
    if type_index < 0:  # let the contract reject it; point at the start
        type_index = 0
    try:
        return abi_encode(
            ["bytes32", "bytes32", "uint256", "uint256", "bytes", "string"],
            [
                rs[:32],
                rs[32:],
                challenge_index,
                type_index,
                assertion.authenticator_data,
                client_data.decode("utf-8"),
            ],
        )
    except (UnicodeDecodeError, OverflowError, ValueError, TypeError):
        raise AbiError("assertion does not encode") from None
