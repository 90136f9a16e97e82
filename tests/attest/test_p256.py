"""attest.p256: the one definition of the 64-byte point and device_key_hash (SPEC section 2).

agentkeys.omni exposes the same functions with agentkeys' error; both sides must agree on
every vector and refuse the same inputs, each with its own package's exception.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys import omni
from agentkeys.errors import InvalidKeyMaterial
from attest import p256
from attest.errors import AttestationMalformed
from tests.core._vectors import load

VECTORS = load("omni.json")


@pytest.mark.parametrize("vector", VECTORS["device_key_hash"])
def test_the_vectors(vector: dict[str, Any]) -> None:
    key = ec.derive_private_key(int(vector["private_scalar_hex"], 16), ec.SECP256R1())
    point = bytes.fromhex(vector["point_hex"])
    assert p256.point_bytes(key.public_key()) == point
    assert p256.device_key_hash(key.public_key()) == vector["device_key_hash"]
    assert p256.device_key_hash_from_point(point) == vector["device_key_hash"]
    assert p256.public_key_from_point(point) == key.public_key()


OFF_CURVE = b"\x01" * 64


@pytest.mark.parametrize(
    ("attest_side", "agentkeys_side", "value", "reason"),
    [
        (p256.public_key_from_point, omni.p256_public_key_from_point, b"\x01" * 63, "64-byte"),
        (p256.public_key_from_point, omni.p256_public_key_from_point, OFF_CURVE, "not a point"),
        (p256.device_key_hash_from_point, omni.device_key_hash_from_point, OFF_CURVE, "not a"),
        (
            p256.device_key_hash,
            omni.device_key_hash,
            ec.generate_private_key(ec.SECP384R1()).public_key(),
            "expected a P-256 public key",
        ),
        (
            p256.point_bytes,
            omni.p256_point_bytes,
            ec.generate_private_key(ec.SECP384R1()).public_key(),
            "expected a P-256 public key",
        ),
    ],
)
def test_both_sides_refuse_alike_with_their_own_error(
    attest_side: Any, agentkeys_side: Any, value: object, reason: str
) -> None:
    with pytest.raises(AttestationMalformed, match=reason):
        attest_side(value)
    with pytest.raises(InvalidKeyMaterial, match=reason):
        agentkeys_side(value)
