"""One K10 signature rule: what the chain refuses (r or s out of range, high-S), every Python
verify path refuses too (attest.k10_signature; contracts/src/DeviceAuth.sol → OpenZeppelin
P256.verify: ``0 < r < n``, ``0 < s <= n // 2``).

Wycheproof-style range of ``s``: 0, 1, n/2, n/2 + 1, n - 1, n, n + 1, 2^256 - 1. For each
value with a signing solution (1 ≤ s < n) the signature is made *genuine*: the private key
is solved for so that (r, s) verifies over the message mathematically (cryptography accepts
it), hence a refusal is the rule and not a bad signature. Where the signed message contains
the key's own hash (the mint PoP) the high-S twin ``n - s`` of a real signature stands in.
"""

from __future__ import annotations

import hashlib
import secrets

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.broker import _passkey as pk
from agentkeys.broker.errors import K10ProofRejected, PasskeyRegistrationRejected
from agentkeys.cap import CapOp
from agentkeys.chain import challenge as ch
from agentkeys.errors import PopError
from agentkeys.omni import device_key_hash, p256_point_bytes
from agentkeys.pop import (
    NonceRegistry,
    PopProof,
    new_mint_pop_claims,
    new_worker_pop_claims,
    sign_pop,
    verify_mint_pop,
    verify_worker_pop,
)
from agentkeys.signer._first_master import verify_first_master_k10
from agentkeys.signer._verify import verify_k10 as signer_verify_k10
from agentkeys.signer.errors import K10SignatureRejected
from attest.k10_signature import (
    P256_HALF_N,
    P256_N,
    k10_raw_from_der,
    k10_rs_acceptable,
    k10_sign,
    verify_k10,
)

S_VALUES = [
    ("s=0", 0, False),
    ("s=1", 1, True),
    ("s=n/2", P256_HALF_N, True),
    ("s=n/2+1", P256_HALF_N + 1, False),
    ("s=n-1", P256_N - 1, False),
    ("s=n", P256_N, False),
    ("s=n+1", P256_N + 1, False),
    ("s=2^256-1", 2**256 - 1, False),
]
NOW = 1_750_000_000


def _raw(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + (s % 2**256).to_bytes(32, "big")


def genuine(message: bytes, s: int) -> tuple[ec.EllipticCurvePublicKey, bytes]:
    """A key and ``r ‖ s`` that verify over ``message`` mathematically when 1 <= s < n.

    ECDSA: s = k⁻¹ (z + r d) mod n, so for a chosen k (r = x(kG)) the key d = (s k - z) r⁻¹.
    For s outside 1..n-1 no key exists; a random key and r are returned.
    """
    z = int.from_bytes(hashlib.sha256(message).digest(), "big") % P256_N
    while True:
        k = secrets.randbelow(P256_N - 1) + 1
        r = ec.derive_private_key(k, ec.SECP256R1()).public_key().public_numbers().x % P256_N
        if r == 0:
            continue
        if not 0 < s < P256_N:
            return ec.generate_private_key(ec.SECP256R1()).public_key(), _raw(r, s)
        d = (s * k - z) * pow(r, -1, P256_N) % P256_N
        if d:
            return ec.derive_private_key(d, ec.SECP256R1()).public_key(), _raw(r, s)


def _math_verifies(key: ec.EllipticCurvePublicKey, raw: bytes, message: bytes) -> bool:
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


@pytest.mark.parametrize(("name", "s", "chain_accepts"), S_VALUES, ids=[v[0] for v in S_VALUES])
def test_the_rule_is_the_chains(name: str, s: int, chain_accepts: bool) -> None:
    message = b"agentkeys k10 rule " + name.encode()
    key, raw = genuine(message, s)
    if 0 < s < P256_N:  # a real signature: only the rule can refuse it
        assert _math_verifies(key, raw, message)
    assert k10_rs_acceptable(raw) is chain_accepts
    assert verify_k10(key, raw, message=message) is chain_accepts
    assert verify_k10(key, raw, digest=hashlib.sha256(message).digest()) is chain_accepts


def test_r_out_of_range_is_refused() -> None:
    for r in (0, P256_N, 2**256 - 1):
        assert not k10_rs_acceptable(_raw(r, 1))
    assert not k10_rs_acceptable(b"\x01" * 63)


@pytest.mark.parametrize(("name", "s", "chain_accepts"), S_VALUES, ids=[v[0] for v in S_VALUES])
def test_signer_verify_k10_sig(name: str, s: int, chain_accepts: bool) -> None:
    """The signer's ``/verify/k10-sig`` core, over a message and over a digest."""
    message = b"signer " + name.encode()
    key, raw = genuine(message, s)
    point = p256_point_bytes(key).hex()
    for kwargs in (
        {"message": b64url_encode(message), "digest": None},
        {"message": None, "digest": hashlib.sha256(message).hexdigest()},
    ):
        if chain_accepts:
            signer_verify_k10(public_key=point, signature=raw.hex(), **kwargs)
        else:
            with pytest.raises(K10SignatureRejected):
                signer_verify_k10(public_key=point, signature=raw.hex(), **kwargs)


@pytest.mark.parametrize(("name", "s", "chain_accepts"), S_VALUES, ids=[v[0] for v in S_VALUES])
def test_signer_first_master_k10(name: str, s: int, chain_accepts: bool) -> None:
    challenge = hashlib.sha256(name.encode()).digest()
    key, raw = genuine(challenge, s)
    device = ch.NewMaster(
        k10_point=p256_point_bytes(key), k11_credential_id_hash=b"\x00" * 32,
        k11_point=p256_point_bytes(key), rp_id_hash=b"\x00" * 32, roles=7,
        attestation_digest=b"\x00" * 32,
    )  # fmt: skip
    if chain_accepts:
        verify_first_master_k10(device, challenge, raw.hex())
    else:
        with pytest.raises(K10SignatureRejected):
            verify_first_master_k10(device, challenge, raw.hex())


@pytest.mark.parametrize(("name", "s", "chain_accepts"), S_VALUES, ids=[v[0] for v in S_VALUES])
def test_broker_enrollment_k10_proof(name: str, s: int, chain_accepts: bool) -> None:
    """Past the K10 proof the (empty) registration response is what fails."""
    challenge = hashlib.sha256(b"enroll " + name.encode()).digest()
    key, raw = genuine(challenge, s)
    expected = PasskeyRegistrationRejected if chain_accepts else K10ProofRejected
    with pytest.raises(expected):
        pk.verify_enrollment(
            {}, challenge=challenge, k10_point=p256_point_bytes(key),
            k10_signature=b64url_encode(raw), rp_id="agentkeys.localhost",
            origin="https://agentkeys.localhost",
        )  # fmt: skip


@pytest.mark.parametrize(("name", "s", "chain_accepts"), S_VALUES, ids=[v[0] for v in S_VALUES])
def test_worker_pop(name: str, s: int, chain_accepts: bool) -> None:
    claims = new_worker_pop_claims(
        cap_digest=b"\x07" * 32, op=CapOp.FETCH, body=name.encode(), now=NOW
    )
    key, raw = genuine(claims.message(), s)

    def verify() -> object:
        return verify_worker_pop(
            claims, b64url_encode(raw), public_key=key,
            expected_device_key_hash=device_key_hash(key), now=NOW, nonces=NonceRegistry(8),
        )  # fmt: skip

    if chain_accepts:
        verify()
    else:
        with pytest.raises(PopError):
            verify()


def _high_twin(raw: bytes) -> bytes:
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    assert s <= P256_HALF_N  # what we sign is low-S
    return _raw(r, P256_N - s)


def test_broker_mint_pop_refuses_the_high_s_twin() -> None:
    """The mint PoP signs its own key's hash, so the high-S twin of a real signature is used."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    claims = new_mint_pop_claims(
        op=CapOp.FETCH, operator_omni="aa" * 32, actor_omni="aa" * 32, service="openai",
        device_key_hash=device_key_hash(public), now=NOW,
    )  # fmt: skip
    low = PopProof.from_header_value(
        PopProof(claims.timestamp, claims.nonce, sign_pop(claims, private)).to_header_value()
    )
    verify_mint_pop(claims, low.signature, public_key=public, now=NOW, nonces=NonceRegistry(8))
    twin = _high_twin(b64url_decode(low.signature))
    assert _math_verifies(public, twin, claims.message())
    with pytest.raises(PopError):
        verify_mint_pop(
            claims, b64url_encode(twin), public_key=public, now=NOW, nonces=NonceRegistry(8)
        )


def test_what_k10_signers_hand_out_is_low_s() -> None:
    """k10_sign and k10_raw_from_der normalise, so our K10 signatures pass the chain's rule."""
    key = ec.generate_private_key(ec.SECP256R1())
    for i in range(32):
        data = b"low-s %d" % i
        assert verify_k10(key.public_key(), k10_sign(key, data), message=data)
        der = key.sign(data, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        high = encode_dss_signature(r, P256_N - s if s <= P256_HALF_N else s)
        assert verify_k10(key.public_key(), k10_raw_from_der(high), message=data)
