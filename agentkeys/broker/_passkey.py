"""WebAuthn (K11) for the broker: enrollment bound to K10, and assertions, via py_webauthn.

Bootstrap stage 2 (SPEC section 7). The registration challenge commits to the device key::

    challenge = sha256("agentkeys.broker.enroll.v1" ‖ 0x00 ‖ K10 point (64 bytes) ‖ 32 random)

and the client proves K10 possession by an ES256 signature of the 32 challenge bytes (the
chain's convention: ECDSA over sha256(challenge)). Assertion challenges are derived from the
purpose and a server nonce. Sign counts follow WebAuthn: if the stored and the new count are
both 0 accept, otherwise the new count must be greater (checked here, not by py_webauthn, so
the failure has its own reason).

Enrolling a further passkey for an identity that already has one needs an assertion by one
of the identity's enrolled passkeys (the *approval*) over::

    sha256("agentkeys.broker.enroll-approve.v1" ‖ 0x00 ‖ enrollment challenge (32 bytes)
           ‖ sha256(new credential id))

which binds the approval to this enrollment (hence to the new K10, which the enrollment
challenge commits to) and to the very credential being added; the client computes it after
``navigator.credentials.create`` returned the new credential id.

py_webauthn's exceptions are translated at this boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cbor2
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import options_to_json_dict
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from agentkeys.b64url import b64url_decode
from agentkeys.broker.errors import (
    K10ProofRejected,
    PasskeyAssertionRejected,
    PasskeyRegistrationRejected,
    PasskeySignCountReplayed,
)
from agentkeys.errors import FormatError
from agentkeys.omni import p256_public_key_from_point
from attest.k10_signature import verify_k10

__all__ = [
    "ENROLL_APPROVE_TAG",
    "ENROLL_TAG",
    "OIDC_ASSERT_TAG",
    "SIWE_ASSERT_TAG",
    "VerifiedAssertion",
    "VerifiedEnrollment",
    "assertion_challenge",
    "assertion_options",
    "check_sign_count",
    "cose_es256_key",
    "credential_id_of",
    "enrollment_approval_challenge",
    "enrollment_challenge",
    "registration_options",
    "verify_assertion",
    "verify_enrollment",
]

ENROLL_TAG = b"agentkeys.broker.enroll.v1"
SIWE_ASSERT_TAG = b"agentkeys.broker.siwe.v1"
ENROLL_APPROVE_TAG = b"agentkeys.broker.enroll-approve.v1"
OIDC_ASSERT_TAG = b"agentkeys.broker.oidc.v1"


def enrollment_challenge(k10_point: bytes, random: bytes) -> bytes:
    """The registration challenge committing to the K10 point (see the module docstring)."""
    return hashlib.sha256(ENROLL_TAG + b"\x00" + k10_point + random).digest()


def enrollment_approval_challenge(enroll_challenge: bytes, credential_id: bytes) -> bytes:
    """The challenge an enrolled passkey asserts over to approve adding ``credential_id``."""
    return hashlib.sha256(
        ENROLL_APPROVE_TAG + b"\x00" + enroll_challenge + hashlib.sha256(credential_id).digest()
    ).digest()


def cose_es256_key(point: bytes) -> bytes:
    """The COSE_Key (EC2, P-256, ES256) of a 64-byte X ‖ Y point, as py_webauthn takes it."""
    return bytes(cbor2.dumps({1: 2, 3: -7, -1: 1, -2: point[:32], -3: point[32:]}))


def assertion_challenge(tag: bytes, nonce: str) -> bytes:
    """sha256(tag ‖ 0x00 ‖ nonce): the WebAuthn challenge of an assertion step."""
    return hashlib.sha256(tag + b"\x00" + nonce.encode("ascii")).digest()


@contextmanager
def _webauthn_errors(
    error: type[PasskeyRegistrationRejected | PasskeyAssertionRejected], what: str
) -> Iterator[None]:
    try:
        yield
    except WebAuthnException as exc:
        raise error(f"{what} rejected: {type(exc).__name__}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise error(f"{what} is malformed") from exc


def registration_options(
    *,
    rp_id: str,
    rp_name: str,
    user_id: bytes,
    user_name: str,
    challenge: bytes,
    exclude: Sequence[bytes],
    timeout_ms: int,
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptions (JSON form) for enrolling one ES256 passkey."""
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=user_id,
        user_name=user_name,
        challenge=challenge,
        timeout=timeout_ms,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in exclude],
        supported_pub_key_algs=[COSEAlgorithmIdentifier.ECDSA_SHA_256],
    )
    return dict(options_to_json_dict(options))


def assertion_options(
    *, rp_id: str, challenge: bytes, allow: Sequence[bytes], timeout_ms: int
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptions (JSON form) for the given credentials."""
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=timeout_ms,
        allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return dict(options_to_json_dict(options))


@dataclass(frozen=True)
class VerifiedEnrollment:
    """A verified registration: what the store keeps."""

    credential_id: bytes
    public_key: bytes
    sign_count: int


def verify_enrollment(
    credential: Mapping[str, Any],
    *,
    challenge: bytes,
    k10_point: bytes,
    k10_signature: str,
    rp_id: str,
    origin: str,
) -> VerifiedEnrollment:
    """Verify the K10 proof over ``challenge`` and the registration response.

    Raises:
        K10ProofRejected: the K10 signature is malformed or does not verify.
        PasskeyRegistrationRejected: py_webauthn refused the response (origin, challenge,
            rpId, user presence / verification, algorithm, format).
    """
    try:
        raw = b64url_decode(k10_signature)
        key = p256_public_key_from_point(k10_point)
    except FormatError:
        raise K10ProofRejected("the K10 signature is malformed") from None
    if len(raw) != 64:
        raise K10ProofRejected("the K10 signature is malformed")
    valid = verify_k10(key, raw, message=challenge)
    if not valid:
        raise K10ProofRejected("the K10 signature does not verify over the challenge")
    with _webauthn_errors(PasskeyRegistrationRejected, "registration"):
        verified = verify_registration_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            require_user_presence=True,
            require_user_verification=True,
            supported_pub_key_algs=[COSEAlgorithmIdentifier.ECDSA_SHA_256],
        )
    return VerifiedEnrollment(
        credential_id=bytes(verified.credential_id),
        public_key=bytes(verified.credential_public_key),
        sign_count=int(verified.sign_count),
    )


@dataclass(frozen=True)
class VerifiedAssertion:
    """A verified assertion and the sign count to store."""

    credential_id: bytes
    new_sign_count: int


def check_sign_count(stored: int, new: int) -> None:
    """WebAuthn's rule: both 0 is fine, otherwise the count must increase.

    Raises:
        PasskeySignCountReplayed: it did not.
    """
    if (stored != 0 or new != 0) and new <= stored:
        raise PasskeySignCountReplayed("the authenticator's sign count did not increase")


def credential_id_of(credential: Mapping[str, Any]) -> bytes:
    """The raw credential id of an assertion response (its ``rawId``).

    Raises:
        PasskeyAssertionRejected: missing or not base64url.
    """
    raw = credential.get("rawId", credential.get("id"))
    if not isinstance(raw, str):
        raise PasskeyAssertionRejected("assertion lacks rawId")
    try:
        return b64url_decode(raw)
    except FormatError:
        raise PasskeyAssertionRejected("assertion rawId is not base64url") from None


def verify_assertion(
    credential: Mapping[str, Any],
    *,
    challenge: bytes,
    public_key: bytes,
    stored_sign_count: int,
    rp_id: str,
    origin: str,
) -> VerifiedAssertion:
    """Verify an assertion against a stored credential, then the sign-count rule.

    Raises:
        PasskeyAssertionRejected: origin, challenge, rpId, flags, type or signature wrong.
        PasskeySignCountReplayed: the sign count did not increase.
    """
    with _webauthn_errors(PasskeyAssertionRejected, "assertion"):
        verified = verify_authentication_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=public_key,
            credential_current_sign_count=0,  # the rule is applied below, with its own error
            require_user_verification=True,
        )
    check_sign_count(stored_sign_count, int(verified.new_sign_count))
    return VerifiedAssertion(bytes(verified.credential_id), int(verified.new_sign_count))
