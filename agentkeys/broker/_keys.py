"""The broker's signing keys: K1 (caps), K2 (OIDC tokens) and the session key.

SPEC section 2: K1 and K2 are ES256 (P-256) keys published as JWKS with a ``kid`` (RFC 7638
thumbprint), so each can rotate. None of these keys decrypts anything. Each purpose is a
:class:`KeyRing` (``active`` signs, every key of ``published`` verifies) that the services
hold for their whole life; a shared key set updates the rings in place.

Two sources:

* **Key files** (the embedded default, one host): PKCS#8 PEM files (0600) under
  ``<state_dir>/keys/<purpose>/`` (0700); one is generated when a directory is empty. Every
  file is published, the newest signs; :meth:`BrokerKeys.rotate` adds a file that signs from
  the next start.
* **The shared key set** (:class:`SharedKeySet`, for replicas): every key is a
  :class:`~agentkeys.broker._store.SigningKeyRecord` in the state store, its private key
  sealed (:class:`KeySeal`), so every replica holds the same set. A rotation stores the next
  generation with ``activates_at = now + publish_lead``: every replica publishes it at its next
  refresh, long before any signs with it (workers and STS have fetched it by then); from
  ``activates_at`` every replica signs with it; the key it replaces stays published until
  ``retires_at`` = ``activates_at`` + the longest lifetime of what it signed + the refresh
  interval + a minute, so nothing a replica signed stops verifying before it expires.

Sealed form (one place): the ``attest.seal`` software sealer (``aks1`` ‖ 0x02 ‖ nonce ‖
AES-256-GCM) under a 32-byte key file every replica is given (0600), over the plaintext
``agentkeys.broker-key.v1`` ‖ 0x00 ‖ purpose ‖ 0x00 ‖ the 32-byte private scalar. Unsealing
checks the purpose and that the key's thumbprint is the record's ``kid``, so a record moved to
another purpose, or another key put under a kid, is refused. (A TPM seal would bind the set
to one host, which replicas cannot share.)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.broker._store import SigningKeyRecord, StateStore
from agentkeys.broker.errors import StoreError
from agentkeys.config import InsecureFileError, check_private_file
from agentkeys.errors import DOMAIN_ERRORS, InvalidKeyMaterial
from agentkeys.jwks import JsonWebKeySet, jwk_thumbprint
from attest.seal import Sealer, SoftwareSealer

__all__ = ["PURPOSES", "BrokerKeys", "KeyRing", "KeySeal", "PublishedKeys", "SharedKeySet"]

log = logging.getLogger("agentkeys.broker.keys")

PURPOSES = ("cap", "oidc", "session")
_SEAL_PREFIX = b"agentkeys.broker-key.v1\x00"
_SKEW = 60


@dataclass(frozen=True)
class PublishedKeys:
    """A public key set as the broker answers it (RFC 7517 JWKS): ``{keys: [JWK, ...]}``."""

    keys: list[dict[str, str]]  # each with its RFC 7638 kid


@dataclass(frozen=True)
class _RingState:
    active: ec.EllipticCurvePrivateKey
    active_kid: str
    published: JsonWebKeySet


class KeyRing:
    """The keys of one purpose: ``active`` signs; every key in ``published`` verifies.

    A ring is shared by everything that signs or verifies for its purpose and replaced in
    place by :meth:`update`. Read ``active`` and ``active_kid`` without an ``await`` between
    them (or use :meth:`signing_key`): Trio runs the update between awaits only.
    """

    def __init__(
        self, active: ec.EllipticCurvePrivateKey, published: Iterable[ec.EllipticCurvePublicKey]
    ) -> None:
        self._state = self._build(active, published)

    @staticmethod
    def _build(
        active: ec.EllipticCurvePrivateKey, published: Iterable[ec.EllipticCurvePublicKey]
    ) -> _RingState:
        kid = jwk_thumbprint(active.public_key())
        jwks = JsonWebKeySet.from_public_keys(published)
        if kid not in jwks.by_kid:
            raise InvalidKeyMaterial("the active key must be published")
        return _RingState(active, kid, jwks)

    def update(
        self, active: ec.EllipticCurvePrivateKey, published: Iterable[ec.EllipticCurvePublicKey]
    ) -> None:
        """Sign with ``active`` from now on; publish ``published`` (which holds it).

        Raises:
            InvalidKeyMaterial: ``active`` is not in ``published``, or a duplicate key.
        """
        self._state = self._build(active, published)

    @property
    def active(self) -> ec.EllipticCurvePrivateKey:
        """The key that signs."""
        return self._state.active

    @property
    def active_kid(self) -> str:
        """The ``kid`` of :attr:`active`."""
        return self._state.active_kid

    @property
    def published(self) -> JsonWebKeySet:
        """Every key that verifies (the JWKS to publish)."""
        return self._state.published

    def signing_key(self) -> tuple[ec.EllipticCurvePrivateKey, str]:
        """(:attr:`active`, :attr:`active_kid`) of one state."""
        state = self._state
        return state.active, state.active_kid


def _private_dir(path: Path) -> None:
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)
    st = path.stat()
    if st.st_mode & 0o077 or st.st_uid not in (os.geteuid(), 0):
        raise InsecureFileError(f"key directory {path} must be 0700 and ours")


def _p256(key: object, what: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidKeyMaterial(f"{what} is not a P-256 private key")
    return key


def _load(path: Path) -> ec.EllipticCurvePrivateKey:
    check_private_file(path)
    return _p256(serialization.load_pem_private_key(path.read_bytes(), password=None), path.name)


def _generate(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    existing = sorted(directory.glob("key-*.pem"))
    path = directory / f"key-{len(existing) + 1:04d}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise InvalidKeyMaterial(f"unknown key purpose {purpose!r}")


@dataclass(frozen=True)
class BrokerKeys:
    """K1 (``cap``), K2 (``oidc``) and the session key (``session``)."""

    cap: KeyRing
    oidc: KeyRing
    session: KeyRing

    def ring(self, purpose: str) -> KeyRing:
        """The ring of ``purpose``."""
        _check_purpose(purpose)
        ring: KeyRing = getattr(self, purpose)
        return ring

    @classmethod
    def load_or_create(cls, state_dir: Path) -> BrokerKeys:
        """Load every key file under ``state_dir/keys``, generating one per empty purpose.

        Blocking (file I/O): call from a thread at start-up.

        Raises:
            InsecureFileError: a directory or key file accessible by others.
            InvalidKeyMaterial: a key file that is not a P-256 key.
        """
        rings: dict[str, KeyRing] = {}
        _private_dir(state_dir)
        for purpose in PURPOSES:
            directory = state_dir / "keys" / purpose
            _private_dir(directory.parent)
            _private_dir(directory)
            if not any(directory.glob("key-*.pem")):
                _generate(directory)
            keys = [_load(p) for p in sorted(directory.glob("key-*.pem"))]
            rings[purpose] = KeyRing(keys[-1], [k.public_key() for k in keys])
        return cls(cap=rings["cap"], oidc=rings["oidc"], session=rings["session"])

    @classmethod
    def rotate(cls, state_dir: Path, purpose: str) -> None:
        """Add a key file for ``purpose`` (it signs after the next load; old ones stay published).

        Raises:
            InvalidKeyMaterial: unknown purpose.
        """
        _check_purpose(purpose)
        directory = state_dir / "keys" / purpose
        _private_dir(directory)
        _generate(directory)


class KeySeal:
    """Seals and unseals the private keys of the shared key set (module docstring)."""

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    @classmethod
    async def open(cls, key_file: Path) -> KeySeal:
        """The software sealer under ``key_file`` (32 bytes, 0600 in a 0700 directory),
        created when missing: give every replica a copy of the same file.

        Raises:
            InsecurePath: the file or its directory is accessible by others.
            DeviceKeyError: the file is not a 32-byte key.
        """
        return cls(await trio.to_thread.run_sync(SoftwareSealer.open, key_file))

    async def seal(self, purpose: str, key: ec.EllipticCurvePrivateKey) -> bytes:
        """The sealed form of ``key`` for ``purpose``."""
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        return await self._sealer.seal(_SEAL_PREFIX + purpose.encode() + b"\x00" + scalar)

    async def unseal(self, record: SigningKeyRecord) -> ec.EllipticCurvePrivateKey:
        """The private key of ``record``.

        Raises:
            InvalidKeyMaterial: sealed under another seal key, altered, for another purpose,
                or not the key its ``kid`` names.
        """
        try:
            plain = await self._sealer.unseal(record.sealed)
        except DOMAIN_ERRORS as exc:
            raise InvalidKeyMaterial(
                f"signing key {record.purpose}/{record.generation} does not unseal with this "
                f"broker's seal key file ({exc.error}): every replica needs the same file"
            ) from None
        header = _SEAL_PREFIX + record.purpose.encode() + b"\x00"
        if not plain.startswith(header) or len(plain) != len(header) + 32:
            raise InvalidKeyMaterial(f"signing key {record.kid} was sealed for another purpose")
        key = ec.derive_private_key(int.from_bytes(plain[len(header) :], "big"), ec.SECP256R1())
        if jwk_thumbprint(key.public_key()) != record.kid:
            raise InvalidKeyMaterial(f"signing key {record.kid} is not the key its kid names")
        return key


def ring_records(
    records: Sequence[SigningKeyRecord], now: float
) -> tuple[SigningKeyRecord, list[SigningKeyRecord]]:
    """(the record that signs at ``now``, the records published at ``now``).

    Published: every record not past its ``retires_at``. Signing: the newest published
    generation whose ``activates_at`` has come.

    Raises:
        InvalidKeyMaterial: no published key has activated.
    """
    published = [r for r in records if r.retires_at is None or r.retires_at > now]
    signing = [r for r in published if r.activates_at <= now]
    if not signing:
        raise InvalidKeyMaterial("no signing key of this purpose is active")
    return max(signing, key=lambda r: r.generation), published


@dataclass(frozen=True)
class Rotation:
    """What :meth:`SharedKeySet.rotate` stored."""

    purpose: str
    generation: int
    kid: str
    activates_at: int
    previous_retire_at: int


class SharedKeySet:
    """The key set in the state store, shared by every replica (module docstring).

    Open with :meth:`open`; run :meth:`run` in a nursery to follow rotations; :attr:`keys`
    are the live rings the services hold.

    Args:
        publish_lead: seconds a new key is published before it signs.
        overlap: per purpose, the longest lifetime of what a key signs (a cap, an OIDC token,
            a session): a replaced key stays published that long after its successor
            activates, plus the refresh interval and a minute.
        refresh_interval: seconds between reads of the set.
    """

    def __init__(
        self,
        store: StateStore,
        seal: KeySeal,
        *,
        publish_lead: int,
        overlap: Mapping[str, int],
        refresh_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._seal = seal
        self._publish_lead = publish_lead
        self._overlap = overlap
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._cache: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._next_change: float | None = None
        self.keys: BrokerKeys

    @classmethod
    async def open(
        cls,
        store: StateStore,
        seal: KeySeal,
        *,
        publish_lead: int,
        overlap: Mapping[str, int],
        refresh_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> SharedKeySet:
        """Load the set, storing a first key for every purpose that has none.

        Replicas starting at once race to store generation 1 (insert-if-absent); one wins,
        all use its key.

        Raises:
            StoreError: the store failed.
            InvalidKeyMaterial: a key does not unseal (see :meth:`KeySeal.unseal`).
        """
        shared = cls(
            store, seal, publish_lead=publish_lead, overlap=overlap,
            refresh_interval=refresh_interval, clock=clock,
        )  # fmt: skip
        now = int(clock())
        for purpose in PURPOSES:
            if not await store.signing_keys(purpose):
                key = ec.generate_private_key(ec.SECP256R1())
                first = SigningKeyRecord(
                    purpose=purpose, generation=1, kid=jwk_thumbprint(key.public_key()),
                    sealed=await seal.seal(purpose, key), created_at=now, activates_at=now,
                    retires_at=None,
                )  # fmt: skip
                await store.add_signing_key(first, retire_others_at=None)
        rings = {purpose: KeyRing(*state) for purpose, state in (await shared._read()).items()}
        shared.keys = BrokerKeys(cap=rings["cap"], oidc=rings["oidc"], session=rings["session"])
        return shared

    async def _read(
        self,
    ) -> dict[str, tuple[ec.EllipticCurvePrivateKey, list[ec.EllipticCurvePublicKey]]]:
        """Every purpose's (signing key, published keys) as of now, from the store."""
        now = self._clock()
        upcoming: list[float] = []
        states = {}
        live: set[str] = set()
        for purpose in PURPOSES:
            active, published = ring_records(await self._store.signing_keys(purpose), now)
            for record in published:
                if record.kid not in self._cache:
                    self._cache[record.kid] = await self._seal.unseal(record)
            states[purpose] = (
                self._cache[active.kid],
                [self._cache[r.kid].public_key() for r in published],
            )
            live.update(r.kid for r in published)
            upcoming += [r.activates_at for r in published if r.activates_at > now]
            upcoming += [r.retires_at for r in published if r.retires_at is not None]
        for kid in set(self._cache) - live:
            del self._cache[kid]
        self._next_change = min(upcoming, default=None)
        return states

    async def refresh(self) -> None:
        """Read the set again and update every ring as of now.

        Raises:
            StoreError, InvalidKeyMaterial: the rings are left as they were.
        """
        for purpose, (active, published) in (await self._read()).items():
            self.keys.ring(purpose).update(active, published)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh every ``refresh_interval`` seconds (and when a key activates or retires)
        until cancelled. A failed refresh is logged and the current rings are kept."""
        task_status.started()
        while True:
            wait = self._refresh_interval
            if self._next_change is not None:
                wait = max(0.0, min(wait, self._next_change - self._clock()))
            await trio.sleep(wait)
            try:
                await self.refresh()
            except DOMAIN_ERRORS as exc:
                log.warning("broker key set refresh failed: %s: %s", exc.error, exc.reason)

    async def rotate(self, purpose: str) -> Rotation:
        """Store the next key of ``purpose``: published now, signing after ``publish_lead``.

        Raises:
            InvalidKeyMaterial: unknown purpose.
            StoreError: another rotation of this purpose stored the same generation first
                (run it again), or the store failed.
        """
        _check_purpose(purpose)
        records = await self._store.signing_keys(purpose)
        now = int(self._clock())
        key = ec.generate_private_key(ec.SECP256R1())
        activates_at = now + self._publish_lead
        retire_at = activates_at + self._overlap[purpose] + int(self._refresh_interval) + _SKEW
        record = SigningKeyRecord(
            purpose=purpose, generation=max((r.generation for r in records), default=0) + 1,
            kid=jwk_thumbprint(key.public_key()), sealed=await self._seal.seal(purpose, key),
            created_at=now, activates_at=activates_at, retires_at=None,
        )  # fmt: skip
        if not await self._store.add_signing_key(record, retire_others_at=retire_at):
            raise StoreError(f"another rotation of the {purpose} key came first; run it again")
        return Rotation(purpose, record.generation, record.kid, activates_at, retire_at)
