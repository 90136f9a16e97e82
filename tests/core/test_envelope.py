"""Envelopes 0x01 / 0x02 / 0x04 (SPEC section 4) against tests/vectors/envelope.json."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeys import envelope
from agentkeys.envelope import EnvelopeVersion
from agentkeys.errors import (
    EnvelopeContextMissing,
    EnvelopeTampered,
    EnvelopeTruncated,
    EnvelopeVersionUnknown,
    FormatError,
    InvalidEpoch,
    InvalidKeyMaterial,
)
from tests.core._vectors import error_class, ids, load

VECTORS = load("envelope.json")


def _seal(vector: dict[str, Any]) -> bytes:
    kek = bytes.fromhex(vector["kek_hex"])
    nonce = bytes.fromhex(vector["nonce_hex"])
    plaintext = bytes.fromhex(vector["plaintext_hex"])
    service = vector["service"]
    if vector["version"] == 1:
        return envelope.seal_v1(
            plaintext, kek=kek, wallet=vector["wallet"], service=service, nonce=nonce
        )
    if vector["version"] == 2:
        return envelope.seal_v2_legacy(
            plaintext, kek=kek, actor_omni=vector["actor_omni"], service=service, nonce=nonce
        )
    return envelope.seal_v4(
        plaintext,
        kek=kek,
        actor_omni=vector["actor_omni"],
        service=service,
        epoch=vector["epoch"],
        nonce=nonce,
    )


def _open(vector: dict[str, Any]) -> bytes:
    return envelope.open_envelope(
        bytes.fromhex(vector["envelope_hex"]),
        kek=bytes.fromhex(vector["kek_hex"]),
        service=vector["service"],
        wallet=vector["wallet"],
        actor_omni=vector["actor_omni"],
    )


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=ids(VECTORS["vectors"], "version"))
def test_seal_reproduces_the_vector(vector: dict[str, Any]) -> None:
    assert _seal(vector).hex() == vector["envelope_hex"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=ids(VECTORS["vectors"], "version"))
def test_open_returns_the_plaintext(vector: dict[str, Any]) -> None:
    assert _open(vector).hex() == vector["plaintext_hex"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=ids(VECTORS["vectors"], "version"))
def test_aad_and_header(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["envelope_hex"])
    header = envelope.parse_header(data)
    assert header.version == vector["version"]
    assert header.epoch == vector["epoch"]
    if vector["version"] == 1:
        aad = envelope.aad_v1(vector["wallet"], vector["service"])
    elif vector["version"] == 2:
        aad = envelope.aad_v2(vector["actor_omni"], vector["service"])
    else:
        aad = envelope.aad_v4(vector["actor_omni"], vector["service"], vector["epoch"])
    assert aad.hex() == vector["aad_hex"]


def test_spec_minimum_lengths() -> None:
    for version, minimum in ((1, 29), (2, 29), (4, 33)):
        header = envelope.parse_header(bytes([version]) + bytes(minimum - 1))
        assert header.min_length == minimum
        with pytest.raises(EnvelopeTruncated):
            envelope.parse_header(bytes([version]) + bytes(minimum - 2))


@pytest.mark.parametrize("vector", VECTORS["rejections"], ids=ids(VECTORS["rejections"]))
def test_rejection_vectors(vector: dict[str, Any]) -> None:
    expected = error_class(vector["error"])
    with pytest.raises(expected) as info:
        _open(vector)
    assert type(info.value) is expected


def test_required_rejection_paths_are_recorded() -> None:
    """Issue 2 acceptance: these paths each have at least one recorded vector."""
    descriptions = " | ".join(v["description"] for v in VECTORS["rejections"])
    for needle in (
        "0x01: wrong wallet",
        "0x02: wrong actor",
        "0x04: wrong actor",
        "wrong service",
        "wrong KEK",
        "flipped ciphertext bit",
        "truncated",
        "unknown version byte",
        "0x04: tampered epoch byte",
    ):
        assert needle in descriptions


def test_tampered_reason_names_every_cause() -> None:
    vector = next(v for v in VECTORS["rejections"] if v["error"] == "EnvelopeTampered")
    with pytest.raises(EnvelopeTampered) as info:
        _open(vector)
    assert info.value.reason == "authentication failed: wrong key, AAD or tampered data"
    assert info.value.to_json()["error"] == "envelope_tampered"


def test_default_nonce_is_random() -> None:
    kek = bytes(32)
    first = envelope.seal_v4(b"x", kek=kek, actor_omni="11" * 32, service="s", epoch=0)
    second = envelope.seal_v4(b"x", kek=kek, actor_omni="11" * 32, service="s", epoch=0)
    assert first[5:17] != second[5:17]


def test_seal_argument_validation() -> None:
    kek = bytes(32)
    with pytest.raises(InvalidEpoch):
        envelope.seal_v4(b"x", kek=kek, actor_omni="11" * 32, service="s", epoch=2**32)
    with pytest.raises(InvalidEpoch):
        envelope.seal_v4(b"x", kek=kek, actor_omni="11" * 32, service="s", epoch=-1)
    with pytest.raises(InvalidKeyMaterial):
        envelope.seal_v4(b"x", kek=bytes(16), actor_omni="11" * 32, service="s", epoch=0)
    with pytest.raises(InvalidKeyMaterial):
        envelope.seal_v1(b"x", kek=kek, wallet="0x" + "0" * 40, service="s", nonce=bytes(11))


def test_context_for_the_other_version_does_not_help() -> None:
    data = envelope.seal_v1(b"x", kek=bytes(32), wallet="0x" + "0" * 40, service="s")
    with pytest.raises(EnvelopeContextMissing):
        envelope.open_envelope(data, kek=bytes(32), service="s", actor_omni="11" * 32)


# --- properties ---------------------------------------------------------------------------

_keks = st.binary(min_size=32, max_size=32)
_omnis = st.binary(min_size=32, max_size=32).map(bytes.hex)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=512), _keks, _omnis, st.integers(0, 2**32 - 1))
def test_v4_round_trip(plaintext: bytes, kek: bytes, actor: str, epoch: int) -> None:
    data = envelope.seal_v4(plaintext, kek=kek, actor_omni=actor, service="svc", epoch=epoch)
    assert len(data) == 33 + len(plaintext)
    assert envelope.parse_header(data).epoch == epoch
    opened = envelope.open_envelope(data, kek=kek, actor_omni=actor, service="svc")
    assert opened == plaintext


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=256), _keks, _omnis, st.binary(min_size=20, max_size=20))
def test_legacy_round_trips(plaintext: bytes, kek: bytes, actor: str, wallet_raw: bytes) -> None:
    wallet = "0x" + wallet_raw.hex()
    v1 = envelope.seal_v1(plaintext, kek=kek, wallet=wallet, service="svc")
    v2 = envelope.seal_v2_legacy(plaintext, kek=kek, actor_omni=actor, service="svc")
    assert envelope.open_envelope(v1, kek=kek, wallet=wallet, service="svc") == plaintext
    assert envelope.open_envelope(v2, kek=kek, actor_omni=actor, service="svc") == plaintext


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_only_raise_envelope_errors(data: bytes) -> None:
    if not data or data[0] not in set(EnvelopeVersion):
        with pytest.raises((EnvelopeTruncated, EnvelopeVersionUnknown)):
            envelope.parse_header(data)
        return
    minimum = 33 if data[0] == EnvelopeVersion.V2 else 29
    if len(data) < minimum:
        with pytest.raises(EnvelopeTruncated):
            envelope.parse_header(data)
        return
    assert envelope.parse_header(data).version == data[0]
    with pytest.raises(FormatError) as info:
        envelope.open_envelope(
            data, kek=bytes(32), wallet="0x" + "0" * 40, actor_omni="00" * 32, service="s"
        )
    assert type(info.value) is EnvelopeTampered
