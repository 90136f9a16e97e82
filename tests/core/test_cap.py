"""Capability tokens (SPEC section 5) against tests/vectors/cap.json."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeys import cap
from agentkeys.b64url import b64url_encode
from agentkeys.cap import CapOp, CapPayload
from agentkeys.errors import (
    CapError,
    CapExpired,
    CapInvalid,
    CapLifetimeTooLong,
    CapNotYetValid,
    InvalidKeyMaterial,
)
from agentkeys.jwks import JsonWebKeySet
from tests.core._vectors import error_class, ids, load

VECTORS = load("cap.json")
SIGNING = VECTORS["signing_key"]
KEY = ec.derive_private_key(int(SIGNING["private_scalar_hex"], 16), ec.SECP256R1())
KEYS = JsonWebKeySet.from_public_keys([KEY.public_key()]).by_kid
VECTOR = VECTORS["vectors"][0]
PAYLOAD = VECTOR["payload"]


def test_kid_is_the_thumbprint_of_the_signing_key() -> None:
    assert list(KEYS) == [SIGNING["kid"]]


@pytest.mark.parametrize("vector", VECTORS["vectors"])
def test_canonical_bytes_and_digest(vector: dict[str, Any]) -> None:
    payload = CapPayload.from_json_dict(vector["payload"])
    assert cap.canonical_bytes(payload).hex() == vector["canonical_hex"]
    assert cap.cap_digest(payload).hex() == vector["digest_hex"]


@pytest.mark.parametrize("vector", VECTORS["vectors"])
def test_deterministic_signature_and_token(vector: dict[str, Any]) -> None:
    payload = CapPayload.from_json_dict(vector["payload"])
    signed = cap.sign_cap(payload, KEY, SIGNING["kid"])
    assert signed.broker_sig == vector["broker_sig"]
    assert signed.to_token() == vector["token"]
    assert cap.parse_cap_token(vector["token"]) == signed


_URL_SAFE = st.from_regex(r"[A-Za-z0-9._~-]{1,128}", fullmatch=True)


@settings(max_examples=50)
@given(kid=st.one_of(_URL_SAFE, st.text(min_size=1)), sig=st.one_of(_URL_SAFE, st.text()))
def test_token_is_the_rfc8785_bytes_of_the_wire_object(kid: str, sig: str) -> None:
    signed = cap.sign_cap(CapPayload.from_json_dict(PAYLOAD), KEY, "k1")
    for candidate in (signed, dataclasses.replace(signed, kid=kid, broker_sig=sig)):
        expected = b64url_encode(rfc8785.dumps(candidate.to_wire()))
        assert candidate.to_token() == expected  # composed or not, the same bytes


@pytest.mark.parametrize("vector", VECTORS["vectors"])
def test_vector_verifies(vector: dict[str, Any]) -> None:
    verified = cap.verify_cap(vector["token"], keys=KEYS, **vector["verify"])
    assert verified.payload == CapPayload.from_json_dict(vector["payload"])
    assert verified.kid == SIGNING["kid"]
    assert verified.digest.hex() == vector["digest_hex"]
    signed = cap.parse_cap_token(vector["token"])
    assert cap.verify_cap(signed, keys=KEYS, **vector["verify"]) == verified


@pytest.mark.parametrize("vector", VECTORS["rejections"], ids=ids(VECTORS["rejections"]))
def test_rejection_vectors(vector: dict[str, Any]) -> None:
    expected = error_class(vector["error"])
    with pytest.raises(expected) as info:
        cap.verify_cap(vector["token"], keys=KEYS, **vector["verify"])
    assert type(info.value) is expected


def test_validity_boundaries() -> None:
    token = VECTOR["token"]
    aud = VECTOR["verify"]["expected_aud"]
    issued, expires = PAYLOAD["issued_at"], PAYLOAD["expires_at"]
    cap.verify_cap(token, keys=KEYS, expected_aud=aud, now=expires - 1)
    cap.verify_cap(token, keys=KEYS, expected_aud=aud, now=issued - cap.DEFAULT_MAX_SKEW)
    with pytest.raises(CapExpired):
        cap.verify_cap(token, keys=KEYS, expected_aud=aud, now=expires)
    with pytest.raises(CapNotYetValid):
        cap.verify_cap(token, keys=KEYS, expected_aud=aud, now=issued - 1, max_skew=0)


def _fields(**changes: Any) -> dict[str, Any]:
    fields = {**PAYLOAD, **changes}
    fields.pop("v")
    return fields


def test_payload_normalises_inputs() -> None:
    payload = CapPayload(
        **_fields(
            op="fetch",
            operator_omni="0x" + PAYLOAD["operator_omni"].upper(),
            service="OpenAI",
            nonce=PAYLOAD["nonce"].upper(),
        )
    )
    assert payload.op is CapOp.FETCH
    assert payload.to_json_dict() == PAYLOAD


def test_lifetime_limits() -> None:
    issued = PAYLOAD["issued_at"]
    assert CapPayload(**_fields(expires_at=issued + 1800)).lifetime == 1800
    with pytest.raises(CapLifetimeTooLong):
        CapPayload(**_fields(expires_at=issued + 1801))
    with pytest.raises(CapInvalid):
        CapPayload(**_fields(expires_at=issued))
    with pytest.raises(CapInvalid):
        CapPayload(**_fields(issued_at=True, expires_at=2))


def test_new_cap_payload_defaults() -> None:
    arguments = {
        name: PAYLOAD[name]
        for name in ("operator_omni", "actor_omni", "service", "device_key_hash", "aud")
    }
    first = cap.new_cap_payload(op="store", k3_epoch=1, now=1000, **arguments)
    second = cap.new_cap_payload(op=CapOp.STORE, k3_epoch=1, now=1000, **arguments)
    assert first.lifetime == cap.DEFAULT_CAP_LIFETIME == 300
    assert first.op is CapOp.STORE
    assert len(first.nonce) == 32
    assert first.nonce != second.nonce
    with pytest.raises(CapInvalid):
        cap.new_cap_payload(op="delete", k3_epoch=1, now=1000, **arguments)
    with pytest.raises(CapLifetimeTooLong):
        cap.new_cap_payload(op="list", k3_epoch=1, now=1000, lifetime=3600, **arguments)


def test_sign_cap_refuses_bad_kid_and_wrong_curve() -> None:
    payload = CapPayload.from_json_dict(PAYLOAD)
    with pytest.raises(CapInvalid):
        cap.sign_cap(payload, KEY, "kid with spaces")
    with pytest.raises(InvalidKeyMaterial):
        cap.sign_cap(payload, ec.generate_private_key(ec.SECP384R1()), "k")


def test_duplicate_json_members_are_refused() -> None:
    text = json.dumps(
        {"payload": PAYLOAD, "kid": SIGNING["kid"], "broker_sig": VECTOR["broker_sig"]}
    )
    duplicated = text[:-1] + ', "kid": "other"}'
    with pytest.raises(CapInvalid):
        cap.parse_cap_token(b64url_encode(duplicated.encode()))


def test_oversized_token_is_refused_before_decoding() -> None:
    with pytest.raises(CapInvalid):
        cap.parse_cap_token("A" * (cap.MAX_TOKEN_CHARS + 1))


def test_payload_is_frozen() -> None:
    payload = CapPayload.from_json_dict(PAYLOAD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        payload.service = "other"  # type: ignore[misc]


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_tokens_only_raise_cap_errors(token: str) -> None:
    with pytest.raises(CapError):
        cap.verify_cap(token, keys=KEYS, expected_aud="a", now=0)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_only_raises_cap_errors(document: object) -> None:
    token = b64url_encode(json.dumps(document).encode())
    with pytest.raises(CapError):
        cap.verify_cap(token, keys=KEYS, expected_aud="a", now=0)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(list(CapOp)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**40),
    st.integers(1, cap.MAX_CAP_LIFETIME),
)
def test_sign_verify_round_trip(op: CapOp, epoch: int, now: int, lifetime: int) -> None:
    payload = cap.new_cap_payload(
        op=op,
        operator_omni="11" * 32,
        actor_omni="22" * 32,
        service="svc",
        device_key_hash="33" * 32,
        k3_epoch=epoch,
        aud="w",
        now=now,
        lifetime=lifetime,
    )
    token = cap.sign_cap(payload, KEY, "k1").to_token()
    keys = {"k1": KEY.public_key()}
    verified = cap.verify_cap(token, keys=keys, expected_aud="w", now=now, expected_op=op)
    assert verified.payload == payload
