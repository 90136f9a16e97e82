"""The device sign-in message: a K10 signs a broker's challenge (SPEC section 8, the sidecar's
own identity).

The sidecar daemon authenticates to the broker as its agent device, never with the
operator's J1. The broker hands out a fresh single-use challenge for one device_key_hash
(``POST /v1/auth/device/challenge``); the device's K10 signs::

    "agentkeys.device-signin.v1" ‖ 0x00 ‖ len(audience) u8 ‖ audience ASCII
    ‖ challenge (32 bytes) ‖ device_key_hash (32 bytes)

where ``audience`` is the broker's session audience (``[site] session_audience``, default
``agentkeys-broker``), so that a signature for one broker is useless at another. The
signature is ES256 over SHA-256 of that message (a TPM signs the digest), sent as
base64url (no padding) of the low-S ``r ‖ s`` (the K10 signature rule of
:mod:`attest.k10_signature`), to ``POST /v1/auth/device/session``.
"""

from __future__ import annotations

import hashlib
import re

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_decode
from agentkeys.errors import FormatError
from agentkeys.omni import hex32_to_bytes
from attest.k10_signature import verify_k10

__all__ = [
    "DEVICE_CHALLENGE_LENGTH",
    "DEVICE_SIGNIN_PREFIX",
    "device_signin_digest",
    "device_signin_message",
    "verify_device_signin",
]

DEVICE_SIGNIN_PREFIX = b"agentkeys.device-signin.v1"
DEVICE_CHALLENGE_LENGTH = 32
_AUDIENCE = re.compile(r"[\x21-\x7e]{1,255}", re.ASCII)
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}", re.ASCII)


def device_signin_message(*, audience: str, challenge: bytes, device_key_hash: str) -> bytes:
    """The bytes a K10 signs to sign in (module docstring).

    Raises:
        FormatError: the audience is not 1..255 printable ASCII, the challenge not 32 bytes,
            or the device_key_hash not 64 hex digits.
    """
    if not _AUDIENCE.fullmatch(audience):
        raise FormatError("the broker audience must be 1..255 printable ASCII characters")
    if not isinstance(challenge, bytes) or len(challenge) != DEVICE_CHALLENGE_LENGTH:
        raise FormatError(f"the challenge must be {DEVICE_CHALLENGE_LENGTH} bytes")
    encoded = audience.encode("ascii")
    return (
        DEVICE_SIGNIN_PREFIX
        + b"\x00"
        + bytes([len(encoded)])
        + encoded
        + challenge
        + hex32_to_bytes(device_key_hash)
    )


def device_signin_digest(*, audience: str, challenge: bytes, device_key_hash: str) -> bytes:
    """SHA-256 of :func:`device_signin_message` (what a K10 backend signs)."""
    return hashlib.sha256(
        device_signin_message(
            audience=audience, challenge=challenge, device_key_hash=device_key_hash
        )
    ).digest()


def verify_device_signin(
    signature: str,
    *,
    public_key: ec.EllipticCurvePublicKey,
    audience: str,
    challenge: bytes,
    device_key_hash: str,
) -> bool:
    """Whether ``signature`` (base64url ``r ‖ s``) is ``public_key``'s K10 signature over the
    sign-in message for these values. Never raises for a bad signature.

    Raises:
        FormatError: the expected values themselves are malformed (see
            :func:`device_signin_message`).
    """
    message = device_signin_message(
        audience=audience, challenge=challenge, device_key_hash=device_key_hash
    )
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        return False
    try:
        raw = b64url_decode(signature)
    except FormatError:
        return False
    return verify_k10(public_key, raw, message=message)
