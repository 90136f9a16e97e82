"""K10 device keys: one interface, a TPM 2.0 backend and a software backend (SPEC.md 2).

K10 is ECDSA P-256. :meth:`DeviceKey.sign` takes a SHA-256 digest and returns
the 64-byte r ‖ s with low s (what the contracts and the signer verify).

* ``tpm``: the key is created inside the TPM under the owner hierarchy's
  storage primary and persisted (EvictControl), so it survives restarts and
  never leaves the TPM. It can be certified by a restricted attestation key
  (see :mod:`attest.bundle`). Implemented in :mod:`attest.tpm`.
* ``software``: a PKCS#8 PEM key file, 0600 in a 0700 directory, owned by us;
  symlinks and wider permissions are refused.
* ``auto``: the TPM when one is reachable, else software.
"""

from __future__ import annotations

import enum
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from attest._files import read_private_file, write_private_file
from attest.errors import DeviceKeyError, TpmUnavailable
from attest.k10_signature import k10_raw_from_der
from attest.p256 import device_key_hash

if TYPE_CHECKING:
    from attest.bundle import TpmEvidence
    from attest.tpm import Tpm


class Backend(enum.StrEnum):
    TPM = "tpm"
    SOFTWARE = "software"


class BackendChoice(enum.StrEnum):
    AUTO = "auto"
    TPM = "tpm"
    SOFTWARE = "software"


class DeviceKey(Protocol):
    """A K10 device key: :class:`SoftwareDeviceKey` or ``attest.tpm.TpmDeviceKey``."""

    @property
    def backend(self) -> Backend: ...

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    async def sign(self, digest: bytes) -> bytes:
        """ECDSA P-256 over a 32-byte SHA-256 ``digest``; returns r ‖ s (64 bytes, low s)."""
        ...

    async def tpm_evidence(self, nonce: bytes) -> TpmEvidence | None:
        """TPM certification and quote binding this key to the TPM, or None (software)."""
        ...

    async def aclose(self) -> None: ...


def key_hash(key: DeviceKey) -> str:
    """``device_key_hash`` of a device key (64 lowercase hex, SPEC.md 2)."""
    return device_key_hash(key.public_key)


def default_key_path() -> Path:
    """``$XDG_CONFIG_HOME/agentkeys/device/k10.pem`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "agentkeys" / "device" / "k10.pem"


def _check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise DeviceKeyError("K10 signs a 32-byte SHA-256 digest")


class SoftwareDeviceKey:
    """K10 in a key file: PKCS#8 PEM, 0600, in a 0700 directory, owned by us."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        self._key = private_key
        self.path = path

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> SoftwareDeviceKey:
        """Load the key at ``path``, creating it first when absent and ``create``.

        Raises:
            InsecurePath: symlink, not ours, or mode wider than 0600 (dir 0700).
            DeviceKeyError: absent (and not ``create``), or not a P-256 private key.
        """
        try:
            pem = read_private_file(path)
        except FileNotFoundError:
            if not create:
                raise DeviceKeyError(f"no device key at {path}") from None
            key = ec.generate_private_key(ec.SECP256R1())
            write_private_file(
                path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
            return cls(key, path)
        try:
            loaded = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise DeviceKeyError(f"{path} does not hold a readable private key") from exc
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            raise DeviceKeyError(f"{path} does not hold a P-256 key")
        return cls(loaded, path)

    @property
    def backend(self) -> Backend:
        return Backend.SOFTWARE

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    async def sign(self, digest: bytes) -> bytes:
        _check_digest(digest)
        return k10_raw_from_der(self._key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))

    async def tpm_evidence(self, nonce: bytes) -> TpmEvidence | None:
        return None

    async def aclose(self) -> None:
        return None


def tpm_configured(tcti: str | None) -> str | None:
    """The TCTI to try: the explicit one, ``$TPM2TOOLS_TCTI``, or the kernel's resource manager."""
    if tcti:
        return tcti
    env = os.environ.get("TPM2TOOLS_TCTI")
    if env:
        return env
    if os.path.exists("/dev/tpmrm0"):
        return "device:/dev/tpmrm0"
    return None


async def open_device_key(
    choice: BackendChoice | str = BackendChoice.AUTO,
    *,
    key_path: Path | None = None,
    tcti: str | None = None,
    create: bool = True,
    tpm: Tpm | None = None,
) -> DeviceKey:
    """Open (creating at first start when ``create``) the device's K10.

    Args:
        choice: ``tpm``, ``software``, or ``auto`` (TPM when reachable).
        key_path: software key file (default :func:`default_key_path`).
        tcti: TPM connection, e.g. ``swtpm:host=127.0.0.1,port=2321``; default
            ``$TPM2TOOLS_TCTI`` or ``/dev/tpmrm0``.
        create: create the key when absent.
        tpm: an open TPM connection to use (and not close): share one per
            process, since a new connection flushes stale transient objects.

    Returns:
        The key; the caller closes it with ``aclose()``.

    Raises:
        TpmUnavailable: ``tpm`` was asked for and no TPM answers.
        InsecurePath, DeviceKeyError: see the backends.
    """
    choice = BackendChoice(choice)
    if tpm is not None and choice is not BackendChoice.SOFTWARE:
        from attest.tpm import TpmDeviceKey

        return await TpmDeviceKey.open(tpm, create=create)
    if choice is not BackendChoice.SOFTWARE:
        target = tpm_configured(tcti)
        if target is not None:
            from attest.tpm import Tpm, TpmDeviceKey

            try:
                connected = await Tpm.connect(target)
            except TpmUnavailable:
                if choice is BackendChoice.TPM:
                    raise
            else:
                try:
                    return await TpmDeviceKey.open(connected, create=create, owns_tpm=True)
                except BaseException:
                    await connected.aclose()
                    raise
        elif choice is BackendChoice.TPM:
            raise TpmUnavailable("no TPM configured (no TCTI and no /dev/tpmrm0)")
    opener = functools.partial(
        SoftwareDeviceKey.open, key_path or default_key_path(), create=create
    )
    return await trio.to_thread.run_sync(opener)
