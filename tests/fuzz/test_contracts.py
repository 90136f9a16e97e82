"""Property-based fuzzing of every outside-input parser (hypothesis).

Two kinds of property:

* the **contract** of each target of tests/fuzz/targets.py, over random bytes and over
  mutated valid inputs: a value or a declared leaf, nothing else;
* **structure-aware** properties per format: valid inputs built from the format's own
  strategies parse and round-trip, and every targeted corruption is refused with the exact
  leaf the spec names (a tampered envelope never opens, a changed cap member never verifies,
  a replayed PoP nonce never passes).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import cbor2
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agentkeys import envelope
from agentkeys.b64url import b64url_encode
from agentkeys.broker.errors import PasskeyAssertionRejected, PasskeyRegistrationRejected
from agentkeys.cap import CapOp, CapPayload, canonical_bytes, parse_cap_token, verify_cap
from agentkeys.errors import (
    CapError,
    CapInvalid,
    CapSignatureInvalid,
    EnvelopeError,
    EnvelopeTampered,
    EnvelopeTruncated,
    EnvelopeVersionUnknown,
    InvalidKeyMaterial,
    PopInvalid,
    PopNonceReused,
    PopSignatureInvalid,
    PopStale,
)
from agentkeys.jwks import JsonWebKeySet, jwk_from_public_key, public_key_from_jwk
from agentkeys.pop import NonceRegistry, PopProof, new_mint_pop_claims, sign_pop, verify_mint_pop
from agentkeys.service import decode
from agentkeys.service.errors import BadRequest
from attest.errors import AttestationMalformed
from attest.quote import ST_ATTEST_QUOTE, TPM_GENERATED, encode_pcr_selection, parse_attest
from tests.fuzz import targets as t
from tests.fuzz._budget import budget

TARGET_NAMES = sorted(t.TARGETS)


# -- the contract, over random and mutated input -----------------------------------------------


@pytest.mark.parametrize("name", TARGET_NAMES)
@budget(25)
@given(data=st.binary(max_size=512))
def test_contract_on_random_bytes(name: str, data: bytes) -> None:
    t.TARGETS[name].check(data)


_EDIT = st.tuples(st.integers(0, 4), st.integers(0, 2**16), st.binary(min_size=1, max_size=8))


def mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply byte-level edits (replace, delete, insert, truncate, duplicate) to ``seed``."""
    data = bytearray(seed)
    for kind, where, chunk in edits:
        at = where % (len(data) + 1)
        if kind == 0 and data:
            data[at % len(data)] = chunk[0]
        elif kind == 1:
            del data[at : at + len(chunk)]
        elif kind == 2:
            data[at:at] = chunk
        elif kind == 3:
            del data[at:]
        else:
            data[at:at] = data[at : at + 16]
    return bytes(data)


SEEDED = [name for name in TARGET_NAMES if t.TARGETS[name].seeds()]


@pytest.mark.parametrize("name", SEEDED)
@budget(40)
@given(data=st.data(), edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_contract_on_mutated_valid_inputs(
    name: str, data: st.DataObject, edits: list[tuple[int, int, bytes]]
) -> None:
    seed = data.draw(st.sampled_from(t.TARGETS[name].seeds()))
    t.TARGETS[name].check(mutate(seed, edits))


@pytest.mark.parametrize("name", SEEDED)
def test_seeds_are_accepted_or_refused_by_their_declared_leaf(name: str) -> None:
    # the seeds are meant to be valid: a seed raising a leaf would make mutation fuzzing blind
    for seed in t.TARGETS[name].seeds():
        t.TARGETS[name].check(seed)


# -- envelopes ---------------------------------------------------------------------------------

_SERVICE = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,20}\Z")
_HEX32 = st.binary(min_size=32, max_size=32).map(bytes.hex)


@budget(60)
@given(
    plaintext=st.binary(max_size=64),
    version=st.sampled_from([1, 2, 4]),
    epoch=st.integers(0, 2**32 - 1),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_envelope_any_flipped_byte_is_refused(
    plaintext: bytes, version: int, epoch: int, position: int, flip: int
) -> None:
    if version == 1:
        sealed = envelope.seal_v1(plaintext, kek=t.KEK, wallet=t.WALLET, service=t.SERVICE)
    elif version == 2:
        sealed = envelope.seal_v2_legacy(
            plaintext, kek=t.KEK, actor_omni=t.ACTOR, service=t.SERVICE
        )
    else:
        sealed = envelope.seal_v4(
            plaintext, kek=t.KEK, actor_omni=t.ACTOR, service=t.SERVICE, epoch=epoch
        )
    context: dict[str, Any] = {
        "kek": t.KEK,
        "service": t.SERVICE,
        "wallet": t.WALLET,
        "actor_omni": t.ACTOR,
    }
    assert envelope.open_envelope(sealed, **context) == plaintext
    corrupt = bytearray(sealed)
    corrupt[position % len(sealed)] ^= flip
    with pytest.raises(EnvelopeError) as refused:
        envelope.open_envelope(bytes(corrupt), **context)
    if position % len(sealed) == 0:
        assert type(refused.value) in (EnvelopeVersionUnknown, EnvelopeTruncated, EnvelopeTampered)
    else:
        assert type(refused.value) is EnvelopeTampered
    with pytest.raises(EnvelopeError):
        envelope.open_envelope(sealed[: position % len(sealed)], **context)


@budget(30)
@given(plaintext=st.binary(max_size=32), service=_SERVICE, actor=_HEX32)
def test_envelope_for_another_actor_or_service_is_tampered(
    plaintext: bytes, service: str, actor: str
) -> None:
    assume(service != t.SERVICE and actor != t.ACTOR)
    sealed = envelope.seal_v4(plaintext, kek=t.KEK, actor_omni=t.ACTOR, service=t.SERVICE, epoch=3)
    for other in (
        {"actor_omni": actor, "service": t.SERVICE},
        {"actor_omni": t.ACTOR, "service": service},
    ):
        with pytest.raises(EnvelopeTampered):
            envelope.open_envelope(sealed, kek=t.KEK, **other)


# -- caps --------------------------------------------------------------------------------------


@st.composite
def cap_fields(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "op": draw(st.sampled_from(list(CapOp))),
        "operator_omni": draw(_HEX32),
        "actor_omni": draw(_HEX32),
        "service": draw(_SERVICE),
        "device_key_hash": draw(_HEX32),
        "k3_epoch": draw(st.integers(0, 2**32 - 1)),
        "aud": draw(st.from_regex(r"\A[!-~]{1,40}\Z")),
        "now": draw(st.integers(0, 2**40)),
        "lifetime": draw(st.integers(1, 1800)),
    }


@budget(40)
@given(fields=cap_fields())
def test_cap_round_trips_and_verifies(fields: dict[str, Any]) -> None:
    signed = t.signed_cap(**fields)
    token = signed.to_token()
    assert parse_cap_token(token) == signed
    payload = CapPayload.from_json_dict(json.loads(canonical_bytes(signed.payload)))
    assert payload == signed.payload
    verified = verify_cap(
        token,
        keys={t.K1_KID: t.K1.public_key()},
        expected_aud=fields["aud"],
        now=fields["now"],
        expected_op=fields["op"],
    )
    assert verified.payload == signed.payload


_NON_CANONICAL = st.sampled_from(
    [
        "upper_hex",
        "0x_hex",
        "upper_service",
        "float_epoch",
        "bool_version",
        "extra_member",
        "missing_member",
    ]
)


@budget(40)
@given(fields=cap_fields(), how=_NON_CANONICAL)
def test_cap_non_canonical_payloads_are_refused(fields: dict[str, Any], how: str) -> None:
    obj: dict[str, Any] = t.signed_cap(**fields).payload.to_json_dict()
    if how == "upper_hex":
        assume(obj["actor_omni"] != obj["actor_omni"].upper())
        obj["actor_omni"] = obj["actor_omni"].upper()
    elif how == "0x_hex":
        obj["operator_omni"] = "0x" + str(obj["operator_omni"])
    elif how == "upper_service":
        assume(obj["service"] != obj["service"].upper())
        obj["service"] = obj["service"].upper()
    elif how == "float_epoch":
        obj["k3_epoch"] = float(obj["k3_epoch"])
    elif how == "bool_version":
        obj["v"] = True
    elif how == "extra_member":
        obj["scope"] = "*"
    else:
        del obj["nonce"]
    with pytest.raises(CapInvalid):
        CapPayload.from_json_dict(obj)


@budget(40)
@given(
    fields=cap_fields(),
    member=st.sampled_from(
        [
            "op",
            "operator_omni",
            "actor_omni",
            "service",
            "device_key_hash",
            "k3_epoch",
            "issued_at",
            "expires_at",
            "nonce",
            "aud",
        ]
    ),
    data=st.data(),
)
def test_cap_with_any_member_changed_does_not_verify(
    fields: dict[str, Any], member: str, data: st.DataObject
) -> None:
    wire = t.signed_cap(**fields).to_wire()
    payload = dict(wire["payload"])  # type: ignore[arg-type]
    if member == "op":
        payload["op"] = data.draw(st.sampled_from([o.value for o in CapOp if o != fields["op"]]))
    elif member in ("k3_epoch", "issued_at", "expires_at"):
        payload[member] = int(payload[member]) + data.draw(st.sampled_from([-1, 1]))
    elif member == "service":
        payload["service"] = str(payload["service"]) + "x"
    elif member == "aud":
        payload["aud"] = str(payload["aud"]) + "x"
    else:
        payload[member] = data.draw(_HEX32.filter(lambda v: v != payload[member]))
    token = b64url_encode(json.dumps({**wire, "payload": payload}).encode())
    with pytest.raises(CapError) as refused:
        verify_cap(
            token,
            keys={t.K1_KID: t.K1.public_key()},
            expected_aud=str(payload["aud"]),
            now=fields["now"],
        )
    assert type(refused.value) in (CapSignatureInvalid, CapInvalid) or isinstance(
        refused.value, CapError
    )


# -- K10 proof of possession -------------------------------------------------------------------


@budget(50)
@given(
    ts=st.integers(0, 2**53 - 1),
    nonce=st.binary(min_size=16, max_size=16),
    sig=st.binary(min_size=64, max_size=64),
)
def test_pop_header_round_trips(ts: int, nonce: bytes, sig: bytes) -> None:
    proof = PopProof(ts, nonce, b64url_encode(sig))
    assert PopProof.from_header_value(proof.to_header_value()) == proof
    header = proof.to_header_value()
    upper_nonce = f"{ts}.{nonce.hex().upper()}.{proof.signature}"
    for bad in (header + ".", "0" + header, upper_nonce, header.replace(".", ":", 1)):
        if bad != header:
            with pytest.raises(PopInvalid):
                PopProof.from_header_value(bad)


@budget(30)
@given(
    service=_SERVICE,
    actor=_HEX32,
    change=st.sampled_from(["service", "actor_omni", "op", "timestamp", "nonce", "none"]),
)
def test_pop_binds_every_claim_and_nonces_are_single_use(
    service: str, actor: str, change: str
) -> None:
    claims = new_mint_pop_claims(
        op=CapOp.FETCH,
        operator_omni=t.OPERATOR,
        actor_omni=actor,
        service=service,
        device_key_hash=t.K10_HASH,
        now=t.NOW,
    )
    signature = sign_pop(claims, t.K10)
    registry = NonceRegistry(capacity=8)
    fields = {name: getattr(claims, name) for name in claims.__dataclass_fields__}
    if change == "service":
        fields["service"] = service + "x"
    elif change == "actor_omni":
        fields["actor_omni"] = t.OPERATOR if actor != t.OPERATOR else t.ACTOR
    elif change == "op":
        fields["op"] = CapOp.STORE
    elif change == "timestamp":
        fields["timestamp"] = t.NOW - 1
    elif change == "nonce":
        fields["nonce"] = bytes(16) if claims.nonce != bytes(16) else b"\x01" * 16
    presented = type(claims)(**fields)
    key = t.K10.public_key()
    if change == "none":
        verify_mint_pop(presented, signature, public_key=key, now=t.NOW, nonces=registry)
        with pytest.raises(PopNonceReused):
            verify_mint_pop(presented, signature, public_key=key, now=t.NOW, nonces=registry)
        with pytest.raises(PopStale):
            verify_mint_pop(
                presented, signature, public_key=key, now=t.NOW + 3600, nonces=NonceRegistry()
            )
    else:
        with pytest.raises(PopSignatureInvalid):
            verify_mint_pop(presented, signature, public_key=key, now=t.NOW, nonces=registry)
        assert len(registry) == 0


# -- JWKS --------------------------------------------------------------------------------------


@budget(30)
@given(seeds=st.lists(st.integers(1, 2**200), min_size=1, max_size=4, unique=True))
def test_jwks_round_trips(seeds: list[int]) -> None:
    keys = JsonWebKeySet.from_public_keys([t.p256_key(s).public_key() for s in seeds])
    again = JsonWebKeySet.from_json(keys.to_json())
    assert {k: v.public_numbers() for k, v in again.by_kid.items()} == {
        k: v.public_numbers() for k, v in keys.by_kid.items()
    }


@budget(40)
@given(
    member=st.sampled_from(["kty", "crv", "x", "y", "alg", "use", "key_ops", "d", "extra"]),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=50), st.lists(st.text())),
)
def test_jwk_member_corruptions_are_refused(member: str, value: object) -> None:
    jwk: dict[str, object] = dict(jwk_from_public_key(t.K1.public_key()))
    original = jwk.get(member)
    assume(value != original)
    assume(not (member == "key_ops" and value == ["verify"]))
    jwk[member] = value
    with pytest.raises(InvalidKeyMaterial):
        public_key_from_jwk(jwk)


# -- WebAuthn responses ------------------------------------------------------------------------


@budget(30)
@given(
    field=st.sampled_from(["clientDataJSON", "rpIdHash"]),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_registration_with_a_corrupted_signed_field_is_refused(
    field: str, position: int, flip: int
) -> None:
    # "none" attestation signs nothing: what binds a registration is the type, challenge and
    # origin in clientDataJSON (other members, e.g. crossOrigin, may change) and the rpIdHash
    registration = t._authenticator().create(t.CHALLENGE)
    credential: dict[str, Any] = registration.to_json()
    if field == "clientDataJSON":  # a byte of the type, challenge or origin value
        raw = bytearray(registration.client_data_json)
        decoded = json.loads(raw)
        spans = [
            i
            for key in ("type", "challenge", "origin")
            for start in [raw.index(json.dumps(decoded[key]).encode()) + 1]
            for i in range(start, start + len(decoded[key]))
        ]
        raw[spans[position % len(spans)]] ^= flip
        try:  # the last base64 digit's unused bits carry nothing: same challenge, not a change
            same = base64.urlsafe_b64decode(json.loads(raw)["challenge"] + "==") == t.CHALLENGE
        except (ValueError, KeyError):
            same = False
        assume(not same)
        replaced = {"clientDataJSON": b64url_encode(bytes(raw))}
    else:
        auth = bytearray(registration.authenticator_data)
        auth[position % 32] ^= flip
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": bytes(auth)})
        replaced = {"attestationObject": b64url_encode(attestation)}
    credential["response"] = {**credential["response"], **replaced}
    with pytest.raises(PasskeyRegistrationRejected):
        t._registration(json.dumps(credential).encode())


@budget(30)
@given(
    field=st.sampled_from(["clientDataJSON", "authenticatorData", "signature"]),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_assertion_with_a_corrupted_field_is_refused(field: str, position: int, flip: int) -> None:
    assertion = t._authenticator().get(t.CHALLENGE, sign_count=5)
    source = {
        "clientDataJSON": assertion.client_data_json,
        "authenticatorData": assertion.authenticator_data,
        "signature": assertion.signature,
    }[field]
    raw = bytearray(source)
    raw[position % len(raw)] ^= flip
    credential: dict[str, Any] = assertion.to_json()
    credential["response"] = {**credential["response"], field: b64url_encode(bytes(raw))}
    with pytest.raises(PasskeyAssertionRejected):
        t._assertion(json.dumps(credential).encode())


# -- TPM structures ----------------------------------------------------------------------------


@st.composite
def quote_attest(draw: st.DrawFn) -> tuple[bytes, bytes, tuple[int, ...], bytes]:
    extra = draw(st.binary(max_size=64))
    pcrs = tuple(sorted(draw(st.sets(st.integers(0, 23), max_size=24))))
    digest = draw(st.binary(max_size=48))
    signer = draw(st.binary(max_size=34))
    body = (
        struct.pack(">IH", TPM_GENERATED, ST_ATTEST_QUOTE)
        + struct.pack(">H", len(signer))
        + signer
        + struct.pack(">H", len(extra))
        + extra
        + draw(st.binary(min_size=8, max_size=8))  # clock
        + draw(st.binary(min_size=8, max_size=8))  # resetCount, restartCount
        + draw(st.binary(min_size=1, max_size=1))  # safe
        + draw(st.binary(min_size=8, max_size=8))  # firmwareVersion
        + encode_pcr_selection(pcrs)
        + struct.pack(">H", len(digest))
        + digest
    )
    return body, extra, pcrs, digest


@budget(60)
@given(quote=quote_attest(), cut=st.integers(0, 400))
def test_tpms_attest_parses_and_every_truncation_is_malformed(
    quote: tuple[bytes, bytes, tuple[int, ...], bytes], cut: int
) -> None:
    body, extra, pcrs, digest = quote
    parsed = parse_attest(body)
    assert (parsed.extra_data, parsed.pcr_selection, parsed.pcr_digest) == (extra, pcrs, digest)
    with pytest.raises(AttestationMalformed):
        parse_attest(body[: cut % len(body)])
    with pytest.raises(AttestationMalformed):
        parse_attest(body + b"\x00")


# -- request decoding in the service base ------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("route", sorted(t.BROKER_REQUESTS))
@budget(30)
@given(
    obj=st.dictionaries(
        st.sampled_from(
            [
                "email",
                "request",
                "challenge_id",
                "message",
                "signature",
                "assertion",
                "credential",
                "k10_signature",
                "k10_public_key",
                "wallet",
                "operator_omni",
                "actor_omni",
                "service",
                "device_key_hash",
                "pop",
                "k3_epoch",
                "lifetime",
                "agent_omni",
                "services",
                "read_only",
                "revoke",
                "other",
            ]
        ),
        _JSON,
        max_size=8,
    )
)
def test_request_decoding_returns_the_dataclass_or_bad_request(
    route: str, obj: dict[str, Any]
) -> None:
    cls = t.BROKER_REQUESTS[route]
    try:
        decoded = decode(cls, obj)
    except BadRequest as exc:
        t.check_error(exc)
        return
    assert isinstance(decoded, cls)
