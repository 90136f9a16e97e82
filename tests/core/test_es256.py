"""ES256 signatures (agentkeys.es256): raw r ‖ s and DER forms against tests/vectors/jwks.json."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys import es256
from agentkeys.errors import SignatureMalformed
from agentkeys.omni import p256_public_key_from_point
from tests.core._vectors import load

VECTORS = load("jwks.json")
PUBLIC = p256_public_key_from_point(bytes.fromhex(VECTORS["keys"][0]["point_hex"]))


@pytest.mark.parametrize("vector", VECTORS["signatures"])
def test_signature_forms(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["raw_hex"])
    der = bytes.fromhex(vector["der_hex"])
    message = bytes.fromhex(vector["message_hex"])
    assert es256.der_to_raw_rs(der) == raw
    assert es256.raw_rs_to_der(raw) == der
    assert es256.es256_verify(PUBLIC, message, raw)
    assert not es256.es256_verify(PUBLIC, message + b"!", raw)


def test_es256_sign_is_deterministic_and_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first = es256.es256_sign(key, b"m")
    assert first == es256.es256_sign(key, b"m")
    assert len(first) == 64
    assert es256.es256_verify(key.public_key(), b"m", first)


def test_raw_signature_range_checks() -> None:
    with pytest.raises(SignatureMalformed):
        es256.raw_rs_to_der(bytes(64))
    with pytest.raises(SignatureMalformed):
        es256.raw_rs_to_der(b"\xff" * 64)
    with pytest.raises(SignatureMalformed):
        es256.raw_rs_to_der(bytes(63) + b"\x01")
    with pytest.raises(SignatureMalformed):
        es256.der_to_raw_rs(b"\x30\x00junk")
