"""The soft authenticator (agentkeys.devstack.softauthn) answers as py_webauthn expects."""

from __future__ import annotations

import json

import pytest
from webauthn import verify_authentication_response, verify_registration_response
from webauthn.helpers.exceptions import InvalidAuthenticationResponse

from agentkeys.devstack.softauthn import FLAG_UP, SoftAuthenticator

RP_ID = "agentkeys.localhost"
ORIGIN = "https://agentkeys.localhost"


def _registered() -> tuple[SoftAuthenticator, bytes]:
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    challenge = b"registration-challenge-123456789"
    registration = passkey.create(challenge)
    verified = verify_registration_response(
        credential=json.dumps(registration.to_json()),
        expected_challenge=challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        require_user_verification=True,
    )
    assert verified.credential_id == passkey.credential_id
    return passkey, verified.credential_public_key


def test_registration_and_assertion_verify_with_py_webauthn() -> None:
    passkey, public_key = _registered()
    challenge = b"assertion-challenge-0123456789ab"
    assertion = passkey.get(challenge)
    verified = verify_authentication_response(
        credential=json.dumps(assertion.to_json()),
        expected_challenge=challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        credential_public_key=public_key,
        credential_current_sign_count=0,
        require_user_verification=True,
    )
    assert verified.new_sign_count == 1


@pytest.mark.parametrize(
    "options",
    [
        {"rp_id": "evil.example"},
        {"flags": FLAG_UP},
        {"kind": "webauthn.create"},
        {"origin": "https://evil.example"},
    ],
)
def test_faulty_variants_are_rejected_by_py_webauthn(options: dict[str, object]) -> None:
    passkey, public_key = _registered()
    challenge = b"assertion-challenge-0123456789ab"
    assertion = passkey.get(challenge, **options)  # type: ignore[arg-type]
    with pytest.raises(InvalidAuthenticationResponse):
        verify_authentication_response(
            credential=json.dumps(assertion.to_json()),
            expected_challenge=challenge,
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            credential_public_key=public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )


def test_counterless_passkey_reports_zero() -> None:
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN, counting=False)
    first = passkey.get(b"c" * 32)
    second = passkey.get(b"d" * 32)
    assert first.authenticator_data[33:37] == second.authenticator_data[33:37] == bytes(4)
