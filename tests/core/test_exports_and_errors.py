"""The core modules' public names, the error tree, and the vector files' provenance."""

from __future__ import annotations

import importlib
import inspect

import pytest

from agentkeys import errors
from tests.core._vectors import VECTORS
from tests.vectors import generate

EXPORTS = {
    "agentkeys.omni": {
        "IdentityType", "actor_omni_for_wallet", "agent_omni", "device_key_hash",
        "device_key_hash_from_point", "hex32_to_bytes", "identity_omni", "normalize_hex32",
        "normalize_service", "normalize_wallet", "p256_point_bytes",
        "p256_public_key_from_point", "service_hash",
    },
    "agentkeys.kek": {
        "KEK_LENGTH", "V1_KEK_DERIVE_PREFIX", "V2_KEK_INFO_PREFIX", "V2_KEK_SALT",
        "v1_kek_from_signature", "v1_kek_message", "v2_kek",
    },
    "agentkeys.wallet": {
        "K4_INFO_PREFIX", "K4_MAX_RETRIES", "K4_SALT", "SECP256K1_N",
        "address_for_private_key", "derive_k4", "derive_k4_private_key", "recover_eip191",
        "sign_eip191", "v1_kek_for_identity",
    },
    "agentkeys.envelope": {
        "MAX_EPOCH", "NONCE_LENGTH", "TAG_LENGTH", "EnvelopeHeader", "EnvelopeVersion",
        "aad_v1", "aad_v2", "aad_v4", "open_envelope", "parse_header", "seal_v1",
        "seal_v2_legacy", "seal_v4",
    },
    "agentkeys.cap": {
        "CAP_VERSION", "DEFAULT_CAP_LIFETIME", "DEFAULT_MAX_SKEW", "MAX_CAP_LIFETIME",
        "MAX_TOKEN_CHARS", "CapOp", "CapPayload", "SignedCap", "VerifiedCap",
        "canonical_bytes", "cap_digest", "new_cap_payload", "parse_cap_token", "sign_cap",
        "verify_cap",
    },
    "agentkeys.pop": {
        "DEFAULT_NONCE_CAPACITY", "DEFAULT_NONCE_PER_DEVICE", "DEFAULT_POP_MAX_SKEW",
        "DEFAULT_POP_WINDOW", "POP_MINT_PREFIX", "POP_NONCE_LENGTH", "POP_WORKER_PREFIX",
        "MintPopClaims", "NonceRegistry", "PopProof", "VerifiedMintPop", "VerifiedWorkerPop",
        "WorkerPopClaims", "check_worker_pop", "consume_pop_nonce", "new_mint_pop_claims",
        "new_worker_pop_claims", "sign_pop", "verify_mint_pop", "verify_worker_pop",
    },
    "agentkeys.device_signin": {
        "DEVICE_CHALLENGE_LENGTH", "DEVICE_SIGNIN_PREFIX", "device_signin_digest",
        "device_signin_message", "verify_device_signin",
    },
    "agentkeys.b64url": {"b64url_decode", "b64url_encode"},
    "agentkeys.es256": {
        "der_to_raw_rs", "es256_jws", "es256_sign", "es256_verify", "raw_rs_to_der",
    },
    "agentkeys.jwks": {
        "MAX_JWKS_BYTES", "MAX_JWKS_KEYS", "JsonWebKeySet", "jwk_from_public_key",
        "jwk_thumbprint", "public_key_from_jwk",
    },
}  # fmt: skip


@pytest.mark.parametrize("module_name", sorted(EXPORTS))
def test_exported_members(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == EXPORTS[module_name]
    for name in module.__all__:
        assert hasattr(module, name)


def _format_leaves() -> list[type[errors.FormatError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.FormatError)
    ]


def test_error_codes_are_unique_and_documented() -> None:
    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.AgentkeysError)
    ]
    codes = [cls.error for cls in classes]
    assert len(codes) == len(set(codes))
    tree = errors.__doc__ or ""
    for cls in classes:
        assert cls.__name__ in tree, cls.__name__
        assert cls.__doc__


def test_statuses() -> None:
    assert errors.FormatError.status == 400
    assert errors.EnvelopeTampered.status == 400
    assert errors.CapExpired.status == 401
    assert errors.CapAudienceMismatch.status == 403
    assert errors.PopNonceRegistryFull.status == 503
    assert issubclass(errors.PopTimestampInFuture, errors.PopStale)
    assert len(_format_leaves()) > 30
    body = errors.CapExpired("cap has expired").to_json()
    assert body == {"error": "cap_expired", "reason": "cap has expired"}


def test_committed_vectors_are_what_the_generator_produces() -> None:
    """The JSON is committed; regenerating it must give the same bytes (deterministic)."""
    for name, document in generate.build().items():
        assert (VECTORS / name).read_text() == generate.render(document), name


def test_every_vector_file_is_used_by_a_test() -> None:
    names = {path.name for path in VECTORS.glob("*.json")}
    assert names == set(generate.build())
    sources = " ".join(
        path.read_text() for path in VECTORS.parent.joinpath("core").glob("test_*.py")
    )
    for name in names:
        assert f'load("{name}")' in sources, name
