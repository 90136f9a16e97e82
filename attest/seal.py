"""Sealing small secrets at rest (the signer's K3 epochs, SPEC.md 7), TPM or software.

Blob format (one place, versioned)::

    b"aks1" ‖ backend (1 byte) ‖ payload
    backend 0x01  TPM:      TPM2B_PRIVATE ‖ TPM2B_PUBLIC of a sealed data object
                            under the owner hierarchy's storage primary
    backend 0x02  software: nonce (12) ‖ AES-256-GCM(ciphertext ‖ tag),
                            AAD = the 5 header bytes, key from a 0600 key file

Guarantees differ. A TPM blob can only be unsealed by the TPM that sealed it
(its owner seed derives the primary): copying the blob and the disk elsewhere
is useless. A software blob is only as safe as its key file: anyone who can
read that file (root, a backup of the home directory) can unseal. Use the
software backend for development or where no TPM exists, and say so in
deployment notes.
"""

from __future__ import annotations

import enum
import functools
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from attest._files import read_private_file, write_private_file
from attest.device_key import BackendChoice, tpm_configured
from attest.errors import AttestationMalformed, DeviceKeyError, TpmUnavailable, UnsealFailed

if TYPE_CHECKING:
    from attest.tpm import Tpm

MAGIC = b"aks1"
TAG_TPM = 0x01
TAG_SOFTWARE = 0x02
MAX_SECRET = 128  # TPM2B_SENSITIVE_DATA holds at most 128 bytes


class SealBackend(enum.StrEnum):
    TPM = "tpm"
    SOFTWARE = "software"


class Sealer(Protocol):
    @property
    def backend(self) -> SealBackend: ...

    async def seal(self, secret: bytes) -> bytes:
        """Seal ``secret`` (1..128 bytes); returns the blob to store."""
        ...

    async def unseal(self, blob: bytes) -> bytes:
        """Recover the secret. Raises UnsealFailed when this sealer cannot."""
        ...

    async def aclose(self) -> None: ...


def header(tag: int) -> bytes:
    return MAGIC + bytes([tag])


def split_blob(blob: bytes) -> tuple[int, bytes]:
    """(backend tag, payload) of a sealed blob.

    Raises:
        AttestationMalformed: not a sealed blob of a known backend.
    """
    if len(blob) < 6 or blob[:4] != MAGIC or blob[4] not in (TAG_TPM, TAG_SOFTWARE):
        raise AttestationMalformed("not an agentkeys sealed blob")
    return blob[4], blob[5:]


def check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or not 1 <= len(secret) <= MAX_SECRET:
        raise DeviceKeyError(f"a sealed secret is 1..{MAX_SECRET} bytes")


def default_seal_key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "agentkeys" / "device" / "seal.key"


class SoftwareSealer:
    """AES-256-GCM under a 32-byte key file (0600 in a 0700 dir). Weaker: see module doc."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> SoftwareSealer:
        """Load (or create) the sealing key file.

        Raises:
            InsecurePath: symlink, not ours, too wide.
            DeviceKeyError: missing (not ``create``) or not 32 bytes.
        """
        try:
            key = read_private_file(path)
        except FileNotFoundError:
            if not create:
                raise DeviceKeyError(f"no sealing key at {path}") from None
            key = secrets.token_bytes(32)
            try:
                write_private_file(path, key)
            except FileExistsError:
                # Another process created it between our read and our write: use theirs,
                # so that processes started together share one key.
                key = read_private_file(path)
        if len(key) != 32:
            raise DeviceKeyError(f"{path} is not a 32-byte sealing key")
        return cls(key)

    @property
    def backend(self) -> SealBackend:
        return SealBackend.SOFTWARE

    async def seal(self, secret: bytes) -> bytes:
        check_secret(secret)
        nonce = secrets.token_bytes(12)
        aad = header(TAG_SOFTWARE)
        return aad + nonce + self._aead.encrypt(nonce, secret, aad)

    async def unseal(self, blob: bytes) -> bytes:
        tag, payload = split_blob(blob)
        if tag != TAG_SOFTWARE:
            raise UnsealFailed("the blob was sealed by a TPM, not by the software sealer")
        if len(payload) < 12 + 16:
            raise AttestationMalformed("sealed blob truncated")
        try:
            return self._aead.decrypt(payload[:12], payload[12:], header(TAG_SOFTWARE))
        except InvalidTag as exc:
            raise UnsealFailed("the blob was not sealed with this key, or was altered") from exc

    async def aclose(self) -> None:
        return None


async def open_sealer(
    choice: BackendChoice | str = BackendChoice.AUTO,
    *,
    key_path: Path | None = None,
    tcti: str | None = None,
    tpm: Tpm | None = None,
) -> Sealer:
    """Open a sealer: the TPM when ``tpm`` or (``auto`` and reachable), else software.

    Pass an open ``tpm`` connection to share it (it is then not closed by the sealer).

    Raises:
        TpmUnavailable: ``tpm`` asked for, none reachable.
    """
    choice = BackendChoice(choice)
    if tpm is not None and choice is not BackendChoice.SOFTWARE:
        from attest.tpm import TpmSealer

        return TpmSealer(tpm)
    if choice is not BackendChoice.SOFTWARE:
        target = tpm_configured(tcti)
        if target is not None:
            from attest.tpm import Tpm, TpmSealer

            try:
                connected = await Tpm.connect(target)
            except TpmUnavailable:
                if choice is BackendChoice.TPM:
                    raise
            else:
                return TpmSealer(connected, owns_tpm=True)
        elif choice is BackendChoice.TPM:
            raise TpmUnavailable("no TPM configured (no TCTI and no /dev/tpmrm0)")
    opener = functools.partial(SoftwareSealer.open, key_path or default_seal_key_path())
    return await trio.to_thread.run_sync(opener)
