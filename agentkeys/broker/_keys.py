"""The broker's signing keys: K1 (caps), K2 (OIDC tokens) and the session key.

SPEC section 2: K1 and K2 are ES256 (P-256) keys published as JWKS with a ``kid`` (RFC 7638
thumbprint), so each can rotate: every key file in its directory is published, the newest
signs. Keys live as PKCS#8 PEM files (0600) under ``<state_dir>/keys/<purpose>/`` (0700);
one is generated when a directory is empty. None of these keys decrypts anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.config import InsecureFileError, check_private_file
from agentkeys.errors import InvalidKeyMaterial
from agentkeys.jwks import JsonWebKeySet, jwk_thumbprint

__all__ = ["BrokerKeys", "KeyRing"]

_PURPOSES = ("cap", "oidc", "session")


@dataclass(frozen=True)
class KeyRing:
    """The keys of one purpose: ``active`` signs; all are published."""

    active: ec.EllipticCurvePrivateKey
    active_kid: str
    published: JsonWebKeySet


def _ring(keys: list[ec.EllipticCurvePrivateKey]) -> KeyRing:
    active = keys[-1]
    return KeyRing(
        active=active,
        active_kid=jwk_thumbprint(active.public_key()),
        published=JsonWebKeySet.from_public_keys(k.public_key() for k in keys),
    )


def _private_dir(path: Path) -> None:
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)
    st = path.stat()
    if st.st_mode & 0o077 or st.st_uid not in (os.geteuid(), 0):
        raise InsecureFileError(f"key directory {path} must be 0700 and ours")


def _load(path: Path) -> ec.EllipticCurvePrivateKey:
    check_private_file(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidKeyMaterial(f"{path.name} is not a P-256 private key")
    return key


def _generate(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    existing = sorted(directory.glob("key-*.pem"))
    path = directory / f"key-{len(existing) + 1:04d}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


@dataclass(frozen=True)
class BrokerKeys:
    """K1 (``cap``), K2 (``oidc``) and the session key (``session``)."""

    cap: KeyRing
    oidc: KeyRing
    session: KeyRing

    @classmethod
    def load_or_create(cls, state_dir: Path) -> BrokerKeys:
        """Load every key under ``state_dir/keys``, generating one per empty purpose.

        Blocking (file I/O): call from a thread at start-up.

        Raises:
            InsecureFileError: a directory or key file accessible by others.
            InvalidKeyMaterial: a key file that is not a P-256 key.
        """
        rings: dict[str, KeyRing] = {}
        _private_dir(state_dir)
        for purpose in _PURPOSES:
            directory = state_dir / "keys" / purpose
            _private_dir(directory.parent)
            _private_dir(directory)
            if not any(directory.glob("key-*.pem")):
                _generate(directory)
            rings[purpose] = _ring([_load(p) for p in sorted(directory.glob("key-*.pem"))])
        return cls(cap=rings["cap"], oidc=rings["oidc"], session=rings["session"])

    @classmethod
    def rotate(cls, state_dir: Path, purpose: str) -> None:
        """Add a new key for ``purpose`` (it signs after the next load; old ones stay published).

        Raises:
            InvalidKeyMaterial: unknown purpose.
        """
        if purpose not in _PURPOSES:
            raise InvalidKeyMaterial(f"unknown key purpose {purpose!r}")
        directory = state_dir / "keys" / purpose
        _private_dir(directory)
        _generate(directory)
