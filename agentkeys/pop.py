"""K10 proof of possession (PoP) for cap-mint and worker requests (SPEC section 5).

Two messages, domain-separated by distinct ASCII prefixes, each signed with the device's
K10 P-256 key (ES256: ECDSA over SHA-256 of the message; a TPM signs sha256(message)):

* **mint** (client → broker, with every cap-mint request)::

      "agentkeys.pop.mint.v1" ‖ 0x00 ‖ RFC 8785 JSON of
      {"op", "operator_omni", "actor_omni", "service", "device_key_hash",
       "nonce" (16 bytes, 32 lowercase hex), "timestamp" (Unix seconds)}

* **worker** (client → worker, with every request presenting a cap)::

      "agentkeys.pop.worker.v1" ‖ 0x00 ‖ sha256(canonical cap) (32) ‖ len(op) u8 ‖ op ASCII
      ‖ sha256(request body) (32) ‖ timestamp u64 BE ‖ nonce (16)

The signature travels as base64url (no padding) of raw r ‖ s. :class:`PopProof` is the
one compact text form of (timestamp, nonce, signature) for an HTTP header:
``<timestamp>.<nonce 32 hex>.<signature base64url>``.

Verification (keyword-only expectations, frozen results): claims well formed → K10 key
hashes to the device_key_hash → timestamp fresh (``now - window <= timestamp <= now +
max_skew``) → signature → nonce unused, recorded in a bounded :class:`NonceRegistry` until
the end of its window. Nonces are only recorded after the signature verified, so nobody
can fill the registry without a registered K10 key.

The worker splits the last step off: :func:`check_worker_pop` verifies key, freshness and
signature without touching the registry, the caller runs its chain checks (revocation,
binding), and only then :func:`consume_pop_nonce` records the nonce, in one synchronous
step (so a revoked device cannot spend registry space, and a replay is still refused).
The registry also bounds the live nonces per device (``per_owner_capacity``), so one
device - even a registered one - cannot fill it for everybody else.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import secrets
import struct
from dataclasses import dataclass

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.cap import CapOp
from agentkeys.errors import (
    FormatError,
    InvalidEncoding,
    InvalidKeyMaterial,
    PopInvalid,
    PopKeyMismatch,
    PopNonceRegistryFull,
    PopNonceReused,
    PopSignatureInvalid,
    PopStale,
    PopTimestampInFuture,
    SignatureMalformed,
)
from agentkeys.es256 import raw_rs_to_der
from agentkeys.omni import device_key_hash, normalize_hex32, normalize_service
from attest.k10_signature import k10_sign, verify_k10

__all__ = [
    "DEFAULT_NONCE_CAPACITY",
    "DEFAULT_NONCE_PER_DEVICE",
    "DEFAULT_POP_MAX_SKEW",
    "DEFAULT_POP_WINDOW",
    "POP_MINT_PREFIX",
    "POP_NONCE_LENGTH",
    "POP_WORKER_PREFIX",
    "MintPopClaims",
    "NonceRegistry",
    "PopProof",
    "VerifiedMintPop",
    "VerifiedWorkerPop",
    "WorkerPopClaims",
    "check_worker_pop",
    "consume_pop_nonce",
    "new_mint_pop_claims",
    "new_worker_pop_claims",
    "sign_pop",
    "verify_mint_pop",
    "verify_worker_pop",
]

POP_MINT_PREFIX = b"agentkeys.pop.mint.v1"
POP_WORKER_PREFIX = b"agentkeys.pop.worker.v1"
POP_NONCE_LENGTH = 16
DEFAULT_POP_WINDOW = 60
DEFAULT_POP_MAX_SKEW = 5
DEFAULT_NONCE_CAPACITY = 100_000
# A tenth of the registry per device: a busy device (~160 worker requests/s) still fits.
DEFAULT_NONCE_PER_DEVICE = 10_000
_MAX_TIMESTAMP = 2**53 - 1
_PROOF = re.compile(r"(0|[1-9][0-9]{0,15})\.([0-9a-f]{32})\.([A-Za-z0-9_-]{86})", re.ASCII)


def _op(value: object) -> CapOp:
    if not isinstance(value, str):
        raise PopInvalid("op must be a string")
    try:
        return CapOp(value)
    except ValueError:
        raise PopInvalid("op must be one of fetch, store, teardown, list") from None


def _timestamp(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIMESTAMP:
        raise PopInvalid("timestamp must be a non-negative integer of Unix seconds")
    return value


def _nonce(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != POP_NONCE_LENGTH:
        raise PopInvalid(f"nonce must be {POP_NONCE_LENGTH} bytes")
    return value


def _digest(name: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise PopInvalid(f"{name} must be 32 bytes")
    return value


def _hex32(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise PopInvalid(f"{name} must be a string")
    try:
        return normalize_hex32(value)
    except FormatError:
        raise PopInvalid(f"{name} must be 64 hex digits") from None


@dataclass(frozen=True, kw_only=True)
class MintPopClaims:
    """What a cap-mint PoP signs: the request fields, a fresh nonce and a timestamp.

    Identifiers are normalised (64 lowercase hex), the service lowercased.

    Raises:
        PopInvalid: a field of the wrong type or form.
    """

    op: CapOp
    operator_omni: str
    actor_omni: str
    service: str
    device_key_hash: str
    nonce: bytes
    timestamp: int

    def __post_init__(self) -> None:
        if not isinstance(self.service, str):
            raise PopInvalid("service must be a string")
        try:
            service = normalize_service(self.service)
        except FormatError:
            raise PopInvalid("service is not a valid service name") from None
        _nonce(self.nonce)
        _timestamp(self.timestamp)
        object.__setattr__(self, "op", _op(self.op))
        object.__setattr__(self, "service", service)
        for name in ("operator_omni", "actor_omni", "device_key_hash"):
            object.__setattr__(self, name, _hex32(name, getattr(self, name)))

    def message(self) -> bytes:
        """The exact bytes K10 signs (see the module docstring)."""
        fields: dict[str, str | int] = {
            "op": self.op.value,
            "operator_omni": self.operator_omni,
            "actor_omni": self.actor_omni,
            "service": self.service,
            "device_key_hash": self.device_key_hash,
            "nonce": self.nonce.hex(),
            "timestamp": self.timestamp,
        }
        return POP_MINT_PREFIX + b"\x00" + rfc8785.dumps(fields)


@dataclass(frozen=True, kw_only=True)
class WorkerPopClaims:
    """What a worker-request PoP signs: the cap, the operation, the body, time and nonce.

    Raises:
        PopInvalid: a field of the wrong type or length.
    """

    cap_digest: bytes
    op: CapOp
    body_sha256: bytes
    timestamp: int
    nonce: bytes

    def __post_init__(self) -> None:
        _digest("cap_digest", self.cap_digest)
        _digest("body_sha256", self.body_sha256)
        _timestamp(self.timestamp)
        _nonce(self.nonce)
        object.__setattr__(self, "op", _op(self.op))

    def message(self) -> bytes:
        """The exact bytes K10 signs (see the module docstring)."""
        op = self.op.value.encode("ascii")
        return b"".join(
            (
                POP_WORKER_PREFIX,
                b"\x00",
                self.cap_digest,
                bytes([len(op)]),
                op,
                self.body_sha256,
                struct.pack(">Q", self.timestamp),
                self.nonce,
            )
        )


def new_mint_pop_claims(
    *,
    op: CapOp | str,
    operator_omni: str,
    actor_omni: str,
    service: str,
    device_key_hash: str,
    now: int,
) -> MintPopClaims:
    """Claims for a cap-mint request at ``now`` with a fresh random nonce."""
    return MintPopClaims(
        op=_op(op),
        operator_omni=operator_omni,
        actor_omni=actor_omni,
        service=service,
        device_key_hash=device_key_hash,
        nonce=secrets.token_bytes(POP_NONCE_LENGTH),
        timestamp=now,
    )


def new_worker_pop_claims(
    *, cap_digest: bytes, op: CapOp | str, body: bytes, now: int
) -> WorkerPopClaims:
    """Claims for a worker request carrying ``body`` at ``now`` with a fresh random nonce.

    Args:
        cap_digest: :func:`agentkeys.cap.cap_digest` of the presented cap.
    """
    if not isinstance(body, bytes):
        raise PopInvalid("request body must be bytes")
    return WorkerPopClaims(
        cap_digest=cap_digest,
        op=_op(op),
        body_sha256=hashlib.sha256(body).digest(),
        timestamp=now,
        nonce=secrets.token_bytes(POP_NONCE_LENGTH),
    )


@dataclass(frozen=True)
class PopProof:
    """The transported part of a PoP: timestamp, nonce and the base64url r ‖ s signature.

    Raises:
        PopInvalid: a field of the wrong form.
    """

    timestamp: int
    nonce: bytes
    signature: str

    def __post_init__(self) -> None:
        _timestamp(self.timestamp)
        _nonce(self.nonce)
        try:
            raw = b64url_decode(self.signature)
        except InvalidEncoding:
            raise PopInvalid("PoP signature is not canonical unpadded base64url") from None
        if len(raw) != 64:
            raise PopInvalid("PoP signature must be 64 bytes r || s")

    def to_header_value(self) -> str:
        """``<timestamp>.<nonce 32 hex>.<signature base64url>``."""
        return f"{self.timestamp}.{self.nonce.hex()}.{self.signature}"

    @classmethod
    def from_header_value(cls, value: str) -> PopProof:
        """Parse :meth:`to_header_value` output strictly.

        Raises:
            PopInvalid: anything else.
        """
        match = _PROOF.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise PopInvalid("PoP header must be <timestamp>.<nonce hex>.<signature b64url>")
        return cls(
            timestamp=int(match.group(1)),
            nonce=bytes.fromhex(match.group(2)),
            signature=match.group(3),
        )


def sign_pop(claims: MintPopClaims | WorkerPopClaims, key: ec.EllipticCurvePrivateKey) -> str:
    """ES256-sign the claims' message with a K10 software key; base64url of raw r ‖ s.

    Raises:
        InvalidKeyMaterial: not a P-256 private key.
    """
    return b64url_encode(k10_sign(key, claims.message()))


class NonceRegistry:
    """Bounded single-use memory of PoP nonces, each kept until the end of its window.

    Pure and in-memory (one per process; not thread-safe: Trio runs it on one thread).
    At most ``capacity`` entries are held, and at most ``per_owner_capacity`` for one owner
    (the device whose K10 signed the proof); only expired entries are ever evicted. When
    the registry, or the owner's share of it, is full of live entries, new nonces are
    refused (:class:`PopNonceRegistryFull`) rather than forgetting a live one, which would
    re-open a replay window.
    """

    def __init__(
        self, capacity: int = DEFAULT_NONCE_CAPACITY, *,
        per_owner_capacity: int = DEFAULT_NONCE_PER_DEVICE,
    ) -> None:  # fmt: skip
        for name, value in (("capacity", capacity), ("per_owner_capacity", per_owner_capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PopInvalid(f"nonce registry {name} must be a positive integer")
        self._capacity = capacity
        self._per_owner = per_owner_capacity
        self._expiry: dict[bytes, float] = {}
        self._owner_of: dict[bytes, bytes] = {}
        self._owned: dict[bytes, int] = {}
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    @property
    def capacity(self) -> int:
        """The maximum number of nonces held at once."""
        return self._capacity

    @property
    def per_owner_capacity(self) -> int:
        """The maximum number of nonces held at once for one owner (device)."""
        return self._per_owner

    def owned(self, owner: bytes) -> int:
        """How many live nonces ``owner`` holds (as of the last purge)."""
        return self._owned.get(owner, 0)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, key = heapq.heappop(self._heap)
            del self._expiry[key]
            owner = self._owner_of.pop(key, None)
            if owner is not None:
                left = self._owned[owner] - 1
                if left:
                    self._owned[owner] = left
                else:
                    del self._owned[owner]

    def consume(
        self, key: bytes, *, expires_at: float, now: float, owner: bytes | None = None
    ) -> None:
        """Record ``key`` as used until ``expires_at`` (inclusive), or refuse it.

        Args:
            owner: who spends the entry (a device_key_hash); ``None`` counts only against
                the total ``capacity``.

        Raises:
            PopStale: ``expires_at`` is already past.
            PopNonceReused: ``key`` is held and not expired.
            PopNonceRegistryFull: ``capacity`` live entries are held, or
                ``per_owner_capacity`` for ``owner``.
        """
        if expires_at < now:
            raise PopStale("nonce window already over")
        self._purge(now)
        if key in self._expiry:
            raise PopNonceReused("PoP nonce already used")
        if owner is not None and self._owned.get(owner, 0) >= self._per_owner:
            raise PopNonceRegistryFull(
                "this device has too many live PoP nonces; refusing until some expire"
            )
        if len(self._expiry) >= self._capacity:
            raise PopNonceRegistryFull("too many live PoP nonces; refusing until some expire")
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        if owner is not None:
            self._owner_of[key] = owner
            self._owned[owner] = self._owned.get(owner, 0) + 1


@dataclass(frozen=True)
class VerifiedMintPop:
    """A cap-mint PoP whose key, freshness, signature and nonce have been checked."""

    claims: MintPopClaims
    device_key_hash: str


@dataclass(frozen=True)
class VerifiedWorkerPop:
    """A worker-request PoP whose key, freshness and signature have been checked.

    From :func:`verify_worker_pop` its nonce is consumed too; from
    :func:`check_worker_pop` it is not yet (call :func:`consume_pop_nonce`).
    """

    claims: WorkerPopClaims
    device_key_hash: str
    window: int = DEFAULT_POP_WINDOW

    @property
    def nonce_key(self) -> bytes:
        """The registry key: prefix ‖ device_key_hash (32) ‖ nonce (16)."""
        return POP_WORKER_PREFIX + bytes.fromhex(self.device_key_hash) + self.claims.nonce

    @property
    def expires_at(self) -> int:
        """The last second the proof is acceptable (its nonce is held until then)."""
        return self.claims.timestamp + self.window


def _check_fresh(timestamp: int, *, now: float, window: int, max_skew: int) -> None:
    if timestamp > now + max_skew:
        raise PopTimestampInFuture("PoP timestamp lies in the future")
    if timestamp < now - window:
        raise PopStale(f"PoP timestamp older than {window} s")


def _check(
    claims: MintPopClaims | WorkerPopClaims,
    signature: str,
    *,
    public_key: ec.EllipticCurvePublicKey,
    expected_device_key_hash: str,
    now: float,
    window: int,
    max_skew: int,
) -> str:
    try:
        raw = b64url_decode(signature)
    except InvalidEncoding:
        raise PopInvalid("PoP signature is not unpadded base64url") from None
    try:
        actual_hash = device_key_hash(public_key)
    except InvalidKeyMaterial:
        raise PopKeyMismatch("K10 key is not a P-256 public key") from None
    if actual_hash != expected_device_key_hash:
        raise PopKeyMismatch("K10 key does not match the device_key_hash")
    _check_fresh(claims.timestamp, now=now, window=window, max_skew=max_skew)
    try:
        raw_rs_to_der(raw)  # form: 64 bytes, r and s in 1..n-1
    except SignatureMalformed:
        raise PopInvalid("PoP signature must be 64 bytes r || s in range") from None
    if not verify_k10(public_key, raw, message=claims.message()):  # high-S included
        raise PopSignatureInvalid("K10 signature does not verify over the request")
    return actual_hash


def _verify(
    prefix: bytes,
    claims: MintPopClaims | WorkerPopClaims,
    signature: str,
    *,
    public_key: ec.EllipticCurvePublicKey,
    expected_device_key_hash: str,
    now: float,
    nonces: NonceRegistry,
    window: int,
    max_skew: int,
) -> str:
    actual_hash = _check(
        claims, signature, public_key=public_key,
        expected_device_key_hash=expected_device_key_hash, now=now, window=window,
        max_skew=max_skew,
    )  # fmt: skip
    owner = bytes.fromhex(actual_hash)
    key = prefix + owner + claims.nonce
    nonces.consume(key, expires_at=claims.timestamp + window, now=now, owner=owner)
    return actual_hash


def verify_mint_pop(
    claims: MintPopClaims,
    signature: str,
    *,
    public_key: ec.EllipticCurvePublicKey,
    now: float,
    nonces: NonceRegistry,
    window: int = DEFAULT_POP_WINDOW,
    max_skew: int = DEFAULT_POP_MAX_SKEW,
) -> VerifiedMintPop:
    """Verify the K10 PoP of a cap-mint request.

    Args:
        claims: rebuilt from the request as received (fields, nonce, timestamp).
        signature: base64url raw r ‖ s.
        public_key: the K10 key registered for ``claims.device_key_hash``.
        now: current Unix time in seconds.
        nonces: the broker's registry; the nonce is consumed on success only.
        window: seconds a PoP stays acceptable after its timestamp.
        max_skew: seconds a timestamp may lie ahead of ``now``.

    Raises:
        PopInvalid, PopKeyMismatch, PopTimestampInFuture, PopStale, PopSignatureInvalid,
        PopNonceReused, PopNonceRegistryFull.
    """
    dkh = _verify(
        POP_MINT_PREFIX,
        claims,
        signature,
        public_key=public_key,
        expected_device_key_hash=claims.device_key_hash,
        now=now,
        nonces=nonces,
        window=window,
        max_skew=max_skew,
    )
    return VerifiedMintPop(claims=claims, device_key_hash=dkh)


def verify_worker_pop(
    claims: WorkerPopClaims,
    signature: str,
    *,
    public_key: ec.EllipticCurvePublicKey,
    expected_device_key_hash: str,
    now: float,
    nonces: NonceRegistry,
    window: int = DEFAULT_POP_WINDOW,
    max_skew: int = DEFAULT_POP_MAX_SKEW,
) -> VerifiedWorkerPop:
    """Verify the K10 PoP of a worker request.

    Args:
        claims: rebuilt by the worker from what it received: the verified cap's digest,
            the route's operation, sha256 of the body, and the proof's timestamp and nonce.
        expected_device_key_hash: the cap's ``device_key_hash``.
        Others: see :func:`verify_mint_pop`.

    Raises:
        PopInvalid, PopKeyMismatch, PopTimestampInFuture, PopStale, PopSignatureInvalid,
        PopNonceReused, PopNonceRegistryFull.
    """
    verified = check_worker_pop(
        claims, signature, public_key=public_key,
        expected_device_key_hash=expected_device_key_hash, now=now, window=window,
        max_skew=max_skew,
    )  # fmt: skip
    consume_pop_nonce(verified, nonces=nonces, now=now)
    return verified


def check_worker_pop(
    claims: WorkerPopClaims,
    signature: str,
    *,
    public_key: ec.EllipticCurvePublicKey,
    expected_device_key_hash: str,
    now: float,
    window: int = DEFAULT_POP_WINDOW,
    max_skew: int = DEFAULT_POP_MAX_SKEW,
) -> VerifiedWorkerPop:
    """Verify key, freshness and signature of a worker PoP; the nonce is NOT consumed.

    The caller runs its remaining checks (revocation, binding) and then calls
    :func:`consume_pop_nonce` once, before acting on the request.

    Raises:
        PopInvalid, PopKeyMismatch, PopTimestampInFuture, PopStale, PopSignatureInvalid.
    """
    dkh = _check(
        claims, signature, public_key=public_key,
        expected_device_key_hash=_hex32("expected_device_key_hash", expected_device_key_hash),
        now=now, window=window, max_skew=max_skew,
    )  # fmt: skip
    return VerifiedWorkerPop(claims=claims, device_key_hash=dkh, window=window)


def consume_pop_nonce(verified: VerifiedWorkerPop, *, nonces: NonceRegistry, now: float) -> None:
    """Record the nonce of a checked worker PoP as used (owner: its device).

    Raises:
        PopStale: the proof's window ended meanwhile.
        PopNonceReused: the nonce was already consumed (a replay).
        PopNonceRegistryFull: the registry, or this device's share of it, is full.
    """
    nonces.consume(
        verified.nonce_key, expires_at=verified.expires_at, now=now,
        owner=bytes.fromhex(verified.device_key_hash),
    )  # fmt: skip
