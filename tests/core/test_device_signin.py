"""The device sign-in message (agentkeys.device_signin): its bytes, and what verifies."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_encode
from agentkeys.device_signin import (
    DEVICE_SIGNIN_PREFIX,
    device_signin_digest,
    device_signin_message,
    verify_device_signin,
)
from agentkeys.errors import FormatError
from attest.k10_signature import P256_N, k10_sign

DKH = "0d" * 32
CHALLENGE = bytes(range(32))


def test_the_message_is_tag_audience_challenge_device() -> None:
    message = device_signin_message(
        audience="agentkeys-broker", challenge=CHALLENGE, device_key_hash="0x" + DKH.upper()
    )
    assert message == (
        b"agentkeys.device-signin.v1\x00" + bytes([16]) + b"agentkeys-broker" + CHALLENGE
        + bytes.fromhex(DKH)
    )  # fmt: skip
    assert message.startswith(DEVICE_SIGNIN_PREFIX + b"\x00")
    digest = device_signin_digest(audience="agentkeys-broker", challenge=CHALLENGE,
                                  device_key_hash=DKH)  # fmt: skip
    assert digest == hashlib.sha256(message).digest()


@pytest.mark.parametrize(
    ("audience", "challenge", "dkh"),
    [
        ("", CHALLENGE, DKH),
        ("a" * 256, CHALLENGE, DKH),
        ("with space", CHALLENGE, DKH),
        ("agentkeys-broker", CHALLENGE[:31], DKH),
        ("agentkeys-broker", CHALLENGE + b"\x00", DKH),
        ("agentkeys-broker", CHALLENGE, "zz" * 32),
    ],
)
def test_malformed_inputs_are_refused(audience: str, challenge: bytes, dkh: str) -> None:
    with pytest.raises(FormatError):
        device_signin_message(audience=audience, challenge=challenge, device_key_hash=dkh)


def verifies(
    signature: str,
    public: ec.EllipticCurvePublicKey,
    *,
    audience: str = "agentkeys-broker",
    challenge: bytes = CHALLENGE,
    dkh: str = DKH,
) -> bool:
    return verify_device_signin(
        signature, public_key=public, audience=audience, challenge=challenge,
        device_key_hash=dkh,
    )  # fmt: skip


def test_only_the_devices_low_s_signature_over_these_values_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    message = device_signin_message(
        audience="agentkeys-broker", challenge=CHALLENGE, device_key_hash=DKH
    )
    raw = k10_sign(key, message)
    good = b64url_encode(raw)
    assert verifies(good, public)
    assert not verifies(good, public, audience="another-broker")
    assert not verifies(good, public, challenge=bytes(32))
    assert not verifies(good, public, dkh="0e" * 32)
    assert not verifies(good, ec.generate_private_key(ec.SECP256R1()).public_key())
    # the malleable high-S twin, which the chain refuses, is refused here too
    s = int.from_bytes(raw[32:], "big")
    assert not verifies(b64url_encode(raw[:32] + (P256_N - s).to_bytes(32, "big")), public)
    for malformed in ("", good + "A", good[:-1] + "=", "!" * 86):
        assert not verifies(malformed, public)
