"""Credential envelopes 0x01, 0x02 and 0x04: AES-256-GCM, seal and open (SPEC section 4).

Layouts (nonce 12 bytes, GCM tag 16 bytes appended to the ciphertext):

    0x01  01 ‖ nonce ‖ ct ‖ tag               AAD "agentkeys.cred.aad.v1|<wallet>|<service>"
    0x02  02 ‖ nonce ‖ ct ‖ tag               AAD "agentkeys.cred.aad.v2|<actor_omni>|<service>"
    0x04  04 ‖ epoch u32 BE ‖ nonce ‖ ct ‖ tag AAD "agentkeys.cred.aad.v2|<actor_omni>|<service>"
                                                  followed by the 5 header bytes

0x01 and 0x02 use the v1 KEK (:mod:`agentkeys.kek`), 0x04 the v2 KEK of the epoch in its
header. A reader learns the version and epoch with :func:`parse_header` (before asking the
signer for a KEK), then calls :func:`open_envelope`. Writers use :func:`seal_v4`; the
legacy S3 backend may still write :func:`seal_v1` / :func:`seal_v2_legacy`.

Rejections, each its own leaf: :class:`EnvelopeTruncated`, :class:`EnvelopeVersionUnknown`,
:class:`EnvelopeContextMissing`, :class:`EnvelopeTampered` (wrong KEK, AAD or modified
bytes; GCM cannot tell which).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentkeys.errors import (
    EnvelopeContextMissing,
    EnvelopeTampered,
    EnvelopeTruncated,
    EnvelopeVersionUnknown,
    InvalidEpoch,
    InvalidKeyMaterial,
)
from agentkeys.omni import normalize_hex32, normalize_service, normalize_wallet

__all__ = [
    "MAX_EPOCH",
    "NONCE_LENGTH",
    "TAG_LENGTH",
    "EnvelopeHeader",
    "EnvelopeVersion",
    "aad_v1",
    "aad_v2",
    "aad_v4",
    "open_envelope",
    "parse_header",
    "seal_v1",
    "seal_v2_legacy",
    "seal_v4",
]

NONCE_LENGTH = 12
TAG_LENGTH = 16
MAX_EPOCH = 0xFFFFFFFF
_KEK_LENGTH = 32


class EnvelopeVersion(IntEnum):
    """The version byte that starts every envelope."""

    V1 = 0x01
    V2_LEGACY = 0x02
    V2 = 0x04


_HEADER_LENGTH = {EnvelopeVersion.V1: 1, EnvelopeVersion.V2_LEGACY: 1, EnvelopeVersion.V2: 5}


@dataclass(frozen=True)
class EnvelopeHeader:
    """What an envelope's first bytes say: its version and, for 0x04, the K3 epoch."""

    version: EnvelopeVersion
    epoch: int | None
    header_length: int

    @property
    def min_length(self) -> int:
        """Smallest valid envelope of this version: header, nonce and tag (29 or 33)."""
        return self.header_length + NONCE_LENGTH + TAG_LENGTH


def parse_header(data: bytes) -> EnvelopeHeader:
    """Read the version (and 0x04 epoch) and check the envelope is long enough to open.

    Raises:
        EnvelopeTruncated: empty, or shorter than the version's minimum (29 / 33 bytes).
        EnvelopeVersionUnknown: first byte not 0x01, 0x02 or 0x04.
    """
    if not data:
        raise EnvelopeTruncated("envelope is empty")
    try:
        version = EnvelopeVersion(data[0])
    except ValueError:
        raise EnvelopeVersionUnknown(f"unknown envelope version byte 0x{data[0]:02x}") from None
    header_length = _HEADER_LENGTH[version]
    min_length = header_length + NONCE_LENGTH + TAG_LENGTH
    if len(data) < min_length:
        raise EnvelopeTruncated(
            f"envelope 0x{version:02x} needs at least {min_length} bytes, got {len(data)}"
        )
    epoch: int | None = None
    if version is EnvelopeVersion.V2:
        (epoch,) = struct.unpack(">I", data[1:5])
    return EnvelopeHeader(version=version, epoch=epoch, header_length=header_length)


def aad_v1(wallet: str, service: str) -> bytes:
    """AAD of 0x01: ``agentkeys.cred.aad.v1|<wallet 0x lowercase>|<service>``."""
    return f"agentkeys.cred.aad.v1|{normalize_wallet(wallet)}|{normalize_service(service)}".encode(
        "ascii"
    )


def aad_v2(actor_omni: str, service: str) -> bytes:
    """AAD of 0x02, and the prefix of 0x04's: ``agentkeys.cred.aad.v2|<actor_omni>|<service>``."""
    omni = normalize_hex32(actor_omni)
    return f"agentkeys.cred.aad.v2|{omni}|{normalize_service(service)}".encode("ascii")


def aad_v4(actor_omni: str, service: str, epoch: int) -> bytes:
    """AAD of 0x04: the 0x02 AAD followed by the 5 header bytes ``04 ‖ epoch u32 BE``."""
    return aad_v2(actor_omni, service) + _v4_header(epoch)


def _v4_header(epoch: int) -> bytes:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        raise InvalidEpoch("epoch must be an integer in 0..2^32-1")
    return bytes([EnvelopeVersion.V2]) + struct.pack(">I", epoch)


def _aead(kek: bytes) -> AESGCM:
    if not isinstance(kek, bytes) or len(kek) != _KEK_LENGTH:
        raise InvalidKeyMaterial("KEK must be 32 bytes")
    return AESGCM(kek)


def _nonce(nonce: bytes | None) -> bytes:
    if nonce is None:
        return os.urandom(NONCE_LENGTH)
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_LENGTH:
        raise InvalidKeyMaterial("nonce must be 12 bytes")
    return nonce


def _seal(header: bytes, plaintext: bytes, kek: bytes, aad: bytes, nonce: bytes | None) -> bytes:
    aead = _aead(kek)
    used_nonce = _nonce(nonce)
    return header + used_nonce + aead.encrypt(used_nonce, plaintext, aad)


def seal_v1(
    plaintext: bytes, *, kek: bytes, wallet: str, service: str, nonce: bytes | None = None
) -> bytes:
    """Seal a legacy 0x01 envelope under a v1 KEK.

    Args:
        nonce: only for test vectors; by default 12 fresh random bytes. Never reuse one.

    Raises:
        InvalidKeyMaterial, InvalidIdentifier, InvalidServiceName.
    """
    return _seal(bytes([EnvelopeVersion.V1]), plaintext, kek, aad_v1(wallet, service), nonce)


def seal_v2_legacy(
    plaintext: bytes, *, kek: bytes, actor_omni: str, service: str, nonce: bytes | None = None
) -> bytes:
    """Seal a legacy pre-release 0x02 envelope under a v1 KEK (see :func:`seal_v1`)."""
    aad = aad_v2(actor_omni, service)
    return _seal(bytes([EnvelopeVersion.V2_LEGACY]), plaintext, kek, aad, nonce)


def seal_v4(
    plaintext: bytes,
    *,
    kek: bytes,
    actor_omni: str,
    service: str,
    epoch: int,
    nonce: bytes | None = None,
) -> bytes:
    """Seal a 0x04 envelope under the v2 KEK of K3 epoch ``epoch`` (see :func:`seal_v1`).

    Raises:
        InvalidEpoch: epoch outside 0..2^32-1 (it cannot be written in the header).
        InvalidKeyMaterial, InvalidIdentifier, InvalidServiceName.
    """
    header = _v4_header(epoch)
    return _seal(header, plaintext, kek, aad_v2(actor_omni, service) + header, nonce)


def open_envelope(
    data: bytes,
    *,
    kek: bytes,
    service: str,
    wallet: str | None = None,
    actor_omni: str | None = None,
) -> bytes:
    """Open an envelope of any accepted version and return the plaintext.

    Args:
        data: the whole envelope.
        kek: the v1 KEK (0x01, 0x02) or the v2 KEK of the header's epoch (0x04).
        service: the service the envelope is stored under.
        wallet: the master wallet; required for 0x01.
        actor_omni: the actor; required for 0x02 and 0x04.

    Raises:
        EnvelopeTruncated, EnvelopeVersionUnknown: see :func:`parse_header`.
        EnvelopeContextMissing: the identifier this version's AAD needs was not given.
        EnvelopeTampered: authentication failed: wrong KEK, wrong AAD or modified bytes.
        InvalidKeyMaterial, InvalidIdentifier, InvalidServiceName: bad arguments.
    """
    header = parse_header(data)
    if header.version is EnvelopeVersion.V1:
        if wallet is None:
            raise EnvelopeContextMissing("a 0x01 envelope needs the wallet for its AAD")
        aad = aad_v1(wallet, service)
    else:
        if actor_omni is None:
            raise EnvelopeContextMissing(
                f"a 0x{header.version:02x} envelope needs the actor_omni for its AAD"
            )
        aad = aad_v2(actor_omni, service)
        if header.version is EnvelopeVersion.V2:
            aad += data[: header.header_length]
    aead = _aead(kek)
    body = data[header.header_length :]
    nonce, sealed = body[:NONCE_LENGTH], body[NONCE_LENGTH:]
    try:
        return aead.decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise EnvelopeTampered("authentication failed: wrong key, AAD or tampered data") from None
