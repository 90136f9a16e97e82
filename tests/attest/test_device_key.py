"""Software K10 and the software sealer: file permissions, symlinks, signatures."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from attest import (
    AttestationMalformed,
    Backend,
    DeviceKeyError,
    InsecurePath,
    SoftwareDeviceKey,
    SoftwareSealer,
    UnsealFailed,
    default_key_path,
    key_hash,
    open_device_key,
)
from attest.k10_signature import raw_rs_to_der

HAS_TPM = Path("/dev/tpmrm0").exists()


def _key_path(tmp_path: Path) -> Path:
    return tmp_path / "device" / "k10.pem"


async def test_created_0600_in_0700_and_reloaded(tmp_path: Path) -> None:
    path = _key_path(tmp_path)
    key = SoftwareDeviceKey.open(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    again = SoftwareDeviceKey.open(path, create=False)
    assert key_hash(again) == key_hash(key)
    digest = hashlib.sha256(b"m").digest()
    rs = await again.sign(digest)
    key.public_key.verify(raw_rs_to_der(rs), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    with pytest.raises(DeviceKeyError):
        await key.sign(b"not a digest")


@pytest.mark.skipif(HAS_TPM, reason="this machine has a TPM")
async def test_auto_without_tpm_is_software(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TPM2TOOLS_TCTI", raising=False)
    monkeypatch.delenv("TCTI", raising=False)
    key = await open_device_key("auto")
    assert key.backend is Backend.SOFTWARE
    # Default location follows XDG_CONFIG_HOME (pointed at tmp_path by conftest).
    assert default_key_path().is_relative_to(tmp_path)
    assert default_key_path().exists()


def test_missing_key_without_create(tmp_path: Path) -> None:
    with pytest.raises(DeviceKeyError, match="no device key"):
        SoftwareDeviceKey.open(_key_path(tmp_path), create=False)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_wider_file_permissions_are_refused(tmp_path: Path, mode: int) -> None:
    path = _key_path(tmp_path)
    SoftwareDeviceKey.open(path)
    os.chmod(path, mode)
    with pytest.raises(InsecurePath, match="must be 0600"):
        SoftwareDeviceKey.open(path)


def test_wider_directory_is_refused(tmp_path: Path) -> None:
    path = _key_path(tmp_path)
    SoftwareDeviceKey.open(path)
    os.chmod(path.parent, 0o750)  # noqa: S103 - the insecure case under test
    with pytest.raises(InsecurePath, match="must be 0700"):
        SoftwareDeviceKey.open(path)


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = _key_path(tmp_path)
    SoftwareDeviceKey.open(real)
    link = real.with_name("link.pem")
    link.symlink_to(real)
    with pytest.raises(InsecurePath, match="symlink"):
        SoftwareDeviceKey.open(link)


def test_symlinked_key_directory_is_refused(tmp_path: Path) -> None:
    real = _key_path(tmp_path)
    SoftwareDeviceKey.open(real)
    linkdir = tmp_path / "linked"
    linkdir.symlink_to(real.parent)
    with pytest.raises(InsecurePath, match="symlink"):
        SoftwareDeviceKey.open(linkdir / "k10.pem")


def test_key_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = _key_path(tmp_path)
    SoftwareDeviceKey.open(path)
    os.chown(path, 65534, 65534)
    with pytest.raises(InsecurePath, match="owned by uid 65534"):
        SoftwareDeviceKey.open(path)


def test_not_a_p256_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path = _key_path(tmp_path)
    path.parent.mkdir(mode=0o700)
    other = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)
    with pytest.raises(DeviceKeyError, match="P-256"):
        SoftwareDeviceKey.open(path)
    path.write_bytes(b"garbage")
    with pytest.raises(DeviceKeyError, match="readable"):
        SoftwareDeviceKey.open(path)


async def test_software_sealer(tmp_path: Path) -> None:
    path = tmp_path / "seal" / "seal.key"
    sealer = SoftwareSealer.open(path)
    blob = await sealer.seal(b"k3 epoch secret")
    assert await SoftwareSealer.open(path).unseal(blob) == b"k3 epoch secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(UnsealFailed):
        await sealer.unseal(tampered)
    with pytest.raises(UnsealFailed):
        await SoftwareSealer.open(tmp_path / "other" / "seal.key").unseal(blob)
    with pytest.raises(AttestationMalformed):
        await sealer.unseal(b"not a blob")
    with pytest.raises(DeviceKeyError):
        await sealer.seal(b"")
    with pytest.raises(DeviceKeyError):
        await sealer.seal(b"x" * 129)
    os.chmod(path, 0o644)
    with pytest.raises(InsecurePath):
        SoftwareSealer.open(path)


async def test_software_sealers_started_together_share_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "seal" / "seal.key"
    first: list[SoftwareSealer] = []
    real_token_bytes = secrets.token_bytes

    def other_process_wins(n: int) -> bytes:
        # The other process reads "missing" too, and writes its key first.
        if not first:
            monkeypatch.setattr(secrets, "token_bytes", real_token_bytes)
            first.append(SoftwareSealer.open(path))
        return real_token_bytes(n)

    monkeypatch.setattr(secrets, "token_bytes", other_process_wins)
    late = SoftwareSealer.open(path)
    blob = await first[0].seal(b"k3 epoch secret")
    assert await late.unseal(blob) == b"k3 epoch secret"
