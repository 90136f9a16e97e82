"""What the page asks the browser for, and the checks on what it answers (pure functions).

Registration answers are verified with py_webauthn (challenge, origin, rpId, user presence and
verification, ES256 only); assertions likewise, against the registered credential, so a wrong
passkey is reported here, before anything is sent to a chain. The WebAuthn rpId must fit the
page origin: the page is served as ``http://localhost:<port>`` (a secure context), so the rpId
is ``localhost`` (an IP address is not a valid rpId).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cbor2
from webauthn import verify_authentication_response, verify_registration_response
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.decode_credential_public_key import (
    DecodedEC2PublicKey,
    decode_credential_public_key,
)
from webauthn.helpers.exceptions import WebAuthnException

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.errors import InvalidEncoding
from agentkeys.passkey_page.errors import PasskeyResponseInvalid, PasskeyWrongCredential

__all__ = [
    "DEFAULT_RP_ID",
    "EnrolledPasskey",
    "PageAssertion",
    "assertion_ceremony",
    "cose_es256",
    "enrollment_ceremony",
    "verify_assertion",
    "verify_enrollment",
]

DEFAULT_RP_ID = "localhost"
_ES256 = -7


@dataclass(frozen=True)
class EnrolledPasskey:
    """A newly created ES256 passkey: what the registry stores about it (SPEC section 6)."""

    credential_id: bytes
    public_point: bytes  # X ‖ Y
    rp_id: str
    sign_count: int

    @property
    def credential_id_hash(self) -> bytes:
        """sha256(credential id), as SidecarRegistry records it."""
        return hashlib.sha256(self.credential_id).digest()

    @property
    def rp_id_hash(self) -> bytes:
        """sha256(rpId)."""
        return hashlib.sha256(self.rp_id.encode()).digest()


@dataclass(frozen=True)
class PageAssertion:
    """An assertion from the page, in the shape agentkeys.chain.signing encodes."""

    credential_id: bytes
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes
    sign_count: int


def enrollment_ceremony(
    *,
    challenge: bytes,
    rp_id: str,
    user_id: bytes,
    user_name: str,
    purpose: str,
    timeout_ms: int,
    rp_name: str = "agentkeys",
    details: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The page request for ``navigator.credentials.create`` (ES256, UV required, resident).

    ``details`` are (name, value) lines the page shows as text (never as HTML).
    """
    return {
        "kind": "create",
        "purpose": purpose,
        "details": [[name, value] for name, value in details],
        "publicKey": {
            "rp": {"id": rp_id, "name": rp_name},
            "user": {"id": b64url_encode(user_id), "name": user_name, "displayName": user_name},
            "challenge": b64url_encode(challenge),
            "pubKeyCredParams": [{"type": "public-key", "alg": _ES256}],
            "timeout": timeout_ms,
            "attestation": "none",
            "authenticatorSelection": {
                "residentKey": "preferred",
                "userVerification": "required",
            },
        },
    }


def assertion_ceremony(
    *,
    challenge: bytes,
    rp_id: str,
    credential_id: bytes,
    purpose: str,
    timeout_ms: int,
    details: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The page request for ``navigator.credentials.get`` limited to one credential.

    ``details`` are (name, value) lines of what is approved, shown as text (never as HTML).
    """
    return {
        "kind": "get",
        "purpose": purpose,
        "details": [[name, value] for name, value in details],
        "publicKey": {
            "rpId": rp_id,
            "challenge": b64url_encode(challenge),
            "timeout": timeout_ms,
            "userVerification": "required",
            "allowCredentials": [{"type": "public-key", "id": b64url_encode(credential_id)}],
        },
    }


def cose_es256(point: bytes) -> bytes:
    """A P-256 public point X ‖ Y as a COSE_Key (EC2, ES256)."""
    if len(point) != 64:
        raise PasskeyResponseInvalid("a P-256 point is 64 bytes")
    return cbor2.dumps({1: 2, 3: _ES256, -1: 1, -2: point[:32], -3: point[32:]})


@contextmanager
def _translate(error: type[PasskeyResponseInvalid | PasskeyWrongCredential]) -> Iterator[None]:
    try:
        yield
    except WebAuthnException as exc:
        raise error(f"passkey answer rejected: {str(exc)[:160]}") from exc
    except (InvalidEncoding, KeyError, TypeError, ValueError) as exc:
        raise PasskeyResponseInvalid("passkey answer is malformed") from exc


def verify_enrollment(
    credential: Mapping[str, Any], *, challenge: bytes, origin: str, rp_id: str
) -> EnrolledPasskey:
    """Check a registration answer and extract the passkey.

    Raises:
        PasskeyResponseInvalid: malformed, wrong challenge/origin/rpId, no UV, not ES256.
    """
    with _translate(PasskeyResponseInvalid):
        verified = verify_registration_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            require_user_verification=True,
            supported_pub_key_algs=[COSEAlgorithmIdentifier.ECDSA_SHA_256],
        )
        key = decode_credential_public_key(verified.credential_public_key)
    if not isinstance(key, DecodedEC2PublicKey) or len(key.x) != 32 or len(key.y) != 32:
        raise PasskeyResponseInvalid("the passkey is not a P-256 (ES256) key")
    return EnrolledPasskey(
        credential_id=bytes(verified.credential_id),
        public_point=bytes(key.x) + bytes(key.y),
        rp_id=rp_id,
        sign_count=verified.sign_count,
    )


def verify_assertion(
    credential: Mapping[str, Any],
    *,
    challenge: bytes,
    origin: str,
    rp_id: str,
    credential_id: bytes,
    public_point: bytes,
) -> PageAssertion:
    """Check an assertion answer against the registered passkey.

    The sign count is not checked here (the chain holds the stored count and checks it).

    Raises:
        PasskeyWrongCredential: another credential, or the signature does not verify.
        PasskeyResponseInvalid: malformed, wrong challenge/origin/rpId, or no UV.
    """
    with _translate(PasskeyResponseInvalid):
        raw_id = b64url_decode(str(credential["rawId"]))
        response = credential["response"]
        authenticator_data = b64url_decode(str(response["authenticatorData"]))
        client_data = b64url_decode(str(response["clientDataJSON"]))
        signature = b64url_decode(str(response["signature"]))
    if raw_id != credential_id:
        raise PasskeyWrongCredential("the browser used another passkey than the registered one")
    with _translate(PasskeyWrongCredential):
        verified = verify_authentication_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=cose_es256(public_point),
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    return PageAssertion(
        credential_id=raw_id,
        authenticator_data=authenticator_data,
        client_data_json=client_data,
        signature=signature,
        sign_count=verified.new_sign_count,
    )
