"""TPM backend against real swtpm: K10, certification and quote, sealing, stale objects."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from agentkeys.devstack import Swtpm, start_swtpm
from agentkeys.omni import device_key_hash
from attest import (
    AttestationBundle,
    Backend,
    KeyNotTrusted,
    NonceMismatch,
    SignatureInvalid,
    SoftwareDeviceKey,
    SoftwareSealer,
    TpmUnavailable,
    UnsealFailed,
    make_bundle,
    open_device_key,
    open_sealer,
    verify_bundle,
)
from attest.errors import DeviceKeyError
from attest.k10_signature import P256_N, raw_rs_to_der
from attest.seal import SealBackend
from attest.tpm import Tpm, TpmDeviceKey, TpmSealer
from attest.tpm._esapi import _create_primary

DEAD_TCTI = "swtpm:host=127.0.0.1,port=1"


def _verify(public: ec.EllipticCurvePublicKey, rs: bytes, digest: bytes) -> None:
    public.verify(raw_rs_to_der(rs), digest, ec.ECDSA(Prehashed(hashes.SHA256())))


async def test_k10_signs_in_tpm_and_verifies_with_cryptography(swtpm: Swtpm) -> None:
    key = await open_device_key("tpm", tcti=swtpm.tcti)
    try:
        assert key.backend is Backend.TPM
        digest = hashlib.sha256(b"agentkeys").digest()
        rs = await key.sign(digest)
        assert len(rs) == 64
        assert int.from_bytes(rs[32:], "big") <= P256_N // 2  # low s
        _verify(key.public_key, rs, digest)
        with pytest.raises(InvalidSignature):
            _verify(key.public_key, rs, hashlib.sha256(b"other").digest())
        with pytest.raises(DeviceKeyError):
            await key.sign(b"short")
    finally:
        await key.aclose()


async def test_k10_and_sealed_secret_survive_restart_but_not_another_tpm(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    secret = os.urandom(32)
    async with start_swtpm(tpm_state_dir=state, run_dir=tmp_path / "run1") as first:
        key = await open_device_key("tpm", tcti=first.tcti)
        public_before = device_key_hash(key.public_key)
        await key.aclose()
        sealer = await open_sealer("tpm", tcti=first.tcti)
        assert sealer.backend is SealBackend.TPM
        blob = await sealer.seal(secret)
        await sealer.aclose()
    async with start_swtpm(tpm_state_dir=state, run_dir=tmp_path / "run2") as again:
        key = await open_device_key("tpm", tcti=again.tcti, create=False)
        try:
            assert device_key_hash(key.public_key) == public_before
            digest = hashlib.sha256(b"after restart").digest()
            _verify(key.public_key, await key.sign(digest), digest)
        finally:
            await key.aclose()
        sealer = await open_sealer("tpm", tcti=again.tcti)
        try:
            assert await sealer.unseal(blob) == secret
        finally:
            await sealer.aclose()
    async with start_swtpm(run_dir=tmp_path / "other") as other:
        tpm = await Tpm.connect(other.tcti)
        try:
            with pytest.raises(DeviceKeyError, match="no k10 key"):
                await TpmDeviceKey.open(tpm, create=False)
            with pytest.raises(UnsealFailed):
                await TpmSealer(tpm).unseal(blob)
        finally:
            await tpm.aclose()
    # The software sealer does not pretend to open a TPM blob, nor the reverse.
    soft = SoftwareSealer.open(tmp_path / "soft" / "seal.key")
    with pytest.raises(UnsealFailed):
        await soft.unseal(blob)


async def test_bundle_certify_and_quote_verify(swtpm: Swtpm, tmp_path: Path) -> None:
    key = await open_device_key("tpm", tcti=swtpm.tcti)
    try:
        nonce = os.urandom(32)
        bundle = await make_bundle(key, nonce)
    finally:
        await key.aclose()
    parsed = AttestationBundle.from_json(bundle.canonical())
    assert parsed == bundle
    verified = verify_bundle(parsed, expected_nonce=nonce, require_tpm=True)
    assert verified.tpm_resident
    assert verified.device_key_hash == device_key_hash(key.public_key)
    assert verified.pcr_selection == tuple(range(8))
    assert verified.digest == hashlib.sha256(bundle.canonical()).hexdigest()
    assert bundle.tpm is not None
    ak_name = bytes.fromhex(verified.ak_name or "")
    verify_bundle(parsed, expected_nonce=nonce, trusted_aks={ak_name})

    with pytest.raises(NonceMismatch):
        verify_bundle(parsed, expected_nonce=os.urandom(32))
    with pytest.raises(KeyNotTrusted):
        verify_bundle(parsed, expected_nonce=nonce, trusted_aks={b"\x00\x0b" + b"\x00" * 32})
    # A flipped byte in the signed quote breaks the AK signature.
    from dataclasses import replace

    tampered = bytearray(bundle.tpm.quote_attest)
    tampered[-1] ^= 1
    with pytest.raises(SignatureInvalid):
        verify_bundle(
            replace(bundle, tpm=replace(bundle.tpm, quote_attest=bytes(tampered))),
            expected_nonce=nonce,
        )
    # A software key cannot borrow the TPM's certification.
    soft = SoftwareDeviceKey.open(tmp_path / "k" / "k10.pem")
    soft_bundle = await make_bundle(soft, nonce)
    with pytest.raises(KeyNotTrusted):
        verify_bundle(
            replace(soft_bundle, backend=Backend.TPM, tpm=bundle.tpm), expected_nonce=nonce
        )
    with pytest.raises(KeyNotTrusted):
        verify_bundle(soft_bundle, expected_nonce=nonce, require_tpm=True)
    assert not verify_bundle(soft_bundle, expected_nonce=nonce).tpm_resident


async def test_backend_selection(swtpm: Swtpm, tmp_path: Path) -> None:
    soft_path = tmp_path / "dev" / "k10.pem"
    with pytest.raises(TpmUnavailable):
        await open_device_key("tpm", tcti=DEAD_TCTI)
    fallback = await open_device_key("auto", tcti=DEAD_TCTI, key_path=soft_path)
    assert fallback.backend is Backend.SOFTWARE
    tpm_key = await open_device_key("auto", tcti=swtpm.tcti, key_path=soft_path)
    try:
        assert tpm_key.backend is Backend.TPM
    finally:
        await tpm_key.aclose()
    sealer = await open_sealer("auto", tcti=DEAD_TCTI, key_path=tmp_path / "dev" / "seal.key")
    assert sealer.backend is SealBackend.SOFTWARE


async def test_stale_transient_objects_are_flushed_at_connect(swtpm: Swtpm) -> None:
    crashed = await Tpm.connect(swtpm.tcti)
    for _ in range(3):  # swtpm has 3 object slots: fill them and "crash"
        await crashed.run(_create_primary)
    await crashed.aclose()
    tpm = await Tpm.connect(swtpm.tcti)
    try:
        # One shared connection for K10 and sealing (open_* do not close it).
        key = await open_device_key("auto", tpm=tpm)
        assert key.backend is Backend.TPM
        digest = hashlib.sha256(b"x").digest()
        _verify(key.public_key, await key.sign(digest), digest)
        await key.aclose()
        sealer = await open_sealer("auto", tpm=tpm)
        assert await sealer.unseal(await sealer.seal(b"k3")) == b"k3"
        await sealer.aclose()
        assert isinstance(await TpmDeviceKey.open(tpm, create=False), TpmDeviceKey)
    finally:
        await tpm.aclose()
