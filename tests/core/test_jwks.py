"""JWK and JWKS (agentkeys.jwks) against tests/vectors/jwks.json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentkeys import jwks
from agentkeys.errors import InvalidEncoding, InvalidKeyMaterial
from agentkeys.omni import p256_public_key_from_point
from tests.core._vectors import load

VECTORS = load("jwks.json")
KEY_VECTOR = VECTORS["keys"][0]
PUBLIC = p256_public_key_from_point(bytes.fromhex(KEY_VECTOR["point_hex"]))
JWK = KEY_VECTOR["jwk"]


def test_jwk_and_rfc7638_thumbprint() -> None:
    assert jwks.jwk_from_public_key(PUBLIC) == JWK
    assert jwks.jwk_thumbprint(PUBLIC) == JWK["kid"]
    assert jwks.public_key_from_jwk(JWK) == PUBLIC


def test_jwks_serialisation() -> None:
    key_set = jwks.JsonWebKeySet.from_public_keys([PUBLIC])
    assert key_set.to_json().hex() == VECTORS["jwks_json_hex"]
    parsed = jwks.JsonWebKeySet.from_json(bytes.fromhex(VECTORS["jwks_json_hex"]))
    assert dict(parsed.by_kid) == {JWK["kid"]: PUBLIC}
    with pytest.raises(TypeError):
        parsed.by_kid["x"] = PUBLIC  # type: ignore[index]


def _mutated(**changes: Any) -> dict[str, Any]:
    jwk = {**JWK, **changes}
    return {name: value for name, value in jwk.items() if value is not None}


@pytest.mark.parametrize(
    "jwk",
    [
        _mutated(d="AAAA"),
        _mutated(kty="RSA"),
        _mutated(crv="P-384"),
        _mutated(alg="RS256"),
        _mutated(use="enc"),
        _mutated(key_ops=["sign"]),
        _mutated(x=JWK["x"][:-2]),
        _mutated(x=JWK["x"] + "="),
        _mutated(y=None),
        _mutated(y=JWK["x"]),  # not on the curve
        _mutated(extra="1"),
    ],
    ids=[
        "private",
        "rsa",
        "p384",
        "rs256",
        "enc",
        "key_ops",
        "short-x",
        "padded",
        "no-y",
        "off-curve",
        "unknown-member",
    ],
)
def test_jwk_rejections(jwk: dict[str, Any]) -> None:
    with pytest.raises(InvalidKeyMaterial):
        jwks.public_key_from_jwk(jwk)


def test_jwks_rejections() -> None:
    with pytest.raises(InvalidKeyMaterial):
        jwks.JsonWebKeySet.from_dict({"keys": []})
    with pytest.raises(InvalidKeyMaterial):
        jwks.JsonWebKeySet.from_dict({"keys": [JWK, JWK]})
    with pytest.raises(InvalidKeyMaterial):
        jwks.JsonWebKeySet.from_dict({"keys": [_mutated(kid=None)]})
    with pytest.raises(InvalidKeyMaterial):
        jwks.JsonWebKeySet.from_dict({"keys": [JWK], "extra": 1})
    many = [_mutated(kid=f"k{index}") for index in range(jwks.MAX_JWKS_KEYS + 1)]
    with pytest.raises(InvalidKeyMaterial):
        jwks.JsonWebKeySet.from_dict({"keys": many})
    with pytest.raises(InvalidEncoding):
        jwks.JsonWebKeySet.from_json(b"{not json")
    with pytest.raises(InvalidEncoding):
        jwks.JsonWebKeySet.from_json(b" " * (jwks.MAX_JWKS_BYTES + 1))
    with pytest.raises(InvalidKeyMaterial):
        jwks.JsonWebKeySet.from_json(b"[]")
    with pytest.raises(InvalidKeyMaterial):
        jwks.JsonWebKeySet.from_public_keys([PUBLIC, PUBLIC])


def test_foreign_kid_is_kept() -> None:
    key_set = jwks.JsonWebKeySet.from_json(json.dumps({"keys": [_mutated(kid="k1")]}).encode())
    assert list(key_set.by_kid) == ["k1"]
    assert key_set.to_dict()["keys"][0]["kid"] == "k1"
