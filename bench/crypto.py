"""Scenario ``crypto``: envelopes, caps and K10 PoP against the raw primitives.

Baselines are the bare ``cryptography`` calls each format is built on, on the same
key and bytes, so the ratio is the price of our framing, validation and
canonicalisation:

* ``seal_v4`` vs ``AESGCM.encrypt`` (key object reused, nonce pre-drawn) and
  ``open_envelope`` vs ``AESGCM.decrypt``, for a typical API-key sized secret;
* ``sign_cap`` vs a bare deterministic ECDSA P-256 sign over the same canonical
  bytes; ``verify_cap`` (token parse + checks) vs a bare ECDSA verify;
* ``verify_worker_pop`` (key hash, freshness, signature, nonce registry) vs a
  bare ECDSA verify. Each PoP carries a single-use nonce, so exactly
  ``max_ops`` proofs are signed before timing starts.
"""

from __future__ import annotations

import os
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentkeys.cap import CapOp, canonical_bytes, new_cap_payload, sign_cap, verify_cap
from agentkeys.envelope import aad_v4, open_envelope, seal_v4
from agentkeys.omni import device_key_hash
from agentkeys.pop import NonceRegistry, new_worker_pop_claims, sign_pop, verify_worker_pop
from bench._micro import measure_interleaved
from bench._model import Figures, Row
from bench._profile import Profile

__all__ = ["SECRET_BYTES", "run"]

SCENARIO = "crypto"
SECRET_BYTES = 128
_ACTOR = "11" * 32
_OPERATOR = "22" * 32
_SERVICE = "openai"
_EPOCH = 7
_AUD = "agentkeys-worker"


def _row(case: str, label: str, figures: Figures, baseline: str | None, notes: str = "") -> Row:
    return Row(SCENARIO, case, label, figures, baseline=baseline, notes=notes)


def _envelope_rows(profile: Profile) -> list[Row]:
    kek = os.urandom(32)
    secret = os.urandom(SECRET_BYTES)
    aesgcm = AESGCM(kek)
    aad = aad_v4(_ACTOR, _SERVICE, _EPOCH)
    nonce = os.urandom(12)
    sealed = seal_v4(secret, kek=kek, actor_omni=_ACTOR, service=_SERVICE, epoch=_EPOCH)
    raw_sealed = aesgcm.encrypt(nonce, secret, aad)

    def raw_encrypt() -> object:
        return aesgcm.encrypt(nonce, secret, aad)

    def envelope_seal() -> object:
        return seal_v4(secret, kek=kek, actor_omni=_ACTOR, service=_SERVICE, epoch=_EPOCH)

    def raw_decrypt() -> object:
        return aesgcm.decrypt(nonce, raw_sealed, aad)

    def envelope_open() -> object:
        return open_envelope(sealed, kek=kek, service=_SERVICE, actor_omni=_ACTOR)

    figures = measure_interleaved(
        [
            ("aesgcm-encrypt", raw_encrypt),
            ("seal-v4", envelope_seal),
            ("aesgcm-decrypt", raw_decrypt),
            ("open-v4", envelope_open),
        ],
        profile.micro,
    )
    size = f"{SECRET_BYTES} B secret"
    return [
        _row(
            "aesgcm-encrypt",
            "AESGCM.encrypt (raw, key reused)",
            figures["aesgcm-encrypt"],
            None,
            size,
        ),
        _row(
            "seal-v4",
            "envelope seal_v4",
            figures["seal-v4"],
            "aesgcm-encrypt",
            "new AESGCM + urandom nonce + AAD per call",
        ),
        _row(
            "aesgcm-decrypt",
            "AESGCM.decrypt (raw, key reused)",
            figures["aesgcm-decrypt"],
            None,
            size,
        ),
        _row("open-v4", "envelope open_envelope (0x04)", figures["open-v4"], "aesgcm-decrypt"),
    ]


def _cap_and_pop_rows(profile: Profile) -> list[Row]:
    k1 = ec.generate_private_key(ec.SECP256R1())
    k1_public = k1.public_key()
    k10 = ec.generate_private_key(ec.SECP256R1())
    k10_public = k10.public_key()
    dkh = device_key_hash(k10_public)
    now = int(time.time())
    payload = new_cap_payload(
        op=CapOp.FETCH,
        operator_omni=_OPERATOR,
        actor_omni=_ACTOR,
        service=_SERVICE,
        device_key_hash=dkh,
        k3_epoch=_EPOCH,
        aud=_AUD,
        now=now,
    )
    signed = sign_cap(payload, k1, "k1")
    token = signed.to_token()
    keys = {"k1": k1_public}
    message = canonical_bytes(payload)
    deterministic = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    ecdsa = ec.ECDSA(hashes.SHA256())
    der = k1.sign(message, deterministic)

    body = b'{"service":"openai"}'
    proofs = []
    for _ in range(profile.micro.max_ops):
        claims = new_worker_pop_claims(cap_digest=bytes(32), op=CapOp.FETCH, body=body, now=now)
        proofs.append((claims, sign_pop(claims, k10)))
    pop_iter = iter(proofs)
    nonces = NonceRegistry(capacity=max(1, profile.micro.max_ops))

    def raw_sign() -> object:
        return k1.sign(message, deterministic)

    def cap_sign() -> object:
        return sign_cap(payload, k1, "k1")

    def raw_verify() -> object:
        k1_public.verify(der, message, ecdsa)
        return None

    def cap_verify() -> object:
        return verify_cap(token, keys=keys, expected_aud=_AUD, now=now, expected_op=CapOp.FETCH)

    def pop_verify() -> object:
        claims, signature = next(pop_iter)
        return verify_worker_pop(
            claims,
            signature,
            public_key=k10_public,
            expected_device_key_hash=dkh,
            now=now,
            nonces=nonces,
        )

    figures = measure_interleaved(
        [
            ("ecdsa-sign", raw_sign),
            ("cap-sign", cap_sign),
            ("ecdsa-verify", raw_verify),
            ("cap-verify", cap_verify),
            ("pop-verify", pop_verify),
        ],
        profile.micro,
    )
    return [
        _row("ecdsa-sign", "ECDSA P-256 sign (raw, RFC 6979)", figures["ecdsa-sign"], None),
        _row("cap-sign", "cap sign_cap (RFC 8785 + ES256)", figures["cap-sign"], "ecdsa-sign"),
        _row("ecdsa-verify", "ECDSA P-256 verify (raw)", figures["ecdsa-verify"], None),
        _row(
            "cap-verify",
            "cap verify_cap (token parse + checks)",
            figures["cap-verify"],
            "ecdsa-verify",
            f"token {len(token)} chars",
        ),
        _row(
            "pop-verify",
            "K10 PoP verify_worker_pop",
            figures["pop-verify"],
            "ecdsa-verify",
            "key hash + freshness + nonce registry",
        ),
    ]


async def run(profile: Profile) -> list[Row]:
    """Measure the crypto cases (synchronous; runs on the calling thread)."""
    return _envelope_rows(profile) + _cap_and_pop_rows(profile)
