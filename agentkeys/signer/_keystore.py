"""The signer's secrets, sealed at rest (SPEC.md sections 2 and 7).

Layout of the state directory (0700, every file 0600, each a sealed blob from
the injected sealer, see attest/seal.py)::

    master.sealed        32-byte master secret K4 wallets derive from
    oidc.sealed          32-byte P-256 private scalar signing the STS web-identity tokens
    k3-<epoch>.sealed    32-byte K3 of each epoch (decimal epoch, no padding)

Files are created exclusively (write to a temporary name, ``link`` to the
final one, which fails if it exists): a secret, once written, is never
replaced. Opening the store unseals everything; a blob that does not unseal
(another TPM, another key file, corruption) makes the signer refuse to start.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys._files import write_private
from agentkeys.errors import DOMAIN_ERRORS
from agentkeys.signer.errors import KeyStoreError
from attest.k10_signature import P256_N

__all__ = ["KeyStore", "Sealer"]

_K3_NAME = re.compile(r"k3-(0|[1-9][0-9]{0,9})\.sealed", re.ASCII)
_MASTER = "master.sealed"
_OIDC = "oidc.sealed"
_MAX_EPOCH = 2**32 - 1


class Sealer(Protocol):
    """What the signer needs from a sealing backend (attest.seal.Sealer satisfies it)."""

    async def seal(self, secret: bytes) -> bytes:
        """Seal ``secret``; returns the blob to store."""
        ...

    async def unseal(self, blob: bytes) -> bytes:
        """Recover the secret; raise an AgentkeysError when this sealer cannot."""
        ...


def _private_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)
    st = directory.stat()
    if st.st_mode & 0o077 or st.st_uid not in (os.geteuid(), 0):
        raise KeyStoreError(f"signer state directory {directory} must be 0700 and ours")


def _write_new(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` (0600) unless ``path`` exists; durable before returning."""
    try:
        write_private(path, blob, exclusive=True)
    except FileExistsError as exc:
        raise KeyStoreError(f"{path.name} exists; refusing to replace a sealed secret") from exc


def _exists(path: Path) -> bool:
    return path.exists()


def _k3_files(directory: Path) -> list[tuple[int, Path]]:
    found: list[tuple[int, Path]] = []
    for entry in sorted(directory.iterdir()):
        match = _K3_NAME.fullmatch(entry.name)
        if match is None:
            continue
        epoch = int(match.group(1))
        if epoch > _MAX_EPOCH:
            raise KeyStoreError(f"{entry.name}: epoch out of range")
        found.append((epoch, entry))
    return found


def _read(path: Path) -> bytes:
    st = path.lstat()
    if not path.is_file() or path.is_symlink() or st.st_mode & 0o077:
        raise KeyStoreError(f"{path.name} must be a regular 0600 file")
    return path.read_bytes()


class KeyStore:
    """The unsealed secrets of one signer, and the sealed files behind them.

    Build with :meth:`open`. Secrets are ``bytes`` held in memory; nothing
    here logs or formats them.
    """

    def __init__(
        self,
        directory: Path,
        sealer: Sealer,
        master_secret: bytes,
        oidc_key: ec.EllipticCurvePrivateKey,
        k3: dict[int, bytes],
    ) -> None:
        self._directory = directory
        self._sealer = sealer
        self._master = master_secret
        self._oidc_key = oidc_key
        self._k3 = k3

    @classmethod
    async def open(cls, directory: Path, sealer: Sealer) -> KeyStore:
        """Unseal the state in ``directory``, creating the master and OIDC secrets if absent.

        Raises:
            KeyStoreError: unsafe directory, a blob that does not unseal, or a
                secret of the wrong size.
        """
        _private_dir(directory)
        master = await cls._load_or_create(directory / _MASTER, sealer)
        scalar = await cls._load_or_create(directory / _OIDC, sealer, p256=True)
        oidc_key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
        k3: dict[int, bytes] = {}
        for epoch, entry in _k3_files(directory):
            k3[epoch] = await cls._unseal(entry, sealer)
        return cls(directory, sealer, master, oidc_key, k3)

    @staticmethod
    async def _unseal(path: Path, sealer: Sealer) -> bytes:
        try:
            secret = await sealer.unseal(_read(path))
        except DOMAIN_ERRORS as exc:
            raise KeyStoreError(f"cannot unseal {path.name}: {exc.reason}") from exc
        if len(secret) != 32:
            raise KeyStoreError(f"{path.name} does not hold a 32-byte secret")
        return secret

    @classmethod
    async def _load_or_create(cls, path: Path, sealer: Sealer, *, p256: bool = False) -> bytes:
        if _exists(path):
            return await cls._unseal(path, sealer)
        secret = _new_p256_scalar() if p256 else secrets.token_bytes(32)
        _write_new(path, await sealer.seal(secret))
        return secret

    @staticmethod
    async def import_master_secret(directory: Path, sealer: Sealer, secret: bytes) -> None:
        """Seal an existing master secret (migration from a previous signer) before :meth:`open`.

        Raises:
            KeyStoreError: a master secret already exists, or ``secret`` is not 32 bytes.
        """
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise KeyStoreError("a master secret is 32 bytes")
        _private_dir(directory)
        _write_new(directory / _MASTER, await sealer.seal(secret))

    @staticmethod
    async def import_k3(directory: Path, sealer: Sealer, epoch: int, secret: bytes) -> None:
        """Seal an existing K3 for ``epoch`` (restoring a previous signer) before :meth:`open`.

        Raises:
            KeyStoreError: that epoch already has a K3, or bad sizes.
        """
        if not isinstance(secret, bytes) or len(secret) != 32 or not 0 <= epoch <= _MAX_EPOCH:
            raise KeyStoreError("K3 is 32 bytes for an epoch in 0..2^32-1")
        _private_dir(directory)
        _write_new(directory / f"k3-{epoch}.sealed", await sealer.seal(secret))

    @property
    def master_secret(self) -> bytes:
        """The K4 master secret."""
        return self._master

    @property
    def oidc_key(self) -> ec.EllipticCurvePrivateKey:
        """The key that signs web-identity tokens for STS."""
        return self._oidc_key

    def epochs(self) -> tuple[int, ...]:
        """Epochs with a K3, ascending."""
        return tuple(sorted(self._k3))

    def k3(self, epoch: int) -> bytes | None:
        """K3 of ``epoch``, or ``None`` when this signer holds none."""
        return self._k3.get(epoch)

    async def ensure_epoch(self, epoch: int) -> None:
        """Create, seal and persist K3 for ``epoch`` unless it exists.

        Raises:
            KeyStoreError: the epoch is out of range or the file cannot be written.
        """
        if epoch in self._k3:
            return
        if not 0 <= epoch <= _MAX_EPOCH:
            raise KeyStoreError("epoch out of range")
        secret = secrets.token_bytes(32)
        _write_new(self._directory / f"k3-{epoch}.sealed", await self._sealer.seal(secret))
        self._k3[epoch] = secret


def _new_p256_scalar() -> bytes:
    while True:
        candidate = secrets.token_bytes(32)
        if 0 < int.from_bytes(candidate, "big") < P256_N:
            return candidate
