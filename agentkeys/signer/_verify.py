"""K10 signature and K11 (WebAuthn) assertion verification helpers (SPEC.md sections 2, 7).

K10: ECDSA P-256 over SHA-256. The caller gives the 64-byte public point
X ‖ Y (hex), the raw 64-byte signature r ‖ s (hex) and either the message
(base64url) or its 32-byte SHA-256 digest (hex). The answer carries the
``device_key_hash`` (keccak256 of X ‖ Y).

K11: py_webauthn's ``verify_authentication_response`` with the caller's
expectations (challenge, rpId, origin, stored COSE public key and sign count,
user verification required by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from webauthn import verify_authentication_response
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidCBORData

from agentkeys.b64url import b64url_decode
from agentkeys.errors import AgentkeysError
from agentkeys.omni import device_key_hash_from_point, p256_public_key_from_point
from agentkeys.signer.errors import K10SignatureRejected, K11AssertionRejected
from attest.k10_signature import verify_k10 as k10_signature_verifies

__all__ = ["VerifiedK10", "VerifiedK11", "verify_k10", "verify_k11"]


@dataclass(frozen=True)
class VerifiedK10:
    """A K10 signature that verified."""

    device_key_hash: str


@dataclass(frozen=True)
class VerifiedK11:
    """A WebAuthn assertion that verified."""

    credential_id: str
    new_sign_count: int
    user_verified: bool


def _hex(value: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise K10SignatureRejected(f"{what} is not hex") from None
    if len(raw) != size:
        raise K10SignatureRejected(f"{what} must be {size} bytes")
    return raw


def verify_k10(
    *, public_key: str, signature: str, message: str | None, digest: str | None
) -> VerifiedK10:
    """Verify a K10 signature (exactly one of ``message``/``digest``).

    Raises:
        K10SignatureRejected: malformed inputs or a signature that does not verify.
    """
    if (message is None) == (digest is None):
        raise K10SignatureRejected("give exactly one of message and digest")
    point = _hex(public_key, 64, "public_key")
    rs = _hex(signature, 64, "signature")
    try:
        key = p256_public_key_from_point(point)
        dkh = device_key_hash_from_point(point)
    except AgentkeysError as exc:
        raise K10SignatureRejected("public_key is not a P-256 point") from exc
    if message is not None:
        try:
            data = b64url_decode(message)
        except AgentkeysError as exc:
            raise K10SignatureRejected("message is not base64url") from exc
        valid = k10_signature_verifies(key, rs, message=data)
    else:
        assert digest is not None
        valid = k10_signature_verifies(key, rs, digest=_hex(digest, 32, "digest"))
    if not valid:  # includes r or s out of range and high-S, as on chain
        raise K10SignatureRejected("the K10 signature does not verify")
    return VerifiedK10(device_key_hash=dkh)


def verify_k11(
    *,
    credential: dict[str, object],
    expected_challenge: str,
    expected_rp_id: str,
    expected_origin: str,
    credential_public_key: str,
    current_sign_count: int,
    require_user_verification: bool,
) -> VerifiedK11:
    """Verify a WebAuthn assertion (``navigator.credentials.get`` JSON) against expectations.

    ``expected_challenge`` and ``credential_public_key`` (COSE) are base64url.

    Raises:
        K11AssertionRejected: malformed or not verifying, with py_webauthn's reason.
    """
    try:
        challenge = b64url_decode(expected_challenge)
        cose = b64url_decode(credential_public_key)
    except AgentkeysError as exc:
        raise K11AssertionRejected("challenge or public key is not base64url") from exc
    if current_sign_count < 0:
        raise K11AssertionRejected("sign count must not be negative")
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=expected_rp_id,
            expected_origin=expected_origin,
            credential_public_key=cose,
            credential_current_sign_count=current_sign_count,
            require_user_verification=require_user_verification,
        )
    except (InvalidAuthenticationResponse, InvalidCBORData) as exc:
        raise K11AssertionRejected(f"assertion rejected: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise K11AssertionRejected("assertion is malformed") from exc
    return VerifiedK11(
        credential_id=verified.credential_id.hex(),
        new_sign_count=verified.new_sign_count,
        user_verified=verified.user_verified,
    )
