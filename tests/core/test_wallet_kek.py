"""K4 wallets, EIP-191 signing and KEKs against tests/vectors/{wallet,kek}.json."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeys import kek, wallet
from agentkeys.errors import (
    InvalidIdentifier,
    InvalidKeyMaterial,
    InvalidServiceName,
    KeyDerivationExhausted,
    SignatureInvalid,
    SignatureMalformed,
)
from tests.core._vectors import error_class, load

WALLET = load("wallet.json")
KEK = load("kek.json")


@pytest.mark.parametrize(
    "vector", WALLET["k4"], ids=[v["identity_omni"][:12] for v in WALLET["k4"]]
)
def test_k4_vectors(vector: dict[str, Any]) -> None:
    secret = bytes.fromhex(vector["master_secret_hex"])
    key, retry = wallet.derive_k4(secret, vector["identity_omni"])
    assert key.hex() == vector["private_key_hex"]
    assert retry == vector["retry"]
    assert wallet.derive_k4_private_key(secret, "0x" + vector["identity_omni"].upper()) == key
    assert wallet.address_for_private_key(key) == vector["address"]


@pytest.mark.parametrize("vector", WALLET["eip191"])
def test_eip191_vectors(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(vector["private_key_hex"])
    message = bytes.fromhex(vector["message_hex"])
    sig65 = wallet.sign_eip191(key, message)
    assert sig65.hex() == vector["sig65_hex"]
    assert sig65[64] in (0, 1)
    assert wallet.recover_eip191(message, sig65) == vector["address"]
    legacy_v = sig65[:64] + bytes([sig65[64] + 27])
    assert wallet.recover_eip191(message, legacy_v) == vector["address"]
    assert wallet.recover_eip191(message + b"!", sig65) != vector["address"]


@pytest.mark.parametrize("vector", KEK["v1_from_signature"])
def test_v1_kek_from_signature_vectors(vector: dict[str, Any]) -> None:
    sig65 = bytes.fromhex(vector["sig65_hex"])
    assert kek.v1_kek_from_signature(sig65).hex() == vector["kek_hex"]


@pytest.mark.parametrize("vector", KEK["v1_chain"])
def test_v1_kek_chain_vectors(vector: dict[str, Any]) -> None:
    secret = bytes.fromhex(vector["master_secret_hex"])
    message = kek.v1_kek_message(vector["wallet"], vector["service"])
    assert message.hex() == vector["message_hex"]
    private_key = wallet.derive_k4_private_key(secret, vector["identity_omni"])
    assert wallet.address_for_private_key(private_key) == vector["wallet"]
    assert wallet.sign_eip191(private_key, message).hex() == vector["sig65_hex"]
    result = wallet.v1_kek_for_identity(secret, vector["identity_omni"], vector["service"])
    assert result.hex() == vector["kek_hex"]
    assert kek.v1_kek_message(vector["wallet"].upper().replace("0X", "0x"), "OpenAI") == message


@pytest.mark.parametrize("vector", KEK["v2"], ids=[v["actor_omni"][:12] for v in KEK["v2"]])
def test_v2_kek_vectors(vector: dict[str, Any]) -> None:
    k3 = bytes.fromhex(vector["k3_hex"])
    assert kek.v2_kek(k3, vector["actor_omni"]).hex() == vector["kek_hex"]
    assert kek.v2_kek(k3, "0x" + vector["actor_omni"].upper()).hex() == vector["kek_hex"]
    info = kek.V2_KEK_INFO_PREFIX + bytes.fromhex(vector["actor_omni"])
    assert info.hex() == vector["info_hex"]


_REJECT: dict[str, Callable[[bytes], bytes]] = {
    "v1_kek_from_signature": kek.v1_kek_from_signature,
    "v2_kek": lambda k3: kek.v2_kek(k3, "00" * 32),
}


@pytest.mark.parametrize("vector", KEK["rejections"], ids=[v["error"] for v in KEK["rejections"]])
def test_kek_rejection_vectors(vector: dict[str, Any]) -> None:
    expected = error_class(vector["error"])
    with pytest.raises(expected) as info:
        _REJECT[vector["function"]](bytes.fromhex(vector["input_hex"]))
    assert type(info.value) is expected


def test_v1_kek_message_validates_its_parts() -> None:
    with pytest.raises(InvalidIdentifier):
        kek.v1_kek_message("0x1234", "openai")
    with pytest.raises(InvalidServiceName):
        kek.v1_kek_message("0x" + "0" * 40, "open/ai")


def test_k4_refuses_short_master_secret_and_bad_omni() -> None:
    with pytest.raises(InvalidKeyMaterial):
        wallet.derive_k4(b"\x00" * 31, "00" * 32)
    with pytest.raises(InvalidIdentifier):
        wallet.derive_k4(b"\x00" * 32, "00" * 31)


def _candidate(secret: bytes, omni: str, retry: int) -> int:
    info = wallet.K4_INFO_PREFIX + bytes.fromhex(omni) + (bytes([retry]) if retry else b"")
    out = HKDF(hashes.SHA256(), 32, wallet.K4_SALT, info).derive(secret)
    return int.from_bytes(out, "big")


def test_k4_retries_with_an_extra_info_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real HKDF outputs; only the curve order is lowered so that a retry must happen."""
    secret = bytes(range(32))
    for index in range(64):
        omni = f"{index:064x}"
        first, second = _candidate(secret, omni, 0), _candidate(secret, omni, 1)
        if second < first:
            break
    else:  # pragma: no cover - probability 2^-64
        pytest.fail("no omni with a smaller second candidate")
    monkeypatch.setattr(wallet, "SECP256K1_N", first)
    key, retry = wallet.derive_k4(secret, omni)
    assert retry == 1
    assert int.from_bytes(key, "big") == second


def test_k4_gives_up_after_fifteen_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wallet, "SECP256K1_N", 1)
    with pytest.raises(KeyDerivationExhausted):
        wallet.derive_k4(bytes(32), "00" * 32)


def test_private_key_validation() -> None:
    with pytest.raises(InvalidKeyMaterial):
        wallet.address_for_private_key(b"\x00" * 32)
    with pytest.raises(InvalidKeyMaterial):
        wallet.address_for_private_key(wallet.SECP256K1_N.to_bytes(32, "big"))
    with pytest.raises(InvalidKeyMaterial):
        wallet.sign_eip191(b"\x01" * 31, b"m")


def test_recover_rejections() -> None:
    message = b"m"
    good = wallet.sign_eip191(b"\x01" * 32, message)
    with pytest.raises(SignatureMalformed):
        wallet.recover_eip191(message, good[:64])
    with pytest.raises(SignatureMalformed):
        wallet.recover_eip191(message, good[:64] + b"\x02")
    with pytest.raises(SignatureMalformed):
        wallet.recover_eip191(message, b"\x00" * 64 + b"\x00")  # r = s = 0
    with pytest.raises(SignatureMalformed):
        wallet.recover_eip191(message, b"\xff" * 32 + good[32:])  # r >= n
    # an r in range that is no x-coordinate on secp256k1 (r^3 + 7 not a square mod p)
    p = 2**256 - 2**32 - 977
    r = next(x for x in range(1, 100) if pow(x**3 + 7, (p - 1) // 2, p) == p - 1)
    with pytest.raises(SignatureInvalid):
        wallet.recover_eip191(message, r.to_bytes(32, "big") + good[32:])


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=32, max_size=64), st.binary(min_size=32, max_size=32), st.binary())
def test_sign_then_recover_round_trips(secret: bytes, omni_raw: bytes, message: bytes) -> None:
    key = wallet.derive_k4_private_key(secret, omni_raw.hex())
    sig65 = wallet.sign_eip191(key, message)
    assert wallet.sign_eip191(key, message) == sig65  # RFC 6979: deterministic
    assert sig65[64] in (0, 1)
    assert wallet.recover_eip191(message, sig65) == wallet.address_for_private_key(key)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=70), st.binary(max_size=8))
def test_recover_only_raises_signature_leaves(sig: bytes, message: bytes) -> None:
    try:
        address = wallet.recover_eip191(message, sig)
    except (SignatureMalformed, SignatureInvalid):
        return
    assert address.startswith("0x")
    assert len(address) == 42
