"""K10 proof of possession (SPEC section 5) against tests/vectors/pop.json."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeys import pop
from agentkeys.cap import CapOp
from agentkeys.errors import (
    PopInvalid,
    PopKeyMismatch,
    PopNonceRegistryFull,
    PopNonceReused,
    PopSignatureInvalid,
    PopStale,
    PopTimestampInFuture,
)
from agentkeys.omni import device_key_hash
from tests.core._vectors import load

VECTORS = load("pop.json")
K10 = ec.derive_private_key(int(VECTORS["k10"]["private_scalar_hex"], 16), ec.SECP256R1())
OTHER = ec.derive_private_key(int(VECTORS["other_key"]["private_scalar_hex"], 16), ec.SECP256R1())
DKH = VECTORS["k10"]["device_key_hash"]
MINT = VECTORS["mint"][0]
WORKER = VECTORS["worker"][0]
TIMESTAMP = MINT["claims"]["timestamp"]


def _mint_claims(**changes: Any) -> pop.MintPopClaims:
    fields = {**MINT["claims"], **changes}
    fields["nonce"] = bytes.fromhex(fields["nonce"])
    return pop.MintPopClaims(**fields)


def _worker_claims(**changes: Any) -> pop.WorkerPopClaims:
    fields: dict[str, Any] = {
        "cap_digest": bytes.fromhex(WORKER["cap_digest_hex"]),
        "op": WORKER["op"],
        "body_sha256": bytes.fromhex(WORKER["body_sha256_hex"]),
        "timestamp": WORKER["timestamp"],
        "nonce": bytes.fromhex(WORKER["nonce_hex"]),
    }
    fields.update(changes)
    return pop.WorkerPopClaims(**fields)


def _verify_mint(claims: pop.MintPopClaims, signature: str, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "public_key": K10.public_key(),
        "now": TIMESTAMP,
        "nonces": pop.NonceRegistry(),
    }
    kwargs.update(overrides)
    return pop.verify_mint_pop(claims, signature, **kwargs)


def _verify_worker(claims: pop.WorkerPopClaims, signature: str, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "public_key": K10.public_key(),
        "expected_device_key_hash": DKH,
        "now": TIMESTAMP,
        "nonces": pop.NonceRegistry(),
    }
    kwargs.update(overrides)
    return pop.verify_worker_pop(claims, signature, **kwargs)


def test_vector_keys() -> None:
    assert device_key_hash(K10.public_key()) == DKH


def test_mint_vector() -> None:
    claims = _mint_claims()
    assert claims.message().hex() == MINT["message_hex"]
    assert pop.sign_pop(claims, K10) == MINT["signature"]
    verified = _verify_mint(claims, MINT["signature"])
    assert verified == pop.VerifiedMintPop(claims=claims, device_key_hash=DKH)
    proof = pop.PopProof(timestamp=TIMESTAMP, nonce=claims.nonce, signature=MINT["signature"])
    assert proof.to_header_value() == MINT["header_value"]
    assert pop.PopProof.from_header_value(MINT["header_value"]) == proof


def test_worker_vector() -> None:
    claims = _worker_claims()
    assert (
        hashlib.sha256(bytes.fromhex(WORKER["body_hex"])).hexdigest() == (WORKER["body_sha256_hex"])
    )
    assert claims.message().hex() == WORKER["message_hex"]
    assert pop.sign_pop(claims, K10) == WORKER["signature"]
    verified = _verify_worker(claims, WORKER["signature"])
    assert verified.device_key_hash == DKH


def test_messages_are_domain_separated() -> None:
    assert _mint_claims().message().startswith(b"agentkeys.pop.mint.v1\x00")
    assert _worker_claims().message().startswith(b"agentkeys.pop.worker.v1\x00")
    with pytest.raises(PopSignatureInvalid):
        _verify_worker(_worker_claims(), MINT["signature"])


def test_claims_normalise_inputs() -> None:
    claims = _mint_claims(service="OpenAI", actor_omni="0x" + MINT["claims"]["actor_omni"].upper())
    assert claims.message().hex() == MINT["message_hex"]
    assert claims.op is CapOp.FETCH


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"op": "delete"}, PopInvalid),
        ({"service": "a/b"}, PopInvalid),
        ({"nonce": "00" * 15}, PopInvalid),
        ({"timestamp": -1}, PopInvalid),
        ({"timestamp": True}, PopInvalid),
        ({"device_key_hash": "zz"}, PopInvalid),
    ],
)
def test_malformed_mint_claims(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        _mint_claims(**changes)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"cap_digest": bytes(31)}, PopInvalid),
        ({"body_sha256": "00" * 32}, PopInvalid),
        ({"nonce": bytes(17)}, PopInvalid),
        ({"op": 1}, PopInvalid),
    ],
)
def test_malformed_worker_claims(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        _worker_claims(**changes)


# Mutated copies of the vectors: each must raise exactly this leaf.
MINT_REJECTIONS = [
    ("service changed", {"claims": {"service": "github"}}, PopSignatureInvalid),
    ("actor changed", {"claims": {"actor_omni": "00" * 32}}, PopSignatureInvalid),
    ("op changed", {"claims": {"op": "store"}}, PopSignatureInvalid),
    ("nonce changed", {"claims": {"nonce": "00" * 16}}, PopSignatureInvalid),
    ("timestamp changed", {"claims": {"timestamp": TIMESTAMP - 1}}, PopSignatureInvalid),
    ("stale by one second", {"now": TIMESTAMP + 61}, PopStale),
    ("in the future", {"now": TIMESTAMP - 6}, PopTimestampInFuture),
    ("verified with another key", {"public_key": OTHER.public_key()}, PopKeyMismatch),
    ("signature padded", {"signature": MINT["signature"] + "="}, PopInvalid),
    ("signature truncated", {"signature": MINT["signature"][:-3]}, PopInvalid),
    ("signature by another key", {"signature": "other"}, PopSignatureInvalid),
]


@pytest.mark.parametrize(
    ("mutation", "error"),
    [(m, e) for _, m, e in MINT_REJECTIONS],
    ids=[d for d, _, _ in MINT_REJECTIONS],
)
def test_mint_rejections(mutation: dict[str, Any], error: type[Exception]) -> None:
    claims = _mint_claims(**mutation.get("claims", {}))
    signature = mutation.get("signature", MINT["signature"])
    if signature == "other":
        signature = pop.sign_pop(_mint_claims(), OTHER)
    overrides = {k: v for k, v in mutation.items() if k not in ("claims", "signature")}
    with pytest.raises(error) as info:
        _verify_mint(claims, signature, **overrides)
    assert type(info.value) is error


WORKER_REJECTIONS = [
    ("other cap", {"claims": {"cap_digest": bytes(32)}}, PopSignatureInvalid),
    ("other op", {"claims": {"op": "store"}}, PopSignatureInvalid),
    ("other body", {"claims": {"body_sha256": hashlib.sha256(b"x").digest()}}, PopSignatureInvalid),
    ("stale", {"now": TIMESTAMP + 61}, PopStale),
    ("future", {"now": TIMESTAMP - 6}, PopTimestampInFuture),
    ("cap names another device", {"expected_device_key_hash": "11" * 32}, PopKeyMismatch),
    ("verified with another key", {"public_key": OTHER.public_key()}, PopKeyMismatch),
]


@pytest.mark.parametrize(
    ("mutation", "error"),
    [(m, e) for _, m, e in WORKER_REJECTIONS],
    ids=[d for d, _, _ in WORKER_REJECTIONS],
)
def test_worker_rejections(mutation: dict[str, Any], error: type[Exception]) -> None:
    claims = _worker_claims(**mutation.get("claims", {}))
    overrides = {k: v for k, v in mutation.items() if k != "claims"}
    with pytest.raises(error) as info:
        _verify_worker(claims, WORKER["signature"], **overrides)
    assert type(info.value) is error


def test_freshness_window_edges() -> None:
    claims = _mint_claims()
    _verify_mint(claims, MINT["signature"], now=TIMESTAMP + pop.DEFAULT_POP_WINDOW)
    _verify_mint(claims, MINT["signature"], now=TIMESTAMP - pop.DEFAULT_POP_MAX_SKEW)
    with pytest.raises(PopStale):
        _verify_mint(claims, MINT["signature"], now=TIMESTAMP + 11, window=10)


def test_nonce_is_single_use_within_the_window() -> None:
    nonces = pop.NonceRegistry()
    claims = _mint_claims()
    _verify_mint(claims, MINT["signature"], nonces=nonces)
    with pytest.raises(PopNonceReused):
        _verify_mint(claims, MINT["signature"], nonces=nonces, now=TIMESTAMP + 30)
    # the same nonce in the worker domain is a different entry
    _verify_worker(_worker_claims(), WORKER["signature"], nonces=nonces)
    assert len(nonces) == 2


def test_failed_verification_consumes_no_nonce() -> None:
    nonces = pop.NonceRegistry()
    with pytest.raises(PopSignatureInvalid):
        _verify_mint(_mint_claims(service="github"), MINT["signature"], nonces=nonces)
    assert len(nonces) == 0


def test_registry_full_of_live_nonces_fails_closed() -> None:
    nonces = pop.NonceRegistry(capacity=2)
    nonces.consume(b"a", expires_at=100, now=0)
    nonces.consume(b"b", expires_at=50, now=0)
    with pytest.raises(PopNonceRegistryFull):
        nonces.consume(b"c", expires_at=100, now=10)
    assert len(nonces) == 2
    with pytest.raises(PopNonceReused):
        nonces.consume(b"b", expires_at=100, now=50)  # still live at its expiry second
    nonces.consume(b"c", expires_at=100, now=51)  # b expired, evicted; a kept
    with pytest.raises(PopNonceReused):
        nonces.consume(b"a", expires_at=200, now=51)
    nonces.consume(b"b", expires_at=200, now=101)  # a and c gone; b is new again
    assert len(nonces) == 1


def test_registry_refuses_entries_already_expired_and_bad_capacity() -> None:
    nonces = pop.NonceRegistry(capacity=1)
    with pytest.raises(PopStale):
        nonces.consume(b"a", expires_at=9, now=10)
    with pytest.raises(PopInvalid):
        pop.NonceRegistry(capacity=0)


def test_header_value_rejections() -> None:
    good = MINT["header_value"]
    for bad in (
        good + "=",
        "01" + good,
        good.replace(".", ":", 1),
        good.upper(),
        "",
        good[: good.rindex(".") + 10],
    ):
        with pytest.raises(PopInvalid):
            pop.PopProof.from_header_value(bad)


def test_new_claims_use_fresh_nonces() -> None:
    fields = {k: v for k, v in MINT["claims"].items() if k not in ("nonce", "timestamp")}
    first = pop.new_mint_pop_claims(now=TIMESTAMP, **fields)
    second = pop.new_mint_pop_claims(now=TIMESTAMP, **fields)
    assert first.nonce != second.nonce
    worker = pop.new_worker_pop_claims(cap_digest=bytes(32), op="fetch", body=b"{}", now=TIMESTAMP)
    assert worker.body_sha256 == hashlib.sha256(b"{}").digest()
    signature = pop.sign_pop(worker, K10)
    _verify_worker(worker, signature)


def test_claims_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _mint_claims().service = "x"  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 30), st.integers(0, 5)),
        max_size=60,
    )
)
def test_registry_invariants(operations: list[tuple[int, int, int]]) -> None:
    """Bounded; never accepts a live duplicate; never refuses for fullness wrongly."""
    capacity = 4
    nonces = pop.NonceRegistry(capacity=capacity)
    live: dict[bytes, int] = {}
    now = 0
    for key_index, lifetime, step in operations:
        now += step
        key = bytes([key_index])
        live = {k: e for k, e in live.items() if e >= now}
        if key in live:
            with pytest.raises(PopNonceReused):
                nonces.consume(key, expires_at=now + lifetime, now=now)
        elif len(live) >= capacity:
            with pytest.raises(PopNonceRegistryFull):
                nonces.consume(key, expires_at=now + lifetime, now=now)
        else:
            nonces.consume(key, expires_at=now + lifetime, now=now)
            live[key] = now + lifetime
        assert len(nonces) <= capacity


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_header_values_only_raise_pop_invalid(value: str) -> None:
    with pytest.raises(PopInvalid):
        pop.PopProof.from_header_value(value)


# -- check first, consume after the caller's checks; per-device bounds (review item 5) ---


def _check_worker(claims: pop.WorkerPopClaims, signature: str, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "public_key": K10.public_key(),
        "expected_device_key_hash": DKH,
        "now": TIMESTAMP,
    }
    kwargs.update(overrides)
    return pop.check_worker_pop(claims, signature, **kwargs)


def test_check_worker_pop_spends_nothing_and_consume_spends_once() -> None:
    nonces = pop.NonceRegistry()
    claims = _worker_claims()
    verified = _check_worker(claims, WORKER["signature"])
    again = _check_worker(claims, WORKER["signature"])  # checking twice is harmless
    assert verified == again
    assert len(nonces) == 0
    assert verified.nonce_key == pop.POP_WORKER_PREFIX + bytes.fromhex(DKH) + claims.nonce
    assert verified.expires_at == claims.timestamp + pop.DEFAULT_POP_WINDOW
    pop.consume_pop_nonce(verified, nonces=nonces, now=TIMESTAMP)
    assert nonces.owned(bytes.fromhex(DKH)) == 1
    with pytest.raises(PopNonceReused):
        pop.consume_pop_nonce(again, nonces=nonces, now=TIMESTAMP + 1)
    # verify_worker_pop (check + consume in one) sees the same registry entry
    with pytest.raises(PopNonceReused):
        _verify_worker(claims, WORKER["signature"], nonces=nonces)
    # after its window the proof is stale, whatever the registry holds
    with pytest.raises(PopStale):
        pop.consume_pop_nonce(verified, nonces=nonces, now=verified.expires_at + 1)


@pytest.mark.parametrize(
    ("mutation", "error"),
    [
        ({"signature": MINT["signature"]}, PopSignatureInvalid),
        ({"public_key": OTHER.public_key()}, PopKeyMismatch),
        ({"now": TIMESTAMP + 61}, PopStale),
        ({"now": TIMESTAMP - 6}, PopTimestampInFuture),
    ],
)
def test_check_worker_pop_refuses_like_verify(
    mutation: dict[str, Any], error: type[Exception]
) -> None:
    overrides = dict(mutation)
    signature = overrides.pop("signature", WORKER["signature"])
    with pytest.raises(error):
        _check_worker(_worker_claims(), signature, **overrides)


def test_one_device_cannot_fill_the_registry() -> None:
    nonces = pop.NonceRegistry(capacity=10, per_owner_capacity=3)
    greedy, other = b"\x01" * 32, b"\x02" * 32
    for index in range(3):
        nonces.consume(bytes([index]), expires_at=100, now=0, owner=greedy)
    with pytest.raises(PopNonceRegistryFull, match="this device"):
        nonces.consume(b"x", expires_at=100, now=1, owner=greedy)
    assert nonces.owned(greedy) == 3
    nonces.consume(b"y", expires_at=100, now=1, owner=other)  # everybody else still gets in
    assert len(nonces) == 4
    nonces.consume(b"x", expires_at=300, now=101, owner=greedy)  # its old entries expired
    assert (nonces.owned(greedy), nonces.owned(other), len(nonces)) == (1, 0, 1)


def test_worker_proofs_are_counted_against_their_device() -> None:
    nonces = pop.NonceRegistry(per_owner_capacity=1)
    _verify_worker(_worker_claims(), WORKER["signature"], nonces=nonces)
    second = _worker_claims(nonce=bytes(16))
    with pytest.raises(PopNonceRegistryFull):
        _verify_worker(second, pop.sign_pop(second, K10), nonces=nonces)
    assert nonces.per_owner_capacity == 1
    with pytest.raises(PopInvalid):
        pop.NonceRegistry(per_owner_capacity=0)


def test_mint_api_is_unchanged_for_the_broker() -> None:
    """The broker calls verify_mint_pop with a throw-away NonceRegistry(1) per request."""
    verified = _verify_mint(_mint_claims(), MINT["signature"], nonces=pop.NonceRegistry(1))
    assert verified == pop.VerifiedMintPop(claims=_mint_claims(), device_key_hash=DKH)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 2), st.integers(0, 30), st.integers(0, 5)),
        max_size=60,
    )
)
def test_registry_per_owner_invariants(operations: list[tuple[int, int, int, int]]) -> None:
    """Per owner never more than its share live; fullness refused exactly when due."""
    capacity, share = 5, 2
    nonces = pop.NonceRegistry(capacity=capacity, per_owner_capacity=share)
    live: dict[bytes, tuple[int, bytes]] = {}
    now = 0
    for key_index, owner_index, lifetime, step in operations:
        now += step
        key, owner = bytes([key_index]), bytes([owner_index])
        live = {k: v for k, v in live.items() if v[0] >= now}
        owned = sum(1 for _, o in live.values() if o == owner)
        if key in live:
            with pytest.raises(PopNonceReused):
                nonces.consume(key, expires_at=now + lifetime, now=now, owner=owner)
        elif owned >= share or len(live) >= capacity:
            with pytest.raises(PopNonceRegistryFull):
                nonces.consume(key, expires_at=now + lifetime, now=now, owner=owner)
        else:
            nonces.consume(key, expires_at=now + lifetime, now=now, owner=owner)
            live[key] = (now + lifetime, owner)
        assert nonces.owned(owner) == sum(1 for _, o in live.values() if o == owner)
