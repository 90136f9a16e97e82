"""Identifiers (SPEC sections 2 and 3) against tests/vectors/omni.json, plus properties."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeys import omni
from agentkeys.errors import (
    InvalidAgentLabel,
    InvalidIdentifier,
    InvalidKeyMaterial,
    InvalidServiceName,
)
from tests.core._vectors import error_class, ids, load

VECTORS = load("omni.json")


def test_zero_wallet_vector_is_the_spec_preimage() -> None:
    """SPEC section 3: for the zero wallet the preimage is "agentkeysevm0x" + 40 '0'."""
    expected = hashlib.sha256(b"agentkeysevm0x" + b"0" * 40).hexdigest()
    assert omni.actor_omni_for_wallet("0x" + "0" * 40) == expected
    assert VECTORS["identity_omni"][0]["omni"] == expected
    assert VECTORS["identity_omni"][0]["preimage_hex"] == (b"agentkeysevm0x" + b"0" * 40).hex()


@pytest.mark.parametrize(
    "vector", VECTORS["identity_omni"], ids=ids(VECTORS["identity_omni"], "value")
)
def test_identity_omni_vectors(vector: dict[str, Any]) -> None:
    assert omni.identity_omni(vector["identity_type"], vector["value"]) == vector["omni"]
    preimage = bytes.fromhex(vector["preimage_hex"])
    assert hashlib.sha256(preimage).hexdigest() == vector["omni"]
    if vector["identity_type"] == "evm":
        assert omni.normalize_wallet(vector["value"]) == vector["normalized_value"]
        assert omni.actor_omni_for_wallet(vector["value"]) == vector["omni"]


@pytest.mark.parametrize("vector", VECTORS["agent_omni"], ids=ids(VECTORS["agent_omni"], "label"))
def test_agent_omni_vectors(vector: dict[str, Any]) -> None:
    assert omni.agent_omni(vector["operator_omni"], vector["label"]) == vector["omni"]
    assert (
        omni.agent_omni("0x" + vector["operator_omni"].upper(), vector["label"]) == vector["omni"]
    )
    assert hashlib.sha256(bytes.fromhex(vector["preimage_hex"])).hexdigest() == vector["omni"]


@pytest.mark.parametrize(
    "vector", VECTORS["service_hash"], ids=ids(VECTORS["service_hash"], "name")
)
def test_service_hash_vectors(vector: dict[str, Any]) -> None:
    assert omni.normalize_service(vector["name"]) == vector["normalized"]
    assert omni.service_hash(vector["name"]).hex() == vector["keccak256"]


@pytest.mark.parametrize("vector", VECTORS["device_key_hash"])
def test_device_key_hash_vectors(vector: dict[str, Any]) -> None:
    key = ec.derive_private_key(int(vector["private_scalar_hex"], 16), ec.SECP256R1())
    point = bytes.fromhex(vector["point_hex"])
    assert omni.p256_point_bytes(key.public_key()) == point
    assert omni.device_key_hash(key.public_key()) == vector["device_key_hash"]
    assert omni.device_key_hash_from_point(point) == vector["device_key_hash"]
    assert omni.p256_public_key_from_point(point) == key.public_key()


@pytest.mark.parametrize(
    "vector", VECTORS["normalize_hex32"], ids=ids(VECTORS["normalize_hex32"], "input")
)
def test_normalize_hex32_vectors(vector: dict[str, Any]) -> None:
    assert omni.normalize_hex32(vector["input"]) == vector["output"]
    assert omni.hex32_to_bytes(vector["input"]) == bytes.fromhex(vector["output"])
    assert omni.normalize_hex32(bytes.fromhex(vector["output"])) == vector["output"]


_REJECT: dict[str, Callable[[str], object]] = {
    "normalize_hex32": omni.normalize_hex32,
    "normalize_wallet": omni.normalize_wallet,
    "identity_omni_email": lambda value: omni.identity_omni("email", value),
    "identity_omni_type": lambda value: omni.identity_omni(value, "alice@example.com"),
    "agent_label": lambda value: omni.agent_omni("00" * 32, value),
    "normalize_service": omni.normalize_service,
    "device_key_hash_from_point": lambda value: omni.device_key_hash_from_point(
        bytes.fromhex(value)
    ),
}


@pytest.mark.parametrize(
    "vector", VECTORS["rejections"], ids=[repr(v["input"])[:40] for v in VECTORS["rejections"]]
)
def test_rejection_vectors(vector: dict[str, Any]) -> None:
    expected = error_class(vector["error"])
    with pytest.raises(expected) as info:
        _REJECT[vector["function"]](vector["input"])
    assert type(info.value) is expected


def test_normalize_hex32_refuses_wrong_length_bytes_and_other_types() -> None:
    with pytest.raises(InvalidIdentifier):
        omni.normalize_hex32(b"\x00" * 31)
    with pytest.raises(InvalidIdentifier):
        omni.normalize_hex32(("ab" * 32).encode())  # ASCII hex bytes are not raw bytes
    with pytest.raises(InvalidIdentifier):
        omni.normalize_hex32(12)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifier):
        omni.hex32_to_bytes(b"\x00" * 32)  # type: ignore[arg-type]


def test_wallet_forms() -> None:
    lower = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    assert omni.normalize_wallet(lower[2:]) == lower
    assert omni.normalize_wallet("0X" + lower[2:].upper()) == lower
    assert omni.normalize_wallet("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed") == lower


def test_email_is_lowercased_and_passkey_is_not() -> None:
    assert omni.identity_omni("email", "A@B.C") == omni.identity_omni("email", "a@b.c")
    assert omni.identity_omni("passkey", "AbC") != omni.identity_omni("passkey", "abc")
    with pytest.raises(InvalidIdentifier):
        omni.identity_omni("passkey", "")
    with pytest.raises(InvalidIdentifier):
        omni.identity_omni("passkey", "a\nb")


def test_identity_types_are_domain_separated() -> None:
    assert omni.identity_omni("email", "x@y") != omni.identity_omni("passkey", "x@y")


def test_device_key_hash_refuses_other_curves() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(InvalidKeyMaterial):
        omni.device_key_hash(other)


# --- properties ---------------------------------------------------------------------------


@settings(deadline=None)
@given(st.binary(min_size=32, max_size=32), st.booleans(), st.booleans())
def test_hex32_normalises_every_accepted_form(raw: bytes, prefix: bool, upper: bool) -> None:
    text = raw.hex().upper() if upper else raw.hex()
    text = ("0x" + text) if prefix else text
    assert omni.normalize_hex32(text) == raw.hex()
    assert omni.hex32_to_bytes(text) == raw


@settings(deadline=None)
@given(st.text(max_size=80))
def test_hex32_only_raises_invalid_identifier(text: str) -> None:
    try:
        result = omni.normalize_hex32(text)
    except InvalidIdentifier:
        return
    assert len(result) == 64
    assert set(result) <= set("0123456789abcdef")


@settings(deadline=None)
@given(st.text(max_size=80))
def test_service_names_never_let_dangerous_characters_through(text: str) -> None:
    try:
        result = omni.normalize_service(text)
    except InvalidServiceName:
        return
    assert set(result) <= set(string.ascii_lowercase + string.digits + "._-")
    assert not set(result) & set("*?$/{")
    assert 1 <= len(result) <= 64


@settings(deadline=None)
@given(st.text(max_size=40))
def test_agent_labels_only_raise_invalid_agent_label(label: str) -> None:
    try:
        result = omni.agent_omni("11" * 32, label)
    except InvalidAgentLabel:
        return
    assert len(result) == 64


@settings(deadline=None)
@given(st.text(max_size=60))
def test_wallets_only_raise_invalid_identifier(text: str) -> None:
    try:
        result = omni.normalize_wallet(text)
    except InvalidIdentifier:
        return
    assert len(result) == 42
    assert result == result.lower()
