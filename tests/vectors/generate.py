"""Generate the core-format test vectors in this directory (see README.md).

Run ``python -m tests.vectors.generate`` to (re)write the JSON files, or with ``--check``
to verify that the committed files are exactly what this script produces.

Outputs are computed here from the primitives (hashlib, HKDF, AES-GCM, eth_account,
cryptography) following SPEC.md, *not* through the agentkeys modules under test, so a
vector pins the spec rather than whatever the implementation happens to do. Every input
is fixed (keys, nonces, times): the output is byte-for-byte deterministic. ECDSA
signatures use RFC 6979 deterministic nonces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak

HERE = Path(__file__).resolve().parent
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

MASTER_SECRET = bytes(range(32))
ZERO_WALLET = "0x" + "0" * 40
EIP55_WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
K3 = bytes.fromhex("42" * 32)
NONCE12 = bytes.fromhex("000102030405060708090a0b")
PLAINTEXT = b"sk-test-0123456789abcdef"
SERVICE = "openai"
EPOCH = 7
ISSUED_AT = 1767225600  # 2026-01-01T00:00:00Z
AUD = "agentkeys-worker.local"
CAP_NONCE = "00112233445566778899aabbccddeeff"
POP_NONCE = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
POP_TIMESTAMP = ISSUED_AT + 10
BODY = b'{"service":"openai"}'


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def p256_key(label: bytes) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(sha256(b"agentkeys test vector " + label), "big") % (P256_N - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def p256_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def p256_scalar(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_numbers().private_value.to_bytes(32, "big").hex()


def es256_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def k10_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """A K10 signature: ES256 with s in the lower half of n, as the chain requires (SPEC 6)."""
    raw = es256_raw(key, data)
    s = int.from_bytes(raw[32:], "big")
    return raw[:32] + (P256_N - s if s > P256_N // 2 else s).to_bytes(32, "big")


def canonical_json(obj: Any) -> bytes:
    # Equal to RFC 8785 for objects of ASCII strings and small integers (all we sign).
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def identity(identity_type: str, value: str, normalized: str) -> dict[str, str]:
    preimage = b"agentkeys" + identity_type.encode() + normalized.encode()
    return {
        "identity_type": identity_type,
        "value": value,
        "normalized_value": normalized,
        "preimage_hex": preimage.hex(),
        "omni": hashlib.sha256(preimage).hexdigest(),
    }


def agent(operator_omni: str, label: str) -> dict[str, str]:
    preimage = b"agentkeys-hdkd-v1" + bytes.fromhex(operator_omni) + b"//" + label.encode()
    return {
        "operator_omni": operator_omni,
        "label": label,
        "preimage_hex": preimage.hex(),
        "omni": hashlib.sha256(preimage).hexdigest(),
    }


def k4(master_secret: bytes, omni: str) -> tuple[bytes, int]:
    info = b"\x01agentkeys-evm-wallet" + bytes.fromhex(omni)
    for retry in range(16):
        full = info if retry == 0 else info + bytes([retry])
        out = HKDF(hashes.SHA256(), 32, b"agentkeys-signer-v0", full).derive(master_secret)
        if 0 < int.from_bytes(out, "big") < SECP256K1_N:
            return out, retry
    raise SystemExit("no K4 scalar")


def eip191_sig65(private_key: bytes, message: bytes) -> bytes:
    signed = Account.sign_message(encode_defunct(primitive=message), private_key)
    sig = bytes(signed.signature)
    return sig[:64] + bytes([sig[64] - 27])


def v2_kek(k3: bytes, actor_omni: str) -> bytes:
    info = b"agentkeys.user.v1" + bytes.fromhex(actor_omni)
    return HKDF(hashes.SHA256(), 32, b"agentkeys.kek-salt.v2", info).derive(k3)


def build() -> dict[str, dict[str, Any]]:
    # --- omni ---------------------------------------------------------------------------
    zero = identity("evm", ZERO_WALLET, ZERO_WALLET)
    operator_omni = zero["omni"]
    agent_vec = agent(operator_omni, "research-bot")
    k10 = p256_key(b"K10 device key")
    k10_point = p256_point(k10)
    dkh = bytes(keccak(k10_point)).hex()
    omni_file = {
        "description": "SPEC section 3 identifiers and the section 2 device_key_hash",
        "identity_omni": [
            zero,
            identity("evm", EIP55_WALLET, EIP55_WALLET.lower()),
            identity("email", "Alice@Example.COM", "alice@example.com"),
            identity("passkey", "cred-AbC_123", "cred-AbC_123"),
        ],
        "agent_omni": [agent_vec, agent(operator_omni, "a")],
        "service_hash": [
            {
                "name": n,
                "normalized": n.lower(),
                "keccak256": bytes(keccak(n.lower().encode())).hex(),
            }
            for n in ("openai", "OpenRouter", "api.github.com")
        ],
        "device_key_hash": [
            {
                "private_scalar_hex": p256_scalar(k10),
                "point_hex": k10_point.hex(),
                "device_key_hash": dkh,
            }
        ],
        "normalize_hex32": [
            {"input": "0x" + operator_omni.upper(), "output": operator_omni},
            {"input": operator_omni, "output": operator_omni},
            {"input": "0X" + "Ab" * 32, "output": "ab" * 32},
        ],
        "rejections": [
            {"function": "normalize_hex32", "input": "ab" * 31, "error": "InvalidIdentifier"},
            {"function": "normalize_hex32", "input": "0x" + "g" * 64, "error": "InvalidIdentifier"},
            {
                "function": "normalize_hex32",
                "input": "ab" * 32 + "\n",
                "error": "InvalidIdentifier",
            },
            {"function": "normalize_hex32", "input": " " + "ab" * 32, "error": "InvalidIdentifier"},
            {
                "function": "normalize_wallet",
                "input": "0x" + "0" * 39,
                "error": "InvalidIdentifier",
            },
            {
                "function": "normalize_wallet",
                "input": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
                "error": "InvalidIdentifier",
            },
            {
                "function": "identity_omni_email",
                "input": "alice example.com",
                "error": "InvalidIdentifier",
            },
            {
                "function": "identity_omni_email",
                "input": "al ice@example.com",
                "error": "InvalidIdentifier",
            },
            {
                "function": "identity_omni_email",
                "input": "älice@example.com",
                "error": "InvalidIdentifier",
            },
            {"function": "identity_omni_type", "input": "phone", "error": "InvalidIdentifier"},
            {"function": "agent_label", "input": "Research-Bot", "error": "InvalidAgentLabel"},
            {"function": "agent_label", "input": "", "error": "InvalidAgentLabel"},
            {"function": "agent_label", "input": "a" * 33, "error": "InvalidAgentLabel"},
            {"function": "agent_label", "input": "bot/../x", "error": "InvalidAgentLabel"},
            {"function": "normalize_service", "input": "open*ai", "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "open?ai", "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "${aws:x}", "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "a/b", "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "a{b", "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "-openai", "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "", "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "a" * 65, "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "openai\n", "error": "InvalidServiceName"},
            {"function": "normalize_service", "input": "\u212aey", "error": "InvalidServiceName"},
            {
                "function": "device_key_hash_from_point",
                "input": "00" * 64,
                "error": "InvalidKeyMaterial",
            },
            {
                "function": "device_key_hash_from_point",
                "input": k10_point[:63].hex(),
                "error": "InvalidKeyMaterial",
            },
        ],
    }

    # --- K4 wallets and EIP-191 -------------------------------------------------------------
    email = identity("email", "alice@example.com", "alice@example.com")
    wallet_vectors = []
    for ident in (email, zero):
        key, retry = k4(MASTER_SECRET, ident["omni"])
        wallet_vectors.append(
            {
                "master_secret_hex": MASTER_SECRET.hex(),
                "identity_omni": ident["omni"],
                "info_hex": (b"\x01agentkeys-evm-wallet" + bytes.fromhex(ident["omni"])).hex(),
                "retry": retry,
                "private_key_hex": key.hex(),
                "address": Account.from_key(key).address.lower(),
            }
        )
    k4_key = bytes.fromhex(wallet_vectors[0]["private_key_hex"])
    k4_wallet = wallet_vectors[0]["address"]
    message = b"hello agentkeys"
    wallet_file = {
        "description": "K4 derivation (issue 2) and EIP-191 personal_sign with v in {0,1}",
        "k4": wallet_vectors,
        "eip191": [
            {
                "private_key_hex": k4_key.hex(),
                "address": k4_wallet,
                "message_hex": message.hex(),
                "sig65_hex": eip191_sig65(k4_key, message).hex(),
            }
        ],
    }

    # --- KEKs ---------------------------------------------------------------------------------
    kek_message = f"agentkeys.kek.v1:{k4_wallet}:{SERVICE}".encode()
    sig65 = eip191_sig65(k4_key, kek_message)
    v1_kek = sha256(b"agentkeys.kek-derive.v1" + sig65)
    agent_omni = agent_vec["omni"]
    kek_v2 = v2_kek(K3, agent_omni)
    kek_file = {
        "description": "SPEC section 4 KEKs: v1 from a K4 signature, v2 by HKDF from K3",
        "v1_from_signature": [
            {"sig65_hex": sig65.hex(), "kek_hex": v1_kek.hex()},
            {
                "sig65_hex": "11" * 64 + "01",
                "kek_hex": sha256(
                    b"agentkeys.kek-derive.v1" + bytes.fromhex("11" * 64 + "01")
                ).hex(),
            },
        ],
        "v1_chain": [
            {
                "master_secret_hex": MASTER_SECRET.hex(),
                "identity_omni": email["omni"],
                "wallet": k4_wallet,
                "service": SERVICE,
                "message_hex": kek_message.hex(),
                "sig65_hex": sig65.hex(),
                "kek_hex": v1_kek.hex(),
            }
        ],
        "v2": [
            {
                "k3_hex": K3.hex(),
                "actor_omni": agent_omni,
                "info_hex": (b"agentkeys.user.v1" + bytes.fromhex(agent_omni)).hex(),
                "kek_hex": kek_v2.hex(),
            },
            {
                "k3_hex": K3.hex(),
                "actor_omni": operator_omni,
                "info_hex": (b"agentkeys.user.v1" + bytes.fromhex(operator_omni)).hex(),
                "kek_hex": v2_kek(K3, operator_omni).hex(),
            },
        ],
        "rejections": [
            {
                "function": "v1_kek_from_signature",
                "input_hex": sig65[:64].hex(),
                "error": "SignatureMalformed",
            },
            {
                "function": "v1_kek_from_signature",
                "input_hex": sig65[:64].hex() + "1b",
                "error": "SignatureMalformed",
            },
            {"function": "v2_kek", "input_hex": K3[:31].hex(), "error": "InvalidKeyMaterial"},
        ],
    }

    # --- envelopes -------------------------------------------------------------------------
    aad1 = f"agentkeys.cred.aad.v1|{k4_wallet}|{SERVICE}".encode()
    aad2 = f"agentkeys.cred.aad.v2|{agent_omni}|{SERVICE}".encode()
    header4 = b"\x04" + struct.pack(">I", EPOCH)
    aad4 = aad2 + header4
    env1 = b"\x01" + NONCE12 + AESGCM(v1_kek).encrypt(NONCE12, PLAINTEXT, aad1)
    env2 = b"\x02" + NONCE12 + AESGCM(v1_kek).encrypt(NONCE12, PLAINTEXT, aad2)
    env4 = header4 + NONCE12 + AESGCM(kek_v2).encrypt(NONCE12, PLAINTEXT, aad4)
    context: dict[str, Any] = {"wallet": k4_wallet, "actor_omni": agent_omni, "service": SERVICE}
    envelopes = [
        {
            "version": 1,
            "kek_hex": v1_kek.hex(),
            "epoch": None,
            "aad_hex": aad1.hex(),
            "envelope_hex": env1.hex(),
        },
        {
            "version": 2,
            "kek_hex": v1_kek.hex(),
            "epoch": None,
            "aad_hex": aad2.hex(),
            "envelope_hex": env2.hex(),
        },
        {
            "version": 4,
            "kek_hex": kek_v2.hex(),
            "epoch": EPOCH,
            "aad_hex": aad4.hex(),
            "envelope_hex": env4.hex(),
        },
    ]
    for vec in envelopes:
        vec.update(context)
        vec.update({"nonce_hex": NONCE12.hex(), "plaintext_hex": PLAINTEXT.hex()})

    def flip(data: bytes, index: int) -> str:
        mutable = bytearray(data)
        mutable[index] ^= 0x01
        return bytes(mutable).hex()

    other_wallet = "0x" + "0" * 39 + "1"
    rejections: list[dict[str, Any]] = []
    for env, kek, name in ((env1, v1_kek, "0x01"), (env2, v1_kek, "0x02"), (env4, kek_v2, "0x04")):
        base = {"kek_hex": kek.hex(), **context}
        header_len = 5 if env[0] == 4 else 1
        cases = [
            (
                "wrong wallet" if env[0] == 1 else "wrong actor",
                {
                    "envelope_hex": env.hex(),
                    **({"wallet": other_wallet} if env[0] == 1 else {"actor_omni": operator_omni}),
                },
                "EnvelopeTampered",
            ),
            (
                "wrong service",
                {"envelope_hex": env.hex(), "service": "openrouter"},
                "EnvelopeTampered",
            ),
            ("wrong KEK", {"envelope_hex": env.hex(), "kek_hex": flip(kek, 0)}, "EnvelopeTampered"),
            (
                "flipped ciphertext bit",
                {"envelope_hex": flip(env, header_len + 12)},
                "EnvelopeTampered",
            ),
            ("flipped tag bit", {"envelope_hex": flip(env, len(env) - 1)}, "EnvelopeTampered"),
            ("flipped nonce bit", {"envelope_hex": flip(env, header_len)}, "EnvelopeTampered"),
            (
                "truncated to minimum - 1",
                {"envelope_hex": env[: header_len + 27].hex()},
                "EnvelopeTruncated",
            ),
            (
                "tag cut off",
                {"envelope_hex": env[:-16].hex()},
                "EnvelopeTampered" if len(env) - 16 >= header_len + 28 else "EnvelopeTruncated",
            ),
            ("header only", {"envelope_hex": env[:header_len].hex()}, "EnvelopeTruncated"),
        ]
        for description, override, error in cases:
            rejections.append(
                {"description": f"{name}: {description}", **base, **override, "error": error}
            )
    rejections += [
        {
            "description": "0x04: tampered epoch byte",
            "kek_hex": kek_v2.hex(),
            **context,
            "envelope_hex": flip(env4, 4),
            "error": "EnvelopeTampered",
        },
        {
            "description": "0x04 relabelled as 0x02",
            "kek_hex": kek_v2.hex(),
            **context,
            "envelope_hex": ("02" + env4.hex()[2:]),
            "error": "EnvelopeTampered",
        },
        {
            "description": "0x02 relabelled as 0x01",
            "kek_hex": v1_kek.hex(),
            **context,
            "envelope_hex": ("01" + env2.hex()[2:]),
            "error": "EnvelopeTampered",
        },
        {
            "description": "unknown version byte 0x03",
            "kek_hex": kek_v2.hex(),
            **context,
            "envelope_hex": ("03" + env4.hex()[2:]),
            "error": "EnvelopeVersionUnknown",
        },
        {
            "description": "unknown version byte 0x00",
            "kek_hex": kek_v2.hex(),
            **context,
            "envelope_hex": ("00" + env4.hex()[2:]),
            "error": "EnvelopeVersionUnknown",
        },
        {
            "description": "unknown version byte 0xff alone",
            "kek_hex": kek_v2.hex(),
            **context,
            "envelope_hex": "ff",
            "error": "EnvelopeVersionUnknown",
        },
        {
            "description": "empty",
            "kek_hex": kek_v2.hex(),
            **context,
            "envelope_hex": "",
            "error": "EnvelopeTruncated",
        },
        {
            "description": "0x04 of 32 bytes",
            "kek_hex": kek_v2.hex(),
            **context,
            "envelope_hex": env4[:32].hex(),
            "error": "EnvelopeTruncated",
        },
        {
            "description": "0x01 of 28 bytes",
            "kek_hex": v1_kek.hex(),
            **context,
            "envelope_hex": env1[:28].hex(),
            "error": "EnvelopeTruncated",
        },
        {
            "description": "0x01 without wallet",
            "kek_hex": v1_kek.hex(),
            **context,
            "wallet": None,
            "envelope_hex": env1.hex(),
            "error": "EnvelopeContextMissing",
        },
        {
            "description": "0x04 without actor_omni",
            "kek_hex": kek_v2.hex(),
            **context,
            "actor_omni": None,
            "envelope_hex": env4.hex(),
            "error": "EnvelopeContextMissing",
        },
    ]
    envelope_file = {
        "description": "SPEC section 4 envelopes sealed with fixed KEK and nonce",
        "vectors": envelopes,
        "rejections": rejections,
    }

    # --- caps -------------------------------------------------------------------------------
    k1 = p256_key(b"K1 cap signing key")
    k1_point = p256_point(k1)
    jwk_required = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(k1_point[:32]),
        "y": b64url(k1_point[32:]),
    }
    kid = b64url(sha256(canonical_json(jwk_required)))
    payload = {
        "v": 2,
        "op": "fetch",
        "operator_omni": operator_omni,
        "actor_omni": agent_omni,
        "service": SERVICE,
        "device_key_hash": dkh,
        "k3_epoch": EPOCH,
        "issued_at": ISSUED_AT,
        "expires_at": ISSUED_AT + 300,
        "nonce": CAP_NONCE,
        "aud": AUD,
    }
    canonical = canonical_json(payload)
    broker_sig = b64url(es256_raw(k1, canonical))

    def token(wire: dict[str, Any]) -> str:
        return b64url(canonical_json(wire))

    wire = {"payload": payload, "kid": kid, "broker_sig": broker_sig}
    ok_verify = {"expected_aud": AUD, "now": ISSUED_AT + 1, "expected_op": "fetch"}

    def resigned(changes: dict[str, Any], key: ec.EllipticCurvePrivateKey = k1) -> str:
        changed = {**payload, **changes}
        return token(
            {
                "payload": changed,
                "kid": kid,
                "broker_sig": b64url(es256_raw(key, canonical_json(changed))),
            }
        )

    other_key = p256_key(b"not the cap key")
    cap_rejections = [
        ("expired at expires_at", token(wire), {**ok_verify, "now": ISSUED_AT + 300}, "CapExpired"),
        (
            "issued in the future beyond skew",
            token(wire),
            {**ok_verify, "now": ISSUED_AT - 6},
            "CapNotYetValid",
        ),
        (
            "other audience",
            token(wire),
            {**ok_verify, "expected_aud": "other-worker"},
            "CapAudienceMismatch",
        ),
        (
            "other operation",
            token(wire),
            {**ok_verify, "expected_op": "store"},
            "CapOperationMismatch",
        ),
        ("unknown kid", token({**wire, "kid": "unknown-kid"}), ok_verify, "CapKeyUnknown"),
        (
            "payload changed after signing",
            token({**wire, "payload": {**payload, "service": "github"}}),
            ok_verify,
            "CapSignatureInvalid",
        ),
        ("signed by another key", resigned({}, other_key), ok_verify, "CapSignatureInvalid"),
        (
            "lifetime 1801 s",
            resigned({"expires_at": ISSUED_AT + 1801}),
            ok_verify,
            "CapLifetimeTooLong",
        ),
        ("expires before issued", resigned({"expires_at": ISSUED_AT}), ok_verify, "CapInvalid"),
        (
            "uppercase hex (non-canonical)",
            resigned({"actor_omni": agent_omni.upper()}),
            ok_verify,
            "CapInvalid",
        ),
        ("version 1", resigned({"v": 1}), ok_verify, "CapInvalid"),
        ("version as a float", resigned({"v": 2.0}), ok_verify, "CapInvalid"),
        ("unknown op", resigned({"op": "delete"}), ok_verify, "CapInvalid"),
        ("short nonce", resigned({"nonce": CAP_NONCE[:30]}), ok_verify, "CapInvalid"),
        ("service with slash", resigned({"service": "a/b"}), ok_verify, "CapInvalid"),
        ("string epoch", resigned({"k3_epoch": "7"}), ok_verify, "CapInvalid"),
        ("extra member", resigned({"extra": 1}), ok_verify, "CapInvalid"),
        (
            "padded signature",
            token({**wire, "broker_sig": broker_sig + "=="}),
            ok_verify,
            "CapInvalid",
        ),
        (
            "short signature",
            token({**wire, "broker_sig": broker_sig[:-2]}),
            ok_verify,
            "CapInvalid",
        ),
        ("wire member missing", token({"payload": payload, "kid": kid}), ok_verify, "CapInvalid"),
        ("not base64url", "!!" + token(wire), ok_verify, "CapInvalid"),
        ("base64url of non-JSON", b64url(b"\xff\xfe"), ok_verify, "CapInvalid"),
    ]
    cap_file = {
        "description": "SPEC section 5 caps: canonical bytes, deterministic ES256, tokens",
        "signing_key": {
            "private_scalar_hex": p256_scalar(k1),
            "point_hex": k1_point.hex(),
            "kid": kid,
        },
        "vectors": [
            {
                "payload": payload,
                "canonical_hex": canonical.hex(),
                "digest_hex": sha256(canonical).hex(),
                "broker_sig": broker_sig,
                "broker_sig_hex": es256_raw(k1, canonical).hex(),
                "token": token(wire),
                "verify": ok_verify,
            }
        ],
        "rejections": [
            {"description": d, "token": t, "verify": v, "error": e} for d, t, v, e in cap_rejections
        ],
    }

    # --- PoP ----------------------------------------------------------------------------------
    mint_fields = {
        "op": "fetch",
        "operator_omni": operator_omni,
        "actor_omni": agent_omni,
        "service": SERVICE,
        "device_key_hash": dkh,
        "nonce": POP_NONCE.hex(),
        "timestamp": POP_TIMESTAMP,
    }
    mint_message = b"agentkeys.pop.mint.v1\x00" + canonical_json(mint_fields)
    cap_digest = sha256(canonical)
    body_sha = sha256(BODY)
    worker_message = (
        b"agentkeys.pop.worker.v1\x00"
        + cap_digest
        + bytes([len(b"fetch")])
        + b"fetch"
        + body_sha
        + struct.pack(">Q", POP_TIMESTAMP)
        + POP_NONCE
    )
    mint_signature = b64url(k10_raw(k10, mint_message))
    pop_file = {
        "description": "SPEC section 5 K10 proof of possession messages and signatures",
        "k10": {
            "private_scalar_hex": p256_scalar(k10),
            "point_hex": k10_point.hex(),
            "device_key_hash": dkh,
        },
        "other_key": {
            "private_scalar_hex": p256_scalar(other_key),
            "point_hex": p256_point(other_key).hex(),
        },
        "mint": [
            {
                "claims": mint_fields,
                "message_hex": mint_message.hex(),
                "signature": mint_signature,
                "header_value": f"{POP_TIMESTAMP}.{POP_NONCE.hex()}.{mint_signature}",
            }
        ],
        "worker": [
            {
                "cap_digest_hex": cap_digest.hex(),
                "op": "fetch",
                "body_hex": BODY.hex(),
                "body_sha256_hex": body_sha.hex(),
                "timestamp": POP_TIMESTAMP,
                "nonce_hex": POP_NONCE.hex(),
                "message_hex": worker_message.hex(),
                "signature": b64url(k10_raw(k10, worker_message)),
            }
        ],
    }

    # --- JWKS ---------------------------------------------------------------------------------
    jwk = {**jwk_required, "alg": "ES256", "use": "sig", "kid": kid}
    raw_sig = es256_raw(k1, b"jwks vector")
    der_sig = k1.sign(b"jwks vector", ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    jwks_file = {
        "description": "ES256 JWK / JWKS with RFC 7638 kid, raw r||s <-> DER",
        "keys": [
            {
                "point_hex": k1_point.hex(),
                "thumbprint_input_hex": canonical_json(jwk_required).hex(),
                "jwk": jwk,
            }
        ],
        "jwks_json_hex": canonical_json({"keys": [jwk]}).hex(),
        "signatures": [
            {
                "message_hex": b"jwks vector".hex(),
                "raw_hex": raw_sig.hex(),
                "der_hex": der_sig.hex(),
            }
        ],
    }

    return {
        "omni.json": omni_file,
        "wallet.json": wallet_file,
        "kek.json": kek_file,
        "envelope.json": envelope_file,
        "cap.json": cap_file,
        "pop.json": pop_file,
        "jwks.json": jwks_file,
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, document in build().items():
        path = HERE / name
        text = render(document)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale vectors:", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
